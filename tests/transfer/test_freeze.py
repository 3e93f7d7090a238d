"""Frozen means frozen: bit-identical tensors after training, eval-mode BN, no optimizer state."""

from __future__ import annotations

import pytest
import torch
import torchvision
from tinytrain import make_bundle
from torch import nn
from trainspy import TrainSpy

from resnet_lab import create_model
from resnet_lab.train import TrainConfig, build_optimizer, load_state_dict_file, train
from resnet_lab.transfer import (
    default_unfreeze_point,
    is_running_norm,
    finetune,
    load_source,
    params_from,
    stage_names,
    transfer_model,
    unfreeze,
)


@pytest.mark.parametrize("strategy", ["last", "head"])
def test_training_leaves_every_frozen_parameter_and_buffer_bit_identical_to_the_source(resnet8_run, strategy):
    source = load_state_dict_file(resnet8_run / "model.safetensors")
    torch.manual_seed(0)
    model, plan = transfer_model(load_source(resnet8_run), strategy, num_classes=3, in_channels=1,
                                 classes=["c0", "c1", "c2"], unfreeze_from="layer3" if strategy == "last" else None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = make_bundle(n_train=32, n_test=8, batch_size=8)
    train(model, data, TrainConfig(epochs=2, lr=0.5, device="cpu", progress=False, plots=False), log=lambda s: None)
    after = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_keys = [k for k in source if k not in trainable and not k.startswith(("fc.", "layer3."))]
    assert len(frozen_keys) > 20 and any(k.endswith("num_batches_tracked") for k in frozen_keys)
    for k in frozen_keys:
        assert torch.equal(after[k], source[k]), f"{k} changed although frozen"
    if strategy == "head":  # the old classifier is frozen too
        assert torch.equal(after["fc.weight"], source["fc.weight"]) and torch.equal(after["fc.bias"], source["fc.bias"])
        changed = ["fc.head_weight"]
    else:  # layer3 trains, its BN statistics move
        changed = ["layer3.0.conv1.weight", "layer3.0.bn1.running_mean", "fc.weight"]
        assert plan.unfreeze_from == "layer3"
    for k in changed:  # the test is not vacuous: what trains did change
        assert not torch.equal(after[k], before[k]), f"{k} did not train"


def test_frozen_batchnorm_stays_in_eval_mode_after_model_train_and_unfreeze_restores_it(resnet8_run):
    model, plan = transfer_model(load_source(resnet8_run), "last", num_classes=5, in_channels=1)
    model.train()
    norms = {n: m for n, m in model.named_modules() if is_running_norm(m)}
    frozen = {n for n in norms if not n.startswith(plan.unfreeze_from)}
    assert frozen and set(plan.eval_norms) == frozen
    assert all(not norms[n].training for n in frozen)
    assert all(norms[n].training for n in norms if n not in frozen)
    # Frozen BN normalizes with its running stats: in float64 from the buffers, as torch's eval BN.
    bn = model.bn1
    x = torch.randn(4, bn.num_features, 5, 5)
    want = (x.double() - bn.running_mean.double()[:, None, None]) / torch.sqrt(bn.running_var.double()[:, None, None] + bn.eps)
    want = want * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None]
    assert torch.allclose(bn(x).double(), want, atol=1e-5)
    unfreeze(model)
    model.train()
    assert all(m.training for m in norms.values()) and all(p.requires_grad for p in model.parameters())


def test_frozen_parameters_get_no_optimizer_state_and_no_weight_decay(resnet8_run):
    model, _ = transfer_model(load_source(resnet8_run), "last", num_classes=5, in_channels=1)
    opt = build_optimizer(model, "sgd", 0.1, weight_decay=5e-4)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in in_opt} == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(names[i].startswith(("layer3.", "fc.")) for i in in_opt)
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {n for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2}


def test_all_with_backbone_lr_scale_puts_the_scaled_rate_on_the_backbone_and_the_full_rate_on_the_head(tv_resnet18):
    _, path = tv_resnet18
    model, plan = transfer_model(load_source(file=path, model="resnet18"), "all", num_classes=4, backbone_lr_scale=0.1)
    assert plan.frozen == 0
    opt = build_optimizer(model, "sgd", 0.02, lr_scale=plan.lr_scale)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        want = 0.02 if name.startswith("fc.") else 0.002
        assert lr_of[id(p)] == pytest.approx(want), name


def test_finetune_steps_the_backbone_at_backbone_lr_scale_times_the_classifiers_rate(resnet8_run, monkeypatch):
    """finetune's main phase trains with the plan's factors (docs/TRANSFER.md: "the backbone at a fraction
    of the head's learning rate"). Reference: plain SGD's first step (no momentum, no decay) moves each
    parameter by -rate * grad, so the rate each one got is read from its own change and gradient."""
    spy = TrainSpy(monkeypatch)
    data = make_bundle(n_train=16, n_test=8, batch_size=16)
    model, plan = transfer_model(load_source(resnet8_run), "all", num_classes=3, in_channels=1,
                                 classes=list(data.info.classes), backbone_lr_scale=0.1)
    config = TrainConfig(epochs=1, lr=0.05, momentum=0.0, weight_decay=0.0, schedule="constant",
                         device="cpu", progress=False, plots=False)
    finetune(model, data, config, plan, log=lambda s: None)
    step = spy.last.steps[0]
    rates = {}
    for name, before, after, grad in zip(spy.last.names, step.before, step.after, step.grads):
        rates[name] = float(((before - after) * grad).sum() / (grad * grad).sum())
    assert rates["fc.weight"] == pytest.approx(0.05, rel=1e-3) and rates["fc.bias"] == pytest.approx(0.05, rel=1e-3)
    for name in ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer3.0.bn2.bias"):
        assert rates[name] == pytest.approx(0.005, rel=1e-3), name


def test_unfreeze_points_default_to_the_last_stage_and_bad_names_list_the_choices():
    assert default_unfreeze_point(create_model("resnet18", num_classes=3)) == "layer4"
    assert default_unfreeze_point(create_model("resnet20", num_classes=3)) == "layer3"
    with torch.device("meta"):
        assert default_unfreeze_point(create_model("densenet121", num_classes=3)) == "features.denseblock4"
        vgg = create_model("vgg11", num_classes=3)
    assert default_unfreeze_point(vgg) == "features.18"  # its last convolution
    # the choices --unfreeze-from lists: VGG's layers with parameters (torchvision's indices), not its ReLUs and pools
    with torch.device("meta"):
        tv_features = torchvision.models.vgg11().features
    assert stage_names(vgg) == [f"features.{i}" for i, m in enumerate(tv_features) if isinstance(m, nn.Conv2d)] + ["classifier"]
    with torch.device("meta"):  # the aux heads (registered after inception5b) are not a stage (docstring)
        for aux in (False, True):
            assert default_unfreeze_point(create_model("googlenet", num_classes=3, aux_logits=aux)) == "inception5b"
    model = create_model("resnet8", num_classes=3)
    assert default_unfreeze_point(model) == "layer3"  # one block per stage is still a stage
    with pytest.raises(ValueError, match="expected one of conv1, bn1, layer1, layer2, layer3, fc"):
        params_from(model, "layer9")


def test_a_norm_without_affine_parameters_is_locked_with_the_block_that_holds_it():
    """BatchNorm2d(affine=False) has no parameters of its own to be frozen: it is locked in eval
    mode when every parameter of the module holding it is frozen, and trains (moves its running
    statistics) when one of them trains. Reference: torch's own BN module, its buffers as they were
    and as a training-mode forward moves them."""
    from torch import nn

    from resnet_lab.transfer import freeze

    def block(cin):
        return nn.Sequential(nn.Conv2d(cin, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False), nn.ReLU())

    torch.manual_seed(0)
    model = nn.Sequential(block(2), block(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    report = freeze(model, ["1.0.weight", "4.weight", "4.bias"])  # block 0 all frozen; block 1's conv weight trains
    assert report.eval_norms == ["0.1"]
    model.train()
    frozen_bn, live_bn = model[0][1], model[1][1]
    assert not frozen_bn.training and live_bn.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 2, 6, 6) * 3 + 1  # statistics far from the initial 0/1
    model(x)
    after = model.state_dict()
    for k in ("0.1.running_mean", "0.1.running_var", "0.1.num_batches_tracked"):
        assert torch.equal(after[k], before[k]), k
    # the locked BN normalizes with its running statistics, as torch's BN in eval mode
    h = model[0][0](x).detach()
    assert torch.equal(frozen_bn(h), nn.BatchNorm2d(4, affine=False).eval()(h))
    # the trained block's BN moved exactly as torch's training-mode BN does on the same input
    ref = nn.BatchNorm2d(4, affine=False).train()
    ref(model[1][0](model[0](x)).detach())
    assert torch.equal(after["1.1.running_mean"], ref.running_mean) and torch.equal(after["1.1.running_var"], ref.running_var)
