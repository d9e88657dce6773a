"""What a lesson's ``configure_optimizers`` takes: an optimizer and an optional scheduler, injected; and the
check that their arguments are ones torch takes.

The types are what LightningCLI's dependency injection hands a module (a config names any ``torch.optim``
class and its arguments), spelled out here rather than imported from ``lightning.pytorch.cli`` so that a
module imports nothing of the command.

An argument torch refuses (``lr: -1``, ``momentum: -0.5``, ``betas: [2, 0]``: its ``ValueError``) or one
it lets through but that is no number to train with (``lr: .nan``, ``.inf``) is a user's error naming the
flag, ``--model.optimizer.init_args.<arg>`` (or ``--model.lr_scheduler.init_args.<arg>``). The command
checks them before anything is built (``check_injected``, from experiments/domains.py), by building the
optimizer and scheduler on a throwaway parameter; ``build_optimizer`` and ``optimizer_config`` check
again, for a module used from Python.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from core.domains import FLOAT32_MAX
from core.errors import ExperimentError

#: params -> optimizer
OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]
#: optimizer -> scheduler; any torch scheduler class can be injected
LRSchedulerCallable = Callable[[Optimizer], LRScheduler | ReduceLROnPlateau]

#: The flags of the injected optimizer and scheduler (their ``init_args`` follow).
OPTIMIZER_FLAG = "--model.optimizer"
SCHEDULER_FLAG = "--model.lr_scheduler"


def non_finite(value: Any) -> bool:
    """Whether ``value`` is a NaN or infinite float, or one past float32's range (1e308 overflows in the
    step), or a list or tuple holding one (``betas``)."""
    if isinstance(value, float):
        return not abs(value) <= FLOAT32_MAX
    if isinstance(value, (list, tuple)):
        return any(non_finite(item) for item in value)
    return False


def _outcome(build: Callable[[dict[str, Any]], Any], init_args: dict[str, Any]) -> Exception | None:
    """What ``build(init_args)`` raises, or None when it builds."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deprecation warning of a scheduler is not the user's error
            build(init_args)
    # Any exception: only a ValueError is reported here; the rest is left to the real build.
    except Exception as error:
        return error
    return None


def argument_error(
    build: Callable[[dict[str, Any]], Any], init_args: Mapping[str, Any], flag: str
) -> ExperimentError | None:
    """The user's error in the ``init_args`` of the class that ``build(init_args)`` instantiates, naming
    ``<flag>.init_args.<arg>``; None when they are fine, or fail other than with a ``ValueError``.

    A NaN or infinite number is refused whatever torch says. When torch refuses the arguments (a
    ``ValueError``, or another of ``USER_MISTAKES`` when the class is built and stepped once), the argument
    at fault is the first whose removal (its default instead) lets the class
    build; if no single one does, the message names ``flag`` with torch's reason.
    """
    init_args = dict(init_args)
    for key, value in init_args.items():
        if non_finite(value):
            return ExperimentError(
                f"{flag}.init_args.{key}: {value} is not a finite float32 number: give a number "
                f"between -{FLOAT32_MAX:.3g} and {FLOAT32_MAX:.3g}"
            )
    error = _outcome(build, init_args)
    if not isinstance(error, USER_MISTAKES):
        # Built, or failed for another reason (a missing argument): left to the real build to report.
        return None
    reason = _reason(error)
    for key in init_args:
        if _outcome(build, {k: v for k, v in init_args.items() if k != key}) is None:
            return ExperimentError(
                f"{flag}.init_args.{key}: {init_args[key]!r} is refused ({reason}): set a valid value in "
                "the config or the flag"
            )
    return ExperimentError(f"{flag}: {reason}: set valid values in the config or the flags")


def _reason(error: BaseException) -> str:
    """The first line of torch's message (a KeyError's is its key, quoted, and may run over lines)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


#: What torch raises for arguments it cannot work with: a ValueError when it checks them; else when it
#: uses them (CosineAnnealingLR's T_max=0 divides by zero at its first step; a last_epoch >= 0 on a new
#: optimizer is a KeyError; a list where a number goes is a TypeError).
USER_MISTAKES = (ValueError, ZeroDivisionError, KeyError, TypeError, OverflowError)


def _step_once(scheduler: Any) -> None:
    """One optimizer step and one scheduler step, as the first training step makes."""
    scheduler.optimizer.step()
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(1.0)
    else:
        scheduler.step()


def _throwaway_parameters() -> list[Tensor]:
    return [torch.nn.Parameter(torch.zeros(1))]


def check_injected(
    optimizer_class: type[Optimizer] | None,
    optimizer_args: Mapping[str, Any],
    scheduler_class: type | None = None,
    scheduler_args: Mapping[str, Any] | None = None,
) -> None:
    """Refuse, as ``ExperimentError`` naming the flag, what the injected optimizer or scheduler class will
    not take: both are built once on a throwaway parameter (cheap, and long before training)."""
    if optimizer_class is not None:
        error = argument_error(
            lambda args: optimizer_class(_throwaway_parameters(), **args), optimizer_args, OPTIMIZER_FLAG
        )
        if error is not None:
            raise error
    if scheduler_class is not None:
        # On the configured optimizer (it built above), or SGD when the module's default is used.
        def optimizer() -> Optimizer:
            if optimizer_class is None:
                return torch.optim.SGD(_throwaway_parameters(), lr=0.1)
            return optimizer_class(_throwaway_parameters(), **optimizer_args)

        def step(args: dict[str, Any]) -> None:
            _step_once(scheduler_class(optimizer(), **args))

        error = argument_error(step, scheduler_args or {}, SCHEDULER_FLAG)
        if error is not None:
            raise error


def _injected_error(
    callable_: Callable[..., Any], first: Callable[[], Any], flag: str, error: ValueError | None
) -> ExperimentError:
    """The error for an injected class that refused its arguments: the argument named when the callable is
    the parser's ``functools.partial`` (class and keywords known), else ``flag`` with torch's reason."""
    if isinstance(callable_, functools.partial):
        func, keywords = callable_.func, callable_.keywords
        found = argument_error(lambda args: func(first(), **args), keywords, flag)
        if found is not None:
            return found
    return ExperimentError(f"{flag}: {error}: set valid values in the config or the flags")


def build_optimizer(optimizer: OptimizerCallable, parameters: Iterable[Any]) -> torch.optim.Optimizer:
    """``optimizer(parameters)``, with an argument the optimizer rejects (torch's ``ValueError``: a
    negative learning rate, betas out of range) or a NaN or infinite one a user's error naming the flag."""
    try:
        built = optimizer(parameters)
    except ValueError as error:
        raise _injected_error(optimizer, _throwaway_parameters, OPTIMIZER_FLAG, error) from error
    # torch takes lr=nan (its check is `lr < 0`): the defaults are the optimizer's own arguments.
    for key, value in built.defaults.items():
        if non_finite(value):
            raise ExperimentError(
                f"{OPTIMIZER_FLAG}.init_args.{key}: {value} is not a finite float32 number: give a number"
            )
    return built


def optimizer_config(
    parameters: Iterable[Tensor], optimizer: OptimizerCallable, lr_scheduler: LRSchedulerCallable | None
) -> Any:
    """``configure_optimizers``' answer for an injected optimizer and optional scheduler: the scheduler
    steps once per epoch, and a ReduceLROnPlateau watches ``val/loss``."""
    built = build_optimizer(optimizer, parameters)
    if lr_scheduler is None:
        return built
    try:
        scheduler = lr_scheduler(built)
    except ValueError as error:
        throwaway = functools.partial(torch.optim.SGD, _throwaway_parameters(), lr=0.1)
        raise _injected_error(lr_scheduler, throwaway, SCHEDULER_FLAG, error) from error
    return {
        "optimizer": built,
        "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
    }
