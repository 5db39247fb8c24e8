"""``index.html`` of ``unclip report``: settings, tables, plots, sample grids and the claims.

A single static page with relative links to the PNGs beside it (no scripts, no network).
Every number comes from the results dict that is also written to ``results.json``; missing
values show as "not recorded" (training facts) or "n/a" (metrics that could not be computed).
(Named ``html_page`` so that it cannot be confused with the standard library's ``html``.)
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Callable, Sequence

from ...storage.checkpoint import atomic_write_bytes

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img.px { image-rendering: pixelated; }
figure { display: inline-block; margin: 0.4em 1em 0.4em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 420px; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }
.agrees { color: #126b12; font-weight: bold; }
.disagrees { color: #a11; font-weight: bold; }
.untested { color: #777; font-weight: bold; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def fmt(value: Any, digits: int = 4, missing: str = "n/a") -> str:
    """A number for a table cell: ``digits`` significant figures (one decimal from 1000 up), integers as
    they are, None as ``missing``."""
    if value is None:
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e3 else f"{value:,.1f}"
    return escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; cells are already-escaped strings."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def figure(src: str, caption: str, width: int | None = None, pixelated: bool = False) -> str:
    w = f' width="{width}"' if width else ""
    cls = ' class="px"' if pixelated else ""
    return (
        f'<figure><img src="{escape(src)}"{w}{cls} '
        f'alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
    )


def _grid_figure(result: dict[str, Any], caption: str) -> str:
    return figure(result["grid"], caption, width=380, pixelated=True)


def _metric_columns(spaces: list[str]) -> list[tuple[str, Callable[[dict], Any]]]:
    cols: list[tuple[str, Callable[[dict], Any]]] = [
        ("colour", lambda r: r["color_accuracy"]),
        ("shape", lambda r: r["shape_accuracy"]),
        ("both right", lambda r: r["both_right_rate"]),
        ("one object", lambda r: r["single_object_rate"]),
        ("held-out: both right", lambda r: (r["held_out_pairs"] or {}).get("both_right_rate")),
    ]
    cols += [(f"Frechet ({s})", (lambda s: lambda r: r["frechet"].get(s))(s)) for s in spaces]
    return cols


def _metrics_table(rows: list[tuple[str, dict[str, Any]]], columns: list[tuple[str, Callable[[dict], Any]]]) -> str:
    body = []
    for label, r in rows:
        if "skipped" in r:
            body.append([escape(label)] + [escape(r["skipped"]) if i == 0 else "" for i in range(len(columns))])
        else:
            body.append([escape(label)] + [fmt(get(r)) for _, get in columns])
    return table(["configuration"] + [c for c, _ in columns], body)


def _settings_section(res: dict[str, Any]) -> str:
    s = res["settings"]
    rows = [
        ["model", fmt(res["model"])],
        ["device", fmt(res["device"])],
        ["prompts (sections 1-2)", fmt(", ".join(s["prompts"]))],
        ["samples per prompt (sections 1-2)", fmt(s["samples_per_prompt"])],
        ["prompts (guidance sweep)", fmt(", ".join(s["sweep_prompts"]))],
        ["samples per prompt (sweep)", fmt(s["sweep_samples_per_prompt"])],
        ["seed (decoder noise; prior z_i use seed + 10000)", fmt(s["seed"])],
        ["decoder DDIM steps", fmt(s["decoder_steps"])],
        ["decoder guidance scales", fmt(", ".join(f"{g:g}" for g in s["guidance_scales"]))],
        ["default decoder guidance (sections 1-2)", fmt(f"{res['prior_comparison']['decoder_guidance']:g}")],
        [
            "prior steps / best-of / prior guidance",
            fmt(
                f"{res['prior_comparison']['prior_steps']} / {res['prior_comparison']['best_of']} / "
                f"{res['prior_comparison']['prior_guidance']}"
            ),
        ],
        [
            "real reference images",
            fmt(
                f"{res['reference']['n']} single-object shapes test images of the evaluated colour-shape pairs, "
                f"{res['reference']['side']} px"
            ),
        ],
        ["test captions for the prior cosine", fmt(s["cosine_captions"])],
        ["wall time", fmt(f"{res['wall_time_s']:.0f} s")],
    ]
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in res["timings_s"].items())
    return (
        f"<h2>Settings</h2>{table(['setting', 'value'], rows)}<p>Time per part: {escape(timings)}.</p>"
        f"<p>{escape(res['features']['note'])} Diversity is the mean pairwise cosine distance (1 - cos) between the "
        "samples of one caption, "
        "in our CLIP's image-embedding space (and in Inception space where available); centre spread is the standard "
        "deviation of the main object's centre across them (canvas units).</p>"
    )


NOT_RECORDED = "not recorded"
#: the columns of :func:`_compute_cells`
COMPUTE_HEADERS = ["training steps", "batch size", "examples (steps x batch)", "training wall time (s)"]


def _compute_cells(t: dict[str, Any], total_label: str | None = None) -> list[str]:
    """Steps, batch size (and where it came from), examples and wall time of a training record."""
    nr = NOT_RECORDED
    batch = fmt(t["batch_size"], missing=nr) + (
        f" ({escape(t['batch_size_source'])})" if t.get("batch_size_source") not in (None, "recorded") else ""
    )
    wall = fmt(t["wall_time_s"], missing=nr)
    if total_label and t.get("total_wall_time_s") is not None:
        wall += f" ({t['total_wall_time_s']:.1f} {total_label})"
    return [fmt(t["steps"], missing=nr), batch, fmt(t["examples"], missing=nr), wall]


def _training_row(label: str, r: dict[str, Any]) -> list[str]:
    if "skipped" in r:
        return [escape(label), escape(r["skipped"])] + [""] * 6
    t = r["training"]
    return [
        escape(label),
        *_compute_cells(t, "with PCA and data"),
        fmt(t["device"], missing=NOT_RECORDED),
        fmt(r["params"]),
        fmt(r["sampling_s_per_embedding"], 3),
    ]


def _decoder_budget_table(budgets: dict[str, Any]) -> str:
    """Both decoders' training and whether the comparison is like for like (the paper trains both alike)."""
    rows = [
        [
            escape(label),
            *_compute_cells(t),
            escape(t["init_from"] or "from scratch"),
            fmt(t["device"], missing=NOT_RECORDED),
        ]
        for label, t in (("unCLIP decoder", budgets["unclip"]), ("GLIDE-style baseline", budgets["baseline"]))
    ]
    verdict = {True: "Like for like: ", False: "Not like for like: ", None: ""}[budgets["fair"]]
    return table(["decoder", *COMPUTE_HEADERS, "initialised", "training device"], rows) + note(
        verdict + budgets["note"]
    )


def _prior_section(res: dict[str, Any], spaces: list[str]) -> str:
    pc = res["prior_comparison"]
    priors = [("diffusion prior", pc["priors"]["diffusion"]), ("autoregressive prior", pc["priors"]["ar"])]
    cols = _metric_columns(spaces) + [
        ("precision", lambda r: r["precision"]),
        ("recall", lambda r: r["recall"]),
        ("cosine to true z_i", lambda r: r.get("cosine_to_true_z_i")),
    ]
    parts = [
        "<h2>1. Diffusion prior vs autoregressive prior</h2>",
        f"<p>Both priors' z_i decoded by the unCLIP decoder at its default guidance {pc['decoder_guidance']:g}; same "
        "prompts, same decoder noise. "
        f"Precision/recall: k-NN manifolds (k = {fmt(next((r['pr_k'] for _, r in priors if 'pr_k' in r), None))}) in "
        f"{escape(next((r['pr_space'] for _, r in priors if 'pr_space' in r), '-'))} space. "
        f"Cosine to the true z_i on {fmt(pc.get('cosine_captions'))} test captions (z_t itself scores "
        f"{fmt(pc.get('text_embed_cosine_to_true_z_i'))}).</p>",
    ]
    parts += [note(f"{label}: {r['skipped']}") for label, r in priors if "skipped" in r]
    parts.append(_metrics_table(priors, cols))
    parts.append("<h3>Training compute and sampling time</h3>")
    parts.append(
        table(
            [
                "prior",
                *COMPUTE_HEADERS,
                "training device",
                "parameters",
                "sampling s / embedding",
            ],
            [_training_row(label, r) for label, r in priors],
        )
    )
    parts.append(
        "<p>Sampling time is measured here, for the whole batch of prompts, divided by the number of embeddings "
        f"(diffusion prior: {fmt(pc['prior_steps'])} steps, best of {fmt(pc['best_of'])}).</p>"
    )
    parts += [_grid_figure(r, f"{label}: samples") for label, r in priors if "grid" in r]
    return "\n".join(parts)


def _conditioning_section(res: dict[str, Any], spaces: list[str]) -> str:
    cond = res["conditioning"]
    rows = [(m["label"], m) for m in cond["modes"].values()]
    cols = (
        _metric_columns(spaces)
        + [(f"diversity ({s})", (lambda s: lambda r: r["diversity"].get(s))(s)) for s in spaces]
        + [("centre spread", lambda r: r["centre_spread"]), ("CLIP score", lambda r: r["clip_score"])]
    )
    parts = [
        "<h2>2. Conditioning the decoder (paper Figure 8)</h2>",
        f"<p>The unCLIP decoder at guidance {cond['decoder_guidance']:g}: the caption only (z_i replaced by the "
        "learned null), "
        "the caption with the CLIP text embedding z_t fed as z_i, and the caption with the prior's z_i.</p>",
    ]
    parts += [note(f"{m['label']}: {m['skipped']}") for _, m in rows if "skipped" in m]
    parts.append(_metrics_table(rows, cols))
    if "conditioning_accuracy" in res["plots"]:
        parts.append(figure(res["plots"]["conditioning_accuracy"], "attribute accuracy per conditioning mode"))
    parts += [_grid_figure(m, f"{m['label']}: samples") for _, m in rows if "grid" in m]
    return "\n".join(parts)


def _sweep_section(res: dict[str, Any], spaces: list[str]) -> str:
    sw = res["guidance"]
    parts = [
        "<h2>3. Decoder guidance: Frechet distance, accuracy and diversity (paper Figures 9-11)</h2>",
        f"<p>{fmt(sw['prompts'])} prompts x {fmt(sw['samples_per_prompt'])} samples per scale. unCLIP decodes one "
        "set of prior z_i held fixed across scales; "
        "the GLIDE-style baseline is the same decoder architecture trained on captions only (the paper trains both "
        "alike; the table below says whether these two were). Both start from the same noise per image.</p>",
    ]
    parts += [
        note(f"{label}: {sw[key]['skipped']}")
        for key, label in (("unclip", "unCLIP"), ("baseline", "GLIDE-style baseline"))
        if "skipped" in sw.get(key, {})
    ]
    if "points" in sw.get("baseline", {}):
        parts.append(_decoder_budget_table(sw["training"]))
    parts += [
        figure(res["plots"][k], cap)
        for k, cap in (
            ("frechet_vs_guidance", "Frechet distance vs guidance"),
            ("accuracy_vs_guidance", "attribute accuracy (both right) vs guidance"),
            ("diversity_vs_guidance", "diversity (CLIP space) vs guidance"),
        )
        if k in res["plots"]
    ]
    decoders = [(k, lbl) for k, lbl in (("unclip", "unCLIP"), ("baseline", "baseline")) if "points" in sw.get(k, {})]
    if decoders:
        metrics: list[tuple[str, Callable[[dict], Any]]] = [
            (f"Frechet ({s})", (lambda s: lambda p: p["frechet"].get(s))(s)) for s in spaces
        ]
        metrics += [("both right", lambda p: p["both_right_rate"]), ("one object", lambda p: p["single_object_rate"])]
        metrics += [(f"diversity ({s})", (lambda s: lambda p: p["diversity"].get(s))(s)) for s in spaces] + [
            ("centre spread", lambda p: p["centre_spread"])
        ]
        headers = ["guidance"] + [f"{lbl}: {m}" for m, _ in metrics for _, lbl in decoders]
        rows = []
        for i, g in enumerate(sw["scales"]):
            rows.append([fmt(f"{g:g}")] + [fmt(get(sw[k]["points"][i])) for _, get in metrics for k, _ in decoders])
        parts.append(table(headers, rows))
    return "\n".join(parts)


def _grids_section(res: dict[str, Any]) -> str:
    g = res["sample_grids"]
    parts = [
        "<h2>4. Samples at each guidance scale</h2>",
        f'<p>"{escape(g["prompt"])}", {fmt(g["samples"])} samples, seed {fmt(g["seed"])}; the same noise at every '
        "scale (and the same prior z_i for unCLIP).</p>",
    ]
    parts += [
        note(f"{label}: {g[key]['skipped']}")
        for key, label in (("unclip", "unCLIP"), ("baseline", "GLIDE-style baseline"))
        if "skipped" in g.get(key, {})
    ]
    if "guidance_samples" in res["plots"]:
        parts.append(figure(res["plots"]["guidance_samples"], "rows: guidance scale; columns: samples"))
    return "\n".join(parts)


def _claims_section(res: dict[str, Any]) -> str:
    parts = ["<h2>5. The paper's claims, checked here</h2>"]
    css = {True: "agrees", False: "disagrees", None: "untested"}
    for key, c in res["claims"].items():
        parts.append(
            f'<h3>({key}) {escape(c["claim"])}: <span class="{css[c["holds"]]}">{escape(c["verdict"])}</span></h3>'
        )
        parts.append(f"<p>Rule: {escape(c['rule'])}.</p>")
        if c.get("note"):
            parts.append(note(c["note"]))
        if c.get("comparisons"):
            rows = [
                [
                    escape(x["measure"]),
                    fmt(x["favoured"]),
                    fmt(x["other"]),
                    escape(x["better"]),
                    fmt(x["favoured_wins"]),
                ]
                for x in c["comparisons"]
            ]
            parts.append(table(["measure", c["favoured"], c["other"], "better is", f"{c['favoured']} wins"], rows))
        if key == "c" and c.get("unclip_drop") is not None:
            parts.append(
                f"<p>Relative drop of diversity from guidance {c['scales'][0]:g} to {c['scales'][1]:g}: unCLIP "
                f"{fmt(c['unclip_drop'])}, baseline {fmt(c['baseline_drop'])}.</p>"
            )
    return "\n".join(parts)


def write_page(path: str | Path, results: dict[str, Any]) -> Path:
    """Write the report page for ``results`` (the dict saved as results.json) to ``path``."""
    spaces = results["features"]["spaces"]
    body = "\n".join(
        [
            f"<h1>unCLIP comparisons: {escape(str(results['model']))}</h1>",
            "<p>The paper's comparisons (Ramesh et al. 2022, sections 5.1-5.2, Figures 8-11) reproduced at small "
            "scale on the shapes dataset. "
            'Every number is also in <a href="results.json">results.json</a>; sample folders hold NNN.png, grid.png '
            "and manifest.json.</p>",
            _settings_section(results),
            _prior_section(results, spaces),
            _conditioning_section(results, spaces),
            _sweep_section(results, spaces),
            _grids_section(results),
            _claims_section(results),
        ]
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>unclip '
        f"report</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
    path = Path(path)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
