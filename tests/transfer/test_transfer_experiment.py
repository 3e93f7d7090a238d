"""The `transfer` experiment's smoke budget: every strategy and k runs, the report is written, and
what each strategy says it freezes is bit-identical, in the trained models themselves, to the
pretrained weights the experiment saved."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from resnet_lab.experiments import VERDICTS, run_experiment
from trainspy import TrainSpy


def test_transfer_experiment_smoke_runs_every_strategy_and_keeps_frozen_tensors_identical(tmp_path, monkeypatch):
    spy = TrainSpy(monkeypatch)  # keeps every model the experiment trains
    results = run_experiment("transfer", budget="smoke", out=tmp_path, device="cpu", log=lambda s: None)
    assert results["verdict"] in VERDICTS and len(results["checks"]) == 4
    runs = results["data"]["runs"]
    assert {(r["strategy"], r["k"]) for r in runs} == {(s, k) for s in ("scratch", "all", "all-discr", "last", "head")
                                                            for k in (5, 20)}
    head = [r for r in runs if r["strategy"] == "head"]
    assert all(r["trainable"] == 5 * 5 + 5 for r in head)  # only the stacked Linear(5 -> 5)
    assert all(r["frozen"] == 0 for r in runs if r["strategy"] in ("scratch", "all", "all-discr"))

    # The trainer ran the pretraining, then the target runs in the order of the results.
    source = load_file(tmp_path / "source" / "model.safetensors")  # what the experiment saved and loaded back
    assert len(spy.calls) == 1 + len(runs)
    for run, call in zip(runs, spy.calls[1:]):
        final = call.model.state_dict()
        changed = {k for k, v in call.initial_state.items() if not torch.equal(final[k], v)}
        if run["strategy"] == "head":  # the whole pretrained network, its classifier and BN statistics included
            frozen = list(source)
            assert changed == {"fc.head_weight", "fc.head_bias"}
        elif run["strategy"] == "last":  # resnet8's last stage (layer3) and the classifier train
            frozen = [k for k in source if not k.startswith(("layer3.", "fc."))]
            assert "layer3.0.conv1.weight" in changed and "layer3.0.bn1.running_mean" in changed
        else:  # from scratch or everything trains
            frozen = []
            assert "conv1.weight" in changed and "layer1.0.bn1.running_mean" in changed
        for k in frozen:
            assert torch.equal(final[k], source[k]), f"{run['strategy']} k={run['k']}: {k} changed although frozen"
        assert run["frozen_unchanged"] is (True if frozen else None)  # the experiment's own record agrees

    assert (tmp_path / "accuracy_vs_k.png").stat().st_size > 1000
    assert "## Verdict" in (tmp_path / "report.md").read_text()
    assert len(json.loads((tmp_path / "source" / "model.json").read_text())["classes"]) == 5
