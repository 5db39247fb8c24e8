"""Every generation mode and manipulation command runs on a diffusers unCLIP (Karlo-layout) directory
through ``unclip.apps.cli.main.main``; invert then vary --eta 0 reconstructs an image the tiny model generated."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from unclip.apps.cli.main import main

STEPS = "20"


def _ok(*argv: str) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def _psnr(a_path, b_path) -> float:
    a = np.asarray(Image.open(a_path).convert("RGB"), dtype=np.float64) / 255
    b = np.asarray(Image.open(b_path).convert("RGB"), dtype=np.float64) / 255
    assert a.shape == b.shape
    return 10 * math.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-12))


@pytest.fixture(scope="module")
def model_args(karlo_invertible_dir, karlo_dirs) -> list[str]:
    return ["--model", str(karlo_invertible_dir), "--image-encoder-from", str(karlo_dirs["variations"])]


@pytest.fixture(scope="module")
def generated(model_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("karlo_gen")
    _ok("generate", "a red horse", *model_args, "-n", "1", "--steps", "5", "--prior-steps", "5", "--size", "64",
        "--out", out)  # fmt: skip
    assert Image.open(out / "000.png").size == (64, 64)
    return out / "000.png"


def test_invert_then_vary_eta0_reconstructs(generated, model_args, tmp_path):
    lat = tmp_path / "lat.safetensors"
    _ok("invert", generated, *model_args, "--steps", STEPS, "--out", lat)
    _ok("vary", lat, *model_args, "--steps", STEPS, "--eta", "0", "-n", "1", "--size", "64", "--out", tmp_path / "v")
    psnr = _psnr(generated, tmp_path / "v" / "000.png")
    assert psnr >= 35.0, psnr
    # the latent decodes to the image only under its own z_i: a text diff towards another caption moves away
    _ok("textdiff", lat, *model_args, "--from", "a red horse", "--to", "a blue cat", "--frames", "2",
        "--max-theta", "1", "--size", "64", "--out", tmp_path / "td")  # fmt: skip
    assert _psnr(generated, tmp_path / "td" / "000.png") >= 35.0  # theta 0 is the reconstruction
    moved = _psnr(generated, tmp_path / "td" / "001.png")
    print(f"invert + vary --eta 0: {psnr:.1f} dB; text diff at theta 1: {moved:.1f} dB")
    assert moved < psnr - 5


def test_every_manipulation_command_runs(generated, model_args, tmp_path):
    lat, few = tmp_path / "lat.safetensors", ("--steps", "5")
    _ok("invert", generated, *model_args, *few, "--out", lat, "--reconstruct", tmp_path / "rec")
    _ok("vary", generated, *model_args, *few, "--eta", "1", "-n", "2", "--size", "128", "--out", tmp_path / "vary")
    assert Image.open(tmp_path / "vary" / "001.png").size == (128, 128)
    _ok("interpolate", lat, generated, *model_args, *few, "--frames", "3", "--size", "64", "--out", tmp_path / "interp")
    _ok("textdiff", generated, *model_args, *few, "--from", "a horse", "--to", "a cat", "--frames", "2",
        "--size", "64", "--out", tmp_path / "td")  # fmt: skip
    _ok("probe-pca", generated, *model_args, *few, "--dims", "2,4", "--fit-n", "8", "--out", tmp_path / "pca")
    for name, count in (("vary", 2), ("interp", 3), ("td", 2), ("pca", 3)):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert len(manifest["images"]) == count, name


@pytest.mark.parametrize("prior", ["diffusion", "text-embed", "none"])
def test_generate_modes_at_both_sizes(prior, model_args, tmp_path):
    size = "128" if prior == "diffusion" else "64"
    _ok("generate", "a horse", "a cat", *model_args, "-n", "1", "--prior", prior, "--steps", "3", "--prior-steps", "3",
        "--size", size, "--upsampler-steps", "2", "--out", tmp_path)  # fmt: skip
    assert Image.open(tmp_path / "001.png").size == (int(size), int(size))


def test_errors_name_the_fix(karlo_dirs, tmp_path, capsys):
    t2i, variations = str(karlo_dirs["t2i"]), str(karlo_dirs["variations"])
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    # no image encoder in the text-to-image directory: the message names the option that brings one
    assert main(["invert", str(tmp_path / "x.png"), "--model", t2i, "--out", str(tmp_path / "l.safetensors")]) == 1
    assert "--image-encoder-from" in capsys.readouterr().err
    # the image-variations directory has no prior, and Karlo no autoregressive prior
    assert (
        main(["generate", "a horse", "--model", variations, "-n", "1", "--steps", "2", "--out", str(tmp_path / "out")])
        == 1
    )
    assert "no prior" in capsys.readouterr().err
    assert main(["generate", "a horse", "--model", variations, "--prior", "ar", "--out", str(tmp_path / "out")]) == 1
    assert "autoregressive" in capsys.readouterr().err
