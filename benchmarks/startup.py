"""Start-up cost of the experiments command against a bare LightningCLI script doing the same.

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--config configs/linear_regression.yaml]

(``make bench-startup``.) Each figure is the wall time of a fresh ``python`` process (``sys.executable``),
this process's environment with the repository first on ``PYTHONPATH``, each run in its own empty
temporary working folder (its ``lightning_logs/`` is deleted afterwards). Pairs:

- import only: ``python -c "import experiments.main"`` against ``python -c "import lightning.pytorch.cli"``,
  to the imports done (the command then writes ``time.time()`` to ``$STARTUP_STAMP_FILE``) and to the
  process's exit: the interpreter's teardown of the ~3,700 modules torch and Lightning load takes a
  second or more, paid by every command of either side;
- ``fit --help``: ``python -m experiments fit --help`` against ``python bare.py fit --help``;
- command to first training step: ``python -m experiments fit --config <config> --trainer.max_epochs 1``
  against ``python bare.py fit`` with the same arguments, where ``bare.py`` (written to a temporary
  folder) is stock Lightning: ``from lightning.pytorch.cli import LightningCLI; LightningCLI()``. Stock
  LightningCLI accepts the lesson config unchanged (linear_regression.yaml holds only ``model``, ``data``
  and ``trainer``), so both get the same model, datamodule, figure callback and trainer settings. Both
  get ``--trainer.callbacks+=benchmarks.startup.FirstStep``, a callback that writes ``time.time()`` to
  the file named by ``$STARTUP_STAMP_FILE`` at the first training batch; the figure is that time minus
  ``time.time()`` taken just before the process is started;
- whole command: the same runs, from the start to the exit of the process (one epoch, the end-of-fit
  figure and messages included).

After one untimed run of every command (file-system caches, byte-code), the repeats alternate the two
sides, and which of them goes first, so that a drifting machine hits both alike; medians are reported, with
the CPU time (user + system) of the child process for the commands timed to their exit. The goal: command
to first step <= bare LightningCLI + 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

REPO = Path(__file__).resolve().parent.parent
STAMP_VARIABLE = "STARTUP_STAMP_FILE"
#: stock Lightning: every argument of LightningCLI at its default
BARE_SCRIPT = """from lightning.pytorch.cli import LightningCLI

if __name__ == "__main__":
    LightningCLI()
"""
GOAL_S = 1.0


class FirstStep(Callback):
    """Writes the wall clock (``time.time()``) at the first training batch to ``$STARTUP_STAMP_FILE``."""

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        path = os.environ.get(STAMP_VARIABLE)
        if path and trainer.global_step == 0 and batch_idx == 0:
            Path(path).write_text(repr(time.time()))


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository first on ``PYTHONPATH`` (as tests/conftest.py)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(command: list[str], stamped: bool) -> dict[str, float]:
    """Run ``command`` in a fresh empty folder: wall seconds to its exit (``total``), its CPU seconds and,
    when ``stamped``, the seconds to the time it writes to ``$STARTUP_STAMP_FILE`` (``stamp``)."""
    with tempfile.TemporaryDirectory(prefix="startup-") as folder:
        stamp = Path(folder) / "stamp.txt"
        work = Path(folder) / "work"
        work.mkdir()
        env = subprocess_env(**{STAMP_VARIABLE: str(stamp)})
        cpu = children_cpu()
        start = time.time()
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        end = time.time()
        cpu = children_cpu() - cpu
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        result = {"total": end - start, "cpu": cpu}
        if stamped:
            if not stamp.exists():
                raise RuntimeError(f"{' '.join(command)} wrote no time to ${STAMP_VARIABLE}:\n{done.stdout}")
            result["stamp"] = float(stamp.read_text()) - start
        return result


def commands(bare: Path, config: Path) -> dict[str, dict[str, list[str]]]:
    """For each measurement, the command of each side."""
    python = sys.executable
    stamp = f"import os, time; open(os.environ[{STAMP_VARIABLE!r}], 'w').write(repr(time.time()))"
    fit = ["fit", "--config", str(config), "--trainer.max_epochs", "1"]
    fit.append("--trainer.callbacks+=benchmarks.startup.FirstStep")
    return {
        "import": {
            "ours": [python, "-c", f"import experiments.main; {stamp}"],
            "bare": [python, "-c", f"import lightning.pytorch.cli; {stamp}"],
        },
        "help": {
            "ours": [python, "-m", "experiments", "fit", "--help"],
            "bare": [python, str(bare), "fit", "--help"],
        },
        "fit": {"ours": [python, "-m", "experiments", *fit], "bare": [python, str(bare), *fit]},
    }


#: the measurements whose commands write a time to $STARTUP_STAMP_FILE
STAMPED = ("import", "fit")


def measure(pairs: dict[str, dict[str, list[str]]], repeats: int) -> dict[str, dict[str, list[dict]]]:
    """``repeats`` runs of every command after an untimed one, the two sides alternating."""
    runs: dict[str, dict[str, list[dict]]] = {name: {"ours": [], "bare": []} for name in pairs}
    for name, sides in pairs.items():
        for command in sides.values():
            run_once(command, name in STAMPED)
    for repeat in range(repeats):
        order = ["ours", "bare"] if repeat % 2 == 0 else ["bare", "ours"]
        for name, sides in pairs.items():
            for side in order:
                runs[name][side].append(run_once(sides[side], name in STAMPED))
        print(f"repeat {repeat + 1}/{repeats} done", file=sys.stderr, flush=True)
    return runs


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def spread(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    return f"{min(values):.2f}–{max(values):.2f}"


#: (label, measurement, figure, whether the child's CPU time belongs to the figure)
ROWS = [
    ("import only: to the imports done", "import", "stamp", False),
    ("import only: to the process's exit", "import", "total", True),
    ("`fit --help`: to the process's exit", "help", "total", True),
    ("**command to first training step**", "fit", "stamp", False),
    ("whole command (1 epoch): to the process's exit", "fit", "total", True),
]


def table(runs: dict[str, dict[str, list[dict]]]) -> list[str]:
    lines = [
        "| measure | ours (s) | bare LightningCLI (s) | ours - bare (s) | ours / bare "
        "| ours min–max | bare min–max | ours CPU (s) | bare CPU (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, name, key, has_cpu in ROWS:
        ours, bare = runs[name]["ours"], runs[name]["bare"]
        a, b = median(ours, key), median(bare, key)
        cpu = (f"{median(ours, 'cpu'):.2f}", f"{median(bare, 'cpu'):.2f}") if has_cpu else ("-", "-")
        lines.append(
            f"| {label} | {a:.2f} | {b:.2f} | {a - b:+.2f} | {a / b:.2f}x "
            f"| {spread(ours, key)} | {spread(bare, key)} | {cpu[0]} | {cpu[1]} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "linear_regression.yaml")
    args = parser.parse_args()
    config = args.config.resolve()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {version('torch')}, lightning {version('lightning')}, "
        f"jsonargparse {version('jsonargparse')}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{config.name}, median of {args.repeats}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="startup-bare-") as folder:
        bare = Path(folder) / "bare.py"
        bare.write_text(BARE_SCRIPT)
        runs = measure(commands(bare, config), args.repeats)
    print("\n".join(table(runs)))
    gap = median(runs["fit"]["ours"], "stamp") - median(runs["fit"]["bare"], "stamp")
    verdict = "met" if gap <= GOAL_S else "NOT met"
    print(f"\nGoal: command to first step <= bare LightningCLI + {GOAL_S:g} s: {gap:+.2f} s, {verdict}.")
    teardown = {
        side: statistics.median(r["total"] - r["stamp"] for r in runs["import"][side])
        for side in ("ours", "bare")
    }
    print(
        "Interpreter exit after the imports alone (paid by every command of either side): "
        f"{teardown['ours']:.2f} s ours, {teardown['bare']:.2f} s bare."
    )


if __name__ == "__main__":
    main()
