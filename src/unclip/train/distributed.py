"""Training on several processes with torch.distributed: set-up, rank-aware data, rank-0 writes.

``torchrun`` (or Slurm's ``srun``, or anything else that sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) starts one process per device; this
module turns them into one training run (DESIGN.md principle 13: the launchers and
gradient averaging the field already runs, none of our own):

- :func:`init_from_env` joins the process group named by the environment: NCCL on GPUs,
  gloo on CPU (``--dist-backend`` overrides), one GPU per local rank, and a collective
  timeout, so that a rank that dies makes the others fail within bounded time instead of
  hanging. A second, gloo group with a long timeout serves the barriers around rank-0-only
  data preparation (:func:`main_first`), which can take much longer than a training step.
- Batches are *global*: a stage's ``batch_size`` is the sum over ranks. Every rank draws
  the whole global batch (indices, noise, timesteps, dropped captions) from the step's
  generator and keeps its own contiguous block of rows (:func:`take_rows`); random streams
  are therefore defined per global sample, and a 2-rank run sees exactly the samples and
  noise of a 1-rank run with the same global batch. This is the map-style counterpart of a
  distributed sampler; streamed shards are split with ``wds.split_by_node`` instead.
- :class:`Replicas` runs the stage's loss through DistributedDataParallel (gradients
  all-reduced, i.e. averaged, during backward) or, with ``fsdp``, through FSDP2
  ``fully_shard`` over the UNet blocks; it gathers full (unsharded) state for checkpoints,
  so a checkpoint written by N ranks resumes on M ranks.
- Only rank 0 writes files (:func:`is_main`); the others wait at a barrier.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import ConfigError, UnclipError

logger = logging.getLogger(__name__)

BACKENDS = ("gloo", "nccl")
# A training collective waits this long for the slowest rank before failing the run. Large
# enough for a checkpoint or an evaluation on rank 0; a dead peer is usually noticed sooner
# (gloo sees its sockets close; NCCL's watchdog aborts at the timeout).
DEFAULT_TIMEOUT_S = 600.0
# Barriers around rank-0-only data preparation (rendering, encoding) may wait much longer.
SETUP_TIMEOUT_S = 4 * 3600.0
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_setup_group: Any = None
_main_first_depth = 0


class RankFailure(UnclipError):
    """Another rank stopped (crashed, was killed or timed out) during a collective."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as set by torchrun/srun wrappers (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun") from exc


def context() -> DistContext:
    """The current process group's rank and size (rank 0 of 1 when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend()
    )


def is_main() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return context().is_main


def choose_backend(device: str, override: str | None = None) -> str:
    """``override`` if given (checked), else NCCL for CUDA devices and gloo otherwise."""
    if override is not None:
        if override not in BACKENDS:
            raise ConfigError(f"--dist-backend {override!r} is not supported; choose one of {', '.join(BACKENDS)}")
        if override == "nccl" and not str(device).startswith("cuda"):
            raise ConfigError(f"--dist-backend nccl needs --device cuda (got {device!r}); use gloo on CPU")
        return override
    return "nccl" if str(device).startswith("cuda") else "gloo"


def init_from_env(device: str = "cpu", backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group described by the launcher's environment; idempotent.

    Does nothing (and returns rank 0 of 1) when ``WORLD_SIZE`` is absent or 1. On CUDA each
    process takes GPU ``LOCAL_RANK``. ``timeout_s`` bounds every training collective.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    world = world_size_from_env()
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise ConfigError(
            "WORLD_SIZE > 1 but this torch build has no torch.distributed; install a standard torch build"
        )
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} but {', '.join(missing)} unset; "
            "start the run with torchrun (or set them as torchrun does)"
        )
    if timeout_s <= 0:
        raise ConfigError(f"--dist-timeout {timeout_s} must be a positive number of seconds")
    name = choose_backend(device, backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} but CUDA is not available on this machine; use --device cpu")
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(name, timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as exc:
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise RankFailure(
            f"rank {os.environ['RANK']} of {world} could not join the process group at {where} "
            f"within {timeout_s:.0f} s "
            f"({type(exc).__name__}: {exc}); check that every rank started, that they share MASTER_ADDR/MASTER_PORT, "
            f"and that the port is reachable"
        ) from exc
    global _setup_group
    _setup_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=SETUP_TIMEOUT_S))
    ctx = context()
    logger.info(
        "joined the process group: rank %d of %d (%s, timeout %.0f s)", ctx.rank, ctx.world_size, name, timeout_s
    )
    return ctx


def shutdown() -> None:
    """Leave the process group (no-op when none); never raises, since it runs on error paths too."""
    global _setup_group
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    _setup_group = None


def local_device(device: str) -> str:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a multi-process run."""
    ctx = context()
    if ctx.enabled and device == "cuda":
        return f"cuda:{ctx.local_rank}"
    return device


# --------------------------------------------------------------------------- synchronisation


def barrier(*, setup: bool = False) -> None:
    """Wait for every rank (no-op on one process); ``setup`` uses the long-timeout group."""
    if context().enabled:
        dist.barrier(group=_setup_group if setup else None)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (who then find rank 0's cache).

    For data preparation that writes a cache: only rank 0 writes it, the others read it.
    Nested uses are one (the outermost decides), so helpers may use it freely.
    """
    global _main_first_depth
    ctx = context()
    outer = _main_first_depth == 0 and ctx.enabled
    _main_first_depth += 1
    try:
        if outer and not ctx.is_main:
            _guarded(lambda: barrier(setup=True), "waiting for rank 0 to prepare the data")
        yield
        if outer and ctx.is_main:
            _guarded(lambda: barrier(setup=True), "handing rank 0's data to the other ranks")
    finally:
        _main_first_depth -= 1


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over ranks (a copy; ``x`` itself on one process)."""
    ctx = context()
    if not ctx.enabled:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / ctx.world_size


def broadcast_floats(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Rank 0's ``values`` on every rank (e.g. timings that must agree across ranks)."""
    if not context().enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all start from one state."""
    if context().enabled:
        with torch.no_grad():
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)


# --------------------------------------------------------------------------- global batches


def rows(n: int) -> slice:
    """This rank's contiguous block of a global batch of ``n`` rows."""
    ctx = context()
    if n % ctx.world_size:
        raise ConfigError(
            f"the global batch of {n} does not split over {ctx.world_size} processes; "
            f"pass a --batch-size divisible by {ctx.world_size}"
        )
    per = n // ctx.world_size
    return slice(ctx.rank * per, (ctx.rank + 1) * per)


def take_rows(*xs: Any) -> Any:
    """This rank's rows (dim 0) of each global-batch tensor (tuples, lists and dicts recursed).

    Returns one value for one argument, else a tuple. On one process it returns the inputs.
    """

    def take(x: Any) -> Any:
        if isinstance(x, Tensor):
            return x[rows(x.shape[0])]
        if isinstance(x, (tuple, list)):
            return type(x)(take(v) for v in x)
        if isinstance(x, dict):
            return {k: take(v) for k, v in x.items()}
        return x

    if not context().enabled:
        return xs[0] if len(xs) == 1 else xs
    out = tuple(take(x) for x in xs)
    return out[0] if len(out) == 1 else out


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x`` along dim 0, in rank order, keeping gradients.

    The backward pass sums the incoming gradients of every rank into each rank's rows
    (a reduce-scatter), so a loss computed identically on every rank from the gathered
    tensor, with gradients averaged by DDP, has exactly the gradient of that loss on one
    process. CLIP's contrastive loss uses it: its negatives are the whole global batch.
    """
    if not context().enabled:
        return x
    from torch.distributed._functional_collectives import all_gather_tensor_autograd

    return all_gather_tensor_autograd(x.contiguous(), gather_dim=0, group=dist.group.WORLD)


def check_global_batch(batch_size: int | None) -> None:
    """ConfigError unless the global ``batch_size`` splits evenly over the ranks."""
    if batch_size is not None:
        rows(int(batch_size))


# --------------------------------------------------------------------------- failures


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a collective whose peer died or timed out."""
    if isinstance(exc, RankFailure):
        return False
    if dist.is_available() and isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("gloo", "Gloo", "NCCL", "Connection closed", "Timed out", "timed out")
    )


def rank_failure(exc: BaseException, doing: str, hint: str = "") -> RankFailure:
    """The error to raise instead of ``exc``: which rank saw what, and what to do next."""
    ctx = context()
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return RankFailure(
        f"rank {ctx.rank} of {ctx.world_size}: a collective failed while {doing}: another rank stopped "
        f"(crashed, was killed, or did not answer within the collective timeout). {hint}"
        f"Torch said: {type(exc).__name__}: {first}"
    )


def _guarded(fn: Callable[[], Any], doing: str) -> Any:
    try:
        return fn()
    except Exception as exc:
        if is_collective_failure(exc):
            raise rank_failure(exc, doing, "Rerun the same command (add --resume to keep finished stages). ") from exc
        raise


# --------------------------------------------------------------------------- models


def unet_blocks(model: nn.Module) -> list[nn.Module]:
    """The UNet stages (``down``, ``middle``, ``up`` entries) of every UNet inside ``model``."""
    from ..nn.unet import UNet

    blocks: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, UNet):
            blocks += [*m.down, m.middle, *m.up]
    return blocks


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Recompute the activations of every UNet block in backward (less memory, ~30% more compute).

    Returns the number of UNets switched; ConfigError when ``model`` has none.
    """
    from ..nn.unet import UNet

    unets = [m for m in model.modules() if isinstance(m, UNet)]
    if not unets:
        raise ConfigError(
            "--grad-checkpointing applies to the UNet blocks of the decoder and upsampler; "
            f"{type(model).__name__} has none"
        )
    for m in unets:
        m.grad_checkpointing = True
    return len(unets)


def _local(t: Tensor) -> Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _full(t: Tensor) -> Tensor:
    """A full tensor on the CPU from a DTensor shard (collective) or a plain tensor."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


class _StageLoss(nn.Module):
    """The stage's loss as a module's forward, so DDP's forward hooks run around it."""

    def __init__(self, stage: Any) -> None:
        super().__init__()
        self.model = stage.model
        self._loss = stage.loss  # a bound method, not a submodule

    def forward(self, batch: Any, generator: torch.Generator) -> Any:
        return self._loss(batch, generator)


class Replicas:
    """How this process runs the stage: alone, with DDP, or with FSDP2.

    Build it after loading any checkpoint into the model and EMA, and build the optimizer
    after it (FSDP replaces the parameters by sharded ones). With DDP every rank holds the
    whole model; its gradients are averaged over ranks during backward. With ``fsdp`` the
    UNet blocks and the root are sharded (parameters, gradients and optimizer state), the
    EMA copy the same way; state for checkpoints is gathered to full tensors.
    """

    def __init__(self, stage: Any, ema_model: nn.Module | None, *, fsdp: bool = False) -> None:
        self.stage, self.model, self.ema_model = stage, stage.model, ema_model
        ctx = context()
        self.fsdp = fsdp and ctx.enabled
        if fsdp and not ctx.enabled:
            logger.warning("--fsdp has no effect on a single process; training unsharded")
        self._ddp: nn.Module | None = None
        if self.fsdp:
            from torch.distributed.fsdp import fully_shard

            if not unet_blocks(self.model):
                raise ConfigError(
                    f"--fsdp shards the UNet blocks of the decoder and upsampler; stage '{stage.name}' has none, "
                    "train it without --fsdp (DDP)"
                )
            for module in (self.model, ema_model):
                if module is not None:
                    for block in unet_blocks(module):
                        fully_shard(block)
                    fully_shard(module)
        elif ctx.enabled:
            # device_ids=None: DDP leaves inputs where they are (the stage moves them itself);
            # no buffer broadcast: the models keep no running statistics, and all ranks start
            # from rank 0's state (broadcast_module) and apply identical updates.
            import inspect

            from torch.nn.parallel import DistributedDataParallel

            sync = (
                "forward_sync_buffers"
                if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                else "broadcast_buffers"
            )
            self._ddp = DistributedDataParallel(_StageLoss(stage), device_ids=None, **{sync: False})

    def loss(self, batch: Any, generator: torch.Generator) -> Any:
        """``stage.loss`` on this rank's rows, through DDP when there is one."""
        return self._ddp(batch, generator) if self._ddp is not None else self.stage.loss(batch, generator)

    def clip_grad_norm(self, params: list[Tensor], max_norm: float) -> Tensor:
        """Clip the global norm of the (already averaged) gradients; returns it as a plain tensor."""
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def model_state(self) -> dict[str, Tensor]:
        """The model's full state dict (a collective under FSDP: call it on every rank)."""
        return self._full_state(self.model)

    def ema_state(self) -> dict[str, Tensor] | None:
        return self._full_state(self.ema_model) if self.ema_model is not None else None

    def _full_state(self, module: nn.Module) -> dict[str, Tensor]:
        state = module.state_dict()
        return {k: _full(v) for k, v in state.items()} if self.fsdp else state

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """``optimizer.state_dict()`` with full tensors (a collective under FSDP)."""
        state = optimizer.state_dict()
        if not self.fsdp:
            return state
        full = {
            i: {k: (_full(v) if isinstance(v, Tensor) else v) for k, v in s.items()} for i, s in state["state"].items()
        }
        return {"state": full, "param_groups": state["param_groups"]}

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load a full (unsharded) optimizer state; under FSDP each rank keeps its shard."""
        optimizer.load_state_dict(state)
        if not self.fsdp:
            return
        from torch.distributed.tensor import DTensor, distribute_tensor

        for p, s in optimizer.state.items():
            if isinstance(p, DTensor):
                for k, v in s.items():
                    if isinstance(v, Tensor) and not isinstance(v, DTensor) and tuple(v.shape) == tuple(p.shape):
                        s[k] = distribute_tensor(v.to(_local(p).device), p.device_mesh, p.placements)

    def export_module(self, module: nn.Module) -> nn.Module:
        """A plain module with ``module``'s full weights, for ``stage.export`` (on rank 0).

        Without FSDP this is ``module`` itself. Under FSDP the weights are gathered (every
        rank must call this) into a fresh unsharded copy built from ``module.config``.
        """
        if not self.fsdp:
            return module
        state = self._full_state(module)
        fresh = type(module)(module.config)
        fresh.load_state_dict(state)
        return fresh.eval()


def local_tensors(tensors: list[Tensor]) -> list[Tensor]:
    """Each tensor's local shard (DTensor) or the tensor itself: for element-wise updates such as the EMA."""
    return [_local(t) for t in tensors]
