"""The pipeline a user would write, against `resnet-lab train` (issue 14, item 4).

The peer is the idiomatic torchvision pipeline: ``torchvision.datasets.FashionMNIST`` reading the
IDX files, per-sample transforms (``RandomCrop(28, padding=4)`` and ``RandomHorizontalFlip`` when
the recipe augments, then ``ToTensor`` and ``Normalize``), a ``DataLoader`` and a plain training
loop. It trains the same model with the same recipe as ``make demo`` on this CPU (``--bf16`` and
``resnet8_fast`` on a CPU with avx512_bf16 or AMX, ``resnet8_prepool`` in float32 elsewhere, as the
Makefile chooses): the flags are parsed by
resnet-lab's own argument parser, so both sides read the same epochs, batch size, learning rate,
label smoothing, momentum and weight decay; SGD with Nesterov momentum, weight decay on the >= 2-D
weights only, and the per-step schedule from ``resnet_lab.train.build_scheduler``; ``--channels-last``
and ``--bf16`` as a user writes them (``model.to(memory_format=...)``, ``torch.autocast``); ``--whiten``
through the library's ``whiten_first_conv`` on the first 5000 training images, as a user would call
it. Any other recipe option is refused in one line rather than silently left out.

Both run back to back on the same machine, one thread each (``OMP_NUM_THREADS=1``), each in its
own process: ``resnet-lab train`` and this script's ``--worker``. Reported as ratios: training time
per epoch (median over epochs) and training-loop time to the same test accuracy (by default the
best accuracy both reached; evaluation included, process start and data loading not), with each
whole command's wall time beside them.

torchvision gets the Debian package's files (``/usr/share/datasets/fashion-mnist``, or
``--data-dir``) unpacked in a temporary ``FashionMNIST/raw/`` folder, the layout it expects; nothing
is downloaded. The section of docs/BENCHMARKS.md is written only when both runs had a quiet
machine (``_common.Quietness``).

    .venv/bin/python benchmarks/peer_torchvision.py            # the demo recipe, 4 epochs each (~15-20 min)
    .venv/bin/python benchmarks/peer_torchvision.py --quick    # smoke run: 1 epoch of 1,024 images
    .venv/bin/python benchmarks/peer_torchvision.py --host icelake  # another machine: a block beside the first
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import (
    BENCHMARKS_MD, QuietMeter, Quietness, Section, add_host_arg, add_quiet_args, check_doc, check_host, command_line,
    host_key, host_title, machine_block,
    MAX_EPOCHS, at_most, markdown_table, accuracy_fraction, fail, now_utc, publish, python_name, setup_threads,
    verdict, wait_for_quiet,
)
from fashion_mnist import RECIPES, make_demo_recipe, native_precision
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision import transforms as T

from resnet_lab import create_model
from resnet_lab.cli import build_parser
from resnet_lab.data import select_subset
from resnet_lab.data.sources import DEBIAN_FASHION_MNIST
from resnet_lab.models import whiten_first_conv
from resnet_lab.train import TrainConfig, build_scheduler
from resnet_lab.train.optim import warmup_steps

__all__ = ["compare", "main", "missing_idx", "prepare_root", "recipe_flags", "time_to"]

ROOT = Path(__file__).resolve().parents[1]
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# The Fashion-MNIST training set's mean and std, as tutorials quote them (a user copies these).
MEAN, STD = (0.2860,), (0.3530,)
BLOCK = "peer"  # its block in --doc; --host NAME writes "peer-NAME" beside it
QUICK_SUBSET = 1024
WHITEN_IMAGES = 5000  # as `resnet-lab train --whiten` (airbench's count)
PER_EPOCH_GOAL, TO_ACCURACY_GOAL = 3.0, 5.0  # issue 14: >= 3x per epoch, >= 5x to 93% (own recipe vs peer's)
OURS, PEER = "resnet-lab train", "torchvision pipeline (peer)"


# ----------------------------------------------------------------------------- the recipe


def _with_flag(flags: list[str], name: str, value: str) -> list[str]:
    """``flags`` with ``name``'s value set to ``value`` (replaced in place, or appended)."""
    if name in flags:
        i = flags.index(name)
        return flags[:i + 1] + [value] + flags[i + 2:]
    return flags + [name, value]


def recipe_flags(*, epochs: int | None = None, augment: bool | None = None, subset: int | None = None,
                 data_dir: str | None = None) -> list[str]:
    """The `resnet-lab train` flags of ``make demo`` with the given changes; both sides get these.

    Args:
        epochs: replaces ``--epochs``.
        augment: True removes ``--no-augment``, False adds it, None keeps the demo's choice.
        subset: adds ``--subset N`` (train on N images, the same ones on both sides).
        data_dir: adds ``--data-dir``.
    """
    # the recipe and precision `make demo` trains on this CPU (--bf16 only where it is native)
    flags = shlex.split(native_precision(RECIPES[make_demo_recipe()][3]))
    if epochs is not None:
        flags = _with_flag(flags, "--epochs", str(epochs))
    if augment is True:
        flags = [f for f in flags if f != "--no-augment"]
    elif augment is False and "--no-augment" not in flags:
        flags.append("--no-augment")
    if subset is not None:
        flags = _with_flag(flags, "--subset", str(subset))
    if data_dir is not None:
        flags = _with_flag(flags, "--data-dir", data_dir)
    return flags


def missing_idx(source: str | Path) -> list[str]:
    """The Fashion-MNIST IDX files that ``source`` holds neither plain nor as ``.gz``."""
    return [name for name in IDX_FILES if not (Path(source) / name).is_file()
            and not (Path(source) / f"{name}.gz").is_file()]


def prepare_root(source: str | Path, root: str | Path) -> Path:
    """Lay the four Fashion-MNIST IDX files out as torchvision expects: ``root/FashionMNIST/raw/``,
    uncompressed (linked when ``source`` holds them uncompressed, unpacked from ``.gz`` otherwise).

    Args:
        source: a folder with the IDX files (``.gz`` or not), e.g. the Debian package's.
        root: the folder to hand to ``torchvision.datasets.FashionMNIST(root)``.

    Returns:
        ``root``.
    """
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        plain, packed = Path(source) / name, Path(source) / f"{name}.gz"
        if plain.is_file():
            (raw / name).symlink_to(plain.resolve())
        elif packed.is_file():
            with gzip.open(packed, "rb") as f, open(raw / name, "wb") as g:
                shutil.copyfileobj(f, g)
        else:
            raise FileNotFoundError(f"{packed} not found: --data-dir must hold the four Fashion-MNIST IDX files "
                                    "(apt-get install dataset-fashion-mnist puts them in "
                                    f"{DEBIAN_FASHION_MNIST})")
    return Path(root)


# ----------------------------------------------------------------------------- the peer: what a user writes


# The `resnet-lab train` options the peer carries out (or that change no number: where the run goes,
# the progress bar, the loader's worker count); any other option away from its default is refused.
PEER_OPTIONS = frozenset({"command", "model", "norm", "whiten", "dataset", "data_dir", "epochs", "lr", "batch_size",
                          "momentum", "no_nesterov", "weight_decay", "label_smoothing", "no_augment", "seed",
                          "schedule", "warmup_epochs", "subset", "channels_last", "bf16", "out", "no_progress",
                          "workers"})


def _check_recipe(ns: argparse.Namespace) -> None:
    """Refuse, in one line, a recipe option the peer would otherwise silently leave out."""
    defaults = build_parser().parse_args(["train", "--model", ns.model, "--dataset", ns.dataset])
    bad = [f"--{name.replace('_', '-')} {value}" for name, value in sorted(vars(ns).items())
           if name not in PEER_OPTIONS and value != getattr(defaults, name)]
    if ns.dataset != "fashion-mnist":
        bad.insert(0, f"--dataset {ns.dataset}")
    if bad:
        raise ValueError(f"the peer pipeline does not implement {', '.join(bad)}; it runs the plain SGD recipe on "
                         "fashion-mnist (change the recipe or extend the peer)")


def evaluate(model: torch.nn.Module, loader: DataLoader, ns: argparse.Namespace) -> float:
    """Test accuracy of ``model`` on ``loader`` (with the recipe's memory format and autocast)."""
    model.eval()
    correct = total = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=ns.bf16):
        for x, y in loader:
            correct += (model(_as_input(x, ns)).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def _as_input(x: torch.Tensor, ns: argparse.Namespace) -> torch.Tensor:
    """The batch in the recipe's memory format (``--channels-last``: NHWC, as the model)."""
    return x.contiguous(memory_format=torch.channels_last) if ns.channels_last else x


def run_peer(root: str, flags: list[str]) -> None:
    """Train as ``flags`` say with the torchvision pipeline; one line per epoch in ``--out``/metrics.jsonl.

    Args:
        root: the folder prepared by :func:`prepare_root`.
        flags: `resnet-lab train` flags (parsed by its own parser, so the recipe is the same).
    """
    ns = build_parser().parse_args(["train", *flags])
    _check_recipe(ns)
    augment = [] if ns.no_augment else [T.RandomCrop(28, padding=4), T.RandomHorizontalFlip()]
    to_input = [T.ToTensor(), T.Normalize(MEAN, STD)]
    train_set = datasets.FashionMNIST(root, train=True, transform=T.Compose([*augment, *to_input]))
    test_set = datasets.FashionMNIST(root, train=False, transform=T.Compose(to_input))
    if ns.subset:  # the same images resnet-lab's --subset picks
        train_set = Subset(train_set, select_subset(train_set.targets, ns.subset, ns.seed).tolist())
    train_loader = DataLoader(train_set, batch_size=ns.batch_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(ns.seed))
    test_loader = DataLoader(test_set, batch_size=ns.batch_size)

    torch.manual_seed(ns.seed)
    model = create_model(ns.model, num_classes=10, in_channels=1, norm=ns.norm or "batch")
    if ns.whiten:  # the library's patch whitening of the first training images, normalized, not augmented
        plain = datasets.FashionMNIST(root, train=True, transform=T.Compose(to_input))
        first = train_set.indices[:WHITEN_IMAGES] if ns.subset else range(min(WHITEN_IMAGES, len(plain)))
        whiten_first_conv(model, torch.stack([plain[i][0] for i in first]))
    if ns.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trained = [p for p in model.parameters() if p.requires_grad]  # not a whitened (frozen) first conv
    decay = [p for p in trained if p.ndim >= 2]  # conv and linear weights; not BN or biases
    rest = [p for p in trained if p.ndim < 2]
    lr = ns.lr if ns.lr is not None else TrainConfig.lr
    groups = [{"params": decay, "weight_decay": ns.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=ns.momentum, nesterov=not ns.no_nesterov)
    steps = len(train_loader)
    scheduler = build_scheduler(optimizer, ns.schedule, ns.epochs * steps, warmup_steps(ns.warmup_epochs, steps))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=ns.label_smoothing)

    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    for epoch in range(ns.epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in train_loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ns.bf16):
                loss = criterion(model(_as_input(x, ns)).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        train_seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "test_acc": evaluate(model, test_loader, ns), "train_seconds": train_seconds,
                  "images_per_second": steps * ns.batch_size / train_seconds,
                  "elapsed_seconds": time.perf_counter() - t_start}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"epoch {epoch + 1}/{ns.epochs}  test acc {100 * record['test_acc']:.2f}%  {train_seconds:.1f}s",
              flush=True)


# ----------------------------------------------------------------------------- side by side


@dataclasses.dataclass
class Outcome:
    """One contender's run: its per-epoch records, whole-command wall time and quietness."""

    name: str
    command: str
    records: list[dict]
    wall_s: float
    quiet: Quietness


def _shown(cmd: list[str], tmp: str) -> str:
    """``cmd`` as the reader would type it: from the repository root, the temporary folder as $TMP."""
    # the interpreter as command_line names it: never a ../../ path from the repository to a venv elsewhere
    text = shlex.join(cmd).replace(tmp, "$TMP").replace(sys.executable, python_name(sys.executable))
    return "OMP_NUM_THREADS=1 " + text.replace(f"{ROOT}{os.sep}", "")


def _run(name: str, cmd: list[str], out: Path, shown: str) -> Outcome:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread each
    print(f"[peer] {name}: {shown}", file=sys.stderr, flush=True)
    meter = QuietMeter(name, 1)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    quiet = meter.stop()  # the child has been waited for: its CPU time counts
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed with exit code {proc.returncode}: {shlex.join(cmd)}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return Outcome(name, shown, records, wall, quiet)


def time_to(records: list[dict], target: float) -> float | None:
    """Training-loop seconds until the end of the first epoch with test accuracy >= ``target`` (None: never)."""
    return next((r["elapsed_seconds"] for r in records if r["test_acc"] >= target), None)


def compare(ours: list[dict], peer: list[dict], target: float | None = None) -> dict:
    """The ratios of the section: peer over ours, so >1 means resnet-lab is faster.

    Args:
        ours, peer: per-epoch records (``test_acc``, ``train_seconds``, ``elapsed_seconds``).
        target: the accuracy to time (default: the best accuracy both reached).

    Returns:
        ``per_epoch_ours``, ``per_epoch_peer`` (median training seconds per epoch), ``per_epoch_ratio``,
        ``target``, ``to_target_ours``, ``to_target_peer`` (seconds or None), ``to_target_ratio`` (or None).
    """
    given = target is not None
    if target is None:
        target = min(max(r["test_acc"] for r in ours), max(r["test_acc"] for r in peer))
    e_ours = statistics.median(r["train_seconds"] for r in ours)
    e_peer = statistics.median(r["train_seconds"] for r in peer)
    t_ours, t_peer = time_to(ours, target), time_to(peer, target)
    return {"per_epoch_ours": e_ours, "per_epoch_peer": e_peer, "per_epoch_ratio": e_peer / e_ours,
            "target": target, "target_is_best": not given, "to_target_ours": t_ours, "to_target_peer": t_peer,
            "to_target_ratio": t_peer / t_ours if t_ours and t_peer else None}


def _section(outcomes: list[Outcome], c: dict, command: str, started: str, quick: bool,
             host: str | None = None) -> Section:
    fmt_t = lambda s: "not reached" if s is None else f"{s:.1f} s"  # noqa: E731
    rows = [[o.name, f"{statistics.median(r['train_seconds'] for r in o.records):.1f}",
             " / ".join(f"{100 * r['test_acc']:.2f}%" for r in o.records),
             fmt_t(time_to(o.records, c["target"])), f"{o.wall_s:.1f} s"] for o in outcomes]
    table = markdown_table(["pipeline", "s per epoch (training, median)", "test accuracy after each epoch",
                            f"time to {100 * c['target']:.2f}% (training loop)", "whole command"], rows)
    to_target = "n/a (not reached by both)" if c["to_target_ratio"] is None else f"**{c['to_target_ratio']:.2f}x**"
    checks = [o.quiet for o in outcomes]
    body = (
        f"### The `make demo` recipe, {len(outcomes[0].records)} epoch(s), one thread each, back to back\n\n"
        + ("Both sides run --bf16, which `make demo` passes only on a CPU with avx512_bf16 or amx_bf16.\n\n"
           if "--bf16" in outcomes[0].command else "")
        + "".join(f"- {o.name}: `{o.command}`\n" for o in outcomes)
        + "\n(`$TMP`: a temporary folder the script makes and removes.)\n\n" + table
        + f"\nresnet-lab is {c['per_epoch_ratio']:.2f}x as fast per epoch and {to_target} as fast to "
        f"{100 * c['target']:.2f}% test accuracy ({'the best both reached' if c['target_is_best'] else 'the --target given'}) "
        "as the pipeline a user would write.\n\n"
        "Time to accuracy counts the training loop from its first step to the end of the evaluation of the "
        "first epoch at that accuracy; each whole command adds process start, data loading and (resnet-lab) "
        "checkpoints and plots. The peer reads torchvision's FashionMNIST from the same IDX files, builds a PIL "
        "image and a tensor per sample, and normalizes with the published mean/std (0.2860, 0.3530).\n"
    )
    ratio = c["per_epoch_ratio"]
    summary = [("peer: resnet-lab train / torchvision pipeline, time per epoch (1 thread)", f"{ratio:.2f}x",
                f">= {PER_EPOCH_GOAL:g}", verdict(ratio, PER_EPOCH_GOAL))]
    head = machine_block(command, started, checks)
    title = host_title("8. Against the pipeline a user would write: torchvision + DataLoader", host)
    return Section(title, head + "\n" + body, summary, checks=checks, quick=quick)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"1 epoch of {QUICK_SUBSET:,} training images: checks the script runs")
    p.add_argument("--epochs", type=at_most(MAX_EPOCHS), default=None, help="epochs for both (default: the demo's)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop + flip on both sides (default: as the demo recipe, which has --no-augment)")
    p.add_argument("--target", type=accuracy_fraction, default=None,
                   help="accuracy to time, e.g. 0.9 (default: the best both reached)")
    p.add_argument("--data-dir", default=str(DEBIAN_FASHION_MNIST),
                   help="the Fashion-MNIST IDX files (default: %(default)s)")
    p.add_argument("--doc", default=BENCHMARKS_MD, help="the document whose 'peer' block is written (when quiet)")
    add_host_arg(p, BLOCK, "the figures")
    add_quiet_args(p)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # the peer's own process
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("flags", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.flags and not args.worker:
        p.error(f"unexpected arguments {' '.join(args.flags)}")
    check_host(args.host, "a block of the --doc")
    if args.root is not None and not args.worker:  # torchvision's word for the data folder: it was ignored
        fail(f"--root is the peer process's own flag, not a data folder: give the Fashion-MNIST IDX files with "
             f"--data-dir {args.root}")
    if not args.worker and not args.data_dir.strip():  # "" is the working folder, named blank in a refusal
        fail(f"--data-dir {args.data_dir!r} names no folder: give the one with the four Fashion-MNIST IDX files, or "
             f"leave --data-dir out ({DEBIAN_FASHION_MNIST})")
    if not args.worker and not args.quick:  # --quick writes nothing: a read-only checkout may smoke-run it
        check_doc(args.doc, "--doc")  # before either pipeline runs, not after both
    if not args.worker and not Path(args.data_dir).is_dir():  # before either pipeline starts
        p.error(f"--data-dir {args.data_dir} is not a folder: give the one with the four Fashion-MNIST IDX files "
                f"(apt-get install dataset-fashion-mnist puts them in {DEBIAN_FASHION_MNIST})")
    missing = [] if args.worker else missing_idx(args.data_dir)
    if missing:  # prepare_root would fail with a traceback, after the wait for a quiet machine
        fail(f"--data-dir {args.data_dir} lacks {', '.join(missing)} (or .gz): give the folder with the four "
             f"Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist puts them in {DEBIAN_FASHION_MNIST})")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run both pipelines back to back and publish the section; with ``--worker``, run the peer.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    if args.worker:
        run_peer(args.root, [f for f in args.flags if f != "--"])
        return 0
    setup_threads(1)  # the machine line names the contenders' one thread
    wait_for_quiet(args)
    flags = recipe_flags(epochs=1 if args.quick and args.epochs is None else args.epochs, augment=args.augment,
                         subset=QUICK_SUBSET if args.quick else None, data_dir=args.data_dir)
    started = now_utc()
    with tempfile.TemporaryDirectory(prefix="peer_torchvision_") as tmp:
        root = prepare_root(args.data_dir, Path(tmp) / "data")
        runs = {OURS: [sys.executable, "-m", "resnet_lab", "train"], PEER: [sys.executable, os.path.abspath(__file__),
                                                                          "--worker", "--root", str(root), "--"]}
        outcomes = []
        for name, head in runs.items():
            out = Path(tmp) / ("ours" if name == OURS else "peer")
            cmd = [*head, *flags, "--out", str(out), "--no-progress"]
            outcomes.append(_run(name, cmd, out, _shown(cmd, tmp)))
    c = compare(outcomes[0].records, outcomes[1].records, args.target)
    return publish(_section(outcomes, c, command_line(), started, args.quick, args.host), args, doc=args.doc,
                   key=host_key(BLOCK, args.host))


if __name__ == "__main__":
    sys.exit(main())
