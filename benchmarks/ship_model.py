"""Copy a trained model directory into the package as a shipped model, weights in float16.

Only inference files travel (model.json and each component's config.json and
weights.safetensors); training state and caches stay behind. float16 halves the size
(the weight budget of the repository is 40 MB); loading casts back to float32.

Usage: python benchmarks/ship_model.py MODEL_DIR [NAME]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from unclip.checkpoint import load_tensors, save_tensors  # noqa: E402


def ship(model_dir: Path, name: str = "shapes") -> Path:
    target = Path(__file__).resolve().parents[1] / "src" / "unclip" / "models" / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    meta = json.loads((model_dir / "model.json").read_text())
    shutil.copy(model_dir / "model.json", target / "model.json")
    for component in meta["components"].values():
        (target / component).mkdir()
        shutil.copy(model_dir / component / "config.json", target / component / "config.json")
        tensors = load_tensors(model_dir / component / "weights.safetensors")
        half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        save_tensors(target / component / "weights.safetensors", half)
    total = sum(f.stat().st_size for f in target.rglob("*.safetensors"))
    print(f"shipped {model_dir} as '{name}' in {target}: {total / 2**20:.1f} MB of weights")
    return target


if __name__ == "__main__":
    ship(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "shapes")
