"""The domains of the command's own settings that no type hint of ours states: Lightning's ``--trainer.*``
keys and the injected optimizer's and scheduler's arguments (the types of every other argument are in
core/domains.py).

``check_nulls`` refuses ``null`` for a configured class's argument whose type does not take None (the
parser lets it through for classes chosen by ``class_path``).

``check_config`` runs on the parsed config before anything is built (``ExperimentCLI``'s
``before_instantiate_classes``): a value outside its domain is an ``ExperimentError`` naming the flag, one
line, before a folder is made or a step trained.

Lightning's Trainer refuses some of these itself, in messages that do not name the flag, and lets others
through (checked with Lightning 2.6): ``gradient_clip_val -1`` (a negative clip flips or pins every
gradient), ``.inf`` (no clipping: leave it unset for that) and ``.nan`` (reported as a clash with
``clip_gradients``); ``accumulate_grad_batches -1`` (trains as 1) and ``0`` (a traceback in a thread);
``val_check_interval 0`` and ``check_val_every_n_epoch 0`` (ZeroDivisionError tracebacks);
``val_check_interval 0.0`` (validates after every batch); ``check_val_every_n_epoch -1``,
``log_every_n_steps -1``, ``min_epochs -3``, ``min_steps -3``, ``num_sanity_val_steps -2`` (all
accepted); ``devices -2`` (a TypeError traceback). The ``limit_*_batches`` keep Lightning's meaning: an
int is a count of batches (0 skips the phase), a float a fraction of them in [0, 1] (1.0: all).
"""

from __future__ import annotations

import importlib
import inspect
import math
import types
import typing
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from jsonargparse import Namespace

from core.domains import FolderPath
from core.errors import ExperimentError
from core.optim import check_injected
from experiments.links import DATA_TO_MODEL


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count_or_fraction(value: Any) -> bool:
    """Lightning's ``limit_*_batches``: an int count >= 0, or a float fraction in [0, 1]."""
    return (_integer(value) and value >= 0) or (isinstance(value, float) and 0 <= value <= 1)


def _interval(value: Any) -> bool:
    """``val_check_interval``: every n >= 1 training batches, or a fraction of an epoch in (0, 1]."""
    if isinstance(value, timedelta):  # Lightning 2.6 also takes a duration
        return value.total_seconds() > 0
    return (_integer(value) and value >= 1) or (isinstance(value, float) and 0 < value <= 1)


def _at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: _integer(value) and value >= low


def _devices(value: Any) -> bool:
    """A number of devices (-1: all of them), a list of indices or a string Lightning reads ("auto",
    "0,1"); a bare number must be -1 or at least 1."""
    if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("-").isdigit():
            return True  # "auto", "0,1", "[0]": Lightning's to read
        value = int(value)
    return not _integer(value) or value == -1 or value >= 1


def _clip(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


_BATCHES = (_count_or_fraction, "a count of batches (an integer >= 0) or a fraction in [0, 1]")

#: Lightning's Trainer keys: the test a set value must pass, and its domain as the message says it.
TRAINER: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_epochs": (_at_least(-1), "a number of epochs >= 0, or -1 for no limit"),
    "min_epochs": (_at_least(0), "a number of epochs >= 0"),
    "max_steps": (_at_least(-1), "a number of steps >= 0, or -1 for no limit"),
    "min_steps": (_at_least(0), "a number of steps >= 0"),
    **dict.fromkeys(
        ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"),
        _BATCHES,
    ),
    "overfit_batches": _BATCHES,
    "val_check_interval": (
        _interval,
        "a count of training batches >= 1, or a fraction of an epoch in (0, 1] (1.0: at its end)",
    ),
    "check_val_every_n_epoch": (_at_least(1), "a number of epochs >= 1, or null (with val_check_interval)"),
    "log_every_n_steps": (_at_least(0), "a number of steps >= 0 (0: no logging within an epoch)"),
    "accumulate_grad_batches": (_at_least(1), "a number of batches >= 1 (1: no accumulation)"),
    "gradient_clip_val": (_clip, "a finite number >= 0 (0 or null: no clipping)"),
    "num_sanity_val_steps": (_at_least(-1), "a number of batches >= 0, or -1 for the whole validation set"),
    "fast_dev_run": (
        lambda value: isinstance(value, bool) or _at_least(0)(value),
        "true, false or a number of batches >= 0",
    ),
    "devices": (_devices, "a number of devices >= 1, -1 for all, a list of indices or auto"),
    "num_nodes": (_at_least(1), "a number of machines >= 1"),
    "reload_dataloaders_every_n_epochs": (_at_least(0), "a number of epochs >= 0 (0: never)"),
}


def check_trainer(trainer: Namespace) -> None:
    """Refuse a set Trainer key outside its domain (``TRAINER``), and a file as ``default_root_dir``."""
    for key, (valid, domain) in TRAINER.items():
        value = trainer.get(key)
        if value is not None and not valid(value):
            raise ExperimentError(f"--trainer.{key} {value!r} is out of range: give {domain}")
    root = trainer.get("default_root_dir")
    if root is not None:
        try:
            FolderPath(root)
        except ValueError as error:
            raise ExperimentError(f"--trainer.default_root_dir: {error}") from None


def _injected(config: Any) -> tuple[type | None, dict[str, Any]]:
    """The class and arguments of an injected ``class_path``/``init_args`` setting; (None, {}) for a
    module's default (a function, not a setting)."""
    if not isinstance(config, Namespace) or not isinstance(config.get("class_path"), str):
        return None, {}
    module, _, name = config.class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None, {}  # the parser has reported it already, or the real build will
    init_args = config.get("init_args")
    args = {k: v for k, v in vars(init_args).items() if not k.startswith("__")} if init_args else {}
    return cls, args


def check_model(model: Namespace) -> None:
    """Refuse what the injected optimizer or scheduler class will not take (``core.optim.check_injected``)."""
    init_args = model.get("init_args") if isinstance(model, Namespace) else None
    if not isinstance(init_args, Namespace):
        return
    optimizer_class, optimizer_args = _injected(init_args.get("optimizer"))
    scheduler_class, scheduler_args = _injected(init_args.get("lr_scheduler"))
    check_injected(optimizer_class, optimizer_args, scheduler_class, scheduler_args)


def _takes_none(annotation: Any) -> bool:
    """Whether a parameter typed ``annotation`` may be None (``X | None``, ``Optional``, ``Any``)."""
    if annotation is Any or annotation is None or annotation is type(None):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes_none(arg) for arg in typing.get_args(annotation))
    return False


def _parameter(cls: Any, key: str) -> tuple[inspect.Parameter, Any] | None:
    """The ``__init__`` parameter ``key`` of ``cls`` and its type, looked up through the base classes a
    ``**kwargs`` passes it on to (CIFAR10DataModule's ``seed`` is ImageClassificationDataModule's);
    None when it is not found or its type cannot be read."""
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__") if isinstance(klass, type) else klass
        if init is None:
            continue
        try:
            parameter = inspect.signature(init).parameters.get(key)
            if parameter is not None:
                hints = typing.get_type_hints(init)
                return (parameter, hints[key]) if key in hints else None
        except Exception:  # a signature or hint that cannot be read: the parser's word stands
            return None
    return None


def check_nulls(setting: Any, flag: str) -> None:
    """Refuse ``null`` for an argument of a configured class whose type does not take None.

    jsonargparse lets ``null`` through for the ``init_args`` of a class chosen by ``class_path`` (a
    model's, a datamodule's, the injected optimizer's) even where the type says ``int``: the class then
    failed with a traceback (``seed + 7``, ``None(parameters)``). Nested classes are checked too.
    """
    if not isinstance(setting, Namespace) or not isinstance(setting.get("class_path"), str):
        return
    init_args = setting.get("init_args")
    if not isinstance(init_args, Namespace):
        return
    module, _, name = setting.class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # the parser or the real build reports a class it cannot find
        return
    for key, value in vars(init_args).items():
        if flag == "--model" and key in DATA_TO_MODEL:
            continue  # null: "from the data", filled in when the datamodule is built (experiments/links.py)
        found = _parameter(cls, key) if value is None else None
        if found is not None and found[0].default is not None and not _takes_none(found[1]):
            default = found[0].default
            plain_default = isinstance(default, (bool, int, float, str))  # not a function's repr
            hint = f" (its default is {default!r})" if plain_default else ""
            raise ExperimentError(f"{flag}.{key}: null is not a value it takes{hint}: give a value")
        check_nulls(value, f"{flag}.{key}")


def check_config(config: Namespace) -> None:
    """Every check of this module on a run's parsed config (the subcommand's part of it)."""
    if isinstance(config.get("trainer"), Namespace):
        check_trainer(config.trainer)
    for group in ("model", "data"):
        check_nulls(config.get(group), f"--{group}")
    if isinstance(config.get("model"), Namespace):
        check_model(config.model)
