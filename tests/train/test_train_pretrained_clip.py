"""Training on a pretrained CLIP from local files: ``train all --clip open_clip:...`` (and our own
CLIP via ``--clip MODEL``), then generation; embedding folders made with another CLIP are refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "clip")]
from test_clip_openclip import _tiny_openclip
from test_clip_pretrained import _tiny_hf_clip

from unclip.apps.cli.main import main
from unclip.pipeline import UnCLIP

pytest.importorskip("transformers")


def test_train_all_on_an_openclip_checkpoint_records_it_and_generates(tmp_path):
    _tiny_openclip(tmp_path, quick_gelu=False)
    spec = f"open_clip:{tmp_path / 'tiny.json'}:{tmp_path / 'tiny.safetensors'}"
    out = tmp_path / "model"
    args = ["train", "all", "--data", "shapes", "--clip", spec, "--preset", "tiny", "--steps", "3"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["components"] == {"prior_diffusion": "prior_diffusion", "decoder": "decoder"}
    assert meta["clip_record"]["kind"] == "open_clip" and meta["clip_record"]["spec"] == spec
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["clip"]["sha256"] == meta["clip_record"]["sha256"] and "clip" not in summary["stages"]
    assert summary["stages"]["decoder"]["steps"] == 3 and not (out / "clip").exists()
    pipe = UnCLIP.load(out)
    assert pipe.decoder.config.vocab_size == 49408 and pipe.prior.config.context_length == 12
    images = pipe.generate(["a red circle"], steps=2, prior_steps=2)
    assert images[0].size == (16, 16)


def test_train_all_with_our_clip_copies_it_into_the_model(tmp_path):
    out = tmp_path / "model"
    args = ["train", "all", "--data", "shapes", "--clip", "shapes", "--preset", "tiny", "--steps", "2"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["components"]["clip"] == "clip" and meta["clip_record"]["kind"] == "unclip"
    shipped = UnCLIP.load("shapes").clip
    pipe = UnCLIP.load(out)
    assert torch.equal(pipe.clip.encode_text(["a red circle"]), shipped.encode_text(["a red circle"]))
    assert pipe.generate_tensors(["a red circle"], steps=2, prior_steps=2)[0].shape == (1, 3, 16, 16)


def test_an_embedding_folder_of_another_clip_is_refused(tmp_path, capsys):
    _tiny_openclip(tmp_path, quick_gelu=False)
    _tiny_hf_clip(tmp_path / "hf")  # both embed in 8 dimensions
    openclip = f"open_clip:{tmp_path / 'tiny.json'}:{tmp_path / 'tiny.safetensors'}"
    emb = str(tmp_path / "emb")
    assert main(["embed", "shapes", "-n", "16", "--clip", f"hf:{tmp_path / 'hf'}", "--out", emb, "--no-progress"]) == 0
    train = ["train", "prior", "--embeddings", emb, "--clip", openclip, "--preset", "tiny", "--steps", "1"]
    train.append("--no-progress")
    assert main([*train, "--out", str(tmp_path / "a")]) == 1
    assert "holds embeddings of the hf CLIP" in capsys.readouterr().err
    (tmp_path / "emb" / "embed.json").unlink()  # a released set without a record: caught on the first batch
    assert main([*train, "--out", str(tmp_path / "b")]) == 1
    assert "do not match this CLIP's encoding of their captions" in capsys.readouterr().err
