"""``--clip`` specs: our CLIP, transformers directories, records of which CLIP a model used."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_clip_pretrained import _tiny_hf_clip

from unclip.apps.cli.main import main
from unclip.clip import FrozenCLIP
from unclip.clip.spec import check_clip_record, clip_record, load_clip_spec, load_recorded_clip, parse_clip_spec
from unclip.data.embedding_folder import EmbeddingFolder
from unclip.errors import CheckpointError, ConfigError


def test_our_clip_from_a_name_a_model_dir_or_its_clip_folder(tmp_path):
    shipped = parse_clip_spec("shapes")
    assert shipped.kind == "unclip" and shipped.path.name == "clip"
    model_dir = tmp_path / "model"
    shutil.copytree(shipped.path.parent, model_dir, ignore=shutil.ignore_patterns("decoder*", "prior*", "upsampler*"))
    assert parse_clip_spec(model_dir).path == (model_dir / "clip").resolve()
    assert parse_clip_spec(model_dir / "clip").path == (model_dir / "clip").resolve()
    clip = load_clip_spec(model_dir)
    ref = FrozenCLIP.load(shipped.path)
    assert isinstance(clip, FrozenCLIP)
    assert torch.equal(clip.encode_text(["a red circle"]), ref.encode_text(["a red circle"]))
    with pytest.raises(ConfigError, match="open_clip:ARCH:WEIGHTS"):
        parse_clip_spec(tmp_path)
    with pytest.raises(ConfigError, match="open_clip:ARCH:WEIGHTS_FILE"):
        parse_clip_spec("open_clip:ViT-B-32")
    with pytest.raises(CheckpointError, match="does not exist"):
        parse_clip_spec(f"open_clip:ViT-B-32:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(CheckpointError, match="save_pretrained"):
        parse_clip_spec(f"hf:{tmp_path}")


def test_hf_spec_equals_the_library_forward(tmp_path):
    model, tok = _tiny_hf_clip(tmp_path / "hf")
    clip = load_clip_spec(f"hf:{tmp_path / 'hf'}")
    texts = ["a red circle", "blue"]
    enc = tok(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ref = model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            pixel_values=((images + 1) / 2 - clip.mean) / clip.std,
        )
    assert torch.allclose(clip.encode_text(texts), ref.text_embeds, atol=1e-5)
    assert torch.allclose(clip.encode_image(images), ref.image_embeds, atol=1e-5)


def test_record_finds_the_clip_again_or_says_what_changed(tmp_path):
    _tiny_hf_clip(tmp_path / "hf")
    record = clip_record(f"hf:{tmp_path / 'hf'}")
    assert record["kind"] == "hf" and record["file"].endswith("model.safetensors") and len(record["sha256"]) == 64
    assert check_clip_record(record) == []
    assert load_recorded_clip(record).embed_dim == 8
    ours = clip_record("shapes")
    assert ours["kind"] == "unclip" and ours["file"].endswith("weights.safetensors") and check_clip_record(ours) == []
    weights = tmp_path / "hf" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    (problem,) = check_clip_record(record)
    assert "changed since training" in problem and str(weights) in problem
    weights.unlink()
    with pytest.raises(CheckpointError, match="is missing; put it back"):
        load_recorded_clip(record)
    assert "lacks" in check_clip_record({"kind": "hf"})[0]


def test_embed_command_with_a_transformers_clip(tmp_path):
    _tiny_hf_clip(tmp_path / "hf")
    assert (
        main(
            [
                "data",
                "shards",
                "shapes",
                "--out",
                str(tmp_path / "shards"),
                "-n",
                "6",
                "--shard-size",
                "4",
                "--size",
                "16",
            ]
        )
        == 0
    )
    args = [
        "embed",
        str(tmp_path / "shards"),
        "--clip",
        f"hf:{tmp_path / 'hf'}",
        "--out",
        str(tmp_path / "emb"),
        "--batch-size",
        "4",
        "--no-progress",
    ]
    assert main(args) == 0
    folder = EmbeddingFolder(tmp_path / "emb")
    assert len(folder) == 6 and len(folder.parts) == 2 and folder.dim == 8
    clip = load_clip_spec(f"hf:{tmp_path / 'hf'}")
    row = folder[0]
    assert torch.allclose(row.text_embed, clip.encode_text([row.caption])[0], atol=2e-3)  # float16 on disk
    assert main(args) == 0  # resumed: nothing left to do
