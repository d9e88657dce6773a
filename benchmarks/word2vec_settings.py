"""The word2vec lesson's fit time under different settings, the variants interleaved in one process.

    .venv/bin/python benchmarks/word2vec_settings.py CORPUS REPEATS "OVERRIDES" ["OVERRIDES" ...]

Each OVERRIDES is a space-separated list of command-line overrides of ``configs/word2vec.yaml`` (e.g.
``"--data.batch_size=4096"``; ``""`` for the config as it is). The corpus's last 5 % of lines are left
out, as in ``word2vec_vs_gensim.py``, and every variant trains as that script trains ours: 2 workers, no
validation or callbacks, ``datamodule.prepare()`` untimed. Repeat ``r`` runs every variant once, in
order, with seed ``42 + r``. Printed per variant: the median wall and CPU seconds of ``trainer.fit`` and
the ratio of the first variant's median wall time to its own (above 1: faster than the first).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from word2vec_vs_gensim import ours_cli  # this folder is on the path of a script run from it


def fit_seconds(corpus: Path, folder: Path, seed: int, overrides: list[str]) -> tuple[float, float]:
    cli = ours_cli(corpus, folder, seed, ["--model.workers=2", *overrides])
    wall, cpu = time.perf_counter(), time.process_time()
    cli.trainer.fit(cli.model, cli.datamodule)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("repeats", type=int)
    parser.add_argument("variants", nargs=argparse.REMAINDER, help='overrides, e.g. "--data.batch_size=4096"')
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    variants = [variant.split() for variant in args.variants]
    times: list[list[tuple[float, float]]] = [[] for _ in variants]
    with tempfile.TemporaryDirectory() as tmp:
        lines = args.corpus.read_text(encoding="utf-8").splitlines()
        corpus = Path(tmp) / f"{args.corpus.stem}.train.txt"
        corpus.write_text("\n".join(lines[: len(lines) - round(len(lines) * 0.05)]) + "\n", encoding="utf-8")
        for repeat in range(args.repeats):
            for index, overrides in enumerate(variants):
                folder = Path(tmp) / f"run{repeat}-{index}"
                times[index].append(fit_seconds(corpus, folder, 42 + repeat, overrides))
    first = statistics.median(wall for wall, _ in times[0])
    for overrides, runs in zip(variants, times, strict=True):
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        name = " ".join(overrides) or "(the config)"
        print(f"{name:40s} wall {wall:6.3f} s, CPU {cpu:6.3f} s: {first / wall:.2f}x the first")


if __name__ == "__main__":
    main()
