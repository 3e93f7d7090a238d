"""Building blocks shared by every model family: convs, the classifier interface."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ClassifierModel", "conv1x1", "conv3x3", "replace_linear"]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, dilation: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding; ``bias`` is off when a normalization follows."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, groups=groups, dilation=dilation, bias=bias)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution (projection shortcuts, bottlenecks, transitions)."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=bias)


def replace_linear(module: nn.Module, num_classes: int) -> nn.Module:
    """Return ``module`` with its last ``nn.Linear`` re-created for ``num_classes`` outputs.

    ``module`` is a Linear or a Sequential ending (possibly after dropout) in one. ``num_classes``
    of 0 gives ``nn.Identity`` in place of the Linear (features out, as timm).
    """
    def new(lin: nn.Linear) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        out = nn.Linear(lin.in_features, num_classes, bias=lin.bias is not None)
        return out.to(device=lin.weight.device, dtype=lin.weight.dtype)

    if isinstance(module, nn.Linear):
        return new(module)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1, -1, -1):
            if isinstance(module[i], nn.Linear):
                module[i] = new(module[i])
                return module
    raise TypeError(f"cannot find a Linear layer to replace in {type(module).__name__}")


class ClassifierModel(nn.Module):
    """The interface every model of the zoo has (timm's transfer-learning hooks).

    Subclasses set ``classifier_attr`` to the name of their classifier module (torchvision's:
    ``fc`` for ResNet and GoogLeNet, ``classifier`` for DenseNet and VGG) and implement
    :meth:`forward_features` (input -> last feature map) and :meth:`forward_head`
    (feature map -> logits, or pooled features with ``pre_logits=True``).
    """

    classifier_attr: str = "fc"

    def forward_features(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, F, h, w)
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_attr)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier's final Linear by a fresh one with ``num_classes`` outputs."""
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        setattr(self, self.classifier_attr, replace_linear(self.get_classifier(), num_classes))
        self.num_classes = num_classes

    @property
    def num_features(self) -> int:
        """Width of the pooled features that enter the final Linear."""
        for m in reversed(list(self.get_classifier().modules())):
            if isinstance(m, nn.Linear):
                return m.in_features
        raise AttributeError("classifier has no Linear layer")

    def zero_init_last(self) -> None:
        """Zero the last norm weight of every residual branch that supports it (Goyal et al. 2017)."""
        for m in self.modules():
            if m is not self and hasattr(m, "zero_init_last"):
                m.zero_init_last()


def _flatten_pool(x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C)
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
