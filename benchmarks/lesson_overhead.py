"""Wall time of each lesson as a Lightning experiment against the tutorial's plain PyTorch loop.

    .venv/bin/python benchmarks/lesson_overhead.py [--repeats 5] [--lessons sine_rnn ...]

Both run in this process on the same data: the experiment from the lesson's config through the CLI,
with TensorBoard logging, checkpointing, the learning-rate monitor and the lesson's figures on (progress
bar and model summary off, as in any non-interactive run); the plain loop is tests/tutorial_loops.py, the
loop the parity tests check the experiment against. After one warm-up of each, runs alternate, and the
medians are reported:

- fit ratio: ``trainer.fit`` time / plain-loop time, in wall time and in this process's CPU time (which
  a busy neighbour on a shared machine disturbs less);
- end-to-end ratio: the same plus parsing the config and building the trainer, model and data;
- overhead per step: (fit - plain) / Lightning training steps, in ms;
- Lightning's floor: ``trainer.fit`` of the same module and data with every callback removed, no
  logger and no validation (what any Lightning run of this module pays), as a ratio to the plain loop.

The machine is a shared VM whose speed drifts from run to run; the runs alternate so that drift hits
both sides alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from _common import machine, markdown_table  # noqa: E402

from experiments.cli import ExperimentCLI  # noqa: E402
from experiments.progress import silence_known_warnings  # noqa: E402
from tests import tutorial_loops  # noqa: E402

FLAGS = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def plain_runners(lesson: str, dm) -> dict[str, Callable[[], object]]:
    """The plain loops to compare with: the tutorial's; for sine_rnn also the same loop updating through
    torch.optim.SGD, which is what the experiment runs (its optimiser is injected)."""
    dm.setup("fit")
    x, y = dm.splits["train"]
    if lesson == "first_network":
        return {"tutorial loop": lambda: tutorial_loops.first_network(x, y)}
    if lesson == "linear_regression":
        return {
            "tutorial loop": lambda: tutorial_loops.linear_regression(
                x, y, batch_size=dm.batch_size, shuffle_seed=dm.seed
            )
        }
    return {
        "tutorial loop (w -= lr * grad)": lambda: tutorial_loops.sine_rnn(x, y),
        "tutorial loop, torch.optim.SGD": lambda: tutorial_loops.sine_rnn(x, y, update="sgd"),
    }


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


BARE = ["--trainer.logger=false", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0"]


def lightning_once(lesson: str, bare: bool = False) -> tuple[float, float, float, int, object]:
    """(end-to-end wall s, fit wall s, fit CPU s, training steps, datamodule) of one experiment run;
    ``bare``: without callbacks, logger or validation."""
    start = time.perf_counter()
    config = ["--config", str(REPO / "configs" / f"{lesson}.yaml"), *FLAGS]
    cli = ExperimentCLI(args=[*config, *(BARE if bare else [])], run=False)
    if bare:
        cli.trainer.callbacks[:] = []  # the lesson's and the CLI's own (checkpoints, faults, figures)
    built = time.perf_counter()
    fit_wall, fit_cpu = timed(lambda: cli.trainer.fit(cli.model, cli.datamodule))
    steps = cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed
    return built - start + fit_wall, fit_wall, fit_cpu, steps, cli.datamodule


def measure(lesson: str, repeats: int) -> list[dict]:
    *_, steps, dm = lightning_once(lesson)  # warm-up: imports, matplotlib, first TensorBoard writer
    runners = plain_runners(lesson, dm)
    plain: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    fits: list[tuple[float, float, float]] = []
    bare: list[float] = []
    for run in runners.values():
        run()
    lightning_once(lesson, bare=True)
    for _ in range(repeats):
        for name, run in runners.items():
            plain[name].append(timed(run))
        total, fit_wall, fit_cpu, _, _ = lightning_once(lesson)
        fits.append((total, fit_wall, fit_cpu))
        bare.append(lightning_once(lesson, bare=True)[1])
    total, fit_wall, fit_cpu = (statistics.median(v) for v in zip(*fits, strict=True))
    bare_fit = statistics.median(bare)
    rows = []
    for name, values in plain.items():
        wall, cpu = (statistics.median(v) for v in zip(*values, strict=True))
        rows.append(
            {
                "lesson": lesson,
                "baseline": name,
                "plain": wall,
                "fit": fit_wall,
                "total": total,
                "steps": steps,
                "fit_ratio": fit_wall / wall,
                "total_ratio": total / wall,
                "cpu_ratio": fit_cpu / cpu,
                "overhead_ms": (fit_wall - wall) / steps * 1e3,
                "bare": bare_fit,
                "bare_ratio": bare_fit / wall,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--lessons", nargs="+", default=["first_network", "linear_regression", "sine_rnn"])
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: threads only add noise
    silence_known_warnings(r"LightningCLI's args parameter", r".*does not have many workers.*")
    for name in ("lightning.pytorch", "lightning.fabric"):  # per-run seed and device lines
        logging.getLogger(name).setLevel(logging.WARNING)
    print(f"{machine()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, median of {args.repeats}")
    columns = {
        "lesson": "{lesson}",
        "baseline": "{baseline}",
        "plain (s)": "{plain:.3f}",
        "Lightning fit (s)": "{fit:.3f}",
        "fit ratio": "{fit_ratio:.2f}x",
        "fit ratio, CPU time": "{cpu_ratio:.2f}x",
        "end-to-end (s)": "{total:.3f}",
        "end-to-end ratio": "{total_ratio:.2f}x",
        "Lightning steps": "{steps}",
        "overhead per step (ms)": "{overhead_ms:.2f}",
        "Lightning floor (s)": "{bare:.3f}",
        "floor ratio": "{bare_ratio:.2f}x",
    }
    header, row = markdown_table(columns)
    print(*header, sep="\n")
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the experiments' logs and checkpoints go here and are deleted afterwards
        for lesson in args.lessons:
            for result in measure(lesson, args.repeats):
                print(row.format(**result), flush=True)


if __name__ == "__main__":
    main()
