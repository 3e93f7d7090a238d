"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", arXiv:1409.1556), configurations A, B, D, E of the paper's Table 1.

Module names and state-dict keys are torchvision's (``features.<i>``, ``avgpool``,
``classifier.<i>``), so torchvision's ``vgg*`` checkpoints load with ``strict=True``. timm's
``vgg*`` checkpoints load too: timm keeps fc6 and fc7 as convolutions (``pre_logits.fc1``, a 7x7
conv, and ``pre_logits.fc2``, a 1x1 conv) and fc8 as ``head.fc``; :func:`vgg_keys_from_timm`
renames them and flattens the kernels into Linear weights, and ``VGG.load_state_dict`` applies
it, so a timm state dict loads with ``strict=True`` and gives timm's outputs at 224 px (at any
input whose last feature map is at most 7x7, i.e. up to 255 px; above that timm slides the 7x7
conv over the larger map and averages, while torchvision's head first pools to 7x7).

Normalization: the ``*_bn`` variants put ``norm_layer(norm)`` after every conv (batch norm by
default, as torchvision's ``vgg*_bn``). The plain variants are the paper's network and have **no
normalization layers**: they take ``norm="none"`` or create_model's default ``"batch"``, record
``norm: "none"`` (what was built), and refuse ``scratch`` and ``group``, which would change nothing
(the CLI refuses ``--norm batch`` for them too; ``--norm none`` names what they are).
Convs keep their bias in every variant, as torchvision's do
(its ``vgg*_bn`` checkpoints carry conv biases).
"""

from __future__ import annotations

from typing import Mapping, Union

import torch
from torch import Tensor, nn

from ..nn.norm import check_norm, norm_layer
from .layers import ClassifierModel, check_rate, classifier_size, replace_linear
from .registry import Family, Paper

__all__ = [
    "VGG",
    "make_vgg_features",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vgg_keys_from_timm",
]

# Table 1 of the paper: conv widths, "M" a 2x2 max-pool. A=11, B=13, D=16, E=19 weight layers.
_CFGS: dict[str, list[Union[str, int]]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


# timm's VGG head (timm/models/vgg.py: ConvMlp ``pre_logits`` and ``ClassifierHead`` ``head``)
# -> torchvision's ``classifier`` Sequential (fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8).
_TIMM_HEAD_KEYS = {"pre_logits.fc1.": "classifier.0.", "pre_logits.fc2.": "classifier.3.", "head.fc.": "classifier.6."}


def vgg_keys_from_timm(state_dict: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """A timm VGG state dict with torchvision's (and our) key names and Linear-shaped fc6/fc7.

    timm keeps fc6 as a 7x7 conv over the 512x7x7 map and fc7 as a 1x1 conv (the inverse of its
    ``_filter_fn``, which reshapes torchvision's weights into these). A kernel ``(out, 512, 7, 7)``
    flattened to ``(out, 512 * 49)`` lists its entries in the (channel, row, column) order in which
    ``torch.flatten`` lays out the pooled map, so the Linear computes the conv's single output.
    Other keys (``features.*``, torchvision's own ``classifier.*``) pass through unchanged, so
    the function is a no-op on a torchvision state dict.

    Args:
        state_dict: the weights.
        prefix: where the VGG sits in ``state_dict`` (``""`` for the model itself).
    """
    out = {}
    for key, value in state_dict.items():
        old = next((o for o in _TIMM_HEAD_KEYS if key.startswith(prefix + o)), None)
        if old is not None:
            key = prefix + _TIMM_HEAD_KEYS[old] + key[len(prefix + old):]
            if value.dim() == 4:  # a conv kernel (out, C, k, k) -> Linear weight (out, C * k * k)
                value = value.flatten(1)
        out[key] = value
    return out


def make_vgg_features(
    cfg: list[Union[str, int]],
    in_channels: int = 3,
    norm: str | None = None,
    small_input: bool = False,
) -> nn.Sequential:
    """The convolutional part of a VGG, indexed as torchvision's ``make_layers``.

    Args:
        cfg: conv widths and ``"M"`` for max-pools (see the paper's Table 1).
        in_channels: image channels.
        norm: normalization after each conv, or ``None`` for the plain VGG (conv-ReLU).
        small_input: drop the final max-pool, so 28-32 px images keep a 2x2 map (a 28 px image
            would otherwise shrink to 0 px). It is the last module, so the indices (and state-dict
            keys) of all the others are unchanged.
    """
    layers: list[nn.Module] = []
    ch = in_channels
    nl = norm_layer(norm) if norm is not None else None
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        v = int(v)
        # Bias stays on even before a norm: torchvision's vgg*_bn checkpoints have conv biases.
        conv = nn.Conv2d(ch, v, kernel_size=3, padding=1)
        layers += [conv, nl(v), nn.ReLU(inplace=True)] if nl is not None else [conv, nn.ReLU(inplace=True)]
        ch = v
    if small_input and isinstance(layers[-1], nn.MaxPool2d):
        layers.pop()
    return nn.Sequential(*layers)


class VGG(ClassifierModel):
    """VGG: conv features, adaptive average pool, and a 3-layer MLP classifier (fc6, fc7, fc8).

    Args:
        features: the conv part (see :func:`make_vgg_features`); its output has 512 channels.
        num_classes: outputs of the last Linear.
        dropout: dropout before fc7 and fc8 (0.5 in the paper).
        hidden_dim: width of fc6 and fc7 (4096 in the paper; smaller only if asked, as the
            checkpoints need 4096).
        pool_size: side of the adaptive average pool before fc6 (7, torchvision's, so that any
            input size >= 32 px feeds the same 512*7*7 fc6).
    """

    classifier_attr = "classifier"

    def __init__(
        self,
        features: nn.Module,
        num_classes: int = 1000,
        dropout: float = 0.5,
        hidden_dim: int = 4096,
        pool_size: int = 7,
    ) -> None:
        super().__init__()
        for arg, value in (("hidden_dim", hidden_dim), ("pool_size", pool_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # 0 builds a model of zeros
                raise ValueError(f"{arg} must be a positive int, got {value!r} (torchvision's: 4096 and 7)")
        dropout = check_rate("dropout", dropout, "0.5 is the paper's")
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(512 * pool_size * pool_size, hidden_dim),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_dim, num_classes),
        )
        self.num_classes = num_classes

        # torchvision's init: He-normal (fan_out) convs, zero biases, N(0, 0.01) Linear weights.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
            elif getattr(m, "weight", None) is not None and getattr(m, "bias", None) is not None and m.weight.dim() == 1:
                nn.init.ones_(m.weight)  # every norm layer (torch BN, scratch BN, GroupNorm)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, 512, h, w)
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool, flatten, fc6, fc7, and fc8 unless ``pre_logits`` (then the fc7 features)."""
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512 * 7 * 7)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Module:
        """The final Linear (fc8, ``classifier.6``), as timm's ``get_classifier``; fc6 and fc7
        are part of the features a transferred model keeps."""
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace fc8 by a fresh Linear with ``num_classes`` outputs (``nn.Identity`` for 0:
        the fc7 features out, as timm); fc6 and fc7 keep their weights."""
        num_classes = classifier_size(num_classes)
        self.classifier[-1] = replace_linear(self.classifier[-1], num_classes)
        self._record_classes(num_classes)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # timm's keys and conv-shaped fc6/fc7 become torchvision's before the children load
        # (torch's load_state_dict passes the children the entries of this, already renamed, dict).
        renamed = vgg_keys_from_timm(state_dict, prefix)
        if renamed.keys() != state_dict.keys():
            state_dict.clear()
            state_dict.update(renamed)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# Builders: one line per model over one family constructor, whose keyword arguments they accept.

_SIMONYAN_2014 = Paper("Simonyan & Zisserman 2014",
                       "Very Deep Convolutional Networks for Large-Scale Image Recognition", "1409.1556")


def _vgg(
    cfg: str, batch_norm: bool, /, *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
    norm: str = "batch", dropout: float = 0.5, hidden_dim: int = 4096, pool_size: int = 7,
) -> VGG:
    """A VGG with torchvision's keys.

    Args:
        small_input: drop the last max-pool, so 28-32 px images work; state-dict keys unchanged.
        norm: the normalization after every conv of a ``_bn`` variant (``batch``, ``scratch``,
            ``group``, ``none``); the plain variants have none: they take ``none`` or the default
            ``batch`` (``create_model`` records ``none``) and refuse ``scratch`` and ``group``.
        dropout: dropout in the classifier.
        hidden_dim: width of fc6/fc7 (4096 for torchvision checkpoints).
        pool_size: adaptive-pool side before fc6 (7 for torchvision checkpoints; 1 for a small
            512-wide head on 32 px images).
    """
    if not batch_norm and check_norm(norm) not in ("batch", "none"):
        # "batch" is create_model's default, which callers spell out (the CLI, torchvision's weights): taken and
        # recorded as the none that is built. Runs saved with scratch or group before this was refused load
        # through runs.load_meta, which records none for them.
        name = f"vgg{sum(isinstance(v, int) for v in _CFGS[cfg]) + 3}"
        raise ValueError(f"{name} has no normalization layers, so norm={norm!r} (--norm {norm}) would change "
                         f"nothing: use {name}_bn for a norm after every conv, or leave norm out")
    features = make_vgg_features(_CFGS[cfg], in_channels, norm if batch_norm else None, small_input)
    return VGG(features, num_classes=num_classes, dropout=dropout, hidden_dim=hidden_dim, pool_size=pool_size)


# get_classifier() is fc8 (classifier.6); fc6 and fc7 belong to what a transfer keeps.
_FAMILY = Family(_vgg, paper=_SIMONYAN_2014, classifier="classifier.6", first_conv="features.0", cam_layer="features")


# Table 1 configurations A, B, D, E; ``_bn``: a normalization after every conv (torchvision's).
vgg11 = _FAMILY.builder("vgg11", "A", False, doc="VGG-11 (configuration A), torchvision's ``vgg11``.")
vgg11_bn = _FAMILY.builder("vgg11_bn", "A", True, doc="VGG-11 with a normalization after every conv, torchvision's ``vgg11_bn``.")
vgg13 = _FAMILY.builder("vgg13", "B", False, doc="VGG-13 (configuration B), torchvision's ``vgg13``.")
vgg13_bn = _FAMILY.builder("vgg13_bn", "B", True, doc="VGG-13 with a normalization after every conv, torchvision's ``vgg13_bn``.")
vgg16 = _FAMILY.builder("vgg16", "D", False, doc="VGG-16 (configuration D), torchvision's ``vgg16``.")
vgg16_bn = _FAMILY.builder("vgg16_bn", "D", True, doc="VGG-16 with a normalization after every conv, torchvision's ``vgg16_bn``.")
vgg19 = _FAMILY.builder("vgg19", "E", False, doc="VGG-19 (configuration E), torchvision's ``vgg19``.")
vgg19_bn = _FAMILY.builder("vgg19_bn", "E", True, doc="VGG-19 with a normalization after every conv, torchvision's ``vgg19_bn``.")
