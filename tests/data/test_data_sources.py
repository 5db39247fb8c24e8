"""The one streaming interface: caption folders and built-in sets, and `unclip data shards` round trips."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from unclip.apps.cli.main import main
from unclip.data import get_dataset, shard_writer
from unclip.data.folder_source import FolderSource
from unclip.data.sources import MapStyleSource, make_loader
from unclip.data.streaming import open_source
from unclip.data.webdataset import WebDatasetSource
from unclip.errors import DataError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (20, 16), (255, 0, 0)).save(root / "a" / "red.png")
    (root / "a" / "red.txt").write_text("a red thing\n")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(root / "a" / "blue.jpg", quality=95)
    (root / "a" / "blue.txt").write_text("blue")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (root / "a" / "broken.txt").write_text("broken")
    Image.new("RGB", (8, 8)).save(root / "nocap.png")
    Image.new("RGB", (8, 8)).save(root / "empty.png")
    (root / "empty.txt").write_text("   ")
    return root


def test_folder_source_skips_and_counts(folder):
    source = open_source(folder, 8, shuffle=False)
    assert isinstance(source, FolderSource)
    samples = list(source)
    assert [(s.key, s.caption) for s in samples] == [("a/blue", "blue"), ("a/red", "a red thing")]
    assert samples[0].image.shape == (3, 8, 8)
    assert source.skips.as_dict() == {
        "undecodable_image": 1,
        "no_image": 0,
        "no_caption": 1,
        "empty_caption": 1,
        "corrupt_shard": 0,
        "total": 3,
    }
    with pytest.raises(DataError, match="no captioned images"):
        FolderSource(folder / "a" / "..", 8, limit=0)


def test_builtin_sets_stream_with_stable_keys(monkeypatch):
    source = open_source("shapes", 16, length=12, seed=5, shuffle=False)
    assert isinstance(source, MapStyleSource) and len(source) == 12
    samples = list(source)
    ds = get_dataset("shapes", size=16, length=12, seed=5)
    assert [s.key for s in samples] == [f"shapes-train-s5-{i:08d}" for i in range(12)]
    assert torch.equal(samples[3].image, ds[3]["image"]) and samples[3].caption == ds[3]["caption"]
    seen = []
    for worker in range(3):
        monkeypatch.setenv("WORKER", str(worker))
        monkeypatch.setenv("NUM_WORKERS", "3")
        seen += [s.key for s in open_source("shapes", 16, length=12, seed=5)]
    assert sorted(seen) == [s.key for s in samples]
    batch = next(iter(make_loader(source, 4)))
    assert batch.images.shape == (4, 3, 16, 16) and len(batch.captions) == len(batch.keys) == 4


def test_unknown_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a built-in name"):
        open_source(tmp_path / "nothing-here", 8)


def test_shards_round_trip_builtin(tmp_path):
    out = tmp_path / "shards"
    assert (
        main(
            [
                "data",
                "shards",
                "shapes",
                "--out",
                str(out),
                "-n",
                "7",
                "--shard-size",
                "3",
                "--size",
                "16",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "00001.tar", "00002.tar", "shards.json"]
    summary = json.loads((out / "shards.json").read_text())
    assert summary["samples"] == 7 and summary["shards"] == ["00000.tar", "00001.tar", "00002.tar"]
    source = open_source(out, 16, shuffle=False)
    assert isinstance(source, WebDatasetSource)
    samples = list(source)
    ds = get_dataset("shapes", size=16, length=7, seed=2)
    assert [s.key for s in samples] == [f"{i:09d}" for i in range(7)]
    for i, s in enumerate(samples):  # PNG is lossless: the very same pixels come back
        assert torch.equal(s.image, ds[i]["image"]) and s.caption == ds[i]["caption"]


def test_shards_round_trip_folder_copies_bytes(folder, tmp_path):
    import tarfile

    out = tmp_path / "shards"
    summary = shard_writer.write_shards(folder, out, shard_size=10, progress=False)
    assert summary["samples"] == 3  # broken.png is copied as is; the reader skips it
    with tarfile.open(out / "00000.tar") as tar:
        names = tar.getnames()
        assert "000000000.jpg" in names and "000000002.png" in names
        assert tar.extractfile("000000000.jpg").read() == (folder / "a" / "blue.jpg").read_bytes()
        meta = json.loads(tar.extractfile("000000002.json").read())
    assert meta == {"key": "000000002", "caption": "a red thing", "path": "a/red.png"}
    source = open_source(out, 8, shuffle=False)
    assert [s.caption for s in source] == ["blue", "a red thing"]
    assert source.skips["undecodable_image"] == 1


def test_interrupted_shard_writing_leaves_only_whole_shards(tmp_path, monkeypatch):
    real = shard_writer._builtin_items

    def dies_after_five(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 5:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(shard_writer, "_builtin_items", dies_after_five)
    out = tmp_path / "shards"
    with pytest.raises(KeyboardInterrupt):
        shard_writer.write_shards("shapes", out, shard_size=2, size=16, length=9, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "00001.tar"]
    assert [s.key for s in open_source(out, 16, shuffle=False)] == [f"{i:09d}" for i in range(4)]
    with pytest.raises(DataError, match="already holds"):
        shard_writer.write_shards("shapes", out, size=16, length=2, progress=False)


def test_data_command_keeps_dumping_and_refuses_two_datasets(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path / "dump"), "-n", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "dump").iterdir()) == ["000.png", "001.png", "grid.png", "manifest.json"]
    assert Image.open(tmp_path / "dump" / "000.png").size == (64, 64)
    assert main(["data", "shapes", "emoji", "--out", str(tmp_path / "x")]) == 1
    assert "unclip data shards SRC" in capsys.readouterr().err
    assert main(["data", "shards", "nowhere", "--out", str(tmp_path / "y")]) == 1
