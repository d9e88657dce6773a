"""Callback pieces that lessons build on: reading a small split whole, keeping validation samples for a
figure, and writing what ``predict`` returns. Each gathers from every rank what one process would have
seen (``core.distributed``); global rank 0 draws or writes it.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from core.distributed import Columns, gather_outputs, gather_samples, run_dir, sample_positions
from core.domains import FileName, PositiveInt
from core.figures import draws_this_validation, new_figure
from core.files import write_atomic


def peek(loader: Any) -> Iterator[Any]:
    """Iterate over ``loader`` without touching its state: a ``TensorBatches`` told where a resumed epoch
    starts (``resume_at``) keeps that for the loop, which iterates it after the callbacks' peek."""
    return iter(copy.copy(loader))


def collect(loader: Any) -> tuple[Tensor, ...]:
    """Concatenate every batch of a small loader into one tuple of tensors (empty without batches)."""
    batches = list(peek(loader))
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


def collect_all(trainer: Trainer, loader: Any) -> tuple[Tensor, ...] | None:
    """Every sample of a small split, in dataset order (where the loader's order is known), on global
    rank 0 (None on the other ranks): each rank collects its shard of ``loader`` and rank 0 puts them
    together. Every rank must call it."""
    parts = collect(loader)
    columns: Columns = {str(i): part for i, part in enumerate(parts)}
    positions = sample_positions(loader, len(parts[0])) if parts else None
    whole = gather_samples(trainer, columns, positions)
    return None if whole is None else tuple(whole[str(i)] for i in range(len(whole)))


class PredictionWriter(BasePredictionWriter):
    """Writes what ``predict`` returns into ``<run folder>/<filename>``: every sample's prediction in dataset
    order, gathered from every process, as one tensor (batch outputs that are tensors, concatenated) or
    one list (batch outputs that are lists, one item per sample); other batch outputs are saved as the
    list of them. With several predict loaders, a list of those, one per loader.

    Beside it, ``<run folder>/<table>`` (``predictions.csv``) holds one row per input that a person reads
    without decoding anything: first the input's name, from the datamodule's ``predict_names`` (a file, a
    CSV file's line; numbered from 0 when it has none) under its ``predict_name_column`` (``input`` by
    default), then the columns the module's ``prediction_table(predictions, datamodule)`` returns (a class
    name and its probability, a value under the target's name, landmarks, a caption). A module without
    that method, or one that returns None, gets ``filename`` only. Each file is written whole or not at all
    (a temporary file renamed into place).

    Args:
        filename: File name inside the run folder (a name, not a path).
        table: File name of the CSV table inside the run folder; null: no table.
    """

    def __init__(
        self, filename: FileName = "predictions.pt", table: FileName | None = "predictions.csv"
    ) -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.table = table

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        loaders = trainer.predict_dataloaders
        several = isinstance(loaders, (list, tuple))
        per_loader = predictions if several else [predictions]
        loader_list = list(loaders) if several else [loaders]
        # Every rank gathers (a collective per loader); only rank 0 has a folder to write to.
        gathered = [
            gather_outputs(trainer, outputs, loader)
            for outputs, loader in zip(per_loader, loader_list, strict=True)
        ]
        folder = run_dir(trainer)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if self.write(trainer, gathered if several else gathered[0], folder / self.filename):
            rank_zero_info(f"Predictions written to {folder / self.filename}")
        if self.table is not None and not several and self.table != self.filename:
            rows = prediction_rows(trainer.datamodule, pl_module, gathered[0])
            if rows is not None:
                write_csv(folder / self.table, rows)
                rank_zero_info(f"Predictions, one row per input, written to {folder / self.table}")

    def write(self, trainer: Trainer, predictions: Any, path: Path) -> bool:
        """Write ``predictions`` (every sample's, in dataset order: see the class) to ``path``; False when
        there is nothing to write. Subclasses write other formats."""
        temporary = path.with_name(f"{path.name}.tmp")
        torch.save(predictions, temporary)
        temporary.replace(path)
        return True


def prediction_rows(datamodule: Any, module: Any, predictions: Any) -> list[list[Any]] | None:
    """``predictions`` (every input's, in order) as CSV rows, header first: the input's name (the
    datamodule's ``predict_names``, else its number), then the columns of the module's
    ``prediction_table``. None when the module has no table for them. Plain Python on gathered values:
    no collective, so rank 0 alone may call it."""
    table = getattr(module, "prediction_table", None)
    columns = table(predictions, datamodule) if callable(table) else None
    if not columns:
        return None
    count = len(next(iter(columns.values())))
    if any(len(values) != count for values in columns.values()):
        lengths = {name: len(values) for name, values in columns.items()}
        raise ValueError(f"prediction_table's columns differ in length: {lengths}")
    names = list(getattr(datamodule, "predict_names", None) or [])
    if len(names) != count:
        names = list(range(count))
    header = [getattr(datamodule, "predict_name_column", "input"), *columns]
    rows = zip(*columns.values(), strict=True)
    return [header, *([name, *row] for name, row in zip(names, rows, strict=True))]


def write_csv(path: Path, rows: list[list[Any]]) -> None:
    """``rows`` (header first) as a CSV file at ``path``, written whole or not at all."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    write_atomic(path, text.getvalue())


def _joined(parts: tuple[Tensor | list[Any], ...]) -> Tensor | list[Any]:
    """One column of kept samples from its per-batch parts: tensors concatenated, lists joined."""
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)  # type: ignore[arg-type]
    return [item for part in parts for item in part]


class ValidationSamples(Callback):
    """Keeps the first ``num_images`` validation samples of an epoch, with what the module returned for
    them, for a figure drawn at the epoch's end, when TensorBoard images are logged. On several processes
    every rank keeps the first of its shard and rank 0 gets the first ``num_images`` of the whole split
    (``take``), the samples one process would have kept.

    Subclasses say what to keep of a batch (``sample``: tensors, or lists such as captions, one entry per
    sample) and draw in ``on_validation_epoch_end`` from ``take()``, which every rank calls and rank 0
    alone gets samples from; ``subplots`` lays out one panel per sample. The module's validation outputs
    are a tensor by default (``keeps`` says otherwise). ``num_images`` and ``columns`` are counts >= 1.
    """

    def __init__(self, num_images: PositiveInt, columns: PositiveInt) -> None:
        self.num_images = num_images
        self.columns = columns
        self._kept: list[tuple[Tensor | list[Any], ...]] = []
        self._positions: Tensor | None = None  # of this rank's validation samples, under several processes
        self._seen = 0  # validation samples of this rank so far in the epoch
        self._kept_positions: list[Tensor] = []

    def sample(self, batch: Any, outputs: Any) -> tuple[Tensor | list[Any], ...]:
        """Per-sample tensors (first dimension: the batch's samples) or lists to keep of one batch."""
        raise NotImplementedError

    def keeps(self, outputs: Any) -> bool:
        """Whether a validation batch's ``outputs`` are what ``sample`` reads: a tensor by default."""
        return isinstance(outputs, Tensor)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._kept, self._kept_positions, self._seen = [], [], 0
        self._positions = None
        if trainer.world_size > 1 and draws_this_validation(trainer):
            loaders = trainer.val_dataloaders
            self._positions = sample_positions(loaders[0] if isinstance(loaders, (list, tuple)) else loaders)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != 0 or not self.keeps(outputs) or not draws_this_validation(trainer):
            return
        first, self._seen = self._seen, self._seen + len(outputs)
        room = self.num_images - sum(len(part[0]) for part in self._kept)
        if room > 0:
            kept = tuple(
                t[:room].detach().cpu() if isinstance(t, Tensor) else list(t[:room])
                for t in self.sample(batch, outputs)
            )
            self._kept.append(kept)
            if self._positions is not None:
                self._kept_positions.append(self._positions[first : first + len(kept[0])])

    def take(self, trainer: Trainer) -> tuple[Tensor | list[Any], ...] | None:
        """The kept samples, concatenated, on global rank 0; None on the other ranks, when there are none,
        or when no figure is wanted. Emptied. Every rank must call it (it gathers)."""
        parts, self._kept = self._kept, []
        positions, self._kept_positions = self._kept_positions, []
        if not draws_this_validation(trainer):
            return None
        columns: Columns = {}
        if parts:
            columns = {str(i): _joined(kept) for i, kept in enumerate(zip(*parts, strict=True))}
        known = self._positions is not None and bool(positions)
        whole = gather_samples(trainer, columns, torch.cat(positions) if known else None)
        if not whole:
            return None
        return tuple(whole[str(i)][: self.num_images] for i in range(len(whole)))

    def subplots(self, count: int, cell: tuple[float, float], title_height: float) -> tuple[Any, Any]:
        """A figure of ``count`` panels, ``columns`` per row, each ``cell`` inches, and its axes."""
        columns = min(self.columns, count)
        rows = math.ceil(count / columns)
        size = (cell[0] * columns, cell[1] * rows + title_height)
        # Constrained layout, unlike tight_layout, leaves room for the suptitle above the titles.
        figure = new_figure(size, layout="constrained")
        return figure, figure.subplots(rows, columns, squeeze=False)
