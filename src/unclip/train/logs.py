"""The JSONL loss log of a run: cut back to a resumed step, read the last logged loss, average."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..storage.checkpoint import atomic_write_bytes


def truncate_jsonl(path: Path, step: int) -> int:
    """Drop records after ``step`` (and a torn last line) from a JSON-lines log; returns lines kept."""
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
    return len(kept)


def last_logged_loss(path: Path) -> float:
    """The loss of the log's last record (NaN when there is none)."""
    if not path.exists():
        return math.nan
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return float(json.loads(lines[-1]).get("loss", math.nan)) if lines else math.nan


def mean_or_none(values: list[float]) -> float | None:
    """The mean of ``values``, or None for an empty list."""
    return sum(values) / len(values) if values else None
