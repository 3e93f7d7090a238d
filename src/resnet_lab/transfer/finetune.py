"""The three transfer strategies as one path: source -> model -> (phases of) training.

* ``all``: every pretrained weight that fits is loaded (the classifier is re-created when the
  class count, or the known class names, differ), all layers train; optionally the backbone at a
  fraction of the head's learning rate (discriminative learning rates, Howard & Ruder 2018, as
  fastai's ``fine_tune``) and a first phase of ``freeze_epochs`` with the backbone frozen.
* ``last``: everything before a module (default: the last stage) is frozen; it and everything
  after it, the classifier included, train.
* ``head``: the pretrained classifier stays as it is; a new Linear (old classes -> new classes)
  is stacked on it and is the only thing that trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..data import DataConfig
from ..data.config import DEFAULT_VAL_FRACTION
from ..data.folder import holds_out
from ..models import create_model, meta_device
from ..models.registry import check_num_classes
from ..runs import FROZEN_DIR, arch_outputs, load_meta, settle_run_dir
from ..train import train
from ..train.loop import FROZEN_PHASE
from ..train.checkpoint import recipe_values_differ
from .adapt import LoadReport, adapt_mean_std, load_pretrained
from .freeze import count_params, default_unfreeze_point, freeze, params_from, unfreeze
from .heads import add_head, classifier_linear_name, head_param_names
from .sources import WeightSource

__all__ = [
    "STRATEGIES", "TransferPlan", "check_transfer_options", "finetune", "transfer_model",
    "with_source_preprocessing",
]

STRATEGIES = ("all", "last", "head")


@dataclass
class TransferPlan:
    """How a model was made from pretrained weights (recorded in ``model.json`` as ``transfer``).

    Attributes:
        strategy: ``all``, ``last`` or ``head``.
        origin: where the weights came from.
        source_arch: the architecture of the weights.
        source_digest: SHA-256 of the weights' values (:func:`state_digest`), so that a resume knows a
            source file written again with the same architecture but other values.
        classifier: module name of the classifier's final Linear.
        trainable, frozen: parameter values that train / stay fixed.
        load: what loading did (adapted first conv, re-created classifier).
        unfreeze_from: for ``last``: the first module that trains.
        head: for ``head``: ``{"module", "num_classes", "old_classes"}`` of the stacked layer.
        lr_scale: ``{param-name prefix: factor}`` for the trainer (``all`` with a backbone scale).
        eval_norms: norm layers locked in eval mode.
        mean, std, input_size: the preprocessing that travelled with the weights.
    """

    strategy: str
    origin: str
    source_arch: dict[str, Any]
    classifier: str
    trainable: int
    frozen: int
    load: LoadReport
    unfreeze_from: str | None = None
    head: dict[str, Any] | None = None
    lr_scale: dict[str, float] = field(default_factory=dict)
    eval_norms: list[str] = field(default_factory=list)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, ...] | None = None
    source_digest: str | None = None

    def to_meta(self) -> dict[str, Any]:
        """The ``transfer`` entry of ``model.json`` (``transfer.head`` lets ``load_model`` rebuild)."""
        entry: dict[str, Any] = {
            "strategy": self.strategy, "source": self.origin, "source_path": _absolute(self.origin),
            "source_arch": self.source_arch,
            **({"source_digest": self.source_digest} if self.source_digest else {}),
            "classifier": self.classifier,
            "params": {"trainable": self.trainable, "frozen": self.frozen},
            "adapted": self.load.adapted, "recreated": self.load.recreated,
        }
        if self.unfreeze_from:
            entry["unfreeze_from"] = self.unfreeze_from
        if self.head:
            entry["head"] = self.head
        if self.lr_scale:
            entry["lr_scale"] = self.lr_scale
        if self.eval_norms:
            entry["eval_norms"] = len(self.eval_norms)
        return {"transfer": entry}

    def describe(self) -> str:
        what = {"all": "all layers train", "head": f"only the new head on {self.classifier} trains",
                "last": f"trains from {self.unfreeze_from} on"}[self.strategy]
        lines = [f"transfer ({self.strategy}) from {self.origin}: {what}",
                 f"  {self.load.summary()}",
                 f"  {self.trainable:,} trainable / {self.frozen:,} frozen parameters"
                 + (f"; {len(self.eval_norms)} frozen norm layers kept in eval mode" if self.eval_norms else "")]
        if self.lr_scale:
            lines.append(f"  learning-rate factors: {self.lr_scale}")
        return "\n".join(lines)


def check_transfer_options(
    strategy: str, unfreeze_from: str | None, backbone_lr_scale: float | None, freeze_epochs: int = 0
) -> None:
    """Refuse a strategy option that does not apply to the strategy, with the flag named."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if unfreeze_from is not None and not isinstance(unfreeze_from, str):
        raise TypeError(f"unfreeze_from must be a module name such as 'layer3', got {type(unfreeze_from).__name__} "
                        f"{unfreeze_from!r}")
    if unfreeze_from == "":  # was taken as not given (training from the last stage) with any strategy
        raise ValueError("--unfreeze-from '' is not a module name: give the first module that trains with --strategy "
                         "last (e.g. layer3), or leave it out (the last stage)")
    if unfreeze_from is not None and strategy != "last":
        raise ValueError(f"--unfreeze-from applies to --strategy last, not {strategy}")
    if backbone_lr_scale is not None:
        if strategy != "all":
            raise ValueError(f"--backbone-lr-scale applies to --strategy all, not {strategy}")
        if not (math.isfinite(backbone_lr_scale) and backbone_lr_scale > 0):  # inf named lr_scale, not the flag
            raise ValueError(f"--backbone-lr-scale must be a finite number > 0 (e.g. 0.1), got {backbone_lr_scale}")
    if freeze_epochs:
        if strategy != "all":
            raise ValueError(f"--freeze-epochs applies to --strategy all, not {strategy}")
        if freeze_epochs < 0:
            raise ValueError(f"--freeze-epochs must be >= 0, got {freeze_epochs}")


def check_unfreeze_from(source: WeightSource, unfreeze_from: str | None) -> None:
    """Refuse an ``unfreeze_from`` that names no module with parameters of ``source``'s architecture,
    before any data is loaded: the target model has the same module names (only the classifier's
    size and the first conv's channels follow the data). Built on the meta device: nothing allocated."""
    if unfreeze_from is None:
        return
    arch = dict(source.arch)
    with meta_device():
        model = create_model(arch.pop("name"), **arch)
    params_from(model, unfreeze_from)


def transfer_model(
    source: WeightSource,
    strategy: str,
    *,
    num_classes: int,
    in_channels: int | None = None,
    classes: Sequence[str] | None = None,
    unfreeze_from: str | None = None,
    backbone_lr_scale: float | None = None,
    recreate_head: bool | None = None,
) -> tuple[nn.Module, TransferPlan]:
    """Build the target model from ``source`` and freeze it as ``strategy`` says.

    Args:
        source: the pretrained weights (:func:`~resnet_lab.transfer.load_source`).
        strategy: ``all``, ``last`` or ``head``.
        num_classes: classes of the target task.
        in_channels: input channels of the target data (default: the weights'); the first conv
            is adapted when they differ.
        classes: target class names; with the source's names known and different, ``all`` and
            ``last`` re-create the classifier even when the count matches.
        unfreeze_from: for ``last``: the first module that trains (default: the last stage).
        backbone_lr_scale: for ``all``: learning-rate factor of everything but the classifier.
        recreate_head: override the classifier decision (see :func:`load_pretrained`).

    Returns:
        ``(model, plan)``: the model (in train mode, on the CPU) and a :class:`TransferPlan`.
    """
    check_transfer_options(strategy, unfreeze_from, backbone_lr_scale, 0)
    if not hasattr(source, "arch"):
        raise TypeError(f"source must be a WeightSource from load_source(...), got {type(source).__name__}")
    num_classes = check_num_classes(num_classes)  # "head" named its stacked layer's argument (new_classes)
    if classes is not None and len(classes) != num_classes:  # a model.json that could never load back
        raise ValueError(f"classes names {len(classes)} classes but num_classes is {num_classes}: give one name per "
                         "class")
    if in_channels is not None and in_channels not in (1, 3):  # 0 was taken as "the weights' own"
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    arch = dict(source.arch)
    name = arch.pop("name")
    in_ch = int(in_channels or arch.get("in_channels", 3))
    arch["in_channels"] = in_ch
    old_classes = int(arch.get("num_classes", num_classes))
    if strategy != "head":
        arch["num_classes"] = num_classes
        if recreate_head is None and source.classes and classes is not None and list(source.classes) != list(classes):
            recreate_head = True  # same count, other classes: the old class weights mean nothing here
    model = create_model(name, **arch)
    report = load_pretrained(model, source.state_dict, recreate_head=False if strategy == "head" else recreate_head,
                             source=source.origin or "the weights")
    classifier = classifier_linear_name(model)
    head = None
    eval_norms: list[str] = []
    lr_scale: dict[str, float] = {}
    point = None
    if strategy == "head":
        add_head(model, num_classes)
        head = {"module": classifier, "num_classes": num_classes, "old_classes": old_classes}
        eval_norms = freeze(model, head_param_names(model)).eval_norms
    elif strategy == "last":
        point = default_unfreeze_point(model) if unfreeze_from is None else unfreeze_from
        keep = set(params_from(model, point))
        keep |= {f"{classifier}.{n}" for n, _ in model.get_submodule(classifier).named_parameters()}
        eval_norms = freeze(model, keep).eval_norms
    elif backbone_lr_scale is not None:
        # Longest prefix wins in param_groups: the classifier at the full rate, the rest scaled.
        lr_scale = {"": float(backbone_lr_scale), f"{classifier}.": 1.0}
    trainable, frozen = count_params(model)
    plan = TransferPlan(
        strategy=strategy, origin=source.origin, source_arch=dict(source.arch), classifier=classifier,
        trainable=trainable, frozen=frozen, load=report, unfreeze_from=point, head=head, lr_scale=lr_scale,
        eval_norms=eval_norms, mean=adapt_mean_std(source.mean, in_ch), std=adapt_mean_std(source.std, in_ch),
        input_size=(in_ch, *source.input_size[1:]) if source.input_size else None,
        source_digest=state_digest(source.state_dict),
    )
    return model.train(), plan


def with_source_preprocessing(config: DataConfig, source: WeightSource) -> DataConfig:
    """``config`` with the preprocessing that travelled with the weights: their input size (unless
    ``config`` sets ``image_size``) and their mean/std for the data's channels (unless ``config``
    sets them; :func:`~resnet_lab.transfer.adapt_mean_std` maps 3 values to 1 channel and back).

    The pretrained layers expect inputs scaled as in their own training; the target data's own
    statistics would shift every activation of the first layer. A run of an image folder also
    passes on which images it held out for testing (``split_seed``), so a finetune on the same folder
    tests on none the source trained on. Loading the data with this config changes nothing else
    (augmentation, random erasing, flip, subset, channels_last stay).

    Args:
        config: the target data.
        source: the pretrained weights (:func:`~resnet_lab.transfer.load_source`).
    """
    if not isinstance(config, DataConfig):  # "fashion-mnist" was an AttributeError
        raise TypeError(f"config must be a DataConfig (e.g. DataConfig({config!r})), got {type(config).__name__}")
    changes: dict[str, Any] = {}
    if config.image_size is None and source.input_size is not None:
        changes["image_size"] = int(source.input_size[1])
    mean, std = adapt_mean_std(source.mean, config.channels), adapt_mean_std(source.std, config.channels)
    if config.mean is None and mean is not None and std is not None:
        changes.update(mean=mean, std=std)
    if config.name == "folder" and source.split_seed is not None and holds_out(config.data_dir):
        # the source's held-out images: on the same folder, other ones would include images it trained on
        # (a folder with val/ holds none out: a split seed there is refused)
        changes["split_seed"] = source.split_seed
        if source.val_fraction and config.val_fraction == DEFAULT_VAL_FRACTION:
            changes["val_fraction"] = float(source.val_fraction)
    return dataclasses.replace(config, **changes)


def _without_finished_note(log: Callable[[str], None] | None, run_dir: Path) -> Callable[[str], None]:
    """``log`` (train's default when None) without the line that calls ``run_dir`` finished."""
    say = log or tqdm.write
    note = f"{run_dir} already finished "
    return lambda line: None if line.startswith(note) else say(line)


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values (key order aside): the same for the
    same weights whatever file format or path carried them."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.hexdigest()


def _absolute(origin: str) -> str:
    """A source given as a path, made absolute (a resume from another directory names it by another
    relative path); other origins (``torchvision:...``, shipped weights) as they are."""
    path = Path(origin)
    return str(path.resolve()) if path.exists() else origin


def _other_source(was: Any, now: Any) -> bool:
    """Whether two ``--from`` values name different weights (the same file by another path does not)."""
    if was == now:
        return False
    try:
        return Path(str(was)).resolve() != Path(str(now)).resolve() or not Path(str(now)).exists()
    except (OSError, RuntimeError):
        return True


def _check_frozen_phase_kept(out: Path | None, freeze_epochs: int, resume: bool, main_started: bool) -> None:
    """A run directory holding a frozen phase that has not handed over is that run's, without
    --freeze-epochs too: a resume was "nothing to resume", and a new run trained the main phase from
    the source beside the orphaned frozen one, one directory mixing two runs."""
    phase_dir = out / FROZEN_DIR if out is not None else None
    if freeze_epochs or main_started or phase_dir is None or not (phase_dir / "model.json").exists():
        return
    epochs = (load_meta(phase_dir).get("train_config") or {}).get("epochs")
    how = f"--freeze-epochs {epochs}" if epochs else "the --freeze-epochs it was started with"
    if resume:
        raise ValueError(f"{out} was started with a frozen phase ({phase_dir}) that has not handed over to the main "
                         f"one: resume with {how}")
    raise FileExistsError(f"{out} holds the frozen phase of an earlier finetune ({phase_dir}): resume it with the "
                          f"same command, {how} and --resume, or choose another --out")


def check_not_a_train_run(out: Path) -> None:
    """A finetune's --out that holds a `train` run: a resume compared the plans field by field ("fine-tuned
    with strategy None"), and without --resume train's refusal said to pass it."""
    if (out / "model.json").is_file() and not load_meta(out).get("transfer"):
        raise ValueError(f"{out} holds a `resnet-lab train` run, not a finetune: give the finetune a new --out (the "
                         f"train run resumes with `resnet-lab train ... --out {out} --resume`)")


def _check_resumed_plan(out: Path, planned: dict[str, Any]) -> None:
    """A resumed transfer must start from the same weights and freeze and stack what the run did:
    other source weights would mix two transfers in one run (or fail to load), and another strategy,
    unfreeze point or head would give the saved optimizer state other parameter groups. ``out`` is
    known to hold a finetune (:func:`check_not_a_train_run`)."""
    saved = load_meta(out)["transfer"]
    was, now = saved.get("source"), planned.get("source")
    # runs saved before source_path was recorded: their relative source, resolved from here
    other = (saved["source_path"] != planned.get("source_path") if "source_path" in saved and planned.get("source_path")
             else _other_source(was, now))
    change = None if other else _source_change(saved, planned)
    if "source" in saved and change:
        # the same file, written again since (its run trained anew): naming it twice said nothing
        raise ValueError(f"{out} was fine-tuned from {was}, which now holds other weights ({change}): resume from "
                         "the weights the run was started with")
    if "source" in saved and other:
        raise ValueError(f"{out} was fine-tuned from {was}, not {now} (--from); resume with the command the run was "
                         "started with")
    for key, flag in (("strategy", "--strategy"), ("unfreeze_from", "--unfreeze-from"), ("head", "--strategy head")):
        if saved.get(key) != planned.get(key):
            raise ValueError(f"{out} was fine-tuned with {key} {saved.get(key)!r}, not {planned.get(key)!r} "
                             f"({flag}); resume with the command the run was started with")


def _source_change(saved: dict[str, Any], planned: dict[str, Any]) -> str | None:
    """What the source named the same way holds now that it did not: another architecture (what
    differs), or other values; None when the same (runs saved before the digest was recorded are
    judged by the architecture alone)."""
    if saved.get("source_arch") != planned.get("source_arch"):
        return _arch_change(saved.get("source_arch"), planned.get("source_arch"))
    was, now = saved.get("source_digest"), planned.get("source_digest")
    return "the same architecture, other values" if was and now and was != now else None


def _arch_change(was: dict[str, Any] | None, now: dict[str, Any] | None) -> str:
    """``name 'resnet8', now 'resnet20'``: the ``create_model`` arguments that differ between two archs."""
    was, now = was or {}, now or {}
    return ", ".join(f"{k} {was.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(was) | set(now))
                     if was.get(k) != now.get(k))


def _check_started_run(out: Path, planned: dict[str, Any], resume: bool, freeze_epochs: int) -> None:
    """An --out whose main phase has a checkpoint: a `train` run is refused; a resume keeps the plan and the
    frozen epochs the main phase began after; a new finetune of another plan is told both ways out (train's
    own refusal of a folder that holds a run would only say --resume, which the plan check then refuses)."""
    check_not_a_train_run(out)  # before the plan check: its own way out is a new --out already
    try:
        _check_resumed_plan(out, planned)
    except ValueError as e:
        if resume:
            raise
        # train's "pass --resume" would lead to this very refusal: both ways at once
        raise FileExistsError(f"{e}, or choose another --out for a new finetune") from None
    if not resume:
        return
    saved = load_meta(out)["transfer"].get("freeze_epochs")
    if saved is not None and saved != freeze_epochs:
        raise ValueError(f"{out} was fine-tuned with --freeze-epochs {saved}, not {freeze_epochs}; resume with "
                         "the command the run was started with")


# The main phase's settings that its frozen phase replaces with its own (flag names for the refusal):
# a resume before the main phase has a checkpoint compares them with the frozen phase's record.
_MAIN_PHASE_FLAGS = {"epochs": "--epochs", "lr_scale": "--backbone-lr-scale", "warmup_epochs": "--warmup-epochs",
                     "progressive_resize": "--progressive-resize"}


def _main_phase_plan(config) -> dict[str, Any]:
    """What the main phase will train with, of the settings the frozen phase does not share."""
    return {"epochs": config.epochs, "lr_scale": dict(config.lr_scale or {}), "warmup_epochs": config.warmup_epochs,
            "progressive_resize": config.progressive_resize}


def _check_resumed_phases(out: Path, phase_dir: Path, freeze_epochs: int, main_plan: dict[str, Any]) -> None:
    """Refuse a resume whose frozen phase or planned main phase differs from the interrupted run's:
    ``--freeze-epochs`` (train's own check would name --epochs and the inner folder), and the main
    phase's epochs, backbone rate, warm-up and resizing, which no checkpoint has recorded yet."""
    saved = load_meta(phase_dir)
    was = (saved.get("train_config") or {}).get("epochs")
    if was is not None and int(was) != freeze_epochs:
        raise ValueError(f"{out} was fine-tuned with --freeze-epochs {was}, not {freeze_epochs}; resume with the "
                         "command the run was started with")
    planned = (saved.get("transfer") or {}).get("main_phase")
    if planned is None:  # a frozen phase saved before this record existed
        return
    for key, flag in _MAIN_PHASE_FLAGS.items():
        if recipe_values_differ(planned.get(key), main_plan[key]):
            raise ValueError(f"{out} was started with {flag} {_as_flag(key, planned.get(key))} for its main phase, not "
                             f"{_as_flag(key, main_plan[key])}; resume with the command the run was started with")


def _as_flag(key: str, value: Any) -> str:
    """A main-phase setting as its flag's value (the backbone's lr factor is the '' group's)."""
    if key == "lr_scale":
        return f"{value['']:g}" if value and "" in value else "(not given)"
    return "(not given)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _check_classes_fit(model: nn.Module, data, plan: TransferPlan) -> None:
    """The transferred model's outputs against the data's classes, with transfer's way out (train's
    own check names create_model, which would throw the pretrained weights away)."""
    outputs = arch_outputs(getattr(model, "model_config", None) or {})
    classes = getattr(getattr(data, "info", None), "classes", None)
    if outputs is not None and classes is not None and outputs != len(classes):
        raise ValueError(f"the model has {outputs} outputs but the data has {len(classes)} classes: transfer_model("
                         f"source, {plan.strategy!r}, num_classes={len(classes)}) keeps the pretrained weights")


def _frozen_phase(model: nn.Module, data, config, plan: TransferPlan, *, freeze_epochs: int, meta: dict[str, Any],
                  log: Callable[[str], None] | None):
    """Phase 1 of :func:`finetune`: the classifier alone, so the fresh head does not send large random
    gradients into the pretrained backbone (fastai's fine_tune: freeze_epochs, then unfreeze). The
    model comes back unfrozen whether the phase finishes or fails (a refused ``out``, a divergence)."""
    out = Path(config.out) if config.out else None
    classifier = model.get_submodule(plan.classifier)
    freeze(model, [f"{plan.classifier}.{n}" for n, _ in classifier.named_parameters()])
    try:
        phase_dir = out / FROZEN_DIR if out else None
        resume = bool(config.resume and phase_dir and (phase_dir / "train_state.pt").exists())
        main_plan = _main_phase_plan(config)
        if resume:  # interrupted in (or right after) the frozen phase: the same command, or nothing
            check_not_a_train_run(phase_dir)
            _check_resumed_plan(phase_dir, meta["transfer"])
            _check_resumed_phases(out, phase_dir, freeze_epochs, main_plan)
        # The frozen phase runs whole before the main one: --stop-after, --warmup-epochs and
        # --progressive-resize count epochs of the main phase (--epochs), and --norm-lr-scale scales its norms.
        own = {"warmup_epochs": 0.0, "progressive_resize": None}
        if resume:  # a frozen phase saved by an earlier version carried the main phase's values: keep its own
            saved = load_meta(phase_dir).get("train_config") or {}
            own = {k: saved.get(k, v) for k, v in own.items()}
        phase = dataclasses.replace(config, epochs=freeze_epochs, lr_scale={}, norm_lr_scale=1.0, resume=resume,
                                    out=str(phase_dir) if phase_dir else None, stop_after=None, **own)
        phase_meta = {**meta, "transfer": {**meta["transfer"], "phase": FROZEN_PHASE, "main_phase": main_plan}}
        # A frozen phase that finished before an interrupt only reloads its weights here: train's note
        # on a finished run (warm-restart it to train further) is not for this command.
        phase_log = _without_finished_note(log, phase_dir) if resume else log
        return train(model, data, phase, meta=phase_meta, log=phase_log)
    finally:
        unfreeze(model, mode=True)


def finetune(
    model: nn.Module,
    data,
    config,
    plan: TransferPlan,
    *,
    freeze_epochs: int = 0,
    meta: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
):
    """Train a transferred model: :func:`resnet_lab.train.train` with the plan's learning-rate
    factors and ``model.json`` entry, after an optional frozen-backbone phase (``all`` only).

    Args:
        model: from :func:`transfer_model`.
        data: the target :class:`~resnet_lab.data.DataBundle`.
        config: the :class:`~resnet_lab.train.TrainConfig` of the (main) phase; its
            ``lr_scale`` is replaced by the plan's when the plan has one.
        plan: from :func:`transfer_model`.
        freeze_epochs: with ``all``: first train only the classifier this many epochs (run
            directory ``OUT/freeze_phase``), then everything for ``config.epochs``. The frozen
            phase runs whole, without ``stop_after``, ``warmup_epochs`` and ``progressive_resize``,
            which count epochs of the main phase.
        meta: extra ``model.json`` entries.
        log: where summary lines go.

    Returns:
        The :class:`~resnet_lab.train.History` of the main phase (``history.phases`` holds all).
    """
    if not isinstance(plan, TransferPlan):  # None was "'NoneType' object has no attribute 'strategy'"
        raise TypeError(f"plan must be the TransferPlan that transfer_model(...) returns with the model, got "
                        f"{type(plan).__name__}")
    check_transfer_options(plan.strategy, None, None, freeze_epochs)
    _check_classes_fit(model, data, plan)
    meta = {**plan.to_meta(), **(meta or {})}
    meta["transfer"] = {**meta["transfer"], "freeze_epochs": freeze_epochs}  # a resume must keep the plan
    if plan.lr_scale:
        config = dataclasses.replace(config, lr_scale=dict(plan.lr_scale))
    histories = []
    out = Path(config.out) if config.out else None
    if config.resume and out is not None:  # finish a save a kill cut short before judging what started
        for run_dir in (out, out / FROZEN_DIR):
            settle_run_dir(run_dir)
    main_started = out is not None and (out / "train_state.pt").exists()
    if main_started:
        _check_started_run(out, meta["transfer"], config.resume, freeze_epochs)
    _check_frozen_phase_kept(out, freeze_epochs, config.resume, main_started)
    if freeze_epochs and not (config.resume and main_started):
        histories.append(_frozen_phase(model, data, config, plan, freeze_epochs=freeze_epochs, meta=meta, log=log))
        if histories[-1].interrupted:
            histories[-1].phases = histories
            return histories[-1]
        if config.resume:  # the main phase has not started yet: nothing of it to resume
            config = dataclasses.replace(config, resume=False)
    histories.append(train(model, data, config, meta=meta, log=log))
    histories[-1].phases = histories
    return histories[-1]
