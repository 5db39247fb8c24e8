"""``unclip report``: the page, results.json, plots and claims on a tiny model with every component,
and the visible skips on a model that lacks the AR prior and the baseline decoder."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from unclip.apps.cli.main import main
from unclip.apps.report import ReportSettings, balanced_prompts, run_report
from unclip.apps.report.claims import claim_diversity, relative_drop
from unclip.data.shapes import HELD_OUT_PAIRS, SHAPES
from unclip.errors import InputError

SECTIONS = (
    "Settings",
    "1. Diffusion prior vs autoregressive prior",
    "2. Conditioning the decoder (paper Figure 8)",
    "3. Decoder guidance",
    "4. Samples at each guidance scale",
    "5. The paper's claims",
)
TINY = ReportSettings(
    prompts=("a red circle", "a green star"),
    samples_per_prompt=2,
    sweep_prompts=("a red circle", "a green star"),
    sweep_samples_per_prompt=2,
    decoder_steps=2,
    guidance_scales=(1.0, 3.0),
    grid_samples=2,
    reference_images=8,
    cosine_captions=4,
    progress=False,
)


@pytest.fixture(scope="module")
def full_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model plus an AR prior and the GLIDE-style baseline decoder."""
    d = str(tmp_path_factory.mktemp("report_model") / "m")
    shutil.copytree(tiny_model, d)
    assert main(["train", "ar-prior", "--preset", "tiny", "--out", d, "--no-progress"]) == 0
    assert main(["train", "decoder", "--text-only", "--preset", "tiny", "--out", d, "--no-progress"]) == 0
    return d


@pytest.fixture(scope="module")
def full_report(full_model, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report_out")
    page = run_report(full_model, out, settings=TINY)  # Inception features when installed
    return page, json.loads((out / "results.json").read_text())


def _numbers(obj, path=""):
    """Every (path, number) in a JSON structure."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


def test_page_and_results(full_report):
    page, res = full_report
    html = page.read_text()
    assert page.name == "index.html" and page.is_file()
    for title in SECTIONS:
        assert title in html, title
    assert "skipped" not in html
    for key in (
        "settings",
        "features",
        "reference",
        "prior_comparison",
        "conditioning",
        "guidance",
        "sample_grids",
        "claims",
        "plots",
        "timings_s",
        "wall_time_s",
    ):
        assert key in res, key
    numbers = list(_numbers(res))
    assert len(numbers) > 100
    bad = [p for p, v in numbers if not math.isfinite(v)]
    assert not bad, bad
    # The settings shown on the page are the ones used.
    assert res["settings"]["prompts"] == list(TINY.prompts) and res["settings"]["decoder_steps"] == 2
    assert "a green star" in html and f"{res['wall_time_s']:.0f} s" in html
    priors = res["prior_comparison"]["priors"]
    for mode in ("diffusion", "ar"):
        r = priors[mode]
        assert r["n"] == 4 and 0 <= r["both_right_rate"] <= 1 and r["frechet"]["clip"] >= 0
        assert -1 <= r["cosine_to_true_z_i"] <= 1 and r["sampling_s_per_embedding"] > 0
        assert r["training"]["steps"] == 20 and r["training"]["examples"] == 20 * r["training"]["batch_size"]
        assert r["held_out_images"] == 2  # the green star is a held-out pair
    # The diffusion configuration of section 1 is the prior mode of Figure 8 (same seed, generated once).
    assert res["conditioning"]["modes"]["prior"]["frechet"] == priors["diffusion"]["frechet"]
    sweep = res["guidance"]
    assert sweep["scales"] == [1.0, 3.0]
    for key in ("unclip", "baseline"):
        assert [p["guidance"] for p in sweep[key]["points"]] == [1.0, 3.0]
        assert all(p["diversity"]["clip"] >= 0 for p in sweep[key]["points"])
    assert sweep["baseline"]["prior"] == "none"
    # Both tiny decoders were trained from scratch for the tiny preset's 20 steps at its batch size.
    budgets = sweep["training"]
    assert budgets["unclip"]["examples"] == budgets["baseline"]["examples"] == 20 * 8
    assert budgets["baseline"]["init_from"] is None and budgets["fair"] is True
    assert "Like for like: both decoders trained from scratch" in html


def test_plots_and_sample_sets(full_report):
    page, res = full_report
    out = page.parent
    assert set(res["plots"]) == {
        "frechet_vs_guidance",
        "accuracy_vs_guidance",
        "diversity_vs_guidance",
        "conditioning_accuracy",
        "guidance_samples",
    }
    for rel in res["plots"].values():
        with Image.open(out / rel) as im:
            im.load()
            assert im.size[0] > 100 and im.size[1] > 100
        assert rel in page.read_text()
    for decoder in ("unclip", "baseline"):
        for s in res["sample_grids"][decoder]["sets"]:
            manifest = json.loads((out / s["dir"] / "manifest.json").read_text())
            assert [e["prompt"] for e in manifest["images"]] == ["a red circle"] * 2
            assert (out / s["dir"] / "grid.png").is_file()


def test_claims_follow_the_numbers(full_report):
    _, res = full_report
    claims, space = res["claims"], res["features"]["primary"]
    for c in claims.values():
        assert isinstance(c["holds"], bool)
        assert c["verdict"] == ("agrees" if c["holds"] else "does not agree")
    d, a = res["prior_comparison"]["priors"]["diffusion"], res["prior_comparison"]["priors"]["ar"]
    wins = [
        d["both_right_rate"] >= a["both_right_rate"],
        d["frechet"][space] <= a["frechet"][space],
        d["cosine_to_true_z_i"] >= a["cosine_to_true_z_i"],
    ]
    assert [c["favoured_wins"] for c in claims["a"]["comparisons"]] == wins
    assert claims["a"]["holds"] == (sum(wins) >= 2)
    p, n = res["conditioning"]["modes"]["prior"], res["conditioning"]["modes"]["none"]
    assert claims["b"]["holds"] == (
        p["both_right_rate"] > n["both_right_rate"] and p["frechet"][space] < n["frechet"][space]
    )
    u = [pt["diversity"]["clip"] for pt in res["guidance"]["unclip"]["points"]]
    b = [pt["diversity"]["clip"] for pt in res["guidance"]["baseline"]["points"]]
    du, db = (u[0] - u[-1]) / u[0], (b[0] - b[-1]) / b[0]
    assert claims["c"]["unclip_drop"] == pytest.approx(du) and claims["c"]["baseline_drop"] == pytest.approx(db)
    assert claims["c"]["holds"] == (db > 0 and db > du)


def test_diversity_claim_rule():
    def sweep(u, b):
        return {
            "guidance": {
                "scales": [1.0, 6.0],
                "unclip": {"points": [{"diversity": {"clip": v}} for v in u]},
                "baseline": {"points": [{"diversity": {"clip": v}} for v in b]},
            }
        }

    assert relative_drop([0.4, 0.1]) == pytest.approx(0.75) and relative_drop([0.0, 1.0]) is None
    assert claim_diversity(sweep([0.4, 0.38], [0.4, 0.1]))["holds"] is True  # baseline collapses, unCLIP keeps
    assert claim_diversity(sweep([0.4, 0.1], [0.4, 0.38]))["holds"] is False
    assert claim_diversity(sweep([0.4, 0.5], [0.4, 0.45]))["holds"] is False  # the baseline's does not fall
    skipped = claim_diversity(
        {"guidance": {"scales": [1.0, 6.0], "unclip": {"points": []}, "baseline": {"skipped": "no baseline"}}}
    )
    assert skipped["holds"] is None and skipped["verdict"] == "not tested"


def test_missing_components_are_skipped_visibly(tiny_model, tmp_path):
    settings = replace(TINY, inception=False, guidance_scales=(1.0, 2.0))
    page = run_report(tiny_model, tmp_path / "r", settings=settings)
    html = page.read_text()
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert "skipped: the model has no &#x27;prior_ar&#x27; component" in html
    assert "skipped: the model has no &#x27;decoder_text_only&#x27; component" in html
    assert "switched off" in html and res["features"]["spaces"] == ["clip"]
    assert "skipped" in res["prior_comparison"]["priors"]["ar"] and "skipped" in res["guidance"]["baseline"]
    assert "points" in res["guidance"]["unclip"]
    assert res["claims"]["a"]["holds"] is None and res["claims"]["c"]["holds"] is None
    assert isinstance(res["claims"]["b"]["holds"], bool)
    assert "guidance_samples" in res["plots"] and (tmp_path / "r" / res["plots"]["guidance_samples"]).is_file()


def test_settings():
    for n in (1, 2, 4):
        prompts = balanced_prompts(n)
        assert len(prompts) == 8 * n and len(set(prompts)) == 8 * n
        counts = [sum(p.endswith(" " + s) for p in prompts) for s in SHAPES]
        assert counts == [2 * n] * 4
    assert [sum(f"a {c} {s}" in balanced_prompts(n) for c, s in HELD_OUT_PAIRS) for n in (1, 2, 4)] == [1, 3, 4]
    quick = ReportSettings.quick(seed=3)
    assert quick.seed == 3 and len(quick.prompts) == 8 and quick.guidance_scales == (1.0, 3.0, 6.0)
    assert ReportSettings.full().guidance_scales == (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    # The presets fit the budgets on 2 CPU cores (by the cost model in settings.py).
    assert ReportSettings.full().estimate_s() < 30 * 60 and quick.estimate_s() < 5 * 60
    assert quick.estimate_s(inception=False) < quick.estimate_s()
    with pytest.raises(InputError, match="2 samples"):
        ReportSettings(samples_per_prompt=1)
    with pytest.raises(InputError, match="not of the form"):
        run_report("unused", "unused", settings=ReportSettings(prompts=("a blue hexagon",)))
