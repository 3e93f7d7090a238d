"""Fit pretrained weights into a model: input-channel adaptation, head re-creation, clear mismatches.

* 3 -> 1 channels: the first convolution's kernel is summed over its input channels. A gray image
  fed to the RGB network as three equal channels gives ``sum_c w_c * x = (sum_c w_c) * x``, so the
  1-channel model computes exactly what the 3-channel one computes on the repeated image and the
  activation scale is kept (the timm ``adapt_input_conv`` rule).
* 1 -> C channels: the kernel is repeated over the channels and divided by C, so an image with C
  equal channels gives the original activation.
* A classifier whose class count differs is left at its fresh initialization ("re-created").
* Anything else that does not fit fails with the first keys that differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from ..models import find_first_conv
from ..models.vgg import vgg_keys_from_timm
from .heads import classifier_linear_name

__all__ = [
    "ArchitectureMismatchError",
    "LoadReport",
    "adapt_first_conv",
    "adapt_mean_std",
    "first_conv_key",
    "load_pretrained",
    "normalize_keys",
]

# torchvision's DenseNet files were saved when module names could hold dots ("norm.1", not
# "norm1"); torchvision.models.densenet._load_state_dict renames them with this pattern (here also
# for num_batches_tracked, which a re-saved copy of such a file carries).
_DENSENET_OLD = r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
# Heads a checkpoint may carry that a model built without them does not want (torchvision's
# GoogLeNet aux classifiers; torchvision drops them the same way for aux_logits=False).
_OPTIONAL_PREFIXES = ("aux1.", "aux2.")
# What wrappers put in front of every key: DDP (and DataParallel) "module.", torch.compile "_orig_mod.".
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class ArchitectureMismatchError(ValueError):
    """The weights do not belong to the architecture; the message names the first keys that differ."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        loaded: keys copied as they were.
        adapted: ``{key: how}`` for adapted tensors (the first conv's channels).
        recreated: classifier keys left at their fresh initialization.
        dropped: source keys the model does not have and does not need (aux heads).
    """

    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    recreated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        parts += [f"{k}: {how}" for k, how in self.adapted.items()]
        if self.recreated:
            parts.append(f"re-created {', '.join(self.recreated)}")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} unused ({self.dropped[0]}...)")
        return "; ".join(parts)


def normalize_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip wrapper prefixes (``module.`` from DDP, ``_orig_mod.`` from torch.compile, nested in
    either order), rename torchvision's old DenseNet keys and timm's VGG head (conv-shaped fc6/fc7,
    see :func:`~resnet_lab.models.vgg.vgg_keys_from_timm`), so any common checkpoint lines up with
    the zoo's names."""
    pattern = re.compile(_DENSENET_OLD)
    out = {}
    for k, v in state_dict.items():
        # either nesting: DDP(compile(m)) saves "module._orig_mod.", compile(DDP(m)) "_orig_mod.module."
        while k.startswith(_WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        m = pattern.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return vgg_keys_from_timm(out)


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """A first-conv kernel (out, c, kh, kw) for ``in_channels`` inputs (see module doc).

    Args:
        weight: the pretrained kernel.
        in_channels: the target model's input channels.

    Raises:
        ValueError: neither side has one channel (e.g. 3 -> 4): no exact rule exists.
    """
    c = weight.shape[1]
    if c == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)  # (out, c, kh, kw) -> (out, 1, kh, kw)
    if c == 1:
        return weight.repeat(1, in_channels, 1, 1) / in_channels  # (out, 1, ..) -> (out, C, ..)
    raise ValueError(
        f"cannot adapt a first conv with {c} input channels to {in_channels}: only c -> 1 (sum) and "
        f"1 -> C (repeat and divide) are exact; load the data with in_channels={c} instead"
    )


def adapt_mean_std(values: Sequence[float] | None, channels: int) -> tuple[float, ...] | None:
    """Per-channel normalization statistics of the weights for ``channels`` input channels.

    3 -> 1 takes the channel average (the gray image stands for three equal channels); 1 -> C
    repeats the value.
    """
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if channels == 1:
        return (sum(values) / len(values),)
    if len(values) == 1:
        return values * channels
    raise ValueError(f"cannot map {len(values)} normalization values to {channels} channels")


def first_conv_key(model: nn.Module) -> str | None:
    """State-dict key of the first convolution's kernel (the one that sees the image): from the
    registry for zoo models, else the first Conv2d in module order."""
    try:
        path, _ = find_first_conv(model)
    except ValueError:  # no convolution at all
        return None
    return f"{path}.weight" if path else "weight"


def _fmt(keys: list[str], limit: int = 5) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_pretrained(
    model: nn.Module,
    state_dict: dict[str, Tensor],
    *,
    recreate_head: bool | None = None,
    head: str | None = None,
    source: str = "the weights",
) -> LoadReport:
    """Copy ``state_dict`` into ``model``, adapting the first conv and re-creating the head.

    Args:
        model: the target (built with the target's ``in_channels`` and ``num_classes``).
        state_dict: the pretrained weights (keys as the zoo's / torchvision's).
        recreate_head: ``None``: keep the classifier when its shape fits, re-create it when the
            class count differs; ``True``: always keep the model's fresh classifier; ``False``:
            the classifier must fit.
        head: module name of the classifier's final Linear (``fc``...); default: found from
            ``model.get_classifier()``.
        source: how to name the weights in error messages.

    Returns:
        A :class:`LoadReport`.

    Raises:
        ArchitectureMismatchError: missing, unexpected or differently shaped keys outside the
            first conv and the classifier; the message names the first of each.
    """
    state_dict = normalize_keys(state_dict)
    target = model.state_dict()
    if head is None:
        try:
            head = classifier_linear_name(model)
        except ValueError as e:  # a plain torch model: its classifier can be named instead
            raise ValueError(f"{e}, or pass load_pretrained(..., head=NAME) naming its classifier's final Linear "
                             "(e.g. head='fc')") from None
    head_keys = {f"{head}.weight", f"{head}.bias"}
    stem = first_conv_key(model)
    report = LoadReport()

    # Old checkpoints (torchvision's IMAGENET1K_V1 ResNets) predate num_batches_tracked; BN loads
    # them with a count of 0, as torch itself does.
    missing = [k for k in target if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in target and not k.startswith(_OPTIONAL_PREFIXES)]
    report.dropped = [k for k in state_dict if k not in target and k.startswith(_OPTIONAL_PREFIXES)]
    wrong_shape = []
    new_state = dict(target)
    for k, want in target.items():
        if k not in state_dict:
            continue
        got = state_dict[k]
        if k in head_keys and (recreate_head or (recreate_head is None and got.shape != want.shape)):
            report.recreated.append(k)
            continue
        if got.shape != want.shape:
            if k == stem and got.ndim == 4 and got.shape[0] == want.shape[0] and got.shape[2:] == want.shape[2:]:
                try:
                    got = adapt_first_conv(got, want.shape[1])
                except ValueError as e:
                    raise ArchitectureMismatchError(f"{source}: {k}: {e}") from None
                how = "summed over" if want.shape[1] == 1 else "repeated and divided over"
                report.adapted[k] = f"{how} input channels ({state_dict[k].shape[1]} -> {want.shape[1]})"
            else:
                wrong_shape.append(f"{k} {tuple(got.shape)} vs model {tuple(want.shape)}")
                continue
        else:
            report.loaded.append(k)
        new_state[k] = got.to(dtype=want.dtype)
    if missing or unexpected or wrong_shape:
        raise _mismatch(model, source, missing, unexpected, wrong_shape)
    with torch.no_grad():
        model.load_state_dict(new_state, strict=True)
    return report


def _mismatch(model: nn.Module, source: str, missing: list[str], unexpected: list[str],
              wrong_shape: list[str]) -> ArchitectureMismatchError:
    """The error naming the first keys missing, unexpected and of another shape."""
    name = (getattr(model, "model_config", None) or {}).get("name", type(model).__name__)
    lines = [f"{source} do not fit {name}:"]
    if missing:
        lines.append(f"  missing in the weights: {_fmt(missing)}")
    if unexpected:
        lines.append(f"  not in the model: {_fmt(unexpected)}")
    if wrong_shape:
        lines.append(f"  different shapes: {_fmt(wrong_shape, 3)}")
    lines.append("Check the architecture (--model, or the run's model.json) against the one the weights were trained with.")
    return ArchitectureMismatchError("\n".join(lines))
