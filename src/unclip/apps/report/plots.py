"""The report's figures (matplotlib, Agg backend), written as PNGs atomically.

* :func:`line_plot`: a metric against decoder guidance scale, one curve per decoder
  (the paper's Figures 9-11 at small scale);
* :func:`bar_plot`: one metric across configurations (priors, Figure 8's modes);
* :func:`sample_grid_figure`: one caption's samples, rows = guidance scales, one panel per
  decoder, labelled.

matplotlib is an optional dependency (``pip install -e .[report]``); :func:`require_matplotlib`
says so when it is missing.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import torch

from ...errors import ConfigError
from ...storage.checkpoint import atomic_write_bytes


def require_matplotlib():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(
            "unclip report draws its plots with matplotlib, which is not installed; install it with `pip install -e "
            ".[report]`"
        ) from exc
    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    require_matplotlib().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def line_plot(
    path: str | Path,
    scales: Sequence[float],
    series: dict[str, Sequence[float | None]],
    *,
    ylabel: str,
    title: str,
    ylim: tuple[float, float] | None = None,
    xlabel: str = "decoder guidance scale",
) -> Path:
    """``series`` {label: one value per scale} against ``scales``; missing values leave gaps."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(4.6, 3.3))
    for (label, values), marker in zip(series.items(), "osd^v"):
        ax.plot(list(scales), _nan(values), marker=marker, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if series:
        ax.legend(fontsize=8)
    return _save(fig, Path(path))


def bar_plot(
    path: str | Path,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    ylabel: str,
    title: str,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One bar per configuration (missing values drawn as empty)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    heights = [0.0 if v is None else float(v) for v in values]
    bars = ax.bar(range(len(labels)), heights, color="#4c72b0")
    for bar, v in zip(bars, values):
        ax.annotate(
            "n/a" if v is None else f"{v:.3g}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ylim is not None:
        ax.set_ylim(*ylim)
    return _save(fig, Path(path))


def sample_grid_figure(path: str | Path, panels: dict[str, list[tuple[float, torch.Tensor]]], *, prompt: str) -> Path:
    """One panel per decoder: a row of samples (n, 3, S, S) in [-1, 1] per guidance scale."""
    plt = require_matplotlib()
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        raise ConfigError("sample_grid_figure needs at least one panel of images")
    rows = max(len(v) for v in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 0.75 * rows + 0.8), squeeze=False)
    for ax, (label, sets) in zip(axes[0], panels.items()):
        strips = []
        for _, x in sets:
            x = ((x.float().clamp(-1, 1) + 1) / 2).cpu()
            pad = torch.ones(x.shape[0], 3, x.shape[2], 2)
            strips.append(torch.cat([torch.cat([im, p], dim=-1) for im, p in zip(x, pad)], dim=-1))
            strips.append(torch.ones(3, 2, strips[-1].shape[-1]))
        image = torch.cat(strips[:-1], dim=1).permute(1, 2, 0).numpy()
        ax.imshow(image, interpolation="nearest")
        height = sets[0][1].shape[-2] + 2
        ax.set_yticks([height * i + height / 2 - 1 for i in range(len(sets))], [f"{g:g}" for g, _ in sets])
        ax.set_xticks([])
        ax.set_ylabel("guidance scale")
        ax.set_title(f'{label}\n"{prompt}", fixed seeds', fontsize=9)
    return _save(fig, Path(path))


def report_plots(
    results: dict, grid_images: dict[str, list[tuple[float, torch.Tensor]]], out: str | Path, primary_space: str
) -> dict[str, str]:
    """Draw every figure of the report into ``out/plots``; returns {figure: path relative to ``out``}."""
    out = Path(out)
    made: dict[str, str] = {}
    sweep = results["guidance"]
    curves = {
        label: sweep[key]["points"]
        for key, label in (("unclip", "unCLIP (prior z_i fixed)"), ("baseline", "GLIDE-style baseline"))
        if "points" in sweep.get(key, {})
    }
    if curves:
        specs = {
            "frechet_vs_guidance": (
                lambda p: p["frechet"][primary_space],
                f"Frechet distance ({primary_space})",
                "Frechet distance to real images (lower is better)",
            ),
            "accuracy_vs_guidance": (
                lambda p: p["both_right_rate"],
                "colour and shape right",
                "Attribute accuracy (higher is better)",
            ),
            "diversity_vs_guidance": (
                lambda p: p["diversity"]["clip"],
                "mean pairwise 1 - cos (CLIP)",
                "Diversity among samples of one caption",
            ),
        }
        for name, (get, ylabel, title) in specs.items():
            ylim = (-0.02, 1.02) if name == "accuracy_vs_guidance" else None
            line_plot(
                out / "plots" / f"{name}.png",
                sweep["scales"],
                {label: [get(p) for p in pts] for label, pts in curves.items()},
                ylabel=ylabel,
                title=title,
                ylim=ylim,
            )
            made[name] = f"plots/{name}.png"
    modes = results["conditioning"]["modes"]
    shown = [(m["label"], m) for m in modes.values() if "skipped" not in m]
    if shown:
        bar_plot(
            out / "plots" / "conditioning_accuracy.png",
            [lbl.replace(" + ", "\n+ ") for lbl, _ in shown],
            [m["both_right_rate"] for _, m in shown],
            ylabel="colour and shape right",
            title="Figure 8 modes: attribute accuracy",
            ylim=(0, 1.08),
        )
        made["conditioning_accuracy"] = "plots/conditioning_accuracy.png"
    labels = {"unclip": "unCLIP (prior z_i fixed)", "baseline": "GLIDE-style baseline"}
    panels = {labels[k]: v for k, v in grid_images.items() if v}
    if panels:
        sample_grid_figure(out / "plots" / "guidance_samples.png", panels, prompt=results["sample_grids"]["prompt"])
        made["guidance_samples"] = "plots/guidance_samples.png"
    return made
