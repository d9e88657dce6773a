"""Dummy data of the first-network lesson (神经网络实现): inputs ~ N(0, 1), binary targets.

The tutorial draws one batch ``x = torch.randn(10, 10)`` and types ten 0/1 targets by hand. Here every
split is drawn from a generator seeded by ``seed`` and the split's name, so the same seed gives the
same data whatever else consumed the global random state, and the splits are independent draws.
"""

from __future__ import annotations

import zlib
from typing import ClassVar

import torch
from torch import Tensor

from core.domains import PositiveInt, Seed, require_at_least
from datamodules.tensors import InMemoryDataModule, check_memory


class RandomTensorDataModule(InMemoryDataModule):
    """Random inputs ``(n, n_features)`` ~ N(0, 1) and binary float targets ``(n, 1)``.

    Args:
        n_features: Width of each input vector (the tutorial's ``n_in``; >= 1).
        n_train: Training samples (>= 1); the tutorial trains on one batch of 10.
        n_val: Validation samples (>= 1).
        n_test: Test samples, also used by ``predict`` (>= 1).
        batch_size: Samples per batch (>= 1); the tutorial's is 10, the whole training set.
        seed: Seeds the data and the training shuffle (0 to 2**32 - 1).
    """

    #: What ``predict`` runs on, for the message that answers ``--data.predict_path`` (this data is made
    #: or named by its own arguments, not read from the user's files).
    predicts_on: ClassVar[str] = "the --data.n_test random inputs it draws (the tutorial's dummy data)"

    def __init__(
        self,
        n_features: PositiveInt = 10,
        n_train: PositiveInt = 10,
        n_val: PositiveInt = 10,
        n_test: PositiveInt = 10,
        batch_size: PositiveInt = 10,
        seed: Seed = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        require_at_least("data", 1, n_features=n_features, n_train=n_train, n_val=n_val, n_test=n_test)
        # each split's inputs and targets, float32 (one split at a time is made twice over, at most)
        samples = n_train + n_val + 2 * n_test + max(n_train, n_val, n_test)
        flags = f"--data.n_features={n_features} with n_train={n_train}, n_val={n_val}, n_test={n_test}"
        check_memory(4 * (n_features + 1) * samples, flags)
        self.n_features = n_features
        self.sizes = {"train": n_train, "val": n_val, "test": n_test, "predict": n_test}

    def make_split(self, split: str) -> tuple[Tensor, Tensor]:
        # predict sees the test inputs; crc32 gives each split a stable, distinct stream.
        stream = "test" if split == "predict" else split
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(stream.encode()))
        n = self.sizes[split]
        x = torch.randn(n, self.n_features, generator=generator)
        y = torch.randint(0, 2, (n, 1), generator=generator).float()
        return x, y
