"""`resnet-lab report`: the page's facts against independent readings of the run.

The references are the run's own files read with ``json`` (metrics.jsonl, model.json), the
parameter count of the rebuilt model, and the test set classified here with plain torch (softmax,
argmax, counts). The page is read with ``html.parser``, and once more as a real browser builds it:
headless Chromium (Debian's ``chromium``) dumps its DOM and takes a screenshot; that test is
skipped where no browser is installed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab.analysis import report_html, write_report
from resnet_lab.cli import main
from resnet_lab.data import load_data
from resnet_lab.runs import load_model, read_metrics
from support import write_fmnist, write_image_folder

# resnet8 on 32 fake images of 8 px, batch 16: two epochs of two steps, evaluation on 128 images; no plots
# (the report draws the curves from metrics.jsonl; the runs fixture keeps them, for the figures that stand in).
TINY = ["--model", "resnet8", "--dataset", "fake", "--image-size", "8", "--subset", "32", "--epochs", "2",
        "--batch-size", "16", "--no-progress", "--no-plots", "--device", "cpu"]


def tiny(**values: str) -> list[str]:
    """TINY with some of its flags' values replaced (`tiny(epochs="3")`): a flag is given once."""
    args = list(TINY)
    for name, value in values.items():
        args[args.index(f"--{name.replace('_', '-')}") + 1] = value
    return args


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """What a reader sees: the title, the images, the tables (cells with their data attributes)
    and the notes. Used on the written file and on the browser's DOM alike."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.title, self.images, self.tables, self.notes, self.links = "", [], [], [], []
        self._in_title = self._in_note = False
        self._cell: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        elif tag == "img":
            self.images.append(a)
        elif tag == "table":
            self.tables.append({"name": a.get("data-table"), "run": a.get("data-run"), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag == "td":
            self._cell = {"key": a.get("data-key"), "value": a.get("data-value"), "text": ""}
            self.tables[-1]["rows"][-1].append(self._cell)
        elif tag == "p" and "note" in (a.get("class") or ""):
            self._in_note = True
            self.notes.append("")
        if tag in ("link", "script", "iframe", "source") or "href" in a:
            self.links.append((tag, a))

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag == "td":
            self._cell = None
        elif tag == "p":
            self._in_note = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_note:
            self.notes[-1] += data

    def table(self, name: str, run: str | None = None) -> list[dict]:
        """The rows of table ``name`` (of ``run``) as {data-key: cell}, the header row left out."""
        (t,) = [t for t in self.tables if t["name"] == name and (run is None or t["run"] == run)]
        return [{c["key"]: c for c in row} for row in t["rows"] if row]

    def figures(self) -> list[str]:
        return [img.get("data-figure") for img in self.images]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def png(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    img = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):])))
    assert img.format == "PNG"
    img.load()
    return img


def make_folder(root: Path) -> Path:
    return write_image_folder(root, ("ants", "bees"))


def copy_run(run: Path, to: Path, *, meta: dict | None = None, elapsed: list[float] | None = None,
             sessions: list[int | None] | None = None) -> Path:
    """A copy of ``run`` with model.json entries added and metrics.jsonl's elapsed_seconds (and
    session numbers; None drops the field, as in records written before it existed) replaced."""
    shutil.copytree(run, to)
    (to / "model.json").write_text(json.dumps({**json.loads((run / "model.json").read_text()), **(meta or {})}))
    if elapsed is not None:
        records = [{**r, "elapsed_seconds": e} for r, e in zip(metrics(run), elapsed, strict=True)]
        for r, n in zip(records, sessions or [], strict=False):
            r.pop("session", None)
            if n is not None:
                r["session"] = n
        (to / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return to


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two finished tiny runs: resnet8 with batch norm and without normalization."""
    root = tmp_path_factory.mktemp("runs")
    drawn = [a for a in TINY if a != "--no-plots"]  # the report shows a run's own curves.png where it has one
    assert main(["train", *drawn, "--out", str(root / "bn")]) == 0
    assert main(["train", *drawn, "--norm", "none", "--seed", "1", "--out", str(root / "plain")]) == 0
    return root / "bn", root / "plain"


@pytest.fixture(scope="module")
def one_page(runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(runs[0]), "--out", str(out), "--device", "cpu"]) == 0
    return out, out.read_text(encoding="utf-8")


def reference_evaluation(run: Path, seed: int = 0):
    """The run's test set classified here: probabilities of the whole set in one batch. ``seed``:
    the one the fake data of the run were made with (the --seed given to train)."""
    model, meta = load_model(run)
    c, h, _ = meta["input_size"]
    data = load_data(meta["dataset"], image_size=h, in_channels=c, mean=meta["mean"], std=meta["std"],
                     augment=False, batch_size=256, seed=seed)
    xs, ys = zip(*data.test)
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        probs = model(x).softmax(1)
    return probs, y, meta["classes"]


EPOCH_COLUMNS = ("epoch", "train_loss", "test_loss", "train_acc", "test_acc", "lr", "train_seconds",
                 "images_per_second", "elapsed_seconds")


def check_epoch_table(page: Page, run: Path, name: str) -> None:
    """Every cell of the timings table is metrics.jsonl's number, shown as it says."""
    rows, want = page.table("epochs", name), metrics(run)
    assert len(rows) == len(want)
    for row, record in zip(rows, want):
        # docs/REPORT.md: losses, accuracies, lr, training seconds, images/s, elapsed seconds
        assert set(row) == set(EPOCH_COLUMNS) and set(record) - {"session"} <= set(row), (set(row), set(record))
        for key, value in record.items():
            if key in row:
                assert float(row[key]["value"]) == value, (key, row[key], value)
        assert row["epoch"]["text"] == str(record["epoch"])
        assert row["test_acc"]["text"] == f"{100 * record['test_acc']:.2f}%"
        assert row["train_acc"]["text"] == f"{100 * record['train_acc']:.2f}%"
        assert row["train_loss"]["text"] == f"{record['train_loss']:.4f}"
        assert row["train_seconds"]["text"] == f"{record['train_seconds']:.2f}"
        assert row["elapsed_seconds"]["text"] == f"{record['elapsed_seconds']:.2f}"


def test_report_page_has_the_title_one_png_per_figure_and_the_epoch_table_of_metrics_jsonl(runs, one_page):
    path, text = one_page
    page = Page(text)
    assert page.title == f"resnet-lab report: {runs[0]}"
    assert sorted(page.figures()) == ["confusion", "curves", "mistakes"]
    for img in page.images:
        assert min(png(img["src"]).size) > 50  # a real picture, decoded
    check_epoch_table(page, runs[0], str(runs[0]))
    assert page.links == []  # self-contained: no style sheet, script, frame or link to fetch
    assert not page.notes


def test_report_per_class_accuracy_and_mistakes_equal_a_plain_torch_evaluation(runs, one_page):
    page = Page(one_page[1])
    probs, y, classes = reference_evaluation(runs[0])
    conf, pred = probs.max(1)
    rows = page.table("per-class", str(runs[0]))
    assert [r["class"]["text"] for r in rows] == classes
    for k, row in enumerate(rows):
        of_k = y == k
        assert int(row["images"]["value"]) == int(of_k.sum())
        assert int(row["correct"]["value"]) == int((pred[of_k] == k).sum())
        assert float(row["accuracy"]["value"]) == pytest.approx(float((pred[of_k] == k).double().mean()), abs=1e-12)
    # The grid: the 16 wrong predictions of highest confidence, most confident first.
    wrong = (pred != y).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(conf[i]))
    want = [f"true {classes[int(y[i])]}, predicted {classes[int(pred[i])]} ({100 * float(conf[i]):.0f}%)"
            for i in wrong[:16]]
    (grid,) = [img for img in page.images if img["data-figure"] == "mistakes"]
    assert grid["alt"].split("; ") == want
    # the paragraph above: how many test images, and their mean cross-entropy
    n, loss = re.search(r"</b> on (\d+) test images, loss ([\d.]+) ", one_page[1]).groups()
    assert int(n) == len(y) == 128
    assert float(loss) == pytest.approx(float(-probs[torch.arange(len(y)), y].log().mean()), abs=1.5e-4)


def test_report_of_several_runs_puts_their_curves_on_shared_axes_and_their_numbers_side_by_side(runs, tmp_path):
    out = write_report([str(r) for r in runs], tmp_path / "both.html", device="cpu", mistakes=4)
    page = Page(out.read_text(encoding="utf-8"))
    assert page.title == f"resnet-lab report: 2 runs ({runs[0]}, {runs[1]})"
    assert sorted(page.figures()) == sorted(["compare", *["curves", "confusion", "mistakes"] * 2])
    rows = page.table("compare")
    assert [r["run"]["text"] for r in rows] == [str(r) for r in runs]
    for row, run in zip(rows, runs):
        m = metrics(run)
        model, _ = load_model(run)
        assert float(row["final_test_acc"]["value"]) == m[-1]["test_acc"]
        assert float(row["best_test_acc"]["value"]) == max(r["test_acc"] for r in m)
        assert int(row["epochs"]["value"]) == m[-1]["epoch"] == 2
        assert int(row["params"]["value"]) == sum(p.numel() for p in model.parameters())
        assert float(row["train_seconds"]["value"]) == pytest.approx(sum(r["train_seconds"] for r in m), rel=1e-12)
        assert float(row["wall_seconds"]["value"]) == m[-1]["elapsed_seconds"]  # one session: the last elapsed
        check_epoch_table(page, run, str(run))
    assert page.table("arch", str(runs[1]))[-1]["norm"]["text"] == "none"
    # how the batches were made (model.json's training entry), one process here
    for run in runs:
        training = {k: cell for row in page.table("training", str(run)) for k, cell in row.items() if k != "name"}
        saved = json.loads((run / "model.json").read_text())["training"]
        assert list(training) == list(saved) and training["world_size"]["text"] == "1"


def test_report_without_the_test_set_says_why_and_keeps_the_rest(runs, tmp_path):
    run = copy_run(runs[0], tmp_path / "moved", meta={"dataset": "cifar10"})  # its data are elsewhere now
    page = Page(report_html([run], data_dir=tmp_path / "empty", device="cpu"))
    assert len(page.notes) == 1 and "cifar10 test set was not found" in page.notes[0] and "--data-dir" in page.notes[0]
    assert sorted(page.figures()) == ["confusion", "curves"]  # the training's confusion.png stands in
    assert not [t for t in page.tables if t["name"] == "per-class"]
    check_epoch_table(page, run, str(run))


def test_report_with_a_folder_run_whose_folder_is_not_at_data_dir_notes_it_and_reports_the_others(runs, tmp_path):
    """One --data-dir serves every run: a folder run's test set cannot be loaded from another
    dataset's place, and the report says so for that run instead of failing as a whole."""
    folder_run = copy_run(runs[0], tmp_path / "pets", meta={"dataset": "folder"})
    empty = tmp_path / "empty"
    empty.mkdir()
    page = Page(report_html([runs[0], folder_run], data_dir=empty, mistakes=0, device="cpu"))
    assert len(page.notes) == 1 and "folder test set could not be loaded" in page.notes[0]
    assert "report the run on its own" in page.notes[0]
    assert [t for t in page.tables if t["name"] == "per-class"]  # the other run was evaluated


@pytest.mark.parametrize("elapsed, sessions", [([3.0, 1.25], [1, 2]), ([3.0, 3.5], [1, 2]), ([3.0, 1.25], [None, None]),
                                               ([3.0, 1.25], [None, 2])],
                         ids=["resumed", "resumed-slower-epoch", "records-without-session",
                              "older-records-then-a-session"])
def test_report_wall_time_adds_the_sessions_of_a_resumed_run(runs, tmp_path, elapsed, sessions):
    # Epoch 2 was trained after a --resume: elapsed_seconds restarted from 0 in the second session.
    # A resumed epoch may take longer than the last one before it (later epochs of progressive
    # resizing), which a rule "a session ends where elapsed goes down" cannot see; older records,
    # without the session, still get that rule, and so does a run resumed after the upgrade (its
    # older records have no session, the newer ones do).
    run = copy_run(runs[0], tmp_path / "resumed", elapsed=elapsed, sessions=sessions)
    page = Page(report_html([run, runs[1]], mistakes=0, device="cpu"))
    assert float(page.table("compare")[0]["wall_seconds"]["value"]) == sum(elapsed)


def test_a_resumed_run_numbers_its_sessions_in_metrics(runs, tmp_path):
    out = tmp_path / "run"
    three = list(TINY)
    three[three.index("--epochs") + 1] = "3"  # a flag is given once
    assert main(["train", *three, "--stop-after", "1", "--out", str(out)]) == 0
    assert main(["train", *three, "--stop-after", "2", "--out", str(out), "--resume"]) == 0
    assert main(["train", *three, "--out", str(out), "--resume"]) == 0
    assert [r["session"] for r in metrics(out)] == [1, 2, 3]
    compare = Page(report_html([out, runs[1]], mistakes=0, device="cpu")).table("compare")
    assert float(compare[0]["wall_seconds"]["value"]) == pytest.approx(sum(r["elapsed_seconds"] for r in metrics(out)))


def test_report_shows_the_machine_a_run_trained_on_when_model_json_records_it(runs, tmp_path):
    machine = {"CPU": "Some CPU 9000", "torch": "2.99", "CPU capability (torch)": "AVX2"}
    run = copy_run(runs[0], tmp_path / "with-machine", meta={"machine": machine})
    page = Page(report_html([run], mistakes=0, device="cpu"))
    def values(rows):
        return {row["name"]["text"]: next(c["text"] for k, c in row.items() if k != "name") for row in rows}

    assert values(page.table("trained-on", str(run))) == machine
    here = values(page.table("machine"))
    assert here["torch"] == torch.__version__
    assert here["CPU capability (torch)"] == torch.backends.cpu.get_cpu_capability()
    assert not [t for t in Page(report_html([runs[0]], mistakes=0, device="cpu")).tables if t["name"] == "trained-on"]


def test_report_data_dir_is_where_the_test_set_is_read(tmp_path, capsys):
    folder = make_folder(tmp_path / "pics")
    run = tmp_path / "run"
    assert main(["train", "--model", "resnet8", "--dataset", "folder", "--data-dir", str(folder), "--image-size", "8",
                 "--epochs", "1", "--batch-size", "16", "--workers", "0", "--no-progress", "--device", "cpu",
                 "--out", str(run)]) == 0
    found = Page(report_html([run], data_dir=folder, device="cpu"))
    rows = found.table("per-class", str(run))
    assert [r["class"]["text"] for r in rows] == ["ants", "bees"]
    assert sum(int(r["images"]["value"]) for r in rows) == 2  # the 10% of each class held out for testing
    # none given: the folder model.json records, the same test images
    alone = Page(report_html([run], device="cpu")).table("per-class", str(run))
    assert [(r["class"]["text"], r["images"]["value"]) for r in alone] == [(r["class"]["text"], r["images"]["value"])
                                                                          for r in rows]
    folder.rename(tmp_path / "moved")
    for data_dir in (folder, None):  # a folder that is gone, given or recorded
        (note,) = Page(report_html([run], data_dir=data_dir, device="cpu")).notes
        assert "--data-dir" in note


def test_report_mistakes_sets_how_many_wrong_images_the_grid_shows(runs, tmp_path):
    three = Page(report_html([runs[0]], mistakes=3, device="cpu"))
    (grid,) = [img for img in three.images if img["data-figure"] == "mistakes"]
    assert len(grid["alt"].split("; ")) == 3
    assert "mistakes" not in Page(report_html([runs[0]], mistakes=0, device="cpu")).figures()
    probs, y, _ = reference_evaluation(runs[0])  # docs/REPORT.md: --mistakes 0 to 256
    (grid,) = [img for img in Page(report_html([runs[0]], mistakes=256, device="cpu")).images
               if img["data-figure"] == "mistakes"]
    assert len(grid["alt"].split("; ")) == int((probs.argmax(1) != y).sum()) < 256
    assert main(["report", str(runs[0]), "--mistakes", "-1", "--out", str(tmp_path / "x.html")]) == 2


def test_report_device_is_where_the_test_set_is_evaluated(runs, tmp_path, capsys):
    assert "evaluated on cpu" in report_html([runs[0]], device="cpu", mistakes=0)
    if torch.cuda.is_available():
        assert "evaluated on cuda" in report_html([runs[0]], device="cuda", mistakes=0)
    else:
        assert main(["report", str(runs[0]), "--device", "cuda", "--out", str(tmp_path / "x.html")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_report_cli_names_the_file_it_wrote_and_refuses_a_missing_run_in_one_line(runs, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    assert main(["report", str(runs[0]), "--out", str(out), "--mistakes", "0", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}" and out.is_file()
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and len(err.splitlines()) == 1


def test_report_replaces_its_own_page_and_never_a_page_it_did_not_write(runs, tmp_path, capsys):
    ours, theirs = tmp_path / "r.html", tmp_path / "notes.html"
    args = ["--mistakes", "0", "--device", "cpu"]
    assert main(["report", str(runs[0]), "--out", str(ours), *args]) == 0
    assert '<meta name="generator" content="resnet-lab">' in ours.read_text(encoding="utf-8")
    assert main(["report", str(runs[1]), "--out", str(ours), *args]) == 0  # the same command again: replaced
    assert Page(ours.read_text(encoding="utf-8")).title == f"resnet-lab report: {runs[1]}"
    theirs.write_text("<html><body>my notes</body></html>")
    capsys.readouterr()
    assert main(["report", str(runs[0]), "--out", str(theirs), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {theirs} exists and was not written by resnet-lab, so it is no earlier HTML report "
                   "output: choose another output path, or delete it first")
    assert theirs.read_text() == "<html><body>my notes</body></html>"


# Each image writes its decoded width into the DOM once the page has loaded, so the dump shows
# whether the browser could decode it (the report itself has no script).
PROBE = ("<script>addEventListener('load', () => { for (const i of document.images) "
         "i.dataset.naturalWidth = i.naturalWidth; });</script>")


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (apt-get install chromium); "
                    "the same facts are checked with html.parser above")
def test_report_in_headless_chromium_shows_the_title_every_figure_and_the_metrics(runs, one_page, tmp_path):
    path, text = one_page
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,1600",
           f"--screenshot={shot}", "--dump-dom", probe.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Page(done.stdout)
    assert dom.title == f"resnet-lab report: {runs[0]}"
    assert sorted(dom.figures()) == ["confusion", "curves", "mistakes"]
    for img in dom.images:  # decoded by the browser, at the PNG's own width
        assert int(img["data-natural-width"]) == png(img["src"]).size[0]
    check_epoch_table(dom, runs[0], str(runs[0]))
    screenshot = Image.open(shot).convert("L")
    assert screenshot.size == (1200, 1600)
    assert np.asarray(screenshot).std() > 10  # something was drawn, not a blank page


def test_side_by_side_training_loss_is_the_plain_cross_entropy_of_a_label_smoothed_run(runs):
    # The axis says cross-entropy: a smoothed run's train_loss is its objective, not that; the
    # reference is the run's own train_loss_plain from metrics.jsonl.
    from resnet_lab.analysis.report import _loss_series, _Run

    history = [{"epoch": 1, "train_loss": 2.30, "train_loss_plain": 2.25, "test_loss": 2.2},
               {"epoch": 2, "train_loss": 2.10, "train_loss_plain": 2.00, "test_loss": 2.1}]
    smoothed = _Run("ls", runs[0], {"train_config": {"label_smoothing": 0.1}}, history)
    assert _loss_series(smoothed) == [("ls (test)", [2.2, 2.1]), ("ls (train)", [2.25, 2.00])]
    older = _Run("old", runs[0], {"train_config": {"label_smoothing": 0.1}},
                 [{k: v for k, v in h.items() if k != "train_loss_plain"} for h in history])
    assert _loss_series(older)[1] == ("old (train; loss: the smoothed objective)", [2.30, 2.10])
    ce = _Run("ce", runs[0], {"train_config": {"label_smoothing": 0.0}}, [{"epoch": 1, "train_loss": 2.3}])
    assert _loss_series(ce)[1] == ("ce (train)", [2.3])  # without smoothing the objective is the cross-entropy


def test_report_names_the_weights_it_evaluated(runs, tmp_path):
    # report RUN/best.safetensors evaluated the best epoch and called it "the last epoch"
    run = runs[0]
    last = report_html([run], device="cpu", mistakes=0)
    assert "weights of the last epoch (model.safetensors)" in last
    best = report_html([run / "best.safetensors"], device="cpu", mistakes=0)
    assert "weights of the best evaluated epoch (best.safetensors)" in best and "weights of the last epoch" not in best
    probs, y, _ = reference_evaluation(run / "best.safetensors")  # the best epoch's weights, classified here
    assert f"Accuracy <b>{100 * (probs.argmax(1) == y).float().mean().item():.2f}%</b>" in best


def test_report_heading_of_a_run_without_an_evaluated_epoch_invents_no_best_epoch(runs, tmp_path):
    run = copy_run(runs[0], tmp_path / "noeval")
    records = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in metrics(run)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = report_html([run, runs[0]], device="cpu", mistakes=0)
    assert "no evaluated epoch in metrics.jsonl" in page and "(epoch 1)" not in page.split("<section")[1]
    (compare,) = [t for t in Page(page).tables if t["name"] == "compare"]  # the side-by-side table
    rows = [{c["key"]: c for c in row} for row in compare["rows"] if row]
    cells = [r for r in rows if "best_epoch" in r]
    assert cells[0]["best_epoch"]["value"] is None  # no invented epoch 1 for the run without evaluations
    assert cells[1]["best_epoch"]["value"] == str(max(metrics(runs[0]), key=lambda r: r["test_acc"])["epoch"])
    (run / "metrics.jsonl").unlink()
    assert "no metrics.jsonl" in report_html([run], device="cpu", mistakes=0)


def test_report_names_the_first_of_two_equal_best_accuracies_as_the_trainer_does(runs, tmp_path):
    """Two epochs with the same best test accuracy: the best epoch is the first, the one whose weights
    best.safetensors holds. The reference: the trainer's own History, fed the same records."""
    from resnet_lab.train.loop import History  # deferred: the reference, the rule that writes best.safetensors

    run = copy_run(runs[0], tmp_path / "tie")
    records = metrics(run)
    assert len(records) >= 2
    records = [{**r, "test_acc": 0.5} for r in records]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    trainer = History()
    for r in records:
        trainer.add(dict(r))
    assert trainer.best_epoch == records[0]["epoch"]
    page = report_html([run, runs[1]], device="cpu", mistakes=0)
    assert f"best test accuracy 50.00% (epoch {trainer.best_epoch})" in page.split("<section")[1]  # its heading
    (compare,) = [t for t in Page(page).tables if t["name"] == "compare"]  # the side-by-side table
    cells = [c for row in compare["rows"] for c in row if c["key"] == "best_epoch"]
    assert cells[0]["value"] == str(trainer.best_epoch)


def test_report_data_dir_for_runs_on_fake_data_only_is_refused(runs, tmp_path):
    with pytest.raises(ValueError, match=r"--data-dir .* is not used: every run here was trained on the fake dataset"):
        report_html(list(runs), data_dir=tmp_path / "nowhere", device="cpu")


def test_report_note_on_missing_data_gives_a_download_the_report_can_use(runs, tmp_path):
    run = copy_run(runs[0], tmp_path / "moved", meta={"dataset": "cifar10"})
    (note,) = Page(report_html([run], data_dir=tmp_path / "empty", device="cpu")).notes
    # --data-dir lacks it, and so do the usual places, which the report searches next: a download into
    # the cache (evaluate without --data-dir) is one the report then finds (it named a cache folder)
    assert f"cifar10 test set was not found in --data-dir {tmp_path / 'empty'} nor in the usual places" in note
    assert f"`resnet-lab evaluate {run} --download`" in note
    assert "(download=True)" not in note
    (note,) = Page(report_html([run], device="cpu")).notes  # no --data-dir: the usual places alone
    assert "cifar10 test set was not found; give its place" in note and f"`resnet-lab evaluate {run} --download`" in note


def test_weights_copied_from_another_run_give_one_line_naming_the_files(runs, tmp_path, capsys):
    run = copy_run(runs[0], tmp_path / "swapped")
    other = tmp_path / "r20"
    assert main(["train", "--model", "resnet20", "--dataset", "fake", "--image-size", "8", "--subset", "16",
                 "--epochs", "1", "--batch-size", "16", "--no-progress", "--device", "cpu", "--out", str(other)]) == 0
    shutil.copy(other / "model.safetensors", run / "model.safetensors")
    capsys.readouterr()
    for argv in (["evaluate", str(run)], ["report", str(run), "--out", str(tmp_path / "r.html")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: the weights in {run / 'model.safetensors'} do not fit the model that "
                              f"{run / 'model.json'} describes (")
        assert "were they copied from another run?" in err


def test_report_takes_shipped_weights_as_the_other_commands_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "test_acc": 0.5}\n')  # someone's file here: not read
    # the usual places, as a user's $RESNET_LAB_DATA: 20 test images (the accuracy of the shipped weights
    # on the real 10000 is tests/test_weights.py's)
    monkeypatch.setenv("RESNET_LAB_DATA", str(write_fmnist(tmp_path / "data", n=20, seed=0)))
    page = report_html(["resnet20:fashion-mnist"], data_dir=None, device="cpu", mistakes=0)
    assert "weights in resnet20-fashion-mnist.safetensors" in page and "no metrics.jsonl" in page


@pytest.mark.parametrize("key", ["classes", "mean", "input_size"])
def test_a_model_json_without_a_key_is_one_line_in_evaluate_and_report(runs, tmp_path, capsys, key):
    run = copy_run(runs[0], tmp_path / "bad")
    meta = json.loads((run / "model.json").read_text())
    del meta[key]
    (run / "model.json").write_text(json.dumps(meta))
    for argv in (["evaluate", str(run)], ["report", str(run), "--out", str(tmp_path / "r.html")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "KeyError" not in err, err
        assert f"{run / 'model.json'} has no '{key}', which {argv[0]} needs" in err


@pytest.mark.parametrize("bad", [-1, 257, 100000, "16", 2.5, True])
def test_report_mistakes_outside_0_to_256_or_not_a_count_is_refused_naming_it(runs, bad):
    """100000 drew an 856 x 99526 px grid in 4 GB; "16" and 2.5 were raw Python errors."""
    from resnet_lab.analysis.report import MAX_MISTAKES

    with pytest.raises(ValueError, match=rf"mistakes \(--mistakes\) must be a whole number of images from 0 to "
                                         rf"{MAX_MISTAKES}, got {re.escape(repr(bad))}"):
        report_html([runs[0]], mistakes=bad, device="cpu")
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda, cuda:N or mps, got None"):
        report_html([runs[0]], device=None)


def test_report_colours_each_of_many_runs_apart():
    """f"C{i}" repeats every 10: runs 1, 11, 21 shared blue."""
    from resnet_lab.analysis.report import _run_colours

    assert _run_colours(3) == ["C0", "C1", "C2"]
    assert _run_colours(10) == [f"C{i}" for i in range(10)]  # the docstring: all ten while they last
    many = _run_colours(40)
    assert len({tuple(round(v, 6) for v in c) for c in many}) == 40


def _fashion_mnist_or_skip() -> None:
    from resnet_lab.data import DataNotFoundError, find_fashion_mnist

    try:
        find_fashion_mnist()
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def _evaluate_json(run: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--device", "cpu", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_of_a_fashion_mnist_run_and_a_folder_run_evaluates_both_on_one_page(tmp_path, capsys, monkeypatch):
    """--data-dir serves every run of the page: the folder run's folder held no Fashion-MNIST, so the
    Fashion-MNIST run lost its test set; a built-in dataset that --data-dir does not hold is read
    from the usual places (here $RESNET_LAB_DATA, 40 images), as `evaluate` without --data-dir reads
    it, and the page says where."""
    monkeypatch.setenv("RESNET_LAB_DATA", str(write_fmnist(tmp_path / "usual", n=40, seed=0)))
    folder = make_folder(tmp_path / "pics")
    fm, pics = tmp_path / "fm", tmp_path / "pics-run"
    assert main(["train", "--model", "resnet8", "--dataset", "fashion-mnist", "--image-size", "8",
                 "--epochs", "1", "--batch-size", "16", "--no-progress", "--device", "cpu", "--out", str(fm)]) == 0
    assert main(["train", "--model", "resnet8", "--dataset", "folder", "--data-dir", str(folder), "--image-size", "8",
                 "--epochs", "1", "--batch-size", "16", "--workers", "0", "--no-progress", "--device", "cpu",
                 "--out", str(pics)]) == 0
    text = report_html([fm, pics], data_dir=folder, mistakes=0, device="cpu")
    page = Page(text)
    assert not page.notes, page.notes
    for run, extra in ((fm, ()), (pics, ("--data-dir", str(folder)))):
        want = _evaluate_json(run, capsys, *extra)  # the reference: evaluate, where it looks by itself
        rows = page.table("per-class", str(run))
        assert {r["class"]["text"]: float(r["accuracy"]["value"]) for r in rows} == pytest.approx(
            want["per_class_accuracy"], abs=1e-12)
        assert sum(int(r["images"]["value"]) for r in rows) == want["n"]
        assert run != fm or want["n"] == 40  # the test set of $RESNET_LAB_DATA, not of the Debian package
    fm_section, pics_section = text.split("<section")[1:3]
    assert f"--data-dir {folder} does not hold fashion-mnist" in fm_section
    assert f"read from {folder}" in pics_section  # the folder run: the --data-dir it was given


def test_report_data_dir_holding_fashion_mnist_is_read_before_the_usual_places(tmp_path, capsys):
    """--data-dir is the user's copy: the usual places (where the installed Fashion-MNIST is) serve
    only a dataset it does not hold. The copy here has 20 test images, the installed one 10000."""
    _fashion_mnist_or_skip()
    copy, run = write_fmnist(tmp_path / "copy", n=20, seed=0), tmp_path / "run"
    assert main(["train", "--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(copy), "--image-size",
                 "8", "--epochs", "1", "--batch-size", "4", "--no-progress", "--device", "cpu", "--out", str(run)]) == 0
    want = _evaluate_json(run, capsys, "--data-dir", str(copy))  # the reference: evaluate on the copy
    assert want["n"] == 20
    text = report_html([run], data_dir=copy, mistakes=0, device="cpu")
    rows = Page(text).table("per-class", str(run))
    assert sum(int(r["images"]["value"]) for r in rows) == 20
    assert {r["class"]["text"]: float(r["accuracy"]["value"]) for r in rows} == pytest.approx(
        want["per_class_accuracy"], abs=1e-12)
    assert f"read from {copy}" in text and "does not hold" not in text


def test_report_of_an_unfinished_run_says_it_stopped_and_calls_no_accuracy_final(runs, tmp_path):
    """A run stopped with --stop-after (or killed) after epoch 1 of 3 read as finished: "final
    42.83%", "1 epochs". The reference: the epochs model.json's recipe asked for, and the last
    epoch of metrics.jsonl."""
    run = tmp_path / "stopped"
    assert main(["train", *tiny(epochs="3"), "--stop-after", "1", "--out", str(run)]) == 0
    planned = json.loads((run / "model.json").read_text())["train_config"]["epochs"]
    done = metrics(run)[-1]["epoch"]
    assert (done, planned) == (1, 3)
    text = report_html([run, runs[0]], device="cpu", mistakes=0)
    mine, finished = text.split("<section")[1:3]
    heading = re.sub("<[^>]+>", "", mine.split("</p>")[0])
    assert f"stopped after epoch {done} of {planned}" in heading and "--resume" in heading
    assert "last evaluated" in heading and "final" not in heading
    assert f"{done} epoch of {planned}:" in mine
    assert "final" in finished.split("</p>")[0] and "stopped" not in finished
    rows = Page(text).table("compare")
    assert rows[0]["epochs"]["text"] == f"{done} of {planned} (unfinished)" and int(rows[0]["epochs"]["value"]) == done
    assert rows[0]["final_test_acc"]["text"].endswith("(last evaluated)")
    assert float(rows[0]["final_test_acc"]["value"]) == metrics(run)[-1]["test_acc"]
    assert rows[1]["epochs"]["text"] == "2" and "last evaluated" not in rows[1]["final_test_acc"]["text"]
    # killed in the middle of epoch 2: model.json's checkpoint is at a step of it
    killed = copy_run(run, tmp_path / "killed", meta={"step": 1})
    assert f"stopped in epoch {done + 1} of {planned} (after step 1)" in report_html([killed], device="cpu", mistakes=0)
    # a model.json that records no checkpoint epoch (an older run): metrics.jsonl's last epoch stands in
    saved = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in ("epoch", "step")}))
    assert f"stopped after epoch {done} of {planned}" in _heading(report_html([run], device="cpu", mistakes=0))


def _named(page: Page, table: str, run) -> dict[str, dict]:
    """A two-column field/value table of ``run`` as {field: value cell}."""
    return {row["name"]["text"]: next(c for k, c in row.items() if k != "name") for row in page.table(table, str(run))}


def test_report_recipe_has_the_training_set_size_and_the_speed_settings_model_json_records(runs, tmp_path):
    """A --subset 16 run and a run on 32 images had the same recipe on the page; --channels-last,
    --deterministic and --whiten were not shown either. The references: the flags given, and
    model.json read with json."""
    run = tmp_path / "small"
    assert main(["train", *tiny(subset="16"), "--channels-last", "--deterministic", "--whiten",
                 "--out", str(run)]) == 0
    saved = json.loads((run / "model.json").read_text())
    assert saved["training"]["num_train"] == 16  # --subset 16
    assert (saved["training"]["channels_last"], saved["training"]["deterministic"]) == (True, True)
    assert (saved["training"]["bf16"], saved["training"]["fp16"]) == (False, False)
    assert "num_train" not in saved["train_config"] and "channels_last" not in saved["train_config"]  # once only
    page = Page(report_html([run, runs[0]], device="cpu", mistakes=0))
    batches = _named(page, "training", run)
    assert int(batches["num_train"]["value"]) == 16 and batches["channels_last"]["text"] == "True"
    assert batches["deterministic"]["text"] == "True" and batches["bf16"]["text"] == "False"
    whiten = _named(page, "whiten", run)
    assert {k: c["text"] for k, c in whiten.items()} == {k: str(v) for k, v in saved["whiten"].items()}
    assert not [t for t in page.tables if t["name"] == "whiten" and t["run"] == str(runs[0])]
    compare = page.table("compare")
    assert [int(r["num_train"]["value"]) for r in compare] == [16, 32]  # TINY: --subset 32


def _train_folder(folder: Path, out: Path, *flags: str) -> None:
    assert main(["train", "--model", "resnet8", "--dataset", "folder", "--data-dir", str(folder), "--image-size", "8",
                 "--batch-size", "16", "--workers", "0", "--no-progress", "--device", "cpu", "--out", str(out),
                 *(flags or ("--epochs", "1"))]) == 0


def test_report_batches_of_a_folder_run_show_its_augmentation_as_the_flags_asked(tmp_path):
    """A folder run showed `augment None` (and None for random erasing and the flip) whether it was
    augmented or not: the streaming loader has none of the in-memory loader's attributes that were
    read. The reference: the flags each run was trained with."""
    folder = make_folder(tmp_path / "pics")
    _train_folder(folder, tmp_path / "aug", "--epochs", "1", "--random-erasing", "0.25")
    _train_folder(folder, tmp_path / "plain", "--epochs", "1", "--no-augment")
    want = {"aug": {"augment": True, "random_erasing": 0.25, "flip_mode": "random"},
            "plain": {"augment": False, "random_erasing": 0.0, "flip_mode": None}}
    page = Page(report_html([tmp_path / "aug", tmp_path / "plain"], data_dir=folder, device="cpu", mistakes=0))
    for name, facts in want.items():
        saved = json.loads((tmp_path / name / "model.json").read_text())["training"]
        assert {k: saved[k] for k in facts} == facts, name
        batches = _named(page, "training", tmp_path / name)
        assert batches["augment"]["text"] == str(facts["augment"])
        assert float(batches["random_erasing"]["value"]) == facts["random_erasing"]
        assert batches["crop_padding"]["text"] == ("random-resized crop" if facts["augment"] else "n/a")


def test_a_folder_run_saved_before_its_augmentation_was_recorded_still_resumes(tmp_path, capsys):
    """Folder runs saved before recorded None for augment, flip_mode and random_erasing; now that the
    true values are recorded, a resume compares them: None is "not recorded", not another value."""
    folder, run = make_folder(tmp_path / "pics"), tmp_path / "old"
    _train_folder(folder, run, "--epochs", "2", "--stop-after", "1")
    state = torch.load(run / "train_state.pt", weights_only=True)
    state["data"].update(augment=None, flip_mode=None, random_erasing=None)  # as an older resnet-lab saved it
    torch.save(state, run / "train_state.pt")
    _train_folder(folder, run, "--epochs", "2", "--resume")
    assert [r["epoch"] for r in metrics(run)] == [1, 2]
    _train_folder(folder, tmp_path / "new", "--epochs", "2", "--stop-after", "1")  # a recorded value is compared
    capsys.readouterr()
    assert main(["train", "--model", "resnet8", "--dataset", "folder", "--data-dir", str(folder), "--image-size", "8",
                 "--batch-size", "16", "--workers", "0", "--no-progress", "--device", "cpu", "--out",
                 str(tmp_path / "new"), "--epochs", "2", "--resume", "--no-augment"]) == 2
    assert "data augment: run has True, now False" in capsys.readouterr().err


def test_report_of_a_finetuned_run_shows_its_transfer_block(runs, tmp_path):
    """model.json's `transfer` entry (source, strategy, frozen parameters, the recreated classifier,
    the adapted conv1, where training starts) was on no part of the page. The reference: that entry,
    and the parameters of the rebuilt model that requires_grad says are frozen."""
    run = tmp_path / "ft"
    assert main(["finetune", "--from", str(runs[0]), "--strategy", "last", "--dataset", "folder", "--data-dir",
                 str(make_folder(tmp_path / "pics")), "--image-size", "8", "--epochs", "1", "--batch-size", "16",
                 "--workers", "0", "--no-progress", "--device", "cpu", "--out", str(run)]) == 0
    entry = json.loads((run / "model.json").read_text())["transfer"]
    text = report_html([run], device="cpu", mistakes=0)
    page = Page(text)
    table = _named(page, "transfer", run)
    assert table["strategy"]["text"] == entry["strategy"] == "last"
    assert table["source"]["text"] == entry["source"] and table["unfreeze_from"]["text"] == entry["unfreeze_from"]
    assert table["source model"]["text"] == entry["source_arch"]["name"]
    assert table["recreated"]["text"] == ", ".join(entry["recreated"])
    assert table["adapted"]["text"] == "; ".join(f"{k}: {v}" for k, v in entry["adapted"].items()) or "none"
    model, _ = load_model(run)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert int(table["frozen parameters"]["value"]) == entry["params"]["frozen"]
    assert int(table["trainable parameters"]["value"]) == entry["params"]["trainable"]
    assert frozen in (0, entry["params"]["frozen"])  # load_model may unfreeze; when it does not, the same count
    heading = re.sub("<[^>]+>", "", text.split("<section")[1].split("</p>")[0])
    assert entry["params"]["frozen"] > 0  # strategy last: the earlier layers are frozen, and still the model's
    assert f", {sum(p.numel() for p in model.parameters()):,} parameters;" in heading
    assert f"fine-tuned from {entry['source']} (strategy last" in heading
    assert not [t for t in Page(report_html([runs[0]], device="cpu", mistakes=0)).tables if t["name"] == "transfer"]
    # a gray source on colour images: its conv1 was adapted (the entry as finetune writes it)
    adapted = {"conv1.weight": "repeated and divided over input channels (1 -> 3)"}
    gray = copy_run(run, tmp_path / "from-gray", meta={"transfer": {**entry, "adapted": adapted}})
    table = _named(Page(report_html([gray], device="cpu", mistakes=0)), "transfer", gray)
    assert table["adapted"]["text"] == "conv1.weight: repeated and divided over input channels (1 -> 3)"


def test_side_by_side_row_of_a_run_without_metrics_says_n_a_and_takes_the_reports_own_accuracy(runs, tmp_path):
    """A run without metrics.jsonl (nor metrics.csv, curves.png) read "best epoch None", "train s
    0.0", "wall s 0.0": nothing was measured, so n/a; its accuracy is the one the report measured,
    checked against the test set classified with plain torch."""
    run = copy_run(runs[0], tmp_path / "bare")
    for name in ("metrics.jsonl", "metrics.csv", "curves.png"):
        (run / name).unlink(missing_ok=True)
    page = Page(report_html([run, runs[0]], device="cpu", mistakes=0))
    row = page.table("compare")[0]
    for key in ("best_epoch", "train_seconds", "wall_seconds", "best_test_acc"):
        assert row[key]["text"] == "n/a" and row[key]["value"] is None, key
    probs, y, _ = reference_evaluation(run)
    accuracy = float((probs.argmax(1) == y).double().mean())
    assert float(row["final_test_acc"]["value"]) == pytest.approx(accuracy, abs=1e-12)
    assert row["final_test_acc"]["text"] == f"{100 * accuracy:.2f}% (this report's evaluation)"
    other = page.table("compare")[1]
    assert float(other["train_seconds"]["value"]) == pytest.approx(sum(r["train_seconds"] for r in metrics(runs[0])))


def test_report_of_an_empty_metrics_jsonl_says_it_is_empty_and_names_the_curves_it_shows(runs, tmp_path):
    run = copy_run(runs[0], tmp_path / "empty-metrics")
    (run / "metrics.jsonl").write_text("")
    text = report_html([run], device="cpu", mistakes=0)
    heading = re.sub("<[^>]+>", "", text.split("<section")[1].split("</p>")[0])
    assert "metrics.jsonl is empty" in heading and "no metrics.jsonl" not in heading
    (curves,) = [img for img in Page(text).images if img["data-figure"] == "curves"]
    assert curves["src"].split(",", 1)[1] == base64.b64encode((run / "curves.png").read_bytes()).decode()
    assert "curves.png" in curves["alt"] and "(metrics.jsonl)" not in curves["alt"]
    (run / "metrics.jsonl").unlink()
    assert "no metrics.jsonl" in report_html([run], device="cpu", mistakes=0)


def test_mistake_labels_of_long_class_names_overlap_neither_each_other_nor_the_pictures(monkeypatch):
    """Two-line labels ("true ...", "pred ... 97%") of longer class names ran into their neighbours'
    and over the pictures. The reference: matplotlib's own measure of each drawn label (its window
    extent) against its neighbours' and every picture's rectangle."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from resnet_lab.analysis import report

    drawn = []
    monkeypatch.setattr(report, "_figure_uri", lambda fig, dpi=90: drawn.append(fig) or "data:,")
    classes = ["T-shirt/top", "Ankle boot", "a rather long class folder name", "x", "another-quite-long-name_v2"]
    k = 12
    true, pred = torch.arange(k) % 5, (torch.arange(k) + 2) % 5
    m = report._Mistakes(torch.zeros(k, 1, 10, 10), true, pred, torch.linspace(0.99, 0.5, k))
    report._mistakes_uri(m, classes, [0.5], [0.5])
    (fig,) = drawn
    renderer = FigureCanvasAgg(fig).get_renderer()
    (ax,) = fig.axes
    labels = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(labels) == k
    # the pictures' rectangles, found in the mosaic itself: runs of rows and of columns holding gray
    gray = np.asarray(ax.images[0].get_array()) < 1  # the background is white, the pictures 0.5

    def runs_of(flags):
        edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(int), 0]))
        return list(zip(edges[::2], edges[1::2]))

    pictures = [ax.transData.transform([(c0 - 0.5, r0 - 0.5), (c1 - 0.5, r1 - 0.5)])
                for r0, r1 in runs_of(gray.any(1)) for c0, c1 in runs_of(gray.any(0)) if gray[r0, c0]]
    assert len(pictures) == k
    for i, box in enumerate(labels):
        for j, other in enumerate(labels[:i]):
            assert not box.overlaps(other), ("over another label", i, j, box, other)
        for j, ((x0, y0), (x1, y1)) in enumerate(pictures):
            lo, hi = sorted((y0, y1))
            assert not (box.x0 < x1 and box.x1 > x0 and box.y0 < hi and box.y1 > lo), ("over a picture", i, j)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (i, box, fig.bbox)


def test_report_side_by_side_epoch_axis_has_whole_epochs_only(runs, monkeypatch):
    """Two epochs drew ticks at 1.0, 1.2, 1.4... (the comparison and each run's curves): an epoch is a count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from resnet_lab.analysis import report

    drawn = []
    real = report._figure_uri
    monkeypatch.setattr(report, "_figure_uri", lambda fig, dpi=90: drawn.append(fig) or real(fig, dpi))
    report_html(list(runs), device="cpu", mistakes=0)
    assert len(drawn) == 3  # each run's curves, then the comparison
    for fig in drawn:
        assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
        FigureCanvasAgg(fig).draw()
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_report_data_table_numbers_carry_their_exact_values_and_one_epoch_is_singular(runs, tmp_path):
    """docs/REPORT.md: every number in a table carries its value in data-value; the Data table's
    mean/std had none. The reference: model.json read with json. And "1 epochs:" was plural."""
    saved = json.loads((runs[0] / "model.json").read_text())
    page = Page(report_html([runs[0]], device="cpu", mistakes=0))
    data = _named(page, "data", runs[0])
    for key in ("mean", "std"):
        assert json.loads(data[key]["value"]) == saved[key]
    assert json.loads(data["input size (C, H, W)"]["value"]) == saved["input_size"]
    assert int(data["classes"]["value"]) == len(saved["classes"])
    run = tmp_path / "one"
    assert main(["train", *tiny(epochs="1"), "--out", str(run)]) == 0
    text = report_html([run], device="cpu", mistakes=0)
    assert "<p>1 epoch: " in text and "1 epochs" not in text


def _heading(text: str, i: int = 0) -> str:
    """The words of the ``i``-th run's heading paragraph."""
    return re.sub("<[^>]+>", "", text.split("<section")[i + 1].split("</p>")[0])


def test_a_torn_last_metrics_record_is_named_and_its_epoch_1_is_not_called_final(runs, tmp_path):
    """A kill during the append tore epoch 2's line of a finished run: the page said "final" of
    epoch 1's numbers. The reference: model.json's checkpoint record of epoch 2 ('metrics') and
    metrics.jsonl's line 1, both read with json."""
    run = copy_run(runs[0], tmp_path / "torn")
    first, second = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(first + "\n" + second[:100])
    saved = json.loads((run / "model.json").read_text())
    assert saved["epoch"] == saved["metrics"]["epoch"] == 2 and json.loads(first)["epoch"] == 1
    text = report_html([run, runs[1]], device="cpu", mistakes=0)
    page = Page(text)
    mine = text.split("<section")[1]
    assert re.search(r"final ([\d.]+)%", _heading(text)).group(1) == f"{100 * saved['metrics']['test_acc']:.2f}"
    (note,) = [n for n in page.notes if "metrics.jsonl stops" in n]
    assert "stops at epoch 1 of the 2" in note and "torn" in note and "model.json" in note
    assert note in html.unescape(mine)
    row = page.table("compare")[0]
    assert float(row["final_test_acc"]["value"]) == saved["metrics"]["test_acc"]
    assert int(row["epochs"]["value"]) == 2
    timings = page.table("epochs", str(run))
    assert [r["epoch"]["text"] for r in timings] == ["1", "2 (model.json)"]
    for row, record in zip(timings, [json.loads(first), saved["metrics"]]):
        assert float(row["test_acc"]["value"]) == record["test_acc"]
        assert float(row["train_loss"]["value"]) == record["train_loss"]  # model.json's row is whole
    # the record cut off whole (not torn) and model.json without a record of epoch 2: nothing is "final"
    (run / "metrics.jsonl").write_text(first + "\n")
    (run / "model.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "metrics"}))
    text = report_html([run, runs[1]], device="cpu", mistakes=0)
    assert "final" not in _heading(text) and f"last recorded {100 * json.loads(first)['test_acc']:.2f}%" in _heading(text)
    (note,) = [n for n in Page(text).notes if "metrics.jsonl stops" in n]
    assert "records after it are missing" in note and "no record of epoch 2" in note
    assert Page(text).table("compare")[0]["final_test_acc"]["text"].endswith("(last recorded)")
    # model.json's record is of epoch 1 (not the checkpoint's epoch 2): it stands in for nothing
    (run / "model.json").write_text(json.dumps({**saved, "metrics": json.loads(first)}))
    text = report_html([run], device="cpu", mistakes=0)
    assert "no record of epoch 2" in "".join(Page(text).notes)
    assert [r["epoch"]["text"] for r in Page(text).table("epochs", str(run))] == ["1"]


@pytest.mark.parametrize("value", ['"oops"', "true", "[0.5]"])
def test_a_hand_edited_metrics_value_is_one_line_naming_the_file_line_and_field(runs, tmp_path, capsys, value):
    """A string in metrics.jsonl's test_acc crashed report with "'>' not supported between instances
    of 'str' and 'float'"."""
    run = copy_run(runs[0], tmp_path / "edited")
    first = (run / "metrics.jsonl").read_text().splitlines()[0]
    (run / "metrics.jsonl").write_text(first + "\n" + '{"epoch": 2, "train_loss": 2.05, "test_acc": ' + value + "}\n")
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--device", "cpu", "--mistakes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {run / 'metrics.jsonl'} line 2: 'test_acc' must be a number")
    assert "fix that line or delete it" in err and value in err
    # null is what a record without the evaluation may hold: read, not refused
    (run / "metrics.jsonl").write_text(first + "\n" + '{"epoch": 2, "train_loss": 2.05, "test_acc": null}\n')
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def test_an_unfinished_runs_heading_says_how_to_go_on_in_evaluates_words(runs, tmp_path, capsys):
    """A run started from Python (resnet_lab.train with stop_after) was told to use "the resnet-lab
    train command that started it"; evaluate's note names the Python call too. The reference:
    evaluate's note on the same run."""
    run = tmp_path / "stopped"
    assert main(["train", *tiny(epochs="2"), "--stop-after", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--device", "cpu"]) == 0
    note = capsys.readouterr().err.strip()
    words = note.split(" is unfinished: it ", 1)[1]
    assert "resume=True" in words
    heading = html.unescape(_heading(report_html([run], device="cpu", mistakes=0)))
    assert f"unfinished: {words}." in heading


def _compare_figure(runs, n: int, monkeypatch):
    """The side-by-side figure of ``n`` runs (run directory ``runs[0]``, histories of two epochs made
    here), as matplotlib drew it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from resnet_lab.analysis import report

    drawn = []
    monkeypatch.setattr(report, "_figure_uri", lambda fig, dpi=90: drawn.append(fig) or "data:,")
    made = [report._Run(f"run{i}", runs[0], {"train_config": {}},
                        [{"epoch": e, "train_loss": 2.4 - 0.1 * e - 0.01 * i, "test_loss": 2.3 - 0.05 * e,
                          "train_acc": 0.1 * e + 0.01 * i, "test_acc": 0.12 * e} for e in (1, 2)]) for i in range(n)]
    report._compare_uri(made)
    (fig,) = drawn
    renderer = FigureCanvasAgg(fig).get_renderer()
    FigureCanvasAgg(fig).draw()
    return fig, renderer


@pytest.mark.parametrize("n", [6, 9])
def test_side_by_side_legend_covers_no_point_and_shows_each_curves_style(runs, monkeypatch, n):
    """The loss panel's legend sat over a run's epoch-1 points, and its "(train)" entries were drawn
    solid (a dashed line too short to show a gap beside its marker). The reference: the figure's own
    artists, in display coordinates: every plotted point and each panel's whole box (ticks, labels)."""
    import matplotlib as mpl
    from matplotlib.transforms import Bbox

    fig, renderer = _compare_figure(runs, n, monkeypatch)
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    for ax in fig.axes:  # the panel, its tick labels and axis labels (its tight box holds its own legend too)
        panel = Bbox.union([ax.get_window_extent(renderer), ax.xaxis.get_tightbbox(renderer),
                            ax.yaxis.get_tightbbox(renderer)])
        assert not box.overlaps(panel), ("the legend is over a panel", box, panel)
        for line in ax.get_lines():
            for x, y in ax.transData.transform(line.get_xydata()):
                assert not (box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1), (line.get_label(), x, y)
    if n > 8:  # one entry a run, in the run's colour; the legend's title says which style is which
        handles = legends[0].legend_handles
        assert [h.get_label() for h in handles] == [f"run{i}" for i in range(n)]
        assert [h.get_color() for h in handles] == [line.get_color() for line in fig.axes[1].get_lines()[::2]]
        assert legends[0].get_title().get_text() == "test solid, train dashed"
        return
    plotted = {line.get_label(): line for line in fig.axes[0].get_lines()}
    handles = legends[0].legend_handles
    assert sorted(h.get_label() for h in handles) == sorted(plotted) and len(handles) == 2 * n
    scale = 72 / fig.dpi  # display pixels to points
    for handle in handles:
        line = plotted[handle.get_label()]
        assert (handle.get_linestyle(), handle.get_color()) == (line.get_linestyle(), line.get_color())
        if line.get_linestyle() == "--":  # a dash and a gap either side of the marker at least
            on, off = (v * line.get_linewidth() for v in mpl.rcParams["lines.dashed_pattern"])
            (x0, _), (x1, _) = handle.get_transform().transform(handle.get_xydata()[[0, -1]])
            assert (x1 - x0) * scale >= 2 * (on + off) + line.get_markersize(), (x1 - x0) * scale
    assert {h.get_linestyle() for h in handles if "(train" in h.get_label()} == {"--"}
    assert {h.get_linestyle() for h in handles if "(test)" in h.get_label()} == {"-"}


def test_report_of_a_finetune_with_freeze_epochs_shows_the_frozen_phase_and_counts_it_in_the_times(runs, tmp_path):
    """`finetune --freeze-epochs N` trains its head-only phase in RUN/freeze_phase/, and the report
    showed only the main phase's epochs and times. The reference: both phases' metrics.jsonl read
    with json (the frozen phase's rows, and the training and wall seconds of both added)."""
    run = tmp_path / "ft-frozen"
    assert main(["finetune", "--from", str(runs[0]), "--strategy", "all", "--freeze-epochs", "2",
                 "--backbone-lr-scale", "0.1", "--dataset", "folder", "--data-dir", str(make_folder(tmp_path / "pics")),
                 "--image-size", "8", "--epochs", "1", "--batch-size", "16", "--workers", "0", "--no-progress",
                 "--device", "cpu", "--out", str(run)]) == 0
    frozen, main_phase = metrics(run / "freeze_phase"), metrics(run)
    assert [r["epoch"] for r in frozen] == [1, 2] and [r["epoch"] for r in main_phase] == [1]
    text = report_html([run], device="cpu", mistakes=0)
    page = Page(text)
    rows = page.table("frozen-epochs", str(run))
    assert [int(r["epoch"]["value"]) for r in rows] == [1, 2]
    for row, record in zip(rows, frozen, strict=True):
        for key in ("train_loss", "train_seconds", "elapsed_seconds"):
            assert float(row[key]["value"]) == record[key], key
    assert [int(r["epoch"]["value"]) for r in page.table("epochs", str(run))] == [1]
    timings = re.sub("<[^>]+>", " ", text.split("<h3>Timings</h3>")[1])
    assert "freeze_phase/metrics.jsonl" in timings
    frozen_train = sum(r["train_seconds"] for r in frozen)
    frozen_wall = max(r["elapsed_seconds"] for r in frozen)
    whole_train = frozen_train + sum(r["train_seconds"] for r in main_phase)
    whole_wall = frozen_wall + max(r["elapsed_seconds"] for r in main_phase)
    assert f"2 epochs: {frozen_train:.1f} s training, {frozen_wall:.1f} s wall time" in timings
    assert f"{whole_train:.1f} s training, {whole_wall:.1f} s wall time" in timings
    # side by side: the whole run's seconds, both phases
    row = Page(report_html([run, runs[0]], device="cpu", mistakes=0)).table("compare")[0]
    assert float(row["train_seconds"]["value"]) == pytest.approx(whole_train)
    assert float(row["wall_seconds"]["value"]) == pytest.approx(whole_wall)
    # the tiny phases' seconds round alike at 0.1 s: set them apart and read each sentence again
    for where, seconds in ((run / "freeze_phase", [(10.0, 11.0), (20.0, 32.0)]), (run, [(5.0, 6.5)])):
        records = [{**r, "train_seconds": t, "elapsed_seconds": e} for r, (t, e) in zip(metrics(where), seconds, strict=True)]
        (where / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    timings = re.sub("<[^>]+>", " ", report_html([run], device="cpu", mistakes=0).split("<h3>Timings</h3>")[1])
    assert "Both phases: 35.0 s training, 38.5 s wall time." in timings  # 10 + 20 + 5; 32 + 6.5
    assert "2 epochs: 30.0 s training, 32.0 s wall time." in timings  # the frozen phase
    assert "Main phase (all layers): 1 epoch: 5.0 s training, 6.5 s wall time " in timings


def _drawn_figures(monkeypatch) -> list:
    """The figures the report makes from now on, as matplotlib drew them (they are still embedded):
    each run's curves and mistakes (report._figure_uri), and the confusion matrices (plot_confusion's
    save_png)."""
    from resnet_lab.analysis import report
    from resnet_lab.train import plots

    drawn, uri, save = [], report._figure_uri, plots.save_png
    monkeypatch.setattr(report, "_figure_uri", lambda fig, dpi=90: drawn.append(fig) or uri(fig, dpi))
    monkeypatch.setattr(plots, "save_png", lambda fig, path, **kw: drawn.append(fig) or save(fig, path, **kw))
    return drawn


def _lines(ax) -> dict[str, tuple[list, list, str]]:
    """label -> (x, y, colour) of the plotted lines of ``ax``."""
    from matplotlib.colors import to_hex

    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()), to_hex(line.get_color()))
            for line in ax.get_lines()}


def test_report_figures_draw_metrics_jsonl_and_the_confusion_of_the_evaluation(runs, monkeypatch):
    """What the curves, the side-by-side curves and the confusion matrix draw, read back from
    matplotlib: the curves against metrics.jsonl read with json (accuracy in %, the best marker at the
    highest test accuracy, each run one colour in both panels), the matrix against the test set
    classified with plain torch (rows: the true class, docs/REPORT.md)."""
    drawn = _drawn_figures(monkeypatch)
    report_html(list(runs), device="cpu", mistakes=0)
    curves, confusion, compare = [drawn[0], drawn[2]], drawn[1], drawn[-1]  # run by run, then side by side
    assert [len(f.axes) for f in drawn] == [2, 1, 2, 1, 2]
    colours = []
    for i, run in enumerate(runs):
        m = metrics(run)
        epochs = [r["epoch"] for r in m]
        loss, acc = (_lines(ax) for ax in curves[i].axes)
        assert loss["train loss"][:2] == (epochs, [r["train_loss"] for r in m])
        assert loss["test loss"][:2] == (epochs, [r["test_loss"] for r in m])
        assert acc["train"][:2] == (epochs, pytest.approx([100 * r["train_acc"] for r in m]))
        assert acc["test"][:2] == (epochs, pytest.approx([100 * r["test_acc"] for r in m]))
        (best,) = [y for label, (_, y, _) in acc.items() if label not in ("train", "test")]
        assert best == pytest.approx([100 * max(r["test_acc"] for r in m)] * 2)
        loss, acc = (_lines(ax) for ax in compare.axes)
        assert loss[f"{run} (test)"][:2] == (epochs, [r["test_loss"] for r in m])
        assert loss[f"{run} (train)"][:2] == (epochs, [r["train_loss"] for r in m])
        for split in ("test", "train"):
            assert acc[f"{run} ({split})"][:2] == (epochs, pytest.approx([100 * r[f"{split}_acc"] for r in m]))
            assert acc[f"{run} ({split})"][2] == loss[f"{run} ({split})"][2] == loss[f"{run} (test)"][2]
        colours.append(loss[f"{run} (test)"][2])
    assert len(set(colours)) == len(runs)
    probs, y, classes = reference_evaluation(runs[0])
    pred = probs.argmax(1)
    (ax,) = confusion.axes
    assert ax.get_title() == f"{runs[0]}: test confusion"
    cells = {tuple(round(v) for v in t.get_position()): int(t.get_text()) for t in ax.texts}  # (predicted, true)
    assert cells == {(j, i): int(((y == i) & (pred == j)).sum()) for i in range(len(classes)) for j in range(len(classes))}


def test_report_curves_of_a_label_smoothed_run_name_the_smoothing(runs, tmp_path, monkeypatch):
    """The run's own curves.png names its label smoothing; the report's curves of it did not (the
    legend called the smoothed objective "train loss"). The reference: model.json's train_config."""
    saved = json.loads((runs[0] / "model.json").read_text())
    run = copy_run(runs[0], tmp_path / "smoothed", meta={"train_config": {**saved["train_config"], "label_smoothing": 0.1}})
    drawn = _drawn_figures(monkeypatch)
    report_html([run], device="cpu", mistakes=0)
    (curves,) = [f for f in drawn if len(f.axes) == 2]
    assert list(_lines(curves.axes[0])) == ["train loss (label smoothing 0.1, the objective)",
                                            "test loss (plain cross-entropy)"]


def test_the_mistakes_grid_shows_under_each_label_the_test_image_it_names(runs, monkeypatch):
    """Each picture of the grid is the test image its label names, as loaded without normalization
    (the grid undoes the run's mean/std). The references: the test set classified with plain torch,
    and the same images loaded with mean 0 and std 1."""
    drawn = _drawn_figures(monkeypatch)
    report_html([runs[0]], device="cpu", mistakes=6)
    (grid,) = [f for f in drawn if len(f.axes) == 1 and f.axes[0].texts and f.axes[0].get_title() == ""]
    (ax,) = grid.axes
    probs, y, classes = reference_evaluation(runs[0])
    conf, pred = probs.max(1)
    wrong = sorted((pred != y).nonzero().flatten().tolist(), key=lambda i: -float(conf[i]))[:6]
    _, meta = load_model(runs[0])
    c, h, w = meta["input_size"]
    plain = load_data("fake", image_size=h, in_channels=c, mean=[0.0] * c, std=[1.0] * c, augment=False, batch_size=256)
    raw = torch.cat([x for x, _ in plain.test]).permute(0, 2, 3, 1)  # (n, H, W, C) in 0..1
    assert 0 <= float(raw.min()) and float(raw.max()) <= 1
    mosaic = np.asarray(ax.images[0].get_array())
    assert len(ax.texts) == len(wrong) == 6
    for text, i in zip(ax.texts, wrong):
        words = f"true {classes[int(y[i])]}\npred {classes[int(pred[i])]} {100 * float(conf[i]):.0f}%"
        assert text.get_text() == words
        x, bottom = text.get_position()  # centred over its picture, just above its first row
        left, top = round(x - (w - 1) / 2), math.ceil(bottom + 0.5)
        np.testing.assert_allclose(mosaic[top:top + h, left:left + w], raw[i].numpy(), atol=1e-6, err_msg=words)


def test_report_of_a_run_on_fake_data_of_another_seed_evaluates_the_images_it_was_made_with(runs, tmp_path):
    """runs[1] was trained with --seed 1, which makes other fake images: the report evaluates those.
    The reference: the test set made with seed 1, classified with plain torch."""
    assert json.loads((runs[1] / "model.json").read_text())["train_config"]["seed"] == 1
    page = Page(report_html([runs[1]], device="cpu", mistakes=0))
    probs, y, _ = reference_evaluation(runs[1], seed=1)
    pred = probs.argmax(1)
    rows = page.table("per-class", str(runs[1]))
    assert [int(r["correct"]["value"]) for r in rows] == [int((pred[y == k] == k).sum()) for k in range(len(rows))]
    other, y0, _ = reference_evaluation(runs[1], seed=0)  # the seed matters: the default data differ
    assert [int(r["correct"]["value"]) for r in rows] != [int((other.argmax(1)[y0 == k] == k).sum())
                                                          for k in range(len(rows))]


def test_report_of_records_with_a_zero_and_a_null_test_accuracy(runs, tmp_path, monkeypatch):
    """An epoch evaluated at 0% is an evaluated epoch, the run's best when no other is (the trainer's
    rule: the first evaluated epoch is the best whatever its accuracy); a record whose test figures
    are null (read_metrics accepts it: an epoch without the evaluation) is none, and the report of it
    raised "'>' not supported between instances of 'float' and 'NoneType'". The reference: the
    records written here."""
    run = copy_run(runs[0], tmp_path / "zero")
    first, second = metrics(run)
    records = [{**first, "test_acc": 0.0}, {**second, "test_acc": None, "test_loss": None}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    drawn = _drawn_figures(monkeypatch)
    text = report_html([run, runs[1]], device="cpu", mistakes=0)
    assert "best test accuracy 0.00% (epoch 1)" in _heading(text)
    _, test_acc, _ = _lines(drawn[-1].axes[1])[f"{run} (test)"]  # side by side: 0% drawn at 0, null left out
    assert test_acc[0] == 0.0 and math.isnan(test_acc[1])
    row = Page(text).table("compare")[0]
    assert (row["best_epoch"]["value"], float(row["best_test_acc"]["value"])) == ("1", 0.0)
    assert row["final_test_acc"]["text"] == "n/a"  # the last epoch was not evaluated
    assert sorted(Page(text).figures()).count("curves") == 2


def test_most_confident_mistakes_keep_the_order_seen_among_equal_confidences():
    """Ties keep the order seen: the earlier batch's mistake first (stable sort), per _Mistakes'
    docstring. A hand-made case: three mistakes at 0.9 over two batches, k = 2."""
    from resnet_lab.analysis.report import _Mistakes

    def batch(true: list[int], confidence: list[float]) -> _Mistakes:
        n = len(true)
        return _Mistakes(torch.zeros(n, 1, 2, 2), torch.tensor(true), torch.zeros(n, dtype=torch.long),
                         torch.tensor(confidence))

    kept = batch([1, 2], [0.9, 0.5]).most_confident(None, 2)
    kept = batch([3, 4], [0.9, 0.9]).most_confident(kept, 2)
    assert kept.true.tolist() == [1, 3] and kept.confidence.tolist() == pytest.approx([0.9, 0.9])


def test_per_class_table_shows_n_a_for_a_class_without_test_images(tmp_path):
    """evaluate gives NaN for a class without test images; the table shows n/a there, not "nan%".
    A hand-made case: confusion rows 3 + 1, 2, 0 images."""
    from resnet_lab.analysis.report import _Evaluation, _per_class_html, _Run

    confusion = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    ev = _Evaluation(5 / 6, 0.5, 6, confusion, [0.75, 1.0, math.nan], None, "cpu")
    run = _Run("r", tmp_path, {"classes": ["a", "b", "c"]}, [], evaluation=ev)
    rows = Page(_per_class_html(run)).table("per-class", "r")
    assert [r["accuracy"]["text"] for r in rows] == ["75.00%", "100.00%", "n/a"]
    assert [int(r["images"]["value"]) for r in rows] == [4, 2, 0]


def test_report_evaluates_with_the_runs_own_mean_and_std(runs, tmp_path):
    """The test images are normalized with model.json's mean/std (what the network was trained on),
    not the dataset's defaults. The reference: the test set loaded with the copy's mean/std and
    classified with plain torch; the defaults give other counts, so the mean/std used shows."""
    run = copy_run(runs[0], tmp_path / "renormed", meta={"mean": [0.0] * 3, "std": [1.0] * 3})
    rows = Page(report_html([run], device="cpu", mistakes=0)).table("per-class", str(run))
    got = [int(r["correct"]["value"]) for r in rows]

    def correct(probs, y):
        return [int((probs.argmax(1)[y == k] == k).sum()) for k in range(len(rows))]

    assert got == correct(*reference_evaluation(run)[:2])
    assert got != correct(*reference_evaluation(runs[0])[:2])


def test_report_of_a_folder_run_against_a_folder_of_other_classes_is_refused_naming_both(runs, tmp_path):
    """report_html's contract (Raises): data whose classes differ from the run's are refused, not
    evaluated as if class 0 of one were class 0 of the other."""
    run = copy_run(runs[0], tmp_path / "pets", meta={"dataset": "folder"})
    with pytest.raises(ValueError, match=r"the dataset's classes \['ants', 'bees'\] differ from the run's "
                                         r"\['class0', .*point --data-dir at the data the run was trained on"):
        report_html([run], data_dir=make_folder(tmp_path / "pics"), device="cpu", mistakes=0)


# A name as markup would read it: tags, both quotes and an ampersand (run and class folders may be named so).
MARKUP = "<b>x</b> \"q\" 'a' & y"


def test_report_escapes_run_names_and_keeps_the_runs_in_the_order_given(runs, tmp_path):
    """Run names (folder paths) are text, never markup: html.escape's reading of them is on the page and
    the raw name nowhere; html.parser reads them back in the title, the side-by-side rows, the
    sections and their tables, in the order given (z before a: not sorted)."""
    named = [copy_run(run, tmp_path / f"{first} {MARKUP}", meta={"dataset": None})  # no evaluation: fast
             for run, first in zip(runs, "za")]
    text = report_html(named, device="cpu")
    page, names = Page(text), [str(r) for r in named]
    assert MARKUP not in text and html.escape(MARKUP, quote=True) in text
    assert page.title == f"resnet-lab report: 2 runs ({names[0]}, {names[1]})"
    assert [r["run"]["text"] for r in page.table("compare")] == names
    assert [html.unescape(n) for n in re.findall(r'<section data-run="([^"]*)">', text)] == names
    assert [t["run"] for t in page.tables if t["name"] == "epochs"] == names


def test_test_set_section_shows_numpy_counts_and_escaped_class_names(tmp_path):
    """The accuracy, the per-class counts (a hand-made confusion matrix, recomputed with numpy) and the
    mistakes' words with class names that look like markup: escaped as html.escape does, read back whole."""
    from resnet_lab.analysis.report import _Evaluation, _Mistakes, _Run, _test_set_html

    classes = [MARKUP, "cat & dog", "<i>c</i>"]
    cm = np.array([[2, 1, 0], [0, 3, 1], [2, 0, 2]])  # row sums differ from column sums
    per_class = (np.diag(cm) / cm.sum(1)).tolist()
    mistakes = _Mistakes(torch.zeros(2, 1, 2, 2), torch.tensor([1, 0]), torch.tensor([2, 1]), torch.tensor([0.8, 0.6]))
    ev = _Evaluation(float(np.trace(cm) / cm.sum()), 0.5, int(cm.sum()), torch.tensor(cm), per_class, mistakes, "cpu")
    run = _Run("r", tmp_path, {"classes": classes}, [], evaluation=ev,
               figures={"confusion": "data:image/png;base64,", "mistakes": "data:image/png;base64,"})
    text = _test_set_html(run)
    assert "<b>x</b>" not in text and "<i>" not in text and html.escape(classes[2]) in text
    assert re.search(r"Accuracy <b>([\d.]+)%</b>", text)[1] == f"{100 * np.trace(cm) / cm.sum():.2f}"
    page = Page(text)
    rows = page.table("per-class", "r")
    assert [r["class"]["text"] for r in rows] == classes
    assert [int(r["correct"]["value"]) for r in rows] == np.diag(cm).tolist()
    assert [int(r["images"]["value"]) for r in rows] == cm.sum(1).tolist()
    assert [r["accuracy"]["text"] for r in rows] == [f"{100 * a:.2f}%" for a in per_class]
    (grid,) = [img for img in page.images if img["data-figure"] == "mistakes"]
    assert grid["alt"] == f"true {classes[1]}, predicted {classes[2]} (80%); true {classes[0]}, predicted {classes[1]} (60%)"


@pytest.mark.parametrize("k", [1, 3, 40])
def test_mistake_tracker_keeps_the_k_most_confident_wrong_predictions_over_batches(k):
    """Logits in three batches, the model the identity: the kept mistakes are those of torch.softmax's
    argmax that differ from the label, sorted by confidence (Python's sorted), the k first, with their images."""
    from resnet_lab.analysis.report import _MistakeTracker

    gen = torch.Generator().manual_seed(0)
    logits, y = 3 * torch.randn(30, 4, generator=gen), torch.randint(0, 4, (30,), generator=gen)
    tracker = _MistakeTracker(torch.nn.Identity(), k)
    for x, _ in tracker.batches(zip(logits.split(10), y.split(10))):
        tracker(x)
    conf, pred = torch.softmax(logits.double(), 1).max(1)
    want = sorted((i for i in range(30) if pred[i] != y[i]), key=lambda i: -float(conf[i]))[:k]
    kept = tracker.kept
    assert kept.true.tolist() == y[want].tolist() and kept.pred.tolist() == pred[want].tolist()
    assert kept.confidence.double().tolist() == pytest.approx(conf[want].tolist(), abs=1e-6)
    assert torch.equal(kept.images, logits[want])


def test_report_args_accept_0_and_max_mistakes_and_refuse_no_runs_or_a_data_dir_file(runs, tmp_path):
    """report_html's contract (Raises): no runs, or mistakes outside 0..MAX_MISTAKES; both ends are counts it
    takes. A --data-dir that is a file is refused up front (check_data_dir), not left to a note on every run."""
    from resnet_lab.analysis.report import MAX_MISTAKES, check_report_args

    for ok in (0, MAX_MISTAKES):
        check_report_args([runs[0]], mistakes=ok, device="cpu")
    with pytest.raises(ValueError, match="give at least one run directory to report on"):
        check_report_args([], device="cpu")
    file = tmp_path / "data.zip"
    file.write_text("x")
    with pytest.raises(NotADirectoryError, match=re.escape(f"data_dir (--data-dir) {file} is a file, not a folder")):
        check_report_args([runs[0]], data_dir=file, device="cpu")


def test_write_report_to_a_directory_is_refused_before_evaluating_naming_a_file_inside(runs, tmp_path, monkeypatch):
    """write_report's docstring: an ``out`` that is a directory is said before the evaluations, not after."""
    import resnet_lab.analysis.report as report

    monkeypatch.setattr(report, "report_html", lambda *a, **k: pytest.fail("evaluated before refusing --out"))
    (tmp_path / "pages.html").mkdir()
    with pytest.raises(IsADirectoryError, match=re.escape(f"--out {tmp_path / 'pages.html'} is a directory: give a file "
                                                          f"name inside it, e.g. {tmp_path / 'pages.html' / 'report.html'}")):
        write_report([runs[0]], tmp_path / "pages.html", device="cpu")


def test_mistake_labels_cut_only_class_names_longer_than_the_limit():
    """_LABEL_CHARS' comment: a name longer than it is cut with an ellipsis (to that many characters in all);
    one of exactly that length is shown whole."""
    from resnet_lab.analysis.report import _LABEL_CHARS, _short

    exact, longer = "x" * _LABEL_CHARS, "y" * (_LABEL_CHARS + 1)
    assert _short(exact) == exact
    assert _short(longer) == "y" * (_LABEL_CHARS - 1) + "\u2026" and len(_short(longer)) == _LABEL_CHARS


def test_report_html_takes_one_run_given_as_a_str_or_path_not_as_a_list_of_its_letters(runs, tmp_path):
    run = copy_run(runs[0], tmp_path / "solo", meta={"dataset": None})  # no evaluation: fast
    for given in (str(run), run):
        assert Page(report_html(given, device="cpu")).title == f"resnet-lab report: {run}"
