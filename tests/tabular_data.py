"""Small CSV tables for the tabular tests, written with the csv module as a spreadsheet would save them.

``write_linear_table`` makes ``n`` rows of ``id,a,b,c,price``: an id that is not a number (so a
datamodule must leave unused columns alone), three features on very different scales, and a target
``price = 3a - 2b + c / 100 + 5 + noise`` that a linear model can learn.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

HEADER = ["id", "a", "b", "c", "price"]


def write_rows(path: Path, rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


def linear_table(n: int, seed: int = 0) -> list[list[object]]:
    """The header and ``n`` rows of the linear table."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=generator)
    b = torch.rand(n, generator=generator) * 10
    c = torch.randn(n, generator=generator) * 100 + 500
    price = 3 * a - 2 * b + c / 100 + 5 + 0.1 * torch.randn(n, generator=generator)
    rows: list[list[object]] = [HEADER]
    for i in range(n):
        rows.append([f"house-{i}", *(round(float(v[i]), 6) for v in (a, b, c, price))])
    return rows


def write_linear_table(path: Path, n: int = 40, seed: int = 0) -> Path:
    return write_rows(path, linear_table(n, seed))
