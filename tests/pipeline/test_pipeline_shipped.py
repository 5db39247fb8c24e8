"""The shipped `shapes` model loads by name and generates (a cheap smoke check)."""

from __future__ import annotations

import json
from pathlib import Path

from unclip.cli import main
from unclip.pipeline import UnCLIP, resolve_model_path


def test_shipped_model_loads_by_name_and_fits_the_weight_budget() -> None:
    root = resolve_model_path("shapes")
    total = sum(f.stat().st_size for f in root.rglob("*.safetensors"))
    assert total < 40 * 2**20
    pipe = UnCLIP.load("shapes")
    assert pipe.prior is not None
    images, _ = pipe.generate_tensors(["a red circle"], num_images=1, seed=0, steps=2, prior_steps=2)
    size = pipe.decoder.config.image_size
    assert images.shape == (1, 3, size, size)


def test_cli_data_dumps_samples_with_attributes(tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert main(["data", "shapes", "--split", "test", "-n", "3", "--size", "32", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["images"]) == 3
    attrs = manifest["images"][0]["attributes"]
    assert attrs["background"] in {"white", "black", "gray"}
    assert {"color", "shape", "size", "extent", "center", "region"} <= set(attrs["objects"][0])
