"""get_dataset and dump_samples (what `unclip data` writes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unclip.data import CaptionFolderDataset, LimitedDataset, ShapesDataset, get_dataset
from unclip.data import emoji as E
from unclip.data.dump import dump_samples
from unclip.errors import DataError


def test_get_dataset_shapes():
    ds = get_dataset("shapes", split="val", size=32, seed=3, length=12)
    assert isinstance(ds, ShapesDataset) and len(ds) == 12
    assert (ds.split, ds.size, ds.seed) == ("val", 32, 3)
    assert len(get_dataset("shapes")) == 10_000


def test_get_dataset_unknown_lists_choices(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("mnist")
    msg = str(err.value)
    assert "mnist" in msg and "shapes" in msg and "emoji" in msg and "folder" in msg


def test_get_dataset_emoji_without_fonts(monkeypatch):
    monkeypatch.delenv(E.NOTO_ENV, raising=False)
    monkeypatch.setattr(E, "NOTO_CANDIDATES", ())
    with pytest.raises(DataError, match="install"):
        get_dataset("emoji", split="val")


def test_get_dataset_folder_split_and_length(tmp_path):
    for split in ("train", "val"):
        for i in range(3):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{split}_{i}.png")
    (tmp_path / "val").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "val" / f"{i}.png")
        (tmp_path / "val" / f"{i}.txt").write_text(f"val {i}")
        (tmp_path / f"train_{i}.txt").write_text(f"train {i}")
    val = get_dataset(str(tmp_path), split="val", size=8)
    assert isinstance(val, CaptionFolderDataset) and val[0]["caption"] == "val 0"
    train = get_dataset(tmp_path, split="train", size=8, length=2)
    assert isinstance(train, LimitedDataset) and len(train) == 2
    assert train.root == tmp_path and train.size == 8  # attributes pass through
    assert [train[i]["caption"] for i in range(2)] == ["train 0", "train 1"]
    with pytest.raises(IndexError):
        train[2]


def test_dump_samples_shapes(tmp_path):
    ds = get_dataset("shapes", split="test", size=24, seed=1, length=50)
    out = dump_samples(ds, 5, tmp_path / "d", start=10)
    m = json.loads((out / "manifest.json").read_text())
    assert (m["dataset"], m["split"], m["seed"], m["size"]) == ("shapes", "test", 1, 24)
    assert [e["file"] for e in m["images"]] == [f"00{i}.png" for i in range(5)]
    for k, e in enumerate(m["images"]):
        item = ds[10 + k]
        assert e["index"] == 10 + k and e["caption"] == e["prompt"] == item["caption"]
        assert e["attributes"] == item["attributes"]
        png = torch.from_numpy(np.array(Image.open(out / e["file"]))).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(png, item["image"], atol=1e-6)
    grid = Image.open(out / "grid.png")
    assert grid.size[0] > 24 * 2 and grid.size[1] > 24


def test_dump_samples_caps_at_dataset_end(tmp_path):
    ds = get_dataset("shapes", size=16, length=3)
    out = dump_samples(ds, 10, tmp_path, start=1)
    assert len(json.loads((out / "manifest.json").read_text())["images"]) == 2
    with pytest.raises(DataError, match="start"):
        dump_samples(ds, 1, tmp_path, start=3)
