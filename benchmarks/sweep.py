"""A real sweep against the shipped config: the logistic_regression lesson's learning rate and batch size.

    .venv/bin/python benchmarks/sweep.py --data-dir <folder holding MNIST/raw> [--trials 16]

In a temporary working folder, on the CPU:

1. ``python -m experiments sweep --config logistic_regression --sweep logistic_regression`` with
   ``--sweep.n_trials N`` (default the sweep file's 16): TPE seeded 42, the sweep file's median pruner,
   each trial the lesson's 10-epoch fit scored by its best val/acc;
2. ``python -m experiments fit --config logistic_regression``: the shipped config (lr 0.01, batch 128);
3. ``python -m experiments test`` of the best checkpoint of each: the best trial's run (its own
   ``config.yaml``) and the shipped run.

Printed: the trials' table (the sweep's own), then a markdown table of val/acc (the sweep's objective) and
test/acc (never seen by the search) of the best trial and the shipped config, and the sweep's wall time
against the sum of its trials' own times (the worker's overhead: its start-up, the space check, taking and
telling trials, the report).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from _common import markdown_table

REPO = Path(__file__).resolve().parent.parent
#: The sweep file's searched keys (configs/sweeps/logistic_regression.yaml).
LR, BATCH = "model.optimizer.init_args.lr", "data.init_args.batch_size"


def run(args: list[str], cwd: Path) -> tuple[str, float]:
    """``python -m experiments *args`` in ``cwd``; its stdout and wall time. Stops on failure."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "experiments", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{result.stderr[-3000:]}")
    return result.stdout, elapsed


def test_accuracy(run_folder: Path, cwd: Path) -> float:
    """test/acc of the best checkpoint of ``run_folder``, tested with the run's own config."""
    [best] = sorted((run_folder / "checkpoints").glob("best-*.ckpt"))
    out, _ = run(["test", "--config", str(run_folder / "config.yaml"), "--ckpt_path", str(best)], cwd)
    match = re.search(r"test/acc\s*[│|]?\s*([0-9.]+)", out)
    if match is None:
        sys.exit(f"no test/acc in the output of testing {best}:\n{out[-2000:]}")
    return float(match.group(1))


def best_val(run_folder: Path) -> float:
    """The best val/acc a run's checkpoint callback recorded."""
    import torch

    state = torch.load(run_folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    [score] = [s["best_model_score"] for s in state["callbacks"].values() if s.get("monitor") == "val/acc"]
    return float(score)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="the folder holding MNIST/raw")
    parser.add_argument("--trials", type=int, default=16)
    options = parser.parse_args()
    data = ["--data.data_dir", str(Path(options.data_dir).resolve()), "--trainer.accelerator", "cpu"]
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as folder:
        cwd = Path(folder)
        sweep_args = ["sweep", "--config", "logistic_regression", "--sweep", "logistic_regression"]
        out, sweep_seconds = run([*sweep_args, *data, "--sweep.n_trials", str(options.trials)], cwd)
        print(out[out.index("sweep: study 'logistic_regression', ") :], end="")
        _, fit_seconds = run(["fit", "--config", "logistic_regression", *data], cwd)
        runs = cwd / "lightning_logs" / "logistic_regression"
        shipped = max(runs.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
        study = optuna.load_study(
            study_name="logistic_regression", storage=f"sqlite:///{runs / 'sweeps' / 'optuna.db'}"
        )
        best = study.best_trial
        best_run = Path(best.user_attrs["run"])
        saved = yaml.safe_load((shipped / "config.yaml").read_text())  # the shipped run's own values
        shipped_params = {
            LR: saved["model"]["init_args"]["optimizer"]["init_args"]["lr"],
            BATCH: saved["data"]["init_args"]["batch_size"],
        }
        rows = [
            (f"best trial ({best.number})", best.params, best_val(best_run), test_accuracy(best_run, cwd)),
            ("shipped config", shipped_params, best_val(shipped), test_accuracy(shipped, cwd)),
        ]
        states = [t.state.name.lower() for t in study.trials]
        columns = {
            "run": "{name}",
            "lr": "{lr:.4g}",
            "batch size": "{size}",
            "best val/acc": "{val:.4f}",
            "test/acc of that checkpoint": "{test:.4f}",
        }
        header, row = markdown_table(columns)
        print("", *header, sep="\n")
        for name, params, val, test in rows:
            print(row.format(name=name, lr=params[LR], size=params[BATCH], val=val, test=test))
        trial_seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)
        overhead = sweep_seconds - trial_seconds
        print(
            f"\n{len(states)} trials ({states.count('complete')} complete, {states.count('pruned')} pruned) "
            f"in {sweep_seconds:.0f} s of wall time. The trials themselves (taken to told, as the study "
            f"records them) took {trial_seconds:.0f} s, so the worker's own cost (start-up, space check, "
            f"report) was {overhead:.0f} s, {overhead / sweep_seconds:.1%} of the sweep. One fit of the "
            f"shipped config (its whole process): {fit_seconds:.0f} s."
        )


if __name__ == "__main__":
    main()
