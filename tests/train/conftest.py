"""A tiny stage (4 -> 16 -> 2 MLP with dropout) for testing the stage-agnostic loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unclip.storage.checkpoint import load_tensors, save_component


@dataclass
class TinyConfig:
    width: int = 16
    dropout: float = 0.2


class TinyMLP(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(4, config.width),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.LayerNorm(config.width),
            nn.Linear(config.width, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyStage:
    """Regression y = x W + noise; uses the step generator for data and for loss noise,
    and the global RNG through dropout, so every source of randomness is exercised."""

    name = "tiny"

    def __init__(self, *, crash_at: int | None = None, nan_at: int | None = None, record_dtype: bool = False) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(1234)
            self.model = TinyMLP(TinyConfig())
        self.weight = torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 1.5], [-1.0, 1.0]])
        self.crash_at, self.nan_at = crash_at, nan_at
        self.steps_seen: list[int] = []
        self.dtypes: list[torch.dtype] = []
        self.record_dtype = record_dtype
        self.exported: nn.Module | None = None
        self.evaluated: list[int] = []

    def get_batch(self, step: int, generator: torch.Generator) -> dict:
        if step == self.crash_at:
            raise RuntimeError(f"simulated crash at step {step}")
        self.steps_seen.append(step)
        x = torch.randn(8, 4, generator=generator)
        y = x @ self.weight + 0.1 * torch.randn(8, 2, generator=generator)
        return {"x": x, "y": y, "step": step}

    def loss(self, batch: dict, generator: torch.Generator):
        device = next(self.model.parameters()).device  # the loop leaves device moves to the stage
        x, y = batch["x"].to(device), batch["y"].to(device)
        out = self.model(x)
        if self.record_dtype:
            self.dtypes.append(out.dtype)
        target = y + 0.01 * torch.randn(out.shape, generator=generator).to(device)
        loss = F.mse_loss(out.float(), target)
        if batch["step"] == self.nan_at:
            loss = loss * float("nan")
        # one metric as a 0-d tensor (converted by the loop at log time), one as a float
        return loss, {"mae": (out.float() - y).abs().mean().detach(), "batch_mean": float(batch["x"].mean())}

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        self.evaluated.append(step)
        g = torch.Generator().manual_seed(99)
        x = torch.randn(32, 4, generator=g).to(next(model.parameters()).device)
        return {"val_mse": float(F.mse_loss(model(x), x @ self.weight.to(x.device)))}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        self.exported = model
        save_component(Path(out_dir) / self.name, self.name, model.config, model.state_dict())


def read_state_tensors(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every tensor of a run's checkpoint, by file (safetensors only)."""
    state = Path(run_dir) / "train_state"
    return {
        name: load_tensors(state / name) for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors")
    }


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a shared, loaded machine OpenMP
    spin-waiting makes them 10x slower; restore the setting for other test folders."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_stage():
    return TinyStage


@pytest.fixture
def read_state():
    return read_state_tensors
