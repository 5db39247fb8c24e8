"""The real-data flow at the tiny preset with a transformers CLIP: shards -> embed -> train prior
--embeddings -> train decoder --data --embeddings -> generate (what the README's flow runs in CI),
skip counts in the summaries, the CLIP record, and exact resume of a streamed decoder run."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "clip"), str(TESTS / "data")]
from shard_helpers import good_members, make_tar, png_bytes
from test_clip_pretrained import _tiny_hf_clip

from unclip.apps.cli.main import main
from unclip.errors import CheckpointError
from unclip.model_dir import load_decoder
from unclip.pipeline import UnCLIP
from unclip.train.components import SETUPS, Options
from unclip.train.loop import train

pytest.importorskip("transformers")


def _run(*args: str) -> None:
    assert main([*args, "--no-progress"] if args[0] in ("train", "embed") else list(args)) == 0, args


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flow")
    _tiny_hf_clip(root / "hf")
    clip = f"hf:{root / 'hf'}"
    _run("data", "shards", "shapes", "--out", str(root / "shards"), "-n", "40", "--shard-size", "16", "--size", "16")
    bad = good_members(["bad0", "bad1"]) + [("bad2.png", b"not a png"), ("bad2.txt", b"a broken image")]
    make_tar(root / "shards" / "00009.tar", bad + [("bad3.png", png_bytes()), ("bad3.txt", b"  ")])
    _run("embed", str(root / "shards"), "--clip", clip, "--out", str(root / "emb"), "--batch-size", "16")
    model = str(root / "model")
    _run("train", "prior", "--embeddings", str(root / "emb"), "--clip", clip, "--preset", "tiny", "--out", model,
         "--steps", "4")  # fmt: skip
    _run("train", "decoder", "--data", str(root / "shards"), "--embeddings", str(root / "emb"), "--preset", "tiny",
         "--out", model, "--steps", "6", "--batch-size", "8")  # fmt: skip
    _run("generate", "a red circle", "--model", model, "-n", "1", "--steps", "2", "--prior-steps", "2",
         "--out", str(root / "gen"))  # fmt: skip
    return root


def test_the_flow_writes_a_model_on_the_recorded_clip_that_generates(flow):
    meta = json.loads((flow / "model" / "model.json").read_text())
    assert meta["components"] == {"prior_diffusion": "prior_diffusion", "decoder": "decoder"}
    assert meta["clip_record"]["kind"] == "hf" and meta["clip_record"]["file"] == str(flow / "hf" / "model.safetensors")
    assert (flow / "gen" / "000.png").is_file() and not (flow / "model" / "clip").exists()
    pipe = UnCLIP.load(flow / "model")
    tokenizer, config = pipe.clip.tokenizer, pipe.decoder.config
    assert type(pipe.clip).__name__ == "HFCLIP" and pipe.clip.embed_dim == 8
    assert (config.vocab_size, config.pad_token_id) == (len(tokenizer), tokenizer.pad_token_id)
    assert pipe.prior.config.context_length == 24 and pipe.prior.config.text_width == 32
    a, _ = pipe.generate_tensors(["a blue square"], seed=1, steps=2, prior_steps=2)
    b, _ = pipe.generate_tensors(["a blue square"], seed=1, steps=2, prior_steps=2)
    assert a.shape == (1, 3, 16, 16) and torch.equal(a, b)


def test_skip_counts_reach_the_summaries(flow):
    embed = json.loads((flow / "emb" / "embed.json").read_text())
    assert embed["skipped"]["undecodable_image"] == 1 and embed["skipped"]["empty_caption"] == 1  # read once each
    summary = json.loads((flow / "model" / "runs" / "decoder" / "summary.json").read_text())
    source = summary["source"]
    # 42 usable samples -> 5 batches of 8 per epoch; 6 steps read all of epoch 0 and part of epoch 1
    assert source["epoch_batches"] == [5] and source["source"] == "webdataset" and source["shards"] == 4
    assert 1 <= source["skipped"]["undecodable_image"] <= 2 and 1 <= source["skipped"]["empty_caption"] <= 2
    assert source["skipped"]["total"] == source["skipped"]["undecodable_image"] + source["skipped"]["empty_caption"]
    assert source["image_embeds"] == {"found": 48, "encoded": 0}  # every z_i looked up by key
    assert summary["embeddings"]["rows"] == 42 and summary["streamed"] is True
    prior = json.loads((flow / "model" / "runs" / "prior_diffusion" / "summary.json").read_text())
    assert prior["embeddings"]["rows"] == 42 and prior["clip"]["kind"] == "hf" and prior["steps"] == 4


def test_a_changed_or_missing_clip_is_named_when_loading(flow, tmp_path):
    model, hf = tmp_path / "model", tmp_path / "hf"
    shutil.copytree(flow / "model", model)
    shutil.copytree(flow / "hf", hf)
    meta = json.loads((model / "model.json").read_text())
    meta["clip_record"] = {k: str(v).replace(str(flow / "hf"), str(hf)) for k, v in meta["clip_record"].items()}
    (model / "model.json").write_text(json.dumps(meta))
    assert UnCLIP.load(model).clip.embed_dim == 8
    weights = hf / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=f"changed since training.*{weights}|{weights}.*changed since training"):
        UnCLIP.load(model)
    weights.unlink()
    with pytest.raises(CheckpointError, match="is missing; put it back"):
        UnCLIP.load(model)
    del meta["clip_record"]
    (model / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no 'clip' component"):
        UnCLIP.load(model)


def test_another_clip_for_the_same_model_is_refused(flow, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(flow / "model", model)
    argv = ["train", "decoder", "--clip", "shapes", "--preset", "tiny", "--out", str(model), "--steps", "1"]
    argv.append("--overwrite")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "was trained with the hf CLIP" in err and "--clip" in err
    assert main(["train", "prior", "--embeddings", str(flow / "emb"), "--clip", "shapes", "--preset", "tiny",
                 "--out", str(tmp_path / "other"), "--steps", "1"]) == 1  # fmt: skip
    assert "dimension 8" in capsys.readouterr().err


def test_the_ar_prior_trains_on_the_embedding_folder(flow, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(flow / "model", model)
    _run("train", "ar-prior", "--embeddings", str(flow / "emb"), "--preset", "tiny", "--out", str(model), "--steps=2")
    summary = json.loads((model / "runs" / "prior_ar" / "summary.json").read_text())
    assert summary["pca_rows"] == 42 and summary["embeddings"]["rows"] == 42 and summary["steps"] == 2
    pipe = UnCLIP.load(model)
    z = pipe.image_embeds_for(["a red circle"], "ar", generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 8) and torch.allclose(z.norm(dim=-1), torch.ones(1), atol=1e-4)


def _streamed_decoder(flow: Path, out: Path, *, steps: int, stop_after: int | None = None, resume: bool = False):
    opts = Options(clip=f"hf:{flow / 'hf'}", steps=steps, batch_size=8, progress=False, resume=resume)
    plan = SETUPS["decoder"](str(flow / "shards"), "tiny", out, opts)  # no --embeddings: z_i encoded on the fly
    train(plan.stage, plan.config, out / "runs" / "decoder", resume=resume, progress=False, stop_after=stop_after)
    return plan.stage


def test_a_streamed_decoder_run_resumes_exactly(flow, tmp_path):
    whole = _streamed_decoder(flow, tmp_path / "a", steps=7)
    assert whole.lookups == {"found": 0, "encoded": 56} and whole.steps.epoch_batches == [5]
    _streamed_decoder(flow, tmp_path / "b", steps=7, stop_after=6)  # stops in epoch 1, after epoch 0 was recorded
    resumed = _streamed_decoder(flow, tmp_path / "b", steps=7, resume=True)
    assert resumed.steps.reread_batches == 1  # only the batch of epoch 1 before the stop is read again
    a, _ = load_decoder(tmp_path / "a" / "decoder")
    b, _ = load_decoder(tmp_path / "b" / "decoder")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_the_flow_with_our_own_clip(flow, tmp_path):
    model, emb, shards = str(tmp_path / "model"), str(tmp_path / "emb"), str(flow / "shards")
    _run("train", "clip", "--data", "shapes", "--preset", "tiny", "--out", model, "--steps", "2")
    _run("embed", shards, "--clip", model, "--out", emb, "--batch-size", "16")
    _run("train", "prior", "--embeddings", emb, "--preset", "tiny", "--out", model, "--steps", "2")
    _run("train", "decoder", "--data", shards, "--embeddings", emb, "--preset", "tiny", "--out", model, "--steps=2")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert set(meta["components"]) == {"clip", "prior_diffusion", "decoder"}
    pipe = UnCLIP.load(model)
    assert type(pipe.clip).__name__ == "FrozenCLIP" and pipe.decoder.config.pad_token_id == 0
    assert pipe.generate_tensors(["a red circle"], steps=2, prior_steps=2)[0].shape == (1, 3, 16, 16)


def test_train_all_on_shards_embeds_then_trains_and_sums_up_the_skips(flow, tmp_path):
    model = tmp_path / "model"
    _run("train", "all", "--data", str(flow / "shards"), "--clip", f"hf:{flow / 'hf'}", "--preset", "tiny",
         "--steps", "2", "--batch-size", "8", "--out", str(model))  # fmt: skip
    summary = json.loads((model / "train_summary.json").read_text())
    assert summary["skipped"]["embed"]["undecodable_image"] == 1 and summary["skipped"]["embed"]["empty_caption"] == 1
    assert set(summary["skipped"]) == {"embed", "decoder"} and summary["embed"]["parts"] == 4
    assert summary["stages"]["decoder"]["source"]["image_embeds"]["found"] == 16
    assert summary["clip"]["kind"] == "hf" and (model / "embeddings" / "embed.json").is_file()
    assert UnCLIP.load(model).generate_tensors(["a red circle"], steps=2, prior_steps=2)[0].shape == (1, 3, 16, 16)
