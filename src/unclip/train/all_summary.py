"""What ``train all`` writes when it ends: ``model.json`` (with the CLIP record) and ``train_summary.json``.

The summary holds every stage's run summary, the timings, the CLIP used (when it was given
with ``--clip``) and, under ``skipped``, the skip counts of every data source read (the
decoder's stream, the embedding run), so that bad data is reported where a run is reported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..model_dir import component_done, record_clip, write_model_json
from ..storage.checkpoint import atomic_write_json
from . import distributed


def finish_all(
    out: Path,
    data: str,
    preset: str,
    opts: Any,
    timings: dict[str, float],
    start: float,
    retrieval: dict[str, Any],
    record: dict[str, Any] | None,
    extra: dict[str, Any],
    world: dict[str, int],
) -> dict[str, Any]:
    """Write ``model.json`` (and the CLIP record) and ``train_summary.json`` of a finished ``train all`` (rank 0)."""
    stage_stats = {}
    for component in ("clip", "prior_diffusion", "decoder"):
        path = out / "runs" / component / "summary.json"
        if path.is_file() and (component != "clip" or opts.clip is None):
            stage_stats[component] = json.loads(path.read_text())
    summary = {
        "stages": stage_stats, "data": data, "preset": preset, "seed": opts.seed, "device": opts.device,
        "steps_override": opts.steps, "timings_s": timings, "wall_time_s": time.perf_counter() - start,
        "clip_retrieval": retrieval, **extra, **world,
    }  # fmt: skip
    if record is not None:
        summary["clip"] = record
    sources = {c: s["source"] for c, s in stage_stats.items() if isinstance(s.get("source"), dict)}
    sources.update({"embed": extra["embed"]} if "embed" in extra else {})
    skipped = {c: d["skipped"] for c, d in sources.items() if "skipped" in d}
    if skipped:
        summary["skipped"] = skipped
    if distributed.is_main():
        components = {"clip": "clip"} if component_done(out, "clip") else {}
        write_model_json(out, {**components, "prior_diffusion": "prior_diffusion", "decoder": "decoder"}, info=summary)
        if record is not None:
            record_clip(out, record)
        atomic_write_json(out / "train_summary.json", summary)
    distributed.barrier()
    return summary
