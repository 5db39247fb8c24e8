"""The decision rules of issue 16's benchmarks: the default output side, shipping a retrained decoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    """A benchmark script as a module (benchmarks/ is not a package)."""
    path = BENCHMARKS / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


module = _load("default_output_side.py")


def _eval(side: int, color: float = 1.0, shape: float = 1.0, both: float = 1.0) -> dict:
    return {"image_side": side, "color_accuracy": color, "shape_accuracy": shape, "both_right_rate": both}


def _stage(high: int, psnr: float, bicubic: float) -> dict:
    return {"high_res": high, "psnr_upsampler_db": psnr, "psnr_bicubic_db": bicubic}


def test_largest_side_that_keeps_accuracy_and_beats_bicubic():
    quality = {"stages": [_stage(128, 35.0, 32.0), _stage(512, 41.0, 39.0)]}
    assert module.choose_side(quality, [_eval(32), _eval(128), _eval(512)])["default_size"] == 512
    # the 512 stage loses to bicubic: 128
    quality["stages"][1]["psnr_upsampler_db"] = 38.0
    result = module.choose_side(quality, [_eval(32), _eval(128), _eval(512)])
    assert result["default_size"] == 128 and result["sides"][2]["beats_bicubic"] is False


def test_accuracy_loss_or_a_failing_earlier_stage_rules_a_side_out():
    quality = {"stages": [_stage(128, 35.0, 32.0), _stage(512, 41.0, 39.0)]}
    assert module.choose_side(quality, [_eval(32), _eval(128), _eval(512, shape=0.97)])["default_size"] == 128
    quality["stages"][0]["psnr_upsampler_db"] = 30.0  # the first stage loses: nothing above 32 qualifies
    assert module.choose_side(quality, [_eval(32), _eval(128), _eval(512)])["default_size"] == 32


def test_a_retrained_decoder_must_match_every_rate_and_the_mean_fid():
    compare = _load("compare_decoders.py")
    shipped = {"color_accuracy": 1.0, "shape_accuracy": 0.99, "single_object_rate": 0.97, "both_right_rate": 0.99}
    shipped["fid_mean"] = 100.0
    assert compare.verdict(shipped, dict(shipped)) == {"at_least_as_good": True, "worse_on": []}
    assert compare.verdict(shipped, {**shipped, "fid_mean": 99.0})["at_least_as_good"]
    assert compare.verdict(shipped, {**shipped, "fid_mean": 101.0})["worse_on"] == ["fid_mean"]
    assert compare.verdict(shipped, {**shipped, "single_object_rate": 0.96})["worse_on"] == ["single_object_rate"]
