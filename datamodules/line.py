"""Points on a noisy line for the linear-regression lesson (线性回归): y = m·x + c + noise.

As in the tutorial: 256 points, m = 2, c = 3, x ~ U(0, 1), noise ~ N(0, 0.25²). The tutorial fits all 256;
here a seeded fraction is held out for validation, and a separate draw of ``n_test`` points from the
same line serves ``test`` and ``predict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from datamodules.tensors import InMemoryDataModule


class LineDataModule(InMemoryDataModule):
    """``(x, y)`` pairs of shape ``(n, 1)`` on the line ``y = slope·x + intercept + noise``.

    Args:
        n_points: Points drawn for training and validation together.
        slope: The line's slope m.
        intercept: The line's intercept c.
        noise_std: Standard deviation of the Gaussian noise added to y.
        val_fraction: Fraction of ``n_points`` held out for validation, chosen by a seeded permutation.
        n_test: Points of a separate draw for ``test`` and ``predict``.
        batch_size: Samples per batch.
        seed: Seeds the points, the split and the training shuffle.
    """

    def __init__(
        self,
        n_points: int = 256,
        slope: float = 2.0,
        intercept: float = 3.0,
        noise_std: float = 0.25,
        val_fraction: float = 0.2,
        n_test: int = 64,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
        n_val = round(n_points * val_fraction)
        if n_val < 1 or n_points - n_val < 1:
            raise ValueError(f"n_points={n_points} with val_fraction={val_fraction} leaves a split empty")
        self.n_points, self.n_val, self.n_test = n_points, n_val, n_test
        self.slope, self.intercept, self.noise_std = slope, intercept, noise_std

    @classmethod
    def write_sample(cls, root: Path) -> dict[str, Any]:
        """Tests' sizes (the points are made in memory: nothing is written): 40 points, 32 for training,
        which two processes share evenly (an odd count would make one of them repeat a point)."""
        return {"n_points": 40}

    def _draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.rand(n, 1, generator=generator)
        noise = torch.randn(n, 1, generator=generator) * self.noise_std
        return x, self.slope * x + self.intercept + noise

    def make_split(self, split: str) -> tuple[Tensor, Tensor]:
        if split in ("test", "predict"):
            return self._draw(self.n_test, torch.Generator().manual_seed(self.seed + 1))
        generator = torch.Generator().manual_seed(self.seed)
        x, y = self._draw(self.n_points, generator)
        order = torch.randperm(self.n_points, generator=generator)
        idx = order[self.n_val :] if split == "train" else order[: self.n_val]
        return x[idx], y[idx]
