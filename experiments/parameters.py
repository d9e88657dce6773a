"""The parameters of a run that every logger records: TensorBoard's HPARAMS tab, MLflow's parameters, the
CSV logger's ``hparams.yaml``, all under the same flat dotted names (``model.optimizer.lr``,
``data.batch_size``: jsonargparse's ``init_args`` levels left out, each chosen class under the name of
its argument, ``model.optimizer: torch.optim.AdamW``).

A run's parsed config holds every argument of every class, hundreds of them, most of them library
defaults nobody chose (``model.optimizer.amsgrad: false``, ``foreach``, ``capturable``). Logged are only
those that say something about the run:

- every class chosen (``model``, ``data``, ``model.optimizer``, ``model.lr_scheduler``, ...) and the
  seed (``seed_everything``), always;
- a value a config file or a flag names (``--model.optimizer.lr 0.1``, ``max_epochs: 12`` in the
  lesson's config), even when it equals the default: the user chose it;
- a value the sweep varies (``varied``), even at its default, so that every trial has the column;
- any other value that differs from its default: the class signature's default as jsonargparse resolves
  it (a module's ``optimizer=lambda p: SGD(p, lr=0.01)`` makes ``lr: 0.01`` the default of
  ``model.optimizer.lr``), else the parser's (the trainer's arguments, the parts' flags). Values the data
  sets on the model through the links (``num_classes``) count when they differ from the model's default.

A whole config written back by a program (a run's ``config.yaml`` and ``--print_config``'s output, whose
first line is ``# lightning.pytorch==<version>``; a sweep's trial config and its ``best.yaml``, whose
trainer section names a third or more of the Trainer's arguments) names every argument, so such a file
does not count as "naming" its values: given back with ``--config``, its values count only where they
differ from their defaults. What only says how a run is shown or where it is written is left out
(``PLUMBING``: the logger, the callbacks, the progress bar, ``ckpt_path``, ...) unless the sweep varies it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

#: Parameter names (and their sub-names) that are not logged unless a sweep varies them: how the run is
#: shown, logged or written, and where; not what it computes.
PLUMBING = frozenset(
    {
        "config",
        "print_config",
        "ckpt_path",
        "weights_only",
        "trainer.logger",
        "trainer.callbacks",
        "trainer.plugins",
        "trainer.profiler",
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
        "trainer.enable_checkpointing",
        "trainer.enable_autolog_hparams",
        "trainer.default_root_dir",
        "trainer.log_every_n_steps",
    }
)

#: The first line LightningCLI writes into a config it dumps (``config.yaml``, ``--print_config``).
DUMP_HEADER = "# lightning.pytorch=="

#: The parameter value types every logger takes; anything else is logged as its text.
Value = bool | int | float | str

_MISSING = object()  # no default known: the value counts as set


def parameter_name(key: str) -> str:
    """The logged name of a config key as jsonargparse or a sweep file spells it:
    ``model.optimizer.init_args.lr`` is ``model.optimizer.lr``, ``model.class_path`` is ``model``."""
    parts = [part for part in key.split(".") if part not in ("init_args", "dict_kwargs")]
    if parts and parts[-1] == "class_path":
        parts.pop()
    return ".".join(parts)


def run_parameters(
    config: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    given: Iterable[str] = (),
    varied: Iterable[str] = (),
) -> dict[str, Value]:
    """The run's parameters to log, ``{"model": "modules.TabularRegressor", "model.optimizer.lr": 0.003,
    ...}``, by the rule of the module's docstring.

    Args:
        config: The run's parsed config (a subcommand's part: ``model``, ``data``, ``trainer``, the parts'
            sections, ``seed_everything``); a jsonargparse Namespace or nested mappings.
        defaults: The parser's defaults for the same config (``parser.get_defaults()``).
        given: The names config files and flags set (``given_names``), with or without ``init_args``.
        varied: The keys a sweep varies, as the sweep file writes them (``model.init_args.dropout``).
    """
    plain = _plain(config)
    default = _plain(defaults) if defaults is not None else {}
    named = {parameter_name(name) for name in given}
    swept = {parameter_name(name) for name in varied}
    entries: dict[str, tuple[Any, Any, bool]] = {}
    for key, value in plain.items():
        _walk(value, default.get(key, _MISSING) if isinstance(default, Mapping) else _MISSING, key, entries)
    parameters: dict[str, Value] = {}
    for name, (value, default_value, is_class) in entries.items():
        if name in swept:
            parameters[name] = _loggable(value)
        elif _plumbing(name):
            continue
        elif is_class or name == "seed_everything" or name in named or not _same(value, default_value):
            parameters[name] = _loggable(value)
    return parameters


def given_names(
    arguments: Sequence[str] | Mapping[str, Any] | Any, subcommand: str | None = None
) -> set[str]:
    """The parameter names that the command line ``arguments`` set, through its flags
    (``--trainer.max_epochs 3``, ``--model.optimizer.init_args.lr=0.1``) and the config files it gives
    (``--config configs/mnist_convnet.yaml``, before or after ``subcommand``), except config files that
    LightningCLI wrote (``DUMP_HEADER``). ``arguments`` may also be the mapping LightningCLI accepts instead
    of a command line."""
    if arguments is None:
        return set()
    if not isinstance(arguments, (str, Sequence)):  # a dict or a Namespace of arguments
        plain = _plain(arguments)
        if subcommand and isinstance(plain.get(subcommand), Mapping):
            plain = plain[subcommand]
        return _mapping_names(plain, "")
    tokens = [str(token) for token in arguments]
    names: set[str] = set()
    in_subcommand = subcommand is None
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not in_subcommand and token == subcommand:
            in_subcommand = True
            continue
        if not token.startswith("--"):
            continue
        flag, equals, value = token[2:].partition("=")
        takes_next = index < len(tokens) and not tokens[index].startswith("--")
        if not equals and takes_next and (in_subcommand or tokens[index] != subcommand):
            value = tokens[index]
            index += 1
        flag = flag.rstrip("+")  # --trainer.callbacks+=...: jsonargparse's "append to the list"
        if flag == "config":
            section = None if in_subcommand else subcommand
            names |= _config_file_names(value, section)
        elif in_subcommand:
            names.add(parameter_name(flag))
            names |= _mapping_names(_mapping_value(value), flag)
    return names


def _config_file_names(value: str, section: str | None) -> set[str]:
    """The names a config file (or a config given inline, as jsonargparse allows) sets; none for a
    config that LightningCLI dumped."""
    path = Path(value)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith(DUMP_HEADER):
            return set()
        content = yaml.safe_load(text)
    else:
        content = _mapping_value(value)
    if section is not None:  # a config given before the subcommand holds one section per subcommand
        content = content.get(section) if isinstance(content, Mapping) else None
    if not isinstance(content, Mapping) or _whole_config(content):
        return set()
    return _mapping_names(content, "")


def _whole_config(content: Mapping[str, Any]) -> bool:
    """Whether ``content`` is a whole config written by a program (a sweep's trial config, its
    ``best.yaml``), which may lack ``DUMP_HEADER``: its trainer section names every argument of Lightning's
    Trainer (the non-null ones, 20 of 41, when dumped without nulls), where a config written by hand names
    a handful (at most 5 in configs/)."""
    trainer = content.get("trainer")
    if not isinstance(trainer, Mapping):
        return False
    from lightning.pytorch import Trainer

    arguments = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    return len(arguments & set(trainer)) >= len(arguments) // 3


def _mapping_value(value: str) -> Mapping[str, Any] | None:
    """A flag's value as the mapping it gives (inline YAML or JSON, or a file holding one), if it is one."""
    text = value.strip()
    try:
        if text.startswith("{"):
            content = yaml.safe_load(text)
        elif text.endswith((".yaml", ".yml", ".json")) and Path(text).is_file():
            content = yaml.safe_load(Path(text).read_text(encoding="utf-8"))
        else:
            return None
    except (yaml.YAMLError, OSError):
        return None  # not a mapping after all: the parser has already taken it as a plain value
    return content if isinstance(content, Mapping) else None


def _mapping_names(content: Mapping[str, Any] | None, prefix: str) -> set[str]:
    names: set[str] = set()
    for key, value in (content or {}).items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if key == "class_path":
            names.add(parameter_name(prefix))
        elif isinstance(value, Mapping):
            names |= _mapping_names(value, name)
        else:
            names.add(parameter_name(name))
    return names


def _walk(value: Any, default: Any, name: str, entries: dict[str, tuple[Any, Any, bool]]) -> None:
    """Records ``(value, default, is a class)`` for ``name`` and every argument below it."""
    if isinstance(value, Mapping) and "class_path" in value:
        class_path = str(value["class_path"])
        entries[parameter_name(name)] = (class_path, None, True)
        base = dict(class_defaults(class_path))
        if isinstance(default, Mapping) and str(default.get("class_path")) == class_path:
            # The default instance of this very class (a module's default optimizer): its values.
            base.update(default.get("init_args") or {})
        arguments = {**(value.get("init_args") or {}), **(value.get("dict_kwargs") or {})}
        for key, argument in arguments.items():
            _walk(argument, base.get(key, _MISSING), f"{name}.{key}", entries)
    elif isinstance(value, Mapping) and value:
        for key, argument in value.items():
            sub_default = default.get(key, _MISSING) if isinstance(default, Mapping) else _MISSING
            _walk(argument, sub_default, f"{name}.{key}", entries)
    else:
        entries[parameter_name(name)] = (value, default, False)


@functools.lru_cache(maxsize=64)
def class_defaults(class_path: str) -> Mapping[str, Any]:
    """The default of each argument of the class at ``class_path`` as the command's parser resolves it
    (a default optimizer given as ``lambda params: SGD(params, lr=0.01)`` is ``SGD`` with ``lr: 0.01``);
    its signature's defaults where the parser cannot take the class."""
    cls = _import(class_path)
    if cls is None:
        return {}
    try:
        from jsonargparse import ArgumentParser

        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls)
        return _plain(parser.get_defaults())
    except Exception:  # any class jsonargparse cannot describe: its signature's defaults
        defaults: dict[str, Any] = {}
        for klass in reversed(getattr(cls, "__mro__", (cls,))):
            init = getattr(klass, "__init__", None) if isinstance(klass, type) else klass
            try:
                parameters = inspect.signature(init).parameters.values() if init is not None else ()
            except (TypeError, ValueError):
                continue
            for parameter in parameters:
                if parameter.default is not inspect.Parameter.empty:
                    defaults[parameter.name] = parameter.default
        return defaults


def _import(class_path: str) -> Any:
    module_name, _, attribute = class_path.rpartition(".")
    while module_name:
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError:
            module_name, _, outer = module_name.rpartition(".")
            attribute = f"{outer}.{attribute}"
            continue
        for part in attribute.split("."):
            target = getattr(target, part, None)
        return target
    return None


def _plumbing(name: str) -> bool:
    return any(name == entry or name.startswith(f"{entry}.") for entry in PLUMBING)


def _plain(value: Any) -> Any:
    """Nested mappings of a jsonargparse Namespace (and of the mappings and lists holding Namespaces)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _same(value: Any, default: Any) -> bool:
    if default is _MISSING:
        return False
    value, default = _plain(value), _plain(default)
    if isinstance(value, bool) != isinstance(default, bool):
        return False  # True == 1 in Python, not as a setting
    try:
        if value == default:
            return True
    except Exception:  # values that cannot be compared (tensors): by their text below
        pass
    return type(value) is type(default) and str(value) == str(default)


def _loggable(value: Any) -> Value:
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "None"
    return str(_plain(value))
