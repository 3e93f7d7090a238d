"""The one-process parts of resnet_lab.train.distributed, against torchrun's documented environment
(RANK, LOCAL_RANK, WORLD_SIZE), hand-computed evaluation figures, torch's own LambdaLR stepped to the
same position, and the linear scaling rule of Goyal et al. (nothing to scale for one process)."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.train import TrainConfig
from resnet_lab.train.distributed import (
    DistEnv,
    all_reduce_evaluation,
    dist_env,
    rescale_resume_position,
    scale_lr_for_world_size,
)


def _environ(monkeypatch, **values: str) -> None:
    """torchrun's variables set to ``values``, the others unset."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_dist_env_reads_torchruns_variables_and_is_one_process_without_them(monkeypatch):
    _environ(monkeypatch)
    assert dist_env() == DistEnv(rank=0, local_rank=0, world_size=1)
    _environ(monkeypatch, RANK="5", LOCAL_RANK="1", WORLD_SIZE="8")
    assert dist_env() == DistEnv(rank=5, local_rank=1, world_size=8)
    _environ(monkeypatch, RANK="3", WORLD_SIZE="4")  # no LOCAL_RANK: one host, where it is the rank
    assert dist_env() == DistEnv(rank=3, local_rank=3, world_size=4)


@pytest.mark.parametrize("values", [
    {"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "-1", "WORLD_SIZE": "2"}, {"RANK": "0", "WORLD_SIZE": "0"},
    {"RANK": "1", "LOCAL_RANK": "-1", "WORLD_SIZE": "2"},
], ids=["rank = world", "rank < 0", "world 0", "local rank < 0"])
def test_dist_env_refuses_an_inconsistent_environment_in_one_line(monkeypatch, values):
    _environ(monkeypatch, **values)
    with pytest.raises(ValueError, match=r"inconsistent distributed environment: .*expected 0 <= RANK < WORLD_SIZE") as e:
        dist_env()
    assert "\n" not in str(e.value) and all(f"{k}={v}" in str(e.value) for k, v in values.items())
    _environ(monkeypatch, RANK="two", WORLD_SIZE="4")
    with pytest.raises(ValueError, match="RANK/LOCAL_RANK/WORLD_SIZE must be integers"):
        dist_env()


def test_one_process_evaluation_is_recomputed_from_its_confusion_matrix():
    cm = torch.tensor([[3, 1, 0], [0, 4, 0], [1, 0, 1]])  # rows: true class; 8 of 10 right
    out = all_reduce_evaluation({"loss": 0.5, "n": 10, "acc": None, "confusion": cm, "per_class_acc": None})
    assert out["n"] == 10 and out["loss"] == pytest.approx(0.5, rel=1e-15) and out["acc"] == pytest.approx(0.8)
    assert out["per_class_acc"] == pytest.approx([3 / 4, 4 / 4, 1 / 2]) and torch.equal(out["confusion"], cm)


def test_one_process_has_no_lr_to_scale_and_no_warmup_to_add():
    config = TrainConfig(epochs=8, lr=0.1, schedule="cosine")
    assert scale_lr_for_world_size(config, 1) == [] and config.lr == 0.1 and config.warmup_epochs == 0
    with pytest.raises(ValueError, match="world_size must be >= 1, got 0"):
        scale_lr_for_world_size(config, 0)


def _scheduler() -> torch.optim.lr_scheduler.LambdaLR:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / 100)


@pytest.mark.parametrize("saved, now, skip", [((2, 2, 3), 4, 2), ((1, 1, 3), 2, 0), ((3, 3, 4), 2, 1)])
def test_a_resume_position_moves_to_its_share_of_the_new_epoch_where_torchs_scheduler_would_be(saved, now, skip):
    """Step s of S done in epoch e: floor(s * now / S) of the new epoch's steps, and the schedule at
    e * now + that, as a LambdaLR stepped that many times from scratch."""
    epoch, step, old = saved
    moved = _scheduler()
    assert rescale_resume_position(moved, {"epoch": epoch, "step": step, "steps_per_epoch": old}, now) == skip
    reference = _scheduler()
    for _ in range(epoch * now + skip):
        reference.optimizer.step()
        reference.step()
    assert moved.last_epoch == reference.last_epoch
    assert moved.get_last_lr() == pytest.approx(reference.get_last_lr(), rel=1e-15)
    assert moved.optimizer.param_groups[0]["lr"] == pytest.approx(reference.optimizer.param_groups[0]["lr"], rel=1e-15)
    with pytest.raises(ValueError, match="steps per epoch must be >= 1, got saved 0 and current 4"):
        rescale_resume_position(_scheduler(), {"epoch": 1, "step": 0, "steps_per_epoch": 0}, 4)


def test_one_process_joins_no_group_and_keeps_its_model(monkeypatch):
    """docs: with WORLD_SIZE 1 nothing is initialized and the model comes back unwrapped."""
    from resnet_lab.train.distributed import init_distributed, setup_distributed

    _environ(monkeypatch)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed("cpu") == torch.device("cpu") and not torch.distributed.is_initialized()
    model, config = torch.nn.Linear(2, 2), TrainConfig(device="cpu", lr=0.1)
    assert setup_distributed(model, config, sync_bn=True, scale_lr=True) is model
    assert config.lr == 0.1 and config.device == "cpu" and not torch.distributed.is_initialized()
