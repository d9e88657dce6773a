"""Points on a noisy line for the linear-regression lesson (线性回归): y = m·x + c + noise.

As in the tutorial: 256 points, m = 2, c = 3, x ~ U(0, 1), noise ~ N(0, 0.25²). The tutorial fits all 256;
here a seeded fraction is held out for validation, and a separate draw of ``n_test`` points from the
same line serves ``test`` and ``predict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from core.domains import FiniteFloat, Fraction, NonNegativeFloat, PositiveInt, Seed, require_at_least
from core.errors import DataConfigError
from datamodules.tensors import InMemoryDataModule, check_memory


class LineDataModule(InMemoryDataModule):
    """``(x, y)`` pairs of shape ``(n, 1)`` on the line ``y = slope·x + intercept + noise``.

    Args:
        n_points: Points drawn for training and validation together (>= 2: one of each).
        slope: The line's slope m (a finite number).
        intercept: The line's intercept c (a finite number).
        noise_std: Standard deviation of the Gaussian noise added to y (finite, >= 0).
        val_fraction: Fraction of ``n_points`` held out for validation, chosen by a seeded permutation
            (in (0, 1), leaving at least one point in each split).
        n_test: Points of a separate draw for ``test`` and ``predict`` (>= 1).
        batch_size: Samples per batch (>= 1).
        seed: Seeds the points, the split and the training shuffle (0 to 2**32 - 1).
    """

    #: What ``predict`` runs on, for the message that answers ``--data.predict_path`` (this data is made
    #: or named by its own arguments, not read from the user's files).
    predicts_on: ClassVar[str] = (
        "a fresh draw of --data.n_test points of its line (y = slope x + intercept + noise)"
    )

    def __init__(
        self,
        n_points: PositiveInt = 256,
        slope: FiniteFloat = 2.0,
        intercept: FiniteFloat = 3.0,
        noise_std: NonNegativeFloat = 0.25,
        val_fraction: Fraction = 0.2,
        n_test: PositiveInt = 64,
        batch_size: PositiveInt = 32,
        seed: Seed = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        if not 0.0 < val_fraction < 1.0:
            raise DataConfigError(
                f"--data.val_fraction must be strictly between 0 and 1, got {val_fraction}: the line holds "
                "out a share of its points for validation"
            )
        n_val = round(n_points * val_fraction)
        if n_val < 1 or n_points - n_val < 1:
            raise DataConfigError(
                f"--data.n_points={n_points} with --data.val_fraction={val_fraction} leaves a split empty "
                f"({n_points - n_val} training, {n_val} validation points): draw more points or change the "
                "fraction"
            )
        require_at_least("data", 1, n_test=n_test)
        # x, the noise and y of every point, float32, and as much again while they are made
        flags = f"--data.n_points={n_points} with --data.n_test={n_test}"
        check_memory(2 * 3 * 4 * (n_points + n_test), flags)
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
