"""What the command tells a user who got something wrong: one line that says what and how to fix it.

- ``one_line``: the useful part of an error's message (jsonargparse's reports are long), with "did you
  mean" for a mistyped flag or argument;
- ``check_config_files``: a ``--config`` file that is empty or not YAML is named before jsonargparse
  reports it without the file's name;
- ``read_checkpoint``: a ``--ckpt_path`` that is empty, truncated, not a checkpoint, or another
  lesson's model is named before Lightning fails on it with a traceback.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import inspect
import pickle
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer

import datamodules
import modules
from core.errors import ExperimentError
from experiments.configs import config_options

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


#: The command's own groups of flags, besides --model, --data and --trainer (experiments/cli.py).
def _callback_groups() -> dict[str, Any]:
    from core.callbacks import PredictionWriter
    from experiments.callbacks import Checkpoint, LastCheckpoint, LearningRateLogger
    from experiments.faults import ExactResume, FiniteLossGuard
    from experiments.preemption import Preemption

    return {
        "checkpoint": Checkpoint,
        "last_checkpoint": LastCheckpoint,
        "lr_monitor": LearningRateLogger,
        "prediction_writer": PredictionWriter,
        "exact_resume": ExactResume,
        "nan_guard": FiniteLossGuard,
        "requeue": Preemption,
    }


TOP_LEVEL = ("config", "print_config", "seed_everything", "ckpt_path", "model", "data", "trainer")


def flag_suggestion(flag: str) -> str | None:
    """A known flag close to ``flag`` (``--trainer.max_epoch`` -> ``--trainer.max_epochs``), if any."""
    name = flag.lstrip("-").split("=", 1)[0]
    group, _, key = name.rpartition(".")
    groups = _callback_groups()
    if not group:
        match = closest(key, [*TOP_LEVEL, *groups])
        return f"--{match}" if match else None
    top, _, rest = group.partition(".")
    if top == "trainer" and not rest:
        candidates = parameters(Trainer)
    elif top in groups and not rest:
        candidates = parameters(groups[top])
    else:
        return None
    match = closest(key, candidates)
    return f"--{group}.{match}" if match else None


def _suggest(text: str) -> str:
    """``text`` with a "did you mean" for each mistyped flag or class argument it reports."""
    unrecognized = re.search(r"[Uu]nrecognized arguments: (.*)", text)
    if unrecognized:
        flags = unrecognized.group(1).split()
        hints = [f"{flag}: did you mean {s}?" for flag in flags if (s := flag_suggestion(flag))]
        if hints:
            return f"unrecognized arguments: {'; '.join(hints)}"
    option = re.search(
        r"Parser key \"(\w+)\": Problem with given class_path '([\w.]+)': Option '(\w+)' is not", text
    )
    if option:
        key, class_path, name = option.groups()
        known = parameters(import_path(class_path))
        match = closest(name, known)
        hint = f"did you mean --{key}.{match}?" if match else f"it takes: {', '.join(known)}"
        return f"--{key}.{name}: {class_path.rsplit('.', 1)[-1]} has no argument {name!r}; {hint}"
    return text


def one_line(error: BaseException) -> str:
    """The useful part of an error message, on one line."""
    text = str(error).strip()
    # An error raised in a DataLoader worker comes back with the worker's traceback in its message.
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    unknown = re.search(r'Parser key "(model|data)":.*?Expected a dot import path string: (\S+)', text, re.S)
    if unknown:
        key, name = unknown.groups()
        package, base = (modules, LightningModule) if key == "model" else (datamodules, LightningDataModule)
        choices = ", ".join(known_classes(package, base))
        return f'--{key}: unknown class "{name}"; choose one of: {choices}'
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
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        fix = "free some space, or write the runs elsewhere (--trainer.logger.init_args.save_dir)"
        return f"the disk is full{where}: {fix}"
    return _suggest(" ".join(parts)) if parts else type(error).__name__


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


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, its tensors mapped rather than read; an ExperimentError naming the
    file when it is empty, cut short, not written by ``torch.save`` or not a Lightning checkpoint."""
    if path.is_dir():
        raise ExperimentError(f"--ckpt_path {path} is a folder: give a checkpoint file (.ckpt) in it")
    if path.stat().st_size == 0:
        raise ExperimentError(
            f"--ckpt_path {path} is empty (a write that was cut off?): give another checkpoint"
        )
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            head = file.read(2)
        if not head.startswith(b"\x80"):  # neither torch's zip format nor a pickle (its old format)
            raise ExperimentError(
                f"--ckpt_path {path} is not a checkpoint (not a file torch.save wrote): give a run's .ckpt"
            )
    try:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # a checkpoint of the old format cannot be mapped
                raise
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise ExperimentError(f"--ckpt_path {path} is not a checkpoint ({error})") from None
        return {}  # objects a weights-only load does not read: Lightning will load it itself
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExperimentError(
            f"--ckpt_path {path} cannot be read as a checkpoint ({reason}): it is cut short or was not "
            "written by this command; give another one (the run's last.ckpt or best-*.ckpt)"
        ) from None
    if not isinstance(content, dict) or "state_dict" not in content:
        kind = type(content).__name__
        raise ExperimentError(
            f"--ckpt_path {path} holds a {kind}, not a Lightning checkpoint (no state_dict): give a run's "
            ".ckpt file"
        )
    return content


def checkpoint_model(checkpoint: dict[str, Any]) -> str | None:
    """The class path of the model a checkpoint holds, when the command wrote it (None otherwise)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return str(class_path) if class_path else None
