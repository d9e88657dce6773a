"""In-memory datasets batched by indexing: the loader every small-data lesson shares.

A dataset that fits in memory is a few tensors with a common first dimension. Serving it through
``Dataset.__getitem__`` + ``collate`` costs a Python call per sample; indexing the tensors with a
slice of a permutation costs one call per batch. ``TensorBatches`` is that loader. Shuffling is a
pure function of ``(seed, epoch)``, so a run resumed mid-training sees the same order as one that
never stopped; Lightning calls ``sampler.set_epoch`` at the start of every epoch, as it does for a
``DistributedSampler``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor


class EpochPermutation:
    """Indices of one epoch: in order, or a permutation seeded by ``seed + epoch``."""

    def __init__(self, size: int, shuffle: bool, seed: int) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.size, generator=generator)


class TensorBatches:
    """Batches of in-memory tensors, made by indexing them with slices of an epoch's indices.

    Yields tuples ``(t[idx] for t in tensors)``. ``len()`` is the number of batches, which Lightning
    uses for progress bars and ``limit_*_batches``.
    """

    def __init__(
        self,
        *tensors: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        size = len(tensors[0])
        if any(len(t) != size for t in tensors):
            shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
            raise ValueError(f"tensors must share their first dimension, got shapes {shapes}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.drop_last = drop_last
        # Indexing makes a new tensor, so pinning the source would not help: each batch is pinned instead,
        # which lets Lightning's copy to a GPU (non_blocking=True) overlap with compute.
        self.pin_memory = pin_memory
        # Named `sampler` because that is where Lightning looks for `set_epoch`.
        self.sampler = EpochPermutation(size, shuffle, seed)
        # Lightning reads both attributes of any loader; there is no per-sample batch sampler here.
        self.batch_sampler = None

    def __len__(self) -> int:
        size = self.sampler.size
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        indices = self.sampler.indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = indices[start : start + self.batch_size]
            batch = tuple(t[idx] for t in self.tensors)
            yield tuple(t.pin_memory() for t in batch) if self.pin_memory else batch


class InMemoryDataModule(LightningDataModule):
    """A LightningDataModule whose splits are tuples of tensors made in ``make_split``.

    Subclasses build each split's tensors; this class turns them into ``TensorBatches``: the training
    split shuffled with the datamodule's seed (unless ``shuffle_train`` is False: a sequence whose
    order is the data), the others in order.
    """

    shuffle_train: bool = True

    def __init__(self, batch_size: int, seed: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.splits: dict[str, tuple[Tensor, ...]] = {}

    def make_split(self, split: str) -> tuple[Tensor, ...]:
        """Return the tensors of ``split`` (train, val, test or predict)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in needed[stage]:
            if split not in self.splits:
                self.splits[split] = self.make_split(split)

    def _batches(self, split: str, shuffle: bool = False) -> TensorBatches:
        if split not in self.splits:
            self.splits[split] = self.make_split(split)
        return TensorBatches(*self.splits[split], batch_size=self.batch_size, shuffle=shuffle, seed=self.seed)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=self.shuffle_train)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test")

    def predict_dataloader(self) -> TensorBatches:
        return self._batches("predict")
