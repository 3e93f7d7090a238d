"""Activation statistics: per-layer mean, standard deviation and near-linear share of the inputs of
each nonlinearity, recorded during training.

The tool behind the claims of Ioffe & Szegedy 2015 ("Batch Normalization", sec. 1-3 and fig. 1b-c):
batch normalization keeps the distribution of each nonlinearity's input fixed (mean 0, variance 1
before gamma/beta), where without it the distribution drifts as the layers below change; and
normalized inputs sit in a sigmoid's near-linear range (|x| < 1) unless gamma/beta move them out.

What is recorded: by default the *input of every activation module* (ReLU, sigmoid, tanh...), the
pre-activation the claim is about. With BN that is the BN output (after gamma/beta), without it the
conv/linear output (plus the shortcut in a residual block), so the same sites compare a network with
and without normalization. The outputs of conv/linear layers would not: under BN they are the
un-normalized values BN is about to fix. Activations called as functions (``F.relu``) have no module
to hook; record the output of the layer before them instead (``where="output"``, ``layer_types=``).
A module called several times in one forward pass (torchvision's ``BasicBlock.relu``) is one site
per call: ``layer1.0.relu`` and ``layer1.0.relu#2``.

Only the forward passes of training steps are recorded (training mode with autograd on): evaluation
passes, ``no_grad`` passes (precise-BN statistics) and the re-computations of gradient checkpointing
(they run after the model's forward has returned) are skipped. Statistics are over every element of
the tensor (batch, channels, positions), in float64, with the population variance BN uses.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..figures import check_png_path, new_figure, save_png
from ..train.sam import in_ascent

__all__ = ["ACTIVATION_TYPES", "STATS", "ActivationStatsRecorder", "LayerStats", "plot_activation_stats"]

# The nonlinearities whose inputs are recorded by default.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Softplus,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish,
)
STATS = ("mean", "std", "within")  # the three values recorded per site and step


@dataclass
class LayerStats:
    """One site's statistics at one recorded step.

    Attributes:
        name: the module name (``#k`` for its k-th call in a forward pass).
        mean: mean over all elements.
        std: population standard deviation over all elements.
        within: share of elements with ``|x| < linear_range``.
    """

    name: str
    mean: float
    std: float
    within: float


class ActivationStatsRecorder:
    """Record per-layer statistics of the pre-activations every ``every`` training steps.

    A context manager: the hooks are on inside the ``with`` block (or between :meth:`attach` and
    :meth:`close`). Each training forward pass of ``model`` is one step; steps 0, ``every``,
    ``2 * every``... are recorded (step 0 is the untrained network).

    Example::

        with ActivationStatsRecorder(model, every=10) as rec:
            train(model, data, config)
        print(rec.drift())                      # how far from (0, 1) at the last record
        plot_activation_stats({"BN": rec}, "stats.png")

    Args:
        model: any network; its forward passes are watched through hooks (the default sites are
            activation modules: for a net that calls ``F.relu``, pass ``where="output"`` and
            ``layer_types=(nn.BatchNorm2d,)``).
        every: record one training step in ``every``.
        layer_types: module classes whose input (or output) is recorded.
        where: ``"input"`` (the pre-activation of an activation module; the default) or
            ``"output"`` (e.g. of conv/linear layers).
        linear_range: ``within`` counts the elements with ``|x|`` below this (1: a sigmoid's
            near-linear range, where its slope stays above 78% of its slope at 0).
    """

    def __init__(self, model: nn.Module, *, every: int = 1, layer_types: tuple[type[nn.Module], ...] = ACTIVATION_TYPES,
                 where: str = "input", linear_range: float = 1.0) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {every!r}")
        if where not in ("input", "output"):
            raise ValueError(f"where must be 'input' or 'output', got {where!r}")
        if not linear_range > 0:
            raise ValueError(f"linear_range must be > 0, got {linear_range!r}")
        self.model, self.every, self.layer_types = model, every, layer_types
        self.where, self.linear_range = where, float(linear_range)
        self.layers: list[str] = []  # sites in the order of the first forward pass that reached them
        self.steps: list[int] = []
        self.records: list[dict[str, tuple[float, float, float]]] = []  # per step: {site: (mean, std, within)}
        self._forwards = 0  # training forward passes seen
        self._active = False  # inside a training forward pass that is being recorded
        self._step = 0  # the step of the pass being recorded
        self._calls: dict[str, int] = {}
        self._pending: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    # --- hooks ---------------------------------------------------------------------------------

    def attach(self) -> "ActivationStatsRecorder":
        """Register the hooks (idempotent); :meth:`close` removes them."""
        if self._handles:
            return self
        self._handles.append(self.model.register_forward_pre_hook(self._begin))
        self._handles.append(self.model.register_forward_hook(self._end))
        for name, m in self.model.named_modules():
            if isinstance(m, self.layer_types):
                if self.where == "input":  # the input given by keyword (act(input=h)) as well
                    hook = m.register_forward_pre_hook(
                        lambda mod, args, kwargs, name=name: self._site(name, args[0] if args else
                                                                        next(iter(kwargs.values()), None)),
                        with_kwargs=True)
                else:
                    hook = m.register_forward_hook(lambda mod, args, out, name=name: self._site(name, out))
                self._handles.append(hook)
        return self

    def close(self) -> None:
        """Remove the hooks; the records stay."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._active = False

    def __enter__(self) -> "ActivationStatsRecorder":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _begin(self, module: nn.Module, args: tuple) -> None:
        self._active = False
        if not (module.training and torch.is_grad_enabled()) or in_ascent():
            return  # evaluation, a no-grad pass in training mode or SAM's probe pass: not a training step
        step, self._forwards = self._forwards, self._forwards + 1
        if step % self.every == 0:
            # The step goes into `steps` with its record, at the end of the pass: a pass that
            # raises (out of memory, Ctrl-C) adds neither, so steps[i] stays records[i]'s step.
            self._active, self._calls, self._pending, self._step = True, {}, {}, step

    def _site(self, name: str, x: Any) -> None:
        if not self._active or not isinstance(x, Tensor) or x.numel() == 0:
            return
        calls = self._calls[name] = self._calls.get(name, 0) + 1
        site = name if calls == 1 else f"{name}#{calls}"
        # Statistics now: an in-place activation overwrites its input right after this hook.
        with torch.no_grad():
            v = x.detach().to(torch.float32 if x.device.type == "mps" else torch.float64)  # MPS has no float64
            std, mean = torch.std_mean(v, correction=0)  # population variance, as BN normalizes with
            within = (v.abs() < self.linear_range).to(v.dtype).mean()
            self._pending[site] = torch.stack([mean, std, within])

    def _end(self, module: nn.Module, args: tuple, out: Any) -> None:
        if not self._active:
            return
        self._active = False
        names = list(self._pending)
        # One host transfer per recorded step (not one per site): cheap on a GPU.
        values = torch.stack(list(self._pending.values())).cpu().tolist() if names else []
        self.records.append({n: tuple(v) for n, v in zip(names, values)})
        self.steps.append(self._step)
        self.layers += [n for n in names if n not in self.layers]
        self._pending = {}

    # --- reading the records -------------------------------------------------------------------

    def _require_records(self) -> None:
        if not self.layers:
            kinds = ", ".join(t.__name__ for t in self.layer_types)
            raise ValueError(
                f"no {self.where} of a {kinds} module was recorded in {type(self.model).__name__}: record inside "
                "`with recorder:` during training steps (training mode, autograd on); for activations called as "
                "functions (F.relu) pass where='output' and layer_types= the layers before them"
            )

    def matrix(self, stat: str = "mean") -> Tensor:
        """One statistic as a float64 ``(layers, records)`` tensor (NaN where a site did not run).

        Args:
            stat: ``mean``, ``std`` or ``within``.
        """
        if stat not in STATS:
            raise ValueError(f"stat must be one of {', '.join(STATS)}, got {stat!r}")
        self._require_records()
        k = STATS.index(stat)
        return torch.tensor([[r[n][k] if n in r else math.nan for r in self.records] for n in self.layers],
                            dtype=torch.float64).reshape(len(self.layers), len(self.records))

    def stats(self, index: int = -1) -> list[LayerStats]:
        """Every site's statistics at one record (``index`` into the records; -1: the last)."""
        self._require_records()
        if isinstance(index, bool) or not isinstance(index, int) or not -len(self.records) <= index < len(self.records):
            raise IndexError(f"index {index!r} is outside the {len(self.records)} record(s) (steps {self.steps}): use "
                             f"0..{len(self.records) - 1}, or -1 for the last")
        record = self.records[index]
        return [LayerStats(n, *record[n]) for n in self.layers if n in record]

    def drift(self, index: int = -1) -> dict[str, float]:
        """How far the pre-activations are from mean 0 and standard deviation 1 at one record.

        Returns ``{"mean": median over layers of |mean|, "log_std": median over layers of
        |ln std| (0 for std 1; ln 2 = 0.69 for a factor 2 either way), "within": median share in
        the linear range}``. The median, so one odd layer (the stem, the last block) does not
        decide it.

        Args:
            index: which record (-1: the last).
        """
        rows = self.stats(index)
        return {
            "mean": _median([abs(r.mean) for r in rows]),
            "log_std": _median([abs(math.log(r.std)) if r.std != 0 else math.inf for r in rows]),  # log(NaN) is NaN
            "within": _median([r.within for r in rows]),
        }

    def drift_history(self) -> dict[str, list[float]]:
        """:meth:`drift` at every record: ``{"mean": [...], "log_std": [...], "within": [...]}``,
        one value per entry of :attr:`steps`."""
        drifts = [self.drift(i) for i in range(len(self.records))]
        return {k: [d[k] for d in drifts] for k in ("mean", "log_std", "within")}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the sites, the recorded steps and one ``(layers, records)`` list per statistic."""
        out: dict[str, Any] = {"layers": list(self.layers), "steps": list(self.steps), "every": self.every,
                               "where": self.where, "linear_range": self.linear_range}
        if self.layers:
            out.update({stat: self.matrix(stat).tolist() for stat in STATS})
        return out


def _median(values: list[float]) -> float:
    """The median; NaN when any value is NaN (a diverged step), which sorting would hide."""
    return math.nan if any(math.isnan(v) for v in values) else statistics.median(values)


def plot_activation_stats(recorders: Mapping[str, ActivationStatsRecorder], path: str | Path, *,
                          title: str = "Pre-activation statistics") -> Path:
    """Heatmaps of mean and standard deviation (layers by steps), one row per recorder.

    Colours are shared across rows so networks compare at a glance: the mean on a diverging scale
    centred on 0, the standard deviation on a log scale centred on 1 (white = the BN target).

    Args:
        recorders: ``{label: recorder}`` (e.g. ``{"BN": ..., "no norm": ...}``).
        path: the PNG to write (a path that holds a run's file, or a file resnet-lab did not
            write, is refused).
        title: the figure title.
    """
    if not recorders:
        raise ValueError("plot_activation_stats needs at least one recorder")
    path = check_png_path(path)  # a run's file or one resnet-lab did not write is refused
    means = {k: r.matrix("mean") for k, r in recorders.items()}
    stds = {k: r.matrix("std") for k, r in recorders.items()}
    m_lim = max(float(m.abs().nan_to_num(0).max()) for m in means.values()) or 1.0
    finite = [s[torch.isfinite(s) & (s > 0)] for s in stds.values()]
    s_lim = max([1.0001] + [float(torch.maximum(s.max(), 1 / s.min())) for s in finite if s.numel()])
    rows = len(recorders)
    fig, axes = new_figure(rows, 2, figsize=(11, 1.0 + 2.4 * rows))
    axes = axes.reshape(rows, 2)
    from matplotlib.colors import LogNorm  # deferred: `import resnet_lab` does not load matplotlib
    from matplotlib.ticker import MaxNLocator  # deferred, as LogNorm

    scales = (dict(cmap="RdBu_r", vmin=-m_lim, vmax=m_lim), dict(cmap="RdBu_r", norm=LogNorm(1 / s_lim, s_lim)))
    images = [None, None]
    for i, (label, rec) in enumerate(recorders.items()):
        steps, half = rec.steps or [0], rec.every / 2  # one column per record, every `every` steps
        extent = (steps[0] - half, steps[-1] + half, len(rec.layers) - 0.5, -0.5)
        for j, (mat, name) in enumerate(((means[label], "mean"), (stds[label], "std (log scale)"))):
            ax = axes[i, j]
            images[j] = ax.imshow(mat.numpy(), aspect="auto", interpolation="nearest", extent=extent, **scales[j])
            ax.set_title(f"{label}: {name}")
            for axis in (ax.xaxis, ax.yaxis):  # steps and layers are whole numbers
                axis.set_major_locator(MaxNLocator(integer=True))
        axes[i, 0].set_ylabel("layer (input at top)")
    fig.suptitle(title)
    # No tight_layout: it would lay out every tick label a second time (save_png's tight bounding
    # box trims the margins anyway), doubling the cost of the plot. Spacing first, colour bars after.
    fig.subplots_adjust(hspace=0.4, wspace=0.3, top=1 - 0.6 / fig.get_figheight())
    for j in range(2):  # one colour bar per column: the scales are shared
        axes[-1, j].set_xlabel("training step")
        fig.colorbar(images[j], ax=list(axes[:, j]), fraction=0.05)
    return save_png(fig, path, dpi=80)
