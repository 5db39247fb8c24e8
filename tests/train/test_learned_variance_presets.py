"""The decoder learns its variance by default (unCLIP's decoder is an iDDPM model; issue 16, item 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from unclip.apps.cli.main import build_parser, main
from unclip.train.presets import RUN_PRESETS, get_preset


@pytest.mark.parametrize("name", sorted(RUN_PRESETS))
def test_every_preset_decoder_learns_its_variance(name: str) -> None:
    assert get_preset("decoder", name)["diffusion"]["learned_variance"] is True


@pytest.mark.parametrize(
    "argv, expected", [([], None), (["--learned-variance"], True), (["--no-learned-variance"], False)]
)
def test_train_flag_parses(argv: list[str], expected: bool | None) -> None:
    args = build_parser().parse_args(["train", "decoder", "--out", "x", *argv])
    assert args.learned_variance is expected


def test_tiny_model_decoder_has_six_output_channels_and_flag_turns_it_off(tiny_model: str, tmp_path: Path) -> None:
    from unclip.model_dir import load_decoder

    decoder, settings = load_decoder(Path(tiny_model) / "decoder")
    assert settings.learned_variance and decoder.config.learned_variance and decoder.config.out_channels == 6
    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    shutil.rmtree(copy / "decoder")
    shutil.rmtree(copy / "runs" / "decoder", ignore_errors=True)
    argv = [
        "train",
        "decoder",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--no-learned-variance",
        "--out",
        str(copy),
        "--no-progress",
    ]
    assert main(argv) == 0
    decoder, settings = load_decoder(copy / "decoder")
    assert not settings.learned_variance and decoder.config.out_channels == 3
