"""`unclip bench`'s efficiency fields and `--compare-peers` wiring (without running the bench)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unclip.apps import bench_efficiency as be
from unclip.errors import ConfigError


def test_flop_counts_follow_the_shapes():
    flops = be.count_flops()
    assert set(flops) == set(be.FIGURES.values())
    # The bench decoder: about 80 GFLOP per batch-4 forward at 64 px (issue 17's count).
    per_forward = flops["decoder_sample_per_image"] * be.DECODER_IMAGES / be.DECODER_STEPS
    assert 70e9 < per_forward < 90e9
    # Training = forward + backward ~ 3 forwards, at 4x the batch of the sampling forward.
    ratio = flops["decoder_train_step"] / (per_forward * be.DECODER_BATCH / be.DECODER_IMAGES)
    assert 2.7 < ratio < 3.3
    assert flops["prior_train_step"] > 0 and flops["prior_sample_per_embedding"] > 0


def test_efficiency_arithmetic():
    rates = {fig: 2.0 for fig in be.FIGURES}
    flops = dict.fromkeys(be.FIGURES.values(), 50e9)
    eff = be.efficiency(rates, flops, peak_gflops=200.0)
    assert eff["decoder_sample_images_per_s"] == {"rate": 2.0, "gflops": 100.0, "fraction_of_peak": 0.5}


def test_matmul_peak_is_positive():
    assert be.matmul_peak_gflops("fp32", n=128, repeats=1) > 0


def _fake_harness(root: Path, peers: Path) -> None:
    """A run_peers.sh that writes peer JSONs in the harness's format to $OUT_DIR."""
    root.mkdir()
    for name in ("dalle2", "diffusers"):
        sample_key = "prior_sample_raw" if name == "dalle2" else "prior_sample"
        scale = 1.0 if name == "dalle2" else 2.0
        result = {
            "results": {
                "prior_train": {"steps_per_s": 0.5 * scale},
                "decoder_train": {"steps_per_s": 0.1 * scale},
                sample_key: {"embeddings_per_s": 1.0 * scale},
                "decoder_sample": {"images_per_s": 0.1 * scale},
            },
            "rss_mb": {"peak_mb": 4000.0 / scale},
        }
        (root / f"{name}.json").write_text(json.dumps(result))
    (root / "run_peers.sh").write_text(
        'cp "$(dirname "$0")"/dalle2.json "$(dirname "$0")"/diffusers.json "$OUT_DIR"/\necho "TABLE $@"\n'
    )
    for v in ("venv", "venv-diffusers"):
        (peers / v / "bin").mkdir(parents=True)
        (peers / v / "bin" / "python").write_text("")


def test_compare_peers_runs_the_harness_and_takes_ratios(tmp_path, monkeypatch, capsys):
    harness, peers = tmp_path / "bench", tmp_path / "peer"
    _fake_harness(harness, peers)
    monkeypatch.setenv("UNCLIP_PEER_BENCH", str(harness))
    monkeypatch.setenv("PEER_ROOT", str(peers))
    ours = {
        "by_precision": {
            "bf16": {
                "prior_train_steps_per_s": 1.5,
                "decoder_train_steps_per_s": 0.3,
                "prior_sample_embeddings_per_s": 3.0,
                "decoder_sample_images_per_s": 0.2,
            }
        },
        "peak_rss_mb": 1000.0,
    }
    out = be.compare_peers(ours, threads=2)
    assert "TABLE --threads 2" in capsys.readouterr().out
    assert out["ratio_to_best_peer"]["bf16"] == {
        "prior_train_steps_per_s": 1.5,
        "decoder_train_steps_per_s": 1.5,
        "prior_sample_embeddings_per_s": 1.5,
        "decoder_sample_images_per_s": 1.0,
    }
    assert out["ratio_to_best_peer"]["peak_rss"] == 0.5  # over the smaller peer's 2000 MB
    assert out["diffusers"]["decoder_sample_images_per_s"] == 0.2


def test_missing_peer_venvs_say_how_to_build_them(tmp_path, monkeypatch):
    harness = tmp_path / "bench"
    harness.mkdir()
    (harness / "run_peers.sh").write_text("exit 1\n")
    monkeypatch.setenv("UNCLIP_PEER_BENCH", str(harness))
    monkeypatch.setenv("PEER_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="setup_peers.sh"):
        be.check_peer_venvs(be.find_peer_harness())
