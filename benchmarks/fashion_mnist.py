"""Fashion-MNIST accuracy runs: train named recipes through the CLI and record them in docs/RESULTS.md.

Each recipe is the exact `resnet-lab train` command a user would type. The script times the whole
command (process start to exit, data loading included), reads the run's metrics.jsonl, and writes
one row per recipe into docs/RESULTS.md with the command, the machine and the date.

    python benchmarks/fashion_mnist.py demo resnet20      # run these recipes
    python benchmarks/fashion_mnist.py --list
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "RESULTS.md"
CLI = [sys.executable, "-m", "resnet_lab"]

# The second stage of the two-stage recipes: all layers keep training from the first stage's weights
# under a fresh, lower cosine cycle (an SGDR-style warm restart, Loshchilov & Hutter 2017).
_RESTART = ("--strategy all --dataset fashion-mnist --batch-size 128 --lr 0.03 --schedule cosine --warmup-epochs 1 "
            "--label-smoothing 0.1 --random-erasing 0.5 --seed 1 --bf16 --channels-last")

# name: (what it is for, target test accuracy, time budget in minutes, train arguments). The
# arguments may be a tuple of stages: the first is `resnet-lab train`, each later one is
# `resnet-lab finetune --from <the previous stage's run>` (a warm restart on the same data).
RECIPES: dict[str, tuple[str, float, float, str | tuple[str, ...]]] = {
    "demo": ("`make demo`: a small ResNet, 92% within 5 minutes", 0.92, 5,
             "--model resnet8_fast --dataset fashion-mnist --epochs 5 --batch-size 128 --lr 0.1 --no-augment --label-smoothing 0.1"),
    "resnet20": ("ResNet-20 (He et al. 2015), 93.5% within 20 minutes", 0.935, 20,
                 "--model resnet20 --dataset fashion-mnist --epochs 10 --batch-size 128 --lr 0.1 --label-smoothing 0.1 --bf16 --channels-last"),
    "resnet20_noaug": ("ResNet-20 without augmentation (converges sooner in a short budget), 93.5% within 20 minutes",
                       0.935, 20,
                       "--model resnet20 --dataset fashion-mnist --epochs 12 --batch-size 128 --lr 0.1 --label-smoothing 0.1 --bf16 --channels-last --no-augment"),
    "long": ("ResNet-20 at doubled width with a pooled stem (resnet20_fast), one 90-epoch cycle, 95%", 0.95,
             float("inf"),
             "--model resnet20_fast --dataset fashion-mnist --epochs 90 --batch-size 128 --lr 0.1 --label-smoothing 0.1 --bf16 --channels-last"),
    "long_wide": ("ResNet-14 at 4x width with random erasing (resnet14_wide_fast), one 40-epoch cycle, 95%",
                  0.95, float("inf"),
                  "--model resnet14_wide_fast --dataset fashion-mnist --epochs 40 --batch-size 128 --lr 0.1 --label-smoothing 0.1 --random-erasing 0.5 --bf16 --channels-last"),
    "best": ("best recipe: `long`, then a 50-epoch warm restart with random erasing, 95%", 0.95, float("inf"),
             ("--model resnet20_fast --dataset fashion-mnist --epochs 90 --batch-size 128 --lr 0.1 --label-smoothing 0.1 --bf16 --channels-last",
              _RESTART + " --epochs 50")),
    "best_wide": ("`long_wide`, then a 22-epoch warm restart, 95%", 0.95, float("inf"),
                  ("--model resnet14_wide_fast --dataset fashion-mnist --epochs 40 --batch-size 128 --lr 0.1 --label-smoothing 0.1 --random-erasing 0.5 --bf16 --channels-last",
                   _RESTART + " --epochs 22")),
}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def run_recipe(name: str, out_root: Path) -> dict:
    purpose, target, budget, args = RECIPES[name]
    stages = (args,) if isinstance(args, str) else args
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    commands, epochs, wall, run_dir = [], [], 0.0, None
    for k, stage in enumerate(stages):
        stage_out = out if len(stages) == 1 else out / f"stage{k + 1}"
        head = ["train"] if k == 0 else ["finetune", "--from", str(run_dir)]
        argv = [*head, *shlex.split(stage), "--out", str(stage_out), "--no-progress"]
        print(f"[{name}] resnet-lab {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([*CLI, *argv], cwd=ROOT, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"[{name}] stage {k + 1} failed with exit code {proc.returncode}")
        records = [json.loads(l) for l in (stage_out / "metrics.jsonl").read_text().splitlines() if l.strip()]
        for e in records:  # epochs and times counted from the start of the recipe
            epochs.append({**e, "epoch": len(epochs) + 1, "elapsed_seconds": wall + e["elapsed_seconds"]})
        wall += time.perf_counter() - t0
        shown = [a if a != str(run_dir) else "<previous run>" for a in argv[:-3]]
        commands.append(_env_prefix() + f"resnet-lab {' '.join(shown)}")
        run_dir = stage_out
    result = summarize(name, commands, epochs, wall, run_dir)
    result["tta_acc"] = tta_accuracy(run_dir)
    return result


def tta_accuracy(run_dir: Path) -> float:
    """Test accuracy of the run's last weights with flip test-time augmentation (`evaluate --tta`)."""
    proc = subprocess.run([*CLI, "evaluate", str(run_dir), "--tta", "--json"], cwd=ROOT, text=True,
                          capture_output=True, check=True)
    return json.loads(proc.stdout)["accuracy"]


def summarize(name: str, commands: list[str], epochs: list[dict], wall: float, run_dir: Path) -> dict:
    """The result record of a recipe from its per-epoch records (epochs numbered across stages)."""
    purpose, target, budget, _ = RECIPES[name]
    reached = next((e for e in epochs if e["test_acc"] >= target), None)
    return {
        "recipe": name, "purpose": purpose,
        "command": "\n".join(commands),
        "final_acc": epochs[-1]["test_acc"], "best_acc": max(e["test_acc"] for e in epochs),
        "epochs": len(epochs), "wall_seconds": wall,
        "train_seconds": sum(e["train_seconds"] for e in epochs),
        "images_per_second": sorted(e["images_per_second"] for e in epochs)[len(epochs) // 2],
        "target": target, "budget_minutes": budget,
        "target_reached_at": None if reached is None else {"epoch": reached["epoch"], "seconds": reached["elapsed_seconds"]},
        "load_average": os.getloadavg()[0], "machine": machine(), "run_dir": str(run_dir),
        "date": dt.date.today().isoformat(),
    }


def _env_prefix() -> str:
    # Thread settings change the speed a lot on a shared CPU; the recorded command carries them.
    return "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS",) if k in os.environ)


def _row(r: dict) -> str:
    hit = r["target_reached_at"]
    verdict = "not reached"
    if hit:
        within = r["budget_minutes"] == float("inf") or r["wall_seconds"] <= 60 * r["budget_minutes"]
        verdict = f"epoch {hit['epoch']}, {hit['seconds'] / 60:.1f} min" + ("" if within else " (over budget)")
    tta = f"{100 * r['tta_acc']:.2f}%" if r.get("tta_acc") is not None else "-"
    return (f"| {r['recipe']} | {100 * r['final_acc']:.2f}% | {tta} | {100 * r['best_acc']:.2f}% | {r['epochs']} | "
            f"{r['wall_seconds'] / 60:.1f} min | {r['images_per_second']:.0f} | {100 * r['target']:.1f}%: {verdict} | "
            f"{r['date']} |")


def write_results(results: list[dict]) -> None:
    """Insert or replace each recipe's block between markers in docs/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Results\n"
    for r in results:
        curves = Path(r.get("run_dir", "")) / "curves.png"
        figure = ""
        if curves.is_file():  # the run's own loss/accuracy curves, kept next to the results
            (RESULTS.parent / "img").mkdir(exist_ok=True)
            shutil.copyfile(curves, RESULTS.parent / "img" / f"recipe_{r['recipe']}.png")
            figure = f"![{r['recipe']}: loss and accuracy per epoch](img/recipe_{r['recipe']}.png)\n\n"
        block = (
            f"<!-- recipe:{r['recipe']} -->\n### {r['recipe']}: {r['purpose']}\n\n"
            f"```\n{r['command']}\n```\n\n"
            f"Machine: {r['machine']}; 1-minute load average at the end {r['load_average']:.1f}.\n\n"
            "| recipe | final test acc | final, flip TTA | best epoch's test acc | epochs | wall time | train images/s (median epoch) | target (single view, per epoch) | date |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + _row(r) + "\n\n" + figure + "<!-- /recipe -->\n"
        )
        pattern = re.compile(rf"<!-- recipe:{re.escape(r['recipe'])} -->.*?<!-- /recipe -->\n", re.S)
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    RESULTS.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="*", help=f"any of {', '.join(RECIPES)}")
    p.add_argument("--list", action="store_true")
    p.add_argument("--out", default=str(ROOT / "runs" / "results"))
    p.add_argument("--record-only", action="store_true",
                   help="train nothing: rewrite docs/RESULTS.md from OUT/results.json of an earlier run")
    a = p.parse_args()
    if a.record_only:
        results = json.loads((Path(a.out) / "results.json").read_text())
        for r in results:
            r.setdefault("run_dir", str(Path(a.out) / r["recipe"]))
        write_results([r for r in results if not a.recipes or r["recipe"] in a.recipes])
        return
    if a.list or not a.recipes:
        for k, (purpose, _, _, args) in RECIPES.items():
            stages = (args,) if isinstance(args, str) else args
            print(f"{k:<10} {purpose}")
            for i, stage in enumerate(stages):
                print(f"           resnet-lab {'train' if i == 0 else 'finetune --from <previous run>'} {stage}")
        return
    results = [run_recipe(n, Path(a.out)) for n in a.recipes]
    (Path(a.out) / "results.json").write_text(json.dumps(results, indent=2))
    write_results(results)
    for r in results:
        print(_row(r))


if __name__ == "__main__":
    main()
