"""End to end: train all (tiny) -> model directory -> generate / eval / CLI outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unclip.apps.cli.main import main
from unclip.errors import CheckpointError, InputError
from unclip.pipeline import UnCLIP


def test_train_all_writes_a_complete_model_directory(tiny_model: str) -> None:
    root = Path(tiny_model)
    meta = json.loads((root / "model.json").read_text())
    assert meta["format"] == "unclip-model" and meta["version"] == 1
    for component in ("clip", "prior_diffusion", "decoder"):
        assert (root / component / "config.json").is_file()
        assert (root / component / "weights.safetensors").is_file()
    retrieval = json.loads((root / "clip_retrieval.json").read_text())
    assert 0.0 <= retrieval["top1"] <= 1.0 and retrieval["num_held_out_images"] > 0


def test_generate_shapes_range_and_determinism(tiny_model: str) -> None:
    pipe = UnCLIP.load(tiny_model)
    kw = dict(steps=3, prior_steps=3)
    a, prompts = pipe.generate_tensors(["a red circle", "a green star"], num_images=2, seed=7, **kw)
    b, _ = pipe.generate_tensors(["a red circle", "a green star"], num_images=2, seed=7, **kw)
    c, _ = pipe.generate_tensors(["a red circle", "a green star"], num_images=2, seed=8, **kw)
    size = pipe.decoder.config.image_size
    assert a.shape == (4, 3, size, size) and a.dtype == torch.float32
    assert prompts == ["a red circle"] * 2 + ["a green star"] * 2
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    images = pipe.generate("a blue square", num_images=1, seed=0, **kw)
    assert images[0].size == (size, size)


@pytest.mark.parametrize("mode", ["diffusion", "text-embed", "none"])
def test_prior_modes(tiny_model: str, mode: str) -> None:
    pipe = UnCLIP.load(tiny_model)
    z = pipe.image_embeds_for(
        ["a red circle", "a blue star"], mode, generator=torch.Generator().manual_seed(0), steps=3
    )
    assert z.shape == (2, pipe.clip.embed_dim)
    if mode == "none":
        assert torch.all(z == 0)
    else:
        assert torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-4)


def test_bad_inputs_raise_clear_errors(tiny_model: str, tmp_path: Path) -> None:
    pipe = UnCLIP.load(tiny_model)
    with pytest.raises(InputError, match="prior mode"):
        pipe.image_embeds_for(["a red circle"], "bogus")
    with pytest.raises(InputError, match="non-empty"):
        pipe.generate([""], steps=2)
    with pytest.raises(CheckpointError, match="neither a shipped model"):
        UnCLIP.load(tmp_path / "missing")
    (tmp_path / "model.json").write_text(json.dumps({"format": "unclip-model", "version": 99, "components": {}}))
    with pytest.raises(CheckpointError, match="version 99"):
        UnCLIP.load(tmp_path)


def test_cli_generate_writes_standard_outputs(tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                "a red circle",
                "a green star",
                "-n",
                "2",
                "--model",
                tiny_model,
                "--steps",
                "2",
                "--prior-steps",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["file"] for e in manifest["images"]] == ["000.png", "001.png", "002.png", "003.png"]
    assert manifest["images"][2]["prompt"] == "a green star"
    assert (out / "grid.png").is_file() and (out / "003.png").is_file()


def test_cli_eval_reports_every_figure(tiny_model: str, capsys) -> None:
    assert main(["eval", "--model", tiny_model, "--seeds", "1", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in (
        "color_accuracy",
        "shape_accuracy",
        "single_object_rate",
        "both_right_rate",
        "center_spread_x",
        "center_spread_y",
        "clip_score",
        "prior_cosine_to_true_image_embed",
    ):
        assert key in report
    assert report["images"] == 32
    assert set(report["held_out_pairs"]) == {
        "color_accuracy",
        "shape_accuracy",
        "single_object_rate",
        "both_right_rate",
    }


def test_cli_demo_writes_gallery(tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--model", tiny_model, "-n", "1", "--steps", "2", "--manipulations", "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "Held-out pairs" in page and "Text diff" in page and "PCA probe" in page
    assert page.count("<img") > 17
    plain = tmp_path / "plain"
    assert main(["demo", "--model", tiny_model, "-n", "1", "--steps", "2", "--out", str(plain)]) == 0
    assert (plain / "index.html").read_text().count("<img") == 17


def test_cli_help_for_every_command(capsys) -> None:
    for command in ("demo", "train", "generate", "eval", "bench", "data"):
        with pytest.raises(SystemExit) as exc:
            main([command, "-h"])
        assert exc.value.code == 0
        assert len(capsys.readouterr().out) > 200


def test_train_resume_keeps_finished_components(tiny_model: str, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    before = (copy / "decoder" / "weights.safetensors").read_bytes()
    assert (
        main(["train", "all", "--data", "shapes", "--preset", "tiny", "--out", str(copy), "--resume", "--no-progress"])
        == 0
    )
    assert (copy / "decoder" / "weights.safetensors").read_bytes() == before
