"""Wall time of an MNIST training epoch as the Lightning experiment against the same work in a plain loop.

    .venv/bin/python benchmarks/mnist_overhead.py --data-dir <folder holding MNIST/raw> \
        [--batches N] [--repeats 3] [--threads T]

Both run in this process on the same data, the same model and the same batches (430 of 128 images:
the 55,000 training images left by ``val_split: 5000``), one epoch each:

- Lightning: ``configs/mnist_convnet.yaml`` through ``ExperimentCLI(..., run=False)`` with
  ``--trainer.max_epochs 1 --trainer.limit_train_batches N --trainer.limit_val_batches 0`` and the
  progress bar and model summary off (as in any non-interactive run); timed is
  ``cli.trainer.fit(cli.model, cli.datamodule)``: the datamodule's ``setup`` (reading MNIST into
  memory), the optimiser, the training loop with the module's per-step loss and accuracy metrics,
  TensorBoard logging (the run folder, ``hparams.yaml``, ``config.yaml``, the epoch's scalars) and
  checkpointing (``last.ckpt`` at the end of the epoch; with validation off there is no ``val/acc`` to
  rank a best checkpoint by). Logs and checkpoints go to a temporary working folder; after each run
  the script checks that the run's event file and ``last.ckpt`` exist.
- plain: ``modules.MNISTConvNet()`` built after ``torch.manual_seed(42)`` (outside the timing, as the
  CLI builds its model before ``fit``); timed is making an ``MNISTDataModule`` with the config's
  arguments (val_split 5000, batch_size 128, normalize false, seed 42) and its ``setup("fit")``,
  ``torch.optim.Adadelta(lr=1.0, rho=0.95, eps=1e-7)`` and, for each of the same N batches of
  ``dm.train_dataloader()``: ``dm.on_after_batch_transfer(batch, 0)``, ``model.train()``,
  ``F.cross_entropy(model(images), labels)``, ``zero_grad``, ``backward``, ``step``.

After a warm-up of a few batches of each (imports, the first TensorBoard writer, first kernels), runs
alternate for ``--repeats`` rounds and the medians are reported:

- ratio: Lightning ``fit`` time / plain time, in wall time and in this process's CPU time (which a busy
  neighbour on a shared machine disturbs less);
- overhead per step: (fit - plain) / training steps, in ms.

Goal: Lightning / plain <= 1.1x, with logging and checkpointing on.

A full epoch takes on the order of a minute on a 2-core CPU, per side and per repeat; ``--batches``
shortens it (for checking that the script runs, not for figures). ``--threads`` sets
``torch.set_num_threads`` (default: torch's own choice).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import machine, markdown_table  # noqa: E402

from datamodules import MNISTDataModule  # noqa: E402
from experiments.cli import ExperimentCLI  # noqa: E402
from experiments.progress import silence_known_warnings  # noqa: E402
from modules import MNISTConvNet  # noqa: E402

CONFIG = REPO / "configs" / "mnist_convnet.yaml"
WARM_UP_BATCHES = 5


def timed(run: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, all threads, steps) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    steps = run()
    return time.perf_counter() - wall, time.process_time() - cpu, steps


def lightning_once(data_dir: str, batches: int | None) -> tuple[float, float, int]:
    """(fit wall s, fit CPU s, training steps) of one epoch of the experiment."""
    args = [
        "--config",
        str(CONFIG),
        "--data.data_dir",
        data_dir,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1.0" if batches is None else str(batches),
        "--trainer.limit_val_batches",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]
    cli = ExperimentCLI(args=args, run=False)

    def fit() -> int:
        cli.trainer.fit(cli.model, cli.datamodule)
        return cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed

    result = timed(fit)
    run_dir = Path(cli.trainer.log_dir)
    logged = any(run_dir.glob("events.out.tfevents.*"))
    if not logged or not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise AssertionError(f"no TensorBoard events or no checkpoints/last.ckpt in {run_dir}")
    return result


def plain_once(data_dir: str, batches: int | None) -> tuple[float, float, int]:
    """(wall s, CPU s, training steps) of one epoch of the plain loop."""
    torch.manual_seed(42)
    model = MNISTConvNet()

    def epoch() -> int:
        dm = MNISTDataModule(data_dir=data_dir, val_split=5000, batch_size=128, normalize=False, seed=42)
        dm.setup("fit")
        optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)
        steps = 0
        for batch in islice(dm.train_dataloader(), batches):
            images, labels = dm.on_after_batch_transfer(batch, 0)
            model.train()
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        return steps

    return timed(epoch)


def measure(data_dir: str, batches: int | None, repeats: int) -> dict:
    lightning_once(data_dir, WARM_UP_BATCHES)
    plain_once(data_dir, WARM_UP_BATCHES)
    fits: list[tuple[float, float, int]] = []
    plains: list[tuple[float, float, int]] = []
    for _ in range(repeats):
        plains.append(plain_once(data_dir, batches))
        fits.append(lightning_once(data_dir, batches))
    steps = {s for *_, s in fits + plains}
    if len(steps) != 1:
        raise AssertionError(f"Lightning and the plain loop ran different numbers of steps: {steps}")
    fit_wall, fit_cpu = (statistics.median(v) for v in list(zip(*fits, strict=True))[:2])
    wall, cpu = (statistics.median(v) for v in list(zip(*plains, strict=True))[:2])
    n = steps.pop()
    return {
        "plain": wall,
        "fit": fit_wall,
        "steps": n,
        "ratio": fit_wall / wall,
        "cpu_ratio": fit_cpu / cpu,
        "plain_ms": wall / n * 1e3,
        "overhead_ms": (fit_wall - wall) / n * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw/*-ubyte")
    parser.add_argument("--batches", type=int, default=None, help="training batches (default: all, 430)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())  # the runs happen in a temporary working folder
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # Besides experiments.main's: the in-memory loader needs no workers; the CLI is given args while
    # this script has its own; with validation off, val/acc cannot rank a best checkpoint.
    silence_known_warnings(
        r".*does not have many workers.*",
        r"LightningCLI's args parameter is intended",
        r".*could not find the monitored key.*",
    )
    epoch = "full epoch" if args.batches is None else f"{args.batches} batches"
    print(
        f"{machine()}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, median of {args.repeats}, {epoch}, "
        f"torch threads {torch.get_num_threads()}, data {data_dir}"
    )
    columns = {
        "plain (s)": "{plain:.3f}",
        "Lightning fit (s)": "{fit:.3f}",
        "ratio": "{ratio:.3f}x",
        "ratio, CPU time": "{cpu_ratio:.3f}x",
        "steps": "{steps}",
        "plain per step (ms)": "{plain_ms:.2f}",
        "overhead per step (ms)": "{overhead_ms:.2f}",
    }
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the experiment's logs and checkpoints go here and are deleted afterwards
        result = measure(data_dir, args.batches, args.repeats)
    header, row = markdown_table(columns)
    print(*header, row.format(**result), sep="\n", flush=True)


if __name__ == "__main__":
    main()
