"""Building blocks shared by every model family: convs, the classifier interface, the stacked
transfer head, and gradient checkpointing that leaves normalization statistics exact."""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ClassifierModel",
    "LinearWithHead",
    "check_rate",
    "checkpoint_keeping_stats",
    "classifier_size",
    "conv1x1",
    "conv3x3",
    "replace_linear",
    "resolve_checkpoint_segments",
    "stack_head",
]


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


_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


@contextlib.contextmanager
def _running_stats_kept(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Restore the running statistics of every norm inside ``modules`` on exit (also when
    torch's early-stopping recomputation leaves through an exception)."""
    saved = [
        (buf, buf.clone())
        for module in modules
        for m in module.modules()
        for name in _RUNNING_STATS
        if isinstance(buf := getattr(m, name, None), Tensor)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


class _StatsOnFirstCall:
    """``fn`` for :func:`torch.utils.checkpoint.checkpoint`: calls after the first are the
    backward-time recomputation and leave the running statistics of ``modules`` as they were."""

    def __init__(self, fn: Callable[..., Tensor], modules: Sequence[nn.Module]) -> None:
        self.fn = fn
        self.modules = modules
        self.calls = 0

    def __call__(self, *inputs: Tensor) -> Tensor:
        self.calls += 1
        ctx = _running_stats_kept(self.modules) if self.calls > 1 else contextlib.nullcontext()
        with ctx:
            return self.fn(*inputs)


def checkpoint_keeping_stats(fn: Callable[..., Tensor], modules: Sequence[nn.Module], *inputs: Tensor) -> Tensor:
    """``fn(*inputs)`` under gradient checkpointing: autograd keeps only ``inputs`` and runs ``fn``
    again in backward, where BN running statistics stay as the forward left them.

    torch's checkpoint (and torchvision's ``memory_efficient`` DenseNet) lets the recomputation
    update them a second time, so a checkpointed model would drift from the plain one. Dropout
    masks match: checkpoint replays the RNG state.

    Args:
        fn: the function to checkpoint (tensors in, one tensor out).
        modules: every module ``fn`` runs that may hold running statistics.
        inputs: the tensors ``fn`` takes.
    """
    return checkpoint(_StatsOnFirstCall(fn, modules), *inputs, use_reentrant=False)


def resolve_checkpoint_segments(segments: int | bool, num_blocks: int) -> int:
    """Number of checkpointed segments for ``segments`` over ``num_blocks`` blocks.

    Args:
        segments: an int >= 0 (0 is off), or a bool as timm's ``set_grad_checkpointing(enable)``:
            ``False`` is off, ``True`` picks ceil(sqrt(num_blocks)), the count that minimises
            kept activations (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost").
        num_blocks: blocks that the segments split.
    """
    if isinstance(segments, bool):
        return math.ceil(math.sqrt(num_blocks)) if segments else 0
    if not isinstance(segments, int) or segments < 0:
        raise ValueError(
            f"checkpoint_segments must be an int >= 0 or a bool, got {segments!r}; "
            "use 0 (off), a segment count such as 2, or True for about sqrt(blocks) segments"
        )
    return segments


def check_rate(arg: str, value: Any, usual: str) -> float:
    """``value`` of the option ``arg`` (a dropout probability) as a float in [0, 1), or an error
    naming the option: torch's own says "dropout probability" and the comparison of a string
    names neither; 1 would zero every activation, a negative rate or NaN switch dropout off.

    Args:
        arg: the option's name (``drop_rate``, ``dropout``).
        value: what the caller gave; an int or numpy float is taken, a bool is not.
        usual: the common value, for the message (``"0.2 is the paper's"``).

    Raises:
        TypeError: ``value`` is not a number; ValueError: it is outside [0, 1).
    """
    ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok_type or not 0.0 <= value < 1.0:
        error = ValueError if ok_type else TypeError
        raise error(f"{arg} must be a float in [0, 1), got {value!r} ({usual}; 0 turns it off)")
    return float(value)


def classifier_size(num_classes: Any) -> int:
    """``num_classes`` for :meth:`ClassifierModel.reset_classifier` as an int (numpy's integers
    too, as ``create_model`` takes them; 0 removes the classifier), or a ValueError naming it."""
    try:
        count = -1 if isinstance(num_classes, bool) else operator.index(num_classes)
    except TypeError:
        count = -1
    if count < 0:
        raise ValueError(f"num_classes must be a non-negative int (0: no classifier, the features out), "
                         f"got {num_classes!r}")
    return count


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
        num_classes = classifier_size(num_classes)
        setattr(self, self.classifier_attr, replace_linear(self.get_classifier(), num_classes))
        self._record_classes(num_classes)

    def _record_classes(self, num_classes: int) -> None:
        """Keep ``num_classes`` and ``model_config`` (what save_model writes and load_model
        rebuilds) true to the new classifier, a plain Linear: a stacked head went with the old one."""
        self.num_classes = num_classes
        config = getattr(self, "model_config", None)
        if config is not None:
            self.model_config = {**{k: v for k, v in config.items() if k != "stacked_head"},
                                 "num_classes": num_classes}

    @property
    def num_features(self) -> int:
        """Width of the pooled features that enter the final Linear."""
        for m in reversed(list(self.get_classifier().modules())):
            if isinstance(m, nn.Linear):
                return m.in_features
        raise AttributeError("classifier has no Linear layer")

    def set_grad_checkpointing(self, segments: int | bool = True) -> None:
        """Trade compute for memory in training: keep fewer activations for backward and
        recompute the rest. Families that support it override this; here a non-zero request fails.

        Args:
            segments: see :func:`resolve_checkpoint_segments`; 0 or ``False`` turns it off.
        """
        if resolve_checkpoint_segments(segments, 1):
            raise ValueError(
                f"{type(self).__name__} does not support gradient checkpointing; use a ResNet "
                "(ImageNet, CIFAR, pre-activation, wide) or a DenseNet, or set checkpoint segments to 0"
            )


class LinearWithHead(nn.Linear):
    """A pretrained Linear with a new Linear stacked on its output: ``head(linear(x))``, the
    classifier of a model transferred with ``finetune --strategy head``.

    The stacked layer lives *inside* the old Linear's module, so every existing state-dict key keeps
    its name and shape (``fc.weight``, ``fc.bias``) and the new layer adds two (``fc.head_weight``
    of shape (new_classes, old_classes), ``fc.head_bias``).

    Args:
        in_features: input width of the old layer.
        out_features: the old class count.
        new_classes: outputs of the stacked layer.
        bias: whether the old layer has a bias (the new one always has).
        device, dtype: as ``nn.Linear``'s.
    """

    def __init__(self, in_features: int, out_features: int, new_classes: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if not isinstance(new_classes, int) or new_classes < 1:
            raise ValueError(f"new_classes must be a positive int, got {new_classes!r}")
        # nn.Linear's own initialization (Kaiming-uniform weight, fan-in bias), as a fresh head gets.
        fresh = nn.Linear(out_features, new_classes, device=device, dtype=dtype)
        self.head_weight = nn.Parameter(fresh.weight.detach())
        self.head_bias = nn.Parameter(fresh.bias.detach())
        self.new_classes = new_classes

    @classmethod
    def from_linear(cls, linear: nn.Linear, new_classes: int) -> "LinearWithHead":
        """Wrap a trained ``linear`` (its weights are copied, not shared) with a fresh head."""
        out = cls(linear.in_features, linear.out_features, new_classes, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(linear.weight)
            if linear.bias is not None:
                out.bias.copy_(linear.bias)
        return out

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, old) -> (B, new)
        return F.linear(super().forward(x), self.head_weight, self.head_bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, new_classes={self.new_classes}"


def stack_head(model: nn.Module, linear_name: str, new_classes: int) -> LinearWithHead:
    """Stack a fresh ``Linear(old_classes, new_classes)`` on the Linear ``linear_name`` of
    ``model``, in place; the model then predicts ``new_classes`` classes.

    Args:
        model: the model; the Linear keeps its weights.
        linear_name: module name of the classifier's final Linear (``fc``, ``classifier.6``).
        new_classes: outputs of the new layer.

    Raises:
        ValueError: that module is not a Linear, or already has a stacked head.
    """
    old = model.get_submodule(linear_name)
    if isinstance(old, LinearWithHead):
        raise ValueError(
            f"{linear_name} already has a stacked head ({old.new_classes} classes); "
            "fold it first (resnet_lab.transfer.fold_head)"
        )
    if not isinstance(old, nn.Linear):
        raise ValueError(f"{linear_name} of {type(model).__name__} is a {type(old).__name__}, not the Linear a head stacks on")
    head = LinearWithHead.from_linear(old, new_classes)
    parent_name, _, attr = linear_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, head)
    model.num_classes = new_classes
    return head
