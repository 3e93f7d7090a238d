"""The experiment registry: a list of module names; each module declares itself.

An experiment module (``resnet_lab/experiments/<name>.py``) has:

* ``NAME``: the name on the command line (``resnet-lab experiment NAME``);
* ``CLAIM``: the claim tested, one sentence with its source;
* ``run(ctx: Context) -> Report``: declares its runs for ``ctx.budget`` (``smoke`` or ``full``),
  trains them with ``ctx.train(spec)``, draws its plots into ``ctx.out`` and returns a
  :class:`~resnet_lab.experiments.report.Report` whose checks decide the verdict.

A module listed here but not (yet) present is skipped, so an experiment can land on its own.
"""

from __future__ import annotations

import difflib
import importlib
import os
import shlex
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from ..data.config import check_data_dir, check_seed
from ..runs import RunInUseError, RunLock
from ..train.device import resolve_device
from .._text import count
from .report import Report, verdict_text, write_report
from .runner import BUDGETS, Context

__all__ = ["EXPERIMENT_MODULES", "get_experiment", "list_experiments", "run_experiment"]

# Order of `resnet-lab experiment --list`.
EXPERIMENT_MODULES = (
    "degradation",
    "bn_convergence",
    "vanishing_gradients",
    "bn_batch_size",
    "very_deep",
    "bn_imbalance",
    "transfer",
    "bn_input_stats",
    "bn_sigmoid_range",
    "bn_regularization",
)


def _load(module_name: str) -> ModuleType | None:
    full = f"{__package__}.{module_name}"
    try:
        module = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:  # the module itself is absent (not yet written): skip it
            return None
        raise  # a missing dependency inside a present module is a real error
    for attr in ("NAME", "CLAIM", "run"):
        if not hasattr(module, attr):
            raise TypeError(f"experiment module {full} lacks {attr}; every experiment declares NAME, CLAIM "
                            "and run(ctx)")
    return module


def _experiments() -> dict[str, ModuleType]:
    found = {}
    for module_name in EXPERIMENT_MODULES:
        module = _load(module_name)
        if module is not None:
            found[module.NAME] = module
    return found


def list_experiments() -> dict[str, str]:
    """``{name: claim}`` of every available experiment, in the listing order."""
    return {name: module.CLAIM for name, module in _experiments().items()}


def get_experiment(name: str) -> ModuleType:
    """The module of experiment ``name``.

    Args:
        name: an experiment name (see :func:`list_experiments`).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    experiments = _experiments()
    if name not in experiments:
        close = difflib.get_close_matches(name, list(experiments), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ValueError(f"unknown experiment {name!r}: {hint}expected one of {', '.join(experiments)} "
                         "(resnet-lab experiment --list)")
    return experiments[name]


def check_experiment_out(out: str | os.PathLike) -> None:
    """Refuse an output folder whose contents a run would overwrite: earlier results (a full
    budget takes hours) or a training run. Raises FileExistsError naming the way out."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; an experiment writes a folder: choose another --out")
    for name, what in (("results.json", "the results of an earlier experiment"), ("model.json", "a training run")):
        if (out / name).exists():
            raise FileExistsError(f"--out {out} holds {what} ({name}), which this run would overwrite: choose "
                                  "another --out, or delete the folder to run it again")
    held = _first_entry(out)
    if held is not None:  # a run one folder down, an earlier report.md or plot: its names are the run's
        raise FileExistsError(f"--out {out} is not empty (it holds {held}), and an experiment writes its report, "
                              "plots and training runs there: choose a new or empty --out, or delete the folder "
                              "to run it again")


def _first_entry(folder: Path) -> Path | None:
    """Something in ``folder`` (hidden files aside), or None when it is missing or empty."""
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if not p.name.startswith(".")), None)


DEFAULT_ROOT = Path("runs/experiments")  # where an experiment without ``out`` writes: DEFAULT_ROOT/NAME[-N]


def claim_experiment_dir(out: str | os.PathLike | None, name: str) -> tuple[Path, RunLock]:
    """The output folder of a run of experiment ``name``, created and locked for this process.

    ``out`` is checked by :func:`check_experiment_out`, and one another process is writing is
    refused. Without ``out``: the first of ``runs/experiments/NAME``, ``NAME-2``... that is missing
    or empty and that no other process holds (two experiments started at once used to pick the
    same empty folder and write over each other's results)."""
    if out is not None:
        check_experiment_out(out)
        Path(out).mkdir(parents=True, exist_ok=True)
        lock = RunLock(out).acquire()
        check_experiment_out(out)  # what it holds may have changed before the lock was ours
        return Path(out), lock
    base, n = DEFAULT_ROOT / name, 0
    while True:
        n += 1
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if candidate.is_file() or _first_entry(candidate) is not None:
            continue
        candidate.mkdir(parents=True, exist_ok=True)
        lock = RunLock(candidate)
        try:
            lock.acquire()
        except RunInUseError:  # another experiment has just claimed it
            continue
        if _first_entry(candidate) is None:
            return candidate, lock
        lock.release()  # filled between the look and the lock


def reproducing_command(name: str, budget: str, out: str | os.PathLike, data_dir: str | None, device: str,
                        seed: int) -> str:
    """The CLI call that runs the experiment again as it was run: every argument that was not the
    default (the same base seed gives the same seeds)."""
    words = ["resnet-lab", "experiment", name, "--budget", budget, "--out", str(out)]
    for flag, value, default in (("--seed", seed, 0), ("--device", device, "auto"), ("--data-dir", data_dir, None)):
        if value != default:
            words += [flag, str(value)]
    return shlex.join(words)


def run_experiment(
    name: str,
    *,
    budget: str = "smoke",
    out: str | os.PathLike | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run experiment ``name`` and write ``results.json``, its plots and ``report.md`` into ``out``.

    Args:
        name: the experiment (see :func:`list_experiments`).
        budget: ``smoke`` (seconds; checks the pipeline, not the claim) or ``full`` (the real run).
        out: output folder, missing or empty (None: the first free ``runs/experiments/NAME``,
            ``NAME-2``...). It is locked while the experiment runs.
        data_dir: a folder where to look for datasets first (one that is not there is refused).
        device: ``auto``, ``cpu``, ``cuda``...
        seed: base seed of weights and data order.
        log: where progress lines go.

    Returns:
        The results written to ``results.json``, with ``verdict`` one of ``confirmed``,
        ``not confirmed``, ``mixed``.
    """
    module = get_experiment(name)
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    check_seed(seed, headroom=100)  # its runs count seeds up from it
    resolve_device(device)  # a bad device before any folder is made
    _check_data_root(data_dir)
    out, lock = claim_experiment_dir(out, name)
    try:
        with lock:
            return _run(module, name, budget, out, data_dir, device, seed, log)
    except KeyboardInterrupt as e:  # which folder this run claimed, whether it wrote into it yet, and finished
        e.experiment_dir, e.experiment_dir_empty = out, _first_entry(out) is None
        e.experiment_finished = (out / "results.json").is_file()  # written last (write_report)
        raise


def _check_data_root(data_dir: str | os.PathLike | None) -> None:
    """A dataset missing from ``data_dir`` is read from where the library looks without it; a
    ``data_dir`` that is no folder at all is a mistyped path, refused (it ran the whole experiment on
    the data found elsewhere, saying so only in report.md)."""
    if data_dir is None:
        return
    check_data_dir(data_dir)  # blank, or a file
    if not Path(data_dir).expanduser().exists():
        raise ValueError(f"data_dir (--data-dir) {data_dir} does not exist: give the folder that holds the datasets "
                         "(Fashion-MNIST, CIFAR-10...), or leave it out to search $RESNET_LAB_DATA, the Debian path "
                         "and the cache")


def _run(module: ModuleType, name: str, budget: str, out: Path, data_dir: str | None, device: str, seed: int,
         log: Callable[[str], None]) -> dict[str, Any]:
    ctx = Context(name, budget, out, data_dir=data_dir, device=device, seed=seed, log=log)
    t0 = time.perf_counter()
    report = module.run(ctx)
    if not isinstance(report, Report):
        raise TypeError(f"experiment {name}: run(ctx) must return a Report, got {type(report).__name__}")
    report.notes = [*report.notes, *(n for n in ctx.notes if n not in report.notes)]
    if ctx.fake_data and "data" in report.setup:  # the experiment describes the data it asked for
        report.setup = {**report.setup, "data": f"random images (`fake`: Fashion-MNIST was not found) in place of: "
                                                f"{report.setup['data']}"}
    if ctx.step_caps:  # the epochs a setup names were cut short: the reader must not count steps from them
        cuts = ", ".join(f"{count(k, 'step')} of {n}" for k, n in sorted(ctx.step_caps))
        report.setup = {**report.setup, "steps": f"the {budget} budget stops each epoch early ({cuts}): epoch counts "
                                                  "above are not steps, and notes on step counts do not hold at it"}
    seconds = time.perf_counter() - t0
    results = write_report(ctx.out, name, report, budget=budget, seconds=seconds, fake_data=ctx.fake_data,
                           command=reproducing_command(name, budget, ctx.out, data_dir, device, seed))
    log(f"[{name}] verdict: {verdict_text(results['verdict'], budget, ctx.fake_data)} ({seconds:.0f} s); "
        f"report in {ctx.out / 'report.md'}")
    return results
