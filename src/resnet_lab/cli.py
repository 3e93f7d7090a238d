"""Command-line interface: parse, call the library, print. Each sub-command is a few lines."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import itertools
import json
import logging
import math
import os
import re
import signal
import sys
import textwrap
import threading
import traceback
import warnings
from pathlib import Path

import torch

from . import __version__
from ._text import count, interrupted_words
from .analysis import summarize, write_report
from .analysis.report import check_report_args
from .data import DataConfig, InMemoryLoader, load_data
from .data.config import FOLDER_WORKERS, check_data_dir, check_image_size
from .data.folder import display_name, holds_out
from .data.transforms import TTA_PATTERNS
from .deploy.cam import cam_paths, require_cam, save_cams
from .deploy.export import export_run
from .deploy.predict import OnnxPredictor, iter_predictions
from .experiments import list_experiments, run_experiment
from .figures import check_png_path
from .models import check_input_size, create_model, list_models, meta_device, model_info, whiten_first_conv
from .models.registry import small_stem_only
from .nn import BatchNormBase
from .weights import is_weights_name
from .runs import (FROZEN_DIR, check_arch, check_distinct_runs, check_meta, check_output_file, is_safetensors, load_meta, load_model, missing_run, run_without_meta, same_test_data,
                   settle_run_dir, split_seed_of, trained_folder, unfinished_note, unwritable)
from .train import LRFindInterrupted, TrainConfig, evaluate, lr_find, plot_lr_find, resolve_device, train
from .train.config import DEFAULT_LR, LOOKAHEAD_ALPHA
from .train.checkpoint import check_new_run_dir
from .train.device import check_fp16
from .train.distributed import dist_env, distributed_errors, setup_distributed
from .transfer import check_transfer_options, finetune, load_source, transfer_model, with_source_preprocessing
from .transfer.finetune import check_not_a_train_run, check_unfreeze_from

__all__ = ["build_parser", "main"]


def _probability(text: str) -> float:
    """argparse type: a float in [0, 1], with an error that says so."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1 (0.5 is typical, 0 turns it off), got {text}")
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse's parser (each command's too), whose errors are one line and a pointer to --help:
    argparse put the whole usage block, a screenful for train, before the line that matters."""

    def error(self, message: str):
        what = "commands" if hasattr(self, "command_parsers") else "options"  # the top level's or a command's
        self.exit(2, f"{self.prog}: error: {message}\nsee `{self.prog} --help` for its {what}\n")

    def options(self) -> dict[str, argparse.Action]:
        """Each option string of this parser (its groups' too) and its action."""
        return {o: action for action in self._actions for o in action.option_strings}  # argparse's list of them

    def unrecognized(self, extra: list[str]) -> str:
        """argparse's "unrecognized arguments" message, with this command's closest option for each
        unknown one (`--epoch` -> `--epochs`; `-lr`, a long name with one dash, -> `--lr`)."""
        options = list(self.options())
        close = {}
        for word in extra:
            flag = word.split("=", 1)[0]
            long = "-" + flag if re.fullmatch(r"-[A-Za-z][\w-]+", flag) else flag  # not a number like -1e-3
            match = difflib.get_close_matches(long, options, n=1) if long.startswith("--") else []
            if match:
                close[flag] = match[0]
        hint = ", ".join(f"{m} (for {flag})" if len(close) > 1 else m for flag, m in close.items())
        return f"unrecognized arguments: {' '.join(extra)}" + (f"; did you mean {hint}?" if hint else "")

    def refuse_repeated(self, argv: list[str]) -> None:
        """A flag that takes a value, given twice: argparse kept the last one without a word (`--epochs 3
        ... --epochs 5` trained 5). A switch (--bf16) given twice loses nothing and passes; none of ours is
        meant to be repeated (no append or count action), and abbreviations are off (allow_abbrev)."""
        options, given = self.options(), {}
        for i, word in enumerate(argv):
            if word == "--":  # the rest are values
                return
            flag, eq, value = word.partition("=")
            action = options.get(flag)
            if action is None or action.nargs == 0 or (action.nargs == "?" and not eq and (
                    i + 1 == len(argv) or argv[i + 1].startswith("-"))):  # a switch, as `--small-input` alone
                continue
            if not eq:  # the words after it that argparse gives it
                count = action.nargs if isinstance(action.nargs, int) else 1
                value = " ".join(itertools.takewhile(lambda w: not w.startswith("--"), argv[i + 1:i + 1 + count]))
                value = value or "alone"
            if action in given:
                self.error(f"{flag} is given twice ({given[action]}, then {value}): give it once")
            given[action] = value


# Formats to nothing; a help text holding it is not given "(default: None)" by the formatter.
_NO_DEFAULT = "%(default).0s"

# --lr when not given, by --optimizer: train's from-scratch rates (TrainConfig's own, lr=None); finetune
# starts from a good point, so its SGD rate is a tenth of train's (docs/TRANSFER.md).
_TRAIN_LR = DEFAULT_LR
_FINETUNE_LR = {"sgd": 0.01, "adamw": 1e-3}
_DEVICE_HELP = "auto (cuda, then mps, else cpu) | cpu | cuda | cuda:N | mps"
# --image-size when not given, per command.
_NATIVE_SIZE = "28 Fashion-MNIST, 32 CIFAR and fake; folders: the median short side when all are <= 64 px, else 224"
_SOURCE_SIZE = "the weights' size when known (torchvision: 224), else " + _NATIVE_SIZE
_RUN_SIZE = "the size the run was trained at"
_EVAL_BATCH = 256  # evaluate's --batch-size when not given


def _lr_help(rates: dict[str, float], why: str = "") -> str:
    return (f"peak learning rate; when not given: {rates['sgd']:g} for sgd{why}, {rates['adamw']:g} for adamw"
            + _NO_DEFAULT)


def _cmd(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    # allow_abbrev=False: argparse took `finetune --norm group` for --norm-lr-scale (a prefix), and
    # `--norm 0.5` would have set the norm layers' rate; an unknown flag is an error, never a guess
    # the description is printed as written (RawDescription, for the example): wrapped here
    return sub.add_parser(name, help=help, description=f"{textwrap.fill(help, 79, break_on_hyphens=False)}\n\nexample:\n  {example}",
                          formatter_class=_Formatter, allow_abbrev=False)


def _add_data_args(p: argparse.ArgumentParser, required: bool = True, size: str = _NATIVE_SIZE) -> None:
    """The data flags; ``size``: what --image-size left out means for the command."""
    p.add_argument("--dataset", required=required, help="fashion-mnist | cifar10 | cifar100 | folder | fake"
                   + ("" if required else "; the run's own when not given") + _NO_DEFAULT)
    p.add_argument("--data-dir", help="where the dataset lives; when given, the only place searched (folder: one "
                   "sub-folder per class, or train/ and val/; Fashion-MNIST/CIFAR without it: $RESNET_LAB_DATA, "
                   "the Debian path, the cache)" + _NO_DEFAULT)
    p.add_argument("--download", action="store_true", help="download through torchvision when missing (needs internet)")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="image side in px, every dataset resized to it (folders: resized and cropped; fake: made "
                        f"at it); when not given: {size}" + _NO_DEFAULT)
    p.add_argument("--workers", type=int, default=None, help="processes that decode the images of a folder dataset "
                   f"(0: in this process); {FOLDER_WORKERS} when not given; in-memory datasets take none" + _NO_DEFAULT)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """The flags that build a new model (`train`, `lr-find`)."""
    p.add_argument("--model", required=True, help="a name from `resnet-lab models`" + _NO_DEFAULT)
    p.add_argument("--norm", choices=["batch", "scratch", "group", "none"], default=None,
                   help="the normalization layer of every block; batch when not given" + _NO_DEFAULT)
    p.add_argument("--small-input", choices=["auto", "yes", "no"], default="auto", nargs="?", const="yes",
                   help="3x3 stride-1 stem for small images; auto: yes when images are <= 64 px (the CIFAR "
                        "families, resnet20 and the like, always have it); the flag alone: yes, as in summary")
    p.add_argument("--zero-init-residual", action="store_true",
                   help="start each residual block as the identity: zero the last BN of its branch, or its last conv "
                        "where the branch ends in a conv (pre-activation and wide blocks) or has no BN (--norm none); "
                        "models with residual branches only")


def _add_step_args(g) -> None:
    """The flags that shape each training step (`train`, `finetune`, `lr-find`); see _step_config."""
    g.add_argument("--batch-size", type=int, default=128, help="training images per step (under torchrun: per "
                   "process)")
    g.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"],
                   help="sgd (with --momentum, Nesterov) or adamw")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (sgd only)")
    g.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov (with --momentum 0 "
                   "the update is plain SGD either way, and the flag is refused)")
    g.add_argument("--weight-decay", type=float, default=5e-4,
                   help="weight decay of the conv and linear weights (never norm layers or biases); 0: off")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing, in [0, 1); "
                   "0: off")
    g.add_argument("--grad-clip", type=float, default=None, help="clip the global gradient norm to this value; "
                   "no clipping when not given" + _NO_DEFAULT)
    g.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    g.add_argument("--seed", type=int, default=0, help="seed of the new weights, data order and augmentation; also of the --subset sample, and of "
                   "the fake dataset itself (its test split included)")
    g.add_argument("--device", default="auto", help=_DEVICE_HELP)


def _add_precision_args(g) -> None:
    """How the steps compute: memory format and autocast (train, finetune, lr-find)."""
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU with AVX512-BF16/AMX, or CUDA)")
    g.add_argument("--fp16", action="store_true", help="float16 autocast with a gradient scaler, for CUDA GPUs "
                   "without bfloat16 (T4, V100); refused on a CPU")


def _add_norm_lr_scale(g) -> None:
    g.add_argument("--norm-lr-scale", type=float, default=1.0, metavar="F",
                   help="multiply the learning rate of every norm layer's weight and bias by F (times any other "
                        "scale); airbench trains BN biases at a higher rate")


def _add_whiten(p) -> None:
    p.add_argument("--whiten", action="store_true",
                   help="set the first conv to the patch whitening of up to 5000 training images (airbench) and "
                        "freeze it; in-memory datasets only")


def _add_augment_args(g) -> None:
    """How the training batches are drawn and augmented (train, finetune, lr-find)."""
    g.add_argument("--random-erasing", type=_probability, default=0.0, metavar="P",
                   help="erase a random rectangle of each training image to the mean with probability P "
                        "(Zhong et al. 2017; 0.5 is typical)")
    g.add_argument("--flip", choices=["random", "alternate"], default="random",
                   help="horizontal flip of the training images: random (each image, each epoch, with probability "
                        "1/2) or alternate (airbench: a random half in the first epoch, then each image the opposite "
                        "of the epoch before); alternate: in-memory datasets only")
    g.add_argument("--crop-padding", type=int, default=None, metavar="PX",
                   help="pad-crop shift of the training images in pixels; 0: flip only, no crop (in-memory "
                        "datasets; when not given: side / 8, 4 px on Fashion-MNIST and CIFAR)" + _NO_DEFAULT)
    g.add_argument("--subset", type=int, metavar="N", help="train on N training images only, drawn at random (seeded) "
                   "with the same share of each class; all when not given" + _NO_DEFAULT)


def _add_sam(g) -> None:
    g.add_argument("--sam", type=float, default=0.0, metavar="RHO",
                   help="sharpness-aware minimization (Foret et al. 2021): step with the gradient taken at the "
                        "weights moved RHO uphill (0.05 is the paper's); each step costs two passes; 0: off")


def _add_no_progress(g, shown: str = "one line per epoch only") -> None:
    g.add_argument("--no-progress", action="store_true", help=f"no progress bar ({shown}); off a terminal (stderr "
                   "to a file or a pipe) none is drawn anyway")


def _add_train_args(p: argparse.ArgumentParser, lr_help: str = _lr_help(_TRAIN_LR),
                    size: str = _NATIVE_SIZE) -> None:
    """The data and training flags of `train` and `finetune`; ``lr_help``, ``size``: their own
    --lr and --image-size defaults."""
    _add_data_args(p, size=size)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    g.add_argument("--lr", type=float, default=None, help=lr_help)
    _add_step_args(g)
    g.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "step", "constant"],
                   help="learning-rate schedule: onecycle, cosine, step (/10 at 50%% and 75%% of training) or "
                        "constant")
    g.add_argument("--warmup-epochs", type=float, default=0.0,
                   help="linear warmup over this many epochs (at least one step when set; 0: none, except "
                        "onecycle's own ramp over the first quarter)")
    _add_augment_args(g)
    g.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="an image folder without train/ + val/: the share of each class held out as the test split, "
                        "between 0 and 1 (0.1 when not given); the run records it and evaluate and report hold out "
                        "the same images" + _NO_DEFAULT)
    _add_precision_args(g)
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms: bit-exact resume")
    g.add_argument("--checkpoint-segments", type=int, default=0, help="gradient checkpointing segments (very deep "
                   "nets); 0: off")
    g.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay per step (0.99 is "
                        "typical; BN statistics averaged too) and evaluate, save and report it; 0: off")
    g.add_argument("--lookahead", type=int, default=0, metavar="K", help="lookahead (Zhang et al. 2019): every K "
                   "steps the slow weights move --lookahead-alpha of the way to the fast ones, which restart there; "
                   "0: off")
    g.add_argument("--lookahead-alpha", type=float, default=None, metavar="A",
                   help=f"lookahead's slow step, in (0, 1) (1 would be no lookahead); only with --lookahead; {LOOKAHEAD_ALPHA} when not given"
                        + _NO_DEFAULT)
    _add_norm_lr_scale(g)
    g.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup (Zhang et al. 2018): train on blends of two images, the loss blended alike, the share "
                        "drawn per batch from Beta(ALPHA, ALPHA) (0.2 is typical); 0: off")
    g.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA",
                   help="CutMix (Yun et al. 2019): paste a rectangle of another image, the loss blended by area, "
                        "the share drawn per batch from Beta(ALPHA, ALPHA) (1 is typical); with --mixup each batch "
                        "uses one of the two; 0: off")
    _add_sam(g)
    g.add_argument("--progressive-resize", type=int, default=None, metavar="PX",
                   help="progressive resizing: train the first epoch on PX-pixel images, growing linearly to the "
                        "full size at the epoch 75%% of the way through; the last epoch always at full size, as "
                        "evaluation; off when not given" + _NO_DEFAULT)
    g.add_argument("--out", help="run directory (checkpoints, metrics.jsonl, curves.png); nothing is saved when not "
                   "given" + _NO_DEFAULT)
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--stop-after", type=int, metavar="N", help="stop after N epochs of the --epochs schedule "
                   "(to split a long run into sessions); --resume with the same command continues it; when not "
                   "given: all of them" + _NO_DEFAULT)
    g.add_argument("--eval-every", type=int, default=1, metavar="N",
                   help="evaluate on the test set every N epochs and after the last one (a --stop-after pause "
                        "evaluates only where the whole run would); the epochs between record no test figures and "
                        "cannot become best.safetensors")
    _add_no_progress(g)
    g.add_argument("--no-plots", action="store_true",
                   help="draw no curves.png and confusion.png (drawing both, after an improved epoch and the last, "
                        "takes about half a second: a sweep of short runs spends more on it than on training); "
                        "metrics.jsonl still has every figure, and a later --resume without it redraws them")
    g.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs to --out/tensorboard "
                   "(scalars, BN statistics, hyper-parameters); needs pip install 'resnet-lab[tensorboard]'")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="resnet-lab",
        description="Residual networks and batch normalization: build, train, transfer, reproduce, ship.",
        formatter_class=_Formatter,
        allow_abbrev=False,
        epilog="example:\n  resnet-lab train --model resnet20 --dataset fashion-mnist --epochs 10 --out runs/r20",
    )
    parser.add_argument("--version", action="version", version=f"resnet-lab {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_model_commands(sub)
    _add_training_commands(sub)
    _add_use_commands(sub)
    parser.command_parsers = sub.choices  # each command's parser, for its own usage line in errors
    return parser


def _add_model_commands(sub) -> None:
    """Build: `models`, `summary`."""
    p = _cmd(sub, "models", "List the registered models with their parameter counts.", "resnet-lab models 'resnet*'")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'resnet*'; a word without * ? [ matches anywhere in "
                   "the name (wrn is '*wrn*'); all models when not given" + _NO_DEFAULT)

    p = _cmd(sub, "summary", "Layer-by-layer table: output shapes, parameters, MACs.",
             "resnet-lab summary resnet18 --input-size 1 224 224 --num-classes 10")
    p.add_argument("model", help="a name from `resnet-lab models`")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="input shape, H and W in px; when not given: the model's own, 3 224 224 (3 32 32 for the "
                        "CIFAR families)" + _NO_DEFAULT)
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs; when not given: the model's "
                   "own, 1000 (10 for the CIFAR families)" + _NO_DEFAULT)
    p.add_argument("--small-input", choices=["auto", "yes", "no"], default="auto", nargs="?", const="yes",
                   help="3x3 stride-1 stem, no max-pool; auto: yes when --input-size is <= 64 px, as train decides "
                        "(the CIFAR families always have it); the flag alone: yes")
    p.add_argument("--norm", choices=["batch", "scratch", "group", "none"],
                   help="batch when not given" + _NO_DEFAULT)
    p.add_argument("--depth", type=int, default=3, help="module nesting depth shown")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def _add_training_commands(sub) -> None:
    """Train, transfer, reproduce: `train`, `lr-find`, `finetune`, `experiment`."""
    p = _cmd(sub, "train", "Train a model on a dataset.",
             "resnet-lab train --model resnet20 --dataset fashion-mnist --epochs 10 --out runs/r20")
    _add_model_args(p)
    _add_whiten(p)
    _add_train_args(p)
    g = p.add_argument_group("several processes (torchrun; finetune runs in one)")
    g.add_argument("--sync-bn", action="store_true", help="with torchrun: synchronize BatchNorm statistics across processes")
    g.add_argument("--scale-lr", action="store_true", help="with torchrun: scale --lr by the world size (Goyal et al. 2017)")

    p = _cmd(sub, "lr-find", "Learning-rate range test: steps at growing rates, the loss plot, a suggested lr.",
             "resnet-lab lr-find --model resnet20 --dataset fashion-mnist --batch-size 128 --out lr_find.png")
    _add_model_args(p)
    _add_whiten(p)
    _add_data_args(p)
    g = p.add_argument_group("range test (the model is left as it was)")
    _add_step_args(g)
    _add_augment_args(g)  # the steps and batches as training will take them (docs/LR_FINDER.md: test with those flags)
    _add_precision_args(g)
    _add_norm_lr_scale(g)
    _add_sam(g)
    _add_no_progress(g, "the result lines only")
    g.add_argument("--start-lr", type=float, default=1e-7, help="the first learning rate")
    g.add_argument("--end-lr", type=float, default=10.0, help="the last learning rate")
    g.add_argument("--steps", type=int, default=100,
                   help="optimizer steps at most; the test stops early once the smoothed loss exceeds 4x its minimum")
    g.add_argument("--out", metavar="PLOT.png", help="write the plot (loss against learning rate) here; no plot "
                   "when not given" + _NO_DEFAULT)

    p = _cmd(sub, "finetune", "Transfer a trained network to a new task.",
             "resnet-lab finetune --from runs/r20 --strategy last --dataset folder --data-dir pets/ --out runs/ft")
    p.add_argument("--from", dest="source", help="run dir, .safetensors, shipped weights MODEL:TAG "
                   "(resnet20:fashion-mnist), or torchvision:NAME[.WEIGHTS]; this or --from-file" + _NO_DEFAULT)
    p.add_argument("--from-file", help="instead of --from: a .pth/.safetensors state dict (with --model naming the "
                   "architecture)" + _NO_DEFAULT)
    p.add_argument("--model", help="architecture for --from-file (needed with it)" + _NO_DEFAULT)
    p.add_argument("--strategy", required=True, choices=["all", "last", "head"],
                   help="what trains: all (every layer), last (the classifier and the layers from --unfreeze-from "
                        "on) or head (only a new layer stacked on the classifier)" + _NO_DEFAULT)
    p.add_argument("--unfreeze-from", help="for --strategy last: first module that trains (e.g. layer3); the last "
                   "stage when not given" + _NO_DEFAULT)
    p.add_argument("--backbone-lr-scale", type=float, default=None, help="for all: backbone lr = head lr x this; "
                   "one rate for all when not given" + _NO_DEFAULT)
    p.add_argument("--freeze-epochs", type=int, default=0, help="for all: first train the head alone this many "
                   "epochs (before the --epochs)")
    _add_train_args(p, lr_help=_lr_help(_FINETUNE_LR, " (a tenth of train's)"), size=_SOURCE_SIZE)

    p = _cmd(sub, "experiment", "Run an experiment that tests a claim; writes results.json, plots and report.md.",
             "resnet-lab experiment degradation --budget smoke --out runs/exp")
    p.add_argument("name", nargs="?", help="experiment name (see --list); when not given: the list" + _NO_DEFAULT)
    p.add_argument("--list", action="store_true", help="list the experiments")
    p.add_argument("--budget", default=None, choices=["smoke", "full"],  # None: told from a given "smoke"
                   help="smoke (seconds: checks the pipeline, not the claim) or full (the real run); smoke when "
                        "not given" + _NO_DEFAULT)
    p.add_argument("--out", help="output directory, refused when it holds earlier results; when not given: "
                   "runs/experiments/NAME, or NAME-2... when that one does" + _NO_DEFAULT)
    p.add_argument("--data-dir", help="a folder: where to look for the datasets first (then, as without it, "
                   "$RESNET_LAB_DATA, the Debian path, the cache)" + _NO_DEFAULT)
    p.add_argument("--device", default=None, help=_DEVICE_HELP + "; auto when not given" + _NO_DEFAULT)
    p.add_argument("--seed", type=int, default=None, help="base seed of the weights and data order (several seeds: "
                   "seed, seed + 1, ...); 0 when not given" + _NO_DEFAULT)


def _add_use_commands(sub) -> None:
    """Use a trained run: `evaluate`, `predict`, `export`, `report`."""
    p = _cmd(sub, "evaluate", "Accuracy and per-class accuracy of a trained run (or an ensemble of runs).",
             "resnet-lab evaluate runs/r20 --json\n  resnet-lab evaluate runs/a runs/b --tta\n"
             "  resnet-lab evaluate resnet20:fashion-mnist   # the shipped weights (docs/WEIGHTS.md)")
    p.add_argument("run", nargs="+", help="run directory, .safetensors file or shipped weights MODEL:TAG "
                   "(resnet20:fashion-mnist); several: their averaged "
                   "probabilities are evaluated (an ensemble; each run once, however spelt)")
    _add_data_args(p, required=False, size=_RUN_SIZE)
    p.add_argument("--batch-size", type=int, default=_EVAL_BATCH, help="test images per batch")
    p.add_argument("--best", action="store_true", help="use best.safetensors instead of the last epoch")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the predictions for each image and its mirror image")
    p.add_argument("--tta-shift", type=int, default=0, metavar="PX",
                   help="test-time augmentation: also average the predictions for each view moved PX pixels up, "
                        "down, left and right (with --tta: 10 views); for models trained with a pad-crop of at "
                        "least PX (0: off)")
    p.add_argument("--tta-pattern", choices=TTA_PATTERNS, default="cross",
                   help="how --tta-shift moves the views: cross (PX pixels up, down, left and right) or diamond "
                        "(every way within PX pixels: 12 moves at 2 px, with --tta 26 views)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = _cmd(sub, "predict", "Top-k classes of image files.",
             "resnet-lab predict runs/r20 shoe.png shirt.jpg --top-k 3\n  resnet-lab predict resnet20:fashion-mnist shirt.png"
             "\n  resnet-lab predict runs/r20 trouser.png --cam cam.png")
    p.add_argument("run", nargs="?", help="run directory (its last epoch; RUN/best.safetensors for the best "
                   "evaluated one), .safetensors file or shipped weights MODEL:TAG (resnet20:fashion-mnist) (or use "
                   "--onnx)" + _NO_DEFAULT)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="the image files to classify")
    p.add_argument("--onnx", help="instead of RUN: an ONNX file written by `resnet-lab export` (runs on "
                   "onnxruntime)" + _NO_DEFAULT)
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="show the K most likely classes of each image")
    p.add_argument("--device", default="cpu", help="cpu | auto | cuda | cuda:N | mps (with --onnx: cpu)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--invert", action="store_true", help="invert the images' pixel values (transparency is "
                   "white first): a dark object on a light or transparent background for a model trained on "
                   "light objects on black, such as Fashion-MNIST's")
    p.add_argument("--cam", metavar="PATH", help="draw the Grad-CAM of the top class over each image (needs the "
                   "cam extra): one image: the picture PATH; several: the directory PATH, one IMAGE_cam.png each; "
                   "none when not given" + _NO_DEFAULT)

    p = _cmd(sub, "export", "Export a trained run (ONNX), optionally with BatchNorm folded into the convs.",
             "resnet-lab export runs/r20 --fuse-bn --out r20.onnx")
    p.add_argument("run", help="run directory (its last epoch; RUN/best.safetensors for the best evaluated one), "
                   ".safetensors file or shipped weights MODEL:TAG")
    p.add_argument("--fuse-bn", action="store_true", help="fold eval-mode BatchNorm into the preceding conv first (with torch's BN the ONNX "
                   "exporter folds a conv's BN anyway: the graph changes with --norm scratch; see docs/DEPLOY.md)")
    p.add_argument("--out", required=True, help="the .onnx file to write" + _NO_DEFAULT)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")

    p = _cmd(sub, "report", "One self-contained HTML page on trained runs: curves, confusion matrix, per-class "
             "accuracy, the most confidently wrong test images, recipe, machine, timings; several runs side by side.",
             "resnet-lab report runs/r20 --out report.html\n  resnet-lab report runs/a runs/b --out compare.html")
    p.add_argument("run", nargs="+", help="run directories (several: their curves on shared axes and a table; each "
                   "run once), a weights file in one (RUN/best.safetensors) or shipped weights MODEL:TAG")
    p.add_argument("--out", required=True, help="the HTML file to write" + _NO_DEFAULT)
    p.add_argument("--data-dir", help="the image folder of folder runs, and the first place searched for a built-in "
                   "dataset (then the usual places, as evaluate without it), so runs of both kinds share a page; "
                   "when a test set is not found, the report says so and leaves out the sections that need it"
                   + _NO_DEFAULT)
    p.add_argument("--mistakes", type=int, default=16, metavar="N",
                   help="show the N most confidently wrong test images, 0 to 256 (0: none)")
    p.add_argument("--device", default="auto", help="where the test sets are evaluated: " + _DEVICE_HELP)


# --- commands -------------------------------------------------------------------------------


def cmd_models(args) -> int:
    names = list_models(args.pattern)
    if not names:  # exit 2, as bad input; a misspelt name ("resent") gets the closest ones
        typed = re.sub(r"[*?\[\]]", "", args.pattern).lower()
        close = difflib.get_close_matches(typed, list_models(), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"no model matches {args.pattern!r}; {hint}`resnet-lab models` lists all")
    print(f"{'model':<22} {'family':<10} {'classes':>7} {'params':>10}")
    for name in names:
        info = model_info(name)
        with meta_device():  # count without allocating (resnet1202, vgg19...)
            n = sum(p.numel() for p in create_model(name, num_classes=info.num_classes).parameters())
        print(f"{name:<22} {info.family:<10} {info.num_classes:>7} {n / 1e6:>9.2f}M")
    return 0


def cmd_summary(args) -> int:
    info = model_info(args.model)  # the input size and classes the model is designed for
    size = tuple(args.input_size) if args.input_size else info.input_size
    if size[0] < 1:  # the library's message names its argument (in_channels), not the flag
        raise ValueError(f"--input-size must give at least 1 channel (C: 1 grayscale, 3 RGB), got "
                         f"{' '.join(map(str, size))} (C H W)")
    if any(v < 1 for v in size[1:]):  # before a model is built for it: torch's message names no flag
        raise ValueError(f"--input-size must give a height and width of at least 1 px, got {' '.join(map(str, size))} "
                         "(C H W)")
    if args.num_classes is not None and args.num_classes < 1:  # 0 is refused, not the default
        raise ValueError(f"--num-classes must be at least 1, got {args.num_classes}; leave it out for the model's "
                         f"own ({info.num_classes})")
    if args.depth < 1:
        raise ValueError(f"--depth must be at least 1 (1: the top-level modules), got {args.depth}")
    k = args.num_classes if args.num_classes is not None else info.num_classes
    with meta_device():  # shapes and MACs need no weights: vgg19's 143M were 2 s of allocation and init
        model = create_model(args.model, num_classes=k, in_channels=size[0], small_input=_small_input(args, size[1]),
                             norm=args.norm or "batch")
    _check_norm_flag(args, model)
    arch = dict(model.model_config)
    check_input_size(arch.pop("name"), size, flag="--input-size", **arch)
    s = summarize(model, size, depth=args.depth, device="meta")
    print(json.dumps(s.to_dict(), indent=2) if args.json else s.to_text())
    return 0


def _step_config(args) -> dict:
    """The TrainConfig fields of the flags _add_step_args adds (--batch-size and --no-augment go to _data_config)."""
    return dict(optimizer=args.optimizer, momentum=args.momentum, nesterov=not args.no_nesterov,
                weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, grad_clip=args.grad_clip,
                seed=args.seed, device=args.device)


def _lookahead_alpha(args) -> float:
    """--lookahead-alpha, refused without --lookahead even at its default value (given, it would do nothing)."""
    if args.lookahead_alpha is None:
        return LOOKAHEAD_ALPHA
    if not args.lookahead:
        raise ValueError(f"--lookahead-alpha {args.lookahead_alpha:g} only acts with lookahead on: add --lookahead K "
                         "(5 is the paper's) or drop --lookahead-alpha")
    return args.lookahead_alpha


def _train_config(args, out: str | None):
    lr = args.lr if args.lr is not None else _TRAIN_LR[args.optimizer]
    return TrainConfig(
        **_step_config(args), epochs=args.epochs, lr=lr, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        channels_last=args.channels_last, bf16=args.bf16, fp16=args.fp16, compile=args.compile,
        deterministic=args.deterministic, out=out,
        resume=args.resume, progress=not args.no_progress, plots=not args.no_plots,
        checkpoint_segments=args.checkpoint_segments,
        stop_after=args.stop_after, tensorboard=args.tensorboard, ema=args.ema, lookahead=args.lookahead,
        lookahead_alpha=_lookahead_alpha(args), norm_lr_scale=args.norm_lr_scale,
        progressive_resize=args.progressive_resize, mixup=args.mixup, cutmix=args.cutmix, eval_every=args.eval_every,
        sam=args.sam,
    )


def _data_config(args, **fields):
    """The data flags as a DataConfig, ``fields`` (DataConfig fields) on top; the flags a command
    does not have (evaluate: --no-augment, --subset, --seed, --random-erasing) keep their defaults."""
    flags = dict(
        name=args.dataset, data_dir=args.data_dir, download=args.download, image_size=args.image_size,
        num_workers=args.workers, batch_size=args.batch_size, augment=not getattr(args, "no_augment", False),
        subset=getattr(args, "subset", None), seed=getattr(args, "seed", 0),
        random_erasing=getattr(args, "random_erasing", 0.0), flip_mode=getattr(args, "flip", "random"),
        crop_padding=getattr(args, "crop_padding", None),
        **({"val_fraction": args.val_fraction} if getattr(args, "val_fraction", None) is not None else {}),
    )
    config = DataConfig(**{**flags, **fields})
    # given at its default (0.1) the library cannot tell it from left out: where it changes nothing, say so
    given = getattr(args, "val_fraction", None) is not None
    split_folder = config.name == "folder" and config.data_dir is not None and Path(config.data_dir).is_dir() \
        and not holds_out(config.data_dir)
    if given and (config.name != "folder" or split_folder):
        where = (f"{config.data_dir} has a val/ folder, which is the test split" if split_folder
                 else f"{config.name} has its own test split")
        raise ValueError(f"--val-fraction {args.val_fraction:g} holds out a share of an image folder without val/; "
                         f"{where}: leave it out")
    return config


def _load_data(args, *, device, shard: bool = False, **fields):
    """load_data with the data flags and ``fields``; with ``shard``, this rank's share under torchrun."""
    rank, world_size, device = _data_shard(device) if shard else (0, 1, device)
    return load_data(_data_config(args, device=device, rank=rank, world_size=world_size, **fields))


def _data_shard(device):
    """Under torchrun: (rank, world size, device) so each rank loads its shard onto its own GPU."""
    env = dist_env()
    if env.world_size > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", env.local_rank)  # the GPU setup_distributed will pick
    return env.rank, env.world_size, device


def cmd_train(args) -> int:
    device = resolve_device(args.device)
    check_fp16(device, args.fp16)  # before the data is loaded (an image folder is scanned whole)
    config = _train_config(args, args.out)
    _check_new_out(args)
    if args.resume:
        meta = _resumed_meta(args.out)
        check_arch(meta, args.out)  # a hand-edited arch is the file's fault, not --model's
        arch = dict(meta["arch"])
        _check_resumed_arch(args, arch)
        data = _load_data(args, device=device, in_channels=arch["in_channels"], shard=True)
        model = create_model(arch.pop("name"), **arch)
    else:
        _check_zero_init_flag(args)
        data = _load_data(args, device=device, shard=True)
        model = _new_model(args, data)
    meta = _whiten(args, model, data)
    if args.sync_bn and not any(isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, BatchNormBase))
                                for m in model.modules()):
        norm = model.model_config.get("norm")
        raise ValueError(f"--sync-bn: {args.model} with norm {norm} has no BatchNorm layer to synchronize: drop "
                         "--sync-bn")
    model = _maybe_distributed(model, args, config)
    with _distributed_errors():
        history = train(model, data, config, meta=meta)
    return _report_run(history, args)


def _check_new_out(args) -> None:
    """train's and finetune's --out for a new run, refused before the data is loaded (an image folder is
    scanned whole) in the words the trainer would use: a file, a folder holding a run or part of one."""
    if not args.out or args.resume:
        return
    if lost := run_without_meta(args.out):
        raise lost
    if args.command == "finetune" and (Path(args.out) / "model.json").is_file():
        check_not_a_train_run(Path(args.out))  # a finetune's own run: its plan is compared once the model is built
        return
    check_new_run_dir(args.out)


def _resumed_meta(out: str) -> dict:
    """model.json of the run --resume continues, after finishing a save a kill cut short."""
    if not Path(out).exists():
        raise missing_run(out)
    settle_run_dir(out)
    if lost := run_without_meta(out):
        raise lost
    if not (Path(out) / "model.json").is_file():
        raise FileNotFoundError(f"{out} holds no checkpoint yet (no model.json): nothing to resume (start without "
                                "--resume; in Python: resume=False)")
    return load_meta(out)


_WHITEN_IMAGES = 5000  # airbench's count: the patch covariance of 5000 CIFAR images is stable


def _whiten(args, model, data) -> dict | None:
    """--whiten: set the first conv to the patch whitening of the first training images (normalized,
    not augmented) and freeze it; the model.json entry that says so. A resumed run must match."""
    resume = getattr(args, "resume", False)  # lr-find has none
    saved = _resumed_meta(args.out).get("whiten") if resume else None
    if resume and bool(saved) != args.whiten:
        raise ValueError(f"{args.out} was trained {'with' if saved else 'without'} --whiten; resume with the "
                         "command the run was started with")
    if not args.whiten:
        return None
    if not isinstance(data.train, InMemoryLoader):
        raise ValueError(f"--whiten needs an in-memory dataset (fashion-mnist, cifar10, cifar100, fake), not "
                         f"{args.dataset}: image folders are streamed from disk with augmentation")
    done = whiten_first_conv(model, data.train.normalized_images(_WHITEN_IMAGES))
    return {"whiten": done.as_dict()}


def _check_resumed_arch(args, arch: dict) -> None:
    """--resume rebuilds the run's own model from model.json: a model flag given now must agree with it."""
    asked = {  # model.json key: (the flag as given, its value there; None when not given)
        "name": (f"--model {args.model}", args.model),
        "norm": (f"--norm {args.norm}", args.norm),
        "small_input": (f"--small-input {args.small_input}", {"yes": True, "no": False}.get(args.small_input)),
        "zero_init_residual": ("--zero-init-residual", True if args.zero_init_residual else None),
    }
    for key, (flag, value) in asked.items():
        saved = arch.get(key, False if key == "zero_init_residual" else None)
        if value is not None and value != saved:  # left out, a flag takes the run's value from model.json
            leave = "" if key == "name" else f", or leave {flag.split()[0]} out"
            raise ValueError(f"{flag} differs from the run in {args.out} ({key}: {saved}); resume with the command "
                             f"the run was started with{leave}")


def _check_norm_flag(args, model) -> None:
    """A --norm on a model without norm layers (the plain VGGs, which create_model records as
    norm none) would change nothing."""
    if args.norm not in (None, "none") and model.model_config["norm"] == "none":
        raise ValueError(f"{args.model} has no normalization layers, so --norm {args.norm} would change nothing: "
                         f"use {args.model}_bn, or leave --norm out")


def _small_input(args, height: int) -> bool | None:
    """--small-input (auto|yes|no) for images ``height`` px high; train, lr-find and summary decide alike.
    None for the families that are small-input by construction (create_model refuses False for them)."""
    if model_info(args.model).small_input:
        if args.small_input == "no":
            raise ValueError(small_stem_only(args.model, "--small-input no"))
        return None
    return height <= 64 if args.small_input == "auto" else args.small_input == "yes"


def _check_zero_init_flag(args) -> None:
    """--zero-init-residual on a family without residual branches (plain nets, DenseNet, VGG,
    GoogLeNet), before the data is loaded: its builder has no such option."""
    if args.zero_init_residual and "zero_init_residual" not in model_info(args.model).options:
        raise ValueError(f"--zero-init-residual: {args.model} has no residual branches; leave it out")


def _new_model(args, data):
    """The model the _add_model_args flags ask for, shaped for ``data``, its weights seeded by --seed."""
    c, h, _ = data.info.input_size
    small = _small_input(args, h)
    torch.manual_seed(args.seed)
    extra = {"zero_init_residual": True} if args.zero_init_residual else {}
    model = create_model(args.model, num_classes=len(data.info.classes), in_channels=c, small_input=small,
                         norm=args.norm or "batch", **extra)
    _check_norm_flag(args, model)
    return model


def cmd_lr_find(args) -> int:  # one process (ONE_PROCESS): every rank would run the test and write the same --out
    if args.out:  # before the range test, not after it
        if Path(args.out).is_dir():
            raise IsADirectoryError(f"--out {args.out} is a directory: give a file name inside it, e.g. "
                                    f"{Path(args.out) / 'lr_find.png'}")
        check_output_file(args.out, kind="PNG plot", suffixes=(".png",))
    device = resolve_device(args.device)
    check_fp16(device, args.fp16)  # before the data is loaded
    _check_zero_init_flag(args)
    data = _load_data(args, device=device)
    model = _new_model(args, data)
    arch = dict(model.model_config)
    check_input_size(arch.pop("name"), tuple(data.info.input_size), **arch)  # before the range test
    _whiten(args, model, data)  # the first conv training would start from
    config = TrainConfig(**_step_config(args), channels_last=args.channels_last, bf16=args.bf16, fp16=args.fp16,
                         norm_lr_scale=args.norm_lr_scale, sam=args.sam, progress=not args.no_progress)
    try:
        result = lr_find(model, data, config, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    except LRFindInterrupted as stop:  # what was measured is still shown (and plotted), then the exit of Ctrl-C
        _print_lr_find(stop.result, args)
        print(f"interrupted after {len(stop.result.lrs)} of {args.steps} steps", file=sys.stderr)
        return 130
    _print_lr_find(result, args)
    return 0


def _print_lr_find(result, args) -> None:
    """The test's outcome, its suggestion (or why there is none) and, with --out, the plot."""
    taken = len(result.lrs)
    how = ("the loss did not diverge" if not result.stopped else
           f"the loss diverged after {count(taken, 'step')}, at lr {result.lrs[-1]:.3g}" if taken else
           "the first loss was not finite")
    if result.interrupted:
        how = f"interrupted after {count(taken, 'step')}, at lr {result.lrs[-1]:.3g}" if taken else "interrupted before a step"
    print(f"lr range test of {args.model} on {args.dataset}, lr {args.start_lr:g} to {args.end_lr:g} in "
          f"{args.steps} steps: {how}")
    if result.valley is None and taken and not result.stopped:
        print(f"no suggestion: {count(taken, 'step')} {'is' if taken == 1 else 'are'} too few to show a valley; use more --steps (100 is fastai's)")
    elif result.valley is None and taken:
        print(f"no suggestion: the loss diverged after {count(taken, 'step')}, too soon to show a valley; lower --start-lr "
              f"(or --end-lr)")
    elif result.valley is None and not result.interrupted:  # the first loss comes before any update
        print("no suggestion: the first loss, before any update, was not finite; check the data and the model "
              "(a NaN or infinite input or weight)")
    elif result.valley is not None:
        steep = f"; steepest fall at {result.steep:.2e}" if result.steep is not None else ""
        print(f"suggested lr: {result.valley:.2e} (fastai's valley{steep}); try --lr {result.valley:.2g}")
    if args.out:
        _plot_lr_find(result, args)


def _plot_lr_find(result, args) -> None:
    """The plot at --out; an interrupted test beside an earlier plot there writes NAME.interrupted.png
    instead: the steps before a Ctrl-C (4 of 100, or none) replaced a whole test's curve."""
    out = Path(args.out)
    path, kept = out, ""
    if result.interrupted and out.exists():  # an earlier plot of ours: cmd_lr_find refused anything else
        path, kept = out.with_name(f"{out.stem}.interrupted.png"), f" (interrupted: the earlier plot {out} is kept)"
        try:
            check_png_path(path)
        except (ValueError, OSError) as e:  # not ours: written neither there nor over the earlier plot
            print(f"not plotted: the earlier plot {out} is kept, and {e}")
            return
    print(f"wrote {plot_lr_find(result, path, title=f'{args.model} on {args.dataset}')}{kept}")


def _report_run(history, args) -> int:
    """The last line of `train` and `finetune` (rank 0 only) and the exit code; a --stop-after pause
    was told by train itself, in one line."""
    if history.interrupted:
        return 130
    if history.epochs and _dist_rank() == 0 and history.last["epoch"] >= args.epochs:  # torchrun: rank 0 reports
        print(f"done: best test accuracy {100 * history.best_acc:.2f}% (epoch {history.best_epoch}) "
              f"in {history.seconds:.0f}s" + (f"; run in {args.out}" if args.out else ""))
    return 0


def _note_single_process(args) -> None:
    if args.sync_bn or args.scale_lr:
        print("note: --sync-bn/--scale-lr only matter under torchrun with several processes", file=sys.stderr)


def _maybe_distributed(model, args, config):
    """Under torchrun, hand over to the distributed helpers (DDP, SyncBatchNorm)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        _note_single_process(args)
        return model
    return setup_distributed(model, config, sync_bn=args.sync_bn, scale_lr=args.scale_lr)


def _dist_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _distributed_errors():
    """Under torchrun: a lost rank becomes a clear error, and the process group is left at the end."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
    return distributed_errors()


def _own_folder(run: str, meta: dict) -> str | None:
    """The folder a folder run trained on, for evaluate without --data-dir (a note names it); a
    refusal naming it when it is gone; None for runs that did not record it (then the data layer
    says that --data-dir is needed)."""
    recorded = (meta.get("training") or {}).get("folder")
    if trained_folder(meta):
        print(f"note: testing on the folder {run} trained on, {recorded} (--data-dir gives another)", file=sys.stderr)
        return recorded
    if isinstance(recorded, str):
        raise FileNotFoundError(f"{run} trained on the image folder {recorded}, which is gone: give its new place "
                                "with --data-dir")
    return None


def cmd_evaluate(args) -> int:
    _check_evaluate_flags(args)
    device = resolve_device(args.device)
    runs = list(args.run)
    check_distinct_runs(runs, which="best" if args.best else "model")  # not an ensemble of 2: the run itself
    loaded = [load_model(r, device, which="best" if args.best else "model") for r in runs]
    models, meta = [m for m, _ in loaded], loaded[0][1]
    for r, (_, m) in zip(runs, loaded):
        check_meta(m, r, ("input_size", "classes", "mean", "std"), "evaluate")
    _check_ensemble(runs, [m for _, m in loaded])
    given_dataset, args.dataset = args.dataset, args.dataset or meta.get("dataset")
    if not args.dataset:
        raise ValueError(f"{runs[0]} does not record its dataset; pass --dataset")
    if args.data_dir is None and args.dataset == meta.get("dataset") == "folder":
        args.data_dir = _own_folder(runs[0], meta)
    trained_at = meta["input_size"][1]
    if args.image_size is not None and args.image_size != trained_at:
        print(f"note: --image-size {args.image_size} differs from the {trained_at} px {runs[0]} was trained at: the "
              "figures are for test images resized to it", file=sys.stderr)
    args.image_size = trained_at if args.image_size is None else args.image_size
    if args.tta_shift >= args.image_size:  # found per batch, in words that named no flag
        raise ValueError(f"--tta-shift {args.tta_shift} moves the {args.image_size} px test images out of their frame: "
                         f"give fewer pixels than that (1 or 2 match a training pad-crop of that many)")
    # The run's own normalization, seed (which makes the fake data) and held-out split of a folder.
    seed = (meta.get("train_config") or {}).get("seed", 0)
    data = _load_data(args, device=device, in_channels=meta["input_size"][0], mean=tuple(meta["mean"]),
                      std=tuple(meta["std"]), seed=seed,
                      **same_test_data(meta, args.dataset, args.data_dir),
                      batch_size=1, eval_batch_size=args.batch_size)  # --batch-size is the test batch
    _check_evaluated_classes(data.info.classes, meta, given_dataset)
    ev = evaluate(models if len(models) > 1 else models[0], data.test, num_classes=len(meta["classes"]),
                  device=device, tta=args.tta, tta_shift=args.tta_shift, tta_pattern=args.tta_pattern,
                  fill=[-m / s for m, s in zip(meta["mean"], meta["std"])])  # a black pixel, normalized
    for r, (_, m) in zip(runs, loaded):  # after the evaluation: a note never comes with an error
        _note_unfinished(r, m, best=args.best)
    _print_evaluation(args, runs, meta["classes"], ev)
    return 0


def _check_evaluate_flags(args) -> None:
    """evaluate's flags that are wrong whatever the run: refused before any model loads."""
    if args.dataset is not None and not args.dataset.strip():  # "" would fall back to the run's dataset
        raise ValueError("--dataset is an empty string: give a dataset name (an unset shell variable?), or leave it "
                         "out for the run's own")
    check_image_size(args.image_size)  # before the note on another size than the run's, and before --tta-shift's check
    if args.batch_size < 1:  # DataConfig's message is the Python API's (eval_batch_size, None)
        raise ValueError(f"--batch-size must be at least 1 test image per batch, got {args.batch_size}: leave it out "
                         f"for {_EVAL_BATCH}")
    if args.tta_shift < 0:
        raise ValueError(f"--tta-shift must be 0 (off) or a positive number of pixels, got {args.tta_shift}")
    if args.tta_pattern != "cross" and not args.tta_shift:
        raise ValueError(f"--tta-pattern {args.tta_pattern} says how --tta-shift moves the views, and --tta-shift is 0 "
                         "(off): add --tta-shift PX, or drop --tta-pattern")


def _check_ensemble(runs: list[str], metas: list[dict]) -> None:
    """An ensemble must see the same inputs and classes, and a folder's runs the same held-out images."""
    meta = metas[0]
    for r, other in zip(runs[1:], metas[1:]):
        for key in ("classes", "input_size", "mean", "std", "dataset"):
            if other.get(key) != meta.get(key):
                raise ValueError(f"cannot ensemble {runs[0]} and {r}: their {key} differ "
                                 f"({meta.get(key)} vs {other.get(key)}); evaluate them one at a time")
        mine, theirs = ((split_seed_of(m), m.get("val_fraction")) for m in (meta, other))
        if meta.get("dataset") == "folder" and mine != theirs:
            # each held out other test images: one run's test images are the other's training images
            raise ValueError(f"cannot ensemble {runs[0]} and {r}: they hold out different test images of the "
                             f"folder (split seeds {mine[0]} and {theirs[0]}, shares {mine[1]} and {theirs[1]}), "
                             "so each would be scored on images the other trained on; evaluate them one at a time")


def _print_evaluation(args, runs: list[str], classes: list[str], ev: dict) -> None:
    """evaluate's result: JSON with --json, else a line and one line per class."""
    # a class without test images has no accuracy: null in JSON (NaN is not JSON), "no test images" in text
    per_class = {c: _finite(a) for c, a in zip(classes, ev["per_class_acc"])}
    if args.json:
        print(json.dumps({"runs": runs, "accuracy": ev["acc"], "loss": _finite(ev["loss"]), "n": ev["n"], "tta": args.tta,
                          "tta_shift": args.tta_shift, "tta_pattern": args.tta_pattern if args.tta_shift else None,
                          "per_class_accuracy": per_class,
                          "confusion": ev["confusion"].tolist()}, indent=2))
        return
    name = runs[0] if len(runs) == 1 else f"ensemble of {len(runs)} ({', '.join(runs)})"
    shifts = f"{args.tta_shift} px{' diamond' if args.tta_pattern == 'diamond' else ''} shift"
    views = (["flip"] if args.tta else []) + ([shifts] if args.tta_shift else [])
    how = f" with {' and '.join(views)} TTA" if views else ""
    print(f"{name}: accuracy {100 * ev['acc']:.2f}%{how} on {ev['n']} {args.dataset} test images, "
          f"loss {ev['loss']:.4f}")
    for cls, acc in per_class.items():
        cls = display_name(cls)  # a folder name that is not UTF-8 (b"b\xe9") as a terminal shows it
        print(f"  {cls:<20} {100 * acc:6.2f}%" if acc is not None else f"  {cls:<20}      - (no test images)")


def _check_evaluated_classes(classes, meta: dict, given_dataset: str | None) -> None:
    """The test data's classes are the model's; else the error, and with --dataset another than the
    run's the way out: the run's own dataset."""
    if list(classes) == list(meta["classes"]):
        return
    own = meta.get("dataset")
    way_out = f": drop --dataset to test on the run's own {own}" if given_dataset and own and given_dataset != own else ""
    raise ValueError(f"the dataset's classes {list(classes)} differ from the model's {meta['classes']}{way_out}")


def _note_unfinished(run: str, meta: dict, best: bool = False) -> None:
    """One stderr line for a run that stopped before its last epoch (--stop-after, Ctrl-C): its
    weights are those of that point, as the report and finetune say (runs.unfinished_note; ``best``:
    --best took the run's best weights)."""
    if note := unfinished_note(run, meta, best=best):
        print(f"note: {note}", file=sys.stderr)


def _names_a_model(arg: str) -> bool:
    """Whether a positional argument of predict is a model (a run directory, a weights file or shipped
    weights MODEL:TAG) rather than an image: argparse cannot tell them apart."""
    path = Path(arg)
    return ((path / "model.json").is_file() or (is_safetensors(path) and path.is_file())
            or (not path.exists() and is_weights_name(arg)))


def _predictions(args, images: list[str]):
    """The predictions of predict's model on ``images``, made lazily: the ONNX file's, or the run's.
    Refuses the combinations argparse cannot (--cam or a run beside --onnx, no run before the images);
    with --onnx, the first image argparse put into ``run`` goes back in front of ``images``."""
    if args.cam and args.onnx:
        raise ValueError("--cam needs the PyTorch model (Grad-CAM takes gradients), not --onnx: give the run "
                         "directory instead of --onnx FILE")
    if args.onnx:
        if args.run and _names_a_model(args.run):
            raise ValueError(f"give the model once: the run {args.run} or --onnx {args.onnx}, not both")
        if args.device not in ("cpu", "auto"):
            raise ValueError(f"--onnx runs on onnxruntime's CPU provider, not --device {args.device}: drop --device, "
                             "or give the run directory instead of --onnx to predict there")
        if args.run:  # argparse put the first image into `run`
            images.insert(0, args.run)
        return OnnxPredictor(args.onnx).iter_predict(images, top_k=args.top_k, invert=args.invert)
    if not args.run:
        given = images[0]
        if len(images) == 1 and _names_a_model(given):
            raise ValueError(f"no image given: add the image files after {given}, e.g. "
                             f"resnet-lab predict {given} shoe.png")
        raise ValueError("give a run directory (or --onnx FILE) before the images")
    return iter_predictions(args.run, images, top_k=args.top_k, device=resolve_device(args.device),
                            invert=args.invert)


def cmd_predict(args) -> int:
    images = list(args.images)
    if args.cam and not args.onnx and args.run:
        require_cam()  # the extra, before any prediction is made
        cam_paths(images, args.cam)  # every map's destination, too
    results = _predictions(args, images)
    results, failed = _print_predictions(results, args.json)
    cams = save_cams(args.run, images, args.cam, device=resolve_device(args.device), on_error="keep",
                     invert=args.invert) if args.cam and results else []
    cams = [cam for cam in cams if "error" not in cam]  # the files predict could not read, named already
    for r, cam in zip(results, cams):
        r["cam"] = cam["cam"]
    if args.json:  # NaN is not JSON: a probability of a model with non-finite weights is null
        print(json.dumps([{**r, "top": [[c, _finite(p)] for c, p in r["top"]]} for r in results], indent=2))
    else:
        for cam in cams:
            print(f"{cam['path']}: Grad-CAM of {display_name(cam['class'])} -> {cam['cam']}")
    return 2 if failed else 0


def _print_predictions(results, as_json: bool) -> tuple[list[dict], int]:
    """Print each prediction as it is made (text; JSON waits for them all) and each file that could
    not be read as one error line on stderr: one bad file among 300 used to cost all 300 predictions.
    Returns the predictions and the number of files that failed (the exit status is 2 if any did)."""
    good, failed = [], 0
    for r in results:  # the predictions first: a map that cannot be written loses none of them
        if "error" in r:
            failed += 1
            print(f"error: {r['error']}", file=sys.stderr, flush=True)
            continue
        good.append(r)
        if not as_json:
            top = ", ".join(f"{display_name(c)} {100 * p:.1f}%" for c, p in r["top"])
            print(f"{display_name(r['path'])}: {top}", flush=True)
    return good, failed


def cmd_finetune(args) -> int:
    """Read the source, load the target data with the weights' preprocessing, build and freeze the
    model, train."""
    check_transfer_options(args.strategy, args.unfreeze_from, args.backbone_lr_scale, args.freeze_epochs)
    if args.lr is None:
        args.lr = _FINETUNE_LR[args.optimizer]  # sgd: a tenth of train's; fine-tuning starts from a good point
    config = _train_config(args, args.out)  # its refusals (--tensorboard without the package...) before any loading
    if args.resume and args.out and not Path(args.out).exists():  # a frozen phase would start afresh there
        raise missing_run(args.out)
    _check_new_out(args)
    if args.out:  # before the source and the data are loaded, not after
        folder = next((p for p in (Path(args.out), *Path(args.out).parents) if p.exists()), Path("."))
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise unwritable(folder, args.out)
    # One process (ONE_PROCESS): freezing changes requires_grad between phases and locks BN modules
    # that SyncBatchNorm would replace; neither is wired through DDP yet.
    device = resolve_device(args.device)
    check_fp16(device, args.fp16)  # before the source and the data are loaded
    source = load_source(args.source, file=args.from_file, model=args.model)
    check_unfreeze_from(source, args.unfreeze_from)  # a misspelt module before the data is loaded
    for note in source.notes:  # notes on stderr, as every command's: stdout is for the results
        print(f"note: {note}", file=sys.stderr)
    data_config = with_source_preprocessing(_data_config(args, device=device), source)
    if args.val_fraction is not None:  # given: it wins over the share a folder source passed on
        if source.val_fraction is not None and args.val_fraction != source.val_fraction:
            print(f"note: {args.source} held out {source.val_fraction:g} of its folder; on that same folder "
                  f"--val-fraction {args.val_fraction:g} tests on other images, some of which it trained on",
                  file=sys.stderr)
        data_config = dataclasses.replace(data_config, val_fraction=args.val_fraction)
    if args.image_size is None and data_config.image_size is not None:
        # The input size travels with the weights (224 for torchvision's ImageNet weights).
        print(f"note: input size {data_config.image_size} px from the weights (--image-size changes it)",
              file=sys.stderr)
    data = load_data(data_config)
    torch.manual_seed(args.seed)  # the new classifier's initialization
    model, plan = transfer_model(
        source, args.strategy, num_classes=len(data.info.classes), in_channels=int(data.info.input_size[0]),
        classes=list(data.info.classes), unfreeze_from=args.unfreeze_from, backbone_lr_scale=args.backbone_lr_scale,
    )
    print(plan.describe())
    history = finetune(model, data, config, plan, freeze_epochs=args.freeze_epochs)
    return _report_run(history, args)


def _interrupted_experiment(given: str | None, folder: Path | None, empty: bool, finished: bool = False) -> str:
    """What an interrupted experiment left, naming the very folder it claimed (run_experiment says
    which: a guess at runs/experiments/NAME-N once sent a user to delete finished results)."""
    if folder is None:
        return "nothing was written (no folder was claimed yet)"
    if finished:  # the stop came after results.json, the last file written
        return f"the experiment had finished: its verdict is in {folder / 'report.md'} and {folder / 'results.json'}"
    if empty:
        return f"{folder} holds nothing yet (no verdict): the same command runs it again"
    if given:
        return (f"--out {given} is half-written (no verdict): give another --out, or delete {given} first, to run it "
                "again")
    return f"its folder {folder} is half-written (no verdict): delete it; a run without --out takes a new folder"


def cmd_experiment(args) -> int:
    if args.list and args.name is not None:  # the name would be ignored
        raise ValueError(f"--list lists every experiment and runs none: drop --list to run {args.name}, or drop "
                         f"{args.name} to see the list")
    # None: not given (a flag given at its default value, --budget smoke, is still given)
    given = [flag for flag, value in (("--budget", args.budget), ("--out", args.out), ("--data-dir", args.data_dir),
                                      ("--device", args.device), ("--seed", args.seed)) if value is not None]
    if (args.list or args.name is None) and given:  # they would be ignored
        raise ValueError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for running an experiment, and "
                         "none is named: add the experiment's name (see resnet-lab experiment --list)")
    if args.list or args.name is None:
        for name, claim in list_experiments().items():
            print(f"{name:<22} {claim}")
        return 0
    # without --out: runs/experiments/NAME, or NAME-2... never over earlier results
    try:
        run_experiment(args.name, budget=args.budget or "smoke", out=args.out, data_dir=args.data_dir,
                       device="auto" if args.device is None else args.device,
                       seed=0 if args.seed is None else args.seed)  # its last line: the verdict
    except KeyboardInterrupt as e:  # more than main's "interrupted": the folder it leaves is refused by a rerun
        where = _interrupted_experiment(args.out, getattr(e, "experiment_dir", None),
                                        getattr(e, "experiment_dir_empty", False),
                                        getattr(e, "experiment_finished", False))
        print(f"interrupted: {where}", file=sys.stderr)
        return 130
    return 0


@contextlib.contextmanager
def _printing_log(name: str):
    """Print the INFO lines of logger ``name`` (the library's summaries) to stdout while inside."""
    logger, handler = logging.getLogger(name), logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # once, even where the user's own logging is set up
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def cmd_export(args) -> int:
    with _printing_log("resnet_lab.deploy.export"):  # --fuse-bn: what was folded and what was kept, and why
        path = export_run(args.run, args.out, fuse=args.fuse_bn, opset=args.opset)
    print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:
    check_report_args(args.run, data_dir=args.data_dir, device=args.device, mistakes=args.mistakes)  # before the note
    if args.data_dir and not Path(args.data_dir).expanduser().exists():  # the page notes it; say so here too
        print(f"warning: --data-dir {args.data_dir} does not exist: the test-set sections will be a note saying so",
              file=sys.stderr)
    path = write_report(args.run, args.out, data_dir=args.data_dir, device=args.device, mistakes=args.mistakes)
    print(f"wrote {path}")
    return 0


COMMANDS = {
    "models": cmd_models, "summary": cmd_summary, "train": cmd_train, "evaluate": cmd_evaluate,
    "predict": cmd_predict, "finetune": cmd_finetune, "experiment": cmd_experiment, "export": cmd_export,
    "lr-find": cmd_lr_find, "report": cmd_report,
}


_OS_HINTS = {
    errno.EISDIR: "give a file name, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.ENOENT: "check the path (an output's folder must be one that can be created)",
}
_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM)
# The option that names where each command writes: the way out of an output that cannot be written
# (evaluate and summary write nothing of their own; a dataset's download is all they write)
_OUTPUT_OPTION = {"train": "--out", "finetune": "--out", "experiment": "--out", "export": "--out",
                  "report": "--out", "lr-find": "--out", "predict": "--cam"}


def _run_folder_of(e: OSError, args: argparse.Namespace) -> Path | None:
    """The run folder of train's or finetune's --out (the main run, or finetune's frozen phase in it)
    that holds the file ``e`` names; None for any other file (a dataset's download)."""
    out = getattr(args, "out", None)
    if args.command not in ("train", "finetune") or not out or not e.filename:
        return None
    target = Path(os.path.abspath(e.filename))
    return next((d for d in (Path(out) / FROZEN_DIR, Path(out))
                 if target.is_relative_to(os.path.abspath(d))), None)


def _run_write_hint(code: int, run_dir: Path, out: str) -> str:
    """The way out of a run's file that could not be written (or read): what is kept, how to go on."""
    if (run_dir / "train_state.pt").is_file():
        kept, go_on = "the last checkpoint is kept", "continue with the same command and --resume"
    elif (Path(out) / FROZEN_DIR / "train_state.pt").is_file():  # finetune's main phase, its frozen one finished
        kept, go_on = ("no checkpoint of this phase yet, the frozen phase's is kept",
                       "give the same command with --resume, which keeps the finished phase")
    elif code in _FULL:
        return "nothing was saved yet: free some disk space (or choose another --out), then run the same command again"
    elif code == errno.EROFS:
        return "the file system is read-only: choose another --out, or run the same command again once it is writable"
    else:
        return "check the permissions, or choose another --out"
    if code in _FULL:
        return f"{kept}: free some disk space, then {go_on}"
    if code == errno.EROFS:
        return f"the file system is read-only ({kept}): {go_on} once the folder is writable again"
    return f"check the permissions ({kept}: {go_on} once they are fixed)"


_EXPERIMENT_WHY = {errno.EROFS: "the file system is read-only: use a writable one",
                   **{code: "check the permissions" for code in _DENIED}}


def _os_hint(e: OSError, args: argparse.Namespace | None) -> str | None:
    """The way out of a failed file operation, in the words of the command that failed."""
    code = e.errno or 0
    run_dir = _run_folder_of(e, args) if args is not None else None
    if run_dir is not None and code in (*_FULL, *_DENIED, errno.EROFS):
        return _run_write_hint(code, run_dir, args.out)
    option = _OUTPUT_OPTION.get(getattr(args, "command", None))
    other = f"choose another output path ({option})" if option else "choose another path"
    if getattr(args, "command", None) == "experiment" and code in (*_FULL, *_DENIED, errno.EROFS):
        # what it wrote stays in --out, which a new experiment refuses: freeing space alone is no way out
        return (f"{_EXPERIMENT_WHY.get(code, 'free some disk space')}, then run it again with a new or empty "
                f"--out, or delete {args.out} first")
    # only a write fails for these: the file it would have replaced is still the earlier one
    kept = (f"; the earlier {Path(e.filename).name} is left as it was"
            if code in (*_FULL, errno.EROFS) and e.filename and os.path.isfile(e.filename) else "")
    if code in _FULL:
        return f"free some disk space or {other}{kept}"
    if code == errno.EROFS:
        return f"the file system is read-only: {other}{kept}"
    if code in _DENIED:
        return f"check the permissions (of an output: or {other})"
    return _OS_HINTS.get(code)


def _finite(value: float) -> float | None:
    """``value``, or None (JSON null) when it is NaN or infinite, which JSON cannot hold."""
    return value if math.isfinite(value) else None


def _missing_module_hint(e: Exception) -> str:
    """The way out of Python's bare "No module named 'X'" (our optional extras say theirs): a
    dependency of resnet-lab went missing from the environment."""
    if not isinstance(e, ModuleNotFoundError) or not e.name or str(e) != f"No module named {e.name!r}":
        return ""
    return (f": {e.name.split('.')[0]} is a dependency of resnet-lab that this Python environment lacks; reinstall "
            "resnet-lab's dependencies (pip install resnet-lab, or make setup in a checkout)")


def _describe_os_error(e: OSError, args: argparse.Namespace | None = None) -> str:
    """One line for a failed file operation: which file, what went wrong, what to do (``args``: the
    command's, whose outputs and runs the way out names)."""
    if e.filename is None or e.strerror is None:  # raised by us with a full message already
        return str(e)
    where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
    hint = _os_hint(e, args)
    return f"{where}: {e.strerror}" + (f"; {hint}" if hint else "")


class _PipeSafeStream:
    """stdout or stderr that goes on when its reader leaves (`resnet-lab train ... | head -2`,
    `2>&1 >/dev/null | head -1`): the writes after a BrokenPipeError go nowhere, so a training run
    is not ended by a closed pipe, nor an error line's exit status 2 turned into 1."""

    def __init__(self, stream) -> None:
        self._stream, self.broken = stream, False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.broken = True

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _pipe_safe_output():
    """The command's stdout and stderr as :class:`_PipeSafeStream`; a pipe that closed leaves its fd
    on /dev/null, so that Python's own flush at exit does not complain either."""
    out, err = _PipeSafeStream(sys.stdout), _PipeSafeStream(sys.stderr)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out._stream, err._stream
        for stream in (out, err):
            if stream.broken:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), stream._stream.fileno())


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops every command as Ctrl-C does ("interrupted", exit 130), wherever it lands:
    data loading, evaluation, an experiment between its runs. Training installs its own handler
    on top, which first saves the position."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# Path options where an empty string is a mistake (a shell variable that was not set), not "not
# given": argparse's dest -> the name the message shows.
_PATH_OPTIONS = {"out": "--out", "data_dir": "--data-dir", "onnx": "--onnx", "cam": "--cam", "source": "--from",
                 "from_file": "--from-file", "run": "RUN", "images": "IMAGES"}


def _refuse_empty_paths(args) -> None:
    for dest, shown in _PATH_OPTIONS.items():
        values = getattr(args, dest, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and not value.strip():
                what = "an empty string" if not value else f"blank ({value!r}, whitespace only)"
                raise ValueError(f"{shown} is {what}: give a path (an unset shell variable?)")


_OOM_TEXT = "can't allocate memory"  # torch's CPU allocator, as a plain RuntimeError
# A tensor size past int64: torch's size arithmetic (one line) or its argument parser (a C++ backtrace).
_OVERFLOW = re.compile(r"Storage size calculation overflowed|argument 'size' failed to unpack .*Overflow")


def _is_out_of_memory(e: BaseException) -> bool:
    return _OOM_TEXT in str(e) or bool(_OVERFLOW.search(str(e)))


def _out_of_memory(e: BaseException, args=None) -> str:
    asked = re.search(r"allocate (\d+) bytes", str(e)) or re.search(r"allocate ([\d.]+ [KMGT]iB)", str(e))
    size = " (more than 2^63 bytes asked)" if _OVERFLOW.search(str(e)) else ""
    if asked:
        size = (f" ({int(asked.group(1)) / 2**30:.1f} GiB asked)" if asked.group(1).isdigit()
                else f" ({asked.group(1)} asked)")
    # summary's --num-classes sizes the classifier: 10^12 classes asked 238418 GiB without naming it
    classes = getattr(args, "num_classes", None)
    flags = ((f"--num-classes (now {classes}), " if classes else "")
             + "--batch-size, --image-size (or summary's --input-size)")
    return f"out of memory{size}: lower {flags}, or pick a smaller model"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the CLI's errors read: one line, no source path and line of ours. Only line breaks
    (and the indentation around them) become one space: a file name's runs of spaces are kept."""
    return "warning: " + re.sub(r"[ \t]*\n\s*", " ", str(message).strip()) + "\n"


def _small_input_flag_alone(argv: list[str]) -> list[str]:
    """`summary --small-input resnet18`: the flag alone (yes) before the model name, which argparse
    would take as the flag's value ("invalid choice: 'resnet18'")."""
    if not argv or argv[0] != "summary":
        return argv
    out = []
    for i, word in enumerate(argv):
        out.append(word)
        follows = argv[i + 1] if i + 1 < len(argv) else None
        if word == "--small-input" and follows is not None and not follows.startswith("-") \
                and follows not in ("auto", "yes", "no"):
            out.append("yes")
    return out


def _refuse_unknown_command(parser: _Parser, argv: list[str]) -> None:
    """`resnet-lab trian`: argparse listed every command; the closest one is the likely meaning."""
    word = argv[0] if argv else "-"
    if word.startswith("--") and word.split("=", 1)[0] not in parser.options():  # `--verison`
        parser.error(parser.unrecognized([word]))
    if word.startswith("-") or word in parser.command_parsers:
        return
    close = difflib.get_close_matches(word, parser.command_parsers, n=1)
    parser.error(f"unknown command {word!r}; " + (f"did you mean {close[0]}?" if close else
                                                  f"the commands: {', '.join(parser.command_parsers)}"))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with options allowed between the positional runs and images of evaluate,
    report and predict (`predict RUN --top-k 3 IMAGE`): argparse leaves the positionals after an
    option unrecognized there, so they are joined back to the list they continue."""
    parser = build_parser()
    argv = _small_input_flag_alone(list(sys.argv[1:] if argv is None else argv))
    _refuse_unknown_command(parser, argv)
    if argv and argv[0] in parser.command_parsers:  # the command is the first word (the top level takes no value)
        parser.command_parsers[argv[0]].refuse_repeated(argv[1:])
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) in ("evaluate", "report", "predict") \
            and not any(e.startswith("-") for e in extra):
        if args.command == "predict":  # one list: the first of several is the model (cmd_predict tells)
            given = ([args.run] if args.run else []) + list(args.images) + extra
            args.run, args.images = given[0], given[1:]
        else:
            args.run = list(args.run) + extra
        return args
    if extra:  # argparse's error, in the name of the command it was given to (not the top level's)
        command = parser.command_parsers.get(args.command, parser)
        command.error(command.unrecognized(extra))
    return args


# The commands that run in one process: under torchrun they are refused (train alone takes it).
ONE_PROCESS = ("lr-find", "finetune", "evaluate", "predict", "export", "report", "experiment")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    with _pipe_safe_output():  # the error lines below too: a reader of stderr that left changed 2 into 1
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; every failure is one line on stderr and its exit status."""
    own_format = threading.current_thread() is threading.main_thread()  # a process-wide setting: main thread only
    plain_format = warnings.formatwarning
    if own_format:
        warnings.formatwarning = _one_line_warning
    # --compile on a CPU of a machine with a CUDA toolkit: inductor's build step logs "No CUDA runtime is
    # found, using CUDA_HOME=..." at WARNING, a line about nothing the user asked for
    extension_log = logging.getLogger("torch.utils.cpp_extension")
    extension_level = extension_log.level
    extension_log.setLevel(logging.ERROR)
    try:
        _refuse_empty_paths(args)
        if getattr(args, "data_dir", None) is not None:  # a file, before any run, source or data is read
            check_data_dir(args.data_dir, searched=getattr(args, "dataset", None) != "folder")
        if args.command in ONE_PROCESS and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # every rank would run the whole job and write the same files (experiment: refused by
            # its own lock as "another process"); only train takes torchrun
            raise RuntimeError(f"resnet-lab {args.command} runs in one process; start it without torchrun")
        with _sigterm_as_interrupt():
            return COMMANDS[args.command](args) or 0
    except KeyboardInterrupt as e:
        print(interrupted_words(e), file=sys.stderr)
        return 130
    except OSError as e:  # missing, unreadable or unwritable files, full disks
        print(f"error: {_describe_os_error(e, args)}", file=sys.stderr)
        return 2
    except (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError)) as e:  # the name is torch >= 2.5
        print(f"error: {_out_of_memory(e, args)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RuntimeError, ImportError) as e:  # bad input or a missing extra, named
        print(f"error: {_out_of_memory(e, args) if _is_out_of_memory(e) else e}{_missing_module_hint(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else is our bug: still one line, the traceback on request
        if os.environ.get("RESNET_LAB_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off"):
            traceback.print_exc()  # and still the documented exit status
        print(f"error: {type(e).__name__}: {e} (unexpected: set RESNET_LAB_DEBUG=1 to see the traceback, "
              "and please report it)", file=sys.stderr)
        return 3
    finally:
        extension_log.setLevel(extension_level)
        if own_format and warnings.formatwarning is _one_line_warning:
            warnings.formatwarning = plain_format
