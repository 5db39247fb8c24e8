"""Text-diff calibration (issue 16, item 7): pairs, batched frames, scoring, calibration, model.json default."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from unclip.data.shapes import COLORS, SHAPES, render_batch
from unclip.errors import InputError
from unclip.eval.textdiff_calibration import (
    DiffPair,
    calibrate,
    diff_pairs,
    measure_text_diffs,
    score_frames,
    single_object_sources,
    store_default_max_theta,
    text_diff_frames,
)
from unclip.manipulate import invert, text_diff
from unclip.pipeline import UnCLIP


def test_calibrate_picks_the_first_theta_reaching_the_target() -> None:
    thetas = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert calibrate(thetas, [0.0, 0.5, 0.85, 0.95, 0.97], target=0.9) == 0.75
    assert calibrate(thetas, [0.0, 0.5, 0.91, 0.95, 0.97], target=0.9) == 0.5
    assert calibrate(thetas, [0.0, 0.4, 0.7, 0.6, 0.5], target=0.9) == 0.5  # never reached: the best theta
    with pytest.raises(InputError):
        calibrate(thetas, [0.1])


def test_sources_and_pairs_cover_every_value_to_every_other() -> None:
    x, attrs = single_object_sources(16, "colour", 2)
    assert x.shape == (2 * len(COLORS), 3, 16, 16)
    assert sorted({a["color"] for a in attrs}) == sorted(COLORS)
    pairs = diff_pairs(attrs, "colour")
    assert len(pairs) == len(attrs) * (len(COLORS) - 1)
    assert all(p.target != attrs[p.source]["color"] and p.keep == attrs[p.source]["shape"] for p in pairs)
    assert pairs[0].from_text == f"a {attrs[0]['color']} {attrs[0]['shape']}"
    _, sattrs = single_object_sources(16, "shape", 1)
    spairs = diff_pairs(sattrs, "shape")
    assert len(spairs) == len(SHAPES) * (len(SHAPES) - 1)
    assert {(sattrs[p.source]["shape"], p.target) for p in spairs} == {(a, b) for a in SHAPES for b in SHAPES if a != b}


def test_scoring_reads_target_and_kept_attributes_from_frames() -> None:
    x, attrs = single_object_sources(64, "colour", 1)
    a0, a1 = attrs[0], attrs[1]  # two images of different colours
    frames = torch.stack([x[0], x[1]])[None]  # one pair, frame 0 = source look, frame 1 = the other image
    pair = DiffPair("colour", 0, "", "", target=a1["color"], keep=a0["shape"])
    flags = score_frames(frames, [pair])
    assert flags["reached"].tolist() == [[False, True]]
    assert flags["kept"].tolist() == [[True, a1["shape"] == a0["shape"]]]


def test_batched_frames_equal_the_text_diff_of_the_library(tiny_model: str) -> None:
    pipe = UnCLIP.load(tiny_model)
    x, _, _ = render_batch("test", 0, 2, size=pipe.decoder.config.image_size)
    latent = invert(pipe, x, steps=3)
    pairs = [
        DiffPair("colour", 1, "a red circle", "a blue circle", "blue", "circle"),
        DiffPair("shape", 0, "a red circle", "a red star", "star", "red"),
    ]
    thetas = [0.0, 0.3, 0.6]
    frames = text_diff_frames(pipe, latent, pairs, thetas, batch_size=4)
    assert frames.shape == (2, 3, 3, 16, 16)
    for k, p in enumerate(pairs):
        ref = text_diff(pipe, latent[p.source], p.from_text, p.to_text, max_theta=0.6, frames=3)
        assert torch.allclose(frames[k], ref.cpu(), atol=1e-5)


def test_measurement_runs_and_reports_fractions(tiny_model: str) -> None:
    pipe = UnCLIP.load(tiny_model)
    out = measure_text_diffs(pipe, [0.0, 1.0], kinds=("shape",), per_value=1, steps=2)
    rows = out["kinds"]["shape"]["per_theta"]
    assert [r["theta"] for r in rows] == [0.0, 1.0]
    assert out["kinds"]["shape"]["edits"] == 12
    for r in rows:
        assert 0.0 <= r["reached_and_kept"] <= min(r["reached"], r["kept"]) <= 1.0
    assert out["calibrated_max_theta"] in (0.0, 1.0)


def test_stored_default_max_theta_is_loaded_and_used(tiny_model: str, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert UnCLIP.load(model).defaults.text_diff_max_theta == 0.5  # no key: the old default
    store_default_max_theta(model, 0.0, {"note": "test"})
    pipe = UnCLIP.load(model)
    assert pipe.defaults.text_diff_max_theta == 0.0
    x, _, _ = render_batch("test", 0, 1, size=pipe.decoder.config.image_size)
    lat = invert(pipe, x, steps=2)
    frames = text_diff(pipe, lat, "a red circle", "a blue circle", frames=3)  # max_theta from model.json
    assert torch.equal(frames[0], frames[2])  # max theta 0: every frame is the reconstruction
    moved = text_diff(pipe, lat, "a red circle", "a blue circle", frames=3, max_theta=1.0)
    assert not torch.equal(moved[0], moved[2])
