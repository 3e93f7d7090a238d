"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going Deeper with Convolutions",
arXiv:1409.4842), in torchvision's version: every conv is followed by a normalization (batch norm,
eps 1e-3), which the 2014 paper did not have (it came with Inception v2).

Module names and state-dict keys are torchvision's (``conv1..conv3``, ``inception3a..5b``,
``aux1``/``aux2``, ``fc``). Deviation from the paper kept for weight compatibility: the "5x5"
branch of each Inception module is a 3x3 conv, as in torchvision's checkpoints
(pytorch/vision#906).

Auxiliary classifiers: ``aux_logits=False`` (our default) builds no aux heads, and ``forward``
always returns plain logits, which is what the trainer and every other model expect. It matches
the model torchvision returns for pretrained weights (which drops the untrained aux heads), and a
state dict *with* ``aux1.*``/``aux2.*`` keys (torchvision's default ``googlenet()``, or its
checkpoint file) still loads with ``strict=True``: those keys are dropped on load, as torchvision
drops the heads after loading. ``aux_logits=True`` builds the heads; then a forward in training
mode returns ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` exactly as torchvision (the
paper adds the aux losses with weight 0.3), and eval mode returns logits.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.norm import norm_has_bias, norm_layer
from .layers import ClassifierModel, check_rate, replace_linear
from .registry import Family, Paper

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what transform_input undoes

__all__ = ["BasicConv2d", "GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAux", "googlenet"]

_BN_EPS = 1e-3  # torchvision's BasicConv2d (TensorFlow's default, which its weights were made with)


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output of a GoogLeNet with ``aux_logits=True`` (torchvision's field order)."""

    logits: Tensor
    aux_logits2: Optional[Tensor]
    aux_logits1: Optional[Tensor]


class BasicConv2d(nn.Module):
    """Conv (no bias before a norm) - norm - ReLU.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        norm: normalization name (see :func:`resnet_lab.nn.norm_layer`); eps is 1e-3.
        **conv_kwargs: ``kernel_size``, ``stride``, ``padding`` of the conv.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch", **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, bias=norm_has_bias(norm), **conv_kwargs)
        # The identity of norm="none" takes no eps; every other norm gets torchvision's 1e-3.
        self.bn = norm_layer(norm)(out_ch) if norm == "none" else norm_layer(norm)(out_ch, eps=_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches, concatenated: 1x1; 1x1-3x3; 1x1-"5x5" (3x3, see module doc);
    3x3 max-pool-1x1 (the paper's Figure 2b).

    Args:
        in_ch: input channels.
        ch1x1: output channels of branch 1.
        ch3x3red, ch3x3: reduction and output channels of branch 2.
        ch5x5red, ch5x5: reduction and output channels of branch 3.
        pool_proj: output channels of branch 4.
        norm: normalization name.
    """

    def __init__(
        self,
        in_ch: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_ch, ch1x1, norm, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_ch, ch3x3red, norm, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, norm, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_ch, ch5x5red, norm, kernel_size=1),
            # The paper has 5x5 here; torchvision's weights have 3x3 (pytorch/vision#906). Kept
            # for key-and-shape compatibility with those checkpoints.
            BasicConv2d(ch5x5red, ch5x5, norm, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_ch, pool_proj, norm, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on an intermediate map: 4x4 average pool, 1x1 conv to 128, fc 1024,
    dropout, fc (the paper's Section 5; adaptive pool so any input size works).

    Args:
        in_ch: channels of the map it reads (512 after 4a, 528 after 4d).
        num_classes: outputs.
        norm: normalization name.
        dropout: dropout before the last fc (0.7 in the paper).
    """

    def __init__(self, in_ch: int, num_classes: int, norm: str = "batch", dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_ch, 128, norm, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))  # (B, 128, 4, 4)
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)  # (B, 1024)
        return self.fc2(self.dropout(x))


class GoogLeNet(ClassifierModel):
    """GoogLeNet (Inception v1) with torchvision's module names.

    Args:
        num_classes: outputs of ``fc`` (and of the aux heads).
        in_channels: image channels (1 or 3 when ``transform_input``).
        aux_logits: build the two auxiliary classifiers (see the module doc for what forward
            returns then).
        transform_input: re-normalize inputs from ImageNet mean/std to the [-1, 1] scaling that
            torchvision's original (TensorFlow-ported) weights expect; a 1-channel input is taken as
            normalized with the channel averages of ImageNet's mean/std. Default False.
        small_input: for 28-32 px images: stride-1 conv1 (still 7x7, so ImageNet weights load)
            and no maxpool1/maxpool2, leaving the two later pools (32 -> 16 -> 8 px).
        norm: normalization after every conv.
        dropout: dropout before ``fc`` (0.2, torchvision's).
        dropout_aux: dropout in the aux heads (0.7, the paper's); only with ``aux_logits=True``.
    """

    classifier_attr = "fc"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = False,
        transform_input: bool = False,
        small_input: bool = False,
        norm: str = "batch",
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        if transform_input and in_channels not in (1, 3):
            raise ValueError(
                f"transform_input=True re-normalizes ImageNet RGB channels (or their average, for gray images), but "
                f"in_channels={in_channels}; pass transform_input=False for other inputs"
            )
        dropout = check_rate("dropout", dropout, "0.2 is torchvision's")
        if aux_logits:
            dropout_aux = check_rate("dropout_aux", dropout_aux, "0.7 is the paper's")
        elif dropout_aux != 0.7:
            # Without the aux heads there is nothing for it to act on: refuse rather than record it.
            raise ValueError(f"dropout_aux={dropout_aux!r} only acts on the aux heads; pass aux_logits=True "
                             "with it, or leave dropout_aux out")
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.num_classes = num_classes

        self.conv1 = BasicConv2d(in_channels, 64, norm, kernel_size=7, stride=1 if small_input else 2, padding=3)
        self.maxpool1 = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, norm, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, norm, kernel_size=3, padding=1)
        self.maxpool2 = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, ceil_mode=True)

        # Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32, norm)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64, norm)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64, norm)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64, norm)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64, norm)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64, norm)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128, norm)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128, norm)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128, norm)

        self.aux1: Optional[InceptionAux]
        self.aux2: Optional[InceptionAux]
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, norm, dropout=dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, norm, dropout=dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

        # torchvision's init: truncated normal (std 0.01, cut at +-2) for conv and Linear weights.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                if isinstance(m, nn.Conv2d) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif getattr(m, "weight", None) is not None and getattr(m, "bias", None) is not None and m.weight.dim() == 1:
                nn.init.ones_(m.weight)  # every norm layer (torch BN, scratch BN, GroupNorm)
                nn.init.zeros_(m.bias)

    def _transform_input(self, x: Tensor) -> Tensor:
        if not self.transform_input:
            return x
        # ImageNet (x - mean) / std  ->  (x01 - 0.5) / 0.5, per channel. A gray image stands for three
        # equal channels, normalized with the averages (transfer.adapt_mean_std): re-scaled the same
        # way, conv1's channel-summed kernel then sees exactly what the RGB kernel saw.
        mean, std = x.new_tensor(_IMAGENET_MEAN), x.new_tensor(_IMAGENET_STD)
        if x.shape[1] == 1:
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        return x * (std / 0.5).view(1, -1, 1, 1) + ((mean - 0.5) / 0.5).view(1, -1, 1, 1)

    def _features(self, x: Tensor, with_aux: bool) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        # Shapes for a 224 px input (small_input: 32 px stays 32 until maxpool3).
        x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))  # (B, 64, 56, 56)
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (B, 192, 28, 28)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (B, 480, 14, 14)
        x = self.inception4a(x)  # (B, 512, 14, 14)
        # The aux heads run in this order (aux1, aux2, then the main dropout) as in torchvision,
        # so seeded dropout draws the same masks.
        aux1 = self.aux1(x) if with_aux and self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (B, 528, 14, 14)
        aux2 = self.aux2(x) if with_aux and self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))  # (B, 832, 7, 7)
        x = self.inception5b(self.inception5a(x))  # (B, 1024, 7, 7)
        return x, aux1, aux2

    def forward_features(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, 1024, h, w)
        return self._features(x, with_aux=False)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:  # (B, 1024, h, w) -> (B, N)
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Union[Tensor, GoogLeNetOutputs]:
        """Logits; in training mode with ``aux_logits=True``, ``GoogLeNetOutputs`` as torchvision."""
        with_aux = self.training and self.aux_logits
        x, aux1, aux2 = self._features(x, with_aux=with_aux)
        logits = self.forward_head(x)
        return GoogLeNetOutputs(logits, aux2, aux1) if with_aux else logits

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` (and the aux heads' last Linear, if built) for ``num_classes`` outputs,
        so the aux losses of a transferred model have the new number of classes too."""
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = replace_linear(aux.fc2, self.num_classes)  # the checked int

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Without aux heads, drop their weights on load, as torchvision does after loading its
        # checkpoint (whose aux heads were never trained); everything else stays strict.
        if self.aux1 is None:
            for key in [k for k in state_dict if k.startswith((prefix + "aux1.", prefix + "aux2."))]:
                del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


_SZEGEDY_2014 = Paper("Szegedy et al. 2014", "Going Deeper with Convolutions", "1409.4842")
_FAMILY = Family(GoogLeNet, paper=_SZEGEDY_2014, first_conv="conv1.conv", cam_layer="inception5b")


googlenet = _FAMILY.builder("googlenet", doc="GoogLeNet / Inception v1 with torchvision's keys and BN after each conv.")
