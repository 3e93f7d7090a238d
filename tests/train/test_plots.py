"""curves.png says which loss each curve is: with label smoothing the training loss is the
smoothed objective, not comparable with the test loss (plain cross-entropy)."""

from __future__ import annotations


import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from resnet_lab.train.plots import curves_figure, plot_confusion, plot_curves

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


def test_a_plain_train_loss_in_some_records_only_is_still_drawn_and_named(close_figures):
    # a run resumed from an older one: its first epochs have no train_loss_plain, its later ones do
    history = [{k: v for k, v in SMOOTHED[0].items() if k != "train_loss_plain"}, SMOOTHED[1]]
    curves = _loss_curves(curves_figure(history, label_smoothing=0.1))
    assert curves["train loss (plain cross-entropy)"] == [SMOOTHED[1]["train_loss_plain"]]  # epoch 2's alone


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


def _best_marker(ax) -> tuple[list[float], str]:
    """The best-accuracy line of the accuracy panel (its y values) and its label text, read back
    from matplotlib; ([], "") when none is drawn. The curves are the lines in the legend."""
    curves = {t.get_text() for t in ax.get_legend().get_texts()}
    marks = [list(line.get_ydata()) for line in ax.get_lines() if line.get_label() not in curves]
    texts = [t.get_text() for t in ax.texts]
    assert len(marks) <= 1 and len(texts) == len(marks), (marks, texts)
    return (marks[0], texts[0]) if marks else ([], "")


def test_the_best_marker_is_the_highest_test_accuracy_of_any_epoch_zero_and_null_records_included(close_figures):
    """The dotted line and its label mark the best test accuracy (in %), wherever it was reached; an
    epoch evaluated at 0% is on the test curve (a zero is a measurement), a record whose test_acc is
    null (read_metrics accepts it: a record without the evaluation) is not, and raised no TypeError.
    The reference: the maximum of the records' test_acc taken here by hand."""
    history = [
        {"epoch": 1, "train_loss": 2.3, "train_acc": 0.10, "test_loss": 2.4, "test_acc": 0.0},
        {"epoch": 2, "train_loss": 1.9, "train_acc": 0.30, "test_loss": 1.8, "test_acc": 0.375},
        {"epoch": 3, "train_loss": 1.7, "train_acc": 0.40, "test_loss": None, "test_acc": None},
        {"epoch": 4, "train_loss": 1.5, "train_acc": 0.50, "test_loss": 1.9, "test_acc": 0.25},
    ]
    fig = curves_figure(history)
    ax_acc = fig.axes[1]
    acc = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax_acc.get_lines()}
    assert acc["test"] == ([1, 2, 4], pytest.approx([0.0, 37.5, 25.0]))
    loss = {line.get_label(): list(line.get_xdata()) for line in fig.axes[0].get_lines()}
    assert loss["test loss"] == [1, 2, 4]
    best = max(h["test_acc"] for h in history if h["test_acc"] is not None)  # 0.375, epoch 2 (not the last)
    line, text = _best_marker(ax_acc)
    assert line == pytest.approx([100 * best] * 2) and text.strip() == "best 37.50%"


def test_a_run_never_evaluated_marks_no_best_accuracy(close_figures):
    """Without any evaluated epoch there is no best test accuracy: the panel drew "best 0.00%"."""
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.2 * e} for e in (1, 2)]
    assert _best_marker(curves_figure(history).axes[1]) == ([], "")


def _drawn(monkeypatch, module) -> list:
    """The figures ``module`` hands to save_png from now on (they are still written)."""
    import resnet_lab.train.plots as plots

    real, drawn = plots.save_png, []
    monkeypatch.setattr(module, "save_png", lambda fig, path, **kw: drawn.append(fig) or real(fig, path, **kw))
    return drawn


def test_plot_curves_draws_the_title_and_names_the_label_smoothing_it_is_given(tmp_path, monkeypatch):
    """curves.png is what the trainer writes: plot_curves passed neither the smoothing (the legend then
    called the objective a plain "train loss") nor the title on. The reference: the documented legend
    wording (docs/REPORT.md: label smoothing named in the legend) and the title given."""
    import resnet_lab.train.plots as plots

    drawn = _drawn(monkeypatch, plots)
    plot_curves(SMOOTHED, tmp_path / "curves.png", title="resnet8 on fake", label_smoothing=0.1)
    (fig,) = drawn
    assert fig._suptitle is not None and fig._suptitle.get_text() == "resnet8 on fake"
    assert list(_loss_curves(fig)) == ["train loss (label smoothing 0.1, the objective)",
                                       "train loss (plain cross-entropy)", "test loss (plain cross-entropy)"]


def test_confusion_plot_shades_each_row_by_its_share_and_writes_the_counts_in_place(tmp_path, monkeypatch):
    """plot_confusion draws rows = true class (x: predicted, y: true), each cell shaded by its share
    of the row and labelled with its count, in white on the dark cells. The reference: a 3-class
    matrix whose rows and columns sum differently, its row shares computed by hand."""
    import resnet_lab.train.plots as plots

    drawn = _drawn(monkeypatch, plots)
    cm = [[3, 1, 0],  # true class a: 3 right, 1 taken for b
          [0, 0, 2],  # true b: both taken for c
          [4, 0, 4]]  # true c
    shares = [[0.75, 0.25, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.5]]
    plot_confusion(cm, ["a", "b", "c"], tmp_path / "confusion.png")
    (fig,) = drawn
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), shares)  # row i drawn at y = i
    counts = {tuple(round(v) for v in t.get_position()): t for t in ax.texts}  # (x = predicted, y = true)
    assert {xy: t.get_text() for xy, t in counts.items()} == {(j, i): str(cm[i][j]) for i in range(3) for j in range(3)}
    # legible: white on the darkest cell (a share of 1), black on the lightest (0)
    assert mcolors.to_hex(counts[(2, 1)].get_color()) == "#ffffff"
    assert mcolors.to_hex(counts[(1, 1)].get_color()) == "#000000"
    assert ax.get_title() == "confusion matrix (test)"  # the title when none is given


def test_confusion_plot_draws_the_title_it_is_given(tmp_path, monkeypatch):
    import resnet_lab.train.plots as plots

    drawn = _drawn(monkeypatch, plots)
    plot_confusion(np.eye(2, dtype=np.int64), ["a", "b"], tmp_path / "confusion.png", title="resnet20, epoch 3")
    assert drawn[0].axes[0].get_title() == "resnet20, epoch 3"
