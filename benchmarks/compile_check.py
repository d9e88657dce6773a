"""Where ``--compile.enabled true`` pays on this machine: each lesson eager against compiled, alternating, in
one process, on the CPU.

Run from the project root:

    python benchmarks/compile_check.py --mnist <folder holding MNIST/raw> [--rounds 2] [--output x.json]

Each lesson (``--lessons``; default ``mnist_convnet``, ``logistic_regression``, ``linear_regression``,
``first_network``) runs as shipped (its config, figures, logging and checkpoints on, into a temporary
folder) on ``--trainer.accelerator cpu``, for a few epochs of a limited number of batches (``BUDGETS``),
once eager and once with ``--compile.enabled true`` (inductor, ``mode: default``), ``--rounds`` times in
alternation, so that a change of load on the machine falls on both. The first epoch pays the compilation
and is reported alone; ``s/epoch`` is the mean of the other epochs (``gpu_check.EpochTimer``: from an
epoch's start to the next one's, validation and checkpoints included) and ``train s`` their training
steps alone; ``CPU`` the process's CPU seconds (all threads) per epoch, which a busy machine disturbs less
than wall time. ``compiled / eager`` is the ratio of the medians over the rounds: above 1, compiled is
slower. ``whole fit`` includes the compilation (at the first batch of each shape: the sanity check's
validation batches, then the first training batch), which inductor's on-disk cache shortens on later runs.

Lessons whose training does not go through ``forward`` (sine_rnn, scratch_network, word2vec) refuse
``--compile`` and are not measured; tree_lstm's sparse gradients likewise.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _common
import lightning
import torch
from _common import markdown_table
from gpu_check import EpochTimer, summary

from experiments.cli import ExperimentCLI
from experiments.progress import silence_known_warnings

ROOT = Path(__file__).resolve().parent.parent
#: per lesson: epochs (the first is the warm-up), training batches per epoch (None: all), validation
#: batches (None: all), and whether it reads MNIST
BUDGETS: dict[str, dict[str, Any]] = {
    "mnist_convnet": {"epochs": 3, "steps": 15, "val_steps": 2, "mnist": True},
    "logistic_regression": {"epochs": 3, "steps": 40, "val_steps": 4, "mnist": True},
    "linear_regression": {"epochs": 30, "steps": None, "val_steps": None, "mnist": False},
    "first_network": {"epochs": 50, "steps": None, "val_steps": None, "mnist": False},
}


class CPUEpochTimer(EpochTimer):
    """``EpochTimer`` that also takes the process's CPU seconds (all threads) per epoch: on a machine shared
    with other jobs, wall time measures the load as much as the work, CPU time much less so."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: list[float] = []

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.cpu.append(time.process_time())
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_end(trainer, pl_module)
        self.cpu.append(time.process_time())

    def cpu_seconds(self) -> dict[str, float]:
        """The first epoch's CPU seconds and the mean of the others'."""
        per_epoch = [b - a for a, b in itertools.pairwise(self.cpu)]
        return {"first_epoch_cpu_s": per_epoch[0], "epoch_cpu_s": statistics.mean(per_epoch[1:])}


def cli_args(lesson: str, compiled: bool, args: argparse.Namespace) -> list[str]:
    budget = BUDGETS[lesson]
    out = ["--config", str(ROOT / "configs" / f"{lesson}.yaml"), "--trainer.accelerator", "cpu"]
    out += ["--trainer.devices", "1", "--trainer.max_epochs", str(budget["epochs"])]
    out += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    if budget["mnist"]:
        out += ["--data.data_dir", str(Path(args.mnist).resolve())]
    if budget["steps"]:
        out += ["--trainer.limit_train_batches", str(budget["steps"])]
    if budget["val_steps"]:
        out += ["--trainer.limit_val_batches", str(budget["val_steps"])]
    if compiled:
        out += ["--compile.enabled", "true"]
    return out


def run(lesson: str, compiled: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One fit of the lesson in this process; its epochs' times and the whole fit's."""
    torch._dynamo.reset()  # each compiled run compiles afresh, as a new process would
    cli = ExperimentCLI(args=cli_args(lesson, compiled, args), run=False)
    timer = CPUEpochTimer()
    cli.trainer.callbacks.append(timer)
    start, cpu_start = time.perf_counter(), time.process_time()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    result = {**summary(timer.seconds()), **timer.cpu_seconds(), "fit_s": fit_s, "fit_cpu_s": fit_cpu_s}
    result.pop("per_epoch")
    del cli
    gc.collect()
    return result


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for lesson in args.lessons:
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for compiled in (False, True):
                result = run(lesson, compiled, args)
                runs[compiled].append(result)
                name = "compiled" if compiled else "eager"
                print(
                    f"{lesson} {name}: first epoch {result['first_epoch_s']:.2f} s, "
                    f"{result['epoch_s']:.3f} s/epoch, train {result['train_s']:.3f} s, "
                    f"CPU {result['epoch_cpu_s']:.3f} s/epoch, load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )

        def median(compiled: bool, key: str, runs: dict[bool, list[dict[str, Any]]] = runs) -> float:
            return statistics.median(r[key] for r in runs[compiled])

        rows.append(
            {
                "lesson": lesson,
                "steps_per_epoch": runs[False][0]["steps_per_epoch"],
                "epochs_timed": runs[False][0]["epochs_timed"],
                "eager_first_epoch_s": median(False, "first_epoch_s"),
                "compiled_first_epoch_s": median(True, "first_epoch_s"),
                "eager_epoch_s": median(False, "epoch_s"),
                "compiled_epoch_s": median(True, "epoch_s"),
                "eager_train_s": median(False, "train_s"),
                "compiled_train_s": median(True, "train_s"),
                "eager_epoch_cpu_s": median(False, "epoch_cpu_s"),
                "compiled_epoch_cpu_s": median(True, "epoch_cpu_s"),
                "epoch_ratio": median(True, "epoch_s") / median(False, "epoch_s"),
                "cpu_ratio": median(True, "epoch_cpu_s") / median(False, "epoch_cpu_s"),
                "fit_cpu_ratio": median(True, "fit_cpu_s") / median(False, "fit_cpu_s"),
                "train_ratio": median(True, "train_s") / median(False, "train_s"),
                "fit_ratio": median(True, "fit_s") / median(False, "fit_s"),
                "runs": {"eager": runs[False], "compiled": runs[True]},
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    header, row = markdown_table(
        {
            "lesson": "{lesson}",
            "steps/epoch": "{steps_per_epoch:.0f}",
            "first epoch, eager / compiled (s)": "{eager_first_epoch_s:.2f} / {compiled_first_epoch_s:.2f}",
            "s/epoch eager": "{eager_epoch_s:.4f}",
            "s/epoch compiled": "{compiled_epoch_s:.4f}",
            "compiled / eager, epoch": "{epoch_ratio:.2f}x",
            "training steps": "{train_ratio:.2f}x",
            "CPU s/epoch, eager / compiled": "{eager_epoch_cpu_s:.4f} / {compiled_epoch_cpu_s:.4f}",
            "compiled / eager, CPU": "{cpu_ratio:.2f}x",
            "whole fit, compiling included: wall, CPU": "{fit_ratio:.2f}x, {fit_cpu_ratio:.2f}x",
        }
    )
    return header + [row.format(**r) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", help="the folder holding MNIST/raw (for the MNIST lessons)")
    parser.add_argument("--lessons", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--rounds", type=int, default=2, help="eager/compiled pairs per lesson (default 2)")
    parser.add_argument("--output", help="also write every figure to this JSON file")
    args = parser.parse_args()
    if any(BUDGETS[lesson]["mnist"] for lesson in args.lessons) and not args.mnist:
        parser.error("--mnist <folder holding MNIST/raw> is needed for the MNIST lessons")
    silence_known_warnings()
    started, load_start = datetime.now(timezone.utc), os.getloadavg()[0]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="compile_check_") as folder:
        os.chdir(folder)  # the runs' lightning_logs/ go here and are removed with it
        try:
            rows = measure(args)
        finally:
            os.chdir(cwd)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"lightning {lightning.__version__}, {torch.get_num_threads()} torch threads"
    )
    print(
        f"{_common.machine()}; {started:%Y-%m-%d %H:%M} UTC, {machine}, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"load average at the start: {load_start:.1f}")
    print("\n".join(table(rows)))
    if args.output:
        Path(args.output).write_text(json.dumps({"machine": machine, "started": str(started), "rows": rows}))


if __name__ == "__main__":
    main()
