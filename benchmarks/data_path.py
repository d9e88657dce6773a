"""Samples per second of one epoch of MNIST training data: torchvision's per-sample pipeline against ours.

    .venv/bin/python benchmarks/data_path.py --data-dir <folder holding MNIST/raw> [--repeats 3] [--batches N]

Both read the same 60,000 training images from the same IDX files in this process. Measured is the
wall time of one epoch, from making the loader to its last batch, with every sample of every batch
counted; samples/s = samples / that time. The dataset is built once, outside the timing (on both sides
it is torchvision parsing the IDX files into one uint8 tensor):

- baseline, the usual per-sample pipeline: ``torchvision.datasets.MNIST(root, train=True,
  transform=Compose([ToTensor(), Normalize((0.1307,), (0.3081,))]))`` and ``DataLoader(batch_size=128,
  shuffle=True, num_workers=W)``, its batches iterated; one row for W = 0 and one for W = 2 (the workers
  start anew every epoch, as with a default ``DataLoader``, and that start is part of the epoch);
- ours: ``datamodules.MNISTDataModule(data_dir, batch_size=128, val_split=0)`` after ``setup("fit")``
  (``val_split=0`` is allowed: ``_val_count`` accepts 0, so all 60,000 images are training images, as
  on the baseline side), ``train_dataloader()`` iterated and every batch passed through
  ``dm.on_after_batch_transfer(batch, 0)``, which is where the uint8 batch becomes float and is
  normalised with the same two constants. Outside a Trainer ``dm.trainer`` is None, so no augmentation
  runs (MNIST has none configured anyway).

Before timing, the script checks that both paths turn the same images into the same float tensors.
After a warm-up of a few batches of each, the pipelines alternate for ``--repeats`` rounds and the
medians are reported, with the ratio ours / baseline (samples/s) for each baseline row.

Goal: ours >= 20x the samples/s of the per-sample pipeline.

``--batches N`` stops each epoch after N batches: for checking that the script runs, not for figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torchvision  # noqa: E402
from _common import machine, markdown_table  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

from datamodules import MNISTDataModule  # noqa: E402

BATCH_SIZE = 128
MEAN, STD = (0.1307,), (0.3081,)
WARM_UP_BATCHES = 5


def per_sample_dataset(data_dir: str) -> datasets.MNIST:
    """The baseline's dataset: PIL image -> ToTensor -> Normalize, one sample at a time."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    return datasets.MNIST(data_dir, train=True, transform=transform)


def in_memory_datamodule(data_dir: str) -> MNISTDataModule:
    """Our datamodule with every training image in the training split, set up (images in memory)."""
    dm = MNISTDataModule(data_dir=data_dir, batch_size=BATCH_SIZE, val_split=0)
    dm.setup("fit")
    return dm


def check_same_tensors(dataset: datasets.MNIST, dm: MNISTDataModule, count: int = 256) -> None:
    """Both paths turn the same uint8 images into the same normalised float tensors."""
    if len(dm.splits["train"][1]) != len(dataset):
        raise AssertionError(f"ours serves {len(dm.splits['train'][1])} images, baseline {len(dataset)}")
    expected = torch.stack([dataset[i][0] for i in range(count)])
    raw = (dataset.data[:count].unsqueeze(1), dataset.targets[:count])
    images, _ = dm.on_after_batch_transfer(raw, 0)
    torch.testing.assert_close(images, expected)


def per_sample_epoch(dataset: datasets.MNIST, workers: int, limit: int | None) -> int:
    """One epoch (or ``limit`` batches) of the per-sample pipeline; returns the samples seen."""
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers)
    samples = 0
    for _images, labels in islice(loader, limit):
        samples += len(labels)
    return samples


def in_memory_epoch(dm: MNISTDataModule, limit: int | None) -> int:
    """One epoch (or ``limit`` batches) of ours, each batch made float and normalised; returns the samples."""
    samples = 0
    for batch in islice(dm.train_dataloader(), limit):
        _images, labels = dm.on_after_batch_transfer(batch, 0)
        samples += len(labels)
    return samples


def timed(run: Callable[[], int]) -> tuple[float, int]:
    """(wall seconds, samples) of ``run()``."""
    start = time.perf_counter()
    samples = run()
    return time.perf_counter() - start, samples


def measure(data_dir: str, workers: list[int], repeats: int, limit: int | None) -> list[dict]:
    dataset = per_sample_dataset(data_dir)
    dm = in_memory_datamodule(data_dir)
    check_same_tensors(dataset, dm)
    runners: dict[str, Callable[[int | None], int]] = {
        f"per-sample, num_workers={w}": (lambda n, w=w: per_sample_epoch(dataset, w, n)) for w in workers
    }
    runners["ours"] = lambda n: in_memory_epoch(dm, n)
    for run in runners.values():  # warm-up: worker start, first allocations
        run(WARM_UP_BATCHES)
    times: dict[str, list[tuple[float, int]]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            times[name].append(timed(lambda run=run: run(limit)))
    results = {}
    for name, values in times.items():
        seconds = statistics.median(t for t, _ in values)
        samples = values[0][1]
        if any(n != samples for _, n in values):
            raise AssertionError(f"{name}: the sample count changed between repeats: {values}")
        results[name] = {"pipeline": name, "seconds": seconds, "samples": samples, "rate": samples / seconds}
    ours = results["ours"]["rate"]
    for result in results.values():
        result["ratio"] = "—" if result["pipeline"] == "ours" else f"{ours / result['rate']:.1f}x"
    return list(results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw/*-ubyte")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=None, help="batches per epoch (default: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="baseline num_workers rows")
    args = parser.parse_args()
    epoch = "full epoch" if args.batches is None else f"{args.batches} batches per epoch"
    print(
        f"{machine()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {time.strftime('%Y-%m-%d')}, "
        f"median of {args.repeats}, {epoch}, batch size {BATCH_SIZE}, baseline workers {args.workers}, "
        f"torch threads {torch.get_num_threads()}, data {args.data_dir}"
    )
    columns = {
        "pipeline": "{pipeline}",
        "epoch (s)": "{seconds:.3f}",
        "samples": "{samples}",
        "samples/s": "{rate:,.0f}",
        "ours / this": "{ratio}",
    }
    header, row = markdown_table(columns)
    print(*header, sep="\n")
    for result in measure(args.data_dir, args.workers, args.repeats, args.batches):
        print(row.format(**result), flush=True)


if __name__ == "__main__":
    main()
