"""One rank of a multi-process test run: the experiments commands of a plan, one after another, in this
process, so that a dozen lessons' fit, validate, test and predict run under DDP for the price of one
launch. Started by torchrun (``python -m torch.distributed.run ... -m tests.ddp_driver plan.json``); the
first command's Trainer joins the process group and the later ones reuse it.

The plan (JSON): ``{"steps": [{"name": ..., "args": [...]}, ...], "step_timeout": seconds, "results":
folder}``. Each command goes through ``experiments.main.main`` as a user's would. Before each one this
prints ``ddp-step <name>``; a command that has not returned after ``step_timeout`` seconds dumps every
thread's stack and ends the process (a deadlock becomes a failure naming its step, and torchrun stops
the other rank). After each, ``<results>/rank<N>.json`` gets the step's exit status, the metrics its
Trainer ended with, its run folder, its epoch count and the epoch early stopping stopped it at (None when
it did not).
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import EarlyStopping

import experiments.cli
import experiments.main
from tests.lesson_data import bypass_cifar_integrity


class RecordingCLI(experiments.cli.ExperimentCLI):
    """The command's CLI, remembered so that the driver can read the Trainer a command ran."""

    last: RecordingCLI | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        RecordingCLI.last = self
        super().__init__(*args, **kwargs)


def outcome(code: int | str | None) -> dict[str, Any]:
    cli = RecordingCLI.last
    trainer = getattr(cli, "trainer", None)
    metrics = {} if trainer is None else {k: float(v) for k, v in trainer.callback_metrics.items()}
    loggers = [] if trainer is None else trainer.loggers
    # The logger's own folder, not trainer.log_dir: that one broadcasts, and the run is over.
    folder = loggers[0].log_dir if loggers and getattr(loggers[0], "log_dir", None) else None
    folder = None if folder is None else str(Path(folder).resolve())
    epoch = None if trainer is None else trainer.current_epoch
    stops = [] if trainer is None else [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    stopped = stops[0].stopped_epoch if stops and stops[0].stopping_reason.value else None
    return {"code": code, "metrics": metrics, "run": folder, "epoch": epoch, "stopped_epoch": stopped}


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    results_file = Path(plan["results"]) / f"rank{rank}.json"
    bypass_cifar_integrity()
    # main() builds whatever experiments.cli.ExperimentCLI names when it runs.
    experiments.cli.ExperimentCLI = RecordingCLI
    results: dict[str, Any] = {}
    for step in plan["steps"]:
        print(f"ddp-step {step['name']}", flush=True)
        RecordingCLI.last = None
        faulthandler.dump_traceback_later(plan["step_timeout"], exit=True)
        code: int | str | None = 0
        try:
            experiments.main.main(step["args"])
        except SystemExit as stop:
            code = stop.code
        finally:
            faulthandler.cancel_dump_traceback_later()
        results[step["name"]] = outcome(code)
        results_file.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print("ddp-done", flush=True)


if __name__ == "__main__":
    main()
