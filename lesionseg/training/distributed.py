"""Distributed data-parallel plumbing for ``torchrun``: environment checks, process group, rank helpers.

``torchrun --nproc_per_node N train_cli.py ...`` starts N processes with WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; :func:`setup` joins them in a process group (NCCL with
one GPU per process, ``cuda:LOCAL_RANK``, or gloo on CPU). A plain ``python train_cli.py`` sees none
of these variables: :func:`setup` then creates no process group and every helper is a no-op, so the
single-process path is the one it always was.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

log = logging.getLogger(__name__)
T = TypeVar("T")

LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")  # any of these means "launched for distributed"
REQUIRED_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# rank 0 alone tunes the threshold, writes the test report and publishes while the others wait
TIMEOUT_ENV = "LESIONSEG_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 60


class DistributedEnvError(ValueError):
    """torchrun's environment is missing or inconsistent; the message is one line."""


def check_env(env: Mapping[str, str] | None = None) -> dict[str, int] | None:
    """None when not launched for distributed training, else the integer launch variables.

    Raises :class:`DistributedEnvError` when the environment is half set up (e.g. WORLD_SIZE
    without MASTER_ADDR or RANK) or holds impossible values.
    """
    env = os.environ if env is None else env
    given = [k for k in REQUIRED_VARS if env.get(k)]
    if not any(env.get(k) for k in LAUNCH_VARS):
        return None
    missing = [k for k in REQUIRED_VARS if k not in given]
    if missing:
        raise DistributedEnvError(
            f"incomplete distributed environment: {', '.join(given)} set but {', '.join(missing)} not; "
            f"launch with `torchrun --nproc_per_node N train_cli.py ...` (which sets all of {', '.join(REQUIRED_VARS)}), "
            f"or unset {', '.join(given)} to train in a single process")
    try:
        values = {k: int(env[k]) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    except ValueError:
        shown = ", ".join(f"{k}={env[k]!r}" for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"))
        raise DistributedEnvError(f"distributed environment variables must be integers: {shown}") from None
    if values["WORLD_SIZE"] < 1 or not 0 <= values["RANK"] < values["WORLD_SIZE"] or values["LOCAL_RANK"] < 0:
        raise DistributedEnvError(f"inconsistent distributed environment: RANK={values['RANK']}, "
                                  f"LOCAL_RANK={values['LOCAL_RANK']}, WORLD_SIZE={values['WORLD_SIZE']} "
                                  "(need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0)")
    if not 0 < values["MASTER_PORT"] < 65536:
        raise DistributedEnvError(f"MASTER_PORT={values['MASTER_PORT']} is not a TCP port")
    return values


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run. ``backend`` None: a single process, no process group."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress bars and writes every file; the others only compute."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(device_ids=[self.local_rank] if self.backend == "nccl" else None)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_gather(self, obj: T) -> list[T]:
        """Every process's ``obj`` (picklable), in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every process (what the others pass is ignored)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def shard(self, n: int) -> range:
        """This process's contiguous part of ``range(n)``: no padding, no overlap, rank 0 first."""
        return range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def sampler(self, dataset: Dataset, seed: int) -> DistributedSampler | None:
        """Shuffling sampler giving each process an equal share (None for a single process);
        call ``set_epoch`` every epoch: the order is a function of ``seed`` and the epoch."""
        if not self.enabled:
            return None
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to train: DistributedDataParallel around ``model``, or ``model`` itself.
        Keep ``model`` for evaluation and saving; the wrapper only averages gradients."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: torch.device) -> Distributed:
    """Join torchrun's process group if launched by it; otherwise a single process on ``device``.

    ``device`` is the one the run asked for (``pick_device``): CUDA gives NCCL with this process
    on ``cuda:LOCAL_RANK``, CPU gives gloo. Raises :class:`DistributedEnvError` (a ValueError)
    for a half-set environment, MPS, or more local processes than GPUs.
    """
    env = check_env()
    if env is None:
        return Distributed(device=device)
    world, rank, local_rank = env["WORLD_SIZE"], env["RANK"], env["LOCAL_RANK"]
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count()
        if local_rank >= n_gpus:
            raise DistributedEnvError(f"LOCAL_RANK={local_rank} but only {n_gpus} CUDA GPU(s) are visible; "
                                      f"start at most {n_gpus} processes per machine (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl" if dist.is_nccl_available() else "gloo"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedEnvError(f"distributed training runs on CUDA GPUs (NCCL) or on CPUs (gloo), not on "
                                  f"{device.type}; pass --device cpu or --device cuda")
    minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN))
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=minutes))
    ctx = Distributed(device=device, rank=rank, world_size=world, local_rank=local_rank, backend=backend)
    if not ctx.is_main:
        # one voice: rank 0 logs progress; the others still report warnings and errors
        logging.getLogger("lesionseg").setLevel(logging.WARNING)
    log.info("distributed: %d processes, backend %s, rank 0 on %s (MASTER_ADDR %s:%s)", world, backend, device,
             os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    return ctx
