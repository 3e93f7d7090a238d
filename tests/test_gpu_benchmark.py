"""benchmarks/gpu.py without a GPU: its ``--dry-run`` on the CPU prints every part with figures and
writes nothing; without CUDA and without ``--dry-run`` it refuses in one line; the recipe and
time-to-accuracy plumbing checked on made-up records. Nothing here times anything."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other as a script's folder allows

import gpu  # noqa: E402

from resnet_lab.cli import build_parser  # noqa: E402

NUMBER = r"[\d,.]+"


def _gpu_script(*args: str, cuda_visible: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if cuda_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible
    return subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), *args], capture_output=True, text=True,
                          env=env, cwd=BENCHMARKS.parent, timeout=300)


def _refusal(argv: list[str], capsys) -> str:
    """``gpu.main(argv)``'s one-line refusal (exit status 2), without its ``error: `` prefix."""
    with pytest.raises(SystemExit) as e:
        gpu.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.endswith("\n")
    return err.removeprefix("error: ")[:-1]


def test_dry_run_prints_every_part_with_figures_and_never_writes_the_doc(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    # targets 0.1% and 1%: reached by the first epoch of any model, so the time columns hold numbers
    proc = _gpu_script("--dry-run", "--dataset", "fake", "--targets", "0.001", "0.01", "--write", "--doc", str(doc))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith(f"## {gpu.TITLE}\n") and "INVALID: --dry-run" in out
    assert "- device: cpu" in out and "- machine: " in out and "- command: " in out and "- date: " in out
    # a) both data paths with an images/s figure
    assert re.search(rf"^\| {re.escape(gpu.OURS)} \| {NUMBER} \|", out, re.M)
    assert re.search(rf"^\| torchvision DataLoader, 0 workers, then \.to\(cpu\) \| {NUMBER} \|", out, re.M)
    # b) fp32, the autocast and channels_last, alone and together, each with steps/s and images/s
    for name in ("fp32", "bf16 autocast", "channels_last", "bf16 autocast + channels_last"):
        assert re.search(rf"^\| {re.escape(name)} \| {NUMBER} \| {NUMBER} \|", out, re.M), name
    # c) the seed's row and the mean, each target reached at epoch 1, and the whole command's time
    assert re.search(rf"^\| seed 0 \|( {NUMBER}% \|){{2}}( {NUMBER} s \(epoch 1\) \|){{2}} {NUMBER} s \|$", out, re.M)
    assert re.search(rf"^\| \*\*mean of 1\*\* \|( \*\*{NUMBER}%\*\* \|){{2}}( \*\*{NUMBER} s \(1/1 reached\)\*\* \|){{2}}"
                     rf" \*\*{NUMBER} s\*\* \|$", out, re.M)
    assert "--seed S" in out and "$TMP/seedS" in out and "$TMP/seed0" not in out
    assert "(S: each seed, 0 to 0; `$TMP`: a temporary folder the script makes and removes.)" in out
    assert not doc.exists() and "--dry-run: not written" in proc.stderr


def test_without_cuda_and_without_dry_run_it_refuses_in_one_line_with_exit_2():
    proc = _gpu_script(cuda_visible="")
    assert proc.returncode == 2
    assert proc.stderr == f"error: {gpu.NO_CUDA}\n" and proc.stdout == ""


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_a_device_that_is_not_cuda_without_dry_run_is_refused_by_name(device, capsys):
    """QA 2026-12-06: --device cpu said "no CUDA device", false on a machine with one."""
    assert _refusal(["--device", device], capsys) == (f"--device {device} is not a CUDA device: give cuda or cuda:N "
                                                      "(or --dry-run to check the script on a CPU)")


def test_a_cuda_index_past_the_machines_gpus_is_refused_before_any_part_runs(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(gpu, "build", lambda *a, **k: pytest.fail("a part ran"))
    assert _refusal(["--device", "cuda:5"], capsys) == ("--device cuda:5: this machine has 1 CUDA device(s), cuda:0 "
                                                        "to cuda:0; give one of them")


def test_fp16_with_a_gradient_scaler_on_a_gpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert gpu.amp_flag(torch.device("cuda")) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert gpu.amp_flag(torch.device("cuda")) == "bf16"
    assert gpu.amp_flag(torch.device("cpu")) == "bf16"


def test_the_recipe_reaches_resnet_lab_train_with_the_scripts_own_flags_and_fp16_where_needed():
    argv = gpu.recipe_command(gpu.RECIPE, dataset="fashion-mnist", data_dir="/d", device=torch.device("cuda"),
                              seed=2, out="/o", amp="fp16")
    ns = build_parser().parse_args(argv)  # resnet-lab's own parser: what the subprocess will see
    assert (ns.model, ns.epochs, ns.batch_size, ns.lr, ns.label_smoothing) == ("resnet20_fast", 20, 512, 0.4, 0.1)
    assert ns.fp16 and not ns.bf16 and ns.channels_last and ns.no_plots  # a plot costs an epoch's share of time
    assert (ns.dataset, ns.data_dir, ns.device, ns.seed, ns.out) == ("fashion-mnist", "/d", "cuda", 2, "/o")


@pytest.mark.parametrize("flag", ["--seed 1", "--out x", "--device=cpu", "--dataset fake"])
def test_a_recipe_giving_a_flag_the_script_sets_is_refused(flag):
    with pytest.raises(ValueError, match=re.escape(flag.split("=")[0].split()[0])):
        gpu.recipe_command(f"--model resnet20 {flag}", dataset="fake", data_dir=None, device=torch.device("cpu"),
                           seed=0, out="/o", amp="bf16")


def test_time_to_each_target_is_the_first_epoch_reaching_it():
    records = [{"epoch": 1, "test_acc": 0.930, "elapsed_seconds": 10.0},
               {"epoch": 2, "test_acc": 0.945, "elapsed_seconds": 20.5},
               {"epoch": 3, "test_acc": 0.941, "elapsed_seconds": 31.0},
               {"epoch": 4, "test_acc": 0.950, "elapsed_seconds": 41.0}]
    s = gpu.seed_summary(records, 55.0, (0.94, 0.95, 0.96))
    assert s["reached"] == {0.94: (2, 20.5), 0.95: (4, 41.0), 0.96: None}
    assert (s["final"], s["best"], s["epochs"], s["wall_s"]) == (0.950, 0.950, 4, 55.0)


def test_the_cuda_graph_contender_is_measured_on_a_bf16_gpu_only_and_refuses_a_cpu_in_one_line():
    with_graph, without = gpu._options("bf16", False, with_graph=True), gpu._options("bf16", False)
    extra = set(with_graph) - set(without)
    assert extra == {"bf16 autocast + channels_last + CUDA graph"}
    assert with_graph[extra.pop()] == {"bf16": True, "channels_last": True, "graph": True}
    import _common
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x, y = torch.randn(3, 1, 2, 2), torch.tensor([0, 1, 0])
    with pytest.raises(RuntimeError, match="a CUDA graph needs a CUDA device, not cpu"):
        _common.train_step(model, x, y, graph=True)
    _common.train_step(model, x, y)()  # the eager step on the same inputs runs


def test_a_part_that_breaks_is_reported_the_others_still_measured_and_nothing_written(tmp_path, monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")

    monkeypatch.setitem(gpu.PARTS, "data", broken)
    doc = tmp_path / "BENCHMARKS.md"
    code = gpu.main(["--dry-run", "--dataset", "fake", "--parts", "data", "step", "--compile", "off", "--write",
                     "--doc", str(doc)])
    out, err = capsys.readouterr()
    assert code == 1 and not doc.exists()
    assert "### data: failed\n\n`RuntimeError: CUDA error: an illegal memory access was encountered`" in out
    assert "| GPU data part | failed |" in out
    assert re.search(rf"^\| bf16 autocast \+ channels_last \| {NUMBER} \| {NUMBER} \|", out, re.M)  # step measured
    assert "error: GPU data part failed" in err and "nothing written" in err


def test_missing_fashion_mnist_is_refused_whole_before_any_part_runs(tmp_path, monkeypatch, capsys):
    """QA 2026-12-06: each part failed on its own and the section kept only the message's first line,
    cut at "Get it one of these ways:"."""
    from resnet_lab.data import DataNotFoundError, find_fashion_mnist

    monkeypatch.setattr(gpu, "build", lambda *a, **k: pytest.fail("a part ran"))
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as reference:
        find_fashion_mnist(missing)
    assert _refusal(["--dry-run", "--data-dir", str(missing)], capsys) == str(reference.value)


@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_a_doc_without_write_is_refused_in_one_line_since_only_write_writes_it(dry, tmp_path, capsys):
    """A trial of 2026-12-06: `--doc FILE` alone was taken, the GPU's minutes spent, and FILE never
    written (only --write writes it), without a word."""
    doc = tmp_path / "GPU.md"
    with pytest.raises(SystemExit) as e:
        gpu.parse_args([*dry, "--doc", str(doc)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err
    assert f"--doc {doc}" in err and "--write" in err and not doc.exists()
    assert gpu.parse_args([*dry, "--doc", str(doc), "--write"]).doc == str(doc)
    assert gpu.parse_args(dry).doc == gpu.BENCHMARKS_MD
