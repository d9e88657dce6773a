"""The domains of the lessons' arguments, as types the command's parser enforces.

A lesson argument's type hint says what values it takes (``batch_size: PositiveInt``,
``dropout: Fraction``, ``val_split: CountOrFraction``, ``data_dir: FolderPath``), and jsonargparse refuses
any other value with one line naming the flag, before anything is built or written. The types are
registered with jsonargparse, so a lesson class used from Python (a notebook, a test) takes plain
numbers as before: the check is the parser's, and a lesson's ``__init__`` checks what a
type cannot say (one argument against another).

The parser hands on plain ``int``, ``float``, ``str`` and ``timedelta`` values, never instances of these
types: the values reach the classes and the hyperparameters saved in checkpoints, which a weights-only
``torch.load`` must read. (jsonargparse's own ``PositiveInt`` and the like hand on instances of
themselves, also when it builds a class's ``init_args`` from a config already parsed, and let inf
through: a lesson uses these instead.)

Vocabulary:

- counts: ``PositiveInt`` (1, 2, ...), ``NonNegativeInt`` (0, 1, ...), below 2**63 (int64);
  ``WorkerCount`` (a DataLoader's processes, 0 to 256), ``ThreadCount`` (background threads, 1 to
  256); ``Pixels`` (an image's side, 1 to 65535) and ``Padding`` (0 to 65535);
- ``Seed``: a random seed, 0 to 2**32 - 1 (numpy's and Lightning's range);
- real numbers, within float32's range: ``PositiveFloat`` (> 0: rates, sizes, temperatures, durations in
  seconds), ``NonNegativeFloat`` (>= 0: weight decay, margins), ``FiniteFloat`` (any finite number);
- fractions: ``Probability`` ([0, 1]), ``Fraction`` ([0, 1): dropout, a share held out);
- ``CountOrFraction``: a whole count >= 0, or a fraction in [0, 1) of a data set; 2.5 is neither and is
  refused (it used to be rounded down to 2 without a word);
- ``CountOrAll`` (a count >= 0, or -1 for all), ``Share`` ((0, 1]: some of a whole, at most all);
- text: ``NonEmptyText`` (a name: a metric, a file pattern, a program), ``FileName`` (a file written in
  the run folder: a name, no folder in it);
- ``PositiveDuration``: ``[D:]HH:MM:SS`` or seconds, longer than zero (the parser hands a plain
  ``timedelta`` on);
- paths: ``FolderPath`` (a folder, or a path where one will be made: not a file), ``FilePath`` (a file,
  or a path where one will be written or downloaded: not a folder), ``ExistingFile``, ``ExistingFolder``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from jsonargparse.typing import register_type

from core.errors import DataConfigError

__all__ = [
    "CountOrAll",
    "CountOrFraction",
    "ExistingFile",
    "ExistingFolder",
    "FileName",
    "FilePath",
    "FiniteFloat",
    "FolderPath",
    "Fraction",
    "NonEmptyText",
    "NonNegativeFloat",
    "NonNegativeInt",
    "Padding",
    "Pixels",
    "PositiveDuration",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "Seed",
    "Share",
    "ThreadCount",
    "WorkerCount",
    "require_at_least",
]


def require_at_least(group: str, least: int, **values: int) -> None:
    """For a class used from Python, where no parser checked its counts: refuse any of ``values`` below
    ``least`` as a ``DataConfigError`` naming the flag (``--data.batch_size must be at least 1, got 0``)."""
    for name, value in values.items():
        if value < least:
            raise DataConfigError(f"--{group}.{name} must be at least {least}, got {value}")


def _as(base: type, value: Any) -> int | float:
    """``value`` as a ``base`` number: a number, or its text on the command line; a bool (YAML's yes/no)
    is not a number, and an int is whole (2.0 in a YAML file is 2; 2.5 and the text "2.5" are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {value!r}")
    if base is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(value)


def _number_domain(name: str, base: type, test: Callable[[Any], bool], expected: str) -> type:
    """A type of ``base`` numbers for which ``test`` holds, registered with the parser: a value outside
    is refused with "expected <expected>, got <value>", and the parser hands on a plain ``base``."""

    def new(cls: type, value: Any) -> Any:
        try:
            number = _as(base, value)
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is None or not test(number):
            raise ValueError(f"expected {expected}, got {value!r}")
        return base.__new__(cls, number)

    domain = type(
        name, (base,), {"__new__": new, "__doc__": f"A number: {expected}.", "__module__": __name__}
    )
    register_type(domain, serializer=base, deserializer=lambda value: base(domain(value)))
    return domain


# jsonargparse has PositiveInt and the like too, but the parser hands on instances of them, and those
# reach the classes and the checkpoints (a weights-only load refuses them); theirs also let inf through.
#: Counts end below 2**63 (torch's int64: a larger one overflows inside torch), real numbers within
#: float32's range (the parameters' type: 1e308 becomes inf there).
INT64_END = 2**63
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max, without importing torch
PositiveInt = _number_domain(
    "PositiveInt", int, lambda v: 0 < v < INT64_END, "a whole number > 0 (below 2**63)"
)
NonNegativeInt = _number_domain(
    "NonNegativeInt", int, lambda v: 0 <= v < INT64_END, "a whole number >= 0 (below 2**63)"
)
PositiveFloat = _number_domain(
    "PositiveFloat", float, lambda v: 0 < v <= FLOAT32_MAX, "a finite number > 0 (float32: up to 3.4e38)"
)
NonNegativeFloat = _number_domain(
    "NonNegativeFloat", float, lambda v: 0 <= v <= FLOAT32_MAX, "a finite number >= 0 (float32: up to 3.4e38)"
)
FiniteFloat = _number_domain(
    "FiniteFloat", float, lambda v: abs(v) <= FLOAT32_MAX, "a finite number (float32: within ±3.4e38)"
)
Probability = _number_domain("Probability", float, lambda v: 0 <= v <= 1, "a probability in [0, 1]")
#: A random seed: what numpy and Lightning's seed_everything take (0 to 2**32 - 1); 2**63 overflowed in
#: torch's manual_seed.
Seed = _number_domain("Seed", int, lambda v: 0 <= v < 2**32, "a seed from 0 to 4294967295")
#: Background threads sharing a step's work (word2vec's): at least one, and more than a machine's cores
#: is waste; 2**31 started threads until the run hung.
ThreadCount = _number_domain("ThreadCount", int, lambda v: 1 <= v <= 256, "a number of threads from 1 to 256")
#: An image's side in pixels, and a padding of one: PIL's and torch's images are at most 65,535 a side
#: (2**31 overflowed inside PIL's resize, or asked torch for a tensor of 2**64 bytes).
Pixels = _number_domain("Pixels", int, lambda v: 1 <= v <= 65535, "a size in pixels from 1 to 65535")
Padding = _number_domain("Padding", int, lambda v: 0 <= v <= 65535, "a padding in pixels from 0 to 65535")
#: A DataLoader's worker processes: each is a fork of the run, so more than a machine's cores is waste,
#: and a huge count forks until the machine stops.
WorkerCount = _number_domain(
    "WorkerCount", int, lambda v: 0 <= v <= 256, "a number of loader processes from 0 to 256"
)
Fraction = _number_domain("Fraction", float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


class CountOrFraction(float):
    """A part of a data set: a whole count (0, 1, 2, ...) or a fraction in [0, 1). A value of 1 or more
    that is not whole (2.5) is neither, and is refused rather than rounded."""

    def __new__(cls, value: Any) -> CountOrFraction:
        number = _as(float, value)
        if math.isnan(number) or math.isinf(number) or number < 0:
            raise ValueError(f"{value!r} is not a count (0, 1, 2, ...) or a fraction in [0, 1)")
        if number >= 1 and not number.is_integer():
            raise ValueError(
                f"{value!r} is neither a count (a whole number) nor a fraction below 1: give "
                f"{math.floor(number)} or {math.ceil(number)} items, or a fraction such as 0.2"
            )
        return super().__new__(cls, number)

    @staticmethod
    def serialize(value: float) -> int | float:
        """A count as an int (so a saved config says 5000, not 5000.0), a fraction as a float."""
        return int(value) if value >= 1 else float(value)


class _PathDomain(str):
    """A path argument whose kind is checked when it is parsed (subclasses say which)."""

    #: What the path must be: "folder" or "file"; ``exists``: whether it must be there already.
    kind = "folder"
    exists = False

    def __new__(cls, value: Any) -> _PathDomain:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a path, got {value!r}")
        path = Path(value).expanduser()
        other = "file" if cls.kind == "folder" else "folder"
        # The value is quoted: jsonargparse removes " <value> " from the messages of an Optional's type.
        if path.exists() and (path.is_dir() if other == "folder" else not path.is_dir()):
            raise ValueError(f"a {cls.kind} is expected here, and {value!r} is a {other}")
        if cls.exists and not path.exists():
            raise ValueError(f"a {cls.kind} is expected here, and {value!r} does not exist")
        return super().__new__(cls, value)


class FolderPath(_PathDomain):
    """A folder, or a path where one will be made (a download's destination): not a file."""


class FilePath(_PathDomain):
    """A file, or a path where one will be written or downloaded: not a folder."""

    kind = "file"


class ExistingFolder(_PathDomain):
    """A folder that is there."""

    exists = True


class ExistingFile(_PathDomain):
    """A file that is there."""

    kind = "file"
    exists = True


register_type(
    CountOrFraction, serializer=CountOrFraction.serialize, deserializer=lambda v: float(CountOrFraction(v))
)
for _path_type in (FolderPath, FilePath, ExistingFolder, ExistingFile):
    register_type(_path_type, serializer=str, deserializer=lambda v, t=_path_type: str(t(v)))


CountOrAll = _number_domain(
    "CountOrAll", int, lambda v: -1 <= v < INT64_END, "a count >= 0, or -1 for all"
)  # ModelCheckpoint's save_top_k: checkpoints to keep
Share = _number_domain("Share", float, lambda v: 0 < v <= 1, "a share in (0, 1] (1: all)")


class NonEmptyText(str):
    """Text with something in it other than spaces: a name (of a metric, a file pattern, a program)."""

    def __new__(cls, value: Any) -> NonEmptyText:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a name (text that is not empty), got {value!r}")
        return super().__new__(cls, value)


register_type(NonEmptyText, serializer=str, deserializer=lambda v: str(NonEmptyText(v)))


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


class FileName(str):
    """The name of a file a callback writes inside the run folder: not empty, and no folder in it (the run
    folder is the file's folder; a path would point at a folder that does not exist)."""

    def __new__(cls, value: Any) -> FileName:
        if not isinstance(value, str) or not value.strip() or value in (".", ".."):
            raise ValueError(f"expected a file name such as predictions.pt, got {value!r}")
        if "/" in value or "\\" in value:
            raise ValueError(
                f"expected a file name only (it is written in the run folder), got the path {value!r}"
            )
        return super().__new__(cls, value)


register_type(FileName, serializer=str, deserializer=lambda v: str(FileName(v)))
