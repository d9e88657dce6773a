"""What checking the data at setup costs: each datamodule's ``setup`` on the real data, with its
``check_data`` and with ``check_data`` replaced by a no-op, in the same process.

    .venv/bin/python benchmarks/data_checks.py --data-root ../shared/data [--repeats 5] [--only mnist ...]

Each datamodule checks what it loads once, at setup (labels within the classes, images of the declared
size, finite targets, well-formed trees, a corpus's ids within its vocabulary; see ``check_data`` in
datamodules/). The timing is of ``setup("fit")`` (the training and validation data), built anew each
repeat; a datamodule with a cache (the JPEG images' decoded tensors, the corpus's encoding) is timed warm,
after a first setup that fills it, because that is what every run after the first pays. Setup with and
without the check alternate; reported are their medians, the median time spent inside ``check_data``
(timed around each call: on a loaded machine the difference of the two setups is mostly noise) and its
share of the setup.

Cases: MNIST (60,000 training images, the IDX files), CIFAR-10 as JPEGs (50,000, extracted from
``cifar10_jpg.tar.gz`` into a temporary folder), the text corpus (tinyshakespeare, 202,651 words, for
word2vec), the SST trees (8,544 + 1,101) and the Boston CSV (506 rows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import machine, markdown_table  # noqa: E402

from datamodules import (  # noqa: E402
    BostonHousingDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    TextCorpusDataModule,
    TreebankDataModule,
)


def cases(data_root: Path, scratch: Path) -> dict[str, Callable[[], Any]]:
    """Each case's name and a function that builds its datamodule (not yet set up)."""

    def cifar() -> ImageFolderDataModule:
        folder = scratch / "cifar10_jpg"
        if not folder.is_dir():
            with tarfile.open(data_root / "cifar10_jpg.tar.gz") as archive:
                archive.extractall(folder, filter="data")
        return ImageFolderDataModule(
            data_dir=str(folder), val_split=5000, cache_dir=str(scratch / "cifar_cache")
        )

    return {
        "mnist": lambda: MNISTDataModule(data_dir=str(data_root), val_split=5000),
        "cifar10_jpg": cifar,
        "corpus": lambda: TextCorpusDataModule(
            path=str(data_root / "text" / "tinyshakespeare.txt"), cache_dir=str(scratch / "corpus_cache")
        ),
        "sst": lambda: TreebankDataModule(data_dir=str(data_root / "sst")),
        "boston": lambda: BostonHousingDataModule(),
    }


def time_setup(build: Callable[[], Any], checked: bool) -> tuple[float, float]:
    """Seconds of one ``setup("fit")`` of a new datamodule, its check on or replaced by a no-op, and the
    seconds spent inside ``check_data`` itself (timed around each call; 0 without the check)."""
    datamodule = build()
    if hasattr(datamodule, "prepare_data"):
        datamodule.prepare_data()
    inside = [0.0]
    original = type(datamodule).check_data

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - start

    replacement = timed if checked else (lambda *args, **kwargs: None)
    with mock.patch.object(type(datamodule), "check_data", replacement):
        start = time.perf_counter()
        datamodule.setup("fit")
        return time.perf_counter() - start, inside[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="the folder of ../shared/data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    print(machine())
    print(f"# setup('fit') with and without check_data, median of {args.repeats}, warm caches")
    header, row = markdown_table(
        {
            "data": "{name}",
            "setup with check (s)": "{with_:.3f}",
            "without (s)": "{without:.3f}",
            "in check_data (s)": "{check:.4f}",
            "check / setup": "{share:.1%}",
        }
    )
    print("\n".join(header))
    with tempfile.TemporaryDirectory() as scratch:
        for name, build in cases(args.data_root, Path(scratch)).items():
            if args.only and name not in args.only:
                continue
            time_setup(build, checked=True)  # fills the caches; a failing check stops here, as it should
            timings: dict[bool, list[float]] = {True: [], False: []}
            inside: list[float] = []
            for _ in range(args.repeats):
                for checked in (False, True):
                    seconds, in_check = time_setup(build, checked)
                    timings[checked].append(seconds)
                    if checked:
                        inside.append(in_check)
            with_, without = statistics.median(timings[True]), statistics.median(timings[False])
            check = statistics.median(inside)
            print(row.format(name=name, with_=with_, without=without, check=check, share=check / with_))


if __name__ == "__main__":
    main()
