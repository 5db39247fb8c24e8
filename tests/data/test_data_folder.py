"""CaptionFolderDataset: img2dataset layout, skipping uncaptioned and corrupt images."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from unclip.data.folder import CaptionFolderDataset
from unclip.errors import DataError


def _img(path, size=(20, 20), color=(255, 0, 0), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)


def _caption(path, text):
    path.with_suffix(".txt").write_text(text, encoding="utf-8")


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    _img(root / "00000" / "a.png", color=(255, 0, 0))
    _caption(root / "00000" / "a.png", "a red square\n")
    _img(root / "00000" / "b.jpg", color=(0, 0, 255))
    _caption(root / "00000" / "b.jpg", "blue")
    (root / "00000" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # corrupt
    _caption(root / "00000" / "c.png", "broken")
    _img(root / "00001" / "d.webp", color=(0, 255, 0))  # no caption: left out
    _img(root / "00001" / "E.PNG", color=(0, 255, 0))
    _caption(root / "00001" / "E.PNG", "green upper-case extension")
    _img(root / "00001" / "f.bmp", color=(10, 20, 30))
    _caption(root / "00001" / "f.bmp", "")  # empty caption: left out
    (root / "00001" / "notes.md").write_text("ignored")
    return root


def test_scan_and_items(folder):
    ds = CaptionFolderDataset(folder, size=16)
    assert len(ds) == 4  # a, b, c (corrupt, found later), E
    assert ds.uncaptioned == 2
    item = ds[0]
    assert item["caption"] == "a red square"
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert torch.allclose(item["image"][:, 5, 5], torch.tensor([1.0, -1.0, -1.0]))
    assert item["attributes"]["path"].endswith("a.png")
    assert ds[1]["caption"] == "blue"


def test_corrupt_image_is_skipped_and_counted(folder, caplog):
    ds = CaptionFolderDataset(folder, size=16)
    with caplog.at_level(logging.WARNING):
        item = ds[2]  # c.png is corrupt: the next good one comes back
    assert item["caption"] == "green upper-case extension"
    assert ds.skipped == 1
    assert any("c.png" in r.getMessage() for r in caplog.records)
    ds[2]
    assert ds.skipped == 1  # counted once
    assert [ds[i]["caption"] for i in range(len(ds))]  # a full pass never raises


def test_centre_crop(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :10] = (255, 0, 0)
    arr[:, 10:30] = (0, 255, 0)
    arr[:, 30:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    _caption(tmp_path / "wide.png", "wide")
    img = CaptionFolderDataset(tmp_path, size=10)[0]["image"]
    assert img.shape == (3, 10, 10)
    assert torch.allclose(img[1], torch.ones(10, 10)) and torch.allclose(img[0], -torch.ones(10, 10))


def test_rgba_and_grey_become_rgb(tmp_path):
    _img(tmp_path / "t.png", color=(0, 0, 0, 0), mode="RGBA")
    _caption(tmp_path / "t.png", "transparent")
    _img(tmp_path / "u.png", color=128, mode="L")
    _caption(tmp_path / "u.png", "grey")
    ds = CaptionFolderDataset(tmp_path, size=8)
    assert torch.allclose(ds[0]["image"], torch.ones(3, 8, 8))  # composited on white
    assert ds[1]["image"].shape == (3, 8, 8)


def test_empty_or_missing_folder_errors(tmp_path):
    with pytest.raises(DataError) as err:
        CaptionFolderDataset(tmp_path)
    assert str(tmp_path) in str(err.value) and ".txt" in str(err.value)
    _img(tmp_path / "x.png")
    with pytest.raises(DataError, match="1 images had no caption"):
        CaptionFolderDataset(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        CaptionFolderDataset(tmp_path / "nope")


def test_all_corrupt_raises_not_loops(tmp_path):
    (tmp_path / "x.png").write_bytes(b"junk")
    _caption(tmp_path / "x.png", "junk")
    ds = CaptionFolderDataset(tmp_path)
    with pytest.raises(DataError, match="could be read"):
        ds[0]
    assert ds.skipped == 1
