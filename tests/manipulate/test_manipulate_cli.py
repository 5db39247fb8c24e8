"""The manipulation commands through `unclip.apps.cli.main.main`, on the tiny model."""

import json

import pytest
import torch

from unclip.apps.cli.main import build_parser, main
from unclip.apps.cli.manipulate import COMMANDS
from unclip.apps.gallery import GallerySection
from unclip.data.shapes import render_batch
from unclip.manipulate import BipartiteLatent
from unclip.storage.imageio import save_png, tensor_to_pil


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    x, _, _ = render_batch("test", 0, 2, size=24)  # not the decoder's size: resized on input
    paths = []
    for k, im in enumerate(tensor_to_pil(x)):
        paths.append(str(save_png(im, d / f"in{k}.png")))
    return paths


def _check_set(out, n):
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["file"] for e in manifest["images"]] == [f"{k:03d}.png" for k in range(n)]
    assert all((out / e["file"]).is_file() for e in manifest["images"])
    assert (out / "grid.png").is_file()
    return manifest


def test_help_lists_every_command(capsys):
    for cmd in sorted(COMMANDS):
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "-h"])
        text = capsys.readouterr().out
        assert "--model" in text and "--out" in text and "--device" in text


def test_invert_then_vary_from_the_latent(tiny_model, pngs, tmp_path):
    lat_path = tmp_path / "a.safetensors"
    assert (
        main(
            [
                "invert",
                pngs[0],
                "--model",
                tiny_model,
                "--out",
                str(lat_path),
                "--steps",
                "4",
                "--reconstruct",
                str(tmp_path / "rec"),
            ]
        )
        == 0
    )
    lat = BipartiteLatent.load(lat_path)
    assert lat.steps == 4 and lat.guidance == 1.0 and len(lat) == 1
    rec = _check_set(tmp_path / "rec", 1)
    assert rec["images"][0]["psnr_db"] > 0
    out = tmp_path / "vary"
    assert (
        main(
            ["vary", str(lat_path), "--model", tiny_model, "--eta", "0.5", "-n", "3", "--seed", "2", "--out", str(out)]
        )
        == 0
    )
    m = _check_set(out, 3)
    assert m["command"] == "vary" and m["settings"]["eta"] == 0.5 and m["images"][0]["seed"] == 2


def test_vary_is_seeded(tiny_model, pngs, tmp_path):
    args = ["vary", pngs[0], "--model", tiny_model, "-n", "2", "--steps", "3", "--seed", "1"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "001.png").read_bytes() == (tmp_path / "b" / "001.png").read_bytes()


def test_interpolate_and_textdiff(tiny_model, pngs, tmp_path):
    assert (
        main(
            [
                "interpolate",
                pngs[0],
                pngs[1],
                "--model",
                tiny_model,
                "--frames",
                "3",
                "--noise",
                "fixed",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "i"),
            ]
        )
        == 0
    )
    m = _check_set(tmp_path / "i", 3)
    assert [e["theta"] for e in m["images"]] == [0.0, 0.5, 1.0]
    assert (
        main(
            [
                "textdiff",
                pngs[0],
                "--model",
                tiny_model,
                "--from",
                "a red circle",
                "--to",
                "a blue circle",
                "--frames",
                "3",
                "--max-theta",
                "0.4",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    m = _check_set(tmp_path / "t", 3)
    assert m["images"][-1]["theta"] == pytest.approx(0.4) and m["images"][0]["prompt"] == "a blue circle"


def test_probe_pca(tiny_model, pngs, tmp_path):
    assert (
        main(
            [
                "probe-pca",
                pngs[0],
                "--model",
                tiny_model,
                "--dims",
                "1,3",
                "--fit-n",
                "40",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    m = _check_set(tmp_path / "p", 3)
    assert [e["components"] for e in m["images"]] == [1, 3, "all"]
    assert isinstance(m["components_for_1pct"], int)


def test_errors_name_the_input(tiny_model, tmp_path, capsys):
    assert main(["vary", str(tmp_path / "nope.png"), "--model", tiny_model, "--out", str(tmp_path / "o")]) == 1
    assert "nope.png" in capsys.readouterr().err
    assert (
        main(
            [
                "probe-pca",
                str(tmp_path / "nope.png"),
                "--model",
                tiny_model,
                "--dims",
                "a,b",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )


def test_demo_sections(tiny_model):
    from unclip.apps.demo_manipulate import manipulation_sections
    from unclip.pipeline import UnCLIP

    torch.manual_seed(0)
    secs = manipulation_sections(
        UnCLIP.load(tiny_model), seed=0, steps=3, variations=2, frames=3, pca_dims=(2, 4), pca_fit_n=40
    )
    assert len(secs) == 4 and all(isinstance(s, GallerySection) for s in secs)
    assert [len(s.items) for s in secs] == [4, 5, 4, 3]
