"""ONNX export with a dynamic batch dimension and the preprocessing recorded in the file.

The ONNX file is self-describing: its ``metadata_props`` hold, as JSON strings, everything a
predictor needs besides the graph (``input_size``, ``mean``, ``std``, ``classes``, ``arch``...), so
:class:`resnet_lab.deploy.predict.OnnxPredictor` needs neither the run directory nor torch.

Exporter choice (torch 2.14, measured here on resnet18): the TorchScript-based exporter
(``dynamo=False``) takes ~0.3 s and writes the requested opset directly; the torch.export-based one
(``dynamo=True``, needs onnxscript) takes ~3 s and builds opset 18, then fails to down-convert to 17
with a logged traceback. ``exporter="auto"`` therefore uses TorchScript and falls back to dynamo
only if TorchScript fails (e.g. on a future torch that removed it), or above TorchScript's newest
opset (20 in torch 2.14), where dynamo is the only exporter torch supports.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..models.registry import check_module
from ..runs import arch_outputs, atomic_write, check_output_file, load_model, read_metrics, write_error
from .fuse import BN_TYPES, fuse_bn_with_report
from .predict import decode_metadata

log = logging.getLogger(__name__)

__all__ = ["INPUT_NAME", "METADATA_KEYS", "OUTPUT_NAME", "export_onnx", "export_run", "read_onnx_metadata"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: model.json keys copied into the ONNX metadata_props (each value a JSON string).
METADATA_KEYS = ("format", "arch", "classes", "input_size", "mean", "std", "resize", "dataset", "epoch", "metrics")


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    ints = isinstance(input_size, (tuple, list)) and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in input_size)
    if not ints or len(input_size) != 3 or any(s < 1 for s in input_size):  # None, "3,12,12", 12.7 (truncated)
        raise ValueError(f"input_size must be (C, H, W) with positive int entries, e.g. (1, 28, 28), got "
                         f"{input_size!r}")
    return tuple(int(s) for s in input_size)


def _check_meta_fits(model: nn.Module, meta: dict[str, Any] | None, size: tuple[int, ...]) -> None:
    """Refuse a model that cannot be exported faithfully (BN without running statistics), and a
    ``meta`` that does not describe it: the file would be written, and its predictor fail later
    (classes vs outputs, mean/std vs channels) or name another network."""
    batch_stats = [n for n, m in model.named_modules() if isinstance(m, BN_TYPES) and m.running_mean is None]
    if batch_stats:
        more = f" (and {len(batch_stats) - 1} more batch-norm layers)" if len(batch_stats) > 1 else ""
        raise ValueError(
            f"{batch_stats[0]}{more} has no running statistics (track_running_stats=False): it normalizes by "
            "each batch's own statistics even in eval mode, so an exported model's answer for an image would "
            "depend on the rest of its batch; export a model trained with running statistics")
    if not meta:
        return
    config = getattr(model, "model_config", None) or {}
    arch = meta.get("arch") or {}
    if config.get("name") and arch.get("name") and arch["name"] != config["name"]:
        raise ValueError(f"meta's arch ({arch['name']}) does not describe the model ({config['name']}): leave 'arch' "
                         "out of meta, or pass the model's model_config")
    outputs = arch_outputs(config) if config else None
    if meta.get("classes") is not None and outputs is not None and len(meta["classes"]) != outputs:
        raise ValueError(f"meta names {len(meta['classes'])} classes but the model has {outputs} outputs: give one "
                         "class name per output")
    for key in ("mean", "std"):  # one value serves every channel, as in model.json and the predictors
        if meta.get(key) is not None and len(meta[key]) not in (1, size[0]):
            raise ValueError(f"meta's {key} has {len(meta[key])} value(s) for {size[0]}-channel inputs: give one per "
                             "channel, or one for all")


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_batch: bool) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # The legacy exporter announces its own deprecation; our BN's shape checks give TracerWarnings
        # that are harmless (they only guard against wrong inputs).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # strided slices (the CIFAR option-A shortcut x[:, :, ::2, ::2]) are exported unfolded: fine
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        # opsets 7 and 8 keep the weights as graph inputs too (valid, onnxruntime reads them): torch says so
        # in a warning that named an argument the user never gave, before any error of the export itself
        warnings.filterwarnings("ignore", message="Setting 'keep_initializers_as_inputs=False'", category=UserWarning)
        torch.onnx.export(
            model, (x,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False,
        )


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null: the TorchScript exporter prints its whole IR graph
    there from C++ when it fails, and the failure is reported as one line instead."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        saved = os.dup(1)
    except OSError:  # no stdout at all (closed, pythonw): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        if sys.stdout is not None:
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# The dynamo exporter builds opset 18; below it only the TorchScript exporter writes the file.
DYNAMO_MIN_OPSET = 18


def _require(module: str, what: str):
    """Import an optional package of the ``onnx`` extra, or an ImportError that names the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the {module} package: pip install 'resnet-lab[onnx]'") from e


def _export_dynamo(model: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_batch: bool) -> None:
    _require("onnxscript", f"the dynamo ONNX exporter (opset {max(opset, DYNAMO_MIN_OPSET)})")
    # one spec per positional argument of forward: dim 0 of the image batch is symbolic
    shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    torch.onnx.export(
        model, (x,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        # the dynamo exporter builds opset 18 and its down-conversion to 17 fails (Pad, Reduce*): keep >= 18
        opset_version=max(opset, DYNAMO_MIN_OPSET), dynamic_shapes=shapes, dynamo=True, verbose=False,
    )


def _export(model: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_batch: bool, exporter: str) -> None:
    """Write the ONNX file with the exporter asked for; ``auto``: TorchScript, then dynamo when
    TorchScript fails at an opset dynamo writes (never a file of another opset than asked), and
    dynamo straight away above TorchScript's newest opset (it would warn that it does not support it)."""
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET  # deferred: with the optional onnx

    if exporter == "dynamo" or (exporter == "auto" and opset > ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET):
        _export_dynamo(model, x, path, opset, dynamic_batch)
        return
    with _stdout_silenced():  # its own failure is no exporter error: outside the try
        try:
            _export_torchscript(model, x, path, opset, dynamic_batch)
            return
        except Exception as e:
            if isinstance(e, OSError) or write_error(e, path) is not None:
                raise  # a full disk or a read-only folder: no newer opset or exporter writes it either
            error = e
    if exporter == "torchscript" or opset < DYNAMO_MIN_OPSET:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(" [Caused by")[0].strip()
        raise ValueError(
            f"the TorchScript exporter cannot write this model at opset {opset} ({reason}); "
            f"try a newer --opset (the next ones may do; {DYNAMO_MIN_OPSET} or more also lets the dynamo exporter "
            "write it)"
        ) from error
    _export_dynamo(model, x, path, opset, dynamic_batch)


def _check_export_args(exporter: str, opset: int, meta: dict[str, Any] | None, **flags: Any) -> None:
    from torch.onnx._constants import (  # deferred: with the optional onnx
        ONNX_MAX_OPSET, ONNX_MIN_OPSET, ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)

    for name, flag in flags.items():  # fuse, dynamic_batch: "no" is truthy, it folded or wrote a dynamic graph
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'auto', 'torchscript' or 'dynamo', got {exporter!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not ONNX_MIN_OPSET <= opset <= ONNX_MAX_OPSET:
        raise ValueError(f"opset (--opset) must be an ONNX opset this torch exports, {ONNX_MIN_OPSET} to "
                         f"{ONNX_MAX_OPSET}, got {opset!r} (17 is the default)")
    if exporter == "torchscript" and opset > ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET:  # torch only warns, then writes
        raise ValueError(f"the TorchScript exporter writes opset {ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET} at most, not "
                         f"{opset}: lower the opset or use the dynamo exporter (exporter='auto' picks it)")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ValueError(f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or newer, not {opset}: "
                         f"raise the opset or use the torchscript exporter")
    std = (meta or {}).get("std")
    if std is not None and not all(s > 0 for s in std):  # the file's predictor would divide by it
        raise ValueError(f"meta's std must be > 0 in every channel, got {list(std)}")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: Sequence[int],
    meta: dict[str, Any] | None = None,
    fuse: bool = False,
    opset: int = 17,
    dynamic_batch: bool = True,
    exporter: str = "auto",
) -> Path:
    """Write ``model`` as an ONNX file (input ``"input"`` (B, C, H, W) float32, output ``"logits"``).

    Args:
        model: the network; exported in eval mode on the CPU in float32 (``model`` itself is not changed).
        path: the ``.onnx`` file to write; written to a temporary name and renamed (atomic).
        input_size: ``(C, H, W)`` of one input image.
        meta: a run's ``model.json`` content; its keys in :data:`METADATA_KEYS` are stored in the
            file's ``metadata_props`` as JSON strings (with ``input_size`` from this call).
        fuse: fold batch norms into the preceding convs first (:func:`resnet_lab.deploy.fuse_bn`).
        opset: ONNX opset version.
        dynamic_batch: make dim 0 symbolic (``"batch"``) so one file serves any batch size;
            ``False``: the file takes a batch of exactly 1.
        exporter: ``"auto"``, ``"torchscript"`` (``dynamo=False``) or ``"dynamo"``.

    Returns the path written.
    """
    onnx = _require("onnx", "ONNX export")

    check_module(model, "export_onnx")
    _check_export_args(exporter, opset, meta, fuse=fuse, dynamic_batch=dynamic_batch)
    size = _check_input_size(input_size)
    _check_meta_fits(model, meta, size)
    path = check_output_file(path, kind="ONNX", suffixes=(".onnx",))  # never a run's file or a non-.onnx file
    work = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    fuse_summary = None
    if fuse:
        work, report = fuse_bn_with_report(work, inplace=True)
        fuse_summary = {"folded": len(report.folded), "unfolded": report.unfolded_names}
        log.info("%s", report.summary())
    # Dynamic: batch 2, not 1, since the dynamo exporter specializes a dimension whose example size
    # is 1. Static: batch 1, one image per call, as a predictor sends them (a static batch of 2
    # would refuse every other size). Drawn from a generator of its own: the caller's global RNG is
    # left as it was (the values shape nothing in the file, only the trace's example).
    x = torch.randn(2 if dynamic_batch else 1, *size, generator=torch.Generator().manual_seed(0))
    try:  # a wrong input_size is the caller's mistake, not the exporter's: say so before exporting
        with torch.no_grad():
            work(x)
    except Exception as e:
        raise ValueError(
            f"the model does not accept input_size {size} (C, H, W): {type(e).__name__}: {e}. "
            "Pass the input_size it was trained with (a run's model.json has it)."
        ) from e

    props: dict[str, Any] = {k: meta[k] for k in METADATA_KEYS if meta and k in meta}
    props.setdefault("format", "resnet-lab/1")
    props["input_size"] = list(size)
    if "arch" not in props and getattr(model, "model_config", None):
        props["arch"] = model.model_config
    props["fused_bn"] = fuse_summary if fuse else False

    def write(tmp: str) -> None:
        with torch.no_grad():
            _export(work, x, tmp, opset, dynamic_batch, exporter)
        proto = onnx.load(tmp)  # external data too, if the exporter wrote a side file: saved inline below
        Path(f"{tmp}.data").unlink(missing_ok=True)
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key = key
            entry.value = json.dumps(value)
        proto.producer_name = "resnet-lab"
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)

    return atomic_write(path, write)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file, JSON-decoded (values that are not JSON stay strings).

    Args:
        path: an ``.onnx`` file.
    """
    onnx = _require("onnx", "reading an ONNX file's metadata")

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory: give an .onnx file (resnet-lab export RUN --out FILE.onnx)")
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and kin name neither the file nor the way out
        raise ValueError(f"{path} is not a readable ONNX file ({type(e).__name__}); export it again with "
                         "resnet-lab export") from e
    return decode_metadata({p.key: p.value for p in proto.metadata_props})


def _best_epoch_meta(source: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` describing the best evaluated epoch's weights: model.json's ``epoch`` and ``metrics``
    are the last epoch's, which an export of best.safetensors used to write into the file. The best
    epoch is the first with the highest test accuracy (the trainer's rule); without metrics.jsonl
    neither is written."""
    run_dir = source if source.is_dir() else source.parent
    try:
        evaluated = [r for r in read_metrics(run_dir) if r.get("test_acc") is not None]
    except (OSError, ValueError):
        evaluated = []
    meta = {k: v for k, v in meta.items() if k not in ("epoch", "metrics")}
    if evaluated:
        best = max(evaluated, key=lambda r: r["test_acc"])
        meta.update(epoch=best["epoch"], metrics=best)
    return meta


def export_run(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fuse: bool = False,
    opset: int = 17,
    which: str = "model",
) -> Path:
    """Export a run directory (or ``.safetensors`` with its ``model.json``) to ONNX: the CLI's ``export``.

    Args:
        source: run directory or weights file.
        out: the ``.onnx`` file to write.
        fuse: fold batch norms first.
        opset: ONNX opset version.
        which: in a run directory, ``model`` (last epoch) or ``best``.
    """
    check_output_file(out, kind="ONNX", suffixes=(".onnx",), inputs=(source,))  # before loading anything
    model, meta = load_model(source, which=which)
    if which == "best" or Path(source).name == "best.safetensors":
        meta = _best_epoch_meta(Path(source), meta)
    if "input_size" not in meta:
        raise ValueError(f"model.json of {source} has no 'input_size' ([C, H, W]); it is needed to export")
    return export_onnx(model, out, input_size=meta["input_size"], meta=meta, fuse=fuse, opset=opset)
