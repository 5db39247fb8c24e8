"""Fraction of text diffs that reach their target as theta grows (issue 16, item 7); prints one JSON object.

For single-object ``shapes`` test images, every colour is edited to every other colour
("a red circle" -> "a blue circle") and every shape to every other shape, from
``--per-value`` source images of each colour (shape); the exact shapes scorer reads back
each frame (see ``unclip.eval.textdiff_calibration``). For each theta the output gives
the fraction of edits that reached the target attribute, kept the other one, and both; the
calibrated maximum theta is the smallest theta where reached-and-kept is at least
``--target``. ``--store`` writes it into the model's ``model.json`` defaults
(``text_diff_max_theta``), which ``unclip textdiff`` then uses when ``--max-theta`` is not given.

    PYTHONPATH=src python benchmarks/textdiff_calibration.py --model shapes \\
        [--thetas 0,0.1,...,1] [--per-value 3] [--steps 50] [--refine 2] [--kinds colour,shape] [--target 0.9] \\
        [--json-out benchmarks/results/textdiff_calibration.json] [--plot docs/textdiff_calibration.png] [--store]

The run behind the shipped model's calibrated default (136 edits: 112 colour, 24 shape; 11 thetas):

    PYTHONPATH=src python benchmarks/textdiff_calibration.py --model shapes --per-value 2 \\
        --json-out benchmarks/results/textdiff_calibration.json --plot docs/textdiff_calibration.png --store

A quick check (about 4 minutes on 2 busy CPU cores; rough figures):

    PYTHONPATH=src python benchmarks/textdiff_calibration.py --kinds colour --values red,blue \\
        --thetas 0.25,0.5,0.75,1 --per-value 1 --steps 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from unclip.apps.report.plots import line_plot  # noqa: E402
from unclip.eval.textdiff_calibration import (  # noqa: E402
    KINDS,
    measure_text_diffs,
    store_default_max_theta,
)
from unclip.manipulate import DEFAULT_REFINE  # noqa: E402
from unclip.pipeline import UnCLIP, resolve_model_path  # noqa: E402
from unclip.storage.checkpoint import atomic_write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes", help="shipped model name or model directory (default: shapes)")
    ap.add_argument(
        "--thetas",
        default=",".join(f"{t / 10:g}" for t in range(11)),
        help="comma-separated thetas (default: 0,0.1,...,1)",
    )
    ap.add_argument("--per-value", type=int, default=3, help="source images per colour / per shape (default: 3)")
    ap.add_argument(
        "--steps",
        type=int,
        default=50,
        help="DDIM steps of inversion and decoding (default: 50, the manipulations' default)",
    )
    ap.add_argument("--kinds", default=",".join(KINDS), help="colour, shape or both (default: colour,shape)")
    ap.add_argument("--values", default=None, help="only these source colours / shapes, comma-separated (default: all)")
    ap.add_argument("--batch-size", type=int, default=64, help="frames decoded per batch (default: 64)")
    ap.add_argument(
        "--target",
        type=float,
        default=0.9,
        help="fraction reached-and-kept that calibrates the max theta (default: 0.9)",
    )
    ap.add_argument(
        "--refine",
        type=int,
        default=DEFAULT_REFINE,
        help=f"fixed-point refinements of the inversion (default: {DEFAULT_REFINE}, as unclip textdiff)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json-out", default=None, help="also write the JSON here")
    ap.add_argument("--plot", default=None, help="PNG of the fractions against theta (the paper's Figure 5 as a curve)")
    ap.add_argument(
        "--store", action="store_true", help="write the calibrated max theta into the model's model.json defaults"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    thetas = [float(t) for t in args.thetas.split(",") if t.strip()]
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    start = time.perf_counter()
    pipe = UnCLIP.load(args.model, device=args.device)
    out = measure_text_diffs(
        pipe,
        thetas,
        kinds=kinds,
        per_value=args.per_value,
        steps=args.steps,
        batch_size=args.batch_size,
        target=args.target,
        values=args.values.split(",") if args.values else None,
        refine=args.refine,
        progress=True,
    )
    out.update(model=str(args.model), seconds=round(time.perf_counter() - start, 1), command=" ".join(sys.argv))
    if args.store:
        keys = ("thetas", "reached_and_kept_all", "target_fraction", "per_value", "steps", "refine", "command")
        info = {k: out[k] for k in keys}
        path = store_default_max_theta(resolve_model_path(args.model), out["calibrated_max_theta"], info)
        out["stored_in"] = str(path)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        atomic_write_json(args.json_out, out)
    if args.plot:
        series = {"all edits: reached and kept": out["reached_and_kept_all"]}
        for kind, rows in out["kinds"].items():
            series[f"{kind}: reached"] = [r["reached"] for r in rows["per_theta"]]
            series[f"{kind}: reached and kept"] = [r["reached_and_kept"] for r in rows["per_theta"]]
        line_plot(
            args.plot, thetas, series, xlabel="theta (slerp weight towards the text diff)",
            ylabel="fraction of edits", title=f"Text diffs on {args.model} ({args.steps} DDIM steps)", ylim=(0, 1),
        )  # fmt: skip


if __name__ == "__main__":
    main()
