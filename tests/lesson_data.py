"""What the tests that run every lesson config read from a lesson: its config, and the facts its model and
datamodule classes declare about themselves. Nothing here is keyed by a lesson's or a class's name, so a
new config is covered by ``test_precision.py``, ``test_host_syncs.py``, ``test_ddp_lessons.py`` and
``test_packaging.py`` without a change here.

Every attribute is optional, read with ``getattr`` and a default, so a plain Lightning class with none
of them is a complete lesson (docs/architecture.md, "What the tests read from a lesson's classes"):

- datamodule ``write_sample(root) -> dict`` (classmethod): writes a tiny copy of its data under
  ``root`` in the genuine format and returns the init arguments that read it (and small sizes).
  Absent: ``{}``, the data is made in memory or shipped.
- model ``small_args``: init arguments that make the model small enough for a few test steps. ``{}``.
- model and datamodule ``deterministic_args``: init arguments that turn off dropout and augmentation, so
  that a fit on two processes equals one process's; None when the randomness cannot be turned off.
  Absent: ``{}`` for a model, None for a datamodule (a ``DataLoader``'s sampler shuffles differently on
  one and on two processes; ``InMemoryDataModule`` and the image datamodules declare theirs).
- datamodule ``shard`` (``InMemoryDataModule``'s): False when every process serves all the data. True.
- datamodule ``host_random_transfer``: why its batch-transfer hooks read host values on purpose. None.
- datamodule or model ``single_process_fit``: why ``fit`` refuses several processes. None.
- model ``automatic_optimization`` (Lightning's own, on the built module): False leaves a lesson out of
  the host-sync test.
- config ``trainer.logger.init_args.name`` naming another experiment: this config evaluates that
  experiment's checkpoints (feature_extraction of mnist_convnet's).
- config ``trainer.check_val_every_n_epoch``: the epochs a test runs so that it validates once.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CONFIGS

#: At least this many epochs, so that a fit's per-epoch work (checkpoints, figures) runs more than once.
MIN_EPOCHS = 3


def lesson_configs() -> list[str]:
    """The name of every shipped lesson config (``configs/*.yaml``, not the trainer presets)."""
    return sorted(path.stem for path in CONFIGS.glob("*.yaml"))


def resolve_class(class_path: str, package: str) -> type:
    """The class a config's ``class_path`` names: ``package.Name``, ``package.file.Name``, or a bare
    ``Name`` of a registered lesson class, as the command finds it."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module or package), name)


def as_flags(prefix: str, args: dict[str, Any]) -> list[str]:
    """Init arguments as the command's flags: ``--data.val_split=16``, ``--model.dropout=0.0``."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)  # true, null, 0.0, [1, 2]

    return [f"--{prefix}.{key}={text(value)}" for key, value in args.items()]


def init_default(cls: type, name: str) -> Any:
    """The default of ``cls``'s init argument ``name`` (subclasses that pass ``**kwargs`` on included);
    None when no class of its hierarchy takes it."""
    for klass in cls.__mro__:
        parameter = inspect.signature(klass.__init__).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


@dataclass(frozen=True)
class Lesson:
    """A lesson config and its classes, with the facts the every-config tests read from them."""

    name: str
    config: dict[str, Any]
    model: type
    data: type

    @property
    def small_model_args(self) -> dict[str, Any]:
        return dict(getattr(self.model, "small_args", {}))

    def sample_args(self, root: Path) -> dict[str, Any]:
        """Writes the datamodule's sample under ``root``; the init arguments that read it."""
        write = getattr(self.data, "write_sample", None)
        return {} if write is None else dict(write(Path(root)))

    def args(self, root: Path) -> list[str]:
        """Flags that run the config on small data written under ``root``, with a small model."""
        return [*as_flags("data", self.sample_args(root)), *as_flags("model", self.small_model_args)]

    @property
    def deterministic_flags(self) -> list[str] | None:
        """The model's and the datamodule's ``deterministic_args`` as flags; None when either says its
        randomness cannot be turned off."""
        model = getattr(self.model, "deterministic_args", {})
        data = getattr(self.data, "deterministic_args", None)
        if model is None or data is None:
            return None
        return [*as_flags("model", model), *as_flags("data", data)]

    @property
    def host_random_transfer(self) -> str | None:
        return getattr(self.data, "host_random_transfer", None)

    @property
    def single_process_fit(self) -> str | None:
        """Why ``fit`` refuses several processes (the datamodule's reason, else the model's)."""
        reasons = (getattr(cls, "single_process_fit", None) for cls in (self.data, self.model))
        return next((reason for reason in reasons if reason), None)

    @property
    def sharded(self) -> bool:
        return bool(getattr(self.data, "shard", True))

    @property
    def evaluates(self) -> str | None:
        """The experiment whose checkpoints this config evaluates: the name its logger gives runs, when
        that is not its own (the command names runs after the first config file)."""
        logger = (self.config.get("trainer") or {}).get("logger")
        name = logger.get("init_args", {}).get("name") if isinstance(logger, dict) else None
        return name if name and name != self.name else None

    @property
    def epochs(self) -> int:
        """Enough epochs to validate once (``check_val_every_n_epoch``), and at least ``MIN_EPOCHS``."""
        every = (self.config.get("trainer") or {}).get("check_val_every_n_epoch") or 1
        return max(MIN_EPOCHS, int(every))

    @property
    def batch_size(self) -> int | None:
        """The config's ``data.batch_size``, else the datamodule's default; None when it takes none."""
        configured = (self.config["data"].get("init_args") or {}).get("batch_size")
        return configured if configured is not None else init_default(self.data, "batch_size")


@functools.cache
def load_lesson(name: str) -> Lesson:
    """``configs/<name>.yaml`` and the classes it names."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))
    model = resolve_class(config["model"]["class_path"], "modules")
    data = resolve_class(config["data"]["class_path"], "datamodules")
    return Lesson(name, config, model, data)


def lesson_args(name: str, root: Path) -> list[str]:
    """Flags that run ``configs/<name>.yaml`` on small data written under ``root``, with a small model."""
    return load_lesson(name).args(root)


def bypass_cifar_integrity(patch: pytest.MonkeyPatch | None = None) -> None:
    """Accept test-made CIFAR pickles, whose md5 sums cannot match torchvision's: until ``patch`` is
    undone, or in this whole process without one (a DDP rank; a test uses ``cifar_integrity_bypassed``)."""
    from torchvision.datasets import CIFAR10, cifar

    patch = patch or pytest.MonkeyPatch()  # never undone: for the rest of the process
    patch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    patch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
