"""The ResNet family: ImageNet ResNets, CIFAR ResNets, pre-activation ResNets, wide ResNets, and
the matching plain (shortcut-free) networks.

* ImageNet ``resnet18..152`` (He et al. 2015, "Deep Residual Learning for Image Recognition",
  table 1) with torchvision's module names, so torchvision state dicts load key for key.
  ``Bottleneck`` puts the stride in the 3x3 conv ("ResNet v1.5", as torchvision).
* ``plain18/34``: the same stacks without shortcuts (He et al. 2015, sec. 4.1).
* CIFAR ``resnet8..1202`` and ``plain20..110`` (He et al. 2015, sec. 4.2): 16-32-64 widths,
  depth 6n+2, option-A (zero-padded identity) shortcuts by default, as the paper used.
* ``preact_resnet110/164/1001`` (He et al. 2016, "Identity Mappings in Deep Residual Networks"):
  BN-ReLU-conv ordering, clean identity paths, a final BN-ReLU before pooling.
* ``wrn16_4``, ``wrn28_10``, ``wrn40_4`` (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

Every model takes ``norm`` (batch | scratch | group | none), which picks the normalization of every
block through :func:`resnet_lab.nn.norm_layer`.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import BatchNorm2d as ScratchBatchNorm2d
from ..nn import norm_has_bias, norm_layer
from ..nn.norm import NormLayer
from .layers import ClassifierModel, checkpoint_keeping_stats, conv1x1, conv3x3, resolve_checkpoint_segments
from .registry import register_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "PreActBasicBlock",
    "PreActBottleneck",
    "PreActResNet",
    "ResNet",
    "ZeroPadShortcut",
    "plain18",
    "plain20",
    "plain32",
    "plain34",
    "plain44",
    "plain56",
    "plain110",
    "preact_resnet110",
    "preact_resnet164",
    "preact_resnet1001",
    "resnet8",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnet1202",
    "wrn16_4",
    "wrn28_10",
    "wrn40_4",
]

# A shortcut factory builds the module that maps a block's input (in_ch, stride) onto its output
# shape (out_ch); it is only called where the two shapes differ.
ShortcutFactory = Callable[[int, int, int], nn.Module]

_NORM_TYPES = (nn.BatchNorm2d, ScratchBatchNorm2d, nn.GroupNorm)


def _zero_last(norm: nn.Module, conv: nn.Conv2d) -> None:
    """Make a residual branch output zero: zero its last norm's scale, or, without a norm
    (``norm="none"``), its last conv, so the block starts as the identity either way."""
    weight = getattr(norm, "weight", None)
    if isinstance(weight, Tensor):
        nn.init.zeros_(weight)
    else:
        nn.init.zeros_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


# ---------------------------------------------------------------------------------------------
# Post-activation blocks (He et al. 2015): conv-BN-ReLU, addition, ReLU.
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR ResNets), torchvision's module names.

    Args:
        in_ch: input channels.
        planes: output channels (``planes * expansion``, expansion 1).
        stride: stride of the first conv; 2 halves the feature map at a stage's first block.
        downsample: the shortcut where input and output shapes differ (1x1 conv + norm, or
            :class:`ZeroPadShortcut`); ``None`` for the identity.
        norm_layer: ``C -> module`` factory from :func:`resnet_lab.nn.norm_layer`.
        conv_bias: give the convs a bias; only useful without a normalization after them.
        residual: ``False`` drops the shortcut: the block of a plain network (He et al. 2015,
            sec. 4.1).
    """

    expansion: int = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        conv_bias: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, planes, stride, bias=conv_bias)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, bias=conv_bias)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def zero_init_last(self) -> None:
        # In a plain block there is no shortcut to carry the signal: zeroing would cut the net.
        if self.residual:
            _zero_last(self.bn2, self.conv2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101/152), torchvision's module names.

    The stride sits in the 3x3 conv, not the first 1x1: torchvision's "ResNet v1.5", about 0.5%
    more top-1 than the paper's placement (see torchvision's resnet.py).

    Args:
        in_ch: input channels.
        planes: width of the 3x3 conv; the block outputs ``planes * 4`` channels.
        stride: stride of the 3x3 conv.
        downsample: shortcut where shapes differ (1x1 conv + norm); ``None`` for the identity.
        norm_layer: ``C -> module`` factory from :func:`resnet_lab.nn.norm_layer`.
        conv_bias: give the convs a bias; only useful without a normalization after them.
        residual: ``False`` drops the shortcut (a plain network's block).
    """

    expansion: int = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        conv_bias: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(in_ch, planes, bias=conv_bias)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride, bias=conv_bias)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, out_ch, bias=conv_bias)
        self.bn3 = norm_layer(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def zero_init_last(self) -> None:
        if self.residual:
            _zero_last(self.bn3, self.conv3)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut of He et al. 2015 (sec. 3.3, 4.2): subsample by ``stride`` and append
    zero channels. Parameter-free, which is why the paper's CIFAR nets have the same parameter
    count as their plain counterparts. Zeros go after the input channels, as in fb.resnet.torch.

    Args:
        in_ch: input channels.
        out_ch: output channels (>= ``in_ch``).
        stride: spatial subsampling factor.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(
                f"a zero-padding shortcut can only add channels, got {in_ch} -> {out_ch}; "
                "use the projection shortcut (shortcut='B') to reduce channels"
            )
        self.pad = out_ch - in_ch
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))  # (B, in_ch, h, w) -> (B, out_ch, h, w)

    def extra_repr(self) -> str:
        return f"pad_channels={self.pad}, stride={self.stride}"


# ---------------------------------------------------------------------------------------------
# Pre-activation blocks (He et al. 2016): BN-ReLU-conv; the shortcut path is a clean identity.
# ---------------------------------------------------------------------------------------------


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus the input (He et al. 2016, fig. 4e);
    with dropout, the block of wide ResNets (Zagoruyko & Komodakis 2016, fig. 1d).

    Args:
        in_ch: input channels.
        planes: output channels.
        stride: stride of the first conv.
        downsample: 1x1 conv applied to the *pre-activated* input where shapes differ, as in the
            authors' code; ``None`` for the identity.
        norm_layer: ``C -> module`` factory from :func:`resnet_lab.nn.norm_layer`.
        conv_bias: give the convs a bias; only useful without a normalization after them.
        drop_rate: dropout probability between the two convs (WRN uses 0.3 on CIFAR).
        residual: ``False`` drops the shortcut.
    """

    expansion: int = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        conv_bias: bool = False,
        drop_rate: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.bn1 = norm_layer(in_ch)
        self.conv1 = conv3x3(in_ch, planes, stride, bias=conv_bias)
        self.bn2 = norm_layer(planes)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes, bias=conv_bias)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def zero_init_last(self) -> None:
        # The branch ends in a conv, not a norm: zeroing it makes the block exactly the identity.
        if self.residual:
            _zero_last(nn.Identity(), self.conv2)

    def forward(self, x: Tensor) -> Tensor:
        # Not in place: with norm="none" bn1 is the identity and x is still needed by the shortcut.
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out), inplace=True)))
        if not self.residual:
            return out
        return out + (x if self.downsample is None else self.downsample(pre))


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1, plus the input (He et al. 2016).

    Args:
        in_ch: input channels.
        planes: width of the 3x3 conv; the block outputs ``planes * 4`` channels.
        stride: stride of the 3x3 conv.
        downsample: 1x1 conv on the pre-activated input where shapes differ; ``None`` otherwise.
        norm_layer: ``C -> module`` factory from :func:`resnet_lab.nn.norm_layer`.
        conv_bias: give the convs a bias; only useful without a normalization after them.
        drop_rate: unused by the paper; accepted so blocks are interchangeable (must be 0).
        residual: ``False`` drops the shortcut.
    """

    expansion: int = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        conv_bias: bool = False,
        drop_rate: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if drop_rate:
            raise ValueError(f"PreActBottleneck has no dropout, got drop_rate={drop_rate}; use 0")
        out_ch = planes * self.expansion
        self.bn1 = norm_layer(in_ch)
        self.conv1 = conv1x1(in_ch, planes, bias=conv_bias)
        self.bn2 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride, bias=conv_bias)
        self.bn3 = norm_layer(planes)
        self.conv3 = conv1x1(planes, out_ch, bias=conv_bias)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def zero_init_last(self) -> None:
        if self.residual:
            _zero_last(nn.Identity(), self.conv3)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))  # not in place: see PreActBasicBlock.forward
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        if not self.residual:
            return out
        return out + (x if self.downsample is None else self.downsample(pre))


# ---------------------------------------------------------------------------------------------
# Shared helpers: stages, shortcuts, initialisation, gradient checkpointing.
# ---------------------------------------------------------------------------------------------


def _make_stage(
    block: type[nn.Module],
    in_ch: int,
    planes: int,
    num_blocks: int,
    stride: int,
    shortcut: ShortcutFactory | None,
    **block_kwargs,
) -> tuple[nn.Sequential, int]:
    """Build one stage; return it with its output channel count.

    Only the first block gets the stride and (where shapes change) the ``shortcut`` module; the
    rest map ``out_ch -> out_ch`` with identity shortcuts. ``shortcut=None`` builds plain blocks.
    """
    out_ch = planes * block.expansion
    blocks = []
    for i in range(num_blocks):
        block_in, block_stride = (in_ch, stride) if i == 0 else (out_ch, 1)
        reshapes = block_stride != 1 or block_in != out_ch
        downsample = shortcut(block_in, out_ch, block_stride) if shortcut and reshapes else None
        blocks.append(
            block(block_in, planes, block_stride, downsample, residual=shortcut is not None, **block_kwargs)
        )
    return nn.Sequential(*blocks), out_ch


def _projection(norm: str) -> ShortcutFactory:
    """Option-B shortcut: 1x1 conv (stride) + norm, named ``downsample.0/1`` as torchvision."""
    make_norm = norm_layer(norm)
    return lambda in_ch, out_ch, stride: nn.Sequential(
        conv1x1(in_ch, out_ch, stride, bias=norm_has_bias(norm)), make_norm(out_ch)
    )


def _preact_projection(norm: str) -> ShortcutFactory:
    """Pre-activation shortcut: a bare 1x1 conv. It projects the already normalized input, and
    the sum stays unnormalized until the next block's BN (He et al. 2016, authors' code). Like
    every conv here it keeps a bias only with ``norm="none"``."""
    return lambda in_ch, out_ch, stride: conv1x1(in_ch, out_ch, stride, bias=norm_has_bias(norm))


def _init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """torchvision's initialisation: He-normal (fan_out) convs, norms at scale 1 shift 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORM_TYPES) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        # Goyal et al. 2017 ("Accurate, Large Minibatch SGD"): zero the last BN scale (gamma) of
        # each residual branch so every block starts as the identity; helps large-batch training.
        for m in model.modules():
            if m is not model and hasattr(m, "zero_init_last"):
                m.zero_init_last()


def _run_checkpointed(blocks: Sequence[nn.Module], x: Tensor, segments: int) -> Tensor:
    """Run ``blocks`` in order as ``segments`` checkpointed segments (at most one per block) that
    keep only their inputs and recompute the rest in backward: memory for about ``segments +
    blocks / segments`` block activations instead of all blocks, as
    ``torch.utils.checkpoint.checkpoint_sequential``, but with exact BN running statistics."""
    n = len(blocks)
    segments = min(segments, n)
    bounds = [round(i * n / segments) for i in range(segments + 1)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = blocks[start:stop]
        x = checkpoint_keeping_stats(functools.partial(_run_in_order, part), part, x)
    return x


def _run_in_order(blocks: Sequence[nn.Module], x: Tensor) -> Tensor:
    for block in blocks:
        x = block(x)
    return x


class _CheckpointedStages:
    """The residual stages of a ResNet class (mixin): run them in order, or, with gradient
    checkpointing on while training with autograd, as checkpointed segments over all their blocks.

    Subclasses set ``stage_names`` (``layer1``, ``layer2``, ...) and ``checkpoint_segments``.
    """

    stage_names: Sequence[str]
    checkpoint_segments: int = 0

    def _blocks(self) -> list[nn.Module]:
        return [b for name in self.stage_names for b in getattr(self, name)]

    def set_grad_checkpointing(self, segments: int | bool = True) -> None:
        """Checkpoint the residual blocks in training: autograd keeps the input of each of
        ``segments`` runs of consecutive blocks and recomputes the rest in backward. Results,
        gradients and BN running statistics are those of the plain model; evaluation and
        ``torch.no_grad()`` run without it.

        Args:
            segments: how many segments the blocks of all stages are split into (at most one
                per block); 0 or ``False`` turns checkpointing off, ``True`` picks
                ceil(sqrt(blocks)) segments, the least memory (Chen et al. 2016).
        """
        self.checkpoint_segments = resolve_checkpoint_segments(segments, len(self._blocks()))

    def _forward_stages(self, x: Tensor) -> Tensor:
        if self.checkpoint_segments and self.training and torch.is_grad_enabled():
            return _run_checkpointed(self._blocks(), x, self.checkpoint_segments)
        # The stages themselves (not their flattened blocks), so hooks on ``layer3`` fire.
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x


class _PooledHead:
    """Global average pool + fc head shared by the ResNet classes (mixin)."""

    avgpool: nn.Module
    fc: nn.Module

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map -> logits, or the pooled features with ``pre_logits=True``.

        Args:
            x: output of ``forward_features``, (B, C, h, w).
            pre_logits: return the (B, C) pooled features instead of logits.
        """
        x = torch.flatten(self.avgpool(x), 1)  # (B, C, h, w) -> (B, C)
        return x if pre_logits else self.fc(x)


# ---------------------------------------------------------------------------------------------
# Models.
# ---------------------------------------------------------------------------------------------


class ResNet(_CheckpointedStages, _PooledHead, ClassifierModel):
    """ImageNet ResNet (He et al. 2015, table 1) with torchvision's module names.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: outputs of ``fc``.
        in_channels: input channels of ``conv1`` (1 for grayscale).
        small_input: for 28-32 px images: ``conv1`` becomes 3x3 stride 1 and ``maxpool`` the
            identity, so the last stage still sees 4x4 instead of 1x1 (the usual CIFAR adaptation).
        norm: ``batch``, ``scratch``, ``group`` or ``none``.
        zero_init_residual: start every residual block as the identity (Goyal et al. 2017).
        residual: ``False`` builds the plain network of the same depth (He et al. 2015, sec. 4.1).
        widths: planes of the four stages.
    """

    classifier_attr = "fc"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        norm: str = "batch",
        zero_init_residual: bool = False,
        residual: bool = True,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"ResNet needs 4 stages, got layers={list(layers)} widths={list(widths)}")
        make_norm, bias = norm_layer(norm), norm_has_bias(norm)
        stem = widths[0]
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=bias)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=bias)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = make_norm(stem)
        self.relu = nn.ReLU(inplace=True)
        shortcut = _projection(norm) if residual else None
        kw = dict(norm_layer=make_norm, conv_bias=bias)
        ch = stem
        self.layer1, ch = _make_stage(block, ch, widths[0], layers[0], 1, shortcut, **kw)
        self.layer2, ch = _make_stage(block, ch, widths[1], layers[1], 2, shortcut, **kw)
        self.layer3, ch = _make_stage(block, ch, widths[2], layers[2], 2, shortcut, **kw)
        self.layer4, ch = _make_stage(block, ch, widths[3], layers[3], 2, shortcut, **kw)
        self.stage_names = ("layer1", "layer2", "layer3", "layer4")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(ch, num_classes)
        self.num_classes = num_classes
        _init_weights(self, zero_init_residual)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, C, H/32, W/32) (H/8 with ``small_input``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self._forward_stages(x)


class CifarResNet(_CheckpointedStages, _PooledHead, ClassifierModel):
    """CIFAR ResNet of He et al. 2015, sec. 4.2: 3x3 conv (16), three stages of n basic blocks
    with 16, 32, 64 channels on 32, 16, 8 px maps, global average pool, fc; depth 6n+2.

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110, 1202...).
        num_classes: outputs of ``fc``.
        in_channels: input channels of ``conv1``.
        norm: ``batch``, ``scratch``, ``group`` or ``none``.
        shortcut: ``"A"``: zero-padded identity where the width doubles, parameter-free, what the
            paper used on CIFAR (and what its parameter counts assume); ``"B"``: 1x1 conv + norm
            there; ``"none"``: no shortcuts at all, the plain net of the same depth.
        zero_init_residual: start every residual block as the identity (Goyal et al. 2017).
        widths: channels of the three stages.
        checkpoint_segments: when > 0 and training with autograd on, run the blocks as that many
            gradient-checkpointed segments (memory for 1000-layer nets); 0 turns it off. Same
            as calling :meth:`set_grad_checkpointing` after construction.
        stem_pool: a 2x2 max-pool after the stem conv (the CPU-sized ``*_fast`` variants).
    """

    classifier_attr = "fc"

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        norm: str = "batch",
        shortcut: str = "A",
        zero_init_residual: bool = False,
        widths: Sequence[int] = (16, 32, 64),
        checkpoint_segments: int | bool = 0,
        stem_pool: bool = False,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, 56, 110...), got {depth}")
        if shortcut not in ("A", "B", "none"):
            raise ValueError(f"shortcut must be 'A' (zero-pad), 'B' (projection) or 'none' (plain), got {shortcut!r}")
        n = (depth - 2) // 6
        make_norm, bias = norm_layer(norm), norm_has_bias(norm)
        factory: ShortcutFactory | None = {"A": ZeroPadShortcut, "B": _projection(norm), "none": None}[shortcut]
        resolve_checkpoint_segments(checkpoint_segments, 1)  # fail before building a large net
        self.conv1 = conv3x3(in_channels, widths[0], bias=bias)
        self.bn1 = make_norm(widths[0])
        self.relu = nn.ReLU(inplace=True)
        # As the ImageNet stem does, halve the resolution before the stages: 4x fewer MACs per
        # channel, which buys width (CPUs run wide convs far more efficiently than 16-channel ones).
        self.maxpool = nn.MaxPool2d(2) if stem_pool else nn.Identity()
        kw = dict(norm_layer=make_norm, conv_bias=bias)
        ch = widths[0]
        self.layer1, ch = _make_stage(BasicBlock, ch, widths[0], n, 1, factory, **kw)
        self.layer2, ch = _make_stage(BasicBlock, ch, widths[1], n, 2, factory, **kw)
        self.layer3, ch = _make_stage(BasicBlock, ch, widths[2], n, 2, factory, **kw)
        self.stage_names = ("layer1", "layer2", "layer3")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(ch, num_classes)
        self.num_classes = num_classes
        _init_weights(self, zero_init_residual)
        self.set_grad_checkpointing(checkpoint_segments)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, widths[2], H/4, W/4) (H/8 with ``stem_pool``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self._forward_stages(x)


class PreActResNet(_CheckpointedStages, _PooledHead, ClassifierModel):
    """Pre-activation ResNet for CIFAR (He et al. 2016) and wide ResNet (Zagoruyko & Komodakis
    2016): 3x3 stem conv, three stages of pre-activation blocks, final BN-ReLU, pool, fc.

    Args:
        block: :class:`PreActBasicBlock` or :class:`PreActBottleneck`.
        layers: blocks per stage.
        widths: planes of the three stages (a bottleneck outputs 4x that).
        stem_width: output channels of the stem conv (16 in both papers).
        num_classes: outputs of ``fc``.
        in_channels: input channels of ``conv1``.
        norm: ``batch``, ``scratch``, ``group`` or ``none``.
        drop_rate: dropout between the convs of basic blocks (wide ResNets).
        zero_init_residual: start every block as the identity (Goyal et al. 2017).
        checkpoint_segments: when > 0 and training with autograd on, run the blocks as that many
            gradient-checkpointed segments; 0 turns it off. Same as calling
            :meth:`set_grad_checkpointing` after construction.
    """

    classifier_attr = "fc"

    def __init__(
        self,
        block: type[PreActBasicBlock] | type[PreActBottleneck],
        layers: Sequence[int],
        widths: Sequence[int] = (16, 32, 64),
        *,
        stem_width: int = 16,
        num_classes: int = 10,
        in_channels: int = 3,
        norm: str = "batch",
        drop_rate: float = 0.0,
        zero_init_residual: bool = False,
        checkpoint_segments: int | bool = 0,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers and widths need one entry per stage, got {list(layers)} and {list(widths)}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        make_norm, bias = norm_layer(norm), norm_has_bias(norm)
        resolve_checkpoint_segments(checkpoint_segments, 1)  # fail before building a large net
        self.conv1 = conv3x3(in_channels, stem_width, bias=bias)
        kw = dict(norm_layer=make_norm, conv_bias=bias, drop_rate=drop_rate)
        ch = stem_width
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(layers)))
        for i, (name, n, planes) in enumerate(zip(self.stage_names, layers, widths)):
            stage, ch = _make_stage(block, ch, planes, n, 1 if i == 0 else 2, _preact_projection(norm), **kw)
            self.add_module(name, stage)
        # The last block's sum has not been normalized yet (He et al. 2016, sec. 4.1 and fig. 4e).
        self.bn_final = make_norm(ch)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(ch, num_classes)
        self.num_classes = num_classes
        _init_weights(self, zero_init_residual)
        self.set_grad_checkpointing(checkpoint_segments)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, C, H/4, W/4), after the final BN-ReLU."""
        x = self._forward_stages(self.conv1(x))
        return F.relu(self.bn_final(x))  # not in place: with norm="none" x is a block's output


# ---------------------------------------------------------------------------------------------
# Builders. Common arguments: num_classes, in_channels, small_input, norm (see create_model).
# ---------------------------------------------------------------------------------------------


def _imagenet(block, layers, residual: bool, **kw) -> ResNet:
    return ResNet(block, layers, residual=residual, **kw)


@register_model
def resnet18(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-18 (He et al. 2015, "Deep Residual Learning for Image Recognition"), 11.7M params."""
    return _imagenet(BasicBlock, (2, 2, 2, 2), True, num_classes=num_classes, in_channels=in_channels,
                     small_input=small_input, norm=norm, zero_init_residual=zero_init_residual)


@register_model
def resnet34(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-34 (He et al. 2015, "Deep Residual Learning for Image Recognition"), 21.8M params."""
    return _imagenet(BasicBlock, (3, 4, 6, 3), True, num_classes=num_classes, in_channels=in_channels,
                     small_input=small_input, norm=norm, zero_init_residual=zero_init_residual)


@register_model
def resnet50(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-50 (He et al. 2015, "Deep Residual Learning for Image Recognition"), bottleneck
    blocks with the stride in the 3x3 conv (v1.5, as torchvision), 25.6M params."""
    return _imagenet(Bottleneck, (3, 4, 6, 3), True, num_classes=num_classes, in_channels=in_channels,
                     small_input=small_input, norm=norm, zero_init_residual=zero_init_residual)


@register_model
def resnet101(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-101 (He et al. 2015, "Deep Residual Learning for Image Recognition"), 44.5M params."""
    return _imagenet(Bottleneck, (3, 4, 23, 3), True, num_classes=num_classes, in_channels=in_channels,
                     small_input=small_input, norm=norm, zero_init_residual=zero_init_residual)


@register_model
def resnet152(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-152 (He et al. 2015, "Deep Residual Learning for Image Recognition"), 60.2M params."""
    return _imagenet(Bottleneck, (3, 8, 36, 3), True, num_classes=num_classes, in_channels=in_channels,
                     small_input=small_input, norm=norm, zero_init_residual=zero_init_residual)


@register_model
def plain18(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
) -> ResNet:
    """Plain-18: ResNet-18 without shortcuts, the baseline of He et al. 2015, sec. 4.1 / fig. 4."""
    return _imagenet(BasicBlock, (2, 2, 2, 2), False, num_classes=num_classes, in_channels=in_channels,
                     small_input=small_input, norm=norm)


@register_model
def plain34(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
) -> ResNet:
    """Plain-34: ResNet-34 without shortcuts; deeper but worse than plain-18 (He et al. 2015,
    sec. 4.1, the degradation problem)."""
    return _imagenet(BasicBlock, (3, 4, 6, 3), False, num_classes=num_classes, in_channels=in_channels,
                     small_input=small_input, norm=norm)


def _cifar(depth: int, *, small_input: bool, **kw) -> CifarResNet:
    # small_input is accepted for the common signature; CIFAR nets are small-input by design.
    return CifarResNet(depth, **kw)


@register_model
def resnet8(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    shortcut: str = "A", zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> CifarResNet:
    """ResNet-8: the smallest CIFAR ResNet of He et al. 2015, sec. 4.2 (n=1), 0.08M params; for
    fast demos and tests."""
    return _cifar(8, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut=shortcut, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


@register_model
def resnet8_fast(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False,
) -> CifarResNet:
    """ResNet-8 with doubled widths (32-64-128) and a 2x2 max-pool after the stem: about the MACs
    of ResNet-8 at 4x its width (0.31M params). Not from a paper: the CPU demo model (`make demo`)
    for 28-32 px images, where a 16-channel conv leaves most of a CPU's vector units idle."""
    return _cifar(8, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut="B", zero_init_residual=zero_init_residual, widths=(32, 64, 128), stem_pool=True)


@register_model
def resnet20_fast(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False,
) -> CifarResNet:
    """ResNet-20 with doubled widths (32-64-128) and the 2x2 max-pool after the stem (1.08M params):
    the same MACs as ResNet-20 at 4x its parameters. Not from a paper: a CPU-friendly candidate for
    the long Fashion-MNIST recipe (see docs/RESULTS.md)."""
    return _cifar(20, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut="B", zero_init_residual=zero_init_residual, widths=(32, 64, 128), stem_pool=True)


@register_model
def resnet14_wide_fast(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False,
) -> CifarResNet:
    """ResNet-14 at 4x the CIFAR widths (64-128-256, as WRN-n-4) with the stem max-pool (2.78M
    params). Not from a paper: the wide candidate for the long Fashion-MNIST recipe."""
    return _cifar(14, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut="B", zero_init_residual=zero_init_residual, widths=(64, 128, 256), stem_pool=True)


@register_model
def resnet20(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    shortcut: str = "A", zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2015, sec. 4.2, table 6: 0.27M params, 8.75% error)."""
    return _cifar(20, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut=shortcut, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


@register_model
def resnet32(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    shortcut: str = "A", zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> CifarResNet:
    """ResNet-32 for CIFAR (He et al. 2015, sec. 4.2, table 6: 0.46M params, 7.51% error)."""
    return _cifar(32, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut=shortcut, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


@register_model
def resnet44(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    shortcut: str = "A", zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> CifarResNet:
    """ResNet-44 for CIFAR (He et al. 2015, sec. 4.2, table 6: 0.66M params, 7.17% error)."""
    return _cifar(44, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut=shortcut, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


@register_model
def resnet56(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    shortcut: str = "A", zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> CifarResNet:
    """ResNet-56 for CIFAR (He et al. 2015, sec. 4.2, table 6: 0.85M params, 6.97% error)."""
    return _cifar(56, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut=shortcut, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


@register_model
def resnet110(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    shortcut: str = "A", zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> CifarResNet:
    """ResNet-110 for CIFAR (He et al. 2015, sec. 4.2, table 6: 1.7M params, 6.43% error)."""
    return _cifar(110, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut=shortcut, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


@register_model
def resnet1202(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    shortcut: str = "A", zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> CifarResNet:
    """ResNet-1202 for CIFAR (He et al. 2015, sec. 4.2, table 6: 19.4M params, 7.93% error, worse
    than ResNet-110 through overfitting)."""
    return _cifar(1202, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                  shortcut=shortcut, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


def _plain_cifar(depth: int, **kw) -> CifarResNet:
    return _cifar(depth, shortcut="none", **kw)


@register_model
def plain20(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    checkpoint_segments: int = 0,
) -> CifarResNet:
    """Plain-20 for CIFAR: ResNet-20 without shortcuts (He et al. 2015, sec. 4.2, fig. 6 left)."""
    return _plain_cifar(20, num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                        norm=norm, checkpoint_segments=checkpoint_segments)


@register_model
def plain32(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    checkpoint_segments: int = 0,
) -> CifarResNet:
    """Plain-32 for CIFAR (He et al. 2015, sec. 4.2, fig. 6 left)."""
    return _plain_cifar(32, num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                        norm=norm, checkpoint_segments=checkpoint_segments)


@register_model
def plain44(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    checkpoint_segments: int = 0,
) -> CifarResNet:
    """Plain-44 for CIFAR (He et al. 2015, sec. 4.2, fig. 6 left)."""
    return _plain_cifar(44, num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                        norm=norm, checkpoint_segments=checkpoint_segments)


@register_model
def plain56(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    checkpoint_segments: int = 0,
) -> CifarResNet:
    """Plain-56 for CIFAR: higher training error than plain-20, the degradation problem (He et al.
    2015, sec. 4.2, fig. 6 left)."""
    return _plain_cifar(56, num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                        norm=norm, checkpoint_segments=checkpoint_segments)


@register_model
def plain110(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    checkpoint_segments: int = 0,
) -> CifarResNet:
    """Plain-110 for CIFAR: ResNet-110 without shortcuts (He et al. 2015, sec. 4.2); deeper plain
    nets train worse, the degradation problem."""
    return _plain_cifar(110, num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                        norm=norm, checkpoint_segments=checkpoint_segments)


def _preact(block, depth: int, per_block: int, *, small_input: bool, **kw) -> PreActResNet:
    # depth = per_block * 3n + 2 (stem conv + fc); small_input accepted for the common signature.
    if (depth - 2) % (3 * per_block):
        raise ValueError(f"pre-activation depth must be {3 * per_block}n+2, got {depth}")
    n = (depth - 2) // (3 * per_block)
    return PreActResNet(block, (n, n, n), (16, 32, 64), **kw)


@register_model
def preact_resnet110(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> PreActResNet:
    """Pre-activation ResNet-110, basic blocks 16-32-64 (He et al. 2016, "Identity Mappings in Deep
    Residual Networks"), 1.7M params."""
    return _preact(PreActBasicBlock, 110, 2, num_classes=num_classes, in_channels=in_channels,
                   small_input=small_input, norm=norm, zero_init_residual=zero_init_residual,
                   checkpoint_segments=checkpoint_segments)


@register_model
def preact_resnet164(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> PreActResNet:
    """Pre-activation ResNet-164, bottleneck blocks with outputs 64-128-256 (He et al. 2016,
    "Identity Mappings in Deep Residual Networks"), 1.7M params."""
    return _preact(PreActBottleneck, 164, 3, num_classes=num_classes, in_channels=in_channels,
                   small_input=small_input, norm=norm, zero_init_residual=zero_init_residual,
                   checkpoint_segments=checkpoint_segments)


@register_model
def preact_resnet1001(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> PreActResNet:
    """Pre-activation ResNet-1001, bottleneck blocks (He et al. 2016, "Identity Mappings in Deep
    Residual Networks": 10.2M params, 4.92% CIFAR-10 error). ``checkpoint_segments``
    makes it trainable in modest memory."""
    return _preact(PreActBottleneck, 1001, 3, num_classes=num_classes, in_channels=in_channels,
                   small_input=small_input, norm=norm, zero_init_residual=zero_init_residual,
                   checkpoint_segments=checkpoint_segments)


def _wide(depth: int, k: int, *, small_input: bool, **kw) -> PreActResNet:
    # WRN-d-k: depth = 6n + 4 (stem, fc and the two projection convs count as layers).
    if (depth - 4) % 6:
        raise ValueError(f"wide ResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    return PreActResNet(PreActBasicBlock, (n, n, n), (16 * k, 32 * k, 64 * k), **kw)


@register_model
def wrn16_4(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    drop_rate: float = 0.0, zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> PreActResNet:
    """WRN-16-4 (Zagoruyko & Komodakis 2016, "Wide Residual Networks"), 2.7M params."""
    return _wide(16, 4, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                 drop_rate=drop_rate, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


@register_model
def wrn28_10(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    drop_rate: float = 0.0, zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> PreActResNet:
    """WRN-28-10 (Zagoruyko & Komodakis 2016, "Wide Residual Networks"), 36.5M params;
    the paper's best CIFAR result uses ``drop_rate=0.3``."""
    return _wide(28, 10, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                 drop_rate=drop_rate, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


@register_model
def wrn40_4(
    *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    drop_rate: float = 0.0, zero_init_residual: bool = False, checkpoint_segments: int = 0,
) -> PreActResNet:
    """WRN-40-4 (Zagoruyko & Komodakis 2016, "Wide Residual Networks"), 8.9M params."""
    return _wide(40, 4, num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm,
                 drop_rate=drop_rate, zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)
