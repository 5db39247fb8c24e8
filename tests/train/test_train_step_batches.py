"""Batch ``step`` of an embedding folder or a stream is a function of (seed, step): resume re-reads the same batches."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from shard_helpers import good_members, make_good_shards, make_tar, png_bytes

from unclip.data.embedding_folder import EmbeddingFolder, write_part
from unclip.data.streaming import open_source
from unclip.train.step_batches import EmbeddingSteps, StreamSteps


def _unit(n, e, seed):
    return torch.nn.functional.normalize(torch.randn(n, e, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _folder(tmp_path) -> EmbeddingFolder:
    root = tmp_path / "emb"
    for part, n in enumerate((5, 3, 4)):
        keys = [f"p{part}r{i}" for i in range(n)]
        write_part(root, part, _unit(n, 8, part), _unit(n, 8, 10 + part), keys, [f"cap {k}" for k in keys])
    return EmbeddingFolder(root)


def test_embedding_steps_cover_each_epoch_once_in_the_folders_order_and_seek_directly(tmp_path):
    folder = _folder(tmp_path)
    steps = EmbeddingSteps(folder, 5, seed=3)
    run = [steps(s) for s in range(7)]  # 35 rows: epochs of 12 rows, batches spanning parts and epochs
    keys = [k for b in run for k in b.keys]
    # the folder's own order of each epoch (batches of one row keep it; larger ones read in file order)
    stream = [k for e in range(3) for b in folder.batches(1, seed=3, epoch=e) for k in b.keys]
    assert len(set(stream[:12])) == 12 and stream[:12] != stream[12:24]
    for s, batch in enumerate(run):
        assert set(batch.keys) == set(stream[5 * s : 5 * s + 5]), s
    assert sorted(keys[:12]) == sorted(stream[:12])
    # any step, asked first, in any order, gives the same batch (what a resumed run asks)
    fresh = EmbeddingSteps(folder, 5, seed=3)
    for s in (6, 2, 4):
        b = fresh(s)
        assert b.keys == run[s].keys and torch.equal(b.image_embeds, run[s].image_embeds)
        assert torch.equal(b.text_embeds, run[s].text_embeds) and b.captions == run[s].captions
    assert EmbeddingSteps(folder, 5, seed=4)(0).keys != run[0].keys
    z_i, found = folder.lookup_image_embeds(run[0].keys)  # rows and their keys stay together
    assert bool(found.all()) and torch.equal(z_i, run[0].image_embeds)


def _shards(tmp_path) -> Path:
    root = tmp_path / "shards"
    make_good_shards(root, 3, 5)
    bad = good_members(["x0", "x1"]) + [("x2.png", b"not a png"), ("x2.txt", b"broken image")]
    bad += [("x3.png", png_bytes()), ("x3.txt", b"   ")]
    make_tar(root / "00003.tar", bad)
    return root  # 17 usable samples, 1 undecodable, 1 empty caption


def _stream(root, state, workers=0) -> StreamSteps:
    source = open_source(str(root), 8, seed=5, shuffle=True, repeat=False, shuffle_buffer=4)
    return StreamSteps(source, 4, num_workers=workers, state_path=state, identity={"data": str(root)})


def test_stream_steps_resume_at_any_step_gives_the_same_batches(tmp_path):
    root = _shards(tmp_path)
    state = tmp_path / "stream_state.json"
    full = _stream(root, state)
    run = [full(s) for s in range(10)]  # 17 samples -> 4 batches per epoch: 2.5 epochs
    assert full.epoch_batches == [4, 4] and full.reread_batches == 0
    assert full.source.skips["undecodable_image"] >= 2 and full.source.skips["empty_caption"] >= 2
    epoch0 = [k for b in run[:4] for k in b.keys]
    assert len(set(epoch0)) == 16 and not any(k.startswith("x2") or k.startswith("x3") for k in epoch0)
    assert [k for b in run[4:8] for k in b.keys] != epoch0  # the next epoch is shuffled anew
    for start, use_state in ((9, True), (5, True), (6, False)):
        resumed = _stream(root, state if use_state else None)
        again = [resumed(s) for s in range(start, 10)]
        assert [b.keys for b in again] == [b.keys for b in run[start:]]
        assert all(torch.equal(a.images, b.images) for a, b in zip(again, run[start:]))
        # with the recorded epoch lengths only the batches of the step's own epoch are read again
        assert resumed.reread_batches == (start % 4 if use_state else start)
    assert "epoch_batches" in full.describe() and full.describe()["skipped"]["total"] >= 4


def test_stream_steps_with_a_worker_process_read_the_same_batches_and_count_its_skips(tmp_path):
    root = _shards(tmp_path)
    here = _stream(root, None)
    there = _stream(root, None, workers=1)
    for s in range(5):  # crosses the end of epoch 0, so the worker read every sample of it
        assert there(s).keys == here(s).keys
    assert there.source.skips["undecodable_image"] >= 1 and there.source.skips["empty_caption"] >= 1
