"""Suite-wide settings and fixtures.

Torch runs single-threaded: tiny tensors run faster on one thread than on two (less
OpenMP overhead), and timings should not depend on the machine's core count.
"""

from __future__ import annotations

import pytest
import torch

from unclip.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny model directory trained once per session by `unclip train all --preset tiny`."""
    out = tmp_path_factory.mktemp("tiny_model")
    assert main(["train", "all", "--data", "shapes", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    return str(out)
