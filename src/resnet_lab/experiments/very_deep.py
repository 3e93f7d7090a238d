"""Very deep networks: ResNets still train past 1000 layers, the plain net of the same depth does
not (He et al. 2015, sec. 4.2 "Exploring over 1000 layers": ResNet-1202 reaches 0.1% training
error; He et al. 2016, "Identity Mappings": pre-activation ResNet-1001).

ResNet-1202 and the plain-1202 (same layers, no shortcuts), plus pre-activation ResNet-1001, each
trained for the same first steps: the training loss per step and the gradient norm of the first
layer. Then the memory of one training step with and without gradient checkpointing (the models'
``checkpoint_segments``, the trainer's ``--checkpoint-segments``), each measured in a fresh process.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models import create_model
from ..models.resnet import CifarResNet
from .report import Check, Report, plot_lines
from .runner import Context, RunResult, RunSpec, cifar_net

__all__ = ["CLAIM", "NAME", "claim_checks", "memory_probe", "run"]

NAME = "very_deep"
CLAIM = ("ResNets train past 1000 layers (ResNet-1202, pre-act ResNet-1001) where the plain net of the same "
         "depth does not (He et al. 2015 sec. 4.2; He et al. 2016); gradient checkpointing cuts their memory.")

# "trains": the mean training loss of the last steps is this far below chance level, ln(classes).
BELOW_CHANCE = 0.2

BUDGET = {
    "smoke": dict(depth=20, widths=(4, 8, 16), steps=4, window=2, batch=8, image_size=14, test=64, subset=256,
                  preact=None, segments=4, probe_batch=8),
    "full": dict(depth=1202, widths=(16, 32, 64), steps=100, window=10, batch=16, image_size=14, test=256, subset=2000,
                 preact="preact_resnet1001", segments=24, probe_batch=16),
}
# One protocol for every net: one-cycle (its first quarter is a linear warm-up, as He et al. warm up
# their 110- and 1202-layer nets) and the global gradient norm clipped to 1, so that no net can be
# knocked out by a single exploding first step (the plain-1202's first-step gradient is huge) and
# the question is only whether it learns.
LR, GRAD_CLIP = 0.05, 1.0


def _rss_kib() -> int:
    """Current resident set size of this process in KiB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    """Reset this process's resident-memory high-water mark (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kib() -> int:
    """High-water mark of resident memory in KiB (VmHWM, which ``clear_refs`` resets)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_probe(args: dict[str, Any]) -> dict[str, float]:
    """One training step (forward + backward) of a deep CIFAR net in *this* process; returns the
    rise of the process's peak resident memory over its resident memory just before the step.

    Meant to run in a fresh process (see :func:`run`), so the peak belongs to this step alone.
    The kernel's high-water mark of resident memory (VmHWM / ``ru_maxrss``) counts what the step
    really touched (activations saved for backward, gradients, allocator slack), on any CPU build;
    torch has no CPU counterpart of ``torch.cuda.max_memory_allocated``.

    Args:
        args: ``depth``, ``residual``, ``widths``, ``segments`` (0: no checkpointing), ``batch``,
            ``image_size``, ``model`` (optional zoo name instead of depth/residual).
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.get("model"):
        model = create_model(args["model"], num_classes=10, in_channels=1, checkpoint_segments=args["segments"])
    else:
        model = CifarResNet(args["depth"], num_classes=10, in_channels=1, shortcut="A" if args["residual"] else "none",
                            widths=tuple(args["widths"]), checkpoint_segments=args["segments"])
    model.train()
    x = torch.randn(args["batch"], 1, args["image_size"], args["image_size"])
    y = torch.randint(0, 10, (args["batch"],))
    # A first step of the same shape pays the one-off costs (kernel libraries, autograd and
    # allocator set-up: ~200 MiB even for a tiny net) that belong to no model; then the kernel's
    # high-water mark is reset (Linux: /proc/self/clear_refs "5") and the second step is measured.
    F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    reset = _reset_peak()
    before = _rss_kib()
    t0 = time.perf_counter()
    F.cross_entropy(model(x), y).backward()
    seconds = time.perf_counter() - t0
    peak = _peak_kib()
    params_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return {"step_peak_mib": max(peak - before, 0) / 1024, "rss_before_mib": before / 1024,
            "seconds": seconds, "params_mib": params_mib, "peak_reset": reset}


def _probe_in_subprocess(args: dict[str, Any]) -> dict[str, float]:
    code = ("import json, sys; from resnet_lab.experiments.very_deep import memory_probe; "
            "print(json.dumps(memory_probe(json.loads(sys.argv[1]))))")
    # Large blocks straight from mmap, so freed memory leaves the process at once and the resident
    # high-water mark follows the live tensors (glibc would otherwise keep and reuse freed heap).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env,
                          timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {args} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _trend(step_losses: Sequence[float], k: int) -> tuple[float, float]:
    """Mean training loss of the first and of the last ``k`` steps (NaN when fewer than 2k)."""
    losses = [v for v in step_losses if v == v]  # NaN (divergence) dropped
    if len(losses) < 2 * k:
        return float("nan"), float("nan")
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def claim_checks(step_losses: Mapping[str, Sequence[float]], diverged: Mapping[str, bool], labels: Sequence[str], *,
                 steps: int, window: int, num_classes: int) -> list[Check]:
    """The claim's checks from the per-step training losses: the residual net trains, the plain
    net does not, and a third (residual) net, when run, trains too.

    Args:
        step_losses: ``{run label: training loss after each step}``.
        diverged: ``{run label: whether the run diverged}``.
        labels: the residual net's label, the plain net's, and optionally a third net's.
        steps: steps run (for the questions).
        window: a net trains when the mean loss of its last ``window`` steps is more than
            ``BELOW_CHANCE`` below chance level, ln(``num_classes``), and it did not diverge.
        num_classes: classes of the task.
    """
    k, chance = window, math.log(num_classes)

    def trains(label: str) -> bool:
        first, last = _trend(step_losses[label], k)
        return not diverged.get(label, False) and last == last and last < chance - BELOW_CHANCE

    checks = []
    for label, want in ((labels[0], True), (labels[1], False)):
        first, last = _trend(step_losses[label], k)
        verb = "trains" if want else "does not train"
        checks.append(Check(f"{label} {verb} in its first {steps} steps", trains(label) == want,
                            f"mean training loss of the first {k} steps {first:.3f}, of the last {k} {last:.3f} "
                            f"(trains: last below chance ln({num_classes}) = {chance:.3f} by > {BELOW_CHANCE})"
                            + ("; diverged" if diverged.get(label, False) else "")))
    if len(labels) > 2:
        first, last = _trend(step_losses[labels[2]], k)
        checks.append(Check(f"{labels[2]} trains in its first {steps} steps", trains(labels[2]),
                            f"mean training loss of the first {k} steps {first:.3f}, of the last {k} {last:.3f} "
                            f"(chance {chance:.3f})"))
    return checks


def run(ctx: Context) -> Report:
    """Train residual and plain nets of ~1000 layers for their first steps; probe checkpointing memory."""
    b = BUDGET[ctx.budget]
    k = b["window"]
    data = dict(subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    specs = _specs(b, data, ctx.seed)
    results, grads = {}, {}
    for spec in specs:
        results[spec.label], grads[spec.label] = _train_recording_conv1_grad(ctx, spec)
    num_classes = len(ctx.data(batch_size=b["batch"], **data).info.classes)
    checks = claim_checks({label: r.step_losses for label, r in results.items()},
                          {label: r.diverged for label, r in results.items()}, [s.label for s in specs],
                          steps=b["steps"], window=k, num_classes=num_classes)
    memory = _memory(ctx, b)
    _plot(ctx, b, results, grads, plain_label=specs[1].label)
    return Report(
        claim=CLAIM,
        setup=_setup(b, ctx.seed),
        columns=["run", "params", f"loss first {k} steps", f"loss last {k} steps", "conv1 grad step 1",
                 "conv1 grad last step", "test acc %", "diverged", "seconds"],
        rows=_rows(results, grads, k), checks=checks, findings=[_memory_finding(b, memory)],
        plots=["loss_steps.png", "first_layer_grad.png"],
        data={"runs": {k_: r.to_dict() for k_, r in results.items()}, "first_layer_grad": grads,
              "memory": {str(s): v for s, v in memory.items()}},
        notes=[f"Only the first {b['steps']} steps are run (CPU budget); He et al. train 64k iterations.",
               "There is no plain twin of the bottleneck pre-activation ResNet-1001; plain-1202 is the plain "
               "counterpart for both."] if not ctx.smoke else [],
    )


def _specs(b: Mapping[str, Any], data: dict[str, Any], seed: int) -> list[RunSpec]:
    """The residual net, its plain twin and (full budget) the pre-activation ResNet-1001, all
    trained alike: the same first steps, learning rate and clipping, data and seed."""
    depth = b["depth"]
    specs = [
        RunSpec(f"resnet-{depth}", cifar_net(depth, residual=True, widths=b["widths"])),
        RunSpec(f"plain-{depth}", cifar_net(depth, residual=False, widths=b["widths"])),
    ]
    if b["preact"]:
        specs.append(RunSpec(b["preact"].replace("_resnet", "-resnet-").replace("-resnet-", "-resnet"),
                             lambda nc, ic: create_model(b["preact"], num_classes=nc, in_channels=ic)))
    for spec in specs:
        spec.batch_size, spec.epochs, spec.lr, spec.grad_clip = b["batch"], 1, LR, GRAD_CLIP
        spec.max_steps_per_epoch, spec.data, spec.seed = b["steps"], data, seed
    return specs


def _train_recording_conv1_grad(ctx: Context, spec: RunSpec) -> tuple[RunResult, list[float]]:
    """Train ``spec`` and record the norm of the first conv layer's weight gradient at each step;
    the trained model is dropped (a 1202-layer net is large)."""
    record: list[float] = []
    factory = spec.model

    def build(nc: int, ic: int) -> nn.Module:
        m = factory(nc, ic)
        # A hook on the weight sees its gradient as backward computes it, before the trainer
        # clips it (a callback after the step would read the clipped value). inf/NaN included.
        m.conv1.weight.register_hook(lambda g: record.append(float(g.detach().norm())))
        return m

    spec.model = build
    result = ctx.train(spec)
    result.model = None
    return result, record


def _memory(ctx: Context, b: Mapping[str, Any]) -> dict[int, dict[str, float]]:
    """Memory of one training step of the residual net, without and with checkpointing, each
    measured in a fresh process; ``{checkpoint_segments: probe result}``."""
    depth, memory = b["depth"], {}
    probe = dict(depth=depth, residual=True, widths=list(b["widths"]), batch=b["probe_batch"],
                 image_size=b["image_size"])
    for segments in (0, b["segments"]):
        memory[segments] = _probe_in_subprocess({**probe, "segments": segments})
        ctx.log(f"[{NAME}] memory probe resnet-{depth}, checkpoint_segments={segments}: "
                f"step peak {memory[segments]['step_peak_mib']:.0f} MiB, {memory[segments]['seconds']:.1f} s")
    return memory


def _memory_finding(b: Mapping[str, Any], memory: Mapping[int, Mapping[str, float]]) -> str:
    m0, m1 = memory[0], memory[b["segments"]]
    saving = 1 - m1["step_peak_mib"] / m0["step_peak_mib"] if m0["step_peak_mib"] > 0 else float("nan")
    return (f"gradient checkpointing ({b['segments']} segments), one training step of resnet-{b['depth']} at batch "
            f"{b['probe_batch']}: peak memory rise {m0['step_peak_mib']:.0f} MiB -> {m1['step_peak_mib']:.0f} MiB "
            f"({100 * saving:.0f}% less), step time {m0['seconds']:.2f} s -> {m1['seconds']:.2f} s "
            f"(the recomputation); parameters {m0['params_mib']:.0f} MiB")


def _rows(results: Mapping[str, RunResult], grads: Mapping[str, list[float]], k: int) -> list[list[Any]]:
    rows = []
    for label, r in results.items():
        first, last = _trend(r.step_losses, k)
        g = grads[label]
        rows.append([label, r.params, first, last, g[0] if g else None, g[-1] if g else None,
                     100 * r.last.get("test_acc", 0.0) if r.last else None, r.diverged, r.seconds])
    return rows


def _plot(ctx: Context, b: Mapping[str, Any], results: Mapping[str, RunResult], grads: Mapping[str, list[float]],
          *, plain_label: str) -> None:
    styles = {plain_label: "--"}
    plot_lines({label: (list(range(1, len(r.step_losses) + 1)), r.step_losses) for label, r in results.items()},
               ctx.out / "loss_steps.png", title=f"Training loss over the first {b['steps']} steps", xlabel="step",
               ylabel="cross-entropy", styles=styles)
    plot_lines({label: (list(range(1, len(v) + 1)), v) for label, v in grads.items()}, ctx.out / "first_layer_grad.png",
               title="First-layer (conv1) gradient norm", xlabel="step", ylabel="||dL/dW_conv1||", logy=True,
               styles=styles)


def _setup(b: Mapping[str, Any], seed: int) -> dict[str, str]:
    depth = b["depth"]
    return {
        "data": f"Fashion-MNIST resized to {b['image_size']} px (CPU budget), {b['subset']} training images, "
                f"first {b['test']} test images",
        "models": f"CIFAR ResNet-{depth} and plain-{depth} (widths {b['widths']}, BN)"
                  + (f", {b['preact']}" if b["preact"] else ""),
        "training": f"SGD momentum 0.9 (Nesterov), one-cycle to lr {LR} (25% warm-up), gradient norm clipped "
                    f"to {GRAD_CLIP}, weight decay 5e-4, batch {b['batch']}, {b['steps']} steps, seed {seed}",
        "gradient": "norm of the first conv layer's weight gradient at each step, as backward computes it "
                    "(before clipping)",
        "memory": "peak resident memory (VmHWM, reset after a warm-up step) of a fresh process during one "
                  "forward+backward, minus its "
                  "resident memory just before (activations, gradients, allocator slack)",
    }
