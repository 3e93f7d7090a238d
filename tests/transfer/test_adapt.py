"""Input adaptation, weight sources and architecture checks, against torchvision's own models."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import types
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from resnet_lab import create_model
from resnet_lab.transfer import (
    ArchitectureMismatchError,
    adapt_first_conv,
    first_conv_key,
    fold_head,
    load_pretrained,
    load_source,
    parse_torchvision_name,
    transfer_model,
)
from resnet_lab.transfer import sources

from support import TerminalStream


def _transfer(path, model="resnet18", strategy="all", **kw):
    return transfer_model(load_source(file=path, model=model), strategy, **kw)


def test_gray_model_with_summed_first_conv_computes_what_the_rgb_model_computes_on_repeated_gray(tv_resnet18):
    tv, path = tv_resnet18
    ours, plan = _transfer(path, in_channels=1, num_classes=10)
    ours.eval()
    assert plan.load.adapted == {"conv1.weight": "summed over input channels (3 -> 1)"}
    # what finetune prints: every other tensor of torchvision's state dict loaded, and the adaptation
    assert plan.load.summary() == f"loaded {len(tv.state_dict()) - 1} tensors; conv1.weight: summed over input channels (3 -> 1)"
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        # The first conv alone, in float64 against torch's conv on the 3-channel kernel.
        want = F.conv2d(x.double().repeat(1, 3, 1, 1), tv.conv1.weight.double(), stride=2, padding=3)
        got = F.conv2d(x.double(), ours.conv1.weight.double(), stride=2, padding=3)
        assert torch.allclose(got, want, atol=1e-5)  # the kernel sum was taken in float32
        # And the whole network: same logits as torchvision's model on the repeated image.
        assert torch.allclose(ours(x), tv(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def test_rgb_model_from_gray_weights_repeats_and_divides_the_kernel(tmp_path):
    torch.manual_seed(0)
    gray = torchvision.models.resnet18(num_classes=4)
    gray.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    gray.eval()
    torch.save(gray.state_dict(), tmp_path / "gray.pth")
    ours, plan = _transfer(tmp_path / "gray.pth", in_channels=3, num_classes=4)
    ours.eval()
    assert "repeated" in plan.load.adapted["conv1.weight"]
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(ours(x.repeat(1, 3, 1, 1)), gray(x), atol=1e-4, rtol=1e-4)


def test_torchvision_state_dict_loads_key_for_key_and_gives_torchvisions_logits(tv_resnet18, tmp_path):
    tv, path = tv_resnet18
    ours, plan = _transfer(path, num_classes=10)
    ours.eval()
    assert plan.load.recreated == [] and plan.load.adapted == {}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), tv(x))
    # Old checkpoints without num_batches_tracked (torchvision's IMAGENET1K_V1) load too.
    old = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    ours_old, _ = _transfer(tmp_path / "old.pth", num_classes=10)
    with torch.no_grad():
        assert torch.equal(ours_old.eval()(x), tv(x))


def test_class_count_change_recreates_only_the_classifier(tv_resnet18):
    tv, path = tv_resnet18
    ours, plan = _transfer(path, num_classes=7)
    assert plan.load.recreated == ["fc.weight", "fc.bias"]
    # LoadReport.loaded: every other key of torchvision's state dict, copied as it was
    assert sorted(plan.load.loaded) == sorted(set(tv.state_dict()) - {"fc.weight", "fc.bias"})
    assert ours.fc.weight.shape == (7, 512)
    src = tv.state_dict()
    for k, v in ours.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, src[k]), k


def test_recreate_head_false_refuses_another_class_count_and_true_keeps_the_fresh_head(tv_resnet18):
    """load_pretrained's documented choice: False -- the classifier must fit (a 10-class state dict in a
    7-class model fails naming fc's two shapes); True -- the model's fresh classifier stays even when
    the weights' one fits."""
    tv, _ = tv_resnet18
    src = tv.state_dict()
    seven = create_model("resnet18", num_classes=7)
    with pytest.raises(ArchitectureMismatchError, match=r"fc\.weight \(10, 512\) vs model \(7, 512\)"):
        load_pretrained(seven, src, recreate_head=False)
    ten = create_model("resnet18", num_classes=10)
    fresh = {k: v.clone() for k, v in ten.state_dict().items() if k.startswith("fc.")}
    report = load_pretrained(ten, src, recreate_head=True)
    assert report.recreated == ["fc.weight", "fc.bias"]
    assert all(torch.equal(ten.state_dict()[k], v) for k, v in fresh.items())
    assert torch.equal(ten.conv1.weight, src["conv1.weight"])


def test_mismatched_architecture_fails_naming_the_first_keys_that_differ(tv_resnet18):
    _, path = tv_resnet18
    with pytest.raises(ArchitectureMismatchError, match=r"missing in the weights: layer1\.2\.conv1\.weight"):
        _transfer(path, model="resnet34", num_classes=10)
    with pytest.raises(ArchitectureMismatchError, match=r"resnet50.*(layer1\.0\.conv3|different shapes)"):
        _transfer(path, model="resnet50", num_classes=10)


def test_run_directory_source_brings_its_architecture_and_preprocessing(resnet8_run):
    src = load_source(resnet8_run)
    assert src.arch["name"] == "resnet8" and src.arch["in_channels"] == 1
    assert src.mean == (0.25,) and src.std == (0.5,) and src.input_size == (1, 6, 6)
    _, plan = transfer_model(src, "all", num_classes=5, in_channels=3, classes=["a", "b", "c", "d", "e"])
    # Same count but other classes: the old class weights are not kept.
    assert plan.load.recreated == ["fc.weight", "fc.bias"]
    assert plan.mean == (0.25, 0.25, 0.25) and plan.input_size == (3, 6, 6)


def test_torchvision_names_parse_and_unknown_weights_list_the_available_ones():
    assert parse_torchvision_name("torchvision:resnet50") == ("resnet50", None)
    assert parse_torchvision_name("torchvision:resnet18.IMAGENET1K_V1") == ("resnet18", "IMAGENET1K_V1")
    for spec in ("torchvision:resnet18.", "torchvision:", "torchvision:.IMAGENET1K_V1",  # no weights, no model
                 "torchvision:resnet18.IMAGENET1K_V1."):  # a stray dot after the weights
        with pytest.raises(ValueError, match="expected torchvision:MODEL"):
            parse_torchvision_name(spec)
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        load_source("torchvision:resnet18.IMAGENET9K")
    with pytest.raises(ValueError, match="not an architecture of the zoo"):
        load_source("torchvision:vit_b_16")


def test_torchvision_download_without_network_says_to_use_from_file(monkeypatch, tmp_path):
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: every source is fetched
    monkeypatch.setattr(torch.hub, "urlopen", offline)  # torch's download, however it is reached
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline, raising=False)
    with pytest.raises(RuntimeError, match=r"--from-file FILE --model resnet18"):
        load_source("torchvision:resnet18.IMAGENET1K_V1")
    with pytest.raises(RuntimeError, match=r"--from-file FILE --model resnet18"):  # --model agrees: no complaint
        load_source("torchvision:resnet18.IMAGENET1K_V1", model="resnet18")
    # --model names the architecture of --from-file; one that contradicts the torchvision name is
    # refused before any download, instead of being silently ignored
    with pytest.raises(ValueError, match=r"--model resnet50 differs from resnet18 named by --from "
                                         r"torchvision:resnet18.IMAGENET1K_V1; drop --model"):
        load_source("torchvision:resnet18.IMAGENET1K_V1", model="resnet50")


def test_folded_head_equals_the_two_linears_in_float64():
    g = torch.Generator().manual_seed(0)
    w0, b0 = torch.randn(6, 4, generator=g), torch.randn(6, generator=g)
    wh, bh = torch.randn(3, 6, generator=g), torch.randn(3, generator=g)
    sd = fold_head({"fc.weight": w0, "fc.bias": b0, "fc.head_weight": wh, "fc.head_bias": bh}, "fc")
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    want = F.linear(F.linear(x, w0.double(), b0.double()), wh.double(), bh.double())
    assert set(sd) == {"fc.weight", "fc.bias"}
    assert torch.allclose(F.linear(x, sd["fc.weight"].double(), sd["fc.bias"].double()), want, atol=1e-5)
    # the float64 product is only the way there: the folded Linear is stored in the weights' own dtype
    assert sd["fc.weight"].dtype == sd["fc.bias"].dtype == torch.float32


def test_the_first_conv_key_of_a_bare_convolution_is_its_own_state_dict_key():
    """first_conv_key names a state-dict key; for a model that is one Conv2d, torch's state dict calls
    its kernel ``weight`` (no leading dot)."""
    conv = torch.nn.Conv2d(3, 4, 3)
    assert first_conv_key(conv) == "weight" and "weight" in conv.state_dict()


def test_a_first_conv_with_three_channels_is_not_adapted_to_four():
    """adapt_first_conv's docstring: only c -> 1 and 1 -> C are exact; 3 -> 4 is refused naming both
    counts and the in_channels to load the data with."""
    with pytest.raises(ValueError, match=r"^cannot adapt a first conv with 3 input channels to 4: .*in_channels=3 instead$"):
        adapt_first_conv(torch.randn(8, 3, 3, 3), 4)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_first_conv_with_the_models_channel_count_is_kept_as_it_is(channels):
    """adapt_first_conv adapts only when the counts differ: a 1-channel kernel for a 1-channel model
    and a 3-channel one for a 3-channel model come back unchanged (not summed, not refused)."""
    w = torch.randn(8, channels, 3, 3)
    assert torch.equal(adapt_first_conv(w, channels), w)


def test_head_names_the_classifier_of_a_model_without_get_classifier():
    """load_pretrained's ``head``: a plain torch model has no get_classifier(), so the caller names its
    final Linear; a class count that differs re-creates that Linear and the rest loads as it was."""
    torch.manual_seed(0)

    def build(classes):
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, classes))

    src, model = build(10).state_dict(), build(7)
    fresh = model[2].weight.clone()
    report = load_pretrained(model, src, head="2")
    assert report.recreated == ["2.weight", "2.bias"] and report.loaded == ["0.weight", "0.bias"]
    assert torch.equal(model[0].weight, src["0.weight"]) and torch.equal(model[2].weight, fresh)
    with pytest.raises(ValueError, match=r"has no get_classifier\(\).*, or pass load_pretrained\(\.\.\., head=NAME\)"):
        load_pretrained(build(7), src)  # without head=, the error names it as the way out


def test_legacy_torchvision_densenet_keys_and_wrapper_prefixes_map_to_the_current_names():
    import re

    from resnet_lab.transfer import normalize_keys

    with torch.device("meta"):
        current = list(torchvision.models.densenet121().state_dict())
    # torchvision's published DenseNet files spell "denselayer1.norm1.weight" as "denselayer1.norm.1.weight".
    legacy = {"module." + re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): torch.zeros(1)
              for k in current}
    assert any(".norm.1." in k for k in legacy)
    assert list(normalize_keys(legacy)) == current


def test_from_file_reads_the_stem_channels_and_class_count_off_the_tensor_shapes(tmp_path):
    from resnet_lab import create_model

    torch.manual_seed(0)
    small = create_model("resnet18", num_classes=7, in_channels=1, small_input=True)
    torch.save(small.state_dict(), tmp_path / "small.pth")
    src = load_source(file=tmp_path / "small.pth", model="resnet18")
    assert src.arch == {"name": "resnet18", "num_classes": 7, "in_channels": 1, "norm": "batch", "small_input": True}
    assert src.mean is None  # a 1-channel, 7-class file says nothing about its preprocessing


def test_transfer_model_refuses_a_channel_count_it_would_ignore_and_a_path_for_a_source(tv_resnet18):
    from resnet_lab.transfer import transfer_model

    _, path = tv_resnet18
    source = load_source(file=path, model="resnet18")
    with pytest.raises(ValueError, match="in_channels must be 1 .grayscale. or 3 .RGB., got 0"):
        transfer_model(source, "last", num_classes=5, in_channels=0)
    with pytest.raises(TypeError, match="source must be a WeightSource from load_source"):
        transfer_model(str(path), "last", num_classes=5)
    model, _ = transfer_model(source, "last", num_classes=5, in_channels=1)
    assert model.model_config["in_channels"] == 1


@pytest.mark.parametrize("norm", ["group", "none"])
def test_from_file_finds_the_norm_the_weights_were_trained_with(tmp_path, norm):
    """A `--norm group` run's weights failed with "missing in the weights: bn1.running_mean...
    Check --model", with the right --model."""
    from resnet_lab import create_model

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, norm=norm).eval()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    source = load_source(file=tmp_path / "w.pth", model="resnet8")
    assert source.arch["norm"] == norm
    again, _ = transfer_model(source, "all", num_classes=4)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(again.eval()(x), model(x))


def test_from_file_folds_a_head_transferred_runs_stacked_head_as_from_run_does(tmp_path):
    from resnet_lab import create_model
    from resnet_lab.runs import save_model

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, stacked_head=3).eval()
    save_model(tmp_path / "run", model, {"classes": ["a", "b", "c"], "input_size": [3, 16, 16],
                                        "mean": [0.5] * 3, "std": [0.25] * 3})
    by_file = load_source(file=tmp_path / "run" / "model.safetensors", model="resnet8")
    by_run = load_source(tmp_path / "run")
    assert by_file.arch["num_classes"] == 3 and any("folded the stacked head fc" in n for n in by_file.notes)
    assert by_file.state_dict.keys() == by_run.state_dict.keys()
    assert all(torch.equal(by_file.state_dict[k], by_run.state_dict[k]) for k in by_run.state_dict)


def test_a_run_file_with_an_upper_case_suffix_is_the_same_source_as_its_lower_case_copy(resnet8_run, tmp_path):
    """--from W.SAFETENSORS was refused as "not a weights file (.SAFETENSORS)", though the run loader reads
    any case; the reference: the same run's model.safetensors."""
    run = shutil.copytree(resnet8_run, tmp_path / "run")
    shutil.copy(run / "model.safetensors", run / "COPY.SAFETENSORS")
    got, want = load_source(run / "COPY.SAFETENSORS"), load_source(run / "model.safetensors")
    assert got.arch == want.arch and got.state_dict.keys() == want.state_dict.keys()
    assert all(torch.equal(got.state_dict[k], want.state_dict[k]) for k in want.state_dict)


def test_from_file_googlenet_imagenet_weights_take_torchvisions_input_rescaling(tmp_path):
    """Only torchvision:googlenet set transform_input; the documented offline way (--from-file FILE
    --model googlenet) built another network than torchvision's with those weights."""
    from resnet_lab import create_model

    torch.save(create_model("googlenet", num_classes=1000).state_dict(), tmp_path / "g.pth")
    assert load_source(file=tmp_path / "g.pth", model="googlenet").arch["transform_input"] is True


def _cached_stand_in(monkeypatch, tmp_path, state: dict, prefix: str | None = None):
    """torchvision's resnet18 weights as a file in a fresh TORCH_HOME's cache, named as torchvision
    names its files (MODEL-SHA256PREFIX.pth) with ``prefix`` or the file's own hash prefix."""
    import hashlib
    import types

    import torch.hub

    from resnet_lab.transfer import sources

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    staged = tmp_path / "staged.pth"
    torch.save(state, staged)
    prefix = hashlib.sha256(staged.read_bytes()).hexdigest()[:8] if prefix is None else prefix
    path = cache / f"resnet18-{prefix}.pth"
    staged.rename(path)
    real = sources.torchvision_weights("resnet18", "IMAGENET1K_V1")
    url = f"https://download.invalid/models/{path.name}"
    stand_in = types.SimpleNamespace(url=url, transforms=real.transforms, meta=real.meta, name=real.name,
                                     get_state_dict=lambda **kw: torch.hub.load_state_dict_from_url(url, **kw))
    monkeypatch.setattr(sources, "torchvision_weights", lambda model, name=None: stand_in)
    return path


def test_a_cached_torchvision_file_is_checked_against_the_hash_its_name_carries(monkeypatch, tmp_path):
    """torch checks a file's hash only when it downloads it: a damaged or foreign file already in the
    cache was loaded as torchvision's ImageNet weights, and a broken one told an offline user to
    download elsewhere, though torch never downloads over a cached file."""
    state = torchvision.models.resnet18(weights=None).state_dict()
    good = _cached_stand_in(monkeypatch, tmp_path / "good", state)
    source = load_source("torchvision:resnet18.IMAGENET1K_V1")  # the file matches its name: it loads
    assert all(torch.equal(source.state_dict[k], v) for k, v in state.items())
    assert good.is_file()

    foreign = _cached_stand_in(monkeypatch, tmp_path / "foreign", state, prefix="f37072fd")
    with pytest.raises(ValueError, match=rf"{re.escape(str(foreign))}, is damaged or not the file torchvision "
                                         r"published .*f37072fd.*delete it and run again"):
        load_source("torchvision:resnet18.IMAGENET1K_V1")

    broken = _cached_stand_in(monkeypatch, tmp_path / "broken", state)
    broken.write_bytes(broken.read_bytes()[:20000])  # truncated, still named by the whole file's hash
    with pytest.raises((ValueError, RuntimeError), match=rf"{re.escape(str(broken))}.*delete it and run again"):
        load_source("torchvision:resnet18.IMAGENET1K_V1")
    unnamed = _cached_stand_in(monkeypatch, tmp_path / "unnamed", state, prefix="")  # no hash in its name
    unnamed.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=rf"from its cached file {re.escape(str(unnamed))} .*the file is damaged; "
                                           "delete it and run again"):
        load_source("torchvision:resnet18.IMAGENET1K_V1")


def test_gray_googlenet_from_imagenet_weights_keeps_the_input_rescaling_and_computes_what_torchvisions_does(tmp_path):
    """GoogLeNet's ImageNet weights expect [-1, 1] inputs (transform_input); a gray transfer used to drop
    the re-scaling, so its summed conv1 saw (g - 0.449) / 0.226 where the weights were trained on
    (g - 0.5) / 0.5. Reference: torchvision's GoogLeNet on the gray image as three equal channels,
    each normalized with ImageNet's mean/std, against ours on the gray image normalized with the
    averages the transfer records. Compared after the first conv block (conv, BN, ReLU) and at the
    logits: a randomly initialized GoogLeNet's logits hardly depend on its input."""
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=True).eval()
    torch.save(tv.state_dict(), tmp_path / "g.pth")
    ours, plan = _transfer(tmp_path / "g.pth", model="googlenet", in_channels=1, num_classes=1000)
    ours.eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert plan.mean == pytest.approx((mean.mean().item(),)) and plan.std == pytest.approx((std.mean().item(),))
    gray = torch.rand(2, 1, 64, 64)
    seen = []
    for model in (tv, ours):
        model.conv1.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        want = tv((gray.repeat(1, 3, 1, 1) - mean) / std)
        got = ours((gray - plan.mean[0]) / plan.std[0])
    assert seen[0].abs().max() > 0.1 and torch.allclose(seen[1], seen[0], atol=1e-4, rtol=1e-4), \
        (seen[1] - seen[0]).abs().max()
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_the_download_bar_of_torchvision_weights_draws_on_a_terminal_only(monkeypatch, tmp_path):
    """torch's download bar, like training's, wrote carriage-return redraws into a log (`2> log`)."""
    asked = []

    def download(url, dst, hash_prefix=None, progress=True):
        asked.append(progress)
        raise urllib.error.URLError("offline")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    stand_in = types.SimpleNamespace(url="https://download.invalid/models/resnet18-f37072fd.pth")
    monkeypatch.setattr(sources, "torchvision_weights", lambda model, name=None: stand_in)
    monkeypatch.setattr(sources, "download_url_to_file", download)
    for stream in (TerminalStream(), io.StringIO()):
        with contextlib.redirect_stderr(stream), pytest.raises(RuntimeError, match="could not get torchvision:"):
            load_source("torchvision:resnet18")
    assert asked == [True, False]


def test_torchvision_weights_that_fail_to_download_print_nothing_but_the_error(monkeypatch, tmp_path, capfd):
    """torch's download printed 'Downloading: "URL" to FILE' on stdout before it connected, so an offline
    finetune said it was downloading, then that it could not. The fetch itself is what fails here
    (torch.hub's urlopen), so every line torch would print on the way is printed or not as for real."""
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    capfd.readouterr()
    for stream in (TerminalStream(), io.StringIO()):  # with the bar (a terminal) and without
        with contextlib.redirect_stderr(stream), pytest.raises(RuntimeError) as e:
            load_source("torchvision:resnet18")
        assert stream.getvalue() == ""
        assert "\n" not in str(e.value) and "could not get torchvision:resnet18 (URLError" in str(e.value)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert list((tmp_path / "hub" / "checkpoints").iterdir()) == []  # no partial file left behind


def test_torchvision_weights_downloaded_are_the_published_file_and_say_so(monkeypatch, tmp_path, capfd):
    """A download (a local file served through torch.hub's urlopen) lands in the cache under the name of
    the URL, is checked against the hash prefix of that name and loads the tensors that were served;
    the only line about it is our note."""
    import hashlib
    import urllib.request

    import torch.hub

    state = torchvision.models.resnet18(weights=None).state_dict()
    served = tmp_path / "served.pth"
    torch.save(state, served)
    name = f"resnet18-{hashlib.sha256(served.read_bytes()).hexdigest()[:8]}.pth"
    real = sources.torchvision_weights("resnet18", "IMAGENET1K_V1")
    stand_in = types.SimpleNamespace(url=f"https://download.invalid/models/{name}", transforms=real.transforms,
                                     meta=real.meta, name=real.name,
                                     get_state_dict=lambda **kw: torch.hub.load_state_dict_from_url(
                                         f"https://download.invalid/models/{name}", **kw))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sources, "torchvision_weights", lambda model, name=None: stand_in)
    monkeypatch.setattr(torch.hub, "urlopen", lambda req: urllib.request.urlopen(served.as_uri()))
    capfd.readouterr()
    with contextlib.redirect_stderr(io.StringIO()) as bar:
        source = load_source("torchvision:resnet18")
    cached = tmp_path / "home" / "hub" / "checkpoints" / name
    assert cached.read_bytes() == served.read_bytes()
    assert all(torch.equal(source.state_dict[k], v) for k, v in state.items())
    assert source.notes == [f"downloaded torchvision:resnet18 into {cached}"]
    assert capfd.readouterr() == ("", "") and bar.getvalue() == ""
