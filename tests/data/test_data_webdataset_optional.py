"""webdataset is an optional extra: training on built-in data must not need it, and reading
shards without it must say how to install it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unclip.data import webdataset as wds_module
from unclip.errors import DataError

SRC = Path(__file__).resolve().parents[2] / "src"

# a Python session in which `import webdataset` fails, as on an installation without the extra
BLOCK = "import sys; sys.modules['webdataset'] = None; sys.modules['braceexpand'] = None; "


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, env=env, timeout=120)


def test_training_and_cli_import_without_webdataset():
    # the training entry points (reached by `unclip train decoder --data shapes`) import cleanly
    done = _python("import unclip.train.components, unclip.apps.cli.main, unclip.data.shard_writer; print('ok')")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_reading_shards_without_webdataset_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "webdataset", None)  # `import webdataset` now raises ImportError
    (tmp_path / "a.tar").write_bytes(b"")
    with pytest.raises(DataError, match=r"pip install webdataset"):
        wds_module.WebDatasetSource(str(tmp_path / "{a,b}.tar"), 16)
    source = wds_module.WebDatasetSource(str(tmp_path / "a.tar"), 16)
    with pytest.raises(DataError, match=r"\.\[data\]"):
        next(iter(source))
