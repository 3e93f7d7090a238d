"""The transfer experiment's pretrained network is a run directory a user can evaluate and report on."""

import json

from resnet_lab.analysis import report_html
from resnet_lab.cli import main
from resnet_lab.experiments import run_experiment, transfer


def test_the_transfer_experiments_source_run_can_be_evaluated_and_reported(tmp_path, capsys):
    """exp/transfer/source was saved with classes, input size and mean/std only: `evaluate` and
    `report` loaded all ten Fashion-MNIST classes against its five ("the dataset's classes ... differ
    from the run's"). The references: the classes the experiment pretrains on, and evaluate's output."""
    out = tmp_path / "transfer"
    run_experiment("transfer", budget="smoke", out=out, device="cpu", log=lambda s: None)
    source = out / "source"
    meta = json.loads((source / "model.json").read_text())
    assert meta["class_indices"] == transfer.SOURCE_CLASSES  # what a run on some classes records
    assert meta["train_config"]["epochs"] == transfer.BUDGET["smoke"]["pre_epochs"]
    assert meta["training"]["num_train"] == transfer.BUDGET["smoke"]["pre_subset"]
    assert meta["params"]["trainable"] > 0 and (source / "metrics.jsonl").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(source), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert list(evaluated["per_class_accuracy"]) == meta["classes"] and len(meta["classes"]) == 5
    page = report_html([source], device="cpu", mistakes=0)
    assert "No evaluation on the test set" not in page
    assert f"Accuracy <b>{100 * evaluated['accuracy']:.2f}%</b> on {evaluated['n']} test images" in page
    # the smoke budget's one epoch, in the singular
    results = json.loads((out / "results.json").read_text())
    assert "1 epochs" not in json.dumps(results["setup"]) + json.dumps(results["findings"])
    assert ", 1 epoch, SGD" in results["setup"]["source task"] and "after 1 epoch," in results["findings"][0]
