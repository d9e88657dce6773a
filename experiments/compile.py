"""``torch.compile`` as an option of every lesson: ``--compile.enabled true`` (and ``--compile.mode``,
``--compile.dynamic``, ``--compile.fullgraph``, ``--compile.backend``), from a config or the command line.

The module is compiled in place (``nn.Module.compile``), so its ``state_dict`` keeps its keys: a compiled
run's checkpoints load into an uncompiled module and the other way round, with no ``_orig_mod.`` prefix.
What runs compiled is the module's ``forward`` (``self(x)`` in the steps); loss, metrics and logging stay
eager. Compilation happens at the first batch of each shape: on the CPU (inductor's C++ backend) the
first steps of a run take seconds to tens of seconds, and for the tutorial's small networks the
compiled step is not faster on the CPU; compile pays on a GPU, where ``mode: reduce-overhead`` (CUDA
graphs) removes the per-kernel launch cost that bounds small models.

Where compile cannot work the run stops at once with one line: a lesson whose training does not go
through ``forward`` says why (``compile_unsupported`` on its class), a platform without TorchDynamo
says so, and a compiler failure at the first step is reported by the command as one line naming
``--compile``.
"""

from __future__ import annotations

import typing
from typing import Literal

from lightning.pytorch import Callback, LightningModule, Trainer

from core.domains import NonEmptyText
from core.errors import ExperimentError

#: torch.compile's modes (``torch._inductor.list_mode_options()``) and its default.
Mode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
MODES: tuple[str, ...] = typing.get_args(Mode)


class Compile(Callback):
    """Compiles the lesson's module with ``torch.compile`` when a fit, validate, test or predict starts.

    Args:
        enabled: Compile the module's ``forward``.
        mode: ``default``; ``reduce-overhead`` (CUDA graphs: for small models bound by kernel launches;
            needs static shapes, so keep ``drop_last`` batches or ``dynamic: false``); ``max-autotune``
            (searches kernel configurations: long compiles, for long runs);
            ``max-autotune-no-cudagraphs``.
        dynamic: ``true`` compiles for symbolic shapes at once (batches of varying size: captions,
            the last short batch), ``false`` never, ``null`` (the default) on the second shape seen.
        fullgraph: Fail (one line) at a graph break instead of running the part around it eagerly.
        backend: ``inductor`` (generated code), or ``aot_eager`` / ``eager`` to tell a compiler problem
            from a tracing one.
    """

    def __init__(
        self,
        enabled: bool = False,
        mode: Mode = "default",
        dynamic: bool | None = None,
        fullgraph: bool = False,
        backend: NonEmptyText = "inductor",
    ) -> None:
        if mode not in MODES:
            raise ExperimentError(f"--compile.mode {mode!r} is not a torch.compile mode; choose from {MODES}")
        self.enabled = enabled
        self.mode = mode
        self.dynamic = dynamic
        self.fullgraph = fullgraph
        self.backend = backend

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.enabled:
            return
        reason = getattr(pl_module, "compile_unsupported", None)
        if reason:
            raise ExperimentError(
                f"--compile.enabled: {type(pl_module).__name__} is not compiled: {reason}; "
                "run it without --compile.enabled"
            )
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            raise ExperimentError(
                "--compile.enabled: torch.compile does not run on this platform or Python version; "
                "run without --compile.enabled"
            )
        if getattr(pl_module, "_compiled_call_impl", None) is not None:
            return  # compiled by an earlier stage of the same module (fit, then test)
        # The mode belongs to inductor; other backends take none.
        mode = self.mode if self.backend == "inductor" else None
        pl_module.compile(backend=self.backend, mode=mode, dynamic=self.dynamic, fullgraph=self.fullgraph)


def compile_failure(error: BaseException) -> str | None:
    """The one-line message for an error raised by torch.compile's tracer or compiler, else None."""
    if not type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
        return None
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return (
        f"torch.compile failed ({type(error).__name__}: {first[:300]}); run without --compile.enabled, "
        "or with --compile.backend aot_eager to tell the compiler from the tracing"
    )
