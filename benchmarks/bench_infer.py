"""Inference throughput at batch 1 and 64: torchvision eager against ours fused + channels_last
(+ torch.compile, + onnxruntime on the exported ONNX file), all under ``torch.inference_mode``.

Our model starts from torchvision's weights with non-trivial BN running statistics, so every
contender computes the same function; the table lists each one's largest deviation from
torchvision's logits as a check that the speed is not bought with a different answer.

Run alone: ``.venv/bin/python benchmarks/bench_infer.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
import torchvision
from _common import (
    Run, Section, compile_cache_note, markdown_table, onnxruntime, paired_ratio, rate_rows,
    first_paragraph, run_standalone, verdict, want_compile,
)

from resnet_lab import create_model
from resnet_lab.deploy import export_onnx, fuse_bn

__all__ = ["build"]

FULL = {"arch": "resnet18", "image_size": 112, "batches": (1, 64), "target_s": 1.0, "repeats": 7}
QUICK = {"arch": "resnet18", "image_size": 32, "batches": (1, 4), "target_s": 0.1, "repeats": 2}
BASELINE = "torchvision eager"
TARGET = 1.3


def _models(arch: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)(num_classes=1000)
    with torch.no_grad():  # running statistics away from (0, 1), so folding BN has real work to do
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ours = create_model(arch, num_classes=1000)
    ours.load_state_dict(tv.state_dict())
    return tv.eval(), ours.eval()


def _onnx_session(path: str, threads: int):
    if onnxruntime is None:
        raise ImportError("onnxruntime is not installed (pip install -e '.[onnx]')")
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads  # the same 2 cores torch gets
    so.inter_op_num_threads = 1
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _onnx(ours: torch.nn.Module, arch: str, size: int):
    """An onnxruntime session on the exported, fused model, or None and the reason it is missing."""
    # the session holds the model in memory: the file (45 MB at full size) goes with its folder at once
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        try:
            onnx_path = os.path.join(tmp, f"{arch}.onnx")
            export_onnx(ours, onnx_path, input_size=(3, size, size), fuse=True)
            return _onnx_session(onnx_path, torch.get_num_threads()), None
        except Exception as e:  # onnx/onnxruntime missing or export failed: report, measure the rest
            return None, f"{type(e).__name__}: {e}"


def _contenders(args, models: dict, session, x: torch.Tensor) -> dict:
    """Each contender as a call on the same batch (channels_last ones on a channels_last copy)."""
    tv, ours, fused, fused_cl = models["tv"], models["ours"], models["fused"], models["fused_cl"]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    x_np = x.numpy()
    c = {
        BASELINE: lambda: tv(x),
        "ours eager (BN not fused)": lambda: ours(x),
        "ours fused": lambda: fused(x),
        "ours fused + channels_last": lambda: fused_cl(x_cl),
    }
    if want_compile(args):
        # one compiled function per batch size, static shapes (no recompilation to dynamic shapes)
        compiled = torch.compile(fused_cl, dynamic=False)
        c["ours fused + channels_last + compile"] = lambda: compiled(x_cl)
    if session is not None:
        c["onnxruntime (exported, fused)"] = lambda: session.run(None, {"input": x_np})[0]
    return c


def _summary(res: dict, batch: int) -> list[tuple]:
    """The summary rows of one batch size: fused + channels_last and the best contender vs the baseline."""
    base = res[BASELINE]
    cands = [(paired_ratio(m, base), n) for n, m in res.items() if n != BASELINE and m.ok]
    if not (base.ok and cands):
        return []
    rows = []
    best_r, best_n = max(cands)
    fcl = res["ours fused + channels_last"]
    if fcl.ok:
        r = paired_ratio(fcl, base)
        rows.append((f"inference batch {batch}: ours fused + channels_last / torchvision eager",
                     f"{r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f})", f">= {TARGET}", verdict(r[0], TARGET)))
    rows.append((f"inference batch {batch}: best ({best_n}) / torchvision eager",
                 f"{best_r[0]:.2f}x ({best_r[1]:.2f}-{best_r[2]:.2f})", f">= {TARGET}",
                 verdict(best_r[0], TARGET)))
    return rows


def _batch_part(run: Run, args, models: dict, session, batch: int) -> tuple[str, list[tuple]]:
    """Measure every contender at one batch size: its Markdown table (+ compile note) and summary rows."""
    cfg = run.cfg
    arch, size = cfg["arch"], cfg["image_size"]
    print(f"[infer] {arch} batch {batch} x 3x{size}x{size}", flush=True)
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, size, size)
    c = _contenders(args, models, session, x)
    with torch.inference_mode():
        ref = models["tv"](x)
        dev = {}
        res = run.interleave(f"batch {batch}", c, target_s=cfg["target_s"], warmup=1)
        for name, fn in c.items():
            if res[name].ok:
                out = torch.as_tensor(fn())
                dev[name] = (out.float() - ref).abs().max().item() / ref.abs().max().item()
    rows = rate_rows(res, batch, BASELINE)
    for row in rows:
        row.append(f"{dev[row[0]]:.1e}" if row[0] in dev else "")
    part = f"### {arch}, batch {batch} x 3x{size}x{size}, {run.repeats} repeats\n\n" + markdown_table(
        ["contender", "images/s (median)", "min-max", "speed vs torchvision eager", "max abs deviation / max abs logit"],
        rows)
    comp = [m for n, m in res.items() if "compile" in n]
    if comp:
        part += "\nCompile time (first call): " + ", ".join(
            f"{m.first_call_s:.0f} s" if m.ok else f"failed ({m.error})" for m in comp) \
            + f" ({compile_cache_note()}); the table is steady state.\n"
    return part + "\n", _summary(res, batch)


def build(args: argparse.Namespace, command: str) -> Section:
    """Run the inference benchmark and return its Markdown section.

    Args:
        args: ``quick``, ``repeats`` (None: the default), ``threads``, ``compile``.
        command: the command line recorded with the tables.
    """
    run = Run.start(args, FULL, QUICK, "inference benchmark")
    arch, size = run.cfg["arch"], run.cfg["image_size"]
    tv, ours = _models(arch)
    models = {"tv": tv, "ours": ours, "fused": fuse_bn(ours),
              "fused_cl": fuse_bn(ours).to(memory_format=torch.channels_last)}
    session, onnx_error = _onnx(ours, arch, size)
    parts, summary = [], []
    for batch in run.cfg["batches"]:
        part, rows = _batch_part(run, args, models, session, batch)
        parts.append(part)
        summary.extend(rows)
    if onnx_error:
        parts.append(f"onnxruntime not measured: {onnx_error}\n\n")
    if not want_compile(args):
        parts.append("torch.compile contenders not measured in this run (`--compile off`, or `--quick`).\n\n")
    parts.append(
        "Notes: the fused models come from `resnet_lab.deploy.fuse_bn` and the ONNX file from "
        "`resnet_lab.deploy.export_onnx(..., fuse=True)` (onnxruntime with "
        f"{torch.get_num_threads()} intra-op threads, all graph optimizations). "
        "Folding BN removes one pass over the activations (and one operator call) per convolution. The "
        "last column checks that every contender computes torchvision's function (float32 rounding only).\n")
    return run.section("2. Inference throughput: fused + channels_last (+ compile, + onnxruntime)", command,
                       "".join(parts), summary)


if __name__ == "__main__":
    sys.exit(run_standalone(build, first_paragraph(__doc__), compile_flag=True,
                            repeats=(FULL["repeats"], QUICK["repeats"])))
