"""What a callback needs to be correct on several processes: where rank 0 writes, and gathers.

The rule every callback and lesson hook follows (docs/architecture.md states it for lesson authors):

- every rank runs every hook and takes part in every collective: metric ``compute()``, the gathers
  here, ``trainer.strategy`` calls;
- only global rank 0 writes files, figures and TensorBoard entries;
- no collective, and no Trainer property that communicates (``trainer.log_dir`` broadcasts), runs
  inside code that only rank 0 reaches. ``run_dir`` reads the folder without communicating.

Data-parallel loaders give each rank a shard of a split: ``TensorBatches`` and Lightning's distributed
samplers take every ``world_size``-th sample, and may repeat a few to make the shards equal, while a
loader that is not sharded gives every rank all of it. ``gather_samples`` puts per-sample results back
in dataset order, each sample once, whatever the sharding, by the dataset position of every sample:
what one process would have seen.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler

#: One rank's per-sample columns: tensors with a first dimension per sample, or lists.
Columns = dict[str, Tensor | list[Any]]


def run_dir(trainer: Trainer) -> Path | None:
    """The run folder (``lightning_logs/<name>/version_N``; with MLflow the run's artifact folder) on
    global rank 0; None on the other ranks and when the run writes no logs (no logger, ``fast_dev_run``).

    TensorBoard and CSV: the logger's ``log_dir``, as ``trainer.log_dir`` gives it. MLflow: the run's
    own artifact folder (``<artifact location>/<run id>/artifacts``) when it is on this disk, so that what
    is written there is in the run's Artifacts tab; with a tracking server that keeps the artifacts,
    ``<default_root_dir>/<experiment id>/<run id>``, which is uploaded at the end of each stage
    (experiments/cli.py ``RunConfig``). Other loggers: ``save_dir/name/version``, where ModelCheckpoint
    puts their runs' checkpoints. Nothing is broadcast (``trainer.log_dir`` is), so rank-zero-only code
    may call it.
    """
    if not trainer.is_global_zero or trainer.fast_dev_run or not trainer.loggers:
        return None
    logger = trainer.loggers[0]
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return Path(logger.log_dir)
    if isinstance(logger, MLFlowLogger):
        return mlflow_run_dir(trainer, logger)
    if logger.save_dir is None or logger.name is None or logger.version is None:
        return None
    return Path(logger.save_dir) / str(logger.name) / str(logger.version)


#: Each MLflow run id's run folder, and whether its artifacts are elsewhere (asked of the store once per
#: run, not per figure).
_mlflow_folders: dict[str, tuple[Path, bool]] = {}


def mlflow_run_dir(trainer: Trainer, logger: MLFlowLogger) -> Path | None:
    """The run folder of an MLflow logger's run (see ``run_dir``): its artifact folder when it is on this
    disk, else where Lightning puts the checkpoints of a logger without a local ``save_dir``. Starts the
    run if it has not started yet; rank 0 only (the logger's ``experiment`` is rank-zero-only)."""
    run_id = logger.run_id
    if run_id is None:
        return None
    if run_id not in _mlflow_folders:
        artifacts = logger.experiment.get_run(run_id).info.artifact_uri
        parsed = urlparse(artifacts)
        if parsed.scheme == "file":
            _mlflow_folders[run_id] = (Path(unquote(parsed.path)), False)
        elif len(parsed.scheme) <= 1:  # a path (a one-letter scheme: a Windows drive)
            _mlflow_folders[run_id] = (Path(artifacts), False)
        else:
            _mlflow_folders[run_id] = (
                Path(trainer.default_root_dir) / str(logger.experiment_id) / run_id,
                True,
            )
    return _mlflow_folders[run_id][0]


def artifacts_elsewhere(trainer: Trainer) -> MLFlowLogger | None:
    """The run's MLflow logger when its artifacts are not on this disk (a tracking server keeps them), so
    that its run folder is to be uploaded; else None (and on ranks other than 0)."""
    logger = trainer.loggers[0] if trainer.loggers else None
    if not isinstance(logger, MLFlowLogger) or run_dir(trainer) is None:
        return None
    return logger if _mlflow_folders[str(logger.run_id)][1] else None


def _on_cpu(value: Any) -> Any:
    # A CUDA tensor pickled on rank 1 would unpickle onto rank 1's GPU inside rank 0.
    return apply_to_collection(value, Tensor, lambda t: t.detach().cpu())


def gather_objects(trainer: Trainer, value: Any) -> list[Any] | None:
    """Every rank's ``value`` (tensors moved to the CPU), in rank order, on global rank 0; None on the
    other ranks. A collective: every rank must call it. One process: ``[value]``."""
    if trainer.world_size == 1 or not (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    ):
        return [value]
    # Serialised by torch.save, not plain pickle: torch 2.14 pickles a uint32 tensor (numpy's random
    # state) into bytes it cannot unpickle.
    buffer = io.BytesIO()
    torch.save(_on_cpu(value), buffer)
    gathered: list[Any] | None = [None] * trainer.world_size if trainer.is_global_zero else None
    torch.distributed.gather_object(buffer.getvalue(), gathered, dst=0)
    if gathered is None:
        return None
    # Bytes this run's own ranks serialised just above, never a user's file: any object may travel.
    return [torch.load(io.BytesIO(data), weights_only=False) for data in gathered]


def sample_positions(loader: Any, count: int | None = None) -> Tensor | None:
    """The dataset positions of the samples ``loader`` yields in this process, in the order it yields
    them (the first ``count``), for loaders whose order is known: ``TensorBatches`` and its subclasses,
    and a ``DataLoader`` over a map-style dataset (whose sampler Lightning made distributed). None for
    others (an iterable dataset, a streaming loader, a sampler drawing from the global generator)."""
    positions: Tensor | None = None
    if callable(getattr(loader, "shard_indices", None)):
        positions = loader.shard_indices()
    elif isinstance(loader, DataLoader) and loader.batch_sampler is not None:
        sampler = getattr(loader.batch_sampler, "sampler", None)
        # A RandomSampler would draw a new order from the global generator: not the one it served.
        if sampler is not None and not isinstance(sampler, RandomSampler):
            positions = torch.as_tensor(list(sampler), dtype=torch.long)
    if positions is None:
        return None
    return positions if count is None else positions[:count]


def length(columns: Columns) -> int:
    """The number of rows of ``columns`` (0 without columns)."""
    return len(next(iter(columns.values()))) if columns else 0


def take(columns: Columns, index: Tensor) -> Columns:
    """The rows ``index`` of every column."""
    rows = index.tolist()
    return {
        name: column[index] if isinstance(column, Tensor) else [column[i] for i in rows]
        for name, column in columns.items()
    }


def concat(parts: Sequence[Columns]) -> Columns:
    """Columns of several parts, one after the other; a part without columns (a rank that had nothing to
    send) is left out."""
    parts = [part for part in parts if part] or [{}]
    names = parts[0].keys()
    joined: Columns = {}
    for name in names:
        # A rank with no samples may not know its column's type (no prediction to show a shape).
        pieces = [part[name] for part in parts if len(part[name])] or [parts[0][name]]
        if all(isinstance(piece, Tensor) for piece in pieces):
            joined[name] = torch.cat(pieces)  # type: ignore[arg-type]
        else:
            joined[name] = [item for piece in pieces for item in piece]
    return joined


def gather_samples(trainer: Trainer, columns: Columns, positions: Tensor | None) -> Columns | None:
    """Every rank's per-sample ``columns`` on global rank 0, in dataset order and each sample once (the
    first copy of one that several ranks hold); None on the other ranks. A collective: every rank calls it.

    ``positions`` are the dataset positions of this rank's rows (``sample_positions``). Without them the
    ranks' rows are only concatenated in rank order (a loader of unknown order), and one process's
    columns are returned as they are.
    """
    if trainer.world_size == 1:
        return columns if positions is None or not columns else in_order([(columns, positions)])
    parts = gather_objects(trainer, (columns, positions))
    if parts is None:
        return None
    return in_order(parts)


def in_order(parts: Sequence[tuple[Columns, Tensor | None]]) -> Columns:
    """The rows of several parts in order of their dataset positions, each position once (its first
    row); concatenated as they come when a part's positions are unknown."""
    parts = [(part_columns, part_positions) for part_columns, part_positions in parts if part_columns]
    if not parts:
        return {}
    joined = concat([part_columns for part_columns, _ in parts])
    if any(part_positions is None for _, part_positions in parts):
        return joined
    every = torch.cat([part_positions for _, part_positions in parts])
    order = torch.argsort(every, stable=True)
    ordered = every[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return take(joined, order[first])


def interleave(parts: Sequence[Columns]) -> Columns:
    """Rows of each rank's part taken in turn (rank 0's first row, rank 1's first row, ...): the order in
    which one process would have seen them, for loaders that deal samples to ranks in turn."""
    sizes = [length(part) for part in parts]
    starts = [sum(sizes[:rank]) for rank in range(len(parts))]
    index = [
        starts[rank] + row for row in range(max(sizes)) for rank in range(len(parts)) if row < sizes[rank]
    ]
    return take(concat(parts), torch.tensor(index, dtype=torch.long))


def per_sample(outputs: Sequence[Any]) -> Tensor | list[Any] | None:
    """Batch outputs as one row per sample: tensors concatenated, lists (one item per sample) joined;
    None for outputs of another kind (a dict per batch), which have no rows to tell apart."""
    if not outputs:
        return []
    if all(isinstance(output, Tensor) and output.ndim > 0 for output in outputs):
        return torch.cat([output.detach() for output in outputs])
    if all(isinstance(output, (list, tuple)) for output in outputs):
        return [item for output in outputs for item in output]
    return None


def gather_outputs(trainer: Trainer, outputs: Sequence[Any], loader: Any) -> Tensor | list[Any] | None:
    """The batch outputs of a loop over ``loader`` from every rank, on global rank 0 (None on the other
    ranks): one row per sample in dataset order when they have rows (``per_sample``), else the batch
    outputs, rank after rank. A collective: every rank calls it."""
    rows = per_sample(outputs)
    if rows is None:
        columns: Columns = {"outputs": list(outputs)}
        positions = None
    else:
        columns = {"outputs": rows} if len(rows) else {}
        positions = sample_positions(loader, len(rows)) if trainer.world_size > 1 else None
    whole = gather_samples(trainer, columns, positions)
    if whole is None:
        return None
    return whole.get("outputs", [])
