"""Gradient checkpointing (``set_grad_checkpointing``) changes memory, not results.

The reference is always the same model without checkpointing (plain autograd): same weights, same
input, same dropout masks. Memory is counted as the bytes autograd keeps for backward, seen through
``torch.autograd.graph.saved_tensors_hooks`` (never time or RSS).
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_lab.models import ClassifierModel, create_model
from resnet_lab.models.densenet import DenseNet
from resnet_lab.models.resnet import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    PreActResNet,
    ResNet,
)

BLOCK_TYPES = (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)

# One small model of each family that supports checkpointing. Widths are cut down where the
# builders' are large: the checkpointing code is the same at any width.
FAMILIES: dict[str, Callable[[str], ClassifierModel]] = {
    "cifar_resnet20": lambda norm: create_model("resnet20", num_classes=10, norm=norm),
    "wide_preact": lambda norm: PreActResNet(PreActBasicBlock, (2, 2, 2), (8, 16, 32), norm=norm,
                                             drop_rate=0.3, num_classes=10),
    "imagenet_bottleneck": lambda norm: ResNet(Bottleneck, (1, 2, 1, 1), widths=(4, 8, 16, 32),
                                               small_input=True, norm=norm, num_classes=10),
    "densenet": lambda norm: DenseNet(growth_rate=4, block_config=(3, 3), num_init_features=8,
                                      stem="cifar", norm=norm, drop_rate=0.2, num_classes=10),
}
RESNETS = ["cifar_resnet20", "wide_preact", "imagenet_bottleneck"]
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _pair(family: str, norm: str, segments: int, dtype: torch.dtype = torch.float64):
    """The plain model and a deep copy (same weights) with checkpointing on, both training."""
    torch.manual_seed(0)
    plain = FAMILIES[family](norm).to(dtype).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(segments)
    return plain, ckpt


def _saved_bytes(model: nn.Module, x: Tensor, inside: tuple[type[nn.Module], ...] = ()) -> tuple[int, int]:
    """Bytes of activations autograd keeps for backward after ``model(x)``: distinct storages
    (views share one), parameters and buffers left out (they are held anyway). Returns (total,
    the part first saved while no module of a type in ``inside`` was running)."""
    held = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: set[int] = set()
    depth, total, outside = [0], [0], [0]

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in held | seen:
            seen.add(storage.data_ptr())
            total[0] += storage.nbytes()
            outside[0] += storage.nbytes() if depth[0] == 0 else 0
        return t

    def enter(*_) -> None:
        depth[0] += 1

    def leave(*_) -> None:
        depth[0] -= 1

    blocks = [m for m in model.modules() if isinstance(m, inside)]
    handles = [h for m in blocks for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    del out  # the graph (and what it saved) goes with it
    return total[0], outside[0]


def _train_step(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    torch.manual_seed(1)  # same dropout masks in both models; checkpoint replays them in backward
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("norm", ["batch", "scratch"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_checkpointed_step_gives_plain_loss_gradients_and_exact_bn_running_stats(family, norm):
    plain, ckpt = _pair(family, norm, segments=2)
    x, y = torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.tensor([1, 7, 3, 0])
    for _ in range(2):  # two steps: running averages build on the previous (restored) values
        loss_plain, loss_ckpt = _train_step(plain, x, y), _train_step(ckpt, x, y)
        torch.testing.assert_close(loss_ckpt, loss_plain, rtol=1e-12, atol=0)
    grads = dict(plain.named_parameters())
    for name, p in ckpt.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-10, atol=1e-12, msg=name)
    # The backward-time recomputation must not move the running averages a second time.
    buffers = dict(plain.named_buffers())
    stats = [(n, b) for n, b in ckpt.named_buffers() if n.rsplit(".", 1)[-1] in RUNNING_STATS]
    assert stats or norm not in ("batch", "scratch")
    for name, b in stats:
        assert torch.equal(b, buffers[name]), name
        if name.endswith("num_batches_tracked"):
            assert b.item() == 2, name


@pytest.mark.parametrize("norm", ["batch", "scratch"])
@pytest.mark.parametrize("family", RESNETS)
def test_checkpointed_resnets_keep_only_segment_inputs_for_backward(family, norm):
    """Each plain block keeps at least its input (and its inner activations) for backward; with
    k segments the blocks keep one input per segment. So the blocks' share of the saved bytes
    must shrink at least by k / num_blocks; stem and head save what they did before."""
    segments = 2
    plain, ckpt = _pair(family, norm, segments, dtype=torch.float32)
    num_blocks = sum(isinstance(m, BLOCK_TYPES) for m in plain.modules())
    x = torch.randn(4, 3, 16, 16)
    plain_total, plain_outside = _saved_bytes(plain, x, inside=BLOCK_TYPES)
    ckpt_total, _ = _saved_bytes(ckpt, x)
    plain_blocks = plain_total - plain_outside
    assert plain_blocks > 0 and num_blocks > 2 * segments
    assert ckpt_total - plain_outside <= segments / num_blocks * plain_blocks, (ckpt_total, plain_total)


@pytest.mark.parametrize("norm", ["batch", "scratch"])
def test_memory_efficient_densenet_keeps_no_concatenated_input(norm):
    """In a plain dense layer norm1 keeps its concatenated input for backward: quadratic in the
    block's depth. With checkpointing on, each layer keeps only references to the earlier feature
    maps, which every layer shares: one block output's worth per block."""
    plain, ckpt = _pair("densenet", norm, segments=1, dtype=torch.float32)
    concat, features = [0], [0]
    layers = [m for name, m in plain.named_modules() if ".denselayer" in name and name.count(".") == 2]
    blocks = [m for name, m in plain.named_modules() if name.startswith("features.denseblock") and "." not in name[9:]]
    handles = [m.register_forward_pre_hook(lambda m, args: concat.__setitem__(
        0, concat[0] + sum(t.numel() * t.element_size() for t in args[0]))) for m in layers]
    handles += [m.register_forward_hook(lambda m, args, out: features.__setitem__(
        0, features[0] + out.numel() * out.element_size())) for m in blocks]
    x = torch.randn(4, 3, 16, 16)
    plain_total, _ = _saved_bytes(plain, x)
    for h in handles:
        h.remove()
    ckpt_total, _ = _saved_bytes(ckpt, x)
    assert len(layers) == 6 and len(blocks) == 2
    assert ckpt_total <= plain_total - concat[0] + features[0], (ckpt_total, plain_total)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_eval_and_no_grad_run_without_checkpointing(family):
    plain, ckpt = _pair(family, "batch", segments=2, dtype=torch.float32)
    x = torch.randn(4, 3, 16, 16)
    plain.eval(), ckpt.eval()
    # With autograd on in eval, the same bytes are kept as without checkpointing: it is off.
    assert _saved_bytes(ckpt, x) == _saved_bytes(plain, x)
    with torch.no_grad():
        torch.testing.assert_close(ckpt(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("name,blocks", [("resnet20", 9), ("resnet8", 3)])
def test_bool_turns_checkpointing_on_with_sqrt_blocks_segments_and_off(name, blocks):
    model = create_model(name, num_classes=10)
    model.set_grad_checkpointing(True)
    # ceil, as documented: 3 blocks take 2 segments (a floor would give 1, one segment for everything)
    assert model.checkpoint_segments == math.ceil(math.sqrt(blocks))
    model.set_grad_checkpointing(False)
    assert model.checkpoint_segments == 0


@pytest.mark.parametrize(("name", "cls"), [("vgg11", "VGG"), ("googlenet", "GoogLeNet")])
def test_unsupported_models_raise_a_clear_error_unless_asked_for_zero_segments(name, cls):
    with torch.device("meta"):
        model = create_model(name, num_classes=10)
    with pytest.raises(ValueError, match=f"{cls} does not support gradient checkpointing"):
        model.set_grad_checkpointing(2)
    with pytest.raises(ValueError, match="does not support"):
        model.set_grad_checkpointing(True)
    model.set_grad_checkpointing(0)  # off is always possible


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_bad_segment_counts_raise_naming_the_value(family, bad):
    model = FAMILIES[family]("batch")
    with pytest.raises(ValueError, match=f"got {bad!r}".replace(".", r"\.")):
        model.set_grad_checkpointing(bad)
