"""One rank of a multi-process test run (started by test_distributed.py, as torchrun would).

Usage: ``python dist_worker.py JOBS_JSON`` with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set. Each job trains one component the way ``train_component`` does, then
writes this rank's raw and EMA weights to ``<out>/rank<r>_<component>.safetensors`` so the
test can check that every rank holds the same ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unclip.storage.checkpoint import save_tensors
from unclip.train import distributed
from unclip.train.components import SETUPS, Options, _join_process_group
from unclip.train.loop import train


def run_job(job: dict) -> None:
    out = Path(job["out"])
    opts = _join_process_group(
        Options(steps=job["steps"], resume=job.get("resume", False), progress=False, fsdp=job.get("fsdp", False))
    )
    plan = SETUPS[job["name"]]("shapes", "tiny", out, opts)
    result = train(plan.stage, plan.config, out / "runs" / plan.component, resume=opts.resume, progress=False)
    rank = distributed.context().rank
    state = {f"model.{k}": _full(v) for k, v in plan.stage.model.state_dict().items()}
    if result.model is not None:
        state.update({f"ema.{k}": _full(v) for k, v in result.model.state_dict().items()})
    save_tensors(out / f"rank{rank}_{plan.component}.safetensors", state)


def _full(t):
    """This rank's view of a tensor: under FSDP the local shard (so ranks differ by design)."""
    return (t.to_local() if hasattr(t, "to_local") else t).detach().contiguous().clone()


if __name__ == "__main__":
    for job in json.loads(sys.argv[1]):
        run_job(job)
    distributed.shutdown()
