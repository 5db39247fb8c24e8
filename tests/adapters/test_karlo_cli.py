"""Every generation mode and manipulation command runs on a diffusers unCLIP (Karlo-layout) directory
through ``unclip.cli.main``; invert then vary --eta 0 reconstructs an image the tiny model generated."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from unclip.cli import main

STEPS = "20"


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
    assert (
        main(
            [
                "generate",
                "a red horse",
                *model_args,
                "-n",
                "1",
                "--steps",
                "5",
                "--prior-steps",
                "5",
                "--size",
                "64",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert Image.open(out / "000.png").size == (64, 64)
    return out / "000.png"


def test_invert_then_vary_eta0_reconstructs(generated, model_args, tmp_path):
    lat = tmp_path / "lat.safetensors"
    assert main(["invert", str(generated), *model_args, "--steps", STEPS, "--out", str(lat)]) == 0
    assert (
        main(
            [
                "vary",
                str(lat),
                *model_args,
                "--steps",
                STEPS,
                "--eta",
                "0",
                "-n",
                "1",
                "--size",
                "64",
                "--out",
                str(tmp_path / "v"),
            ]
        )
        == 0
    )
    psnr = _psnr(generated, tmp_path / "v" / "000.png")
    assert psnr >= 35.0, psnr
    # the latent decodes only under its own z_i: decoding it after a text diff towards another caption moves away
    assert (
        main(
            [
                "textdiff",
                str(lat),
                *model_args,
                "--from",
                "a red horse",
                "--to",
                "a blue cat",
                "--frames",
                "2",
                "--max-theta",
                "1",
                "--size",
                "64",
                "--out",
                str(tmp_path / "td"),
            ]
        )
        == 0
    )
    assert _psnr(generated, tmp_path / "td" / "000.png") >= 35.0  # theta 0 is the reconstruction
    moved = _psnr(generated, tmp_path / "td" / "001.png")
    print(f"invert + vary --eta 0: {psnr:.1f} dB; text diff at theta 1: {moved:.1f} dB")
    assert moved < psnr - 5


def test_every_manipulation_command_runs(generated, model_args, tmp_path):
    lat = tmp_path / "lat.safetensors"
    assert (
        main(
            [
                "invert",
                str(generated),
                *model_args,
                "--steps",
                "5",
                "--out",
                str(lat),
                "--reconstruct",
                str(tmp_path / "rec"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "vary",
                str(generated),
                *model_args,
                "--steps",
                "5",
                "--eta",
                "1",
                "-n",
                "2",
                "--size",
                "128",
                "--out",
                str(tmp_path / "vary"),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "vary" / "001.png").size == (128, 128)
    assert (
        main(
            [
                "interpolate",
                str(lat),
                str(generated),
                *model_args,
                "--steps",
                "5",
                "--frames",
                "3",
                "--size",
                "64",
                "--out",
                str(tmp_path / "interp"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "textdiff",
                str(generated),
                *model_args,
                "--steps",
                "5",
                "--from",
                "a horse",
                "--to",
                "a cat",
                "--frames",
                "2",
                "--size",
                "128",
                "--out",
                str(tmp_path / "td"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "probe-pca",
                str(generated),
                *model_args,
                "--steps",
                "5",
                "--dims",
                "2,4",
                "--fit-n",
                "8",
                "--out",
                str(tmp_path / "pca"),
            ]
        )
        == 0
    )
    for name, count in (("vary", 2), ("interp", 3), ("td", 2), ("pca", 3)):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert len(manifest["images"]) == count, name


@pytest.mark.parametrize("prior", ["diffusion", "text-embed", "none"])
def test_generate_modes_at_both_sizes(prior, model_args, tmp_path):
    size = "128" if prior == "diffusion" else "64"
    args = [
        "generate",
        "a horse",
        "a cat",
        *model_args,
        "-n",
        "1",
        "--prior",
        prior,
        "--steps",
        "3",
        "--prior-steps",
        "3",
        "--size",
        size,
        "--upsampler-steps",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    assert Image.open(tmp_path / "001.png").size == (int(size), int(size))


def test_errors_name_the_fix(karlo_dirs, tmp_path, capsys):
    # no image encoder in the text-to-image directory: the message says which option brings one
    assert (
        main(
            [
                "invert",
                str(tmp_path / "x.png"),
                "--model",
                str(karlo_dirs["t2i"]),
                "--out",
                str(tmp_path / "l.safetensors"),
            ]
        )
        == 1
    )
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    assert (
        main(
            [
                "invert",
                str(tmp_path / "x.png"),
                "--model",
                str(karlo_dirs["t2i"]),
                "--out",
                str(tmp_path / "l.safetensors"),
            ]
        )
        == 1
    )
    assert "--image-encoder-from" in capsys.readouterr().err
    # the image-variations directory has no prior
    assert (
        main(
            [
                "generate",
                "a horse",
                "--model",
                str(karlo_dirs["variations"]),
                "-n",
                "1",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "g"),
            ]
        )
        == 1
    )
    assert "no prior" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "a horse",
                "--model",
                str(karlo_dirs["variations"]),
                "--prior",
                "ar",
                "--out",
                str(tmp_path / "g"),
            ]
        )
        == 1
    )
