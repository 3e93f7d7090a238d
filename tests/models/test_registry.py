"""What the registry says about each model (``model_info``) against the model itself, run on the
meta device (shapes only, no memory), and the builders' keyword checking. References: the built
module tree and the order in which a forward pass reaches the convs, the papers' published
parameter counts, torch's own ``F.linear`` for the stacked head."""

from __future__ import annotations

import functools
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import resnet_lab.models as models
from resnet_lab.models import LinearWithHead, create_model, list_models, meta_device, model_info, stack_head
from resnet_lab.models.layers import replace_linear

# The CIFAR families the CLI used to recognise by a name regex before the registry knew them.
SMALL_INPUT = {
    "resnet8", "resnet8_fast", "resnet8_prepool", "resnet14_fast", "resnet14_wide_fast", "resnet20", "resnet20_fast", "resnet32",
    "resnet44", "resnet56", "resnet110", "resnet1202", "plain20", "plain32", "plain44", "plain56", "plain110",
    "preact_resnet110", "preact_resnet164", "preact_resnet1001", "wrn16_4", "wrn28_10", "wrn40_4",
    "densenet_bc_100", "densenet_bc_250", "densenet40",
}
# He et al. 2016 count the conv and fc weights of ResNet-1001, not BN's scales and shifts.
WEIGHTS_ONLY = {"preact_resnet1001"}
# Too deep for a quick forward pass, even on the meta device; their families' entries are the
# ones of resnet20 and preact_resnet164, which run.
NO_FORWARD = {"resnet1202", "preact_resnet1001"}
FORWARD = [n for n in list_models() if n not in NO_FORWARD]


def _builder(name: str):
    # The public function, as a user imports it: resnet_lab.models.resnet.resnet20.
    return getattr(getattr(models, model_info(name).family), name)


@functools.lru_cache(maxsize=None)
def _meta(name: str, small_input: bool | None = None, in_channels: int = 3) -> nn.Module:
    """The model for its registered class count, built once per test session on the meta device."""
    with torch.device("meta"):
        model = create_model(name, num_classes=model_info(name).num_classes, small_input=small_input,
                             in_channels=in_channels)
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_builder_rejects_an_unknown_keyword_naming_the_model_the_keyword_and_the_accepted_ones(name):
    for build in (_builder(name), lambda **kw: create_model(name, **kw)):
        with pytest.raises(TypeError) as info:
            build(not_an_option=1)
        msg = str(info.value)
        assert name in msg and "'not_an_option'" in msg
        assert all(option in msg for option in model_info(name).options)


@pytest.mark.parametrize("name", list_models())
def test_builder_accepts_every_keyword_of_its_family_constructor_with_create_models_defaults(name):
    options = dict(model_info(name).options)
    # The DESIGN contract: every model takes these, with create_model's defaults.
    assert {k: options[k] for k in ("num_classes", "in_channels", "small_input", "norm")} == {
        "num_classes": 1000, "in_channels": 3, "small_input": False, "norm": "batch"}
    with torch.device("meta"):
        model = _builder(name)(**options)
    assert model.get_classifier is not None and model.num_classes == 1000


@pytest.mark.parametrize("name", list_models())
def test_registered_classifier_is_the_final_linear_of_get_classifier(name):
    info = model_info(name)
    model = _meta(name)
    last = [m for m in model.get_classifier().modules() if isinstance(m, nn.Linear)][-1]
    assert model.get_submodule(info.classifier) is last and last.out_features == info.num_classes


@pytest.mark.parametrize("name", FORWARD)
def test_registered_first_conv_is_the_first_conv_a_forward_pass_reaches(name):
    info = model_info(name)
    model = _meta(name, in_channels=1)
    reached = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: reached.append(n))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.empty(1, 1, *info.input_size[1:], device="meta"))
    for hook in hooks:
        hook.remove()
    assert reached[0] == info.first_conv and model.get_submodule(info.first_conv).in_channels == 1


@pytest.mark.parametrize("name", FORWARD)
def test_small_input_families_are_small_by_construction_and_default_to_cifar_shapes(name):
    info = model_info(name)
    x = torch.empty(1, 3, 32, 32, device="meta")
    with torch.no_grad():
        shapes = [_meta(name, **kw).forward_features(x).shape for kw in ({}, {"small_input": True})]
    # A CIFAR design gives the same 32 px feature map left at its default; an ImageNet design's
    # small-input stem (or VGG's dropped last pool) keeps a larger one.
    assert (shapes[0] == shapes[1]) == info.small_input == (name in SMALL_INPUT)
    assert (info.input_size, info.num_classes) == (((3, 32, 32), 10) if info.small_input else ((3, 224, 224), 1000))
    assert info.in_channels == 3


@pytest.mark.parametrize("name", [n for n in list_models() if model_info(n).params_m is not None])
def test_registered_parameter_count_is_the_built_models_to_the_figures_rounding(name):
    info = model_info(name)
    model = _meta(name)
    kinds = (nn.Conv2d, nn.Linear) if name in WEIGHTS_ONLY else (nn.Module,)
    count = sum(p.numel() for m in model.modules() if isinstance(m, kinds) for p in m.parameters(recurse=False))
    digits = len(repr(info.params_m).split(".")[1])
    assert round(count / 1e6, digits) == info.params_m


@pytest.mark.parametrize("name", list_models())
def test_registered_paper_has_an_arxiv_id_and_error_figures_are_percentages(name):
    info = model_info(name)
    assert info.paper is not None or name.endswith(("_fast", "_prepool"))  # our CPU variants are from no paper
    assert info.paper is None or re.fullmatch(r"\d{4}\.\d{4,5}", info.paper.arxiv)
    assert info.cifar10_error is None or 0 < info.cifar10_error < 100


def test_published_cifar10_errors_of_he_et_al_table_6():
    got = {n: model_info(n).cifar10_error for n in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")}
    assert got == {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43, "resnet1202": 7.93}


def test_model_info_of_an_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="resnet56"):
        model_info("resnet_56")


@pytest.mark.parametrize("typed", ["RESNET18", "ResNet18", "VGG11_BN", "DenseNet121"])
def test_a_name_in_the_wrong_letter_case_suggests_the_lower_case_name_first(typed):
    # list_models ignores case: it finds the one name meant, which the error must offer first
    (meant,) = [n for n in list_models(typed) if n == typed.lower()]
    for call in (model_info, create_model):
        with pytest.raises(ValueError, match=rf"^unknown model {typed!r}\. Did you mean: {meant}[,?]"):
            call(typed)


# --- the stacked transfer head ------------------------------------------------------------------

HEAD_CASES = {  # small models whose classifier Linear sits at different depths: fc, classifier, classifier.6
    "resnet8": dict(num_classes=5),
    "densenet40": dict(num_classes=5),
    "vgg11": dict(num_classes=5, small_input=True, hidden_dim=16),
}


@pytest.mark.parametrize("name", sorted(HEAD_CASES))
def test_stacked_head_is_a_new_linear_on_the_unchanged_logits_and_model_config_rebuilds_it(name):
    torch.manual_seed(0)
    kw = HEAD_CASES[name]
    plain = create_model(name, **kw).eval()
    stacked = create_model(name, stacked_head=3, **kw).eval()
    head = stacked.get_submodule(model_info(name).classifier)
    assert isinstance(head, LinearWithHead) and stacked.num_classes == 3
    # Existing keys keep their names and shapes; the new layer adds two.
    prefix = model_info(name).classifier
    assert set(stacked.state_dict()) == set(plain.state_dict()) | {f"{prefix}.head_weight", f"{prefix}.head_bias"}
    stacked.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(stacked(x), F.linear(plain(x), head.head_weight, head.head_bias), atol=1e-5)
    config = dict(stacked.model_config)
    assert config["stacked_head"] == 3 and config["num_classes"] == 5
    rebuilt = create_model(config.pop("name"), **config).eval()
    rebuilt.load_state_dict(stacked.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), stacked(x))


def test_a_second_stacked_head_is_refused_naming_the_first():
    model = create_model("resnet8", stacked_head=3)
    with pytest.raises(ValueError, match=r"^fc already has a stacked head \(3 classes\); fold it first"):
        stack_head(model, "fc", 4)


def test_replace_linear_replaces_the_last_linear_of_a_sequential_head():
    # its docstring: a Sequential ending, possibly after dropout, in a Linear; the earlier ones stay
    head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Dropout(), nn.Linear(8, 3), nn.Dropout())
    kept = head[:4]
    out = replace_linear(head, 5)
    assert list(out[:4]) == list(kept) and (out[4].in_features, out[4].out_features) == (8, 5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_stacked_head_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=f"stacked_head.*{re.escape(repr(bad))}"):
        create_model("resnet8", stacked_head=bad)


def test_model_config_leaves_out_stacked_head_when_not_asked():
    assert "stacked_head" not in create_model("resnet8", num_classes=5).model_config


def _stem_and_norm_layers(model: nn.Module) -> tuple[tuple, int]:
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    norms = sum(isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) for m in model.modules())
    return (first.kernel_size, first.stride), norms


@pytest.mark.parametrize("name", ["resnet20", "resnet8_fast", "densenet40", "vgg11", "vgg11_bn", "resnet18"])
def test_model_config_records_the_model_that_was_built(name):
    """model.json's arch must describe the network, not echo arguments the family does not use:
    the CIFAR families are small-input whatever small_input says, and the paper's VGGs have no norm.
    Built on the meta device (structure only): vgg11's 133M weights took seconds to initialize."""
    with torch.device("meta"):
        _check_model_config_records_the_model(name)


def _check_model_config_records_the_model(name):
    model = create_model(name, num_classes=10, **({} if name in SMALL_INPUT else {"small_input": False}))
    config = model.model_config
    assert config["small_input"] == (name in SMALL_INPUT) == model_info(name).small_input
    stem, norms = _stem_and_norm_layers(model)
    assert (config["norm"] == "none") == (norms == 0)
    # the record rebuilds the same network, and small_input=True builds the same for a CIFAR family
    rebuilt = create_model(**{"name": name, **{k: v for k, v in config.items() if k != "name"}})
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    small = create_model(name, num_classes=10, small_input=True)
    assert small.model_config["small_input"]
    if name in SMALL_INPUT:  # the same network either way
        assert repr(small) == repr(model) and _stem_and_norm_layers(small) == (stem, norms)
    else:  # an ImageNet family really changes (a 3x3 stem, or VGG's last max-pool dropped)
        assert repr(small) != repr(model)


@pytest.mark.parametrize("bad", [None, 18, ("resnet20",)])
def test_a_model_name_that_is_not_a_string_is_a_type_error_naming_it(bad):
    with pytest.raises(TypeError, match=re.escape(f"got {bad!r}")):
        create_model(bad)


@pytest.mark.parametrize("name,option", [("resnet8", "zero_init_residual"), ("densenet40", "memory_efficient"),
                                         ("googlenet", "aux_logits"), ("googlenet", "transform_input")])
@pytest.mark.parametrize("bad", ["no", 0, None])
def test_a_true_false_option_refuses_anything_but_a_bool(name, option, bad):
    # "no" is truthy: zero_init_residual="no" zeroed every block's last BN scale
    assert isinstance(model_info(name).options[option], bool)
    with pytest.raises(TypeError, match=f"{name}'s option {option} must be True or False, got {re.escape(repr(bad))}"):
        create_model(name, **{option: bad})


def test_numpy_integer_class_counts_are_taken_as_torchvision_takes_them():
    np = pytest.importorskip("numpy")
    got = create_model("resnet8", num_classes=np.int64(7), in_channels=np.int32(1))
    want = torchvision.models.resnet18(num_classes=np.int64(7))
    assert got.fc.out_features == want.fc.out_features == 7 and got.model_config["num_classes"] == 7
    assert type(got.model_config["num_classes"]) is int and type(got.model_config["in_channels"]) is int


@pytest.mark.parametrize("name,kwargs,match", [
    ("densenet40", dict(drop_rate=-0.1), r"drop_rate must be a float in \[0, 1\), got -0.1"),
    ("densenet40", dict(drop_rate=1.0), r"drop_rate must be a float in \[0, 1\), got 1.0"),
    ("vgg11", dict(pool_size=0), "pool_size must be a positive int, got 0"),
    ("vgg11", dict(hidden_dim=0), "hidden_dim must be a positive int, got 0"),
    ("vgg11", dict(hidden_dim=True), "hidden_dim must be a positive int, got True"),  # not a 1-wide fc6
])
def test_family_options_out_of_range_are_refused_by_name(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


def _rate_options() -> list[tuple[str, str, dict]]:
    """(model, option, other kwargs) for every float option of every registered model, one model per
    family constructor: the dropout probabilities (googlenet's dropout_aux with its aux heads on)."""
    seen, cases = set(), []
    for name in list_models():
        info = model_info(name)
        for option, default in info.options.items():
            key = (info.family, tuple(info.options), option)
            if isinstance(default, float) and key not in seen:
                seen.add(key)
                cases.append((name, option, {"aux_logits": True} if option == "dropout_aux" else {}))
    return cases


@pytest.mark.parametrize("name,option,extra", _rate_options())
@pytest.mark.parametrize("bad", ["a", None, -1, 1, 1.5, float("nan"), True])
def test_every_dropout_option_refuses_a_bad_rate_in_one_line_naming_the_option(name, option, extra, bad):
    # torch's own check names no option ("dropout probability has to be between 0 and 1") and lets 1
    # (every activation zeroed) through; comparing a string with a float names neither option nor value.
    try:
        torch_says = repr(nn.Dropout(p=bad))
    except (TypeError, ValueError) as e:
        torch_says = str(e)
    assert f"{option} must" not in torch_says
    error = TypeError if not isinstance(bad, (int, float)) or isinstance(bad, bool) else ValueError
    with pytest.raises(error, match=rf"^{option} must be a float in \[0, 1\), got {re.escape(repr(bad))} \([^\n]*$"):
        with torch.device("meta"):
            create_model(name, **extra, **{option: bad})


def test_the_rate_options_found_are_the_zoos_dropouts():
    # independent list: the dropout options the four family modules document
    assert {(model_info(n).family, o) for n, o, _ in _rate_options()} == {
        ("densenet", "drop_rate"), ("resnet", "drop_rate"), ("vgg", "dropout"), ("googlenet", "dropout"),
        ("googlenet", "dropout_aux")}


@pytest.mark.parametrize("name,option,extra", _rate_options())
def test_a_good_rate_is_taken_as_a_float_by_the_dropout_layers(name, option, extra):
    np = pytest.importorskip("numpy")
    with torch.device("meta"):
        model = create_model(name, **extra, **{option: np.float64(0.25)})
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    rates |= {m.drop_rate for m in model.modules() if type(m).__name__ == "_DenseLayer"}
    assert 0.25 in rates and all(type(r) is float for r in rates)


@pytest.mark.parametrize("name,small,too_small,fits", [("vgg11_bn", False, 28, 32), ("vgg11_bn", True, 14, 16),
                                                      ("densenet121", False, 28, 32)])
def test_check_input_size_refuses_what_torchvisions_model_cannot_take_and_passes_what_it_can(
        name, small, too_small, fits):
    reference = getattr(torchvision.models, name)().eval() if not small else None
    for side in (too_small, fits):
        if reference is not None:  # torchvision's own model at the same size: the independent reference
            with torch.no_grad():
                if side == too_small:
                    with pytest.raises(RuntimeError, match="too small"):
                        reference(torch.randn(1, 3, side, side))
                else:
                    reference(torch.randn(1, 3, side, side))
        if side == too_small:
            with pytest.raises(ValueError, match=rf"{name} cannot take {side}x{side} px images.*\(--image-size\)"):
                models.check_input_size(name, (3, side, side), small_input=small)
        else:
            models.check_input_size(name, (3, side, side), small_input=small)


@pytest.mark.parametrize("size", [(1, 0, 28), (1, -28, 28), (1, 28, 0)])
def test_check_input_size_refuses_an_empty_or_negative_side_naming_the_flag(size):
    with pytest.raises(RuntimeError):  # torch's own message names no flag (or no size at all)
        models.create_model("resnet8", num_classes=10, in_channels=1)(torch.empty(2, *size))
    with pytest.raises(ValueError, match=r"--input-size must give a height and width of at least 1 px, got "
                                         + re.escape(str(size))):
        models.check_input_size("resnet8", size, flag="--input-size", in_channels=1)




@pytest.mark.parametrize("name", sorted(SMALL_INPUT))
def test_small_input_false_is_refused_where_it_would_change_nothing(name):
    """The CIFAR families have only the small stem: small_input=False built the same network and
    said nothing. Left out or True, the model is built; False is refused, naming the way out."""
    with pytest.raises(ValueError) as e:
        create_model(name, num_classes=10, small_input=False)
    assert str(e.value) == (f"{name} has one stem, made for 28-32 px images (not the ImageNet 7x7 stride-2 stem), so "
                            "small_input=False would change nothing: leave it out, or pick a model with an ImageNet "
                            "stem (resnet18)")
    with torch.device("meta"):  # the shapes only: resnet1202 is large
        model = create_model(name, num_classes=10)
    assert model.model_config["small_input"] is True
    # what the words say of the stem is true of the model built (QA 2026-12-06: they said "no max-pool"
    # of the *_fast models, which have one)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert (first.kernel_size, first.stride) != ((7, 7), (2, 2))
    assert "no max-pool" not in str(e.value) or not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


@pytest.mark.parametrize("name, says", [
    ("resnet20", "Published: 0.27M parameters, 8.75% CIFAR-10 test error."),  # He et al. 2015, table 6
    ("resnet18", "Published: 11.7M parameters (torchvision's documentation"),  # the paper's table 1 gives FLOPs
    ("resnet8", "Parameters: 0.08M (counted; no paper gives it)."),  # n=1 is not in table 6
    ("resnet8_fast", "Parameters: 0.31M (counted; no paper gives it)."),
])
def test_a_docstring_calls_published_only_what_a_paper_or_its_named_source_published(name, says):
    """QA: resnet8 and the *_fast models said "Published: 0.31M parameters" with no paper, and the
    ImageNet ResNets credited torchvision's counts to He et al. 2015, whose table 1 has FLOPs only."""
    doc = " ".join(getattr(models.resnet, name).__doc__.split())
    assert says in doc and ("Published" not in doc if "counted" in says else True)


class _AtenOps(TorchDispatchMode):
    """The aten operators that reach torch's dispatcher, by name."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name, kwargs", [("vgg11_bn", dict(hidden_dim=16)), ("resnet20", {}), ("densenet40", {}),
                                          ("googlenet", {}), ("wrn16_4", {}), ("preact_resnet110", {})])
def test_meta_device_builds_what_a_real_build_does_without_drawing_random_numbers(name, kwargs):
    """meta_device (the model list, summary, the size and run checks) skips the random draws that
    cost 0.5 ms each on the meta device, and nothing else: the reference is a real build's tensors.
    (VGG's Linear layers draw through nn.init.normal_, GoogLeNet's through trunc_normal_.)"""
    real = create_model(name, num_classes=7, **kwargs)
    with torch.device("meta"), _AtenOps() as plain_meta:
        create_model(name, num_classes=7, **kwargs)
    with meta_device(), _AtenOps() as ours:
        meta = create_model(name, num_classes=7, **kwargs)
    draws = {"normal_", "uniform_"}
    assert draws & plain_meta.names and not draws & ours.names  # the spy sees a plain meta build's draws
    assert meta.model_config == real.model_config and repr(meta) == repr(real)
    assert {k: (v.shape, v.dtype) for k, v in meta.state_dict().items()} == {
        k: (v.shape, v.dtype) for k, v in real.state_dict().items()}
    assert all(v.is_meta for v in meta.state_dict().values())
    assert torch.empty(1).device.type == "cpu"  # and the default device is back


# --- registry bookkeeping, against hand-written references --------------------------------------

def test_a_second_model_of_a_registered_name_is_refused_and_the_first_kept():
    from resnet_lab.models.registry import register_model

    first = models.registry._MODELS["resnet20"]

    def resnet20(**kwargs):  # a user's model that would shadow the zoo's
        return nn.Linear(1, 1)

    with pytest.raises(ValueError, match=r"^model 'resnet20' is registered twice$"):
        register_model(resnet20)
    assert models.registry._MODELS["resnet20"] is first and model_info("resnet20").cifar10_error == 8.75


def test_a_wildcard_pattern_ignores_letter_case_as_the_docstring_says():
    assert list_models("ResNet2?") == list_models("resnet2?") == ["resnet20"]


def test_a_misspelt_name_half_way_from_the_real_one_is_still_suggested():
    # "resn20" shares 6 of resnet20's 8 letters: difflib's ratio 2 * 6 / 14 = 0.86, above the 0.5 cutoff
    with pytest.raises(ValueError, match=r"^unknown model 'resn20'\. Did you mean: [^?]*\bresnet20\b"):
        model_info("resn20")


def test_class_counts_are_taken_up_to_torchs_int64_limit_and_refused_past_it():
    from resnet_lab.models.registry import check_num_classes

    most = torch.iinfo(torch.int64).max  # the largest size torch can hold
    assert check_num_classes(most) == most
    with pytest.raises(ValueError, match=rf"^num_classes must be a positive int .* of at most {most}, got {most + 1}$"):
        check_num_classes(most + 1)


def test_weights_dtype_is_the_first_floating_point_parameters():
    from resnet_lab.models.registry import weights_dtype

    model = nn.Module()
    model.steps = nn.Parameter(torch.zeros(1, dtype=torch.int64), requires_grad=False)  # an int "parameter" first
    model.lin = nn.Linear(2, 2).double()
    assert [p.dtype for p in model.parameters()][0] == torch.int64
    assert weights_dtype(model, torch.float32) == torch.float64
    assert weights_dtype(nn.ReLU(), torch.float16) == torch.float16
