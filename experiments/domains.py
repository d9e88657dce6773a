"""The domains of the command's own settings that no type hint of ours states: Lightning's ``--trainer.*``
keys and the injected optimizer's and scheduler's arguments; and the types of the parts' flags that
core/domains.py does not have.

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
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from jsonargparse import Namespace
from jsonargparse.typing import register_type

from core.domains import FolderPath
from core.errors import ExperimentError
from core.optim import check_injected

# The types' messages quote the value (repr): jsonargparse drops a value standing between spaces from the
# message of an Optional's type.


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (3, 3.0, "3"), else None; a bool is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


class CountOrAll(int):
    """A count >= 0, or -1 for all (ModelCheckpoint's ``save_top_k``: checkpoints to keep)."""

    def __new__(cls, value: Any) -> CountOrAll:
        number = _whole(value)
        if number is None or number < -1:
            raise ValueError(f"expected a count >= 0, or -1 for all, got {value!r}")
        return super().__new__(cls, number)


class Share(float):
    """A share of a whole in (0, 1]: some of it, at most all."""

    def __new__(cls, value: Any) -> Share:
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not 0 < number <= 1:
            raise ValueError(f"expected a share in (0, 1] (1: all), got {value!r}")
        return super().__new__(cls, number)


class NonEmptyText(str):
    """Text with something in it other than spaces: a name (of a metric, a file pattern, a program)."""

    def __new__(cls, value: Any) -> NonEmptyText:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a name (text that is not empty), got {value!r}")
        return super().__new__(cls, value)


register_type(CountOrAll, serializer=int, deserializer=CountOrAll)
register_type(Share, serializer=float, deserializer=Share)
register_type(NonEmptyText, serializer=str, deserializer=NonEmptyText)


class PositiveDuration(timedelta):
    """A duration longer than zero, given as ``[D:]HH:MM:SS`` (quoted in YAML), or a number of seconds."""

    def __new__(cls, value: Any) -> PositiveDuration:
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = _seconds(value)
        else:
            raise ValueError(f"expected a duration such as '0:30:00', got {value!r}")
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"expected a duration longer than zero such as '0:30:00', got {value!r}")
        return super().__new__(cls, seconds=seconds)


def _seconds(text: str) -> float:
    """Seconds of ``[D:]HH:MM:SS`` or of a plain number."""
    parts = text.strip().split(":")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = []
    if not 1 <= len(numbers) <= 4:
        raise ValueError(f"expected a duration such as '0:30:00' (days:hours:minutes:seconds), got {text!r}")
    units = (86400, 3600, 60, 1)[-len(numbers) :]
    return sum(number * unit for number, unit in zip(numbers, units, strict=True))


def _plain_duration(value: Any) -> timedelta:
    """The parser's value: checked, and a plain timedelta, so that nothing downstream sees this type."""
    return timedelta(seconds=PositiveDuration(value).total_seconds())


register_type(PositiveDuration, serializer=str, deserializer=_plain_duration)


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


#: Lightning's Trainer keys: the test a set value must pass, and its domain as the message says it.
TRAINER: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_epochs": (_at_least(-1), "a number of epochs >= 0, or -1 for no limit"),
    "min_epochs": (_at_least(0), "a number of epochs >= 0"),
    "max_steps": (_at_least(-1), "a number of steps >= 0, or -1 for no limit"),
    "min_steps": (_at_least(0), "a number of steps >= 0"),
    "limit_train_batches": (
        _count_or_fraction,
        "a count of batches (an integer >= 0) or a fraction in [0, 1]",
    ),
    "limit_val_batches": (_count_or_fraction, "a count of batches (an integer >= 0) or a fraction in [0, 1]"),
    "limit_test_batches": (
        _count_or_fraction,
        "a count of batches (an integer >= 0) or a fraction in [0, 1]",
    ),
    "limit_predict_batches": (
        _count_or_fraction,
        "a count of batches (an integer >= 0) or a fraction in [0, 1]",
    ),
    "overfit_batches": (_count_or_fraction, "a count of batches (an integer >= 0) or a fraction in [0, 1]"),
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


def check_config(config: Namespace) -> None:
    """Every check of this module on a run's parsed config (the subcommand's part of it)."""
    if isinstance(config.get("trainer"), Namespace):
        check_trainer(config.trainer)
    if isinstance(config.get("model"), Namespace):
        check_model(config.model)
