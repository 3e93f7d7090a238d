"""curves.png says which loss each curve is: with label smoothing the training loss is the
smoothed objective, not comparable with the test loss (plain cross-entropy)."""

from __future__ import annotations


import matplotlib.pyplot as plt
import pytest

from resnet_lab.train.plots import curves_figure, plot_curves

PLAIN = [
    {"epoch": 1, "train_loss": 0.9, "train_acc": 0.70, "test_loss": 0.6, "test_acc": 0.78},
    {"epoch": 2, "train_loss": 0.5, "train_acc": 0.82, "test_loss": 0.4, "test_acc": 0.85},
]
# As the trainer records a label-smoothed run: train_loss the smoothed objective (above the test
# loss), train_loss_plain the plain cross-entropy on the same batches.
SMOOTHED = [dict(h, train_loss=h["train_loss"] + 0.3, train_loss_plain=h["train_loss"]) for h in PLAIN]


def _loss_curves(fig) -> dict[str, list[float]]:
    """Legend label -> plotted values of the loss panel, read back from matplotlib."""
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert legend == list(lines)  # every curve is in the legend, in drawing order
    return lines


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


def test_curves_without_label_smoothing_label_plain_train_and_test_loss(close_figures):
    curves = _loss_curves(curves_figure(PLAIN))
    assert curves == {"train loss": [0.9, 0.5], "test loss": [0.6, 0.4]}


def test_curves_with_label_smoothing_name_the_objective_and_plot_the_plain_train_loss(close_figures):
    curves = _loss_curves(curves_figure(SMOOTHED, label_smoothing=0.1))
    assert curves == {
        "train loss (label smoothing 0.1, the objective)": [1.2, 0.8],
        "train loss (plain cross-entropy)": [0.9, 0.5],
        "test loss (plain cross-entropy)": [0.6, 0.4],
    }


def test_curves_with_label_smoothing_but_no_plain_record_still_label_both_losses(close_figures):
    history = [{k: v for k, v in h.items() if k != "train_loss_plain"} for h in SMOOTHED]
    labels = list(_loss_curves(curves_figure(history, label_smoothing=0.05)))
    assert labels == ["train loss (label smoothing 0.05, the objective)", "test loss (plain cross-entropy)"]


def test_curves_with_a_plain_record_but_unknown_smoothing_do_not_call_the_objective_plain(close_figures):
    labels = list(_loss_curves(curves_figure(SMOOTHED)))
    assert labels[0] == "train loss (with label smoothing, the objective)"


def test_epochs_missing_a_value_are_skipped_and_the_others_keep_their_epoch(close_figures):
    """A run evaluated every few epochs (--eval-every) lacks test figures in between: the test curve
    goes through the evaluated epochs at their own x, never shifted onto the skipped ones."""
    third = {"epoch": 3, "train_loss": 0.4, "train_acc": 0.88, "test_loss": 0.35, "test_acc": 0.87}
    history = [PLAIN[0], {k: v for k, v in PLAIN[1].items() if not k.startswith("test")}, third]
    fig = curves_figure(history)
    acc = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in fig.axes[1].get_lines()}
    assert acc["train"] == ([1, 2, 3], pytest.approx([70.0, 82.0, 88.0]))
    assert acc["test"] == ([1, 3], pytest.approx([78.0, 87.0]))
    loss = {line.get_label(): list(line.get_xdata()) for line in fig.axes[0].get_lines()}
    assert loss["test loss"] == [1, 3] and loss["train loss"] == [1, 2, 3]


def test_plot_curves_writes_a_png_file(tmp_path):
    path = plot_curves(SMOOTHED, tmp_path / "curves.png", title="tiny", label_smoothing=0.1)
    assert path == tmp_path / "curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.get_fignums()  # the figure was closed after saving


def test_curves_png_is_ticked_at_whole_epochs(close_figures):
    """A 2-epoch run's curves.png was ticked at 1.0, 1.2, ... 2.0; an epoch is a count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = curves_figure(PLAIN)
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == [1, 2], ticks
