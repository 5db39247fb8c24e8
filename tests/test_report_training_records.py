"""The report's training records: which model.json record a component's compute comes from,
and the verdict on whether the GLIDE-style comparison is like for like (issue 16, item 5)."""

from __future__ import annotations

from unclip.apps.report.training_records import decoder_budgets, training_compute
from unclip.train.presets import RUN_PRESETS


def _meta(**info) -> dict:
    return {"info": info}


def test_a_components_own_record_wins_over_the_train_all_stage():
    meta = _meta(
        preset="gpu",
        device="cuda",
        stages={"decoder": {"steps": 3720, "wall_time_s": 404.0}},
        decoder={"steps": 3000, "batch_size": 32, "preset": "small", "init_from": None},
    )
    t = training_compute(meta, "decoder")
    assert (t["steps"], t["batch_size"], t["examples"], t["preset"]) == (3000, 32, 96000, "small")
    assert t["batch_size_source"] == "recorded"
    assert t["device"] is None  # the run's device is not this component's


def test_a_stage_record_takes_the_runs_preset_batch_and_device():
    meta = _meta(preset="gpu", device="cuda", stages={"decoder": {"steps": 3720}})
    t = training_compute(meta, "decoder")
    assert t["batch_size"] == RUN_PRESETS["gpu"]["decoder"]["batch_size"]
    assert t["batch_size_source"] == "preset 'gpu'"
    assert t["examples"] == 3720 * t["batch_size"]
    assert t["device"] == "cuda"


def test_nothing_recorded_gives_none():
    t = training_compute(_meta(), "decoder_text_only")
    assert t["steps"] is None and t["batch_size"] is None and t["examples"] is None


def test_equal_budgets_from_scratch_are_like_for_like():
    rec = {"steps": 3000, "batch_size": 32, "init_from": None, "preset": "small"}
    b = decoder_budgets(_meta(decoder=dict(rec), decoder_text_only=dict(rec)))
    assert b["fair"] is True
    assert "96,000" in b["note"]


def test_a_warm_started_baseline_is_confounded():
    b = decoder_budgets(
        _meta(
            decoder={"steps": 300, "batch_size": 16},
            decoder_text_only={"steps": 300, "batch_size": 16, "init_from": "models/shapes/decoder"},
        )
    )
    assert b["fair"] is False
    assert "warm-started from models/shapes/decoder" in b["note"]


def test_unequal_examples_are_confounded():
    b = decoder_budgets(
        _meta(preset="gpu", stages={"decoder": {"steps": 3720}}, decoder_text_only={"steps": 300, "batch_size": 16})
    )
    assert b["fair"] is False
    assert "4,800" in b["note"] and f"{3720 * 128:,}" in b["note"]


def test_unknown_budgets_say_so():
    b = decoder_budgets(_meta(decoder={"steps": 10}, decoder_text_only={"steps": 10}))
    assert b["fair"] is None and "unknown" in b["note"]
