"""WebDataset shards: bad data skipped and counted, spec resolution, rank/worker splitting."""

from __future__ import annotations

import logging

import pytest
import torch
from shard_helpers import good_members, make_good_shards, make_tar, png_bytes

from unclip.data.sources import SKIP_REASONS, make_loader
from unclip.data.streaming import open_source
from unclip.data.webdataset import WebDatasetSource, resolve_shards
from unclip.errors import DataError


@pytest.fixture
def bad_shards(tmp_path):
    """Three shards: one with every kind of bad sample, one truncated, one not a tar at all."""
    root = tmp_path / "bad"
    make_tar(
        root / "00000.tar",
        good_members(["ok1"])
        + [("broken.jpg", b"\xff\xd8\xff not a jpeg"), ("broken.txt", b"undecodable")]
        + [("nocap.png", png_bytes())]
        + [("empty.png", png_bytes()), ("empty.txt", b"  \n ")]
        + [("noimage.txt", b"caption without image")]
        + good_members(["ok2"]),
    )
    whole = make_tar(root / "00001.tar", good_members(["t1", "t2", "t3"]))
    data = whole.read_bytes()
    # Cut inside the data of t3's image: t1 survives; t2, whose group was still open when
    # the error came (a group ends when the next key starts), is lost with t3.
    cut = data.index(b"t3.png") + 512 + 20
    whole.write_bytes(data[:cut])
    (root / "00002.tar").write_bytes(b"this is not a tar file at all" * 40)
    return root


def _collect(source):
    return {s.key: s for s in source}


def test_every_bad_case_is_skipped_and_counted(bad_shards, caplog):
    source = open_source(bad_shards, 8, shuffle=False)
    assert isinstance(source, WebDatasetSource)
    with caplog.at_level(logging.WARNING, logger="unclip.data.sources"):
        got = _collect(source)
    assert sorted(got) == ["ok1", "ok2", "t1"]
    assert got["ok1"].caption == "caption ok1"
    assert got["t1"].image.shape == (3, 8, 8)
    counts = source.skips.as_dict()
    assert counts == {
        "undecodable_image": 1,
        "no_image": 1,
        "no_caption": 1,
        "empty_caption": 1,
        "corrupt_shard": 2,
        "total": 6,
    }
    shard_warnings = [r.getMessage() for r in caplog.records if "truncated or corrupt" in r.getMessage()]
    assert len(shard_warnings) == 2  # one per bad shard, naming it
    assert any("00001.tar" in m for m in shard_warnings) and any("00002.tar" in m for m in shard_warnings)
    assert source.describe()["skipped"]["total"] == 6


def test_skip_counts_from_dataloader_workers_reach_the_main_process(bad_shards):
    source = open_source(bad_shards, 8, shuffle=False)
    keys = [k for batch in make_loader(source, 1, num_workers=2, drop_last=False) for k in batch.keys]
    assert sorted(keys) == ["ok1", "ok2", "t1"]
    assert source.skips["corrupt_shard"] == 2 and source.skips.as_dict()["total"] == 6


def test_shard_specs_resolve_or_fail_clearly(tmp_path):
    make_good_shards(tmp_path / "s", 3, 1)
    assert len(resolve_shards(tmp_path / "s")) == 3
    assert resolve_shards(str(tmp_path / "s" / "{00000..00002}.tar")) == [
        str(tmp_path / "s" / f"{i:05d}.tar") for i in range(3)
    ]
    assert len(resolve_shards(str(tmp_path / "s" / "*.tar"))) == 3
    assert resolve_shards(tmp_path / "s" / "00001.tar") == [str(tmp_path / "s" / "00001.tar")]
    with pytest.raises(DataError, match="matches no file"):
        resolve_shards(str(tmp_path / "nope" / "{00000..00009}.tar"))
    with pytest.raises(DataError, match="matches no file"):
        open_source(str(tmp_path / "s" / "x{0..3}.tar"), 8)
    with pytest.raises(DataError, match="matches no file"):
        resolve_shards(str(tmp_path / "s" / "*.tgz"))
    with pytest.raises(DataError, match=r"2 of the 5 shards .* do not exist"):
        resolve_shards(str(tmp_path / "s" / "{00000..00004}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tar shards"):
        resolve_shards(tmp_path / "empty")
    with pytest.raises(DataError, match="matches no file"):
        open_source(tmp_path / "missing.tar", 8)


@pytest.mark.parametrize("world,workers", [(1, 3), (2, 1), (2, 3)])
def test_ranks_and_workers_get_disjoint_complete_parts(tmp_path, monkeypatch, world, workers):
    keys = make_good_shards(tmp_path / "s", 6, 2)
    seen: list[str] = []
    for rank in range(world):
        for worker in range(workers):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world))
            monkeypatch.setenv("WORKER", str(worker))
            monkeypatch.setenv("NUM_WORKERS", str(workers))
            part = [s.key for s in open_source(tmp_path / "s", 8, shuffle=True, seed=3)]
            assert part, (rank, worker)
            seen += part
    assert sorted(seen) == sorted(keys)  # disjoint (no repeats) and complete


def test_real_dataloader_workers_split_shards(tmp_path):
    keys = make_good_shards(tmp_path / "s", 4, 3)
    loader = make_loader(open_source(tmp_path / "s", 8, seed=0), 2, num_workers=2, drop_last=False)
    got = [k for batch in loader for k in batch.keys]
    assert sorted(got) == sorted(keys)


def test_shuffle_is_seeded_per_epoch_and_repeat_goes_on(tmp_path):
    keys = make_good_shards(tmp_path / "s", 4, 5)
    a = [s.key for s in open_source(tmp_path / "s", 8, seed=1, shuffle_buffer=50)]
    b = [s.key for s in open_source(tmp_path / "s", 8, seed=1, shuffle_buffer=50)]
    assert a == b and sorted(a) == sorted(keys) and a != keys
    source = open_source(tmp_path / "s", 8, seed=1, shuffle_buffer=50)
    source.set_epoch(1)
    assert [s.key for s in source] != a
    unshuffled = [s.key for s in open_source(tmp_path / "s", 8, shuffle=False)]
    assert unshuffled == keys
    stream = iter(open_source(tmp_path / "s", 8, seed=1, repeat=True))
    first_two_epochs = [next(stream).key for _ in range(2 * len(keys))]
    assert sorted(first_two_epochs) == sorted(keys + keys)


def test_images_are_resized_and_centre_cropped(tmp_path):
    # A 30x10 image: left third red, middle green, right blue; the centre crop is all green.
    from PIL import Image

    im = Image.new("RGB", (30, 10), (255, 0, 0))
    im.paste((0, 255, 0), (10, 0, 20, 10))
    im.paste((0, 0, 255), (20, 0, 30, 10))
    import io

    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    make_tar(tmp_path / "a.tar", [("k.png", buffer.getvalue()), ("k.txt", b"green")])
    (sample,) = list(open_source(tmp_path / "a.tar", 5, shuffle=False))
    assert sample.image.shape == (3, 5, 5)
    assert torch.allclose(sample.image, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 5, 5))


def test_all_samples_bad_in_a_repeating_stream_is_an_error(tmp_path):
    make_tar(tmp_path / "a.tar", [("k.png", png_bytes())])
    with pytest.raises(DataError, match="no usable samples"):
        next(iter(open_source(tmp_path / "a.tar", 8, repeat=True)))
    assert set(SKIP_REASONS) >= {"no_caption"}
