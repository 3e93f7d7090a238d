"""The parts of resnet_lab.train.distributed that run with other processes, tested in one process.

A job of two is emulated where torch's collectives are called: every SUM all-reduce of rank 0 gets
the tensor that the other rank contributes to the same call (recorded by running the other rank's
call first), every broadcast copies the source rank's tensor, as gloo does. The references are
float64 recomputations over both shards together, torch's own ``init_process_group`` arguments
as docs/DISTRIBUTED.md states them, and a real one-process gloo group for the error handling.
Nothing here launches a process: the full runs are tests/distributed/test_distributed.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from torch import nn

import resnet_lab.train.distributed as distributed
from resnet_lab.train import TrainConfig
from resnet_lab.train.distributed import (
    TIMEOUT_ENV,
    DistContext,
    DistributedError,
    distributed_errors,
    init_distributed,
    rescale_resume_position,
    scale_lr_for_world_size,
)
from support import randomize_bn

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _torchrun_env(monkeypatch, rank: int, local_rank: int, world_size: int) -> None:
    """The variables torchrun sets for this process."""
    for name, value in {"RANK": rank, "LOCAL_RANK": local_rank, "WORLD_SIZE": world_size}.items():
        monkeypatch.setenv(name, str(value))


def _as_rank0_of_two(monkeypatch, call, mine, theirs):
    """``call(mine)`` on rank 0 of a two-process job whose rank 1 runs ``call(theirs)``: each SUM
    all-reduce of rank 0 adds what rank 1 sent to the same (n-th) all-reduce."""
    sent: list[torch.Tensor] = []
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: sent.append(t.clone()))
    call(theirs)
    received = iter(sent)

    def all_reduce(t: torch.Tensor, op=None) -> None:
        assert op == dist.ReduceOp.SUM
        t.add_(next(received))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    out = call(mine)
    assert next(received, None) is None, "rank 0 made fewer all-reduces than rank 1"
    return out


def _shard_evaluation(losses: list[float], targets: list[int], preds: list[int], classes: int = 3) -> dict:
    """What ``evaluate`` returns for one shard: mean loss, count, confusion matrix (rows: true)."""
    cm = torch.zeros(classes, classes, dtype=torch.int64)
    for t, p in zip(targets, preds):
        cm[t, p] += 1
    return {"loss": sum(losses) / len(losses), "n": len(losses), "confusion": cm, "acc": None, "per_class_acc": None}


SHARDS = (([0.5, 1.25, 2.0], [0, 1, 2], [0, 2, 2]), ([0.25, 3.0, 0.75, 1.5, 0.125], [1, 1, 0, 2, 2], [1, 0, 0, 2, 1]))


def test_evaluation_of_two_shards_is_that_of_all_their_samples_in_float64(monkeypatch):
    mine, theirs = (_shard_evaluation(*s) for s in SHARDS)
    confusion_before = mine["confusion"].clone()
    out = _as_rank0_of_two(monkeypatch, DistContext(rank=0, world_size=2).evaluation, mine, theirs)
    losses, targets, preds = (a + b for a, b in zip(*SHARDS))
    right = [t == p for t, p in zip(targets, preds)]
    assert out["n"] == 8 and out["loss"] == pytest.approx(sum(losses) / 8, rel=1e-15)
    assert out["acc"] == pytest.approx(sum(right) / 8, rel=1e-15)
    per_class = [sum(r for r, t in zip(right, targets) if t == c) / targets.count(c) for c in range(3)]
    assert out["per_class_acc"] == pytest.approx(per_class, rel=1e-15)
    assert torch.equal(out["confusion"], _shard_evaluation(losses, targets, preds)["confusion"])
    assert torch.equal(mine["confusion"], confusion_before), "the caller's confusion matrix was summed into"


def test_sum_over_two_processes_is_float64_for_figures_and_exact_counts_of_their_dtype(monkeypatch):
    ctx = DistContext(rank=0, world_size=2)
    mine = (torch.tensor(0.1, dtype=torch.float32), torch.tensor(7, dtype=torch.int64))
    theirs = (torch.tensor(0.2, dtype=torch.float32), torch.tensor(2**40 + 1, dtype=torch.int64))
    loss, count = _as_rank0_of_two(monkeypatch, lambda v: ctx.sum(*v), mine, theirs)
    assert loss.dtype == torch.float64 and loss.item() == float(mine[0]) + float(theirs[0])
    assert count.dtype == torch.int64 and count.item() == 7 + 2**40 + 1


def test_share_buffers_gives_every_process_rank_0s_running_statistics(monkeypatch):
    rank0, mine = randomize_bn(nn.BatchNorm2d(4), seed=1), randomize_bn(nn.BatchNorm2d(4), seed=2)
    theirs = iter([b.clone() for b in rank0.buffers()])

    def broadcast(t: torch.Tensor, src: int) -> None:  # this process is rank 1: rank 0's tensor arrives
        assert src == 0
        t.copy_(next(theirs))

    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "broadcast", broadcast)
    DistContext(rank=1, world_size=2).share_buffers(mine)
    for (name, got), want in zip(mine.named_buffers(), rank0.buffers()):
        assert torch.equal(got, want), name
    assert next(theirs, None) is None


def test_rank_comes_from_torchruns_rank_and_rank_0_alone_is_main(monkeypatch):
    """Rank 5 of 8, the second process on its host: RANK, not LOCAL_RANK, is the job's rank."""
    _torchrun_env(monkeypatch, rank=5, local_rank=1, world_size=8)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 8)
    assert DistContext.current() == DistContext(rank=5, world_size=8)
    assert DistContext(rank=0, world_size=8).is_main and not DistContext(rank=5, world_size=8).is_main


@pytest.fixture
def joined(monkeypatch):
    """Rank 1 of 2 joining on the CPU: ``init_process_group``'s arguments, recorded instead of used."""
    calls: list[dict] = []
    _torchrun_env(monkeypatch, rank=1, local_rank=1, world_size=2)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    monkeypatch.setattr(distributed, "_timeout_in_use", None)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    return calls


def test_a_cpu_rank_joins_over_gloo_with_the_documented_300_s_or_the_variables_timeout(joined, monkeypatch):
    assert init_distributed("cpu") == torch.device("cpu")
    monkeypatch.setenv(TIMEOUT_ENV, "42.5")
    init_distributed("cpu")
    init_distributed("cpu", timeout=7)
    assert joined == [{"backend": "gloo", "timeout": timedelta(seconds=s)} for s in (300, 42.5, 7)]


def test_a_gpu_rank_takes_the_gpu_of_its_local_rank_or_the_one_named(joined, monkeypatch):
    picked: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    with pytest.raises(ValueError, match=r"^LOCAL_RANK 1 needs GPU 1 but only 1 are visible; use --nproc-per-node"):
        init_distributed("cuda")
    assert init_distributed("cuda:0") == torch.device("cuda", 0) and picked == [0]
    assert [c["backend"] for c in joined] == ["cpu:gloo,cuda:nccl"]


def test_timeouts_at_the_limits_and_outside_them_say_where_they_came_from(monkeypatch):
    """docs/DISTRIBUTED.md: 300 s by default, at most a week (604800); the message names the source."""
    from resnet_lab.train.distributed import _timeout_seconds

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert _timeout_seconds(None) == 300.0 and _timeout_seconds(604800) == 604800.0
    with pytest.raises(ValueError, match=r"^the process-group timeout must be more than 0 .* got 0;") as e:
        _timeout_seconds(0)
    assert f"{TIMEOUT_ENV}=" not in str(e.value).split(";")[0]
    monkeypatch.setenv(TIMEOUT_ENV, "604800")
    assert _timeout_seconds(None) == 604800.0
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=rf"^{TIMEOUT_ENV}='soon' is not a number of seconds"):
        _timeout_seconds(None)


def test_scale_lr_keeps_an_explicit_warmup():
    """docs/DISTRIBUTED.md: "An explicit --warmup-epochs is kept"; the rate is still scaled."""
    config = TrainConfig(epochs=90, lr=0.1, schedule="cosine", warmup_epochs=2.0)
    scale_lr_for_world_size(config, 4)
    assert config.lr == pytest.approx(0.4) and config.warmup_epochs == 2.0


def test_a_resume_to_zero_steps_per_epoch_is_refused_naming_both_counts():
    with pytest.raises(ValueError, match="steps per epoch must be >= 1, got saved 3 and current 0"):
        rescale_resume_position(None, {"epoch": 1, "step": 2, "steps_per_epoch": 3}, 0)  # refused before use


@pytest.fixture
def one_process_group():
    """A real gloo process group of one process (no launch, no port: an in-memory store)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


CAUSES = [RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500\nmore"),
          RuntimeError("wait timeout after 30000ms, keys: /default_pg/0//cuda//0"),
          dist.DistError("the store went away")]


@pytest.mark.parametrize("cause", CAUSES, ids=["closed by peer", "store timeout", "DistError"])
def test_a_lost_peer_becomes_one_clear_error_and_the_group_is_left(one_process_group, monkeypatch, cause):
    monkeypatch.setattr(distributed, "_timeout_in_use", 60.0)
    with pytest.raises(DistributedError) as e:
        with distributed_errors():
            raise cause
    text = str(e.value)
    assert text.startswith("rank 0 lost contact with the other processes") and e.value.__cause__ is cause
    assert f"within the 60 s timeout (set {TIMEOUT_ENV} to change it)" in text
    assert text.endswith(f"Cause: {str(cause).splitlines()[0]}") and not dist.is_initialized()


def test_other_errors_and_an_error_already_explained_pass_through_unchanged(one_process_group):
    for error in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), DistributedError("rank 1 timeout")):
        dist.is_initialized() or dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        with pytest.raises(RuntimeError) as e:
            with distributed_errors():
                raise error
        assert e.value is error and not dist.is_initialized()


@pytest.mark.parametrize("sync_bn", [True, False])
def test_setup_scales_places_converts_and_wraps_with_buffer_sync_only_without_sync_bn(one_process_group, monkeypatch,
                                                                                     capsys, sync_bn):
    """As rank 0 of 2 for our code; torch's group holds this process alone, so DDP builds without a peer.
    docs/DISTRIBUTED.md: lr x N printed by rank 0; rank 0's buffers are copied before each forward
    unless sync BN makes them equal on every rank already."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from resnet_lab.train.distributed import SyncBatchNorm, setup_distributed

    _torchrun_env(monkeypatch, rank=0, local_rank=0, world_size=2)
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    config = TrainConfig(device="cpu", lr=0.1, epochs=8, channels_last=True)
    ddp = setup_distributed(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), config, sync_bn=sync_bn, scale_lr=True)
    assert isinstance(ddp, DDP) and config.lr == pytest.approx(0.2) and config.device == "cpu"
    assert "--scale-lr: lr 0.1 x 2 processes = 0.2" in capsys.readouterr().out
    assert isinstance(ddp.module[1], SyncBatchNorm) == sync_bn
    assert ddp.module[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert getattr(ddp, "forward_sync_buffers", getattr(ddp, "broadcast_buffers", None)) is (not sync_bn)
