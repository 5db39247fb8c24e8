"""Copy a trained model directory into the package as a shipped model, in compact storage.

Only inference files travel (model.json and each component's config.json and
weights.safetensors); training state and caches stay behind. Weights are stored in
float16, or, for the components named by ``--int8``, in int8 with a float16 scale per
output channel (see ``unclip.storage.quantize``); buffers (the AR prior's PCA basis, bucket edges
and dot-product distribution) stay in float32. Loading dequantises to float32.

``--add DIR`` adds a component trained into another model directory (with the same CLIP),
e.g. ``runs/ar/prior_ar``; its training record (that directory's model.json info) comes along.

Usage:
    python benchmarks/ship_model.py MODEL_DIR [--name shapes] [--add COMPONENT_DIR ...]
        [--int8 decoder,decoder_text_only] [--defaults '{"size": 128}']
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from unclip.model_dir import read_model_json  # noqa: E402
from unclip.storage.checkpoint import atomic_write_json, load_tensors, read_json, save_tensors  # noqa: E402
from unclip.storage.integrity import sha256_file  # noqa: E402
from unclip.storage.quantize import dequantize_state, quantize_state  # noqa: E402

PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "src" / "unclip" / "models"


def buffer_names(component_dir: Path) -> set[str]:
    """Names of the component's buffers (statistics, not weights), which keep float32."""
    payload = read_json(component_dir / "config.json")
    if payload.get("component") == "prior_ar":
        from unclip.prior.ar_prior import ARPrior, ARPriorConfig
        from unclip.storage.checkpoint import config_from_dict

        cfg = config_from_dict(ARPriorConfig, payload.get("config", {}), component="prior_ar")
        return {k for k, _ in ARPrior(cfg).named_buffers()}
    return set()


def write_component(src: Path, dst: Path, *, int8: bool) -> int:
    dst.mkdir(parents=True)
    tensors = dequantize_state(load_tensors(src / "weights.safetensors"))
    keep = buffer_names(src)
    if int8:
        stored = quantize_state(tensors, keep=keep)
    else:
        stored = {k: v.half() if v.is_floating_point() and k not in keep else v for k, v in tensors.items()}
    save_tensors(dst / "weights.safetensors", stored)
    payload = read_json(src / "config.json")
    payload["sha256"] = {"weights.safetensors": sha256_file(dst / "weights.safetensors")}  # of the stored weights
    atomic_write_json(dst / "config.json", payload)
    return (dst / "weights.safetensors").stat().st_size


def ship(
    model_dir: Path,
    name: str = "shapes",
    add: list[Path] = (),
    int8: set[str] = frozenset(),
    defaults: dict | None = None,
) -> Path:
    meta = read_model_json(model_dir)
    sources = {comp: model_dir / path for comp, path in meta["components"].items()}
    for comp_dir in add:
        comp_dir = Path(comp_dir)
        sources[comp_dir.name] = comp_dir
        other = comp_dir.parent / "model.json"
        if other.is_file():
            info = json.loads(other.read_text()).get("info", {}).get(comp_dir.name)
            if info is not None:
                meta.setdefault("info", {})[comp_dir.name] = info
    meta["components"] = {comp: comp for comp in sources}
    if defaults:
        meta["defaults"] = {**meta.get("defaults", {}), **defaults}
    target = PACKAGE_MODELS / name
    staging = Path(tempfile.mkdtemp(dir=PACKAGE_MODELS, prefix=f".{name}."))
    try:
        sizes = {comp: write_component(src, staging / comp, int8=comp in int8) for comp, src in sources.items()}
        meta.setdefault("info", {})["storage"] = {
            comp: ("int8 per-channel" if comp in int8 else "float16") for comp in sources
        }
        atomic_write_json(staging / "model.json", meta)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for comp, size in sizes.items():
        print(f"  {comp}: {size / 1e6:.2f} MB ({'int8' if comp in int8 else 'fp16'})")
    print(f"shipped {model_dir} as '{name}' in {target}: {sum(sizes.values()) / 1e6:.1f} MB of weights")
    return target


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--name", default="shapes")
    ap.add_argument(
        "--add", type=Path, action="append", default=[], help="a component directory from another model directory"
    )
    ap.add_argument("--int8", default="", help="comma-separated components stored in int8")
    ap.add_argument("--defaults", default=None, help="JSON object merged into model.json's sampling defaults")
    a = ap.parse_args()
    ship(
        a.model_dir, a.name, a.add, {c for c in a.int8.split(",") if c}, json.loads(a.defaults) if a.defaults else None
    )
