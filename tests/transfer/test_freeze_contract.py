"""What :func:`freeze` and the unfreeze point promise in their docstrings: which norm layers are
locked, and when (at once, again on a second call, only when every parameter of their own is
frozen), which names are refused. The reference for a locked layer is torch's own BatchNorm2d in
eval mode; for one that trains, torch's BatchNorm2d in training mode on the same input."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from resnet_lab import create_model
from resnet_lab.nn import BatchNorm2d as ScratchBatchNorm2d
from resnet_lab.transfer import freeze, load_source, params_from, transfer_model, unfreeze
from support import randomize_bn


def _net() -> nn.Sequential:
    """Two conv + BN blocks and a Linear; BN modules ``0.1`` and ``1.1``, with running statistics
    and an affine scale and shift away from the identity."""
    torch.manual_seed(0)

    def block(cin):
        bn = nn.BatchNorm2d(4)
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        return nn.Sequential(nn.Conv2d(cin, 4, 3, padding=1), bn, nn.ReLU())

    return nn.Sequential(block(2), block(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _reference_bn(bn: nn.BatchNorm2d, training: bool) -> nn.BatchNorm2d:
    """A fresh torch BatchNorm2d holding ``bn``'s parameters and statistics as they are now."""
    ref = nn.BatchNorm2d(bn.num_features)
    ref.load_state_dict(bn.state_dict())
    return ref.train(training)


def _check_bn_step(model: nn.Sequential, x: torch.Tensor, locked: set[str]) -> None:
    """One forward of ``model`` in the mode it is in: each BN in ``locked`` normalizes with its running
    statistics and keeps them bit-identical; each other BN moves them as torch's training BN does."""
    inputs, refs = {}, {}

    def keep(name):
        def hook(module, args, out):
            inputs[name] = (args[0].detach(), out.detach())
        return hook

    for name in ("0.1", "1.1"):
        bn = model.get_submodule(name)
        refs[name] = _reference_bn(bn, training=name not in locked)
        bn.register_forward_hook(keep(name))
    model(x)
    for name, ref in refs.items():
        bn = model.get_submodule(name)
        h, out = inputs[name]
        with torch.no_grad():
            want = ref(h)
        assert torch.allclose(out, want, atol=1e-6), name
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(bn, key), getattr(ref, key)), f"{name}.{key}"
        moved = not torch.equal(bn.running_mean, _net().get_submodule(name).running_mean)
        assert moved is (name not in locked), f"{name} running_mean moved: {moved}"


X = torch.randn(8, 2, 6, 6) * 3 + 1  # statistics far from the running ones


def test_freeze_locks_a_frozen_bn_at_once_in_a_model_left_in_training_mode():
    """A model frozen while in training mode and run before any later ``model.train()`` (a loop of
    one's own, a forward to look at features): its frozen BN must already normalize with, and keep,
    its running statistics."""
    model = _net().train()
    report = freeze(model, ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias", "4.weight", "4.bias"])
    assert report.eval_norms == ["0.1"]
    assert model.training and not model[0][1].training and model[1][1].training
    _check_bn_step(model, X, locked={"0.1"})


def test_freezing_again_with_more_to_train_unlocks_the_norms_that_now_train():
    """A second freeze (the head alone first, then the last block too) starts from the model as
    given, not from the earlier lock: the BN of the block that now trains moves its statistics."""
    model = _net()
    assert freeze(model, ["4.weight", "4.bias"]).eval_norms == ["0.1", "1.1"]
    report = freeze(model, ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias", "4.weight", "4.bias"])
    assert report.eval_norms == ["0.1"]
    model.train()
    _check_bn_step(model, X, locked={"0.1"})


def test_a_bn_with_one_of_its_own_parameters_training_is_not_locked():
    """Only a norm layer whose own parameters are *all* frozen is locked (freeze's docstring): a BN
    whose scale trains while its shift is frozen is training, and normalizes with batch statistics."""
    model = _net()
    report = freeze(model, ["1.1.weight", "4.weight", "4.bias"])
    assert report.eval_norms == ["0.1"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["1.1.weight", "4.weight", "4.bias"]
    assert report.trainable_names == ["1.1.weight", "4.weight", "4.bias"]
    model.train()
    _check_bn_step(model, X, locked={"0.1"})


@pytest.mark.parametrize("bad", ["4.wieght", "0.1.running_mean"], ids=["misspelled", "a buffer"])
def test_a_misspelled_trainable_name_is_refused_naming_it_and_freezes_nothing(bad):
    """A typo in a name kept trainable would otherwise freeze that parameter too, silently: the
    refusal names it and the model is left as given (every parameter trainable, nothing locked). A
    buffer's name (a state-dict key, but no parameter: it has no gradient) is refused the same way."""

    model = _net()
    with pytest.raises(ValueError, match=rf"cannot keep \[{re.escape(repr(bad))}\] trainable: no such parameter in Sequential"):
        freeze(model, [bad, "4.bias"])
    assert all(p.requires_grad for p in model.parameters())
    assert not any("train" in m.__dict__ for m in model.modules())


def test_an_unfreeze_point_without_parameters_is_refused_listing_the_stages(resnet8_run):
    """``--unfreeze-from avgpool`` (a module, but one without parameters) is refused as a name that is
    no module at all is, with the stages to choose from, instead of failing inside the search for its
    first parameter."""
    source = load_source(resnet8_run)
    for name in ("avgpool", "layer1.0.relu"):
        with pytest.raises(ValueError) as e:
            transfer_model(source, "last", num_classes=3, unfreeze_from=name)
        assert str(e.value) == (f"--unfreeze-from {name!r} is not a module with parameters of CifarResNet; expected "
                                "one of conv1, bn1, layer1, layer2, layer3, fc (or a sub-module such as layer3.0)")
    model, plan = transfer_model(source, "last", num_classes=3, unfreeze_from="layer3.0")  # the way out works
    assert plan.unfreeze_from == "layer3.0"
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {n for n, _ in model.named_parameters() if n.startswith(("layer3.", "fc."))}


def test_unfreeze_of_a_model_in_eval_mode_leaves_its_norms_in_eval_mode():
    """unfreeze's documented default: the unlocked norm layers take the model's own mode, so a model
    unfrozen for evaluation does not have its BN layers normalize with (and move to) batch statistics."""
    model = _net()
    freeze(model, ["4.weight", "4.bias"])
    model.eval()
    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules())
    _check_bn_step(model, X, locked={"0.1", "1.1"})  # both as torch's eval BN: nothing moves
    model.train()  # and nothing is locked any more
    _check_bn_step(model, X, locked=set())


def test_a_frozen_scratch_batchnorm_is_locked_and_keeps_its_statistics_as_torchs_does():
    """Our from-scratch BN (``norm="scratch"``) keeps running statistics as torch's does, so a frozen one
    is locked too (freeze's docstring: "torch's BN, our scratch BN"): after ``model.train()`` it
    normalizes as torch's BatchNorm2d in eval mode with the same buffers, and a training-mode forward
    leaves them bit-identical (a frozen backbone whose statistics drift towards the new data)."""
    torch.manual_seed(0)
    model = randomize_bn(create_model("resnet8", num_classes=3, norm="scratch"))
    report = freeze(model, ["fc.weight", "fc.bias"])
    scratch = [n for n, m in model.named_modules() if isinstance(m, ScratchBatchNorm2d)]
    assert scratch and report.eval_norms == scratch
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    h = torch.randn(4, 16, 5, 5) * 3 + 1
    with torch.no_grad():
        assert torch.allclose(model.bn1(h), _reference_bn(model.bn1, training=False)(h), atol=1e-5)
        model(torch.randn(4, 3, 8, 8) * 3 + 1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} moved although its BN is frozen"


def test_trainable_names_given_as_one_string_are_refused_naming_the_list_to_pass():
    """``freeze(model, "4.weight")`` iterated the string letter by letter: the refusal is a TypeError
    that shows the list to pass, and the model is left as given."""
    model = _net()
    with pytest.raises(TypeError, match=re.escape("trainable must be a list of parameter names, e.g. ['4.weight']")):
        freeze(model, "4.weight")
    assert all(p.requires_grad for p in model.parameters())


def test_params_from_an_empty_name_is_refused_listing_the_stages():
    """``""`` names the model itself in ``named_modules()``: as an unfreeze point it is refused as any
    other name without a stage, with the stages to choose from (not an error about ``.conv1.weight``)."""
    model = create_model("resnet8", num_classes=3)
    with pytest.raises(ValueError, match="^--unfreeze-from '' is not a module with parameters of CifarResNet; "
                                         "expected one of conv1, bn1, layer1, layer2, layer3, fc"):
        params_from(model, "")


def test_freeze_and_unfreeze_change_the_mode_of_the_locked_norms_only():
    """unfreeze's docstring: ``mode`` is the one "the unlocked norm layers take"; a block the caller put
    in eval mode (and that freeze does not lock: its parameters train) keeps it through freeze and
    unfreeze, while the norm that was locked takes the model's own mode back."""
    model = _net().train()
    model[1].eval()  # the caller's choice
    freeze(model, ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias", "4.weight", "4.bias"])
    assert [m.training for m in model[1]] == [False, False, False] and not model[0][1].training
    unfreeze(model)
    assert [m.training for m in model[1]] == [False, False, False]
    assert model[0][1].training and model[0][0].training


def test_last_trains_every_stage_from_the_unfreeze_point_on_not_that_stage_alone(resnet8_run):
    """docs/TRANSFER.md: everything before the module is frozen; it and everything after it train. From
    layer2 of resnet8 that is layer2, layer3 and fc (torch's named_parameters by prefix), and the BN
    layers of conv1's block and layer1 alone are locked."""
    model, plan = transfer_model(load_source(resnet8_run), "last", num_classes=3, unfreeze_from="layer2")
    later = ("layer2.", "layer3.", "fc.")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        [n for n, _ in model.named_parameters() if n.startswith(later)]
    assert plan.eval_norms and all(n == "bn1" or n.startswith("layer1.") for n in plan.eval_norms)


def test_the_freeze_report_counts_trainable_and_frozen_values_as_counted_by_hand():
    """FreezeReport's attributes: ``trainable``/``frozen`` are numbers of parameter values. _net() by
    hand: conv 2->4 3x3 (72 + 4), BN(4) (4 + 4), conv 4->4 3x3 (144 + 4), BN(4) (4 + 4), Linear 4->3
    (12 + 3). Training the second BN and the Linear: 8 + 15 = 23 train, 76 + 8 + 148 = 232 frozen."""
    report = freeze(_net(), ["1.1.weight", "1.1.bias", "4.weight", "4.bias"])
    assert (report.trainable, report.frozen) == (23, 232)
    assert report.trainable_names == ["1.1.weight", "1.1.bias", "4.weight", "4.bias"]


def test_the_default_unfreeze_point_skips_a_wrapper_that_holds_a_single_layer():
    """default_unfreeze_point's docstring: the last stage is the last module with *several*
    parameterized layers; a single layer after it (here one conv in a Sequential of its own) trains
    with it, so the point is the composite ``stem``, not the one-layer ``tail``."""
    from collections import OrderedDict

    from resnet_lab.transfer import default_unfreeze_point

    model = nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)), tail=nn.Sequential(nn.Conv2d(4, 4, 1)),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(4, 3)))
    assert default_unfreeze_point(model) == "stem"


def test_freezing_again_a_model_in_eval_mode_leaves_the_norms_that_now_train_in_eval_mode():
    """freeze starts by unfreezing in the model's own mode: a BN it unlocks on a second call (its
    block now trains) takes the eval mode of a model being evaluated, so a forward normalizes with,
    and keeps, its running statistics; the next ``model.train()`` puts it in training mode."""
    model = _net().eval()
    freeze(model, ["4.weight", "4.bias"])
    assert freeze(model, ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias", "4.weight", "4.bias"]).eval_norms == ["0.1"]
    assert not any(m.training for m in model.modules())
    _check_bn_step(model, X, locked={"0.1", "1.1"})  # both as torch's eval BN: nothing moves
    model.train()
    _check_bn_step(model, X, locked={"0.1"})


def test_unfreeze_refuses_a_mode_that_is_not_a_bool_and_leaves_the_model_frozen():
    """unfreeze's ``mode`` is True, False or None: the string "eval" is truthy and would put the norm
    layers in training mode, so it is refused naming the value, before anything is unfrozen."""
    model = _net()
    freeze(model, ["4.weight", "4.bias"])
    with pytest.raises(TypeError, match=r"^mode must be True \(train\), False \(eval\) or None .*got 'eval'$"):
        unfreeze(model, mode="eval")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["4.weight", "4.bias"]
    model.train()
    _check_bn_step(model, X, locked={"0.1", "1.1"})  # still locked


def test_train_on_a_locked_norm_returns_the_layer_as_torchs_module_train_does():
    """The lock replaces the norm layer's ``train`` but keeps torch's contract: ``bn.train()`` returns
    the layer itself (so ``bn.train().to(...)`` chains), and the layer stays in eval mode."""
    model = _net()
    freeze(model, ["4.weight", "4.bias"])
    bn = model[0][1]
    assert bn.train() is bn
    assert not bn.training
