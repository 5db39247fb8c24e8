"""Is a retrained decoder at least as good as the shipped one? (issue 16, item 1); prints one JSON object.

    PYTHONPATH=src python benchmarks/compare_decoders.py --work runs/lv_decoder [--out FILE]

Reads what ``benchmarks/learned_variance_decoder_cpu.sh`` wrote in ``--work``:
``eval_{shipped,candidate}.json`` (``unclip eval --json``: exact scoring at the decoder's side)
and ``fid_{shipped,candidate}.json`` (``quality_matched_speed.py``: accuracy and FID at 128 px,
one row per seed). The candidate is at least as good when none of its ``unclip eval`` rates
(colour, shape, one object, both right) is lower than the shipped decoder's and its FID,
averaged over the seeds, is not higher. The per-seed FIDs are listed so the reader can see
how far chance alone moves them. Also prints the README rows (markdown).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RATES = ("color_accuracy", "shape_accuracy", "single_object_rate", "both_right_rate")


def summary(work: Path, name: str) -> dict:
    """One decoder's figures: the ``unclip eval`` rates and the FID per seed and on average."""
    ev = json.loads((work / f"eval_{name}.json").read_text())
    fid_rows = json.loads((work / f"fid_{name}.json").read_text())["rows"]
    fids = [row["fid"] for row in fid_rows.values()]
    return {
        **{k: ev[k] for k in RATES},
        "clip_score": ev.get("clip_score"),
        "fid_per_seed": fids,
        "fid_mean": sum(fids) / len(fids),
        "both_right_128px_per_seed": [row["both_right_rate"] for row in fid_rows.values()],
    }


def verdict(shipped: dict, candidate: dict) -> dict:
    """Whether ``candidate`` is at least as good as ``shipped``, and why not."""
    worse = [k for k in RATES if candidate[k] < shipped[k]]
    if candidate["fid_mean"] > shipped["fid_mean"]:
        worse.append("fid_mean")
    return {"at_least_as_good": not worse, "worse_on": worse}


def markdown(rows: dict[str, dict]) -> str:
    head = "| decoder | colour | shape | one object | both right | CLIP score | FID at 128 px (per seed) |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rates = " | ".join(f"{100 * r[k]:.1f}%" for k in RATES)
        seeds = ", ".join(f"{f:.1f}" for f in r["fid_per_seed"])
        lines.append(f"| {name} | {rates} | {r['clip_score']:.3f} | {r['fid_mean']:.1f} ({seeds}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/lv_decoder"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = {name: summary(args.work, name) for name in ("shipped", "candidate")}
    result = {**rows, **verdict(rows["shipped"], rows["candidate"]), "markdown": markdown(rows)}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
