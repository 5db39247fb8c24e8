"""A tiny model trained once per test session by `unclip train all --preset tiny`."""

from __future__ import annotations

import pytest

from unclip.cli import main


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny_model")
    assert main(["train", "all", "--data", "shapes", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    return str(out)
