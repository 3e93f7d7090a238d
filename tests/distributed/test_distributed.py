"""Data-parallel training with 2 processes over loopback (gloo), against one process as the reference.

The reference is the same CLI run in a single process with the global batch (2 x the per-rank
batch): plain SGD without momentum or weight decay, constant lr, no augmentation, no dropout, so
the only difference between the runs is how the batch is split. The in-memory loader gives the
two ranks the two halves of each global batch (same global order as one process).

The learning rate is small on purpose: this tiny BN network on random data is chaotic at larger
rates (at lr 0.05, perturbing the weights by 1e-7 changes them by 2e-4 six steps later), which
would turn float rounding into differences larger than any tolerance that still detects a bug.
Unsynchronized statistics still move the weights by 4e-4 after these 6 steps, against 1e-5.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import resnet_lab.nn as rl_nn
from resnet_lab.cli import main as cli_main
from resnet_lab.train.distributed import SyncBatchNorm, convert_sync_batchnorm, scale_lr_for_world_size
from resnet_lab.transfer import freeze

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)

VENV_BIN = Path(sys.executable).parent
PER_RANK_BATCH = 4
# 48 samples / global batch 8 = 6 optimizer steps in one epoch.
TRAIN = ["train", "--model", "resnet8", "--dataset", "fake", "--subset", "48", "--epochs", "1",
         "--optimizer", "sgd", "--momentum", "0", "--weight-decay", "0", "--schedule", "constant",
         "--lr", "0.002", "--no-augment", "--no-progress", "--no-plots", "--device", "cpu", "--norm", "scratch",
         "--seed", "3"]


def _free_port() -> int:
    """A port for the rendezvous server, below the kernel's ephemeral range.

    A port the OS hands out for bind(0) is an ephemeral one, and between closing it here and the
    launched rank binding it, gloo's own connections (of this job or a concurrent test) can take
    it (EADDRINUSE, seen in CI). Ports below the ephemeral range are never handed out implicitly,
    so only another explicit bind can race for one: pick at random among those and check it.
    """
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randint(max(1024, low - 12000), low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", PYTHONWARNINGS="ignore", **extra)
    return env


def _launch_ranks(args: list[str], log_dir: Path, world_size: int = 2, *, order: tuple[int, ...] | None = None,
                  rank_env: dict[int, dict[str, str]] | None = None, **env: str) -> list[subprocess.Popen]:
    """Start the ranks as torchrun would (same environment variables), without its agent, so a
    test sees how a rank ends by itself; ``order`` says which rank starts first, ``rank_env``
    adds variables to one rank. Returns the processes by rank."""
    port = str(_free_port())
    procs: dict[int, subprocess.Popen] = {}
    for rank in order or range(world_size):
        e = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                 LOCAL_WORLD_SIZE=str(world_size), MASTER_PORT=port, **env, **(rank_env or {}).get(rank, {}))
        log = open(log_dir / f"rank{rank}.log", "w")
        procs[rank] = subprocess.Popen([sys.executable, "-m", "resnet_lab", *args], env=e, stdout=log,
                                       stderr=subprocess.STDOUT)
    return [procs[r] for r in range(world_size)]


def _wait_all(procs: list[subprocess.Popen], log_dir: Path, timeout: float = 120) -> None:
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = "\n".join((log_dir / f"rank{r}.log").read_text()[-3000:] for r in range(len(procs)))
    assert all(p.returncode == 0 for p in procs), logs


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _epochs(n: int) -> list[str]:
    args = list(TRAIN)
    args[args.index("--epochs") + 1] = str(n)
    return args


@pytest.fixture(scope="module")
def single_process_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The reference: one process, batch = the global batch of the 2-process runs; a 2-epoch run
    stopped after epoch 1, and the same run resumed for epoch 2."""
    base = tmp_path_factory.mktemp("single")
    out = base / "run"
    assert cli_main([*_epochs(2), "--stop-after", "1", "--batch-size", str(2 * PER_RANK_BATCH), "--out", str(out)]) == 0
    shutil.copytree(out, base / "epoch1")
    assert cli_main([*_epochs(2), "--batch-size", str(2 * PER_RANK_BATCH), "--out", str(out), "--resume"]) == 0
    return base / "epoch1", out


@pytest.fixture(scope="module")
def single_process_run(single_process_runs) -> Path:
    return single_process_runs[0]


def _assert_same_weights(got: dict, ref: dict, steps: int) -> None:
    assert got.keys() == ref.keys()  # saved unwrapped: no "module." prefix, same BN keys
    for k in ref:
        if k.endswith("num_batches_tracked"):
            assert int(got[k]) == int(ref[k]) == steps, k
        else:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)


def test_torchrun_with_sync_bn_matches_one_process_on_the_global_batch_and_resumes_in_one_process(
    single_process_runs, tmp_path
):
    single_process_run, single_resumed = single_process_runs
    out = tmp_path / "ddp"
    cmd = [str(VENV_BIN / "torchrun"), "--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "resnet_lab",
           *_epochs(2), "--stop-after", "1", "--batch-size", str(PER_RANK_BATCH), "--sync-bn", "--out", str(out)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    ref, got = load_file(single_process_run / "model.safetensors"), load_file(out / "model.safetensors")
    _assert_same_weights(got, ref, steps=6)  # 6 global steps
    # Rank 0 reports global figures: the same train loss/accuracy and test metrics as one process.
    for a, b in zip(_metrics(out), _metrics(single_process_run), strict=True):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    # Only rank 0 printed the per-epoch lines.
    assert r.stdout.count("epoch   1/2") + r.stderr.count("epoch   1/2") == 1
    # model.json says how the batches were made: 2 processes, synchronized BN, the global batch
    training = json.loads((out / "model.json").read_text())["training"]
    assert (training["world_size"], training["sync_bn"], training["global_batch_size"]) == (2, True, 2 * PER_RANK_BATCH)
    single = json.loads((single_process_run / "model.json").read_text())["training"]
    assert (single["world_size"], single["sync_bn"], single["global_batch_size"]) == (1, False, 2 * PER_RANK_BATCH)

    # The 2-process checkpoint resumes in one process (same global batch) exactly like the
    # single-process run resumed for its second epoch.
    assert cli_main([*_epochs(2), "--batch-size", str(2 * PER_RANK_BATCH), "--out", str(out), "--resume"]) == 0
    _assert_same_weights(load_file(out / "model.safetensors"), load_file(single_resumed / "model.safetensors"), 12)
    assert json.loads((out / "model.json").read_text())["training"]["world_size"] == 1  # the last start's
    assert _metrics(out)[-1]["test_acc"] == pytest.approx(_metrics(single_resumed)[-1]["test_acc"], abs=1e-6)


def test_without_sync_bn_running_statistics_differ_from_one_process(single_process_run, tmp_path):
    out = tmp_path / "ddp"
    procs = _launch_ranks([*_epochs(2), "--stop-after", "1", "--batch-size", str(PER_RANK_BATCH), "--out", str(out)],
                          tmp_path)
    _wait_all(procs, tmp_path)
    ref, got = load_file(single_process_run / "model.safetensors"), load_file(out / "model.safetensors")
    # Each rank normalizes with the statistics of its own 4 samples, not of the global 8, so the
    # forward pass, the gradients and the running statistics all differ from the reference.
    stats = ("running_mean", "running_var")
    diffs = [(got[k] - ref[k]).abs().max().item() for k in ref if k.endswith(stats)]
    assert max(diffs) > 1e-3, diffs
    # ... and the weights move well outside the 1e-5 tolerance of the sync-bn test, so that test
    # would catch unsynchronized statistics.
    weights = [(got[k] - ref[k]).abs().max().item() for k in ref if not k.endswith((*stats, "num_batches_tracked"))]
    assert max(weights) > 1e-4, weights


def test_a_killed_or_hung_rank_ends_the_other_with_a_clear_error(tmp_path):
    # Two 2-process jobs side by side: in one, rank 1 is killed (its sockets close, rank 0 fails at
    # its next collective); in the other, rank 1 is stopped (SIGSTOP: nothing closes, only the
    # process-group timeout can end rank 0's wait). Rank 1 starts first, with the default timeout,
    # and waits at the rendezvous for rank 0; rank 0's short timeout then covers only collectives
    # between two running processes, never the other's start-up, however busy the machine is.
    args = [*TRAIN, "--batch-size", "2"]  # no --out
    for flag, value in (("--subset", "64"), ("--epochs", "1000"), ("--norm", "batch")):  # a flag is given once
        args[args.index(flag) + 1] = value
    jobs = {}
    for how in ("killed", "hung"):
        (tmp_path / how).mkdir()
        jobs[how] = _launch_ranks(args, tmp_path / how, order=(1, 0), rank_env={0: {"RESNET_LAB_DIST_TIMEOUT": "5"}},
                                  PYTHONUNBUFFERED="1")
    logs = {how: tmp_path / how / "rank0.log" for how in jobs}
    rc = {}
    try:
        for how, procs in jobs.items():
            # Rank 0 prints its "training ..." line after the process group and DDP's first
            # broadcast, so both ranks are past start-up. (Polling is a hang guard, not a timing.)
            for _ in range(1500):
                if "training resnet8" in logs[how].read_text() or procs[0].poll() is not None:
                    break
                time.sleep(0.1)
            assert procs[0].poll() is None and "training resnet8" in logs[how].read_text(), logs[how].read_text()[-3000:]
        jobs["killed"][1].send_signal(signal.SIGKILL)
        jobs["hung"][1].send_signal(signal.SIGSTOP)
        for how, procs in jobs.items():
            rc[how] = procs[0].wait(timeout=300)  # a generous guard against a hang, not a time limit
    finally:
        for procs in jobs.values():
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for how in jobs:
        log = logs[how].read_text()
        assert rc[how] == 2, log[-3000:]
        assert "lost contact with the other processes" in log and "RESNET_LAB_DIST_TIMEOUT" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


# --- single-process unit checks -------------------------------------------------------------


class _MixedNorms(nn.Module):
    """torch's BN and ours side by side, 1d and 2d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn_torch = nn.BatchNorm2d(4)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 1), rl_nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 6)
        self.bn1d_ours = rl_nn.BatchNorm1d(6, momentum=None)
        self.bn1d_torch = nn.BatchNorm1d(6, affine=False)

    def forward(self, x):
        x = self.block(self.bn_torch(self.conv(x))).mean((2, 3))
        return self.bn1d_torch(self.bn1d_ours(self.fc(x)))


@pytest.mark.parametrize("device, cls", [("cpu", SyncBatchNorm), ("cuda", nn.SyncBatchNorm)])
def test_convert_sync_batchnorm_converts_torch_and_our_bn_and_keeps_state_dict_keys(device, cls):
    torch.manual_seed(0)
    model = _MixedNorms()
    with torch.no_grad():  # non-default state so that sharing, not re-initializing, is visible
        for name, b in model.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 1.5)
            elif name.endswith("num_batches_tracked"):  # a counter reset to 0 restarts momentum=None's average
                b.fill_(7)
        for p in model.parameters():
            p.add_(0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objects = {k: id(v) for k, v in itertools.chain(model.named_parameters(), model.named_buffers())}
    convert_sync_batchnorm(model, device)  # conversion itself needs no GPU: it only builds layers
    # shared, not copied (the module's docstring): an optimizer built before converting still steps them
    assert {k: id(v) for k, v in itertools.chain(model.named_parameters(), model.named_buffers())} == objects
    kinds = [type(model.bn_torch), type(model.block[1]), type(model.bn1d_ours), type(model.bn1d_torch)]
    assert kinds == [cls] * 4
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    plain = _MixedNorms()
    plain.load_state_dict(after, strict=True)  # a sync-BN checkpoint loads into the plain model


def test_convert_sync_batchnorm_keeps_a_frozen_layer_locked_in_eval():
    model = _MixedNorms()
    # Freeze bn_torch as transfer learning does (the library's freeze() locks a frozen BN in eval).
    report = freeze(model, [n for n, _ in model.named_parameters() if not n.startswith("bn_torch.")])
    assert report.eval_norms == ["bn_torch"]
    convert_sync_batchnorm(model, "cpu")
    model.train()
    assert isinstance(model.bn_torch, SyncBatchNorm) and isinstance(model.block[1], SyncBatchNorm)
    assert not model.bn_torch.training and model.block[1].training


def test_convert_sync_batchnorm_keeps_each_layers_mode_as_torchs_converter_does():
    model = _MixedNorms()
    model.bn_torch.eval(), model.block[1].eval()  # modes mixed, as after a partial .eval()
    ref = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))  # torch's: its own BNs only
    convert_sync_batchnorm(model, "cpu")
    assert [m.training for m in model.modules()] == [m.training for m in ref.modules()]
    assert not model.bn_torch.training and not model.block[1].training and model.bn1d_ours.training


def test_sync_batchnorm_without_process_group_is_torch_batchnorm_in_train_and_eval():
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(5)
    ours = convert_sync_batchnorm(nn.BatchNorm2d(5), "cpu")
    ours.load_state_dict(ref.state_dict())
    for train in (True, True, False):
        ref.train(train)
        ours.train(train)
        x = torch.randn(6, 5, 3, 3) * 3 + 1
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        torch.testing.assert_close(ours(x2), ref(x1))
        if train:
            ours(x2).square().sum().backward()
            ref(x1).square().sum().backward()
            torch.testing.assert_close(x2.grad, x1.grad)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v)


def test_scale_lr_is_the_linear_scaling_rule_with_warmup_of_goyal_et_al():
    from resnet_lab.train import TrainConfig

    cfg = TrainConfig(epochs=90, lr=0.1, schedule="step")
    scale_lr_for_world_size(cfg, 8)
    # Goyal et al. 2017: k = 8 workers -> lr 0.1 * 8, with 5 epochs of gradual warmup in 90.
    assert cfg.lr == pytest.approx(0.8) and cfg.warmup_epochs == 5
    short = TrainConfig(epochs=8, lr=0.1, schedule="cosine")
    scale_lr_for_world_size(short, 2)
    assert short.lr == pytest.approx(0.2) and short.warmup_epochs == 2  # capped at a quarter of the run
    onecycle = TrainConfig(epochs=8, lr=0.1, schedule="onecycle")
    scale_lr_for_world_size(onecycle, 2)
    assert onecycle.warmup_epochs == 0  # one-cycle already ramps up over its first quarter
    four = TrainConfig(epochs=4, lr=0.1, schedule="cosine")
    notes = scale_lr_for_world_size(four, 2)  # a quarter of 4 epochs: one, said in the singular
    assert four.warmup_epochs == 1 and notes[-1] == "--scale-lr: linear warmup over the first 1 epoch"


def _empty_batch_rank(rank: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {}
        for case, sizes in (("all_empty", (0, 0)), ("one_empty", (0, 4))):
            torch.manual_seed(1)
            xs = [torch.randn(n, 3, 2, 2) * 2 + 1 for n in sizes]  # the same on both ranks
            sync = SyncBatchNorm(3).train()
            x = xs[rank].clone().requires_grad_()
            y = sync(x)
            y.square().sum().backward()
            results[case] = {"shape": list(y.shape), "mean": sync.running_mean.tolist(),
                             "var": sync.running_var.tolist(), "tracked": int(sync.num_batches_tracked),
                             "wgrad": sync.weight.grad.tolist()}
        torch.save(results, Path(out) / f"rank{rank}.pt")
        # both ranks past their last collective before either closes its connections: once, at a load
        # of 5, rank 1 aborted in gloo (SIGABRT, "terminate called without an active exception")
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_sync_batchnorm_on_empty_batches_does_what_one_process_does(tmp_path):
    # One process, torch's BN: an empty batch gives an empty output and leaves the running
    # statistics alone; a batch empty on one rank only is the other rank's batch.
    torch.multiprocessing.start_processes(_empty_batch_rank, args=(_free_port(), str(tmp_path)), nprocs=2,
                                          start_method="spawn")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        ref = nn.BatchNorm2d(3).train()
        out = ref(torch.randn(0, 3, 2, 2))
        assert got["all_empty"]["shape"] == [0, 3, 2, 2] == list(out.shape)
        assert got["all_empty"]["mean"] == ref.running_mean.tolist()
        assert got["all_empty"]["var"] == ref.running_var.tolist()
        assert got["all_empty"]["tracked"] == int(ref.num_batches_tracked) == 1
        assert got["all_empty"]["wgrad"] == [0.0, 0.0, 0.0]
        ref = nn.BatchNorm2d(3).train()
        torch.manual_seed(1)
        _, x1 = torch.randn(0, 3, 2, 2) * 2 + 1, torch.randn(4, 3, 2, 2) * 2 + 1
        ref(x1)
        assert got["one_empty"]["shape"] == ([0, 3, 2, 2] if rank == 0 else [4, 3, 2, 2])
        torch.testing.assert_close(torch.tensor(got["one_empty"]["mean"]), ref.running_mean)
        torch.testing.assert_close(torch.tensor(got["one_empty"]["var"]), ref.running_var)


@pytest.mark.parametrize("raw, shown", [("inf", "inf"), ("1e300", "1e+300"), ("0", "0"), ("-5", "-5")])
def test_a_timeout_outside_0_to_a_week_is_refused_naming_the_variable(monkeypatch, raw, shown):
    """inf passed the `> 0` check and overflowed inside torch ("unexpected: please report it")."""
    from resnet_lab.train.distributed import MAX_TIMEOUT_S, TIMEOUT_ENV, _timeout_seconds

    monkeypatch.setenv(TIMEOUT_ENV, raw)
    with pytest.raises(ValueError, match=rf"{TIMEOUT_ENV}={raw} must be more than 0 and at most 604800 seconds "
                                         rf"\(a week\), got {re.escape(shown)}"):
        _timeout_seconds(None)
    monkeypatch.setenv(TIMEOUT_ENV, "600")
    assert _timeout_seconds(None) == 600.0 and MAX_TIMEOUT_S == 604800
