"""Weight sources: our run directories and .safetensors files, torchvision weights by name, and
plain state-dict files. Each becomes a :class:`WeightSource`: the tensors plus the architecture
and the preprocessing (input size, mean/std) that travel with them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor
from torch.hub import HASH_REGEX, download_url_to_file, get_dir

from ..models import create_model, is_model, meta_device, model_info
from ..runs import check_arch, is_safetensors, load_meta, load_state_dict_file, resolve_source, split_seed_of, unfinished_note, weights_path
from ..train.bars import on_terminal
from ..weights import sha256_of
from .adapt import ArchitectureMismatchError, normalize_keys
from .heads import fold_head

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TORCHVISION_PREFIX",
    "WeightSource",
    "infer_arch",
    "load_source",
    "parse_torchvision_name",
    "torchvision_weights",
]

TORCHVISION_PREFIX = "torchvision:"
TRAIN_STATE = "train_state.pt"  # a run's optimizer and progress: no model weights
_STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")  # what --from-file reads besides .safetensors
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class WeightSource:
    """Pretrained weights and what they need.

    Attributes:
        state_dict: the tensors (keys as the zoo's / torchvision's).
        arch: ``create_model`` arguments the weights belong to, with ``name``.
        classes: class names of the pretrained classifier (None when unknown).
        input_size: (C, H, W) the weights were trained at (None when unknown).
        mean, std: normalization the weights expect, 0..1 scale (None when unknown).
        origin: where they came from, for logs and ``model.json``.
        notes: assumptions made while reading (printed by the CLI).
        split_seed, val_fraction: a run of an image folder without val/: the seed and share of the
            test images it held out (a finetune on a folder holds out the same ones, so none it
            trained on is tested).
    """

    state_dict: dict[str, Tensor] = field(repr=False)  # printing a source shows what it is, not every tensor
    arch: dict[str, Any]
    classes: list[str] | None = None
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    origin: str = ""
    notes: list[str] = field(default_factory=list)
    split_seed: int | None = None
    val_fraction: float | None = None


def parse_torchvision_name(spec: str) -> tuple[str, str | None]:
    """``"torchvision:resnet18.IMAGENET1K_V1"`` -> ``("resnet18", "IMAGENET1K_V1")``;
    ``"torchvision:resnet50"`` -> ``("resnet50", None)`` (torchvision's DEFAULT weights).

    Raises:
        ValueError: not of the form ``torchvision:MODEL[.WEIGHTS]``.
    """
    if not spec.startswith(TORCHVISION_PREFIX):
        raise ValueError(f"{spec!r} is not a torchvision weight name: expected torchvision:MODEL[.WEIGHTS]")
    rest = spec[len(TORCHVISION_PREFIX):]
    model, _, weights = rest.partition(".")
    if not model or (rest.endswith(".") or (_ and not weights)):
        raise ValueError(
            f"{spec!r}: expected torchvision:MODEL or torchvision:MODEL.WEIGHTS, e.g. torchvision:resnet50 "
            "or torchvision:resnet18.IMAGENET1K_V1"
        )
    return model, (weights or None)


def torchvision_weights(model: str, weights: str | None = None):
    """The torchvision ``WeightsEnum`` member for ``model`` (``DEFAULT`` when ``weights`` is None),
    through torchvision's weights API (``get_model_weights``).

    Raises:
        ValueError: unknown model or weights name; the message lists the available ones.
    """
    from torchvision.models import get_model_weights  # deferred: importing torchvision costs 2-3 s

    try:
        enum = get_model_weights(model)
    except (ValueError, KeyError) as e:
        raise ValueError(f"torchvision has no weights for model {model!r} ({e})") from None
    if weights is None or weights == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[weights]
    except KeyError:
        raise ValueError(
            f"torchvision has no weights {weights!r} for {model}; available: "
            f"{', '.join(w.name for w in enum)} (or leave the suffix off for DEFAULT)"
        ) from None


def _check_cached(path: Path, spec: str) -> None:
    """A cached torchvision file whose sha256 does not start as its name says (``resnet18-f37072fd.pth``):
    damaged, or not the published file."""
    named = HASH_REGEX.search(path.name)
    if path.is_file() and named and not sha256_of(path).startswith(named.group(1)):
        raise ValueError(f"the cached file of {spec}, {path}, is damaged or not the file torchvision published (its "
                         f"sha256 does not start with {named.group(1)}, as its name says): delete it and run again "
                         "to download it afresh")


def _from_torchvision(spec: str, map_location: str | torch.device) -> WeightSource:

    model, weights_name = parse_torchvision_name(spec)
    if not is_model(model):
        raise ValueError(
            f"{spec}: {model!r} is not an architecture of the zoo, so its weights have nowhere to go; "
            "`resnet-lab models` lists the ones that take torchvision weights (resnet18..152, densenet*, vgg*, googlenet)"
        )
    weights = torchvision_weights(model, weights_name)
    cached = Path(get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    _check_cached(cached, spec)  # torch checks the hash only when it downloads, never a cached file
    notes = []
    try:
        if not cached.is_file():
            _download(weights.url, cached)
            notes.append(f"downloaded {spec} into {cached}")
        # Reads the torch hub cache (torch's own download printed "Downloading: URL" on stdout before it
        # connected, a false line offline); tensors only.
        state = weights.get_state_dict(progress=False, weights_only=True, map_location=map_location)
    except Exception as e:  # URLError, OSError, HTTPError, RuntimeError of a broken file
        if cached.is_file():  # never downloaded again while it is there, online or not
            raise RuntimeError(f"could not read {spec} from its cached file {cached} ({type(e).__name__}): the file "
                               "is damaged; delete it and run again to download it afresh") from e
        raise RuntimeError(
            f"could not get {spec} ({type(e).__name__}: {e}). It is downloaded from {weights.url} into "
            f"{get_dir()}/checkpoints on first use, which needs internet access. Without it, download "
            f"the file elsewhere and pass --from-file FILE --model {model}."
        ) from e
    _check_finite(state, spec, model)
    preprocess = weights.transforms()
    size = int(getattr(preprocess, "crop_size", [224])[0])
    categories = list(weights.meta.get("categories") or [])
    arch = {"name": model, "num_classes": len(categories) or 1000, "in_channels": 3, "small_input": False,
            "norm": "batch"}
    if model == "googlenet":
        # torchvision's pretrained GoogLeNet expects its inputs re-scaled from ImageNet mean/std
        # to the original [-1, 1] scaling (it sets transform_input=True for these weights).
        arch["transform_input"] = True
    return WeightSource(
        state_dict=normalize_keys(state), arch=arch, classes=categories or None, input_size=(3, size, size),
        mean=tuple(float(v) for v in preprocess.mean), std=tuple(float(v) for v in preprocess.std),
        origin=f"torchvision:{model}.{weights.name}", notes=notes,
    )


def _check_finite(state: dict[str, Tensor], spec: str, model: str) -> None:
    """Refuse weights with NaN or inf tensors (torchvision's vgg16.IMAGENET1K_FEATURES: "missing values
    in the classifier module"): every strategy would train on NaN. Meta tensors (no values) pass."""
    bad = [k for k, v in state.items() if v.is_floating_point() and v.device.type != "meta" and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{spec}: {len(bad)} tensor{'s hold' if len(bad) > 1 else ' holds'} NaN or inf "
                         f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}), so nothing trains from these "
                         f"weights: use others, e.g. torchvision:{model} (its DEFAULT weights)")


def _download(url: str, cached: Path) -> None:
    """``url`` into the torch hub cache file ``cached``, checked against the hash prefix its name carries,
    with torch's bar on a terminal only and no other output (a failed download leaves no file)."""
    named = HASH_REGEX.search(cached.name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    download_url_to_file(url, str(cached), named.group(1) if named else None, progress=on_terminal())


def _from_run(source: Path, which: str, map_location: str | torch.device) -> WeightSource:
    meta = load_meta(source)
    check_arch(meta, source)  # a hand-edited arch names the file, as load_model does
    path = weights_path(source, which)  # a missing model.safetensors names the run's best.safetensors
    state = load_state_dict_file(path, map_location=map_location)
    arch = dict(meta["arch"])
    notes = [note] if (note := unfinished_note(source, meta)) else []  # evaluate's note: its weights stop short
    classes = arch.pop("stacked_head", None) or ((meta.get("transfer") or {}).get("head") or {}).get("num_classes")
    if classes:
        # A head-transferred run: its stacked Linear folds exactly into the classifier, giving a
        # plain model with the new class count.
        module = model_info(arch["name"]).classifier
        state = fold_head(state, module)
        arch["num_classes"] = int(classes)
        notes.append(f"folded the stacked head {module} into one Linear ({classes} classes)")
    size = meta.get("input_size")
    return WeightSource(
        state_dict=state, arch=arch, classes=list(meta["classes"]) if meta.get("classes") else None,
        input_size=tuple(int(v) for v in size) if size else None,
        mean=tuple(meta["mean"]) if meta.get("mean") else None, std=tuple(meta["std"]) if meta.get("std") else None,
        origin=str(path), notes=notes, split_seed=split_seed_of(meta) if meta.get("dataset") == "folder" else None,
        val_fraction=meta.get("val_fraction") if meta.get("dataset") == "folder" else None,
    )


def infer_arch(model: str, state_dict: dict[str, Tensor], norm: str = "batch") -> dict[str, Any]:
    """``create_model`` arguments of ``model`` that fit ``state_dict``: the class count from the
    classifier, the input channels from the first conv, and ``small_input`` from which stem fits.

    Args:
        model: a zoo name (``resnet18``...).
        state_dict: the weights.
        norm: the norm the weights were trained with.

    Raises:
        ArchitectureMismatchError: neither stem fits; the message names the first keys that differ.
    """
    state_dict = normalize_keys(state_dict)
    info = model_info(model)  # the registry knows where the classifier and the first conv are
    head, stem = info.classifier, f"{info.first_conv}.weight"
    if f"{head}.weight" not in state_dict or stem not in state_dict:
        missing = [k for k in (f"{head}.weight", stem) if k not in state_dict]
        raise ArchitectureMismatchError(
            f"the weights do not fit {model}: missing in the weights: {', '.join(missing)} (they have "
            f"{', '.join(list(state_dict)[:5])}...). Check --model."
        )
    base = {"name": model, "num_classes": int(state_dict[f"{head}.weight"].shape[0]),
            "in_channels": int(state_dict[stem].shape[1]), "norm": norm}
    first_error = None
    for small in (True,) if info.small_input else (False, True):  # a CIFAR family has only the small stem
        arch = {**base, "small_input": small}
        kw = {k: v for k, v in arch.items() if k != "name"}
        with meta_device():
            target = create_model(model, **kw).state_dict()
        bad = [k for k, v in target.items() if k in state_dict and state_dict[k].shape != v.shape]
        missing = [k for k in target if k not in state_dict and not k.endswith("num_batches_tracked")]
        if not bad and not missing:
            return arch
        if first_error is None:
            first_error = (bad, missing)
    bad, missing = first_error
    detail = []
    if missing:
        detail.append(f"missing in the weights: {', '.join(missing[:5])}")
    if bad:
        detail.append(f"different shapes: {', '.join(f'{k} {tuple(state_dict[k].shape)}' for k in bad[:3])}")
    raise ArchitectureMismatchError(f"the weights do not fit {model}: {'; '.join(detail)}. Check --model.")


def _infer_any_norm(model: str, state: dict[str, Tensor]) -> dict[str, Any]:
    """:func:`infer_arch` with the norm the weights have: BN's running statistics, else GroupNorm's
    affine parameters alone, else none (a file does not say; --from-file of a `--norm group` run
    failed with "missing bn1.running_mean... Check --model")."""
    first = None
    for norm in ("batch", "group", "none"):
        try:
            return infer_arch(model, state, norm=norm)
        except ArchitectureMismatchError as e:
            first = first or e
    raise first


def _from_file(path: Path, model: str | None, map_location: str | torch.device) -> WeightSource:
    refusal = _not_weights_of_run(path, "--from-file")
    if refusal:  # its own error named the run directory without the flag (and train_state.pt none)
        raise ValueError(refusal)
    if not model:
        raise ValueError(f"--from-file {path} needs --model NAME: a bare state dict does not say its architecture")
    state = normalize_keys(load_state_dict_file(path, map_location=map_location))
    notes = []
    module = model_info(model).classifier if is_model(model) else None
    if module is not None and f"{module}.head_weight" in state:
        # a head-transferred run's weights file: its stacked Linear folds exactly, as for --from RUN
        state = fold_head(state, module)
        notes.append(f"folded the stacked head {module} into one Linear ({state[f'{module}.weight'].shape[0]} classes)")
    arch = _infer_any_norm(model, state)
    mean = std = size = None
    if arch["in_channels"] == 3 and not arch["small_input"] and arch["num_classes"] == 1000:
        # A 1000-class RGB network with the ImageNet stem: ImageNet weights (torchvision, timm).
        mean, std, size = IMAGENET_MEAN, IMAGENET_STD, (3, 224, 224)
        notes.append("assumed ImageNet preprocessing (mean/std, 224 px) for a 1000-class RGB file")
        if model == "googlenet":  # torchvision's GoogLeNet weights expect their input re-scaled, as _from_torchvision
            arch["transform_input"] = True
    else:
        notes.append("the file does not say its preprocessing: the target data's own mean/std are used")
    return WeightSource(state_dict=state, arch=arch, input_size=size, mean=mean, std=std, origin=str(path), notes=notes)


def _run_of(path: Path) -> Path | None:
    """The run directory ``path`` is a file of (a ``model.json`` beside it), if any."""
    return path.parent if (path.parent / "model.json").is_file() else None


def _not_weights_of_run(path: Path, flag: str) -> str | None:
    """The refusal of a file in a run directory that holds no weights (metrics.jsonl, a plot,
    train_state.pt: the optimizer and progress, no model), naming the run directory, which works."""
    run = _run_of(path) if path.is_file() else None
    weights = path.suffix.lower() in (".safetensors", *_STATE_DICT_SUFFIXES) and path.name != TRAIN_STATE
    if run is None or weights:
        return None
    what = ("the training state of the run" if path.name == TRAIN_STATE else "a file of the run")
    return f"{flag} {path} is {what} {run}, not its weights: give --from {run}"


def _run_model_hint(run: Path) -> str:
    """" (the run's is resnet8)": a likely --model for a state dict kept in a run; nothing when its
    model.json cannot say."""
    try:
        return f" (the run's is {load_meta(run)['arch']['name']})"
    except (OSError, ValueError):
        return ""


def _not_a_run_file(path: Path, spec: str, map_location: str | torch.device) -> str:
    """Why ``--from FILE`` (not .safetensors/.json) is refused, with the way out that works: the run
    directory for a file of a run, ``--from-file`` for a state dict, else what ``--from`` takes."""
    refusal = _not_weights_of_run(path, "--from")
    if refusal:
        return refusal
    if path.suffix.lower() in _STATE_DICT_SUFFIXES:
        run = _run_of(path)
        try:
            load_state_dict_file(path, map_location=map_location)  # only a real state dict earns --from-file
        except ValueError as e:
            return f"--from {str(e).rstrip('.')}" + (f" (the run's own weights: --from {run})" if run else "")
        if run is not None:  # model.json beside it describes the run's own weights, not this file
            return (f"--from {spec} is a state dict file inside run {run}, not the run's weights (the run's "
                    f"model.json describes {run / 'model.safetensors'}): give --from {run} for the run's own weights, "
                    f"or --from-file {spec} --model NAME{_run_model_hint(run)} for this file")
        return f"--from {spec} is a bare state dict (no model.json): use --from-file {spec} --model NAME"
    return (f"--from {spec} is not a weights file ({path.suffix or 'no suffix'}): give a run directory, a "
            ".safetensors file with model.json beside it, shipped weights MODEL:TAG or torchvision:NAME, or "
            "--from-file FILE.pth --model NAME for a state dict")


def _shown(name: str) -> str:
    """A model name as a message shows it: quoted where blank, which would otherwise read as nothing."""
    return name if name.strip() else repr(name)


def load_source(
    source: str | os.PathLike | None = None,
    *,
    file: str | os.PathLike | None = None,
    model: str | None = None,
    which: str = "model",
    map_location: str | torch.device = "cpu",
) -> WeightSource:
    """Read pretrained weights from any supported source.

    Args:
        source: a run directory, a ``.safetensors`` file with its ``model.json`` beside it,
            shipped weights ``MODEL:TAG`` (``resnet20:fashion-mnist``; :mod:`resnet_lab.weights`),
            or ``torchvision:MODEL[.WEIGHTS]`` (torchvision's weights API; downloads to the torch
            hub cache when online).
        file: instead of ``source``: a ``.pth``/``.pt``/``.safetensors`` state dict, read with
            ``weights_only=True``; needs ``model``.
        model: the zoo architecture of ``file``.
        which: in a run directory, ``model`` (last epoch) or ``best``.
        map_location: where the tensors go.

    Returns:
        A :class:`WeightSource`.
    """
    if (source is None) == (file is None):
        raise ValueError("give exactly one weight source: --from RUN|FILE.safetensors|MODEL:TAG|torchvision:NAME, "
                         "or --from-file FILE --model NAME")
    if file is not None:
        return _from_file(Path(file), model, map_location)
    spec = str(source)
    if spec.startswith(TORCHVISION_PREFIX):
        named, _ = parse_torchvision_name(spec)
        if model is not None and model != named:  # checked before any download; '' is a name too, not "none given"
            raise ValueError(f"--model {_shown(model)} differs from {named} named by --from {spec}; drop --model")
        return _from_torchvision(spec, map_location)
    path = resolve_source(spec)  # shipped weights MODEL:TAG: their checked file, with its model.json beside it
    if not path.exists():
        raise FileNotFoundError(
            f"--from {spec}: no such run directory or file (expected a run directory, a .safetensors file "
            "with model.json beside it, shipped weights MODEL:TAG such as resnet20:fashion-mnist, or "
            "torchvision:MODEL[.WEIGHTS])"
        )
    if path.is_file() and path.suffix == ".json":  # model.json or a shipped entry: the weights are beside it
        beside = path.parent if path.name == "model.json" else path.with_suffix(".safetensors")
        raise ValueError(f"--from {spec} is the description, not the weights: give --from {beside}")
    if path.is_file() and not is_safetensors(path):
        raise ValueError(_not_a_run_file(path, spec, map_location))
    src = _from_run(path, which, map_location)
    if model is not None and src.arch["name"] != model:
        raise ValueError(f"--model {_shown(model)} differs from {src.arch['name']} recorded with {spec}; drop --model")
    if path != Path(spec):
        src.origin = spec  # shipped weights: their name says more than the installed file's path
    return src
