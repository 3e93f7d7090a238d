"""QA 2026-12-06: a resume refused for another global batch named --batch-size as the run's global
batch over the run's own process count, so a 1 x 128 run resumed by 2 processes was told
"--batch-size 128", the value that had just been refused. The hint shares the run's global batch
among the processes resuming it (DISTRIBUTED.md: a 2 x 64 run resumes as 1 x 128 or 4 x 32)."""

from __future__ import annotations

import pytest

from resnet_lab.runs import load_train_state
from resnet_lab.train import TrainConfig, train
from resnet_lab.train.checkpoint import check_resume
from tinytrain import TinyNet, make_bundle


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hint") / "run"
    train(TinyNet(), make_bundle(batch_size=16), TrainConfig(epochs=1, lr=0.1, out=str(out), progress=False,
                                                             plots=False))
    return out


def _hint(run, saved_world: int, global_now: int, world_now: int) -> str:
    state = load_train_state(run)
    state["world_size"] = saved_world  # how many processes shared the run's global batch of 16
    assert state["data"]["global_batch_size"] == 16
    now = {"recipe": dict(state["recipe"]), "data": {**state["data"], "global_batch_size": global_now}}
    with pytest.raises(ValueError) as e:
        check_resume(run, state, now, world_now)
    return str(e.value)


@pytest.mark.parametrize("saved_world, global_now, world_now, flag", [
    (1, 32, 2, "--batch-size 8 (per process, 2 processes)"),  # 1 x 16 resumed by 2 processes: 2 x 8
    (2, 8, 1, "--batch-size 16)"),                               # 2 x 8 resumed by one: 1 x 16
    (2, 64, 4, "--batch-size 4 (per process, 4 processes)"),
])
def test_the_hint_shares_the_runs_global_batch_among_the_processes_resuming_it(run, saved_world, global_now,
                                                                                 world_now, flag):
    text = _hint(run, saved_world, global_now, world_now)
    per_process = int(flag.split()[1].rstrip(")"))
    assert per_process * world_now == 16  # the reference: the run's global batch
    assert f"global_batch_size: run has 16, now {global_now}" in text and flag in text


def test_a_process_count_that_does_not_divide_the_batch_says_so(run):
    text = _hint(run, 1, 15, 3)
    assert "a process count that divides its global batch of 16 (not 3)" in text and "--batch-size 5" not in text
