"""The domains of the lessons' arguments, as types the command's parser enforces.

A lesson argument's type hint says what values it takes (``batch_size: PositiveInt``,
``dropout: Fraction``, ``val_split: CountOrFraction``, ``data_dir: FolderPath``), and jsonargparse refuses
any other value with one line naming the flag, before anything is built or written. The types are
jsonargparse's restricted types or registered ones, so a lesson class used from Python (a notebook, a
test) takes plain numbers as before: the check is the parser's, and a lesson's ``__init__`` checks what a
type cannot say (one argument against another).

The parser hands over instances of these types (``PositiveInt(3)``); ``plain`` turns them back into
``int``, ``float`` and ``str`` before the classes are built, so that hyperparameters saved in a checkpoint
are builtins a weights-only ``torch.load`` reads.

Vocabulary:

- counts: ``PositiveInt`` (1, 2, ...), ``NonNegativeInt`` (0, 1, ...);
- real numbers: ``PositiveFloat`` (finite, > 0: rates, sizes, temperatures, durations in seconds),
  ``NonNegativeFloat`` (finite, >= 0: weight decay, margins), ``FiniteFloat`` (any finite number);
- fractions: ``Probability`` ([0, 1]), ``Fraction`` ([0, 1): dropout, a share held out);
- ``CountOrFraction``: a whole count >= 0, or a fraction in [0, 1) of a data set; 2.5 is neither and is
  refused (it used to be rounded down to 2 without a word);
- paths: ``FolderPath`` (a folder, or a path where one will be made: not a file), ``FilePath`` (a file,
  or a path where one will be written or downloaded: not a folder), ``ExistingFile``, ``ExistingFolder``.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeInt,
    PositiveInt,
    register_type,
    restricted_number_type,
)

__all__ = [
    "CountOrFraction",
    "ExistingFile",
    "ExistingFolder",
    "FilePath",
    "FiniteFloat",
    "FolderPath",
    "Fraction",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "plain",
]

# jsonargparse's own PositiveFloat and NonNegativeFloat let inf through; a rate or a size never is one.
# (Named *Finite: jsonargparse refuses a second type of the same name.)
PositiveFloat = restricted_number_type("PositiveFinite", float, [(">", 0), ("<", math.inf)], join="and")
NonNegativeFloat = restricted_number_type(
    "NonNegativeFinite", float, [(">=", 0), ("<", math.inf)], join="and"
)
FiniteFloat = restricted_number_type("FiniteFloat", float, [(">", -math.inf), ("<", math.inf)], join="and")
#: [0, 1]: jsonargparse has it (a second registration of the same restriction is refused).
Probability = ClosedUnitInterval
Fraction = restricted_number_type("Fraction", float, [(">=", 0), ("<", 1)], join="and")


def _number(value: Any) -> float:
    """``value`` as a float: a number or its text; a bool (YAML's yes/no) is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


class CountOrFraction(float):
    """A part of a data set: a whole count (0, 1, 2, ...) or a fraction in [0, 1). A value of 1 or more
    that is not whole (2.5) is neither, and is refused rather than rounded."""

    def __new__(cls, value: Any) -> CountOrFraction:
        number = _number(value)
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


register_type(CountOrFraction, serializer=CountOrFraction.serialize, deserializer=CountOrFraction)
for _path_type in (FolderPath, FilePath, ExistingFolder, ExistingFile):
    register_type(_path_type, serializer=str, deserializer=_path_type)

_BUILTINS = (bool, int, float, str)


def plain(value: Any) -> Any:
    """``value`` with the parser's typed numbers and paths (``PositiveInt(3)``, ``FolderPath('x')``)
    made builtins again, through namespaces, dicts, lists and tuples; anything else is returned as is."""
    if isinstance(value, Namespace):
        for key, item in vars(value).items():
            setattr(value, key, plain(item))
        return value
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(plain(item) for item in value)
    if type(value) in _BUILTINS or isinstance(value, enum.Enum):  # True is an int too; so is SIGUSR1
        return value
    for builtin in _BUILTINS[1:]:
        if isinstance(value, builtin):
            return builtin(value)
    return value
