"""In-memory datasets batched by indexing: the loader every small-data lesson shares.

A dataset that fits in memory is a few tensors with a common first dimension. Serving it through
``Dataset.__getitem__`` + ``collate`` costs a Python call per sample; indexing the tensors with a
slice of a permutation costs one call per batch. ``TensorBatches`` is that loader. Shuffling is a
pure function of ``(seed, epoch)``, so a run resumed mid-training sees the same order as one that
never stopped; Lightning calls ``sampler.set_epoch`` at the start of every epoch, as it does for a
``DistributedSampler``.

Lightning replaces the sampler only of a ``DataLoader``, so ``TensorBatches`` shards itself across
processes the way ``DistributedSampler`` does: every rank draws the same epoch permutation and takes
every ``num_replicas``-th index from position ``rank``. Rank r's batch k then holds positions
``k * B * R + r + R * j`` of the permutation, so the R ranks' k-th batches together are exactly the
k-th batch of one process with batch size ``B * R``: a DDP run computes what one process with the same
global batch computes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch import Tensor

from core.domains import PositiveInt, require_at_least
from core.errors import DataConfigError


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


def shard_arguments(trainer: Trainer | None, split: str) -> dict[str, Any]:
    """``TensorBatches``' sharding arguments for ``split`` in this process: its rank among the trainer's
    processes (one process outside a distributed run), and equal shards for training only, whose ranks
    must take the same number of steps, while evaluation counts every sample once."""
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    return {"num_replicas": world, "rank": rank, "equal_shards": split == "train"}


class TensorBatches:
    """Batches of in-memory tensors, made by indexing them with slices of an epoch's indices.

    Yields tuples ``(t[idx] for t in tensors)``. ``len()`` is the number of batches, which Lightning
    uses for progress bars and ``limit_*_batches``.

    With ``num_replicas > 1`` this process serves only its shard (see the module docstring).
    ``equal_shards`` pads the permutation by repeating its start, as ``DistributedSampler`` does, so
    every rank has the same number of batches: training needs that, since each step all-reduces
    gradients. Evaluation leaves it off so that no sample is counted twice in a metric (torchmetrics
    synchronises unequal shards correctly).
    """

    def __init__(
        self,
        *tensors: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        pin_memory: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        equal_shards: bool = False,
    ) -> None:
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        size = len(tensors[0])
        if any(len(t) != size for t in tensors):
            shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
            raise ValueError(f"tensors must share their first dimension, got shapes {shapes}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
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
        self.num_replicas = num_replicas
        self.rank = rank
        self.equal_shards = equal_shards
        self._start_batch = 0

    def shard_size(self) -> int:
        """How many samples this process serves per epoch."""
        size = self.sampler.size
        if self.equal_shards:
            return math.ceil(size / self.num_replicas)
        return len(range(self.rank, size, self.num_replicas))

    def __len__(self) -> int:
        size = self.shard_size()
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    def resume_at(self, batch: int) -> None:
        """Start the next iteration at batch ``batch`` of the epoch (a run resumed mid-epoch), once."""
        self._start_batch = batch

    def shard_indices(self) -> Tensor:
        """This process's indices for the current epoch, in the order they are served."""
        indices = self.sampler.indices()
        if self.equal_shards and len(indices) % self.num_replicas:
            pad = self.num_replicas - len(indices) % self.num_replicas
            indices = torch.cat([indices, indices.repeat(math.ceil(pad / len(indices)))[:pad]])
        return indices[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        indices = self.shard_indices()
        first, self._start_batch = self._start_batch, 0
        for start in range(first * self.batch_size, len(self) * self.batch_size, self.batch_size):
            idx = indices[start : start + self.batch_size]
            batch = tuple(t[idx] for t in self.tensors)
            yield tuple(t.pin_memory() for t in batch) if self.pin_memory else batch


def available_memory() -> int | None:
    """Bytes of memory this machine can still give a process (Linux's ``MemAvailable``; else the free
    physical pages), or None where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(nbytes: int, what: str) -> None:
    """Refuse, before it is made, data that needs more memory than this machine has free: a generated set
    of 2**31 points was taken in by the system's overcommit and the run killed by its out-of-memory
    killer mid-draw, with no message. ``what`` names the flags that set the size."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise DataConfigError(
            f"{what} needs {nbytes / 1e9:.1f} GB of memory, and this machine has {free / 1e9:.1f} GB free: "
            "make it smaller"
        )


def check_tensors(source: str, tensors: tuple[Tensor, ...], names: tuple[str, ...] = ()) -> None:
    """Refuse tensors that do not share their first dimension (one entry per sample) or hold a value that
    is not finite, with a ``DataConfigError`` naming ``source``, the tensor, the sample and the value.

    Vectorised: one pass of ``isfinite`` over each floating tensor; the first bad sample is looked for
    only when there is one. ``names`` name the tensors in the message (default: ``tensor 0``, ...).
    """
    label = [names[i] if i < len(names) else f"tensor {i}" for i in range(len(tensors))]
    if len({len(t) for t in tensors}) > 1:
        shapes = ", ".join(f"{name} {tuple(t.shape)}" for name, t in zip(label, tensors, strict=True))
        raise DataConfigError(f"{source}: the tensors need one entry per sample, got shapes {shapes}")
    for name, tensor in zip(label, tensors, strict=True):
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        flat = tensor.reshape(len(tensor), -1)
        bad = ~torch.isfinite(flat)
        sample = int(bad.any(dim=1).nonzero()[0])
        value = flat[sample][bad[sample]][0].item()
        raise DataConfigError(
            f"{source}: {name} of sample {sample} (counting from 0) holds {value}; every value must be a "
            "finite number"
        )


class InMemoryDataModule(LightningDataModule):
    """A LightningDataModule whose splits are tuples of tensors made in ``make_split``.

    Subclasses build each split's tensors; this class checks them once (``check_data``) and turns them
    into ``TensorBatches``: the training split shuffled with the datamodule's seed (unless
    ``shuffle_train`` is False: a sequence whose order is the data), the others in order; each sharded
    across processes unless ``shard`` is False.

    Args:
        batch_size: Samples per batch (>= 1).
        seed: Seeds the training shuffle (0 to 2**32 - 1).
    """

    shuffle_train: bool = True
    #: Whether each process of a data-parallel run serves its own shard of every split (the default), or
    #: every process serves all of it: data that cannot be split, such as one sequence trained point by
    #: point, or a full batch of three samples. All processes then compute the same update.
    shard: bool = True
    #: The arguments that make a fit deterministic, so that two processes compute what one does (tests
    #: compare them; docs/architecture.md): none for data made in memory and served in a seeded order. A
    #: subclass that augments sets the arguments that turn it off, or None when it cannot be turned off.
    deterministic_args: ClassVar[dict[str, Any] | None] = {}

    def __init__(self, batch_size: PositiveInt, seed: int) -> None:
        super().__init__()
        # The parser refuses it from the command line; this is for a caller in Python.
        require_at_least("data", 1, batch_size=batch_size)
        self.batch_size = batch_size
        self.seed = seed
        self.splits: dict[str, tuple[Tensor, ...]] = {}

    def make_split(self, split: str) -> tuple[Tensor, ...]:
        """Return the tensors of ``split`` (train, val, test or predict)."""
        raise NotImplementedError

    def check_data(self, split: str, tensors: tuple[Tensor, ...]) -> None:
        """Check ``split``'s tensors once, when they are made (never per batch): one entry per sample in
        each, every floating value finite. A subclass that reads files overrides it to name the file and
        the row; a ``DataConfigError`` is raised at setup, before any training step."""
        check_tensors(f"{type(self).__name__}'s {split} split", tensors)

    def split_tensors(self, split: str) -> tuple[Tensor, ...]:
        """``split``'s tensors, made by ``make_split`` and checked by ``check_data`` on first use."""
        if split not in self.splits:
            tensors = self.make_split(split)
            self.check_data(split, tensors)
            self.splits[split] = tensors
        return self.splits[split]

    def setup(self, stage: str) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in needed[stage]:
            self.split_tensors(split)

    def _batches(self, split: str, shuffle: bool = False) -> TensorBatches:
        return TensorBatches(
            *self.split_tensors(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            **shard_arguments(self.trainer if self.shard else None, split),
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=self.shuffle_train)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test")

    def predict_dataloader(self) -> TensorBatches:
        return self._batches("predict")
