"""Data-parallel training on ``torch.distributed``: process group, SyncBatchNorm, DDP, lr scaling.

The engine is PyTorch's own (``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``); this module only wires it to the trainer:

* :func:`init_distributed` joins the process group: gloo on CPU, NCCL for CUDA tensors (with gloo
  kept for CPU tensors), one GPU per process picked by ``LOCAL_RANK``, and a timeout so that a
  crashed or hung rank makes the others fail with an error instead of waiting forever.
* :func:`convert_sync_batchnorm` turns every BatchNorm, torch's *and* ours
  (:mod:`resnet_lab.nn`), into a synchronized one whose statistics are those of the global batch.
  ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` only knows torch's classes, and torch's
  SyncBatchNorm runs on GPUs only, so on CPU the layers become our :class:`SyncBatchNorm`.
  Parameter and buffer names are unchanged: checkpoints load into the plain model.
* :func:`scale_lr_for_world_size` is the linear scaling rule with warmup (Goyal et al. 2017).
* :func:`setup_distributed` does all of the above and wraps the model in
  ``DistributedDataParallel``; the CLI calls it under ``torchrun``.
* :class:`DistContext` tells the loop its rank and world size and combines the processes'
  figures (:func:`all_reduce_evaluation`, :func:`broadcast_buffers`) so rank 0 reports global ones.

See docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..nn.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm
from .device import resolve_device
from .metrics import per_class_accuracy

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DistContext",
    "DistEnv",
    "DistributedError",
    "SyncBatchNorm",
    "all_reduce_evaluation",
    "broadcast_buffers",
    "convert_sync_batchnorm",
    "dist_env",
    "distributed_errors",
    "get_world_size",
    "init_distributed",
    "rescale_resume_position",
    "scale_lr_for_world_size",
    "setup_distributed",
]

DEFAULT_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: larger values overflow torch's timeout
TIMEOUT_ENV = "RESNET_LAB_DIST_TIMEOUT"
_timeout_in_use: float | None = None  # what init_distributed used, for error messages



class DistributedError(RuntimeError):
    """Another process of the job crashed, was killed, or stopped answering within the timeout."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job, as ``torchrun`` describes it in the environment.

    Args:
        rank: global rank, 0..world_size-1 (``RANK``).
        local_rank: rank on this host, picks the GPU (``LOCAL_RANK``).
        world_size: number of processes in the job (``WORLD_SIZE``).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def dist_env() -> DistEnv:
    """Read ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (1 process when unset)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"RANK/LOCAL_RANK/WORLD_SIZE must be integers (torchrun sets them): {e}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(
            f"inconsistent distributed environment: RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world}; "
            "expected 0 <= RANK < WORLD_SIZE. Launch with torchrun rather than setting them by hand."
        )
    return DistEnv(rank=rank, local_rank=local, world_size=world)


@dataclass(frozen=True)
class DistContext:
    """What the training loop needs to know about the job: which process this is, how many there
    are, and how to combine their figures. With one process every reduction is the identity.

    Args:
        rank: this process's global rank (rank 0 logs and writes the run directory).
        world_size: processes in the job.
    """

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> "DistContext":
        """The job as torchrun and the process group describe it (one process when neither does)."""
        return cls(rank=int(os.environ.get("RANK", "0")), world_size=get_world_size())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: Tensor) -> tuple[Tensor, ...]:
        """Sum scalar tensors over all processes (one all-reduce, in float64)."""
        if self.world_size == 1:
            return values
        total = _all_reduce_sum(torch.stack([v.double() for v in values]))  # counts exact below 2**53
        return tuple(t if v.is_floating_point() else t.round().to(v.dtype) for t, v in zip(total, values))

    def evaluation(self, ev: dict[str, Any]) -> dict[str, Any]:
        """Combine the per-process results of ``evaluate`` on disjoint test shards."""
        return ev if self.world_size == 1 else all_reduce_evaluation(ev)

    def share_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's BN running statistics (the ones that are saved)."""
        if self.world_size > 1:
            broadcast_buffers(model)


def get_world_size() -> int:
    """Processes in the default group, or 1 when no process group is initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _timeout_seconds(timeout: float | None) -> float:
    where = "the process-group timeout"
    if timeout is None:
        raw = os.environ.get(TIMEOUT_ENV)
        try:
            timeout = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds; e.g. {TIMEOUT_ENV}=600") from None
        where = f"{TIMEOUT_ENV}={raw}" if raw else where
    if not 0 < timeout <= MAX_TIMEOUT_S:  # inf or 1e300 overflowed inside torch: "unexpected, please report"
        raise ValueError(f"{where} must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds (a week), got "
                         f"{timeout:g}; e.g. {TIMEOUT_ENV}=600")
    return float(timeout)


def init_distributed(device: str | torch.device = "auto", timeout: float | None = None) -> torch.device:
    """Join the process group described by the environment and return this process's device.

    Args:
        device: as for training (``auto``, ``cpu``, ``cuda``, ``cuda:N``). ``auto``/``cuda``
            become ``cuda:LOCAL_RANK``: one GPU per process.
        timeout: seconds a collective may wait for the other ranks before failing (default
            ``$RESNET_LAB_DIST_TIMEOUT`` or 300). Without it a crashed or hung rank would leave
            the others blocked in the next all-reduce.

    Returns:
        The device this rank trains on. With ``WORLD_SIZE`` 1 nothing is initialized.
    """
    env = dist_env()
    dev = resolve_device(device)
    if env.world_size == 1:
        return dev
    if str(device) == "auto" and dev.type == "mps":  # no collective backend for MPS: use the CPU
        dev = torch.device("cpu")
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; install a standard build to use torchrun")
    if dev.type == "cuda":
        index = env.local_rank if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {env.local_rank} needs GPU {index} but only {torch.cuda.device_count()} are visible; "
                "use --nproc-per-node <= the number of GPUs"
            )
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
        # NCCL for the model's CUDA tensors, gloo for the CPU tensors (metrics, confusion matrix).
        backend = "cpu:gloo,cuda:nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"distributed training runs on cpu or cuda, not {dev.type!r}; pass --device cpu or cuda")
    if not dist.is_initialized():
        global _timeout_in_use
        _timeout_in_use = _timeout_seconds(timeout)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=_timeout_in_use))
    return dev


# --- learning-rate scaling ------------------------------------------------------------------


def scale_lr_for_world_size(config, world_size: int) -> list[str]:
    """The linear scaling rule with gradual warmup (Goyal et al. 2017, sections 2.1-2.2).

    When the global batch grows k-fold (k processes, same per-process batch), multiply the
    learning rate by k, and ramp it up from near zero at the start, since the large rate is
    unstable while the weights still change fast. The paper warms up for 5 of 90 epochs; we use
    5 epochs capped at a quarter of the run, the same share as the one-cycle schedule's ramp
    (which already warms up by itself, so it is left alone when ``warmup_epochs`` is 0).

    Args:
        config: a :class:`~resnet_lab.train.TrainConfig`; ``lr`` and ``warmup_epochs`` are updated.
        world_size: k, the number of processes.

    Returns:
        Human-readable notes of what changed (for the log).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    notes = []
    if world_size > 1:
        old = config.lr
        config.lr = old * world_size
        notes.append(f"--scale-lr: lr {old:g} x {world_size} processes = {config.lr:g}")
        if config.warmup_epochs <= 0 and config.schedule != "onecycle":
            config.warmup_epochs = min(5.0, config.epochs / 4)
            notes.append(f"--scale-lr: linear warmup over the first {config.warmup_epochs:g} "
                         + ("epoch" if config.warmup_epochs == 1 else "epochs"))
    return notes


# --- wiring ---------------------------------------------------------------------------------


def setup_distributed(
    model: nn.Module,
    config,
    *,
    sync_bn: bool = False,
    scale_lr: bool = False,
    timeout: float | None = None,
) -> nn.Module:
    """Join the process group, place the model, optionally sync BN and scale lr, wrap in DDP.

    Call it in every process started by ``torchrun`` before :func:`resnet_lab.train.train`.

    Args:
        model: the plain model (any device; it is moved to this rank's device).
        config: the :class:`~resnet_lab.train.TrainConfig`; ``device`` is set to this rank's
            device (``cuda:LOCAL_RANK`` on GPUs), ``lr``/``warmup_epochs`` changed by ``scale_lr``.
        sync_bn: convert every BatchNorm (torch's and ours) to global-batch statistics.
        scale_lr: linear scaling rule with warmup (:func:`scale_lr_for_world_size`).
        timeout: process-group timeout in seconds (default ``$RESNET_LAB_DIST_TIMEOUT`` or 300).

    Returns:
        The model wrapped in ``DistributedDataParallel`` (or unchanged with one process).
    """
    device = init_distributed(config.device, timeout)
    world = get_world_size()
    if world == 1:
        return model
    config.device = str(device)
    if scale_lr:
        notes = scale_lr_for_world_size(config, world)
        if dist.get_rank() == 0:
            for line in notes:
                print(line, flush=True)
    model.to(device)
    # DDP registers gradient hooks on the parameters as they are: set the memory format first.
    if getattr(config, "channels_last", False):
        model.to(memory_format=torch.channels_last)
    if sync_bn:
        model = convert_sync_batchnorm(model, device)
    # Buffer sync copies rank 0's BN running statistics to every rank before each forward; with
    # sync BN they are identical on all ranks already, so skip that collective (the initial copy
    # at construction still happens). Newer torch renamed the flag.
    flag = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **{flag: not sync_bn})


# --- resume under another world size -------------------------------------------------------


def rescale_resume_position(scheduler, state: dict[str, Any], steps_per_epoch: int) -> int:
    """Map a checkpoint's position to the current number of steps per epoch.

    The step count per epoch can differ only where the checkpoint did not record what fixes it
    (``check_resume`` refuses another global batch or drop_last where they are recorded): a run
    saved before drop_last was recorded, a train_state without data facts, or a Python loader
    without ``batch_size``/``num_train``. The epoch count is kept; a mid-epoch position keeps its
    fraction of the epoch, rounded down (so a few samples are seen twice rather than skipped);
    the learning-rate schedule moves to the same step in the new step count.

    Args:
        scheduler: the ``LambdaLR`` already restored from ``state["scheduler"]``.
        state: the loaded ``train_state.pt`` with ``epoch``, ``step`` and ``steps_per_epoch``.
        steps_per_epoch: steps per epoch now.

    Returns:
        The number of steps of the current epoch to skip.
    """
    old = int(state["steps_per_epoch"])
    if old < 1 or steps_per_epoch < 1:
        raise ValueError(f"steps per epoch must be >= 1, got saved {old} and current {steps_per_epoch}")
    skip = int(state["step"]) * steps_per_epoch // old
    t = int(state["epoch"]) * steps_per_epoch + skip  # optimizer steps done, in current steps
    scheduler.last_epoch = t
    lrs = [base * fn(t) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
    return skip


# --- metrics across ranks -------------------------------------------------------------------


def _all_reduce_sum(t: Tensor) -> Tensor:
    t = t.clone()
    if get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_evaluation(ev: dict[str, Any]) -> dict[str, Any]:
    """Combine the per-rank results of :func:`resnet_lab.train.evaluate` on disjoint test shards.

    Loss is summed as ``loss * n`` (float64), the confusion matrices and sample counts are summed;
    accuracy and per-class accuracy are recomputed from the global confusion matrix.

    Args:
        ev: this rank's result (``loss``, ``n``, ``confusion``).
    """
    cm = _all_reduce_sum(ev["confusion"].to(torch.int64))
    loss_n = _all_reduce_sum(torch.tensor([ev["loss"] * ev["n"], float(ev["n"])], dtype=torch.float64))
    n = int(loss_n[1].round())
    return {**ev, "loss": float(loss_n[0]) / n, "acc": float(cm.diagonal().sum()) / n, "confusion": cm,
            "per_class_acc": per_class_accuracy(cm).tolist(), "n": n}


@torch.no_grad()
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BN running statistics) to every rank.

    Without sync BN each rank's last forward updates its running statistics with its own batch,
    so the ranks end an epoch with slightly different models; broadcasting rank 0's (the one that
    is saved) before evaluation makes every rank evaluate the checkpointed model.

    Args:
        module: the unwrapped model (same buffers, in the same order, on every rank).
        src: the rank whose buffers win.
    """
    if get_world_size() == 1:
        return
    for b in module.buffers():
        dist.broadcast(b, src)


@contextmanager
def distributed_errors() -> Iterator[None]:
    """Turn a failed collective into a :class:`DistributedError` that says what happened, and
    leave the process group on the way out (also after success)."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as e:
        if not (dist.is_available() and dist.is_initialized()) or not _looks_distributed(e):
            raise
        rank = dist.get_rank()
        raise DistributedError(
            f"rank {rank} lost contact with the other processes: one of them crashed, was killed, or did not "
            f"answer within the {_timeout_in_use or _timeout_seconds(None):g} s timeout (set {TIMEOUT_ENV} to change it). "
            f"Check the other ranks' output for the first error. Cause: {str(e).splitlines()[0][:300]}"
        ) from e
    finally:
        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # the group may be broken already; exiting is what matters
                pass


def _looks_distributed(e: BaseException) -> bool:
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return any(k in text for k in ("gloo", "nccl", "timed out", "timeout", "connection", "peer", "socket"))
