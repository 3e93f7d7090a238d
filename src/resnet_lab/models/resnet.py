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
from .layers import (ClassifierModel, check_rate, checkpoint_keeping_stats, conv1x1, conv3x3,
                     resolve_checkpoint_segments)
from .registry import Family, Paper

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
    "resnet8_fast",
    "resnet8_prepool",
    "resnet14_fast",
    "resnet14_wide_fast",
    "resnet18",
    "resnet20",
    "resnet20_fast",
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


# ---------------------------------------------------------------------------------------------
# What every residual block shares: the shortcut, the sum, and zero_init_last.
# ---------------------------------------------------------------------------------------------


class _ResidualBlock(nn.Module):
    """Base of the four residual blocks: the shortcut sum and :meth:`zero_init_last`.

    A subclass builds its branch, then calls :meth:`_init_shortcut` (last, so ``downsample``
    follows the branch in the state dict, as in torchvision), and names the end of its branch in
    ``_last_norm`` (``None`` where the branch ends in a conv) and ``_last_conv``.
    """

    expansion: int = 1
    _last_norm: str | None
    _last_conv: str
    downsample: nn.Module | None

    def _init_shortcut(self, downsample: nn.Module | None, stride: int, residual: bool) -> None:
        """Keep the shortcut.

        Args:
            downsample: the shortcut where input and output shapes differ; ``None`` for the identity.
            stride: the block's stride, kept as an attribute as torchvision's blocks keep it.
            residual: ``False`` drops the shortcut: the block of a plain network.
        """
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def zero_init_last(self) -> None:
        """Make the residual branch output zero, so the block starts as the identity (Goyal et al.
        2017): zero the scale of its last norm, or, where the branch ends in a conv (pre-activation
        blocks) or the norm has no scale (``norm="none"``), its last conv."""
        # In a plain block there is no shortcut to carry the signal: zeroing would cut the net.
        if not self.residual:
            return
        norm = getattr(self, self._last_norm) if self._last_norm else None
        weight = getattr(norm, "weight", None)
        if isinstance(weight, Tensor):
            nn.init.zeros_(weight)
            return
        conv = getattr(self, self._last_conv)
        nn.init.zeros_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)

    def _add_shortcut(self, out: Tensor, x: Tensor, projected: Tensor) -> Tensor:
        """The branch output plus the shortcut; the branch output alone in a plain block.

        Args:
            out: the residual branch's output.
            x: the block's input, the identity shortcut.
            projected: what ``downsample`` maps where shapes differ: ``x`` in post-activation
                blocks, the pre-activated input in pre-activation ones (He et al. 2016).
        """
        if not self.residual:
            return out
        return out + (x if self.downsample is None else self.downsample(projected))


# ---------------------------------------------------------------------------------------------
# Post-activation blocks (He et al. 2015): conv-BN-ReLU, addition, ReLU.
# ---------------------------------------------------------------------------------------------


class BasicBlock(_ResidualBlock):
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
    _last_norm, _last_conv = "bn2", "conv2"

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
        self._init_shortcut(downsample, stride, residual)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(self._add_shortcut(out, x, x))


class Bottleneck(_ResidualBlock):
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
    _last_norm, _last_conv = "bn3", "conv3"

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
        self._init_shortcut(downsample, stride, residual)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self._add_shortcut(out, x, x))


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


class PreActBasicBlock(_ResidualBlock):
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
    # The branch ends in a conv, not a norm: zeroing it makes the block exactly the identity.
    _last_norm, _last_conv = None, "conv2"

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
        self._init_shortcut(downsample, stride, residual)

    def forward(self, x: Tensor) -> Tensor:
        # Not in place: with norm="none" bn1 is the identity and x is still needed by the shortcut.
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out), inplace=True)))
        return self._add_shortcut(out, x, pre)


class PreActBottleneck(_ResidualBlock):
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
    _last_norm, _last_conv = None, "conv3"

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
        self._init_shortcut(downsample, stride, residual)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))  # not in place: see PreActBasicBlock.forward
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        return self._add_shortcut(out, x, pre)


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
        blocks = [m for m in model.modules() if m is not model and hasattr(m, "zero_init_last")]
        if not any(getattr(m, "residual", True) for m in blocks):
            # A plain net has no shortcut to carry the signal, so there is nothing to zero: the
            # option would be recorded in the config and do nothing.
            raise ValueError("zero_init_residual=True needs residual blocks, but this net has no shortcuts "
                             "(shortcut='none' / a plain net); drop zero_init_residual")
        for m in blocks:
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

    def _init_head(self, ch: int, num_classes: int) -> None:
        """Build the head, torchvision's ``avgpool`` and ``fc``, after the stages.

        Args:
            ch: channels of the last stage's output.
            num_classes: outputs of ``fc``.
        """
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(ch, num_classes)
        self.num_classes = num_classes

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
        zero_init_residual: start every residual block as the identity (Goyal et al. 2017);
            refused for a net without shortcuts, which has nothing to zero.
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
        self._init_head(ch, num_classes)
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
        zero_init_residual: start every residual block as the identity (Goyal et al. 2017);
            refused for a net without shortcuts, which has nothing to zero.
        widths: channels of the three stages.
        checkpoint_segments: when > 0 and training with autograd on, run the blocks as that many
            gradient-checkpointed segments (memory for 1000-layer nets); 0 turns it off. Same
            as calling :meth:`set_grad_checkpointing` after construction.
        stem_pool: a 2x2 max-pool in the stem (the CPU-sized ``*_fast`` variants): ``True`` or
            ``"after"`` pools after the stem's norm and ReLU; ``"before_norm"`` pools the conv's
            output, so that the norm and the ReLU run on a quarter of the pixels (conv, pool, norm,
            ReLU: the order of airbench's conv groups).
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
        stem_pool: bool | str = False,
    ) -> None:
        super().__init__()
        if stem_pool not in (False, True, "after", "before_norm"):
            raise ValueError(f"stem_pool must be False, True, 'after' or 'before_norm', got {stem_pool!r}")
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
        self.pool_before_norm = stem_pool == "before_norm"
        kw = dict(norm_layer=make_norm, conv_bias=bias)
        ch = widths[0]
        self.layer1, ch = _make_stage(BasicBlock, ch, widths[0], n, 1, factory, **kw)
        self.layer2, ch = _make_stage(BasicBlock, ch, widths[1], n, 2, factory, **kw)
        self.layer3, ch = _make_stage(BasicBlock, ch, widths[2], n, 2, factory, **kw)
        self.stage_names = ("layer1", "layer2", "layer3")
        self._init_head(ch, num_classes)
        _init_weights(self, zero_init_residual)
        self.set_grad_checkpointing(checkpoint_segments)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, widths[2], H/4, W/4) (H/8 with ``stem_pool``)."""
        if self.pool_before_norm:
            x = self.relu(self.bn1(self.maxpool(self.conv1(x))))
        else:
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
        drop_rate = check_rate("drop_rate", drop_rate, "0.3 is the WRN paper's")
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
        self._init_head(ch, num_classes)
        _init_weights(self, zero_init_residual)
        self.set_grad_checkpointing(checkpoint_segments)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, C, H/4, W/4), after the final BN-ReLU."""
        x = self._forward_stages(self.conv1(x))
        return F.relu(self.bn_final(x))  # not in place: with norm="none" x is a block's output


# ---------------------------------------------------------------------------------------------
# Builders: one family constructor per design, one line per model. A builder accepts the keyword
# arguments of its family constructor (the first four as create_model's).
# ---------------------------------------------------------------------------------------------

_HE_2015 = Paper("He et al. 2015", "Deep Residual Learning for Image Recognition", "1512.03385")
_HE_2016 = Paper("He et al. 2016", "Identity Mappings in Deep Residual Networks", "1603.05027")
_ZAGORUYKO_2016 = Paper("Zagoruyko & Komodakis 2016", "Wide Residual Networks", "1605.07146")

def _resnet(
    block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], /, *, num_classes: int = 1000,
    in_channels: int = 3, small_input: bool = False, norm: str = "batch", zero_init_residual: bool = False,
) -> ResNet:
    """An ImageNet ResNet; ``small_input`` gives a 3x3 stride-1 ``conv1`` and no max-pool.

    Args:
        zero_init_residual: start every residual block as the identity (Goyal et al. 2017);
            refused for a net without shortcuts, which has nothing to zero.
    """
    return ResNet(block, layers, num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                  norm=norm, zero_init_residual=zero_init_residual)


def _plain(
    block: type[BasicBlock], layers: Sequence[int], /, *, num_classes: int = 1000, in_channels: int = 3,
    small_input: bool = False, norm: str = "batch",
) -> ResNet:
    """A plain ImageNet network; ``small_input`` gives a 3x3 stride-1 ``conv1`` and no max-pool.
    No ``zero_init_residual``: without shortcuts a zeroed branch would cut the network."""
    return ResNet(block, layers, num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                  norm=norm, residual=False)


def _cifar_resnet(
    depth: int, /, *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    shortcut: str = "A", zero_init_residual: bool = False, checkpoint_segments: int | bool = 0,
) -> CifarResNet:
    """A CIFAR ResNet; ``small_input`` is ignored, the net is built for 28-32 px images.

    Args:
        shortcut: ``A`` zero-padded identity where the width doubles (the paper's), ``B`` 1x1
            conv + norm there, ``none`` no shortcuts.
        zero_init_residual: start every residual block as the identity (Goyal et al. 2017);
            refused for a net without shortcuts, which has nothing to zero.
        checkpoint_segments: gradient-checkpointed segments in training (less memory); 0 is off.
    """
    return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels, norm=norm, shortcut=shortcut,
                       zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


def _cifar_fast(
    depth: int, widths: Sequence[int], stem_pool: str = "after", /, *, num_classes: int = 1000, in_channels: int = 3,
    small_input: bool = False, norm: str = "batch", zero_init_residual: bool = False,
    checkpoint_segments: int | bool = 0,
) -> CifarResNet:
    """A CIFAR ResNet at other widths with a 2x2 max-pool in the stem (after its BN and ReLU, or
    before them for ``stem_pool="before_norm"``) and projection shortcuts; ``small_input`` is
    ignored, the net is built for 28-32 px images.

    Args:
        zero_init_residual: start every residual block as the identity (Goyal et al. 2017);
            refused for a net without shortcuts, which has nothing to zero.
        checkpoint_segments: gradient-checkpointed segments in training (less memory); 0 is off.
    """
    return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels, norm=norm, shortcut="B",
                       zero_init_residual=zero_init_residual, widths=widths, stem_pool=stem_pool,
                       checkpoint_segments=checkpoint_segments)


def _cifar_plain(
    depth: int, /, *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, norm: str = "batch",
    checkpoint_segments: int | bool = 0,
) -> CifarResNet:
    """A plain CIFAR network; ``small_input`` is ignored, the net is built for 28-32 px images.

    Args:
        checkpoint_segments: gradient-checkpointed segments in training (less memory); 0 is off.
    """
    return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels, norm=norm, shortcut="none",
                       checkpoint_segments=checkpoint_segments)


def _preact(
    block: type[PreActBasicBlock] | type[PreActBottleneck], depth: int, /, *, num_classes: int = 1000,
    in_channels: int = 3, small_input: bool = False, norm: str = "batch", zero_init_residual: bool = False,
    checkpoint_segments: int | bool = 0,
) -> PreActResNet:
    """A pre-activation ResNet for CIFAR; ``small_input`` is ignored, the net is built for 28-32 px.

    Args:
        zero_init_residual: start every block as the identity (Goyal et al. 2017).
        checkpoint_segments: gradient-checkpointed segments in training (less memory); 0 is off.
    """
    # depth = (convs per block) * 3n + 2: the stem conv and the fc.
    per_block = 2 if block is PreActBasicBlock else 3
    if (depth - 2) % (3 * per_block):
        raise ValueError(f"pre-activation depth must be {3 * per_block}n+2, got {depth}")
    n = (depth - 2) // (3 * per_block)
    return PreActResNet(block, (n, n, n), (16, 32, 64), num_classes=num_classes, in_channels=in_channels, norm=norm,
                        zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


def _wide(
    depth: int, k: int, /, *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
    norm: str = "batch", drop_rate: float = 0.0, zero_init_residual: bool = False,
    checkpoint_segments: int | bool = 0,
) -> PreActResNet:
    """A wide ResNet for CIFAR; ``small_input`` is ignored, the net is built for 28-32 px images.

    Args:
        drop_rate: dropout between the two convs of each block (the paper's 0.3).
        zero_init_residual: start every block as the identity (Goyal et al. 2017).
        checkpoint_segments: gradient-checkpointed segments in training (less memory); 0 is off.
    """
    # WRN-d-k: depth = 6n + 4 (stem, fc and the two projection convs count as layers).
    if (depth - 4) % 6:
        raise ValueError(f"wide ResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    return PreActResNet(PreActBasicBlock, (n, n, n), (16 * k, 32 * k, 64 * k), num_classes=num_classes,
                        in_channels=in_channels, norm=norm, drop_rate=drop_rate,
                        zero_init_residual=zero_init_residual, checkpoint_segments=checkpoint_segments)


_IMAGENET = Family(_resnet, paper=_HE_2015)
_IMAGENET_PLAIN = Family(_plain, paper=_HE_2015)
_CIFAR = Family(_cifar_resnet, paper=_HE_2015, small_input=True, cam_layer="layer3")
_CIFAR_FAST = Family(_cifar_fast, paper=None, small_input=True, cam_layer="layer3")
_CIFAR_PLAIN = Family(_cifar_plain, paper=_HE_2015, small_input=True, cam_layer="layer3")
# Grad-CAM reads bn_final: the last stage's sum is not normalized yet (He et al. 2016, fig. 4e) and the
# head pools relu(bn_final(x)) through F.relu, so the `relu` module never runs and would give no map.
_PREACT = Family(_preact, paper=_HE_2016, small_input=True, cam_layer="bn_final")
_WIDE = Family(_wide, paper=_ZAGORUYKO_2016, small_input=True, cam_layer="bn_final")

# ImageNet ResNets (table 1), torchvision's parameter counts at 1000 classes.
_TORCHVISION_COUNT = "torchvision's documentation; the paper's table 1 gives FLOPs"
resnet18 = _IMAGENET.builder("resnet18", BasicBlock, (2, 2, 2, 2), params_m=11.7, params_from=_TORCHVISION_COUNT,
                             doc="ResNet-18.")
resnet34 = _IMAGENET.builder("resnet34", BasicBlock, (3, 4, 6, 3), params_m=21.8, params_from=_TORCHVISION_COUNT,
                             doc="ResNet-34.")
resnet50 = _IMAGENET.builder("resnet50", Bottleneck, (3, 4, 6, 3), params_m=25.6, params_from=_TORCHVISION_COUNT,
                             doc="ResNet-50: bottleneck blocks with the stride in the 3x3 conv (v1.5, as torchvision).")
resnet101 = _IMAGENET.builder("resnet101", Bottleneck, (3, 4, 23, 3), params_m=44.5, params_from=_TORCHVISION_COUNT,
                              doc="ResNet-101.")
resnet152 = _IMAGENET.builder("resnet152", Bottleneck, (3, 8, 36, 3), params_m=60.2, params_from=_TORCHVISION_COUNT,
                              doc="ResNet-152.")
plain18 = _IMAGENET_PLAIN.builder("plain18", BasicBlock, (2, 2, 2, 2),
                                  doc="Plain-18: ResNet-18 without shortcuts, the baseline of sec. 4.1 / fig. 4.")
plain34 = _IMAGENET_PLAIN.builder("plain34", BasicBlock, (3, 4, 6, 3),
                                  doc="Plain-34: ResNet-34 without shortcuts; deeper but worse than plain-18 (sec. 4.1, "
                                      "the degradation problem).")

# CIFAR ResNets (sec. 4.2, table 6): depth 6n+2, 16-32-64 channels, option-A shortcuts.
resnet8 = _CIFAR.builder("resnet8", 8, params_m=0.08, params_from="counted",
                         doc="ResNet-8: the smallest CIFAR ResNet (n=1, not in table 6), for fast demos and tests.")
resnet20 = _CIFAR.builder("resnet20", 20, params_m=0.27, cifar10_error=8.75, doc="ResNet-20 for CIFAR (table 6).")
resnet32 = _CIFAR.builder("resnet32", 32, params_m=0.46, cifar10_error=7.51, doc="ResNet-32 for CIFAR (table 6).")
resnet44 = _CIFAR.builder("resnet44", 44, params_m=0.66, cifar10_error=7.17, doc="ResNet-44 for CIFAR (table 6).")
resnet56 = _CIFAR.builder("resnet56", 56, params_m=0.85, cifar10_error=6.97, doc="ResNet-56 for CIFAR (table 6).")
resnet110 = _CIFAR.builder("resnet110", 110, params_m=1.7, cifar10_error=6.43, doc="ResNet-110 for CIFAR (table 6).")
resnet1202 = _CIFAR.builder("resnet1202", 1202, params_m=19.4, cifar10_error=7.93,
                            doc="ResNet-1202 for CIFAR (table 6): worse than ResNet-110 through overfitting.")
plain20 = _CIFAR_PLAIN.builder("plain20", 20, doc="Plain-20 for CIFAR: ResNet-20 without shortcuts (sec. 4.2, fig. 6 left).")
plain32 = _CIFAR_PLAIN.builder("plain32", 32, doc="Plain-32 for CIFAR (sec. 4.2, fig. 6 left).")
plain44 = _CIFAR_PLAIN.builder("plain44", 44, doc="Plain-44 for CIFAR (sec. 4.2, fig. 6 left).")
plain56 = _CIFAR_PLAIN.builder("plain56", 56, doc="Plain-56 for CIFAR: higher training error than plain-20, the "
                                                  "degradation problem (sec. 4.2, fig. 6 left).")
plain110 = _CIFAR_PLAIN.builder("plain110", 110, doc="Plain-110 for CIFAR: ResNet-110 without shortcuts (sec. 4.2); "
                                                     "deeper plain nets train worse.")

# Not from a paper: CPU-sized CIFAR ResNets, doubled or 4x widths and a 2x2 max-pool after the stem
# (the MACs of the 16-channel net at 4x its width: a 16-channel conv leaves most of a CPU's vector
# units idle).
resnet8_fast = _CIFAR_FAST.builder("resnet8_fast", 8, (32, 64, 128), params_m=0.31, params_from="counted",
                                   doc="ResNet-8 at 32-64-128 widths: the CPU demo model (`make demo`).")
resnet8_prepool = _CIFAR_FAST.builder(
    "resnet8_prepool", 8, (32, 64, 128), "before_norm", params_m=0.31, params_from="counted",
    doc="resnet8_fast with the stem's max-pool moved before its BN and ReLU (conv, pool, BN, ReLU): the same "
        "weights, with the stem's BN and ReLU on 14x14 instead of 28x28 maps; 1.28x resnet8_fast's training "
        "images/s in float32 on a 2-core CPU (docs/RESULTS.md, demo_fp32). The demo model (`make demo`) on "
        "CPUs without native bfloat16.")
resnet14_fast = _CIFAR_FAST.builder("resnet14_fast", 14, (32, 64, 128), params_m=0.70, params_from="counted",
                                    doc="ResNet-14 at 32-64-128 widths: two blocks per stage, between the demo model "
                                        "and resnet20_fast (the `fast` recipe's model, see docs/RESULTS.md).")
resnet20_fast = _CIFAR_FAST.builder("resnet20_fast", 20, (32, 64, 128), params_m=1.08, params_from="counted",
                                    doc="ResNet-20 at 32-64-128 widths: a CPU-friendly candidate for the long "
                                        "Fashion-MNIST recipe (see docs/RESULTS.md).")
resnet14_wide_fast = _CIFAR_FAST.builder("resnet14_wide_fast", 14, (64, 128, 256), params_m=2.78, params_from="counted",
                                         doc="ResNet-14 at 4x the CIFAR widths (64-128-256, as WRN-n-4): the wide "
                                             "candidate for the long Fashion-MNIST recipe.")

# Pre-activation ResNets for CIFAR (He et al. 2016): basic blocks 16-32-64, or bottlenecks with
# outputs 64-128-256.
preact_resnet110 = _PREACT.builder("preact_resnet110", PreActBasicBlock, 110, params_m=1.7,
                                   doc="Pre-activation ResNet-110, basic blocks.")
preact_resnet164 = _PREACT.builder("preact_resnet164", PreActBottleneck, 164, params_m=1.7,
                                   doc="Pre-activation ResNet-164, bottleneck blocks.")
preact_resnet1001 = _PREACT.builder("preact_resnet1001", PreActBottleneck, 1001, params_m=10.2, cifar10_error=4.92,
                                    doc="Pre-activation ResNet-1001, bottleneck blocks (the published count is the "
                                        "conv and fc weights); ``checkpoint_segments`` trains it in modest memory.")

# Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016).
wrn16_4 = _WIDE.builder("wrn16_4", 16, 4, params_m=2.7, doc="WRN-16-4.")
wrn28_10 = _WIDE.builder("wrn28_10", 28, 10, params_m=36.5,
                         doc="WRN-28-10; the paper's best CIFAR result uses ``drop_rate=0.3``.")
wrn40_4 = _WIDE.builder("wrn40_4", 40, 4, params_m=8.9, doc="WRN-40-4.")
