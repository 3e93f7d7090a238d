"""``resnet_lab.train`` is both the training package and the train() function the top level exports."""

import inspect
import subprocess
import sys

import torch

import resnet_lab
import resnet_lab.train.lr_finder as lr_finder_by_path
from resnet_lab.train import TrainConfig
from resnet_lab.train.loop import train as loop_train

from tinytrain import TinyNet, make_bundle


def test_submodules_import_by_dotted_path_in_a_fresh_interpreter():
    """The form that failed while the top level bound ``train`` to the function: the attribute lookup
    ``resnet_lab.train.lr_finder`` then hit the function ("'function' object has no attribute")."""
    code = ("import resnet_lab\n"
            "import resnet_lab.train.lr_finder as m\n"
            "import resnet_lab.train.checkpoint as c\n"
            "print(m.__name__, c.__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["resnet_lab.train.lr_finder", "resnet_lab.train.checkpoint"]
    assert lr_finder_by_path is sys.modules["resnet_lab.train.lr_finder"]


def test_the_top_level_train_is_the_package_and_calls_the_loop():
    assert resnet_lab.train is sys.modules["resnet_lab.train"]
    assert inspect.signature(resnet_lab.train) == inspect.signature(loop_train)
    assert "train" in resnet_lab.__all__

    def run(fit):
        data = make_bundle()
        torch.manual_seed(0)
        model = TinyNet()
        history = fit(model, data, TrainConfig(epochs=2, lr=0.05, progress=False, device="cpu"))
        return model.state_dict(), history

    via_package, history_package = run(resnet_lab.train)
    via_loop, history_loop = run(loop_train)
    assert [e["train_loss"] for e in history_package.epochs] == [e["train_loss"] for e in history_loop.epochs]
    for name, value in via_loop.items():
        assert torch.equal(via_package[name], value), name
    # the same call without training at all leaves different weights: the comparison can fail
    torch.manual_seed(0)
    untrained = TinyNet().state_dict()
    assert any(not torch.equal(untrained[name], value) for name, value in via_loop.items())
