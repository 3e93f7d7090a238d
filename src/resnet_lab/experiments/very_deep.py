"""Very deep networks: ResNets still train past 1000 layers, the plain net of the same depth does
not (He et al. 2015, sec. 4.2 "Exploring over 1000 layers": ResNet-1202 reaches 0.1% training
error; He et al. 2016, "Identity Mappings": pre-activation ResNet-1001).

ResNet-1202 and the plain-1202 (same layers, no shortcuts), each trained for the same first steps
with several seeds: the training loss per step and the gradient norm of the first layer. The
pre-activation ResNet-1001 is trained with the recipe its paper gives for networks this deep (He
et al. 2016, sec. 4 / 2015, sec. 4.2: lr 0.01 until the training error is below 80%, about 400
iterations, then 0.1; no clipping), for as many steps as a CPU affords. Then the memory of one
training step with and without gradient checkpointing (the models' ``checkpoint_segments``, the
trainer's ``--checkpoint-segments``), each measured in a fresh process.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models import create_model
from ..models.resnet import CifarResNet, PreActBottleneck, PreActResNet
from .report import Check, Report, Spread, plot_lines
from .runner import Context, ModelFactory, RunSpec, SeedResults, cifar_net, count

__all__ = ["CLAIM", "NAME", "claim_checks", "memory_probe", "run"]

NAME = "very_deep"
CLAIM = ("ResNets train past 1000 layers (ResNet-1202, pre-act ResNet-1001) where the plain net of the same "
         "depth does not (He et al. 2015 sec. 4.2; He et al. 2016); gradient checkpointing cuts their memory.")

# "trains": the mean training loss of the last steps is this far below chance level, ln(classes),
# even one seed sd up; "does not train": not below it even one seed sd down.
BELOW_CHANCE = 0.2

BUDGET: dict[str, dict[str, Any]] = {
    # preact: the third net (a registry name, or None for a tiny pre-activation net), its warm-up
    # steps at PREACT_WARMUP_LR and its steps at PREACT_LR after them.
    "smoke": dict(depth=20, widths=(4, 8, 16), steps=4, window=2, batch=8, image_size=14, test=64, subset=256,
                  preact=None, preact_warmup=2, preact_steps=4, segments=4, probe_batch=8, seeds=2),
    "full": dict(depth=1202, widths=(16, 32, 64), steps=100, window=10, batch=16, image_size=14, test=256, subset=2000,
                 preact="preact_resnet1001", preact_warmup=100, preact_steps=100, segments=24, probe_batch=16,
                 seeds=3),
}
# ResNet-1202 and plain-1202: one-cycle (its first quarter a linear warm-up) and the global gradient
# norm clipped to 1, so that a large but finite first-step gradient cannot knock a net out and the
# question is whether it learns. Clipping cannot help a gradient that is already non-finite: the
# plain-1202's first backward pass overflows float32 (its norm is ~1e77 in float64), and the
# check says so instead of calling it a net that trained and failed to learn.
LR, GRAD_CLIP = 0.05, 1.0
# Pre-activation ResNet-1001: the paper's rates (for its batch of 128; ours is smaller), constant,
# no clipping: under the clipping above its stem gradient (~1e4) took the whole clipped norm and
# the net stayed at chance.
PREACT_WARMUP_LR, PREACT_LR = 0.01, 0.1
WARMUP_ERROR = 0.8  # He et al.'s end of warm-up: training error below 80%


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
        with open("/proc/self/status") as f:
            for line in f:
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


def _last_losses(curves: Sequence[Sequence[float]], diverged: Sequence[bool], k: int, chance: float) -> Spread:
    """The last-``k``-step mean loss of each seed; a seed that diverged counts at chance level."""
    return Spread.of(chance if d else _trend(c, k)[1] for c, d in zip(curves, diverged))


def claim_checks(step_losses: Mapping[str, Sequence[Sequence[float]]], diverged: Mapping[str, Sequence[bool]],
                 labels: Sequence[str], *, protocols: Mapping[str, str], window: int, num_classes: int) -> list[Check]:
    """The claim's checks from the per-step training losses of every seed: the residual net trains,
    the plain net does not, and a third (residual) net, when run, trains too.

    Args:
        step_losses: ``{run label: [training loss after each step, one list per seed]}``.
        diverged: ``{run label: [whether each seed diverged]}`` (a diverged seed counts at chance).
        labels: the residual net's label, the plain net's, and optionally a third net's.
        protocols: ``{run label: how it was trained}``, for the questions ("in its first 100 steps").
        window: a net trains when the mean over seeds of the mean loss of its last ``window`` steps,
            plus one seed sd, is more than ``BELOW_CHANCE`` below chance level, ln(``num_classes``);
            it does not train when that mean minus one sd is not below it.
        num_classes: classes of the task.
    """
    k, chance = window, math.log(num_classes)
    bar = chance - BELOW_CHANCE
    checks = []
    for i, label in enumerate(labels):
        want = i != 1  # the plain net (second) must not train
        last = _last_losses(step_losses[label], diverged[label], k, chance)
        ok = (last.mean + last.sd < bar) if want else (last.mean - last.sd >= bar)
        firsts = [_trend(c, k)[0] for c in step_losses[label]]
        firsts = [f for f in firsts if f == f]
        n_div = sum(diverged[label])
        # a diverged seed with no finite step loss stopped in its first step, before any update
        at_first = sum(d and not any(v == v for v in c) for c, d in zip(step_losses[label], diverged[label]))
        checks.append(Check(
            f"{label} {'trains' if want else 'does not train'} {protocols[label]}", ok,
            f"mean training loss of the last {k} steps {last.fmt(3)} (mean ± sd over {last.n} seeds"
            + (f"; {n_div} diverged, counted at chance" if n_div else "")
            + (f"; {at_first} of them in the first step, before any update: a non-finite loss or gradient "
               "in the first backward pass, which clipping cannot scale back" if at_first else "")
            + "), of the first "
            + (f"{k} {statistics.fmean(firsts):.3f}" if firsts else f"{k} n/a")
            + f"; trains: mean + sd below chance ln({num_classes}) = {chance:.3f} by > {BELOW_CHANCE}; does not "
              "train: mean - sd not below it"))
    return checks


def run(ctx: Context) -> Report:
    """Train residual and plain nets of ~1000 layers for their first steps over seeds; probe checkpointing memory."""
    b = BUDGET[ctx.budget]
    k = b["window"]
    data = dict(subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    specs = _specs(b, data)
    seeds = ctx.seeds(b["seeds"])
    results, grads = {}, {}
    for spec in specs:
        results[spec.label], grads[spec.label] = _train_recording_conv1_grad(ctx, spec, seeds)
    num_classes = len(ctx.data(batch_size=b["batch"], **data).info.classes)
    checks = claim_checks({label: [r.step_losses for r in v.runs] for label, v in results.items()},
                          {label: [r.diverged for r in v.runs] for label, v in results.items()}, [s.label for s in specs],
                          protocols={s.label: s.info["protocol"] for s in specs}, window=k, num_classes=num_classes)
    memory = _memory(ctx, b)
    _plot(ctx, b, results, grads, plain_label=specs[1].label)
    return Report(
        claim=CLAIM,
        setup=_setup(b, seeds),
        columns=["run", "params", f"loss first {k} steps", f"loss last {k} steps", "conv1 grad step 1",
                 "conv1 grad last step", "test acc %", "diverged", "seconds"],
        rows=_rows(results, grads, k), checks=checks, findings=[_memory_finding(b, memory), *_warmup_findings(results)],
        plots=["loss_steps.png", "first_layer_grad.png"],
        data={"runs": {k_: r.to_dict() for k_, r in results.items()}, "first_layer_grad": grads,
              "memory": {str(s): v for s, v in memory.items()}},
        notes=[f"Only the first {count(b['steps'], 'step')} are run for the 1202-layer nets and {b['preact_warmup']} + "
               f"{b['preact_steps']} for the 1001-layer one (CPU budget: about 1-2 s per step); He et al. train 64k "
               "iterations, warming up for about 400. Whether a net learns in its first steps is what is tested, "
               "not the error it ends with.",
               "There is no plain twin of the bottleneck pre-activation ResNet-1001; plain-1202 is the plain "
               "counterpart for both."] if not ctx.smoke else [],
    )


def _tiny_preact(num_classes: int, in_channels: int) -> nn.Module:
    """An 11-layer pre-activation bottleneck net: the smoke budget's stand-in for ResNet-1001."""
    return PreActResNet(PreActBottleneck, [1, 1, 1], (4, 8, 16), stem_width=4, num_classes=num_classes,
                        in_channels=in_channels)


def _specs(b: Mapping[str, Any], data: dict[str, Any]) -> list[RunSpec]:
    """The residual net and its plain twin, trained alike (one-cycle to ``LR``, clipping), and the
    pre-activation ResNet-1001 with its paper's warm-up recipe."""
    depth = b["depth"]
    common = dict(batch_size=b["batch"], epochs=1, data=data)
    first = f"in its first {count(b['steps'], 'step')}"
    specs = [
        RunSpec(f"resnet-{depth}", cifar_net(depth, residual=True, widths=b["widths"]), lr=LR, grad_clip=GRAD_CLIP,
                max_steps_per_epoch=b["steps"], info={"protocol": first}, **common),
        RunSpec(f"plain-{depth}", cifar_net(depth, residual=False, widths=b["widths"]), lr=LR, grad_clip=GRAD_CLIP,
                max_steps_per_epoch=b["steps"], info={"protocol": first}, **common),
    ]
    name = b["preact"]
    factory: ModelFactory = _tiny_preact if name is None else (
        lambda nc, ic: create_model(name, num_classes=nc, in_channels=ic))
    label = "preact-resnet11 (tiny)" if name is None else name.replace("_resnet", "-resnet")
    specs.append(RunSpec(label, factory, lr=PREACT_LR, schedule="constant", warmup_lr=PREACT_WARMUP_LR,
                         warmup_steps=b["preact_warmup"], max_steps_per_epoch=b["preact_steps"],
                         info={"protocol": f"with its paper's recipe ({count(b['preact_warmup'], 'step')} at lr "
                                           f"{PREACT_WARMUP_LR}, then {b['preact_steps']} at {PREACT_LR})"},
                         **common))
    return specs


def _train_recording_conv1_grad(ctx: Context, spec: RunSpec, seeds: Sequence[int]
                                ) -> tuple[SeedResults, list[list[float]]]:
    """Train ``spec`` once per seed and record the norm of the first conv layer's weight gradient
    at each step of each seed; the trained models are dropped (a 1202-layer net is large)."""
    records: list[list[float]] = []
    factory = spec.model

    def build(nc: int, ic: int) -> nn.Module:
        m = factory(nc, ic)
        record: list[float] = []
        records.append(record)
        # A hook on the weight sees its gradient as backward computes it, before the trainer
        # clips it (a callback after the step would read the clipped value). inf/NaN included.
        m.conv1.weight.register_hook(lambda g: record.append(float(g.detach().norm())))
        return m

    result = ctx.train_seeds(replace(spec, model=build), seeds)
    result.drop_models()
    return result, records


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
            f"{b['probe_batch']}: peak memory rise {m0['step_peak_mib']:.3g} MiB -> {m1['step_peak_mib']:.3g} MiB "
            f"({100 * saving:.0f}% less), step time {m0['seconds']:.2f} s -> {m1['seconds']:.2f} s "
            f"(the recomputation); parameters {m0['params_mib']:.3g} MiB")


def _rows(results: Mapping[str, SeedResults], grads: Mapping[str, list[list[float]]], k: int) -> list[list[Any]]:
    rows = []
    for label, r in results.items():
        trends = [_trend(x.step_losses, k) for x in r.runs]
        g = grads[label]
        rows.append([label, r.runs[0].params, Spread.of(t[0] for t in trends), Spread.of(t[1] for t in trends),
                     Spread.of(x[0] if x else math.nan for x in g), Spread.of(x[-1] if x else math.nan for x in g),
                     r.final("test_acc").scaled(100), f"{r.diverged} of {len(r.runs)}", r.spread(lambda x: x.seconds)])
    return rows


def _warmup_findings(results: Mapping[str, SeedResults]) -> list[str]:
    out = []
    for label, r in results.items():
        warm = [x.info["warmup"] for x in r.runs if "warmup" in x.info]
        if warm:
            err = Spread.of(w["train_error"] for w in warm)
            out.append(f"{label}: running training error over the {count(warm[0]['steps'], 'warm-up step')} at lr "
                       f"{warm[0]['lr']:g}: {err.scaled(100).fmt(1)}% (He et al. go on to lr {PREACT_LR} once it is "
                       f"below {100 * WARMUP_ERROR:.0f}%: "
                       + ("met" if err.mean < WARMUP_ERROR else "not met") + " on average; the steps are fixed here)")
    return out


def _plot(ctx: Context, b: Mapping[str, Any], results: Mapping[str, SeedResults],
          grads: Mapping[str, list[list[float]]], *, plain_label: str) -> None:
    """Loss per step and conv1 gradient norm per step, the mean over seeds."""
    styles = {plain_label: "--"}
    losses = {label: r.mean_steps() for label, r in results.items()}
    plot_lines({label: (x, m) for label, (x, m, _) in losses.items()}, ctx.out / "loss_steps.png",
               title="Training loss per step, mean over seeds (pre-act: warm-up included)", xlabel="step",
               ylabel="cross-entropy", styles=styles,
               bands={label: ([a - s for a, s in zip(m, sd)], [a + s for a, s in zip(m, sd)])
                      for label, (_, m, sd) in losses.items()})
    mean_grads = {}
    for label, g in grads.items():
        n = min(len(x) for x in g) if g else 0
        mean_grads[label] = (list(range(1, n + 1)), [statistics.fmean(x[i] for x in g) for i in range(n)])
    plot_lines(mean_grads, ctx.out / "first_layer_grad.png", title="First-layer (conv1) gradient norm, mean over seeds",
               xlabel="step", ylabel="||dL/dW_conv1||", logy=True, styles=styles)


def _setup(b: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, str]:
    depth = b["depth"]
    return {
        "data": f"Fashion-MNIST resized to {b['image_size']} px (CPU budget), {b['subset']} training images, "
                f"first {b['test']} test images",
        "models": f"CIFAR ResNet-{depth} and plain-{depth} (widths {b['widths']}, BN), "
                  + (b["preact"] or "a tiny pre-activation bottleneck net (smoke)"),
        "training": f"SGD momentum 0.9 (Nesterov), weight decay 5e-4, batch {b['batch']}; resnet/plain-{depth}: "
                    f"one-cycle to lr {LR} (25% warm-up), gradient norm clipped to {GRAD_CLIP}, {count(b['steps'], 'step')}; "
                    f"pre-activation net: {count(b['preact_warmup'], 'step')} at lr {PREACT_WARMUP_LR}, then "
                    f"{b['preact_steps']} at lr {PREACT_LR} (constant), no clipping (He et al. 2016's recipe)",
        "seeds": f"{', '.join(map(str, seeds))} (initial weights and data order); figures are mean ± sd over seeds",
        "gradient": "norm of the first conv layer's weight gradient at each step, as backward computes it "
                    "(before clipping)",
        "memory": "peak resident memory (VmHWM, reset after a warm-up step) of a fresh process during one "
                  "forward+backward, minus its resident memory just before (activations, gradients, allocator "
                  "slack); one measurement per setting (no randomness in it)",
    }
