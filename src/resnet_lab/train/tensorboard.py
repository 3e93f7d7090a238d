"""TensorBoard logs of a training run, through ``torch.utils.tensorboard`` (the optional extra
``pip install 'resnet-lab[tensorboard]'``).

With ``TrainConfig.tensorboard`` (``--tensorboard``) the main process writes, under ``RUN/tensorboard/``:

- per epoch (step = epoch number, 1-based): the scalars of the epoch's ``metrics.jsonl`` record
  (:data:`SCALAR_TAGS`) and a histogram of each batch-norm layer's running mean and running
  variance over its channels;
- at the end of every session, in ``RUN/tensorboard/hparams/``: the recipe and data of the run
  (``add_hparams``) with its final and best figures so far, replacing the previous session's.

A resumed session appends to the same run: its event file starts with a purge at the first epoch
it trains, so TensorBoard drops whatever an earlier session wrote past the checkpoint it resumed
from, and reading the run back gives each epoch once.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from ..nn import BatchNormBase

__all__ = ["INSTALL_HINT", "LOG_MARK", "SCALAR_TAGS", "TensorBoardLog", "TensorBoardMissing", "open_tensorboard",
           "require_tensorboard", "run_hparams"]

INSTALL_HINT = "pip install 'resnet-lab[tensorboard]'"

# metrics.jsonl key -> TensorBoard tag; a shared prefix puts train and test on one card.
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_loss_plain": "loss/train_plain",  # only with label smoothing: comparable with loss/test
    "train_acc": "accuracy/train",
    "test_acc": "accuracy/test",
    "lr": "lr",
    "images_per_second": "speed/images_per_second",
}


class TensorBoardMissing(ModuleNotFoundError, RuntimeError):
    """The ``tensorboard`` package is not installed. An ImportError for library callers, and a
    RuntimeError so that the CLI prints it as its one-line ``error:``."""


def require_tensorboard() -> None:
    """Raise :class:`TensorBoardMissing`, saying how to install it, when ``tensorboard`` is absent."""
    try:
        importlib.import_module("tensorboard")  # optional extra: pip install resnet-lab[tensorboard]
    except ImportError as e:
        raise TensorBoardMissing(f"--tensorboard (TrainConfig.tensorboard) needs the tensorboard package: "
                                 f"{INSTALL_HINT}", name="tensorboard") from e
    try:  # what the writer imports: a broken or too old install fails here, not after the run began
        importlib.import_module("torch.utils.tensorboard")  # optional: loads the extra
    except ImportError as e:
        raise TensorBoardMissing(f"--tensorboard (TrainConfig.tensorboard): the installed tensorboard package does "
                                 f"not load ({e}); reinstall it: {INSTALL_HINT}", name="tensorboard") from e


def run_hparams(facts: dict[str, dict[str, Any]], model_name: str) -> dict[str, Any]:
    """The hyper-parameters of a run for ``add_hparams``: the model, the recipe and the data.

    Args:
        facts: :func:`resnet_lab.train.checkpoint.run_facts` (``recipe`` and ``data``).
        model_name: the architecture's registry name.
    """
    data = facts["data"]
    hparams = {"model": model_name, **facts["recipe"],
               "dataset": data.get("dataset"), "num_classes": len(data.get("classes") or ()),
               "input_size": "x".join(map(str, data.get("input_size") or ())),
               **{k: data.get(k) for k in ("global_batch_size", "num_train", "augment", "random_erasing")}}
    # TensorBoard takes numbers, strings and booleans; None (unset) is left out by torch itself.
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list, tuple)) else v
            for k, v in hparams.items()}


def _wait_for_a_later_second(log_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second its
    writer opened (then host, process id and an unpadded counter): open this session's file in a
    later second than the last one's, so it is read after them and its purge applies to them. A
    gap of more than a second (another machine's clock) is left alone."""
    seconds = [int(part[3]) for part in (p.name.split(".") for p in log_dir.glob("events.out.tfevents.*"))
               if len(part) > 3 and part[3].isdigit()]
    wait = max(seconds, default=0) + 1 - time.time()
    if 0 < wait <= 1:
        time.sleep(wait)


#: The file that says a ``tensorboard/`` folder is resnet-lab's (TensorBoard reads only event files).
LOG_MARK = ".resnet-lab"


def _check_log_dir(log_dir: Path, resuming: bool) -> None:
    """Refuse a ``tensorboard`` path that is not resnet-lab's to write in: a file, or a folder
    with files that a run of this tool did not put there (it would mix them into the run's logs,
    and a new run clears its old event files). A resumed run appends and deletes nothing, so
    there the logs of a run from before the mark (event files and ``hparams/`` only) are accepted."""
    if log_dir.exists() and not log_dir.is_dir():
        raise FileExistsError(f"{log_dir} is a file, and --tensorboard writes a folder there: move the file, or "
                              "choose another --out")
    if not log_dir.is_dir() or (log_dir / LOG_MARK).exists():
        return
    logs_of_an_older_run = resuming and all(p.name.startswith("events.out.tfevents.") or p.name == "hparams"
                                            for p in log_dir.iterdir())
    if any(log_dir.iterdir()) and not logs_of_an_older_run:
        raise FileExistsError(f"{log_dir} holds files that resnet-lab did not write: move them, or choose another "
                              "--out")


class TensorBoardLog:
    """Writes one training run's TensorBoard logs (only ever created on the main process).

    Args:
        run_dir: the run directory; the logs go to ``run_dir/tensorboard``.
        model: the (unwrapped) model whose batch-norm running statistics are drawn each epoch.
        hparams: :func:`run_hparams`.
        start_epoch: completed epochs of the run (0 for a new run); a new run starts the log
            afresh, a resumed one appends and purges every epoch after ``start_epoch``.
    """

    def __init__(self, run_dir: str | Path, model: nn.Module, hparams: dict[str, Any], *, start_epoch: int) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter  # optional extra: pip install resnet-lab[tensorboard]

        self.log_dir = Path(run_dir) / "tensorboard"
        _check_log_dir(self.log_dir, resuming=start_epoch > 0)
        if start_epoch == 0:  # a new run (or one that never finished an epoch): nothing of ours to keep
            for old in self.log_dir.glob("events.out.tfevents.*"):
                old.unlink()
            shutil.rmtree(self.log_dir / "hparams", ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / LOG_MARK).touch()
        _wait_for_a_later_second(self.log_dir)
        self.model, self.hparams = model, hparams
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=start_epoch + 1)

    def log_epoch(self, record: dict[str, Any]) -> None:
        """The epoch's scalars and batch-norm histograms, at step ``record["epoch"]``, flushed to disk."""
        step = record["epoch"]
        for key, tag in SCALAR_TAGS.items():
            if key in record:
                self.writer.add_scalar(tag, record[key], step)
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, BatchNormBase)) and module.running_mean is not None:
                self.writer.add_histogram(f"bn_running_mean/{name}", module.running_mean.detach().float().cpu(), step)
                self.writer.add_histogram(f"bn_running_var/{name}", module.running_var.detach().float().cpu(), step)
        self.writer.flush()

    def close(self, history) -> None:
        """Write the hyper-parameters with the run's figures so far and close the log.

        Args:
            history: the run's :class:`~resnet_lab.train.loop.History` (``last``, ``best_acc``, ``best_epoch``).
        """
        last = history.last
        if last:
            # An interrupted run's last epoch may be one that --eval-every skipped: its test figures are absent.
            metrics = {**{f"hparam/{k}": last[k] for k in ("test_acc", "test_loss") if k in last},
                       "hparam/train_loss": last["train_loss"], "hparam/best_test_acc": history.best_acc,
                       "hparam/best_epoch": history.best_epoch, "hparam/epochs": last["epoch"]}
            # One hparams record per run: a later session's replaces this one (add_hparams appends).
            shutil.rmtree(self.log_dir / "hparams", ignore_errors=True)
            self.writer.add_hparams(self.hparams, metrics, run_name="hparams", global_step=last["epoch"])
        self.writer.close()


class _NoLog:
    """What :func:`open_tensorboard` returns when nothing is written: the same calls, doing nothing."""

    def log_epoch(self, record: dict[str, Any]) -> None:
        pass

    def close(self, history) -> None:
        pass


def open_tensorboard(config, model: nn.Module, facts: dict[str, dict[str, Any]], *, start_epoch: int,
                     is_main: bool) -> TensorBoardLog | _NoLog:
    """The run's TensorBoard log when ``config.tensorboard`` is on and this is the main process
    (rank 0); otherwise a log that writes nothing.

    Args:
        config: the run's :class:`~resnet_lab.train.config.TrainConfig` (``tensorboard``, ``out``).
        model: the unwrapped model.
        facts: :func:`resnet_lab.train.checkpoint.run_facts`.
        start_epoch: completed epochs (where the run starts or resumes).
        is_main: whether this process writes.
    """
    if not (config.tensorboard and is_main):
        return _NoLog()
    name = (getattr(model, "model_config", None) or {}).get("name", type(model).__name__)
    return TensorBoardLog(config.out, model, run_hparams(facts, name), start_epoch=start_epoch)
