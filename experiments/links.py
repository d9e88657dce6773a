"""Sizes the data decides reach the model without being repeated in the config.

A datamodule with an ``in_features``, ``num_classes`` or ``vocab_size`` attribute (a property, or set in
``__init__``) gives it to the model's ``__init__`` argument of the same name (``DATA_TO_MODEL``); a
datamodule without it, or whose attribute is None ("not known from the data"), leaves the model's
configured value alone. When the data's value replaces one the user configured, the command says so in
one ``note:`` line, as it does for a checkpoint's arguments.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from core.errors import ExperimentError

#: Datamodule attributes that become the model's init argument of the same name when the datamodule has
#: them (properties computed from the data, or attributes set in ``__init__``).
DATA_TO_MODEL = ("in_features", "num_classes", "vocab_size")


class DataAttributeError(BaseException):
    """Carries a user error raised by a datamodule attribute out of jsonargparse's link machinery.

    jsonargparse turns any ``Exception`` from a link's ``compute_fn`` into a ValueError whose message
    formats the datamodule with ``str()``, and a LightningDataModule's ``__str__`` builds every loader
    (reading, or failing on, the data). A BaseException passes through; the CLI unwraps it.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class DataToModel:
    """The data-to-model links of one command.

    Each is a link ``data -> model.init_args.<name>`` applied on instantiation: the datamodule is built
    first, the link reads its attribute and passes it to the model's ``__init__``, and the model's
    argument is not required in the config. The classes are chosen by the config, so each link meets
    four cases, and jsonargparse 4.x / Lightning 2.6 need help with three of them:

    - data has it, model takes it: the data's value is used; it wins over one in the config, as link
      targets do in jsonargparse (``note`` then says so).
    - data lacks it, model takes it (the image lessons, ``num_classes: 10`` in their configs): a link from
      ``data.<name>`` would be skipped, but jsonargparse's debug message for the skip formats the
      datamodule with ``str()``, and a LightningDataModule's ``__str__`` builds every dataloader (loading
      the data, and failing for loaders that are not DataLoaders). So the link's source is the whole
      datamodule and its ``compute_fn`` reads the attribute; an absent or None attribute gives back the
      model's configured value.
    - model lacks it: jsonargparse drops the value ("target not found") but reports the link as applied,
      and LightningCLI writes applied link values into the model's hyperparameters, so every checkpoint
      would carry a ``vocab_size: None`` its class does not take; ``drop_foreign`` removes those after
      instantiation.

    Linking in ``before_instantiate_classes``, only for the model chosen, would avoid the last case but
    comes after parsing, which already rejects a config that omits a required ``vocab_size``.

    Args:
        model_config: Gives the parsed ``model`` section of the run (read when the links are applied).
    """

    def __init__(self, model_config: Callable[[], Namespace]) -> None:
        self.model_config = model_config
        #: ``name=<data's value> (configured <value>)`` of each configured value the data replaced, by name.
        self.replaced: dict[str, str] = {}

    def add_to(self, parser: LightningArgumentParser) -> None:
        for name in DATA_TO_MODEL:
            parser.link_arguments(
                "data", f"model.init_args.{name}", self._compute(name), apply_on="instantiate"
            )

    def _compute(self, name: str) -> Callable[[LightningDataModule], Any]:
        def compute(datamodule: LightningDataModule) -> Any:
            parameters = self.model_parameters()
            if name not in parameters:
                return None  # dropped; and a property that reads the data need not run for nothing
            configured = self.configured(name)
            # Looked up statically, so an AttributeError raised inside a property is a bug that
            # surfaces, not an attribute taken for absent.
            if inspect.getattr_static(datamodule, name, None) is None:
                return configured
            try:
                value = getattr(datamodule, name)
            except ExperimentError as error:
                raise DataAttributeError(error) from error
            if value is None:
                return configured
            # A value equal to the class's default may be the default itself, which the user did not
            # choose: only a value that differs from it is reported as replaced.
            if configured not in (None, value, parameters[name].default):
                self.replaced[name] = f"{name}={value!r} (configured {configured!r})"
            return value

        compute.__name__ = f"{name}_of"  # jsonargparse names links "<compute_fn>(data) --> <target>"
        return compute

    def model_parameters(self) -> Mapping[str, inspect.Parameter]:
        """The chosen model class's ``__init__`` parameters, from its class path in the config."""
        module_name, _, class_name = str(self.model_config().get("class_path", "")).rpartition(".")
        if not module_name:
            return {}
        return inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters

    def configured(self, name: str) -> Any:
        """The model's ``name`` as parsed from the config and command line (None if it has none)."""
        init_args = self.model_config().get("init_args")
        return init_args.get(name) if isinstance(init_args, Namespace) else None

    def note(self) -> None:
        """One ``note:`` line (rank 0) naming the configured values the data replaced, if any."""
        if self.replaced and rank_zero_only.rank == 0:
            print(f"note: the data gives {', '.join(self.replaced.values())}: the data's values are used")
        self.replaced = {}

    def drop_foreign(self, model: LightningModule) -> None:
        """Remove ``DATA_TO_MODEL`` values from the hyperparameters of a model whose ``__init__`` does not
        take them; checkpoints and logged hyperparameters hold what it took."""
        parameters = inspect.signature(type(model)).parameters
        foreign = {name for name in DATA_TO_MODEL if name not in parameters and name in model.hparams}
        if foreign:
            for name in foreign:
                model.hparams.pop(name)
            # Saving the hyperparameters again refreshes the copy Lightning logs when training starts
            # (hparams_initial, read-only): the public way to change what a module reports.
            model.save_hyperparameters(dict(model.hparams))
