"""Pairs per second of the word2vec lesson's update forms, on one thread, on a real corpus's batches.

    .venv/bin/python benchmarks/word2vec_update.py CORPUS [CORPUS ...] [--update-rows 1024] [--repeats 5]

For each CORPUS (a plain-text file, read by ``TextCorpusDataModule`` with ``configs/word2vec.yaml``'s
settings: min_count 5, sample 1e-3, window 5, 5 negatives, 16,384-center batches) one epoch's training
batches are made once; then, alternating, each form updates a fresh 100-dimensional ``SkipGramModel``
with all of them, in ``--update-rows`` slices at learning rate 0.025, on one thread
(``torch.set_num_threads(1)``):

- loop: ``closed_form_step`` with ``cpu_loop`` (word2vec.c's loop compiled by numba,
  ``modules._word2vec_loop``);
- matrix: ``closed_form_step`` without it (gather, batched matrix products, scatter; what a GPU runs);
- autograd: the tutorial's ``forward`` on the slice's pairs, ``backward`` and ``torch.optim.SGD`` on the
  sparse gradients (``closed_form: false``).

Printed: each form's median (context, center) pairs per second over ``--repeats``, and its ratio to the
matrix form's. The thread's CPU time is the clock (``time.thread_time``), so other tenants of a shared
machine move the figures less than wall time would.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from datamodules.text_corpus import TextCorpusDataModule  # noqa: E402
from modules import SkipGramModel  # noqa: E402

Slices = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def autograd_step(model: SkipGramModel) -> Callable:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025)

    def step(rows: tuple[torch.Tensor, ...], lr: float) -> None:
        loss = model(*model.pairs(rows))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def forms(vocab_size: int) -> dict[str, Callable[[], Callable]]:
    """Each form: builds a fresh model and returns its update of one slice."""
    return {
        "loop": lambda: SkipGramModel(vocab_size).closed_form_step,
        "matrix": lambda: SkipGramModel(vocab_size, cpu_loop=False).closed_form_step,
        "autograd": lambda: autograd_step(SkipGramModel(vocab_size, closed_form=False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--update-rows", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    for path in args.corpora:
        # Its encoded corpus goes to a temporary folder that it removes itself.
        data = TextCorpusDataModule(path=str(path), batch_size=16384, val_fraction=0, test_fraction=0)
        data.setup("fit")
        slices: Slices = [
            rows
            for batch in data.train_dataloader().batches(0)
            for rows in zip(*(t.split(args.update_rows) for t in batch), strict=True)
        ]
        pairs = sum(int((rows[1] >= 0).sum()) for rows in slices)
        print(f"\n## {path.name}: vocabulary {data.vocab_size:,}, {len(slices)} slices, {pairs:,} pairs")
        seconds: dict[str, list[float]] = {name: [] for name in forms(data.vocab_size)}
        for _ in range(args.repeats):
            for name, build in forms(data.vocab_size).items():
                step = build()
                start = time.thread_time()
                for rows in slices:
                    step(rows, 0.025)
                seconds[name].append(time.thread_time() - start)
        matrix = statistics.median(seconds["matrix"])
        for name, times in seconds.items():
            median = statistics.median(times)
            print(f"{name:9s} {pairs / median:12,.0f} pairs/s  ({matrix / median:.2f}x the matrix form)")


if __name__ == "__main__":
    main()
