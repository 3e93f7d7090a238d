"""The experiment registry and the shared report writer."""

import json
import math

import pytest

from resnet_lab.experiments import (
    Check,
    Report,
    get_experiment,
    list_experiments,
    registry,
    verdict_from_checks,
    write_report,
)

# The six claims of issue 5, by the names the issue gives them.
ISSUE_5_NAMES = ["degradation", "bn_convergence", "vanishing_gradients", "bn_batch_size", "very_deep", "bn_imbalance"]


def test_list_experiments_has_the_six_claims_of_issue_5_in_order_with_their_claims():
    listed = list_experiments()
    assert [n for n in listed if n in ISSUE_5_NAMES] == ISSUE_5_NAMES
    assert all(isinstance(c, str) and len(c) > 20 for c in listed.values())


def test_unknown_experiment_name_raises_and_lists_the_known_names():
    with pytest.raises(ValueError, match="degradation.*bn_imbalance"):
        get_experiment("degredation")


@pytest.mark.parametrize("typed, meant", [("imbalance", "bn_imbalance"), ("batch_size", "bn_batch_size")])
def test_an_experiment_name_without_its_prefix_gets_one_line_naming_it_the_closest_name_and_every_choice(typed, meant):
    # difflib's usual cutoff (0.6): "imbalance" is 0.86 like "bn_imbalance", a hint worth giving
    with pytest.raises(ValueError) as e:
        get_experiment(typed)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"unknown experiment {typed!r}: did you mean {meant}? ")
    assert message.endswith(f"expected one of {', '.join(list_experiments())} (resnet-lab experiment --list)")


def test_the_reproducing_command_names_only_the_arguments_that_differ_from_the_defaults():
    # registry.reproducing_command's contract: the CLI's defaults (--seed 0, --device auto, no --data-dir) left out
    assert registry.reproducing_command("degradation", "smoke", "my out", None, "auto", 0) == (
        "resnet-lab experiment degradation --budget smoke --out 'my out'")
    assert registry.reproducing_command("degradation", "full", "o", "d", "cpu", 3) == (
        "resnet-lab experiment degradation --budget full --out o --seed 3 --device cpu --data-dir d")


def test_registry_skips_a_listed_module_that_does_not_exist_yet(monkeypatch):
    monkeypatch.setattr(registry, "EXPERIMENT_MODULES", (*registry.EXPERIMENT_MODULES, "not_written_yet"))
    assert "not_written_yet" not in list_experiments()
    assert "degradation" in list_experiments()


def test_run_experiment_rejects_an_unknown_budget(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        registry.run_experiment("degradation", budget="huge", out=tmp_path)


@pytest.mark.parametrize("passed, verdict", [([True, True], "confirmed"), ([False, False], "not confirmed"),
                                             ([True, False], "mixed")])
def test_verdict_is_confirmed_only_when_every_check_passes(passed, verdict):
    assert verdict_from_checks([Check(f"q{i}", p, "numbers") for i, p in enumerate(passed)]) == verdict


def test_write_report_writes_json_and_markdown_with_the_numbers_behind_the_verdict(tmp_path):
    report = Report(claim="X beats Y", setup={"data": "tiny"}, columns=["run", "error %"],
                    rows=[["X", 1.5], ["Y", float("inf")]],
                    checks=[Check("X has lower error", True, "1.50% vs never")])
    results = write_report(tmp_path, "demo", report, budget="full", seconds=3.0)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["verdict"] == results["verdict"] == "confirmed"
    assert on_disk["table"]["rows"][1] == ["Y", "inf"]  # JSON has no infinity; written as a string
    md = (tmp_path / "report.md").read_text()
    assert "X beats Y" in md and "1.50% vs never" in md and "| Y | never |" in md


def test_write_report_shows_spreads_as_mean_and_sd_and_keeps_every_seed_in_json(tmp_path):
    from resnet_lab.experiments.report import Spread

    report = Report(claim="X beats Y", setup={}, columns=["run", "error %"],
                    rows=[["X", Spread.of([10.0, 12.0, 14.0])], ["Y", Spread.of([3.0, math.inf])]],
                    checks=[Check("X has lower error", False, "numbers")])
    write_report(tmp_path, "demo", report, budget="full", seconds=1.0)
    md = (tmp_path / "report.md").read_text()
    assert "| X | 12.0 ± 2.0 |" in md and "| Y | 3 / never |" in md
    row = json.loads((tmp_path / "results.json").read_text())["table"]["rows"][0][1]
    assert row["values"] == [10.0, 12.0, 14.0] and row["mean"] == 12.0 and row["sd"] == 2.0
    assert (row["min"], row["max"], row["n"]) == (10.0, 14.0, 3)


def test_missing_fashion_mnist_falls_back_to_fake_data_and_says_so(tmp_path, monkeypatch):
    import resnet_lab.data as data
    import resnet_lab.experiments.runner as runner

    real = data.load_data

    def no_fashion_mnist(name, **kw):
        if name == "fashion-mnist":
            raise data.DataNotFoundError("not installed (simulated)")
        return real(name, **kw)

    monkeypatch.setattr(runner, "load_data", no_fashion_mnist)  # where the runner looks it up
    lines = []
    results = registry.run_experiment("bn_convergence", budget="smoke", out=tmp_path, device="cpu", log=lines.append)
    assert any("fake" in n for n in results["notes"]) and results["fake_data"] is True
    md = (tmp_path / "report.md").read_text()
    # Even a full budget's verdict on random images is no evidence: the verdict and the setup say so
    # (the setup used to name Fashion-MNIST).
    assert md.startswith(f"# bn_convergence: {results['verdict']} (random images, Fashion-MNIST was not found: "
                         "not evidence)")
    assert "- data: random images (`fake`: Fashion-MNIST was not found) in place of: Fashion-MNIST" in md
    assert "(random images, Fashion-MNIST was not found: not evidence)" in lines[-1]
    from resnet_lab.experiments.report import verdict_text

    assert verdict_text("confirmed", "full") == "confirmed"
    assert verdict_text("confirmed", "full", fake_data=True) == ("confirmed (random images, Fashion-MNIST was not "
                                                                 "found: not evidence)")


def test_ctrl_c_during_a_run_stops_the_experiment_instead_of_starting_the_next_run(tmp_path):
    import os
    import signal

    from resnet_lab.experiments.runner import Context, RunSpec, cifar_net

    ctx = Context("interrupt", "smoke", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data("fake", batch_size=16, subset=128, image_size=16, in_channels=1)
    steps: list[int] = []

    def press_ctrl_c(s):  # a real SIGINT, delivered to this process mid-run
        steps.append(s["step"])
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    spec = RunSpec("plain-8", cifar_net(8, residual=False), batch_size=16, epochs=3,
                   step_callbacks=[press_ctrl_c])
    with pytest.raises(KeyboardInterrupt, match="plain-8 interrupted"):
        ctx.train(spec, data)
    assert len(steps) == 2  # stopped at the next step boundary, not after the 3 epochs


@pytest.mark.parametrize("kwargs", [dict(), dict(seed=3, device="cpu", data_dir="my data")])
def test_the_reports_command_runs_the_experiment_again_with_the_same_arguments(tmp_path, monkeypatch, kwargs):
    import shlex
    import types

    from resnet_lab.cli import build_parser

    seen = []

    def run(ctx):  # the experiment's arguments as it sees them
        seen.append((ctx.seed, ctx.budget))
        return Report(claim="c", setup={}, columns=["a"], rows=[[1]], checks=[Check("q", True, "n")])

    monkeypatch.setattr(registry, "get_experiment", lambda name: types.SimpleNamespace(run=run))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my data").mkdir()  # a data root that is there: one that is not is refused
    out = tmp_path / "exp one"
    results = registry.run_experiment("degradation", budget="smoke", out=out, log=lambda s: None, **kwargs)
    command = results["command"]
    assert f"- command: `{command}`" in (out / "report.md").read_text()
    words = shlex.split(command)
    assert words[:2] == ["resnet-lab", "experiment"]
    args = build_parser().parse_args(words[1:])
    want = {"seed": 0, "device": "auto", "data_dir": None, **kwargs}
    assert (args.name, args.budget, args.out) == ("degradation", "smoke", str(out))
    given = (0 if args.seed is None else args.seed, "auto" if args.device is None else args.device, args.data_dir)
    assert given == (want["seed"], want["device"], want["data_dir"])  # left out of the command: the defaults
    assert seen == [(want["seed"], "smoke")]
