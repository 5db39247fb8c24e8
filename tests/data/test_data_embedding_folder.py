"""Embedding folders (clip-retrieval layout): write, read, split, look up, resume, memory."""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from unclip.data import embed as embed_module
from unclip.data import embedding_folder as ef
from unclip.data.embedding_folder import EmbeddingFolder, is_part_finished, part_paths, write_part
from unclip.errors import DataError
from unclip.storage.checkpoint import atomic_write_with


def _rand(n, e, seed):
    return torch.nn.functional.normalize(torch.randn(n, e, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "emb"
    write_part(root, 0, _rand(5, 8, 0), _rand(5, 8, 1), [f"a{i}" for i in range(5)], [f"cap a{i}" for i in range(5)])
    write_part(root, 1, _rand(3, 8, 2) * 7, _rand(3, 8, 3), ["b0", "b1", "b2"], ["cap b0", "cap b1", "cap b2"])
    return root


def test_layout_dtype_norm_and_random_access(folder):
    img = np.load(folder / "img_emb" / "img_emb_1.npy")
    assert img.dtype == np.float16 and img.shape == (3, 8)
    assert np.allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1, atol=1e-3)  # renormalised
    meta = pq.read_table(folder / "metadata" / "metadata_0.parquet")
    assert meta.column_names == ["key", "caption"] and meta.num_rows == 5
    f = EmbeddingFolder(folder)
    assert len(f) == 8 and f.dim == 8 and f.describe()["parts"] == 2
    row = f[6]
    assert (row.key, row.caption) == ("b1", "cap b1")
    assert torch.allclose(row.image_embed, _rand(3, 8, 2)[1], atol=2e-3)
    assert torch.allclose(row.text_embed, _rand(3, 8, 3)[1], atol=2e-3)
    assert f[-1].key == "b2"


def test_batches_cover_every_row_once_and_split_disjointly(folder, monkeypatch):
    f = EmbeddingFolder(folder)
    batches = list(f.batches(2, seed=1))
    keys = [k for b in batches for k in b.keys]
    assert sorted(keys) == sorted(["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"])
    assert all(b.image_embeds.shape[1] == 8 and b.text_embeds.dtype == torch.float32 for b in batches)
    assert keys == [k for b in f.batches(2, seed=1) for k in b.keys]  # seeded
    assert keys != [k for b in f.batches(2, seed=1, epoch=1) for k in b.keys]
    assert [k for b in f.batches(3, shuffle=False) for k in b.keys] == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    assert all(len(b.keys) == 3 for b in f.batches(3, drop_last=True))
    seen = []
    for rank in range(2):
        for worker in range(2):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            monkeypatch.setenv("WORKER", str(worker))
            monkeypatch.setenv("NUM_WORKERS", "2")
            seen += [k for b in f.batches(2, seed=4) for k in b.keys]
    assert sorted(seen) == sorted(keys)


def test_lookup_by_key(folder):
    f = EmbeddingFolder(folder)
    emb, found = f.lookup_image_embeds(["b2", "missing", "a0", "a0-but-much-longer-than-any-key"])
    assert found.tolist() == [True, False, True, False]
    assert torch.equal(emb[0], f[7].image_embed) and torch.equal(emb[2], f[0].image_embed)
    assert torch.equal(emb[1], torch.zeros(8))


def test_released_layout_with_padded_numbers_and_extra_columns(tmp_path):
    root = tmp_path / "laion"
    for d in ("img_emb", "text_emb", "metadata"):
        (root / d).mkdir(parents=True)
    for i in range(2):
        np.save(root / "img_emb" / f"img_emb_{i:04d}.npy", _rand(4, 6, i).numpy().astype(np.float16))
        np.save(root / "text_emb" / f"text_emb_{i:04d}.npy", _rand(4, 6, 10 + i).numpy().astype(np.float16))
        pq.write_table(
            pa.table(
                {
                    "url": [f"http://x/{i}/{j}" for j in range(4)],
                    "caption": [f"c{i}{j}" for j in range(4)],
                    "key": [f"{i:04d}{j:04d}" for j in range(4)],
                }
            ),
            root / "metadata" / f"metadata_{i:04d}.parquet",
        )
    f = EmbeddingFolder(root)
    assert len(f) == 8 and f[5].caption == "c11" and f[5].key == "00010001"


def test_bad_folders_fail_clearly(folder, tmp_path, caplog):
    with pytest.raises(DataError, match="no img_emb"):
        EmbeddingFolder(tmp_path)
    np.save(part_paths(folder, 1)[1], _rand(2, 8, 0).numpy().astype(np.float16))
    with pytest.raises(DataError, match="part 1"):
        EmbeddingFolder(folder)
    write_part(folder, 1, _rand(3, 8, 2), _rand(3, 8, 3), ["b0", "b1", "b2"], ["c", "c", "c"])
    np.save(part_paths(folder, 2)[0], _rand(2, 8, 0).numpy().astype(np.float16))  # unfinished part
    with caplog.at_level(logging.WARNING):
        assert len(EmbeddingFolder(folder)) == 8
    assert "unfinished" in caplog.text
    write_part(folder, 3, _rand(1, 8, 2), _rand(1, 8, 3), ["a0"], ["dup"])
    with pytest.raises(DataError, match="more than once"):
        EmbeddingFolder(folder).lookup_image_embeds(["a0"])
    with pytest.raises(DataError, match="must match"):
        write_part(folder, 4, _rand(2, 8, 0), _rand(2, 8, 0), ["x"], ["y"])


class FakeCLIP:
    """Deterministic stand-in: z_i from mean colour, z_t from the caption's bytes."""

    image_size, embed_dim, device = 16, 4, torch.device("cpu")

    def encode_image(self, images):
        return torch.nn.functional.normalize(torch.cat([images.mean((2, 3)), torch.ones(len(images), 1)], 1), dim=-1)

    def encode_text(self, captions):
        return torch.nn.functional.normalize(
            torch.tensor([[len(c), sum(c.encode()) % 7, 1.0, 2.0] for c in captions]), dim=-1
        )


def test_embed_resumes_after_a_kill_without_rewriting_finished_parts(tmp_path, monkeypatch):
    out = tmp_path / "emb"
    real = ef._save_npy
    calls = {"n": 0}

    def dies_in_part_one(path, arr):
        calls["n"] += 1
        if calls["n"] == 3:  # part 0 wrote img+text; part 1's image file dies half-written
            open(path, "wb").write(b"half")
            raise KeyboardInterrupt
        real(path, arr)

    monkeypatch.setattr(ef, "_save_npy", dies_in_part_one)
    record = {"kind": "fake", "sha256": "1"}
    with pytest.raises(KeyboardInterrupt):
        embed_module.embed_data(
            "shapes", FakeCLIP(), out, part_size=4, length=10, batch_size=3, clip_record=record, progress=False
        )
    assert is_part_finished(out, 0) and not is_part_finished(out, 1)
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*")) and not part_paths(out, 1)[0].exists()
    before = {p: os.stat(p).st_mtime_ns for p in part_paths(out, 0)}
    monkeypatch.setattr(ef, "_save_npy", real)
    summary = embed_module.embed_data(
        "shapes", FakeCLIP(), out, part_size=4, length=10, batch_size=3, clip_record=record, progress=False
    )
    assert summary["parts"] == 3 and summary["parts_written_now"] == 2
    assert {p: os.stat(p).st_mtime_ns for p in part_paths(out, 0)} == before
    fresh = tmp_path / "fresh"
    embed_module.embed_data("shapes", FakeCLIP(), fresh, part_size=4, length=10, batch_size=3, progress=False)
    a, b = EmbeddingFolder(out), EmbeddingFolder(fresh)
    assert (
        [a[i].key for i in range(10)]
        == [b[i].key for i in range(10)]
        == [f"shapes-train-s0-{i:08d}" for i in range(10)]
    )
    assert all(
        torch.equal(a[i].image_embed, b[i].image_embed) and torch.equal(a[i].text_embed, b[i].text_embed)
        for i in range(10)
    )
    with pytest.raises(DataError, match="another CLIP"):
        embed_module.embed_data(
            "shapes",
            FakeCLIP(),
            out,
            part_size=4,
            length=10,
            clip_record={"kind": "fake", "sha256": "2"},
            progress=False,
        )


def test_embed_shards_one_part_per_shard_with_skips(tmp_path):
    from shard_helpers import good_members, make_tar, png_bytes

    make_tar(tmp_path / "s" / "00000.tar", good_members(["k0", "k1"]) + [("bad.png", png_bytes())])
    make_tar(tmp_path / "s" / "00001.tar", [("only.txt", b"no image")])
    summary = embed_module.embed_data(tmp_path / "s", FakeCLIP(), tmp_path / "emb", progress=False)
    assert summary["parts"] == 2 and summary["skipped"]["no_caption"] == 1 and summary["skipped"]["no_image"] == 1
    f = EmbeddingFolder(tmp_path / "emb")
    assert len(f) == 2 and sorted(f[i].key for i in range(2)) == ["k0", "k1"] and f.parts[1].rows == 0
    assert [k for b in f.batches(4) for k in b.keys] != []


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_reading_is_memory_mapped(tmp_path):
    """Reading 2 x 80 MB of embeddings adds far less than one file's 80 MB to the resident set
    (loading a part per batch would add at least 80 MB, keeping the arrays 160 MB)."""
    root = tmp_path / "big"
    n, e = 80_000, 512
    (root / "img_emb").mkdir(parents=True)
    (root / "text_emb").mkdir()
    arr = np.ones((n, e), np.float16) / np.sqrt(e)
    np.save(root / "img_emb" / "img_emb_0.npy", arr)
    np.save(root / "text_emb" / "text_emb_0.npy", arr)
    del arr
    atomic_write_with(
        root / "metadata" / "metadata_0.parquet",
        lambda tmp: pq.write_table(pa.table({"key": [str(i) for i in range(n)], "caption": ["c"] * n}), tmp),
    )
    f = EmbeddingFolder(root)
    batches = f.batches(1024, seed=0)
    # The first batches load the part's metadata, library code pages and the allocator's pools.
    rows = len(next(batches).keys) + len(next(batches).keys)
    base = peak = _rss_mb()
    for batch in batches:
        rows += len(batch.keys)
        peak = max(peak, _rss_mb())
    assert rows == n
    assert peak - base < 40, f"resident memory grew by {peak - base:.0f} MB while reading 160 MB"


def test_dataloader_workers_read_disjoint_rows(folder):
    from torch.utils.data import DataLoader

    from unclip.data.embedding_folder import EmbeddingBatches

    loader = DataLoader(EmbeddingBatches(EmbeddingFolder(folder), 2, seed=0), batch_size=None, num_workers=2)
    keys = [k for batch in loader for k in batch.keys]
    assert sorted(keys) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
