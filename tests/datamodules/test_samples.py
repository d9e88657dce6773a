"""The small data the datamodules declare for tests (``write_sample``, datamodules/_samples.py): each
datamodule reads the sample it writes, in its genuine format, and a plain class declares nothing."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule

import datamodules
from tests.lesson_data import Lesson

#: Every registered datamodule that reads files and says how to write a tiny copy of them.
WRITERS = sorted(
    name
    for name in datamodules.__all__
    if inspect.isclass(cls := getattr(datamodules, name))
    and issubclass(cls, LightningDataModule)
    and callable(getattr(cls, "write_sample", None))
)


def init_arguments(cls: type) -> set[str]:
    """The init argument names of ``cls`` and of the classes it passes ``**kwargs`` on to."""
    inits = (vars(klass)["__init__"] for klass in cls.__mro__ if "__init__" in vars(klass))
    names = {name for init in inits for name in inspect.signature(init).parameters}
    return names - {"self", "args", "kwargs"}


def tensors(batch: object) -> list[object]:
    """The parts of a batch: a tensor, a tuple or dict of them, or an object holding them."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, dict):
        return list(batch.values())
    return list(batch) if isinstance(batch, (tuple, list)) else list(vars(batch).values())


@pytest.mark.parametrize("name", WRITERS)
def test_a_datamodule_reads_the_sample_it_writes(
    name: str, tmp_path: Path, cifar_integrity_bypassed: None
) -> None:
    cls = getattr(datamodules, name)
    args = cls.write_sample(tmp_path / "sample")
    # Only init arguments, in plain values a config or a flag can hold.
    assert set(args) <= init_arguments(cls), args
    assert all(isinstance(v, (str, int, float, bool)) for v in args.values()), args
    data = cls(**args)
    data.setup("fit")
    try:
        for loader in (data.train_dataloader(), data.val_dataloader()):
            parts = tensors(next(iter(loader)))
            assert any(isinstance(t, torch.Tensor) and len(t) > 0 for t in parts), (name, parts)
    finally:
        data.teardown("fit")


def test_a_plain_lesson_declares_nothing_and_gets_the_defaults(tmp_path: Path) -> None:
    class Plain(LightningModule):
        pass

    class PlainData(LightningDataModule):
        pass

    lesson = Lesson("plain", {"data": {"class_path": "PlainData"}}, Plain, PlainData)
    assert lesson.args(tmp_path) == [] and not any(tmp_path.iterdir())  # nothing written
    assert lesson.small_model_args == {}
    # A DataLoader's sampler shuffles differently on one and two processes: no exact comparison.
    assert lesson.deterministic_flags is None
    assert lesson.sharded and lesson.batch_size is None
    assert lesson.host_random_transfer is None and lesson.single_process_fit is None
    assert lesson.evaluates is None and lesson.epochs == 3
