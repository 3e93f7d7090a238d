"""A run report in one self-contained HTML file: the page people look at after training.

For each run: the curves, the confusion matrix and per-class accuracy of the test set, the test
images the model got wrong with the most confidence, the recipe (``model.json``'s architecture and
training configuration) and the timings (``metrics.jsonl``); for several runs also their curves on
shared axes and a table side by side; and the machine the report was made on. Figures are PNGs
embedded as base64 ``data:`` URIs and the style sheet is inline, so the file can be mailed or
archived alone and opens offline.

The test-set sections need the data: the run's dataset is loaded as ``resnet-lab evaluate`` loads
it (input size, mean and std from ``model.json``); when it cannot be found, those sections say so
and the rest of the report is still written.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import platform
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .._text import count
from ..data import DataNotFoundError, display_name, load_data
from ..data.config import check_data_dir
from ..figures import new_figure
from ..runs import (FROZEN_DIR, OUTPUT_MARK, atomic_write_text, check_distinct_runs, check_meta, check_metrics_record, check_output_file,
                    load_model, read_metrics, resolve_source, same_test_data, stopped_words, trained_folder, unfinished_at)
from ..train import evaluate, resolve_device
from ..train.plots import curves_figure, plot_confusion, whole_epochs

__all__ = ["check_report_args", "machine_info", "report_html", "write_report"]

_EVAL_BATCH = 256


@dataclass
class _Mistakes:
    """Wrong predictions: the inputs as the model saw them (normalized, CPU) and what it said."""

    images: Tensor  # (k, C, H, W)
    true: Tensor  # (k,)
    pred: Tensor  # (k,)
    confidence: Tensor  # (k,) softmax probability of ``pred``

    def most_confident(self, other: "_Mistakes | None", k: int) -> "_Mistakes":
        """The ``k`` most confident of these and ``other``'s; ties keep the order seen (stable sort)."""
        if other is not None:
            return _Mistakes(torch.cat([other.images, self.images]), torch.cat([other.true, self.true]),
                             torch.cat([other.pred, self.pred]),
                             torch.cat([other.confidence, self.confidence])).most_confident(None, k)
        top = self.confidence.argsort(descending=True, stable=True)[:k]
        return _Mistakes(self.images[top], self.true[top], self.pred[top], self.confidence[top])


@dataclass
class _Evaluation:
    accuracy: float
    loss: float
    n: int
    confusion: Tensor  # (K, K), rows true classes
    per_class: list[float]  # NaN for a class without test images
    mistakes: _Mistakes | None  # None when none were asked for
    device: str


@dataclass
class _Run:
    """Everything the page shows about one run."""

    name: str
    run_dir: Path
    meta: dict[str, Any]
    history: list[dict[str, Any]]  # metrics.jsonl's records, and model.json's of a later epoch (see _stops_short)
    evaluation: _Evaluation | None = None
    data_note: str = ""  # why the test-set sections are missing
    data_source: str = ""  # where the evaluated test set was read, in words
    weights: str = "model.safetensors"  # the file that was evaluated
    figures: dict[str, str] = field(default_factory=dict)  # data URIs by figure name
    metrics_note: str = ""  # where metrics.jsonl stops short of the checkpoint's epoch, and what stands in
    from_meta: int | None = None  # the epoch whose record is model.json's (history[-1]), not metrics.jsonl's
    frozen: list[dict[str, Any]] = field(default_factory=list)  # finetune --freeze-epochs: freeze_phase/'s records


class _MistakeTracker(nn.Module):
    """Wraps a model for :func:`~resnet_lab.train.evaluate` and keeps the ``k`` wrong predictions made
    with the highest confidence, so one pass over the test set gives both evaluate's figures and
    the mistakes (evaluate returns aggregates only). :meth:`batches` wraps the loader to hand over
    each batch's labels, which the model's forward never sees."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k
        self._labels: Tensor | None = None
        self.kept: _Mistakes | None = None

    def batches(self, loader: Iterable) -> Iterator:
        for x, y in loader:
            self._labels = y
            yield x, y

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        if self.k > 0:
            confidence, pred = logits.detach().float().softmax(1).max(1)
            y = self._labels.to(pred.device)
            wrong = pred != y
            new = _Mistakes(x[wrong].cpu(), y[wrong].cpu(), pred[wrong].cpu(), confidence[wrong].cpu())
            self.kept = new.most_confident(self.kept, self.k)
        return logits


def _data_for(meta: dict[str, Any], data_dir: str | os.PathLike | None, device: torch.device):
    """The run's test data, loaded as `resnet-lab evaluate` loads it, with the run's own mean/std
    (what the network was trained on), seed (which makes the fake data) and a folder's held-out split."""
    c, h, _ = meta["input_size"]
    if meta["dataset"] == "fake":  # one --data-dir serves every run; the fake images are made, not read
        data_dir = None
    return load_data(
        meta["dataset"], data_dir=data_dir, image_size=h, in_channels=c, mean=meta["mean"], std=meta["std"],
        seed=int((meta.get("train_config") or {}).get("seed", 0)), **same_test_data(meta, meta["dataset"], data_dir),
        augment=False,
        batch_size=1, eval_batch_size=_EVAL_BATCH, device=device,  # the training split is not used
    )


def _evaluate_run(model: nn.Module, meta: dict[str, Any], data, device: torch.device, mistakes: int) -> _Evaluation:
    if list(data.info.classes) != list(meta["classes"]):
        raise ValueError(f"the dataset's classes {list(data.info.classes)} differ from the run's {meta['classes']}: "
                         "point --data-dir at the data the run was trained on")
    tracker = _MistakeTracker(model, mistakes)
    ev = evaluate(tracker, tracker.batches(data.test), num_classes=len(meta["classes"]), device=device)
    return _Evaluation(ev["acc"], ev["loss"], ev["n"], ev["confusion"], ev["per_class_acc"], tracker.kept, str(device))


def _collect(source: str | os.PathLike, data_dir: str | os.PathLike | None, device: torch.device,
             mistakes: int) -> _Run:
    """Load a run, read its metrics and evaluate it on its test set when the data can be found."""
    model, meta = load_model(source, device)  # a run directory, a weights file in one, or shipped MODEL:TAG
    where = resolve_source(source)
    check_meta(meta, source, ("input_size", "classes", "mean", "std"), "report")
    run_dir = where if where.is_dir() else where.parent  # shipped weights: their folder, which has no metrics
    run = _Run(name=str(source), run_dir=run_dir, meta=meta, history=read_metrics(run_dir),
               weights="model.safetensors" if where.is_dir() else where.name,
               frozen=read_metrics(run_dir / FROZEN_DIR))  # finetune --freeze-epochs' head-only phase, if any
    _stops_short(run)
    if not meta.get("dataset"):
        run.data_note = "model.json does not record the dataset, so the test set cannot be loaded."
        return run
    if meta["dataset"] == "folder" and data_dir is None:
        data_dir = trained_folder(meta)  # recorded since 2026-12-05, when it is still there
    if meta["dataset"] == "folder" and data_dir is None:
        run.data_note = ("the run was trained on an image folder that its model.json does not name or that is gone; "
                         "give the folder with --data-dir.")
        return run
    data = _test_data(run, source, data_dir, device)
    if data is not None:
        run.evaluation = _evaluate_run(model, meta, data, device, mistakes)
    return run


def _stops_short(run: _Run) -> None:
    """A metrics.jsonl that stops before the epoch model.json's checkpoint is at (a kill tore its last
    line, which read_metrics drops, or records were cut): the last whole record is not the run's
    final one. model.json's ``metrics`` record of that epoch, when it holds one, is added to the
    history; ``run.metrics_note`` says where the file stops and what stands in for the rest."""
    done = run.meta.get("epoch")
    if not run.history or not isinstance(done, int) or isinstance(done, bool) or done <= run.history[-1]["epoch"]:
        return
    path, last = run.run_dir / "metrics.jsonl", run.history[-1]["epoch"]
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    why = ("its last record is torn (a kill during the append leaves one)" if len(lines) > len(run.history)
           else "the records after it are missing")
    stops = f"metrics.jsonl stops at epoch {last} of the {done} that model.json's checkpoint covers: {why}"
    record = run.meta.get("metrics")
    if isinstance(record, dict) and record.get("epoch") == done:
        check_metrics_record(record, f"{run.run_dir / 'model.json'} 'metrics'", "restore it, or train the run again")
        run.history.append(record)
        run.from_meta = done
        run.metrics_note = (f"{stops}. Epoch {done}'s figures (the final ones, the last row of the timings and the "
                            f"curves' last point) are model.json's record of it ('metrics').")
    else:
        run.metrics_note = f"{stops}, and model.json holds no record of epoch {done}: the figures stop at epoch {last}."


# Datasets that live in the usual places (--data-dir, $RESNET_LAB_DATA, the Debian path, the cache).
_BUILT_IN = ("fashion-mnist", "cifar10", "cifar100")


def _test_data(run: _Run, source: str | os.PathLike, data_dir: str | os.PathLike | None, device: torch.device):
    """The run's test data, and ``run.data_source`` saying where they were read; None (and
    ``run.data_note`` saying why) when they cannot be loaded.

    One --data-dir serves every run of the page, and runs of several datasets share it: a built-in
    dataset that it does not hold is read from the usual places, where `evaluate` without --data-dir
    looks, so a folder run and a Fashion-MNIST run are evaluated side by side."""
    meta, name = run.meta, run.meta["dataset"]
    places = [data_dir, None] if data_dir is not None and name in _BUILT_IN else [data_dir]
    for i, place in enumerate(places):
        try:
            data = _data_for(meta, place, device)
        except DataNotFoundError as e:
            if i + 1 < len(places):
                continue  # --data-dir does not hold it: the usual places next
            run.data_note = _not_found_note(run, source, place, e, tried=data_dir if place != data_dir else None)
            return None
        except FileNotFoundError as e:  # a folder that is gone: the report goes on without these sections
            run.data_note = _not_found_note(run, source, place, e)
            return None
        except ValueError as e:  # found, but not this run's (a folder without class sub-folders, other classes)
            run.data_note = (f"the {name} test set could not be loaded ({e}); give its place with "
                             "--data-dir, or report the run on its own.")
            return None
        read = f"{'made at' if name == 'fake' else 'read from'} {data.info.source or 'an unrecorded place'}"
        run.data_source = read if place == data_dir else f"{read}, as --data-dir {data_dir} does not hold {name}"
        return data
    return None


def _not_found_note(run: _Run, source: str | os.PathLike, place: str | os.PathLike | None, e: Exception,
                    tried: str | os.PathLike | None = None) -> str:
    """Why a run's test set is missing, with the download the report can then use: report has no
    --download, so the loader's way to download goes through evaluate (with the ``place`` looked
    at last, so that evaluate downloads where the message says it would)."""
    evaluate = f"resnet-lab evaluate {source}" + (f" --data-dir {place}" if place is not None else "")
    how = str(e).replace("--download (download=True)", f"`{evaluate} --download`")
    also = f" in --data-dir {tried} nor in the usual places" if tried is not None else ""
    return f"the {run.meta['dataset']} test set was not found{also}; give its place with --data-dir.\n{how}"


# --- figures ------------------------------------------------------------------------------------


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_uri(fig, dpi: int = 90) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return _data_uri(buf.getvalue())


def _confusion_uri(cm: Tensor, classes: Sequence[str], title: str) -> str:
    # plot_confusion is the one confusion-matrix drawing of the package; it writes a file.
    with tempfile.TemporaryDirectory() as tmp:
        return _data_uri(plot_confusion(cm, classes, Path(tmp) / "confusion.png", title=title).read_bytes())


def _as_pictures(m: _Mistakes, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Normalized inputs back to 0..1 pictures, (k, H, W, C)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (m.images.float() * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1)


_LABEL_CHARS = 24  # a class name longer than this is cut with an ellipsis in the grid (the alt text has it whole)
_PICTURE_INCHES = 0.9  # the side of one picture in the grid
_LABEL_POINTS = 7
_GRID_INCHES = 12.5  # the widest grid: a page shows it at about its size


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[:_LABEL_CHARS - 1] + "\u2026"


def _label_inches(fig, labels: Sequence[str]) -> tuple[float, float]:
    """The widest and tallest of ``labels`` as drawn at the grid's font size, in inches (measured by
    matplotlib's renderer, not guessed from a character count)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred, as every matplotlib import here

    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = []
    for label in labels:
        text = fig.text(0, 0, label, fontsize=_LABEL_POINTS)
        boxes.append(text.get_window_extent(renderer))
        text.remove()
    return max(b.width for b in boxes) / fig.dpi, max(b.height for b in boxes) / fig.dpi


def _mistakes_uri(m: _Mistakes, classes: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> str:
    """The mistakes as one mosaic in one Axes, each picture with its labels above it (one Axes per picture
    costs matplotlib seconds for a 16-image grid). The space between pictures and above them is sized
    to the widest and tallest label, so long class names neither run into the neighbours' labels nor
    over the pictures."""
    pictures = _as_pictures(m, mean, std)  # (k, H, W, C)
    k, h, w, c = pictures.shape
    labels = [f"true {_short(display_name(classes[int(m.true[i])]))}\npred {_short(display_name(classes[int(m.pred[i])]))} "
              f"{100 * float(m.confidence[i]):.0f}%" for i in range(k)]
    fig, ax = new_figure()
    wide, tall = _label_inches(fig, labels)
    scale = _PICTURE_INCHES / max(h, w)  # inches per image pixel
    gap = max(math.ceil(0.3 * w), math.ceil((wide + 0.12) / scale) - w)  # space between pictures
    lift = 0.04 / scale  # between a picture and its labels
    band = max(math.ceil(0.55 * h), math.ceil((tall + 0.08) / scale + lift))  # room for two lines of labels
    cell_h, cell_w = h + band, w + gap
    cols = min(8, k, max(1, int(_GRID_INCHES // (cell_w * scale))))  # long labels: fewer columns, not tiny text
    rows = math.ceil(k / cols)
    mosaic = torch.ones(rows * cell_h, cols * cell_w, c)  # white
    fig.set_size_inches(cols * cell_w * scale, rows * cell_h * scale)
    ax.set_position([0, 0, 1, 1])  # the mosaic fills the figure: the scale above holds
    for i in range(k):
        top, left = (i // cols) * cell_h + band, (i % cols) * cell_w + gap // 2
        mosaic[top:top + h, left:left + w] = pictures[i]
        # imshow centres pixel j on j: a picture's edges are half a pixel before its first and after its last
        ax.text(left + (w - 1) / 2, top - 0.5 - lift, labels[i], ha="center", va="bottom", fontsize=_LABEL_POINTS)
    gray = c == 1
    ax.imshow((mosaic[..., 0] if gray else mosaic).numpy(), cmap="gray" if gray else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    return _figure_uri(fig)


def _loss_series(run: _Run) -> list[tuple[str, list[float]]]:
    """The side-by-side loss curves of one run, test then train, as ``(label, per-epoch values)``.
    The training curve is the plain cross-entropy where the run recorded it (label smoothing's
    objective is another quantity); a smoothed run without it is labelled as such."""
    plain = any("train_loss_plain" in h for h in run.history)
    smoothed = float((run.meta.get("train_config") or {}).get("label_smoothing") or 0.0) > 0 and not plain
    return [(f"{run.name} (test)", [_plotted(h, "test_loss") for h in run.history]),
            (f"{run.name} (train{'; loss: the smoothed objective' if smoothed else ''})",
             [_plotted(h, "train_loss_plain" if plain else "train_loss") for h in run.history])]


def _plotted(record: dict[str, Any], key: str, scale: float = 1.0) -> float:
    """``key`` of an epoch record times ``scale``, as a point of the side-by-side curves: NaN (no
    point) where the record has none, the key left out or null (read_metrics accepts null: an epoch
    without the evaluation)."""
    value = record.get(key)
    return math.nan if value is None else scale * value


def _compare_uri(runs: Sequence[_Run]) -> str:
    """The runs' curves on shared axes: loss (:func:`_loss_series`) and accuracy per epoch, test
    solid, train dashed."""
    fig, (ax_loss, ax_acc) = new_figure(1, 2, figsize=(10, 3.8))
    colours = _run_colours(len(runs))
    for i, run in enumerate(runs):
        epochs = [h["epoch"] for h in run.history]
        for (split, style), (label, losses) in zip((("test", "-"), ("train", "--")), _loss_series(run)):
            ax_loss.plot(epochs, losses, style, color=colours[i], marker="o", ms=3, label=label)
            label = f"{run.name} ({split})"
            ax_acc.plot(epochs, [_plotted(h, f"{split}_acc", 100) for h in run.history], style,
                        color=colours[i], marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    whole_epochs(fig)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if len(runs) <= LEGEND_RUNS:  # below the panels, never over a point: a row a run, test | train
        lines = ax_loss.get_lines()  # the same styles and colours as the accuracy panel's, with the loss's labels
        order = lines[0::2] + lines[1::2]  # columns fill first: the test column, then the train one
        # a long handle, or a dashed line reads as solid at 7 pt (two dashes and the marker)
        fig.legend(handles=order, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2,
                   handlelength=4, frameon=False)
    else:  # two entries a run would cover the curves: one a run, beside the axes
        from matplotlib.lines import Line2D  # deferred, as every matplotlib import here

        handles = [Line2D([], [], color=c, marker="o", ms=3, label=run.name) for c, run in zip(colours, runs)]
        ax_acc.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                      ncol=math.ceil(len(runs) / 30), title="test solid, train dashed", title_fontsize=6)
    return _figure_uri(fig)


LEGEND_RUNS = 8  # up to this many runs the legend has an entry for each curve (test and train per run)


def _run_colours(n: int) -> list:
    """One colour per run: matplotlib's 10 (C0..C9) while they last, then n hues from a cyclic
    colour map (C{i} repeats every 10: runs 1 and 11 shared blue)."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    from matplotlib import colormaps  # deferred, as every matplotlib import here

    return [colormaps["hsv"](i / n) for i in range(n)]


def _draw_figures(run: _Run) -> None:
    """The run's figures as data URIs: the curves from metrics.jsonl (curves.png when it has none),
    the confusion matrix and mistakes of the evaluation (the training's confusion.png without it)."""
    smoothing = float((run.meta.get("train_config") or {}).get("label_smoothing") or 0.0)
    if run.history:
        run.figures["curves"] = _figure_uri(curves_figure(run.history, run.name, smoothing))
    elif (run.run_dir / "curves.png").is_file():
        run.figures["curves"] = _data_uri((run.run_dir / "curves.png").read_bytes())
    ev, classes = run.evaluation, run.meta["classes"]
    if ev is not None:
        run.figures["confusion"] = _confusion_uri(ev.confusion, classes, f"{run.name}: test confusion")
        if ev.mistakes is not None and len(ev.mistakes.true):
            run.figures["mistakes"] = _mistakes_uri(ev.mistakes, classes, run.meta["mean"], run.meta["std"])
    elif (run.run_dir / "confusion.png").is_file():
        run.figures["confusion"] = _data_uri((run.run_dir / "confusion.png").read_bytes())


# --- facts --------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):  # x86 Linux; elsewhere platform's answer
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """The machine this process runs on: CPU model, cores, torch version and the CPU capability
    torch's kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``), GPU when present."""
    info = {
        "CPU": _cpu_model(),
        "CPU cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "CPU capability (torch)": torch.backends.cpu.get_cpu_capability(),
        "torch threads": str(torch.get_num_threads()),
        "Python": platform.python_version(),
        "OS": platform.platform(),
    }
    if torch.cuda.is_available():
        info["GPU"] = torch.cuda.get_device_name()
    return info


def _wall_seconds(history: Sequence[dict]) -> float:
    """Wall time over all sessions: ``elapsed_seconds`` restarts at 0 when a run is resumed, so the
    last value of each session is summed. Records name their session; those of runs written before
    they did are split where ``elapsed_seconds`` goes down (a guess that misses a resumed session
    whose first epoch took longer than the previous session's last)."""
    if history and all("session" in h for h in history):
        last: dict[int, float] = {}
        for h in history:
            last[int(h["session"])] = float(h.get("elapsed_seconds") or 0.0)
        return sum(last.values())
    total, prev = 0.0, 0.0
    for h in history:
        elapsed = float(h.get("elapsed_seconds") or 0.0)
        if elapsed < prev:
            total += prev
        prev = elapsed
    return total + prev


def _train_seconds(history: Sequence[dict]) -> float:
    return sum(float(r.get("train_seconds") or 0.0) for r in history)


def _summary(run: _Run) -> dict[str, Any]:
    """The numbers of the side-by-side table (and of each run's heading)."""
    h, frozen = run.history, run.frozen
    evaluated = [r for r in h if r.get("test_acc") is not None]  # epochs with an evaluation (--eval-every)
    best = max(evaluated, key=lambda r: r["test_acc"]) if evaluated else {}
    params = run.meta.get("params") or {}
    return {
        "model": run.meta["arch"]["name"], "dataset": run.meta.get("dataset") or "?",
        "epochs": h[-1]["epoch"] if h else run.meta.get("epoch", 0),
        "params": int(params.get("trainable", 0)) + int(params.get("frozen", 0)),
        "num_train": (run.meta.get("training") or {}).get("num_train"),  # older runs lack it (before 2026-12-06)
        # without metrics, the accuracy this report measured (when it could evaluate)
        "final_test_acc": h[-1].get("test_acc") if h else run.evaluation.accuracy if run.evaluation else None,
        "final_from_report": not h and run.evaluation is not None,
        "best_test_acc": best.get("test_acc"), "best_epoch": best.get("epoch"),
        # None: not measured. Both phases of a finetune --freeze-epochs run; "main_*": metrics.jsonl's alone
        "train_seconds": _train_seconds(h) + _train_seconds(frozen) if h else None,
        "wall_seconds": _wall_seconds(h) + _wall_seconds(frozen) if h else None,
        "main_train_seconds": _train_seconds(h) if h else None, "main_wall_seconds": _wall_seconds(h) if h else None,
        "unfinished": _unfinished(run),
        # metrics.jsonl stops short of the checkpoint and model.json has no record to stand in: not final
        "short": bool(run.metrics_note) and run.from_meta is None,
    }


def _unfinished(run: _Run) -> tuple[int, int, int] | None:
    """Where a run that stopped before its last epoch stopped (:func:`~resnet_lab.runs.unfinished_at`;
    model.json's checkpoint record, else the last epoch of its metrics); None for a finished run."""
    return unfinished_at(run.meta, run.history[-1]["epoch"] if run.history else None)


def _unfinished_words(unfinished: tuple[int, int, int]) -> str:
    """Where an unfinished run stopped and how to go on, in evaluate's words (runs.stopped_words): the
    command or the Python call that started it, with --resume (resume=True)."""
    return f"unfinished: {stopped_words(*unfinished)}"


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
h3 { margin-top: 1.3em; } h4 { margin: 1em 0 .3em; }
.note { color: #8a5a00; background: #fff6e0; padding: .4em .7em; border-radius: 4px; white-space: pre-line; }
.muted { color: #666; } figure { margin: .5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; margin: .5em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; text-align: left; }
img[data-figure="confusion"] { max-width: 560px; }
td.text, th.text { text-align: left; } .cols { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
"""


def _esc(value: Any) -> str:
    """``value`` as HTML text; a name that is not valid UTF-8 (a class folder's) as display_name shows it."""
    return html.escape(display_name(str(value)), quote=True)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def _or_na(v: Any, fmt: str = "{}") -> str:
    """A number as ``fmt`` shows it, or n/a when it was not measured (None)."""
    return "n/a" if v is None else fmt.format(v)


def _cell(text: Any, key: str = "", value: Any = None) -> str:
    """A table cell; ``key`` and ``value`` (the exact number behind the text) as data attributes, so
    a reader or a test can take the figures without parsing their formatting."""
    attrs = f' data-key="{_esc(key)}"' if key else ""
    if value is not None:
        attrs += f' data-value="{_esc(repr(value) if isinstance(value, float) else value)}"'
    cls = "" if isinstance(value, (int, float)) and not isinstance(value, bool) else ' class="text"'
    return f"<td{cls}{attrs}>{_esc(text)}</td>"


def _table(name: str, headers: Sequence[str], rows: Iterable[Sequence[str]], run: str = "") -> str:
    """``rows`` are rows of ready-made ``<td>`` cells (see :func:`_cell`)."""
    data_run = f' data-run="{_esc(run)}"' if run else ""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f'<table data-table="{_esc(name)}"{data_run}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(uri: str, name: str, caption: str, run: str = "", alt: str = "") -> str:
    data_run = f' data-run="{_esc(run)}"' if run else ""
    return (f'<figure><img data-figure="{_esc(name)}"{data_run} alt="{_esc(alt or caption)}" src="{uri}">'
            f"<figcaption class=\"muted\">{_esc(caption)}</figcaption></figure>")


_EPOCH_COLUMNS = (  # metrics.jsonl key, header, format
    ("epoch", "epoch", "{:d}"), ("train_loss", "train loss", "{:.4f}"), ("train_acc", "train acc", "pct"),
    ("test_loss", "test loss", "{:.4f}"), ("test_acc", "test acc", "pct"), ("lr", "lr", "{:.4g}"),
    ("train_seconds", "train s", "{:.2f}"), ("images_per_second", "images/s", "{:.0f}"),
    ("elapsed_seconds", "elapsed s", "{:.2f}"),
)


def _epoch_cell(record: dict, key: str, fmt: str) -> str:
    v = record.get(key)
    if v is None:
        return _cell("", key)
    return _cell(_pct(v) if fmt == "pct" else fmt.format(v), key, v)


def _epochs_html(run: _Run) -> str:
    if not run.history:
        return f'<p class="note">{_no_metrics_words(run).capitalize()}: no epoch was recorded.</p>'
    s = _summary(run)
    unfinished = s["unfinished"]
    epochs = count(s["epochs"], "epoch") + (f" of {unfinished[1]}" if unfinished else "")
    times = (f"{epochs}: {s['main_train_seconds']:.1f} s training, {s['main_wall_seconds']:.1f} s wall time "
             "with the evaluations and checkpoints (elapsed restarts on each --resume; the sessions are added)")
    rows = [[_epoch_cell(r, key, fmt) for key, _, fmt in _EPOCH_COLUMNS] for r in run.history]
    if run.from_meta is not None:  # the last row is not metrics.jsonl's (see the note above)
        rows[-1][0] = _cell(f"{run.from_meta} (model.json)", "epoch", run.from_meta)
    table = _table("epochs", [h for _, h, _ in _EPOCH_COLUMNS], rows, run.name)
    if not run.frozen:
        return f"<p>{times}.</p>{table}"
    return _frozen_html(run, s) + f"<p>Main phase (all layers): {times}.</p>{table}"


def _frozen_html(run: _Run, s: dict[str, Any]) -> str:
    """The head-only phase of `finetune --freeze-epochs N`, a run of its own in RUN/freeze_phase/:
    its epochs' rows and times, and the whole run's times with it (``s``: the run's _summary)."""
    frozen = run.frozen
    rows = [[_epoch_cell(r, key, fmt) for key, _, fmt in _EPOCH_COLUMNS] for r in frozen]
    return (f"<p>Both phases: {s['train_seconds']:.1f} s training, {s['wall_seconds']:.1f} s wall time.</p>"
            f"<p>Frozen phase (--freeze-epochs: only the classifier trained; its records are {FROZEN_DIR}/metrics.jsonl):"
            f" {count(frozen[-1]['epoch'], 'epoch')}: {_train_seconds(frozen):.1f} s training, "
            f"{_wall_seconds(frozen):.1f} s wall time.</p>"
            + _table("frozen-epochs", [h for _, h, _ in _EPOCH_COLUMNS], rows, run.name))


def _per_class_html(run: _Run) -> str:
    ev = run.evaluation
    counts = ev.confusion.sum(1).tolist()
    rows = [[_cell(name, "class", name), _cell(_pct(acc), "accuracy", acc),
             _cell(int(ev.confusion[i, i]), "correct", int(ev.confusion[i, i])), _cell(counts[i], "images", counts[i])]
            for i, (name, acc) in enumerate(zip(run.meta["classes"], ev.per_class))]
    return _table("per-class", ["class", "accuracy", "correct", "images"], rows, run.name)


def _weights_words(name: str) -> str:
    """Which weights the report's evaluation used, in words."""
    return {"model.safetensors": "weights of the last epoch (model.safetensors)",
            "best.safetensors": "weights of the best evaluated epoch (best.safetensors)"}.get(name, f"weights in {name}")


def _test_set_html(run: _Run) -> str:
    """Confusion matrix, per-class accuracy and the mistakes, or the note saying why not."""
    ev, name = run.evaluation, run.name
    if ev is None:
        out = f'<p class="note">No evaluation on the test set: {_esc(run.data_note)}</p>'
        if "confusion" in run.figures:
            out += _figure(run.figures["confusion"], "confusion", "confusion matrix of the last training epoch "
                           "(confusion.png written by the training)", name)
        return out
    out = (f"<p>Accuracy <b>{_pct(ev.accuracy)}</b> on {ev.n} test images, loss {ev.loss:.4f} "
           f"(evaluated on {_esc(ev.device)} for this report, {_esc(_weights_words(run.weights))}; "
           f"the test images were {_esc(run.data_source)}).</p>")
    out += '<div class="cols"><div>' + _figure(run.figures["confusion"], "confusion", "confusion matrix (test set; "
                                               "rows: true class, shading: share of the row)", name)
    out += "</div><div><h4>Per-class accuracy</h4>" + _per_class_html(run) + "</div></div>"
    out += "<h4>Most confidently wrong test images</h4>"
    if "mistakes" in run.figures:
        out += _figure(run.figures["mistakes"], "mistakes", f"the {count(len(ev.mistakes.true), 'wrong prediction')} made "
                       "with the highest confidence (softmax probability of the predicted class)", name,
                       alt=_mistakes_alt(ev.mistakes, run.meta["classes"]))
    else:
        out += '<p class="muted">None to show (no mistakes, or --mistakes 0).</p>'
    return out


def _mistakes_alt(m: _Mistakes, classes: Sequence[str]) -> str:
    """The grid in words, image by image (for screen readers, and for whoever reads the page's text)."""
    return "; ".join(f"true {classes[int(t)]}, predicted {classes[int(p)]} ({100 * float(c):.0f}%)"
                     for t, p, c in zip(m.true, m.pred, m.confidence))


def _recipe_html(run: _Run) -> str:
    meta = run.meta
    arch = [[_cell(k, "name", k), _cell(v, k, v)] for k, v in meta["arch"].items()]
    data = {"dataset": meta.get("dataset"), "input size (C, H, W)": meta.get("input_size"),
            "classes": len(meta["classes"]), "mean": meta.get("mean"), "std": meta.get("std")}
    data_rows = [[_cell(k, "name", k), _cell(v, k, v)] for k, v in data.items()]
    config = [[_cell(k, "name", k), _cell(v, k, v)] for k, v in (meta.get("train_config") or {}).items()]
    out = '<div class="cols"><div><h4>Architecture</h4>' + _table("arch", ["field", "value"], arch, run.name)
    if isinstance(meta.get("whiten"), dict):  # --whiten: the first conv set from the training images and frozen
        whiten = [[_cell(k, "name", k), _cell(v, k, v)] for k, v in meta["whiten"].items()]
        out += "<h4>Whitened first conv (--whiten, frozen)</h4>" + _table("whiten", ["field", "value"], whiten, run.name)
    out += "<h4>Data</h4>" + _table("data", ["field", "value"], data_rows, run.name) + "</div>"
    out += "<div><h4>Training configuration</h4>" + _table("train_config", ["field", "value"], config, run.name)
    if meta.get("training"):  # runs saved before 2026-12-05 lack it
        batches = [[_cell(k, "name", k), _cell(_training_text(meta, k, v), k, v)] for k, v in meta["training"].items()]
        out += "<h4>Batches</h4>" + _table("training", ["field", "value"], batches, run.name)
    return out + "</div></div>"


def _training_text(meta: dict[str, Any], key: str, value: Any) -> Any:
    """A cell of the Batches table: a fact that does not apply (None) as n/a, and the crop of an
    augmented image folder, which is random-resized rather than padded, by its name."""
    if value is not None:
        return value
    folder_crop = key == "crop_padding" and meta.get("dataset") == "folder" and meta["training"].get("augment")
    return "random-resized crop" if folder_crop else "n/a"


def _transfer_words(entry: dict[str, Any]) -> str:
    """A fine-tuned run's origin in words, for its heading."""
    how = {"all": "all layers trained", "head": "only a new head trained",
           "last": f"trained from {entry.get('unfreeze_from')} on"}.get(entry.get("strategy"), "")
    return f"fine-tuned from {entry.get('source')} (strategy {entry.get('strategy')}{': ' + how if how else ''})"


def _transfer_html(run: _Run) -> str:
    """model.json's ``transfer`` entry of a fine-tuned run (`resnet-lab finetune`): where the weights
    came from, what was frozen, recreated (the classifier) and adapted (conv1 to other channels)."""
    entry = run.meta["transfer"]
    params = entry.get("params") or {}
    rows = [("strategy", "strategy", entry.get("strategy")), ("source", "source", entry.get("source")),
            ("source path", "source_path", entry.get("source_path")),
            ("source model", "source_arch", (entry.get("source_arch") or {}).get("name")),
            ("classifier", "classifier", entry.get("classifier")),
            ("trainable parameters", "trainable", params.get("trainable")),
            ("frozen parameters", "frozen", params.get("frozen")),
            ("recreated", "recreated", ", ".join(entry.get("recreated") or []) or "none"),
            ("adapted", "adapted", "; ".join(f"{k}: {v}" for k, v in (entry.get("adapted") or {}).items()) or "none")]
    rows += [(key, key, entry[key]) for key in ("unfreeze_from", "freeze_epochs", "phase") if key in entry]
    if entry.get("lr_scale"):
        rows.append(("lr_scale", "lr_scale", "; ".join(f"{k} x{v:g}" for k, v in entry["lr_scale"].items())))
    if entry.get("eval_norms"):
        rows.append(("frozen norm layers kept in eval mode", "eval_norms", entry["eval_norms"]))
    if entry.get("head"):
        rows.append(("new head", "head", ", ".join(f"{k} {v}" for k, v in entry["head"].items())))
    cells = [[_cell(label, "name", label), _cell(f"{v:,}", key, v) if isinstance(v, int) else _cell(v, key)]
             for label, key, v in rows if v is not None]
    return f"<p>{_esc(_transfer_words(entry))}.</p>" + _table("transfer", ["field", "value"], cells, run.name)


def _no_metrics_words(run: _Run) -> str:
    """Why a run has no epoch records: metrics.jsonl is missing, or there without one."""
    path = run.run_dir / "metrics.jsonl"
    if not path.is_file():
        return "no metrics.jsonl"
    return "metrics.jsonl is empty" if path.stat().st_size == 0 else "metrics.jsonl holds no whole epoch record"


def _run_html(run: _Run) -> str:
    s = _summary(run)
    out = f"<section data-run=\"{_esc(run.name)}\"><h2>{_esc(run.name)}</h2>"
    final = "last evaluated" if s["unfinished"] else "last recorded" if s["short"] else "final"
    best = (f"best test accuracy {_pct(s['best_test_acc'])} (epoch {s['best_epoch']}), {final} "
            f"{_pct(s['final_test_acc'])}" if s["best_epoch"] is not None else
            "no evaluated epoch in metrics.jsonl" if run.history else _no_metrics_words(run))
    stopped = f"; {_unfinished_words(s['unfinished'])}" if s["unfinished"] else ""
    origin = f", {_transfer_words(run.meta['transfer'])}" if isinstance(run.meta.get("transfer"), dict) else ""
    out += (f'<p class="muted">{_esc(s["model"])} on {_esc(s["dataset"])}{_esc(origin)}, {s["params"]:,} parameters; '
            f"{best}{_esc(stopped)}.</p>")
    if run.metrics_note:
        out += f'<p class="note">{_esc(run.metrics_note)}</p>'
    out += "<h3>Curves</h3>"
    source = "metrics.jsonl" if run.history else f"curves.png written by the training; {_no_metrics_words(run)}"
    if run.from_meta is not None:
        source += f", and model.json's record of epoch {run.from_meta}"
    out += (_figure(run.figures["curves"], "curves", f"loss and accuracy per epoch ({source})", run.name)
            if "curves" in run.figures else
            f'<p class="note">No curves: {_no_metrics_words(run)} and curves.png is missing.</p>')
    out += "<h3>Test set</h3>" + _test_set_html(run)
    if isinstance(run.meta.get("transfer"), dict):
        out += "<h3>Transfer</h3>" + _transfer_html(run)
    out += "<h3>Recipe</h3>" + _recipe_html(run)
    out += "<h3>Timings</h3>" + _epochs_html(run)
    return out + "</section>"


def _comparison_html(runs: Sequence[_Run]) -> str:
    rows = []
    for run in runs:
        s = _summary(run)
        unfinished = s["unfinished"]
        rows.append([
            _cell(run.name, "run", run.name), _cell(s["model"], "model", s["model"]),
            _cell(s["dataset"], "dataset", s["dataset"]),
            _cell(_pct(s["final_test_acc"]) + (" (last evaluated)" if unfinished else "")
                  + (" (last recorded)" if s["short"] and not unfinished else "")
                  + (" (this report's evaluation)" if s["final_from_report"] else ""), "final_test_acc",
                  s["final_test_acc"]),
            _cell(_pct(s["best_test_acc"]), "best_test_acc", s["best_test_acc"]),
            _cell(_or_na(s["best_epoch"]), "best_epoch", s["best_epoch"]),
            _cell(f"{s['epochs']} of {unfinished[1]} (unfinished)" if unfinished else s["epochs"], "epochs",
                  s["epochs"]),
            _cell(f"{s['params']:,}", "params", s["params"]),
            _cell(_or_na(s["num_train"], "{:,}"), "num_train", s["num_train"]),
            _cell(_or_na(s["train_seconds"], "{:.1f}"), "train_seconds", s["train_seconds"]),
            _cell(_or_na(s["wall_seconds"], "{:.1f}"), "wall_seconds", s["wall_seconds"]),
        ])
    headers = ["run", "model", "dataset", "final test acc", "best test acc", "best epoch", "epochs", "parameters",
               "training images", "train s", "wall s"]
    out = "<h2>Side by side</h2>" + _table("compare", headers, rows)
    return out + _figure(_compare_uri(runs), "compare", "the runs' curves on shared axes (test solid, train dashed)")


def _machine_html(runs: Sequence[_Run]) -> str:
    rows = [[_cell(k, "name", k), _cell(v, k, v)] for k, v in machine_info().items()]
    out = "<h2>Machine</h2><p>Where this report was made (and the test sets evaluated)."
    # A run's own machine, for a model.json that records one (a dict like machine_info's).
    trained = [(r.name, r.meta["machine"]) for r in runs if isinstance(r.meta.get("machine"), dict)]
    out += "</p>" if trained else " model.json does not record where a run trained.</p>"
    out += _table("machine", ["what", "value"], rows)
    for name, info in trained:
        rows = [[_cell(k, "name", k), _cell(v, k, v)] for k, v in info.items()]
        out += f"<h3>{_esc(name)} trained on</h3>" + _table("trained-on", ["what", "value"], rows, name)
    return out


def _page(runs: Sequence[_Run]) -> str:
    title = (f"resnet-lab report: {runs[0].name}" if len(runs) == 1
             else f"resnet-lab report: {len(runs)} runs ({', '.join(r.name for r in runs)})")
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="generator" content="{OUTPUT_MARK}"><title>{_esc(title)}</title>'
           f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>'
           f'<h1>{_esc(title)}</h1><p class="muted">made {made} by resnet-lab report</p>')
    if len(runs) > 1:
        out += _comparison_html(runs)
    for run in runs:
        out += _run_html(run)
    return out + _machine_html(runs) + "</body></html>\n"


MAX_MISTAKES = 256  # the most confidently wrong images a report shows: 32 rows of 8


def check_report_args(runs: Sequence[str | os.PathLike], *, data_dir: str | os.PathLike | None = None,
                      device: str | torch.device = "auto", mistakes: int = 16) -> None:
    """report_html's arguments, refused before any run is read (the CLI checks them before its notes)."""
    if not runs:
        raise ValueError("give at least one run directory to report on")
    check_distinct_runs(runs)  # the same run side by side with itself
    check_data_dir(data_dir, searched=True)  # a file: refused up front, not a note on every run
    if isinstance(mistakes, bool) or not isinstance(mistakes, int) or not 0 <= mistakes <= MAX_MISTAKES:
        # 100000 drew a 856 x 99526 px grid in 4 GB and a 20 MB page
        raise ValueError(f"mistakes (--mistakes) must be a whole number of images from 0 to {MAX_MISTAKES}, got "
                         f"{mistakes!r}")
    if device is None:
        raise ValueError("device must be auto, cpu, cuda, cuda:N or mps, got None")
    resolve_device(device)


def report_html(runs: Sequence[str | os.PathLike], *, data_dir: str | os.PathLike | None = None,
                device: str | torch.device = "auto", mistakes: int = 16) -> str:
    """The report of ``runs`` as one self-contained HTML page.

    Args:
        runs: run directories (or weights files inside them) written by ``resnet-lab train``.
        data_dir: where the runs' dataset lives (as ``--data-dir`` of ``evaluate``): a folder run's folder;
            a Fashion-MNIST or CIFAR run whose dataset it does not hold reads it from the usual places.
            None: the usual places.
        device: where the test sets are evaluated (``auto``: CUDA, then MPS, then the CPU).
        mistakes: how many of the most confidently wrong test images to show (0: none).

    Raises:
        FileNotFoundError: a run without model.json or weights.
        ValueError: no runs, ``mistakes`` outside 0..MAX_MISTAKES, or data whose classes differ from a run's.
    """
    runs = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)  # one run, not a list of its letters
    check_report_args(runs, data_dir=data_dir, mistakes=mistakes, device=device)
    dev = resolve_device(device)
    collected = [_collect(r, data_dir, dev, mistakes) for r in runs]
    if data_dir is not None and all(run.meta.get("dataset") == "fake" for run in collected):
        raise ValueError(f"--data-dir {data_dir} is not used: every run here was trained on the fake dataset, whose "
                         "images are made, not read; leave it out")
    for run in collected:
        _draw_figures(run)
    return _page(collected)


def write_report(runs: Sequence[str | os.PathLike], out: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`report_html` of ``runs`` to ``out`` (atomically) and return its path; ``kwargs``
    are report_html's (``data_dir``, ``device``, ``mistakes``). As the CLI, it refuses an ``out``
    that would destroy something (one of ``runs``, a run's file, a file resnet-lab did not write)."""
    runs = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    check_output_file(out, kind="HTML report", suffixes=(".html", ".htm"), inputs=tuple(runs))
    if Path(out).is_dir():  # say so before the evaluations, not after
        raise IsADirectoryError(f"--out {out} is a directory: give a file name inside it, "
                                f"e.g. {Path(out) / 'report.html'}")
    return atomic_write_text(out, report_html(runs, **kwargs))
