"""Suite-wide settings and fixtures.

Torch runs single-threaded: tiny tensors run faster on one thread than on two (less
OpenMP overhead), and timings should not depend on the machine's core count.
"""

from __future__ import annotations

import pytest
import torch

from unclip.apps.cli.main import main

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny model directory trained once per session by `unclip train all --preset tiny`."""
    out = tmp_path_factory.mktemp("tiny_model")
    assert main(["train", "all", "--data", "shapes", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    return str(out)


@pytest.fixture(scope="session")
def full_tiny_model(tiny_model, tmp_path_factory) -> str:
    """``tiny_model`` plus every optional component: the AR prior, the GLIDE-style text-only
    decoder and a 16 -> 64 upsampler, each added by its `unclip train` command."""
    import shutil

    out = tmp_path_factory.mktemp("full_tiny_model") / "model"
    shutil.copytree(tiny_model, out)
    for args in (["ar-prior"], ["decoder", "--text-only"], ["upsampler", "--low-res", "16", "--high-res", "64"]):
        assert main(["train", *args, "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    return str(out)
