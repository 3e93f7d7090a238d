"""The `transfer` experiment's smoke budget: every strategy and k runs, the report is written."""

from __future__ import annotations

import json


def test_transfer_experiment_smoke_runs_every_strategy_and_keeps_frozen_tensors_identical(tmp_path):
    from resnet_lab.experiments import VERDICTS, run_experiment

    results = run_experiment("transfer", budget="smoke", out=tmp_path, device="cpu", log=lambda s: None)
    assert results["verdict"] in VERDICTS and len(results["checks"]) == 4
    runs = results["data"]["runs"]
    assert {(r["strategy"], r["k"]) for r in runs} == {(s, k) for s in ("scratch", "all", "all-discr", "last", "head")
                                                            for k in (5, 20)}
    head = [r for r in runs if r["strategy"] == "head"]
    assert all(r["trainable"] == 5 * 5 + 5 for r in head)  # only the stacked Linear(5 -> 5)
    assert all(r["frozen_unchanged"] is True for r in runs if r["strategy"] in ("last", "head"))
    assert all(r["frozen"] == 0 for r in runs if r["strategy"] in ("scratch", "all", "all-discr"))
    assert (tmp_path / "accuracy_vs_k.png").stat().st_size > 1000
    assert "## Verdict" in (tmp_path / "report.md").read_text()
    assert len(json.loads((tmp_path / "source" / "model.json").read_text())["classes"]) == 5
