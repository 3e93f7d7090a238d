"""Model registry: the builders, what each model is (:class:`ModelInfo`, as timm's
``pretrained_cfg``), ``create_model(name, ...)`` and ``list_models(pattern)``.

A builder is one line over its family's constructor, with what the paper published::

    _CIFAR = Family(_cifar_resnet, paper=_HE_2015, small_input=True)
    resnet20 = _CIFAR.builder("resnet20", 20, params_m=0.27, cifar10_error=8.75, doc="ResNet-20 for CIFAR ...")

The family constructor takes the architecture positionally and, as keywords, the options every
builder of the family accepts; the registry checks a builder's keywords against those options, so
a typo names the model, the bad argument and the accepted ones.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import operator
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..nn.norm import check_norm, has_norm_layers
from ..weights import Weights, get_weights, in_torchvision
from .layers import stack_head

__all__ = [
    "Family",
    "ModelInfo",
    "Paper",
    "check_input_size",
    "check_module",
    "check_num_classes",
    "count_params",
    "create_model",
    "is_model",
    "list_models",
    "meta_device",
    "model_family",
    "model_info",
    "register_model",
]

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])  # register_model returns what it got

# The input a model is designed for when its family is small-input (CIFAR) or not (ImageNet).
_SMALL_DEFAULTS = ((3, 32, 32), 10)
_IMAGENET_DEFAULTS = ((3, 224, 224), 1000)


class _NoRandomInit(TorchFunctionMode):
    """A random draw into a meta tensor returns the tensor: there are no values to draw, yet torch
    runs ``normal_`` through its Python reference (about 0.5 ms a call, 4700 calls for the model
    list, and 1.5 s to import torch._dynamo on the first). ``nn.init``'s own functions are caught
    too: the tensor method they call inside is past this mode."""

    DRAWS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, *(getattr(nn.init, f) for f in (
        "normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_",
        "xavier_uniform_"))})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.DRAWS:
            tensor = args[0] if args else kwargs.get("tensor")  # nn.init passes it by keyword
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


@contextmanager
def meta_device() -> Iterator[None]:
    """Build models for their structure only: ``with meta_device(): model = create_model("vgg19")``
    gives parameters with shapes and no storage, as ``torch.device("meta")`` does, and skips the
    random initialization that would draw nothing (`resnet-lab models` took twice as long without it).
    Shapes, parameter counts, ``model_config`` and a meta-device forward pass are the same."""
    with torch.device("meta"), _NoRandomInit():
        yield


@dataclass(frozen=True)
class Paper:
    """Where an architecture was published.

    Args:
        cite: short citation, ``"He et al. 2015"``.
        title: the paper's title.
        arxiv: its arXiv id, ``"1512.03385"``.
    """

    cite: str
    title: str
    arxiv: str


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model; tools ask for it instead of guessing from names.

    Attributes:
        name: the registered name (``resnet20``).
        family: the family module (``resnet``, ``densenet``, ``vgg``, ``googlenet``).
        paper: where the architecture comes from; ``None`` for our own variants.
        input_size: the ``(C, H, W)`` it is designed for: 3x32x32 for the CIFAR families,
            3x224x224 otherwise.
        num_classes: its usual class count: 10 for the CIFAR families, 1000 (ImageNet) otherwise.
        small_input: built for 28-32 px images by construction (the CIFAR families; they refuse
            ``small_input=False``).
        classifier: module name of the final Linear (``fc``, ``classifier``, ``classifier.6``).
        first_conv: module name of the conv that sees the image (``conv1``, ``features.conv0``).
        cam_layer: module name whose output map Grad-CAM weighs (``layer4``, ``features``): the
            last spatial feature map before the head pools it (:func:`resnet_lab.deploy.grad_cam`).
        params_m: the parameter count in millions (at ``num_classes``): the paper's where it states
            one, else the source the model's docstring names (torchvision's for the ImageNet
            ResNets), or counted here for a model no paper has (its docstring says so).
        cifar10_error: the published CIFAR-10 test error in percent, where stated.
        options: the keyword arguments its builder accepts, with the builder's defaults: the
            DESIGN contract's ``num_classes=1000, small_input=False`` for every family, while
            :func:`create_model` builds ``num_classes`` (10 for the CIFAR families) and the
            small stem of this record when they are left out.
    """

    name: str
    family: str
    paper: Paper | None
    input_size: tuple[int, int, int]
    num_classes: int
    small_input: bool
    classifier: str
    first_conv: str
    cam_layer: str
    params_m: float | None = None
    cifar10_error: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def in_channels(self) -> int:
        return self.input_size[0]


@dataclass(frozen=True)
class Family:
    """What the models built by one constructor share.

    Args:
        constructor: builds the model; architecture arguments positional-only, then the options
            (``num_classes``, ``in_channels``, ``small_input``, ``norm`` and the family's extras)
            that every builder of the family accepts as keywords.
        paper: where the architecture comes from.
        small_input: the models are built for 28-32 px images (``small_input=False`` is refused).
        classifier: module name of the final Linear.
        first_conv: module name of the conv that sees the image.
        cam_layer: module name of the last spatial feature map, the one the head pools
            (Grad-CAM's target layer).
    """

    constructor: Callable[..., nn.Module]
    paper: Paper | None = None
    small_input: bool = False
    classifier: str = "fc"
    first_conv: str = "conv1"
    cam_layer: str = "layer4"

    def builder(self, name: str, *arch: Any, doc: str, params_m: float | None = None,
                cifar10_error: float | None = None, params_from: str | None = None) -> Callable[..., nn.Module]:
        """Register and return the public builder ``name``: ``constructor(*arch, **options)``.

        Its docstring is ``doc``, then the paper and the published figures, the options with their
        defaults, and the constructor's docstring (what the family's own options mean).

        Args:
            name: the model's name; bind the result to a module variable of that name.
            *arch: the constructor's architecture arguments (block type, stage sizes, depth...).
            doc: what the model is, citing the paper's section or table.
            params_m: published parameter count in millions, where stated.
            cifar10_error: published CIFAR-10 test error in percent, where stated.
            params_from: where ``params_m`` comes from when it is not the paper's: a source
                (``"torchvision's documentation"``), or ``"counted"`` for a model no paper has,
                whose docstring then says "Parameters:" rather than "Published:".
        """

        def build(**kwargs: Any) -> nn.Module:
            return self.constructor(*arch, **kwargs)

        build.__name__ = build.__qualname__ = name
        build.__module__ = self.constructor.__module__
        counted = params_from == "counted"
        figures = [f"{params_m}M parameters" + (f" ({params_from})" if params_from else "")
                   if params_m is not None and not counted else "",
                   f"{cifar10_error}% CIFAR-10 test error" if cifar10_error is not None else ""]
        source = f'{self.paper.cite}, "{self.paper.title}", arXiv:{self.paper.arxiv}.' if self.paper else ""
        published = " ".join(filter(None, (f"Published: {', '.join(f for f in figures if f)}." if any(figures) else "",
                                           f"Parameters: {params_m}M (counted; no paper gives it)." if counted else "")))
        options = ", ".join(f"``{k}={v!r}``" for k, v in _options(self.constructor)[0].items())
        usage = f"Options: {options} (``num_classes``, ``in_channels``, ``small_input``, ``norm``: see :func:`create_model`)."
        build.__doc__ = "\n\n".join(p for p in (doc, " ".join(filter(None, (source, published))), usage,
                                                  inspect.getdoc(self.constructor)) if p)
        return register_model(build, family=self, params_m=params_m, cifar10_error=cifar10_error)


_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


def register_model(
    fn: Builder | None = None,
    *,
    family: Family | None = None,
    params_m: float | None = None,
    cifar10_error: float | None = None,
):
    """Decorator that registers a builder under its function name.

    The registered builder takes keywords only and checks them against the options of
    ``family.constructor`` before calling the function: an unknown keyword raises a TypeError that
    names the model, the argument and the accepted ones.

    Args:
        fn: the builder (when used as a bare ``@register_model``).
        family: what the family shares; without one, the builder is its own constructor (its
            keyword parameters are its options) and an ImageNet model with ``conv1``, ``layer4``
            and ``fc``.
        params_m: published parameter count in millions.
        cifar10_error: published CIFAR-10 test error in percent.
    """

    def wrap(builder: Builder) -> Builder:
        name = builder.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        fam = family or Family(builder)
        options, open_ended = _options(fam.constructor)
        input_size, num_classes = _SMALL_DEFAULTS if fam.small_input else _IMAGENET_DEFAULTS

        @functools.wraps(builder)
        def checked(**kwargs: Any) -> nn.Module:
            unknown = [k for k in kwargs if k not in options]
            if unknown and not open_ended:
                raise TypeError(
                    f"{name} got unexpected argument(s) {', '.join(map(repr, unknown))}; "
                    f"it accepts {', '.join(options)}"
                )
            for key, value in kwargs.items():  # "no" is truthy: it would switch the option on
                if isinstance(options.get(key), bool) and not isinstance(value, bool):
                    raise TypeError(f"{name}'s option {key} must be True or False, got {value!r}")
            return builder(**kwargs)

        # help() and IDEs show the accepted keywords, not the forwarding **kwargs.
        checked.__signature__ = inspect.Signature(
            [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in options.items()],
            return_annotation=fam.constructor if inspect.isclass(fam.constructor)
            else inspect.signature(fam.constructor).return_annotation,
        )
        _MODELS[name] = checked
        _INFO[name] = ModelInfo(
            name=name,
            family=builder.__module__.rsplit(".", 1)[-1],
            paper=fam.paper,
            input_size=input_size,
            num_classes=num_classes,
            small_input=fam.small_input,
            classifier=fam.classifier,
            first_conv=fam.first_conv,
            cam_layer=fam.cam_layer,
            params_m=params_m,
            cifar10_error=cifar10_error,
            options=MappingProxyType(options),
        )
        return checked  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap


def _options(constructor: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """The keyword options of ``constructor`` with their defaults, and whether it also takes
    any other keyword (``**kwargs``)."""
    params = inspect.signature(constructor).parameters.values()
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    options = {p.name: p.default for p in params if p.kind in keyword}
    return options, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted (numbers in numeric order), optionally filtered by a shell-style
    pattern (``resnet*``; letter case is ignored, as the names are lower case). A pattern without
    ``*``, ``?`` or ``[`` matches anywhere in the name: ``wrn`` is ``*wrn*``."""
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string such as 'resnet*' (or None for all), got {pattern!r}")
    names = sorted(_MODELS, key=_natural_key)
    if pattern:
        pat = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
        names = [n for n in names if fnmatch.fnmatchcase(n, pat)]
    return names


def _natural_key(name: str) -> list[int | str]:
    # resnet8 < resnet20 < resnet110, as a reader expects.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model (see :func:`list_models`)."""
    return name in _MODELS


def model_info(name: str) -> ModelInfo:
    """What the registry knows about ``name``: input size, classes, classifier, paper...

    Raises:
        ValueError: ``name`` is not registered; the message lists the closest names.
    """
    _lookup(name)
    return _INFO[name]


def model_family(name: str) -> str:
    """The family of model ``name``: ``resnet`` (plain, CIFAR, pre-activation and wide ones too), ``densenet``,
    ``vgg`` or ``googlenet``."""
    return model_info(name).family


def _lookup(name: str) -> Callable[..., nn.Module]:
    if not isinstance(name, str):
        raise TypeError(f"a model name is a string such as 'resnet20', got {name!r}; `resnet-lab models` lists them")
    if name in _MODELS:
        return _MODELS[name]
    # The names are lower case, as list_models' patterns ignore case: RESNET18 is resnet18 mistyped.
    close = difflib.get_close_matches(name.lower(), _MODELS.keys(), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}.{hint} `resnet-lab models` (or resnet_lab.list_models()) lists all "
        f"{len(_MODELS)} names."
    )


_MAX_COUNT = 2**63 - 1  # torch's sizes are int64: more was its overflow TypeError (less, past memory, is the CLI's out-of-memory line)


def _check_count(arg: str, value: Any, expected: str) -> int:
    """``value`` as an int (numpy's integers too, as torch takes them), or a ValueError."""
    try:
        count = operator.index(value) if not isinstance(value, bool) else 0
    except TypeError:
        count = 0
    if count < 1:
        raise ValueError(f"{arg} must be a positive int ({expected}), got {value!r}")
    if count > _MAX_COUNT:
        raise ValueError(f"{arg} must be a positive int ({expected}) of at most {_MAX_COUNT}, got {value!r}")
    return count


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` as an int (numpy's integers too), or the one ValueError that create_model,
    transfer_model and evaluate all give for it (True, 2.0, "3", 0 and -1 are refused)."""
    return _check_count("num_classes", num_classes, "the classifier's outputs")


# The architecture arguments of create_model, in its order of return.
_ARCH_ARGS = ("num_classes", "in_channels", "small_input", "norm")
# Family options that only choose the initial weights: with weights= they would do nothing.
_INIT_ONLY = ("zero_init_residual",)
# Family options that shape the network (what a weights entry must agree with); the others
# (dropout, checkpointing) change training, not the function a trained net computes.
_SHAPING = ("shortcut", "transform_input", "aux_logits", "hidden_dim", "pool_size", "widths", "stem_pool")


def _create_defaults(name: str) -> dict[str, Any]:
    """create_model's values for the arguments left out (None); with weights=, the weights' win.
    The class count is the model's own, as in the family's constructor and `resnet-lab models`."""
    return {"num_classes": _INFO[name].num_classes, "in_channels": 3, "small_input": False, "norm": "batch"}


def _arch_of_weights(name: str, tag: str, given: dict[str, Any]) -> tuple[int, int, bool, str, dict[str, Any]]:
    """``create_model``'s arguments for ``name`` with the shipped weights ``tag``: the entry's
    architecture, plus the family options it does not fix.

    Args:
        name: the model.
        tag: the weights' tag.
        given: the arguments the caller gave (``num_classes``, ``in_channels``, ``small_input``,
            ``norm``, family options); those left out are not in it.
    """
    arch = {k: v for k, v in get_weights(name, tag).arch.items() if k != "name"}
    # An option the entry does not record had its default when the weights were trained; one that
    # shapes the function without adding tensors (shortcut 'A' -> 'none') would load and compute
    # another net.
    trained = {**{k: _INFO[name].options[k] for k in _SHAPING if k in _INFO[name].options}, **arch}
    for key in _INIT_ONLY:
        if given.get(key):
            raise ValueError(f"{key}={given[key]!r} only sets the initial weights, which {name} weights {tag!r} "
                             f"replace: leave {key} out")
    for key, value in given.items():
        # As torchvision, refuse what contradicts the weights, even a value that is also the default:
        # in_channels=3 for gray weights would be dropped without a word, then fail on an RGB image.
        if key in trained and value != trained[key]:
            raise ValueError(
                f"{name} weights {tag!r} were trained with {key}={trained[key]!r}, not {value!r}: leave {key} out"
                + (" (for another class count, call model.reset_classifier(n) on the loaded model)"
                   if key == "num_classes" else "")
            )
    # A given value equals the entry's here, but keeps its kind, so create_model's checks see it: 10.0 == 10
    # and 1 == True passed with weights while refused without.
    merged = {**_create_defaults(name), **arch, **given}
    options = {k: v for k, v in merged.items() if k not in _ARCH_ARGS}
    return merged["num_classes"], merged["in_channels"], merged["small_input"], merged["norm"], options


def _load_weights(model: nn.Module, name: str, tag: str, options: dict[str, Any]) -> None:
    """Load shipped weights ``tag`` into ``model``, or a ValueError naming the family options that
    built other layers than the weights have (``shortcut="B"`` adds projection convs)."""
    try:
        result = model.load_state_dict(get_weights(name, tag).get_state_dict(), strict=False)
        odd = [f"the model has {k} and they do not" for k in result.missing_keys[:1]]
        odd += [f"they have {k} and the model does not" for k in result.unexpected_keys[:1]]
    except RuntimeError as e:  # a tensor of another shape
        odd = [next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e))]
    if odd:
        raise ValueError(f"{name} weights {tag!r} do not fit the model built with {options}: {odd[0]}; leave "
                         f"{', '.join(options) or 'the family options'} out")


def check_input_size(name: str, input_size: Sequence[int], *, flag: str = "--image-size", **kwargs: Any) -> None:
    """Refuse images too small for model ``name`` built with ``kwargs`` (``create_model``'s), by
    a forward pass on the meta device (no memory, no arithmetic): the poolings of a VGG or an
    ImageNet-stem DenseNet leave no pixels of a small image, and torch's error names neither.

    Args:
        name: the model; ``kwargs``: the other arguments of ``create_model``.
        input_size: ``(C, H, W)`` of one image.
        flag: the option that sets the size, named in the error.

    Raises:
        ValueError: the images are too small, naming the model, the size and the way out.
    """
    if any(int(v) < 1 for v in tuple(input_size)[-2:]):
        raise ValueError(f"{flag} must give a height and width of at least 1 px, got {tuple(input_size)} (C, H, W)")
    try:
        with meta_device(), torch.no_grad():
            create_model(name, **kwargs).eval()(torch.empty(2, *input_size))
    except RuntimeError as e:
        if "too small" not in str(e):
            raise
        raise ValueError(f"{name} cannot take {input_size[-2]}x{input_size[-1]} px images: its downsampling leaves "
                         f"no pixels ({str(e).splitlines()[0]}); give it larger images ({flag}), or pick a "
                         "model for small images") from e


def small_stem_only(name: str, flag: str = "small_input=False") -> str:
    """Why ``flag`` is refused for a family that has one stem, made for small images: create_model's and
    the CLI's words (true of every such family: the CIFAR nets' stride-1 stem and the *_fast models',
    which has a max-pool, alike)."""
    return (f"{name} has one stem, made for 28-32 px images (not the ImageNet 7x7 stride-2 stem), so {flag} would "
            "change nothing: leave it out, or pick a model with an ImageNet stem (resnet18)")


def _refuse_idle_small_input(name: str, small_input: Any) -> None:
    if small_input is False and _INFO[name].small_input:  # it would build the same small stem
        raise ValueError(small_stem_only(name))


def _weights_tag(name: str, weights: Any, kwargs: Mapping[str, Any]) -> str | None:
    """create_model's ``weights=`` as a tag: a get_weights entry gives its own; torchvision's old
    ``pretrained=`` is pointed at the ways to weights."""
    if "pretrained" in kwargs:  # torchvision's old argument
        imagenet = (f"; torchvision's ImageNet weights come through transfer: resnet_lab.transfer.load_source("
                    f"'torchvision:{name}') or finetune --from torchvision:{name}" if in_torchvision(name) else
                    f" (torchvision has no {name}, so no ImageNet weights of it either)")
        raise TypeError(f"create_model takes weights=TAG (shipped weights: resnet_lab.list_weights({name!r})), not "
                        f"pretrained={imagenet}")
    if isinstance(weights, Weights):  # get_weights("resnet20:fashion-mnist") given whole: its tag says the same
        if weights.model != name:
            raise ValueError(f"weights {weights.name} are {weights.model}'s, not {name}'s: create_model("
                             f"{weights.model!r}, weights={weights.tag!r})")
        weights = weights.tag
    if weights is not None and not isinstance(weights, str):
        raise TypeError(f"weights= takes the tag of shipped weights such as 'fashion-mnist', got {weights!r}; "
                        "resnet_lab.list_weights() lists them")
    return weights


def check_module(model: Any, caller: str) -> None:
    """A ``TypeError`` naming ``caller`` unless ``model`` is an ``nn.Module``: a model's name or a
    state dict passed where the network goes was an AttributeError from deep inside (``'str' object
    has no attribute 'named_modules'``), or for ``train`` a complaint about its missing model_config."""
    if not isinstance(model, nn.Module):
        name = repr(model) if isinstance(model, str) else "'resnet8'"
        raise TypeError(f"{caller} needs a torch.nn.Module (e.g. create_model({name})), got {type(model).__name__}")


def weights_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of ``model``'s first floating-point parameter (the dtype its inputs must have), or
    ``default`` for a model without one."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), default)


def count_params(model: nn.Module) -> tuple[int, int]:
    """Return ``(trainable, frozen)`` numbers of parameter values; a shared parameter counts once.

    Args:
        model: any module.
    """
    check_module(model, "count_params")
    trainable = frozen = 0
    for p in model.parameters():  # parameters() already de-duplicates shared tensors
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    small_input: bool | None = None,
    norm: str | None = None,
    stacked_head: int | None = None,
    weights: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models` (``resnet18``, ``resnet56``, ``densenet121``...).
        num_classes: outputs of the classifier (left out: the model's own,
            ``model_info(name).num_classes``: 10 for the CIFAR families, 1000 for the ImageNet
            ones; or the weights').
        in_channels: 1 for grayscale, 3 for RGB (left out: 3, or the weights').
        small_input: for 28-32 px images: 3x3 stride-1 stem without max-pool (ImageNet families;
            the CIFAR families are small-input by construction and refuse False). Left out: False,
            or the weights'.
        norm: ``batch`` (torch BN), ``scratch`` (our BN), ``group`` (GroupNorm) or ``none`` (left out: ``batch``,
            or the weights'); the plain VGGs record ``none`` and refuse ``scratch``, ``group`` (use ``vgg11_bn``).
        stacked_head: outputs of a new Linear stacked on the classifier's final Linear (a
            :class:`~resnet_lab.models.layers.LinearWithHead`), as ``finetune --strategy head``
            trains it; the model then predicts ``stacked_head`` classes.
        weights: the tag of shipped trained weights (``"fashion-mnist"``, or its
            :class:`~resnet_lab.weights.Weights` from ``get_weights``; see
            :func:`resnet_lab.weights.list_weights`): the architecture arguments (``num_classes``,
            ``in_channels``...) then come from the entry, and the weights are loaded after their
            sha256 is checked. A stacked head goes on top of them.
        **kwargs: options of the family (``zero_init_residual``, ``drop_rate``...); see
            ``model_info(name).options``.

    The returned model carries ``model.model_config``: the name and arguments that rebuild it
    (what a run's ``model.json`` stores as ``arch``).

    Raises:
        ValueError: an unknown name or weights tag, or an argument that contradicts the weights'
            architecture (``num_classes=5`` for 10-class weights: load them, then
            ``model.reset_classifier(5)``).
    """
    builder = _lookup(name)
    weights = _weights_tag(name, weights, kwargs)
    given = {k: v for k, v in dict(num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                                   norm=norm).items() if v is not None}
    _refuse_idle_small_input(name, small_input)
    if weights is not None:
        num_classes, in_channels, small_input, norm, kwargs = _arch_of_weights(name, weights, {**given, **kwargs})
    else:
        num_classes, in_channels, small_input, norm = ({**_create_defaults(name), **given}[k] for k in _ARCH_ARGS)
    if not isinstance(small_input, bool):  # "no" is truthy: it built the small stem
        raise TypeError(f"small_input must be True or False, got {small_input!r}")
    num_classes = check_num_classes(num_classes)
    in_channels = _check_count("in_channels", in_channels, "1 grayscale, 3 RGB")
    check_norm(norm)
    if stacked_head is not None:
        stacked_head = _check_count("stacked_head", stacked_head, "the classes of the Linear stacked on the classifier")
    model = builder(num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm, **kwargs)
    if norm != "none" and not has_norm_layers(model):  # the plain VGGs: no norm layer to choose
        # Recorded as what was built: only the default "batch" gets here (they refuse scratch and group),
        # as the CLI and torchvision's weights spell it out; the CLI refuses a --norm batch.
        norm = "none"
    config = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        # what was built: the CIFAR families are small-input by construction
        "small_input": small_input or _INFO[name].small_input,
        "norm": norm,
        **kwargs,
    }
    if weights is not None:
        _load_weights(model, name, weights, {k: v for k, v in kwargs.items() if k not in _ARCH_ARGS})
    if stacked_head is not None:
        stack_head(model, _INFO[name].classifier, stacked_head)
        config["stacked_head"] = stacked_head
    model.model_config = config
    return model
