"""DenseNet (Huang et al. 2017, "Densely Connected Convolutional Networks", arXiv:1608.06993).

Every layer of a dense block receives the concatenation of all earlier feature maps of the block
and adds ``growth_rate`` (k) new channels. DenseNet-BC uses a 1x1 bottleneck of ``bn_size * k``
channels before each 3x3 conv (B) and halves the channels in each transition (C, compression 0.5).

Module names and state-dict keys of :func:`densenet121`, :func:`densenet161`, :func:`densenet169`
and :func:`densenet201` are torchvision's (``features.conv0``, ``features.denseblock1.denselayer1.
norm1``, ..., ``features.norm5``, ``classifier``), so torchvision checkpoints load with
``strict=True``. The CIFAR variants (:func:`densenet_bc_100`, :func:`densenet_bc_250`,
:func:`densenet40`) follow the paper's Section 3 "Implementation Details" for 32 px images.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.norm import norm_has_bias, norm_layer
from .layers import ClassifierModel, check_rate, checkpoint_keeping_stats, resolve_checkpoint_segments
from .registry import Family, Paper

__all__ = [
    "DenseNet",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_bc_100",
    "densenet_bc_250",
    "densenet40",
]


class _DenseLayer(nn.Module):
    """One composite layer: BN-ReLU-1x1 conv-BN-ReLU-3x3 conv (DenseNet-B), or BN-ReLU-3x3 conv.

    Args:
        in_ch: channels of the concatenated input (block input + k per earlier layer).
        growth_rate: k, the channels this layer adds.
        bn_size: bottleneck width as a multiple of k (the paper's 4k); 0 for no bottleneck (the
            plain DenseNet of the paper's Table 2, e.g. DenseNet-40).
        drop_rate: dropout after the layer's output (the paper uses 0.2 without augmentation).
        memory_efficient: in training with autograd on, recompute the concatenation + norm1-
            relu1-conv1 in backward instead of storing it (Pleiss et al. 2017, "Memory-Efficient
            Implementation of DenseNets"); unlike torchvision's, the recomputation leaves norm1's
            running statistics alone, so they match the plain layer's.
        norm: normalization name, see :func:`resnet_lab.nn.norm_layer`.
    """

    def __init__(
        self,
        in_ch: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        nl = norm_layer(norm)
        bias = norm_has_bias(norm)
        self.norm1 = nl(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        if bn_size > 0:
            inner = bn_size * growth_rate
            self.conv1 = nn.Conv2d(in_ch, inner, kernel_size=1, stride=1, bias=bias)
            self.norm2 = nl(inner)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(inner, growth_rate, kernel_size=3, stride=1, padding=1, bias=bias)
        else:
            self.conv1 = nn.Conv2d(in_ch, growth_rate, kernel_size=3, stride=1, padding=1, bias=bias)
        self.bottleneck = bn_size > 0
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _bn_function(self, *inputs: Tensor) -> Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))

    def forward(self, prev_features: list[Tensor]) -> Tensor:  # [(B, C_i, H, W)] -> (B, k, H, W)
        if (self.memory_efficient and self.training and torch.is_grad_enabled()
                and any(t.requires_grad for t in prev_features)):
            # The concatenation is the memory hog (quadratic in depth); recompute it in backward.
            out = checkpoint_keeping_stats(self._bn_function, (self.norm1,), *prev_features)
        else:
            out = self._bn_function(*prev_features)
        if self.bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class _DenseBlock(nn.ModuleDict):
    """Dense layers in order; the output concatenates the input and every layer's output.

    Args:
        layers: the block's :class:`_DenseLayer` s; the i-th (from 0) takes the block's input
            channels plus ``i * growth_rate``.
    """

    _version = 2  # torchvision's; its checkpoints carry it in the state-dict metadata

    def __init__(self, layers: Sequence[_DenseLayer]) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C + L * k, H, W)
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """BN-ReLU-1x1 conv-2x2 average pool between dense blocks (the paper's transition layer).

    Args:
        in_ch: channels entering.
        out_ch: channels leaving (``compression * in_ch``).
        norm: normalization name.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch") -> None:
        super().__init__()
        self.norm = norm_layer(norm)(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=1, bias=norm_has_bias(norm))
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


def _is_count(value: object, least: int) -> bool:
    """An int (numpy's too, not a bool) of at least ``least``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least


def _check_sizes(growth_rate: object, block_config: object, num_init_features: object, bn_size: object) -> None:
    """One-line errors for sizes that would build layers of no channels or silently drop one."""
    for arg, value, least, usual in (
        ("growth_rate", growth_rate, 1, "32 is densenet121's, 12 densenet_bc_100's"),
        ("num_init_features", num_init_features, 1, "2 * growth_rate is the paper's"),
        ("bn_size", bn_size, 0, "4 is DenseNet-B's, 0 drops the bottleneck"),
    ):
        if not _is_count(value, least):
            raise ValueError(f"{arg} must be an int >= {least}, got {value!r} ({usual})")
    if not isinstance(block_config, Sequence) or not block_config or not all(_is_count(n, 1) for n in block_config):
        raise ValueError(f"block_config must be a non-empty sequence of ints >= 1, got {block_config!r} "
                         "((6, 12, 24, 16) is densenet121's)")


class DenseNet(ClassifierModel):
    """DenseNet: a stem, dense blocks joined by transitions, a final norm and a Linear classifier.

    Args:
        growth_rate: k, channels added per layer (32 for densenet121, 12 for densenet_bc_100).
            Sizes are ints: growth_rate, num_init_features and every block's layer count
            >= 1, bn_size >= 0; others raise a ValueError naming the value.
        block_config: layers per dense block (4 blocks for ImageNet, 3 for CIFAR).
        num_init_features: channels of the stem conv (2k in the paper).
        bn_size: bottleneck width as a multiple of k (4 in DenseNet-B, 0 for no bottleneck).
        compression: theta, the fraction of channels a transition keeps (0.5 in DenseNet-C, 1.0
            for none).
        drop_rate: dropout after each dense layer.
        num_classes: outputs of the classifier.
        in_channels: input image channels.
        stem: ``imagenet`` (7x7 stride-2 conv + 3x3 stride-2 max-pool, for 224 px) or ``cifar``
            (3x3 stride-1 conv, no pool, for 32 px images).
        norm: normalization of every layer (``batch``, ``scratch``, ``group``, ``none``).
        memory_efficient: checkpoint the bottlenecks (less memory, slower), as torchvision.
    """

    classifier_attr = "classifier"

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        norm: str = "batch",
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression!r} (0.5 is DenseNet-C)")
        _check_sizes(growth_rate, block_config, num_init_features, bn_size)
        drop_rate = check_rate("drop_rate", drop_rate, "0.2 is the paper's")
        nl = norm_layer(norm)
        bias = norm_has_bias(norm)
        if stem == "imagenet":
            stem_layers = [
                ("conv0", nn.Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=bias)),
                ("norm0", nl(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        else:
            # 32 px images: downsampling by 4 in the stem would leave 2x2 maps for the last block.
            stem_layers = [
                ("conv0", nn.Conv2d(in_channels, num_init_features, kernel_size=3, stride=1, padding=1, bias=bias)),
                ("norm0", nl(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
            ]
        self.features = nn.Sequential(OrderedDict(stem_layers))
        ch = num_init_features
        for i, num_layers in enumerate(block_config):
            layers = [_DenseLayer(ch + j * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient, norm)
                      for j in range(num_layers)]
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(layers))
            ch += num_layers * growth_rate
            if i != len(block_config) - 1:
                out_ch = int(ch * compression)  # floor, as torchvision's ch // 2
                self.features.add_module(f"transition{i + 1}", _Transition(ch, out_ch, norm))
                ch = out_ch
        self.features.add_module("norm5", nl(ch))
        self.classifier = nn.Linear(ch, num_classes)
        self.num_classes = num_classes

        # torchvision's init (from the original Lua code): He-normal convs, BN 1/0, zero Linear bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
            elif getattr(m, "weight", None) is not None and getattr(m, "bias", None) is not None and m.weight.dim() == 1:
                nn.init.ones_(m.weight)  # every norm layer (torch BN, scratch BN, GroupNorm)
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, segments: int | bool = True) -> None:
        """Switch the memory-efficient dense layers on or off (the ``memory_efficient`` argument):
        in training, each layer recomputes its concatenated input and bottleneck in backward, so
        the kept activations grow linearly with depth instead of quadratically. Results,
        gradients and BN running statistics are those of the plain model.

        Args:
            segments: any count > 0 (or ``True``) turns it on for every dense layer, the count
                itself is not used (each layer is its own segment); 0 or ``False`` turns it off.
        """
        on = resolve_checkpoint_segments(segments, 1) > 0
        for m in self.modules():
            if isinstance(m, _DenseLayer):
                m.memory_efficient = on

    def forward_features(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, F, h, w)
        # norm5 is not followed by a ReLU module in torchvision's layout; the ReLU is applied here
        # so the feature map is the one the classifier pools.
        return F.relu(self.features(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:  # (B, F, h, w) -> (B, N)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.classifier(x)


# Builders: one line per model over the two family constructors (ImageNet layout, CIFAR layout).
# A builder accepts the keyword arguments of its family constructor.

_HUANG_2017 = Paper("Huang et al. 2017", "Densely Connected Convolutional Networks", "1608.06993")


def _densenet(
    growth_rate: int, block_config: Sequence[int], num_init_features: int, /, *, num_classes: int = 1000,
    in_channels: int = 3, small_input: bool = False, norm: str = "batch", drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """An ImageNet DenseNet with torchvision's keys; ``small_input`` gives a 3x3 stride-1 conv0 and
    no pool0, for 28-32 px images (only conv0's weight shape differs from the ImageNet layout).

    Args:
        drop_rate: dropout after each dense layer.
        memory_efficient: checkpoint the bottlenecks to save memory.
    """
    return DenseNet(growth_rate, block_config, num_init_features, drop_rate=drop_rate, num_classes=num_classes,
                    in_channels=in_channels, stem="cifar" if small_input else "imagenet", norm=norm,
                    memory_efficient=memory_efficient)


def _cifar_densenet(
    depth: int, growth_rate: int, bc: bool, /, *, num_classes: int = 1000, in_channels: int = 3,
    small_input: bool = False, norm: str = "batch", drop_rate: float = 0.0, memory_efficient: bool = False,
) -> DenseNet:
    """A CIFAR DenseNet (Sec. 3): three dense blocks with equal layer counts; ``small_input`` is
    ignored, the stem is the 3x3 stride-1 conv for 32 px images either way.

    Args:
        drop_rate: dropout after each dense layer (the paper's 0.2 without augmentation).
        memory_efficient: checkpoint the bottlenecks to save memory.
    """
    # depth counts the stem conv, the two transition convs and the classifier (4), plus 1 conv
    # per plain layer or 2 per BC layer.
    per_layer = 2 if bc else 1
    if (depth - 4) % (3 * per_layer):
        raise ValueError(f"depth {depth} is not 3 * {per_layer} * n + 4 for a {'BC' if bc else 'plain'} DenseNet")
    n = (depth - 4) // (3 * per_layer)
    return DenseNet(
        growth_rate,
        (n, n, n),
        # "For DenseNet-BC the initial convolution has 2k output channels"; 16 for plain DenseNet.
        2 * growth_rate if bc else 16,
        bn_size=4 if bc else 0,
        compression=0.5 if bc else 1.0,
        drop_rate=drop_rate,
        num_classes=num_classes,
        in_channels=in_channels,
        stem="cifar",
        norm=norm,
        memory_efficient=memory_efficient,
    )


# torchvision's module names: the classifier is ``classifier``, the first conv ``features.conv0``.
_IMAGENET = Family(_densenet, paper=_HUANG_2017, classifier="classifier", first_conv="features.conv0",
                   cam_layer="features")
_CIFAR = Family(_cifar_densenet, paper=_HUANG_2017, small_input=True, classifier="classifier",
                first_conv="features.conv0", cam_layer="features")


# Table 1: growth rate k, layers per block, stem channels (2k).
densenet121 = _IMAGENET.builder("densenet121", 32, (6, 12, 24, 16), 64, doc="DenseNet-121 (k=32, blocks 6-12-24-16).")
densenet161 = _IMAGENET.builder("densenet161", 48, (6, 12, 36, 24), 96,
                                doc="DenseNet-161 (k=48, blocks 6-12-36-24, 96 stem channels).")
densenet169 = _IMAGENET.builder("densenet169", 32, (6, 12, 32, 32), 64, doc="DenseNet-169 (k=32, blocks 6-12-32-32).")
densenet201 = _IMAGENET.builder("densenet201", 32, (6, 12, 48, 32), 64, doc="DenseNet-201 (k=32, blocks 6-12-48-32).")

# Table 2: depth L, growth rate k, bottleneck and compression (BC) or neither.
densenet_bc_100 = _CIFAR.builder("densenet_bc_100", 100, 12, True, params_m=0.8,
                                 doc="DenseNet-BC (L=100, k=12) for 32 px images: 3 blocks of 16 bottleneck layers.")
densenet_bc_250 = _CIFAR.builder("densenet_bc_250", 250, 24, True, params_m=15.3,
                                 doc="DenseNet-BC (L=250, k=24) for 32 px images: 3 blocks of 41 bottleneck layers.")
densenet40 = _CIFAR.builder("densenet40", 40, 12, False, params_m=1.0,
                            doc="DenseNet (L=40, k=12) without bottleneck or compression for 32 px images: 3 blocks "
                                "of 12 layers, 16-channel stem.")
