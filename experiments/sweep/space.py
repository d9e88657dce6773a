"""A sweep's search space, as its file writes it, checked before any trial runs.

    space:
      model.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0, log: true}
      data.batch_size: {type: categorical, choices: [32, 64, 128]}
      model.dropout: {type: float, low: 0.0, high: 0.5}
      trainer.max_epochs: {type: int, low: 4, high: 12, step: 4}

Each key is a config key as the command line names it (``--model.optimizer.lr``); a trial sets it as that
flag would, so whatever a flag accepts (``model.optimizer.init_args.lr`` too) works here. The key, as
written, names the parameter everywhere the sweep shows it: in the study (optuna-dashboard), the worker's
line per trial and the report's table. The shipped sweep files write the short keys, the names the
run's TensorBoard HPARAMS and MLflow parameters carry (experiments/parameters.py), so one name is used
everywhere. A
categorical choice that Optuna cannot store as such (a list, e.g. ``hidden_sizes: [[64], [64, 64]]``)
is searched as its JSON text, which the flag reads back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import ExperimentError
from experiments.messages import USER_ERRORS, one_line

#: The distributions a parameter may have, with the fields each takes.
TYPES = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
#: Names people reach for that mean a distribution above.
_ALIASES = {
    "loguniform": "float with log: true",
    "log_float": "float with log: true",
    "logfloat": "float with log: true",
    "uniform": "float",
    "real": "float",
    "integer": "int",
    "choice": "categorical",
    "discrete": "int, or categorical",
}


@dataclass
class Parameter:
    """One searched config key and its distribution."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] = field(default_factory=list)

    def suggest(self, trial: Any) -> Any:
        """The trial's value of this parameter (drawn by the study's sampler)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, [_storable(c) for c in self.choices])

    def flag(self, value: Any) -> str:
        """The command-line flag that sets ``value`` (a stored JSON text of a list is passed as it is)."""
        text = value if isinstance(value, str) and self._json_choice(value) else json.dumps(value)
        return f"--{self.key}={text}"

    def _json_choice(self, value: str) -> bool:
        return any(not _scalar(c) and _storable(c) == value for c in self.choices)

    def probe_values(self) -> list[Any]:
        """The values that a check of the space sets: the ends of a range, every choice."""
        if self.type == "categorical":
            return [_storable(c) for c in self.choices]
        return [self.low, self.high]

    def describe(self) -> dict[str, Any]:
        """The distribution as stored in the study, to compare with another worker's."""
        if self.type == "categorical":
            return {"type": self.type, "choices": [_storable(c) for c in self.choices]}
        return {"type": self.type, "low": self.low, "high": self.high, "log": self.log, "step": self.step}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _storable(choice: Any) -> Any:
    """Optuna stores None, bool, int, float and str choices; others as their JSON text."""
    return choice if _scalar(choice) else json.dumps(choice)


def _number(key: str, name: str, value: Any, kind: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExperimentError(f"sweep.space: {key}: {name} must be a finite number, got {value!r}")
    if kind == "int" and not float(value).is_integer():
        raise ExperimentError(f"sweep.space: {key}: {name} of an int parameter must be whole, got {value!r}")
    return int(value) if kind == "int" else float(value)


def parameter(key: str, spec: Any) -> Parameter:
    """The ``Parameter`` that ``spec`` (one entry of the space) describes; one error line when it is not
    a distribution: an unknown type or field, an empty or inverted range, no choices."""
    if not isinstance(spec, dict):
        raise ExperimentError(
            f"sweep.space: {key}: give a distribution such as {{type: float, low: 0.001, high: 0.1, log: "
            f"true}} or {{type: categorical, choices: [32, 64]}}, not {spec!r}"
        )
    kind = spec.get("type")
    if kind is None:
        kind = "categorical" if "choices" in spec else None
    if kind not in TYPES:
        hint = (
            f" (for {kind!r} write type: {_ALIASES[str(kind).lower()]})"
            if str(kind).lower() in _ALIASES
            else ""
        )
        raise ExperimentError(
            f"sweep.space: {key}: unknown distribution type {kind!r}{hint}; use one of: {', '.join(TYPES)}"
        )
    unknown = sorted(set(spec) - TYPES[kind])
    if unknown:
        raise ExperimentError(
            f"sweep.space: {key}: a {kind} parameter takes {', '.join(sorted(TYPES[kind] - {'type'}))}, "
            f"not {', '.join(unknown)}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ExperimentError(f"sweep.space: {key}: choices must be a non-empty list, got {choices!r}")
        if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
            raise ExperimentError(f"sweep.space: {key}: choices {choices} repeat a value")
        return Parameter(key, kind, choices=list(choices))
    for name in ("low", "high"):
        if name not in spec:
            raise ExperimentError(f"sweep.space: {key}: a {kind} parameter needs low and high")
    low, high = _number(key, "low", spec["low"], kind), _number(key, "high", spec["high"], kind)
    if not low < high:
        raise ExperimentError(
            f"sweep.space: {key}: the range is empty (low {low} is not below high {high}); give low < high, "
            "or fix the value in the config instead of searching it"
        )
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ExperimentError(f"sweep.space: {key}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(key, "step", step, kind)
        if step <= 0 or step > high - low:
            raise ExperimentError(f"sweep.space: {key}: step {step} must be above 0 and at most high - low")
        if log:
            raise ExperimentError(
                f"sweep.space: {key}: step and log: true cannot be combined (Optuna's rule)"
            )
    if log and low <= 0:
        raise ExperimentError(f"sweep.space: {key}: a log scale needs low > 0, got {low}")
    return Parameter(key, kind, low=low, high=high, log=log, step=step)


def search_space(space: Any) -> list[Parameter]:
    """The parameters of a sweep's ``space`` (a mapping of config keys to distributions)."""
    if not space:
        raise ExperimentError(
            "sweep.space is empty: name at least one config key to search, e.g. "
            "space: {model.optimizer.init_args.lr: {type: float, low: 0.001, high: 0.1, log: true}}"
        )
    if not isinstance(space, dict):
        raise ExperimentError(f"sweep.space must map config keys to distributions, got {space!r}")
    return [parameter(str(key), spec) for key, spec in space.items()]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|min|s)", re.I)
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "min": 60, "s": 1}


def seconds(budget: str | float | int | None, name: str = "sweep.timeout") -> float | None:
    """A time budget in seconds: a number of seconds, or a duration such as ``90m``, ``2h``, ``1h30m``,
    finite and above 0; a mistake is an error naming the setting ``name``."""
    if budget is None:
        return None
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        value = float(budget)
    else:
        text = str(budget).strip()
        try:
            value = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise ExperimentError(
                    f"{name}: {budget!r} is not a duration; give seconds or e.g. 90m, 2h, 1h30m"
                ) from None
            value = sum(float(n) * _SECONDS[unit.lower()] for n, unit in parts)
    if not 0 < value < math.inf:
        raise ExperimentError(f"{name} must be a finite duration above 0, got {budget!r}")
    return value


def check_space(trial_config: Callable[[list[str]], str], space: list[Parameter]) -> None:
    """Every key takes the ends of its range and each of its choices, as the config's parser reads them
    (``trial_config``: the sweep command's config with some flags applied): a wrong key or type is one
    error line before the sweep starts, not a failed trial later."""
    probes = [p.probe_values() for p in space]
    for i in range(max(len(values) for values in probes)):
        flags = [p.flag(values[i % len(values)]) for p, values in zip(space, probes, strict=True)]
        try:
            trial_config(flags)
        except USER_ERRORS as error:
            # Which key: the one whose flag alone fails.
            for parameter, flag in zip(space, flags, strict=True):
                try:
                    trial_config([flag])
                except USER_ERRORS as alone:
                    raise ExperimentError(f"sweep.space: {parameter.key}: {one_line(alone)}") from None
            raise ExperimentError(f"sweep.space: {one_line(error)}") from None
