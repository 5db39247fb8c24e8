"""What ``model.json`` records of a component's training, for the report's compute columns.

The priors' rows (paper Table 2 compares them at their training compute) and the guidance
sweep's two decoders read their steps, batch size and wall time from here. The sweep also
asks whether its comparison is fair: the paper's GLIDE baseline and unCLIP decoder share
the network, data and training budget, and a baseline warm-started from the unCLIP decoder,
or trained on fewer examples, confounds the diversity claim (Figures 9-11).

Where a value was not recorded it is None (the page says "not recorded"); a missing batch
size falls back on the component's training preset (``batch_size_source`` says so).
"""

from __future__ import annotations

from typing import Any

from ...train.presets import RUN_PRESETS

#: components that ``unclip train all`` records under ``info["stages"]``.
STAGE_COMPONENTS = ("prior_diffusion", "decoder")
#: the training preset section that holds a component's default batch size.
PRESET_SECTIONS = {"prior_diffusion": "prior", "decoder": "decoder", "decoder_text_only": "decoder"}


def _record(info: dict[str, Any], component: str) -> tuple[dict[str, Any], str | None, str | None]:
    """The component's training statistics, its preset and its device.

    A component trained on its own (``unclip train decoder``, ``ar-prior`` ...) has its own
    ``info[component]`` record, newer than a ``train all`` stage record, so it wins; only a stage
    record inherits the run's preset and device.
    """
    own = info.get(component)
    if own:
        return own, own.get("preset"), own.get("device")
    stage = (info.get("stages") or {}).get(component) if component in STAGE_COMPONENTS else None
    if stage:
        return stage, info.get("preset"), info.get("device")
    return {}, None, None


def training_compute(meta: dict[str, Any], component: str) -> dict[str, Any]:
    """Steps, batch size, examples seen, wall time, warm start, preset and device of ``component``'s training."""
    stats, preset, device = _record(meta.get("info", {}) or {}, component)
    batch, source = stats.get("batch_size"), "recorded"
    section = PRESET_SECTIONS.get(component)
    if batch is None and section and preset in RUN_PRESETS:
        batch, source = RUN_PRESETS[preset][section].get("batch_size"), f"preset '{preset}'"
    steps = stats.get("steps")
    return {
        "steps": steps,
        "batch_size": batch,
        "batch_size_source": source if batch is not None else None,
        "examples": steps * batch if steps is not None and batch is not None else None,
        "wall_time_s": stats.get("wall_time_s"),
        "total_wall_time_s": stats.get("total_wall_time_s"),
        "steps_per_s": stats.get("steps_per_s"),
        "init_from": stats.get("init_from"),
        "preset": preset,
        "device": device,
    }


def decoder_budgets(meta: dict[str, Any]) -> dict[str, Any]:
    """The two decoders' training records and whether the GLIDE-style comparison is like for like.

    ``fair`` is True when both decoders saw the same number of examples and the baseline was
    trained from scratch, False when either fails, None when the records cannot tell.
    """
    unclip, baseline = training_compute(meta, "decoder"), training_compute(meta, "decoder_text_only")
    reasons = []
    if baseline["init_from"]:
        reasons.append(f"the baseline was warm-started from {baseline['init_from']}")
    known = unclip["examples"] is not None and baseline["examples"] is not None
    if known and unclip["examples"] != baseline["examples"]:
        reasons.append(
            f"the baseline saw {baseline['examples']:,} training examples, the unCLIP decoder {unclip['examples']:,}"
        )
    if reasons:
        fair: bool | None = False
        note = "; ".join(reasons) + ": the comparison is confounded, treat it as indicative."
    elif known:
        fair = True
        note = f"both decoders trained from scratch on {unclip['examples']:,} examples ({unclip['steps']:,} steps)."
    else:
        fair = None
        note = "the model does not record both decoders' training budgets, so the comparison's fairness is unknown."
    return {"unclip": unclip, "baseline": baseline, "fair": fair, "note": note}
