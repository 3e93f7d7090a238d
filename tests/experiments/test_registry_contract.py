"""What run_experiment refuses, and when: before it makes a folder (a bad budget), after it took
the folder's lock (results written there meanwhile), and experiments that break the module
contract of registry.py (NAME, CLAIM, run(ctx) returning a Report)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from resnet_lab.experiments import Check, Report, registry


def _near_the_top() -> int:
    from resnet_lab.data.config import SEED_RANGE

    return SEED_RANGE[1] - 50  # torch takes it, but not the seeds an experiment counts up from it


@pytest.mark.parametrize("kw, match", [
    (dict(budget="huge"), "budget must be one of smoke, full, got 'huge'"),
    (dict(seed=_near_the_top()), "seed \\(--seed\\) must be an integer from .* to .*, got"),
])
def test_a_bad_budget_or_a_seed_without_room_for_its_seeds_is_refused_before_any_folder_is_made(
        tmp_path, monkeypatch, kw, match):
    monkeypatch.setattr(registry, "get_experiment", lambda name: _experiment(lambda ctx: pytest.fail("it ran")))
    with pytest.raises(ValueError, match=match):
        registry.run_experiment("degradation", out=tmp_path / "new", device="cpu", log=lambda s: None, **kw)
    assert not (tmp_path / "new").exists()


def _lock_after(monkeypatch, write) -> None:
    """Locks whose acquire first runs ``write(folder)``: another experiment that wrote into the
    folder between the claim's first look and its lock."""

    class LateLock(registry.RunLock):
        def acquire(self):
            write(self.run_dir)
            return super().acquire()

    monkeypatch.setattr(registry, "RunLock", LateLock)


def test_results_written_while_the_lock_was_awaited_are_not_written_over(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _lock_after(monkeypatch, lambda folder: (folder / "results.json").write_text('{"verdict": "confirmed"}'))
    with pytest.raises(FileExistsError, match="holds the results of an earlier experiment"):
        registry.claim_experiment_dir(out, "degradation")
    assert (out / "results.json").read_text() == '{"verdict": "confirmed"}'


def test_the_default_folder_skips_a_file_and_a_folder_filled_before_the_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs/experiments"
    root.mkdir(parents=True)
    (root / "degradation").write_text("not a folder")
    filled = []

    def fill_the_first(folder):  # -2 gets a report.md from another run as this one locks it
        if not filled:
            filled.append(folder)
            (folder / "report.md").write_text("theirs")

    _lock_after(monkeypatch, fill_the_first)
    out, lock = registry.claim_experiment_dir(None, "degradation")
    lock.release()
    assert str(out) == "runs/experiments/degradation-3" and filled == [Path("runs/experiments/degradation-2")]
    assert (root / "degradation-2/report.md").read_text() == "theirs"


def _experiment(run) -> types.ModuleType:
    module = types.ModuleType("resnet_lab.experiments.contract_probe")
    module.NAME, module.CLAIM, module.run = "contract_probe", "A probe of the module contract.", run
    return module


def _report(**kw) -> Report:
    """The smallest report an experiment can return: one passed check."""
    return Report(claim="c", columns=["a"], rows=[[1]], checks=[Check("q", True, "n")], **kw)


def test_an_experiment_whose_run_returns_no_report_is_an_error_not_a_verdict(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "get_experiment", lambda name: _experiment(lambda ctx: {"verdict": "confirmed"}))
    with pytest.raises(TypeError, match="must return a Report, got dict"):
        registry.run_experiment("contract_probe", out=tmp_path / "o", device="cpu", log=lambda s: None)
    assert not (tmp_path / "o" / "results.json").exists()


def test_a_listed_module_without_claim_is_refused_and_a_missing_dependency_is_not_hidden(monkeypatch):
    real = registry.importlib.import_module
    module = _experiment(lambda ctx: None)
    del module.CLAIM

    def import_module(name):
        if name.endswith(".contract_probe"):
            return module
        if name.endswith(".needs_a_package"):  # present, but what it imports is not installed
            raise ModuleNotFoundError("No module named 'not_installed'", name="not_installed")
        return real(name)

    monkeypatch.setattr(registry.importlib, "import_module", import_module)
    monkeypatch.setattr(registry, "EXPERIMENT_MODULES", ("contract_probe",))
    with pytest.raises(TypeError, match="contract_probe lacks CLAIM"):
        registry.list_experiments()
    monkeypatch.setattr(registry, "EXPERIMENT_MODULES", ("needs_a_package",))
    with pytest.raises(ModuleNotFoundError, match="not_installed"):
        registry.list_experiments()


@pytest.mark.parametrize("caps, budget", [(set(), "smoke"), ({(3, 8), (1, 2)}, "smoke"), ({(3, 8), (1, 2)}, "full")])
def test_the_setup_names_the_epochs_the_budget_cut_short(tmp_path, monkeypatch, caps, budget):
    """docs/EXPERIMENTS.md: a budget that stops each epoch after a few steps adds a `steps` line to
    the setup naming the cut (`3 steps of 8`)."""
    def run(ctx):
        ctx.step_caps.update(caps)
        return _report(setup={"data": "d"})

    monkeypatch.setattr(registry, "get_experiment", lambda name: _experiment(run))
    setup = registry.run_experiment("contract_probe", budget=budget, out=tmp_path / "o", device="cpu",
                                    log=lambda s: None)["setup"]
    if not caps:
        assert setup == {"data": "d"}
    else:
        assert setup["steps"].startswith(f"the {budget} budget stops each epoch early (1 step of 2, 3 steps of 8): ")


def test_an_out_that_is_a_file_is_refused_by_name_not_by_a_raw_os_error(tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    with pytest.raises(FileExistsError, match=f"--out {out} is a file; an experiment writes a folder"):
        registry.claim_experiment_dir(out, "degradation")
    assert out.read_text() == "mine"


def test_the_contexts_notes_join_the_reports_once_and_fake_data_needs_no_data_line(tmp_path, monkeypatch):
    """_run adds the runner's caveats after the experiment's own, each once (an experiment may have
    copied one already), and rewrites the setup's "data" line for the fake fallback only where the
    setup has one."""
    def run(ctx):
        ctx.fake_data = True  # as Context.data sets it when Fashion-MNIST was missing
        ctx.note("from the runner")
        ctx.note("also from the runner")
        return _report(setup={"model": "m"}, notes=["mine", "from the runner"])

    monkeypatch.setattr(registry, "get_experiment", lambda name: _experiment(run))
    results = registry.run_experiment("contract_probe", out=tmp_path / "o", device="cpu", log=lambda s: None)
    assert results["notes"] == ["mine", "from the runner", "also from the runner"]
    assert results["setup"] == {"model": "m"} and results["fake_data"] is True


def test_an_interrupted_experiment_frees_its_folder_while_the_caller_still_holds_the_exception(tmp_path, monkeypatch):
    """RunLock: the folder is locked while the experiment runs, not after; a notebook that caught
    the Ctrl-C keeps its traceback (and with it run_experiment's frame) alive."""
    def run(ctx):
        (ctx.out / "plot.png").write_bytes(b"png")
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "get_experiment", lambda name: _experiment(run))
    out = tmp_path / "o"
    try:
        registry.run_experiment("contract_probe", out=out, device="cpu", log=lambda s: None)
    except KeyboardInterrupt as e:
        assert e.experiment_dir == out and not e.experiment_dir_empty and not e.experiment_finished
        registry.RunLock(out).acquire().release()  # RunInUseError while the lock is still held
    else:
        pytest.fail("the interrupt was swallowed")


def test_a_data_dir_under_the_home_folder_is_taken_as_given(tmp_path, monkeypatch):
    """``--data-dir ~/datasets`` (quoted, or from Python): the folder is there, so it is no mistyped path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    seen = []

    def run(ctx):
        seen.append(ctx.data_dir)
        return _report(setup={})

    monkeypatch.setattr(registry, "get_experiment", lambda name: _experiment(run))
    registry.run_experiment("contract_probe", out=tmp_path / "o", data_dir="~/datasets", device="cpu",
                            log=lambda s: None)
    assert seen == ["~/datasets"]
