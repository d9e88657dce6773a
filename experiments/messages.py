"""What the command tells a user who got something wrong: one line that says what and how to fix it.

- ``one_line``: the useful part of an error's message (jsonargparse's reports are long), with "did you
  mean" for a mistyped flag, key, group of flags or class; a key or class that a ``--config`` file holds
  is named by the file and line; a wrong value is named by its flag and says what the flag takes
  (``--model.optimizer.lr: expected a number, got 'abc'``, ``--data.batch_size: expected a whole number > 0,
  got 0``), or by the ``--config`` file and line that hold it, instead of jsonargparse's nested union report;
- ``check_config_files``: a ``--config`` file that is empty or not YAML is named before jsonargparse
  reports it without the file's name.

A checkpoint given with ``--ckpt_path`` is checked in experiments/ckpt_path.py.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import inspect
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer

import datamodules
import modules
from core.errors import ExperimentError
from experiments.configs import config_options
from experiments.parts import PARTS

# Errors that come from what the user typed or pointed at, not from a bug: shown as one line. Lesson
# code raises subclasses of ExperimentError, so no lesson error type needs listing here.
USER_ERRORS = (
    ArgumentError,
    ExperimentError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    MisconfigurationException,
)

# Lines of jsonargparse's union-type reports that say nothing to a user: every lesson argument is
# "a class or None", so each error also reports that the value is not None.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
)

TOP_LEVEL = ("config", "print_config", "seed_everything", "ckpt_path", "model", "data", "trainer")

#: jsonargparse's reports of a class that cannot be found: by name on the command line, or by a
#: ``class_path`` whose module or class does not exist.
#: No other ``Parser key`` in between: a nested argument's "dot import path" (``lr: float | Tensor``
#: given ``abc``) is a wrong value of that argument, not an unknown model class.
_UNKNOWN_CLASS = re.compile(
    r'Parser key "(model|data)":(?:(?!Parser key).)*?(?:Expected a dot import path string: (\S+)|Problem '
    r"with given class_path '([\w.]+)':\s*(?:module '[\w.]+' has no attribute|No module named))",
    re.S,
)

_PARSER_KEY = re.compile(r'Parser key "([^"]+)":')
#: What jsonargparse's type names mean, in a user's words: the builtins, and jsonargparse's restricted types
#: (a lesson may use them; core/domains.py's types say what they expect in their own messages).
_EXPECTED = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "PositiveInt": "a whole number > 0",
    "NonNegativeInt": "a whole number >= 0",
    "ClosedUnitInterval": "a number from 0 to 1",
    "OpenUnitInterval": "a number between 0 and 1",
    "PositiveFloat": "a number > 0",
    "NonNegativeFloat": "a number >= 0",
}
_NOT_OF_TYPE = re.compile(r"Not of type (\w+): (.*?)(?=\n\s*- |\n\s*Given value|\Z)", re.S)
_RESTRICTION = re.compile(r"(.*?)\s*does not conform to restriction")
_LITERAL = re.compile(
    r"(?:invalid literal for \w+\(\)(?: with base 10)?|could not convert string to \w+): (.*)"
)
_EXPECTED_CLASS = re.compile(r"Expected a <class '([\w.]+)'>")
_EXPECTED_CHOICE = re.compile(r"Expected a typing\.Literal\[(.*?)\]")
_CALLABLE = re.compile(r"expects a function or a callable class: (?!Parser key)(.*?)\. Got value:")
_LITERAL_VALUE = re.compile(
    r"[-+]?(\d[\d_]*\.?\d*(e[-+]?\d+)?|\.\d+|nan|inf|infinity)|true|false|null|\[.*\]|\{.*\}", re.I
)
_GOT = re.compile(r"(?:Got value|Given value): ?(.*?)(?:\. Got value:.*)?$", re.M)


def known_classes(package: Any, base: type) -> list[str]:
    """Names of the classes of ``package`` derived from ``base``, leaving out shared base classes."""
    found = [c for c in vars(package).values() if isinstance(c, type) and issubclass(c, base)]
    return sorted(c.__name__ for c in found if not any(o is not c and issubclass(o, c) for o in found))


def parameters(cls: Any) -> list[str]:
    """The ``__init__`` parameters a class takes by name."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name, p in signature.parameters.items() if p.kind in kinds]


def import_path(path: str) -> Any:
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return None


def closest(word: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def flag_groups() -> dict[str, list[str]]:
    """The groups of flags whose keys the command knows, with their keys: the Trainer's and each part's
    (experiments/parts.py). ``--model.*`` and ``--data.*`` depend on the classes chosen."""
    groups = {"trainer": parameters(Trainer)}
    groups.update({part.name: part.keys() for part in PARTS})
    return groups


def flag_suggestion(flag: str) -> str | None:
    """A known flag close to ``flag`` (``--trainer.max_epoch`` -> ``--trainer.max_epochs``,
    ``--checkpoin.monitor`` -> ``--checkpoint.monitor``), if any."""
    name = flag.lstrip("-").split("=", 1)[0]
    group, _, key = name.rpartition(".")
    groups = flag_groups()
    if not group:
        match = closest(key, [*TOP_LEVEL, *groups])
        return f"--{match}" if match else None
    if "." in group:
        return None
    if group not in groups:
        group = closest(group, [*TOP_LEVEL, *groups]) or ""
        if group in ("model", "data"):
            return f"--{group}.{key}"  # the class chosen decides its keys
        if group not in groups:
            return None
    match = key if key in groups[group] else closest(key, groups[group])
    return f"--{group}.{match}" if match else None


def flag_hint(flag: str) -> str | None:
    """What to say of the unknown ``flag``: the known flag it is close to, else the keys of its group."""
    match = flag_suggestion(flag)
    if match:
        return f"did you mean {match}?"
    group = flag.lstrip("-").split("=", 1)[0].rpartition(".")[0]
    keys = flag_groups().get(group)
    return f"--{group} takes: {', '.join(keys)}" if keys else None


def class_hint(key: str, name: str) -> str:
    """What to give ``--model`` or ``--data`` (``key``) instead of the unknown class ``name``."""
    package, base = (modules, LightningModule) if key == "model" else (datamodules, LightningDataModule)
    known = known_classes(package, base)
    match = closest(name.rsplit(".", 1)[-1], known)
    guess = f"did you mean {match}? " if match else ""
    return f"{guess}choose one of: {', '.join(known)}"


def _key_line(node: yaml.Node, parts: list[str], value: str | None) -> tuple[int, list[str]] | None:
    """The line (1-based) and the written path of the key ``parts`` in a YAML mapping ``node``, whose
    value is ``value`` when given; a key may leave out jsonargparse's ``init_args`` levels."""
    if not parts or not isinstance(node, yaml.MappingNode):
        return None
    for key_node, child in node.value:
        name = str(key_node.value)
        written = name.split(".")  # a dotted key (trainer.max_epochs: 3) stands for its levels
        found = None
        if parts[: len(written)] == written:
            rest = parts[len(written) :]
            if not rest and (value is None or getattr(child, "value", None) == value):
                return key_node.start_mark.line + 1, written
            found = _key_line(child, rest, value)
        elif name == "init_args":
            found = _key_line(child, parts, value)
        if found is not None:
            return found[0], [*written, *found[1]]
    return None


def config_key(argv: Sequence[str], key: str, value: str | None = None) -> tuple[str, str] | None:
    """Where the first ``--config`` file in ``argv`` that holds ``key`` (dotted, ``init_args`` levels
    optional; with ``value`` when given) holds it: ``("--config FILE, line N", key as written)``."""
    parts = [part for part in key.split(".") if part != "init_args"]
    for name in config_files(argv):
        try:
            document = yaml.compose(Path(name).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # a folder, or not YAML: reported on its own
        found = _key_line(document, parts, value) if document is not None else None
        if found is not None:
            return f"--config {name}, line {found[0]}", ".".join(found[1])
    return None


def _suggest(text: str, argv: Sequence[str]) -> str:
    """``text`` with a "did you mean" for each mistyped flag, key or class argument it reports, and
    the file and line of a key that a ``--config`` file holds."""
    unrecognized = re.search(r"[Uu]nrecognized arguments: (.*)", text)
    if unrecognized:
        flags = unrecognized.group(1).split()
        hints = [f"{flag}: {hint}" for flag in flags if (hint := flag_hint(flag))]
        if hints:
            return f"unrecognized arguments: {'; '.join(hints)}"
    unexpected = re.search(r"does not accept option '([\w.]+)'", text)
    if unexpected:
        key = unexpected.group(1)
        match = flag_suggestion(key)
        hint = f"; did you mean {match.removeprefix('--')}?" if match else ""
        found = config_key(argv, key)
        return f"{found[0]}: unknown key {found[1]}{hint}" if found else f"unknown key {key}{hint}"
    option = re.search(
        r"Parser key \"(\w+)\": Problem with given class_path '([\w.]+)': Option '(\w+)' is not", text
    )
    if option:
        key, class_path, name = option.groups()
        cls = import_path(class_path)
        known = parameters(cls)
        match = closest(name, known)
        found = config_key(argv, f"{key}.{name}")
        flag = found[1] if found else f"--{key}.{name}"
        # The same key as the file writes it (init_args or not), or as a flag.
        guess = f"{flag.rpartition('.')[0]}.{match}" if match else None
        hint = f"did you mean {guess}?" if guess else f"it takes: {', '.join(known)}"
        predicts_on = getattr(cls, "predicts_on", None)
        if name == "predict_path" and isinstance(predicts_on, str):
            # A lesson whose data is made or named by its own arguments says what predict runs on.
            hint = f"its predict runs on {predicts_on}"
        message = f"{flag}: {class_path.rsplit('.', 1)[-1]} has no argument {name!r}; {hint}"
        return f"{found[0]}: {message}" if found else message
    return text


def _given(text: str) -> str:
    """The value a report of a wrong value says it was given, or "": a number, a list or a YAML word as
    written, text quoted (``got 'fast'``, ``got ''``)."""
    for found in _GOT.finditer(text):
        value = found.group(1).strip()
        if "NestedArg" in value or "Namespace(" in value:
            continue
        return _shown(value)
    return ""


def _shown(value: str) -> str:
    value = value.strip().strip("'")
    return value if _LITERAL_VALUE.fullmatch(value) else repr(value)


def _flag(keys: list[str], argv: Sequence[str]) -> str:
    """The flag that ``keys`` (jsonargparse's nested parser keys) name, ``--model.optimizer.lr``; a value
    that only a ``--config`` file gives is named by the file and line that hold it."""
    key = ".".join(part for part in ".".join(keys).split(".") if part != "init_args")
    spellings = set(_spellings(key))
    on_command_line = any(
        str(arg).lstrip("-").split("=", 1)[0] in spellings for arg in argv if str(arg).startswith("--")
    )
    # The last --config file that holds the key gives its value.
    files = [] if on_command_line else reversed(config_files(argv))
    found = next((where for name in files if (where := config_key(["--config", name], key))), None)
    return f"{found[0]}: {found[1]}" if found else f"--{key}"


def _spellings(key: str) -> list[str]:
    """``key`` with jsonargparse's ``init_args`` levels written in: ``model.init_args.dropout``,
    ``model.init_args.optimizer.init_args.lr``, and the mixes."""
    parts = key.split(".")
    found = [parts[0]]
    for part in parts[1:]:
        found = [f"{prefix}.{middle}{part}" for prefix in found for middle in ("", "init_args.")]
    return found


def _words(name: str) -> str:
    """A type's name in words: ``CountOrAll`` -> "a count or all"."""
    return "a " + re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()


def _innermost(text: str) -> str:
    """The part of a report under its last ``Parser key``: the rest of that line and the lines indented
    deeper (the lines after them are an outer union's, such as "Expected a <class 'NoneType'>")."""
    last = list(_PARSER_KEY.finditer(text))[-1]
    start = text.rfind("\n", 0, last.start()) + 1
    indent = len(text[start:]) - len(text[start:].lstrip())
    lines = text[last.end() :].split("\n")
    inner = [lines[0]]
    for line in lines[1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        inner.append(line)
    return "\n".join(inner)


def wrong_value(text: str, argv: Sequence[str] = ()) -> str | None:
    """jsonargparse's report of a wrong value (``Parser key "model": ... Parser key "dropout": Expected a
    <class 'float'>. Got value: abc``) as one line naming the flag: ``--model.dropout: expected a number,
    got abc``; None for a report of anything else."""
    keys = _PARSER_KEY.findall(text)
    if not keys:
        return None
    inner = _innermost(text)
    flag = _flag(keys, argv)
    given = _given(inner) or _given(text)
    got = f", got {given}" if given else ""
    restricted = _NOT_OF_TYPE.search(inner)
    if restricted:
        name, detail = restricted.group(1), " ".join(restricted.group(2).split())
        value = _RESTRICTION.match(detail) or _LITERAL.search(detail)
        if not value:  # a type of its own (CountOrFraction, a path): its message says what is wrong
            return f"{flag}: {detail}"
        if value.group(1).strip() and not given:
            got = f", got {_shown(value.group(1))}"
        return f"{flag}: expected {_EXPECTED.get(name) or _words(name)}{got}"
    callable_class = _CALLABLE.search(inner)
    if callable_class:
        return (
            f"{flag}: {callable_class.group(1).strip()}; expected a class path such as torch.optim.AdamW{got}"
        )
    choice = _EXPECTED_CHOICE.search(inner)
    if choice:
        return f"{flag}: expected one of {choice.group(1)}{got}"
    expected = [_EXPECTED.get(name.rsplit(".", 1)[-1]) for name in _EXPECTED_CLASS.findall(inner)]
    if "Expected a dot import path string" in inner and not any(expected):  # a class, not a Tensor
        expected.append("a class path (package.module.Class)")
    words = list(dict.fromkeys(word for word in expected if word))
    if not words:
        return None
    if given.strip("'\"").lstrip("+-.").lower() in ("nan", "inf", "infinity"):  # a number, but not finite
        words = [word.replace("a number", "a finite number") for word in words]
    nullable = "<class 'NoneType'>" in inner
    return f"{flag}: expected {' or '.join(words)}{' or null' if nullable else ''}{got}"


#: Lightning's report of a checkpoint's monitor that the lesson does not log (a plain Lightning lesson logs
#: ``val_loss`` where the command's default monitor is ``val/loss``).
_MONITOR_MISSING = re.compile(
    r"`ModelCheckpoint\(monitor='([^']*)'\)` could not find the monitored key in the returned metrics: "
    r"\[([^\]]*)\]"
)


def one_line(error: BaseException, argv: Sequence[str] = ()) -> str:
    """The useful part of an error message, on one line. ``argv``, the command's arguments, lets a key or
    class at fault be named by the ``--config`` file and line that hold it."""
    text = str(error).strip()
    # An error raised in a DataLoader worker comes back with the worker's traceback in its message.
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    missing = _MONITOR_MISSING.search(text)
    if missing:
        logged = [name.strip(" '") for name in missing.group(2).split(",")]
        logged = [name for name in logged if name not in ("epoch", "step")]
        return (
            f"--checkpoint.monitor {missing.group(1)} is not a metric the lesson logs ({', '.join(logged)}): "
            "set --checkpoint.monitor to one of them (and --checkpoint.mode min or max)"
        )
    unknown = _UNKNOWN_CLASS.search(text)
    if unknown:
        key, name = unknown.group(1), unknown.group(2) or unknown.group(3)
        message = f'unknown class "{name}"; {class_hint(key, name)}'
        found = config_key(argv, f"{key}.class_path", name) or config_key(argv, key, name)
        return f"{found[0]}: {found[1]}: {message}" if found else f"--{key}: {message}"
    value = wrong_value(text, argv) if "Parser key" in text else None
    if value:
        return value
    parts = []
    for raw in text.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        for marker in _NOISE:
            line = line.split(marker)[0].strip() if marker in line else line
        if not line or (line.endswith(":") and not line.startswith("Parser key") and not parts):
            continue
        if line.startswith("Given value:") and (len(line) > 80 or "NestedArg" in line):
            continue
        parts.append(line)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {error.filename}" if error.filename else ""
        fix = (
            "the checkpoints already written are intact; free some space, or write the runs elsewhere "
            "(--trainer.logger.init_args.save_dir)"
        )
        return f"the disk is full{where}: {fix}"
    return _suggest(" ".join(parts), argv) if parts else type(error).__name__


def config_files(argv: Sequence[str]) -> list[str]:
    """The files given with ``--config`` (or ``-c``) in ``argv``."""
    return [value for _, option, value in config_options(argv) if option in ("--config", "-c")]


def check_config_files(argv: Sequence[str]) -> None:
    """Name a ``--config`` file that jsonargparse would reject without naming it: empty, not YAML, or
    not a mapping of settings. A missing file or a folder it names itself."""
    for name in config_files(argv):
        path = Path(name)
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise ExperimentError(f"--config {name} is empty: give it settings, or leave it out")
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or "cannot be read"
            raise ExperimentError(f"--config {name} is not valid YAML{where}: {problem}") from None
        if content is not None and not isinstance(content, dict):
            raise ExperimentError(
                f"--config {name} holds a {type(content).__name__}, not settings (key: value)"
            )
