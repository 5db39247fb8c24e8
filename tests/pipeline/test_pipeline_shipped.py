"""The shipped `shapes` model loads by name and generates (a cheap smoke check)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unclip.apps.cli.main import main
from unclip.pipeline import UnCLIP, resolve_model_path


def test_shipped_model_loads_by_name_and_fits_the_weight_budget() -> None:
    root = resolve_model_path("shapes")
    total = sum(f.stat().st_size for f in root.rglob("*.safetensors"))
    assert total < 40e6
    pipe = UnCLIP.load("shapes")
    assert pipe.prior is not None and pipe.ar_prior is not None
    side = pipe.decoder.config.image_size
    assert pipe.output_sizes == [side, 4 * side, 16 * side]
    assert pipe.resolve_size(None) == 16 * side  # the default output: both upsampler stages
    second = pipe.upsamplers[-1]  # sampled part-way from bicubic, one step, back-projected (its config.json)
    assert (second.degradation, second.start, second.steps, second.back_projection) == ("bsr-light", 200, 1, 2)
    images, _ = pipe.generate_tensors(
        ["a red circle"], num_images=1, seed=0, steps=2, prior_steps=2, size=4 * side, upsampler_steps=2
    )
    assert images.shape == (1, 3, 4 * side, 4 * side)
    images, _ = pipe.generate_tensors(
        ["a red circle"], num_images=1, seed=0, steps=2, prior_steps=2, upsampler_steps=[2, None]
    )
    assert images.shape == (1, 3, 16 * side, 16 * side)
    images, _ = pipe.generate_tensors(["a red circle"], num_images=1, seed=0, prior="ar", steps=2, size=side)
    assert images.shape == (1, 3, side, side)


def test_shipped_baseline_decoder_is_the_same_network_without_z_i() -> None:
    base, unclip = UnCLIP.load("shapes", decoder="decoder_text_only"), UnCLIP.load("shapes")
    assert base.decoder.config.use_image_embed is False
    shared = {k: v.shape for k, v in base.decoder.state_dict().items()}
    full = {k: v.shape for k, v in unclip.decoder.state_dict().items()}
    assert all(full[k] == shape for k, shape in shared.items())
    assert set(full) - set(shared) == {k for k in full if k.startswith(("image_to_", "null_image"))}


def test_cli_data_dumps_samples_with_attributes(tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert main(["data", "shapes", "--split", "test", "-n", "3", "--size", "32", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["images"]) == 3
    attrs = manifest["images"][0]["attributes"]
    assert attrs["background"] in {"white", "black", "gray"}
    assert {"color", "shape", "size", "extent", "center", "region"} <= set(attrs["objects"][0])


def test_shipped_model_samples_with_dpm_solver_and_bf16() -> None:
    pipe = UnCLIP.load("shapes")
    assert pipe.defaults.precision == "auto"  # model.json: bf16 where the hardware has it
    pipe.precision = "fp32"
    kw = dict(num_images=1, seed=0, steps=3, prior_steps=3, size=pipe.decoder.config.image_size)
    a, _ = pipe.generate_tensors(["a red circle"], sampler="dpmpp2m", **kw)
    b, _ = pipe.generate_tensors(["a red circle"], sampler="dpmpp2m", **kw)
    c, _ = pipe.generate_tensors(["a red circle"], **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)  # seeded, and really another sampler
    pipe.precision = "bf16"
    d, _ = pipe.generate_tensors(["a red circle"], sampler="dpmpp2m", **kw)
    assert d.shape == a.shape and torch.isfinite(d).all() and not torch.equal(a, d)


def test_pipeline_precision_follows_the_model_unless_the_command_line_sets_it() -> None:
    from unclip.nn.precision import set_default_precision

    set_default_precision(None)
    assert UnCLIP.load("shapes").precision == "auto"
    set_default_precision("fp32")
    try:
        assert UnCLIP.load("shapes").precision == "fp32"
    finally:
        set_default_precision(None)
