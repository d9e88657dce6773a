"""What a run prints: progress for output that is not a terminal, a model summary of layers only, the
evaluation results to 4 significant digits, where the run wrote, and which of Lightning's messages and
warnings reach the user (and where).

Progress: one line per epoch with the key metrics.

Lightning's progress bars redraw themselves with carriage returns; sent to a file or a pipe (a batch
job's log, CI, ``| tee``) that is hundreds of kilobytes of half-lines for a short run. When stdout is not
a terminal the command uses ``EpochLines`` instead of the bar (and in a terminal, ``RichBar``, whose
metrics read as the lines' do):

    epoch 3/12  train/acc 0.9871  train/loss 0.0412  val/acc 0.989  val/loss 0.0355  (14.2 s)

Validation, test and predict print nothing per batch; their results table is Lightning's, its values
rounded to 4 significant digits (``round_printed_results``) as the epoch lines are: ``0.9689``, not
``0.9689000248908997``.

Where it went: every command ends with it (``OutputPaths``). ``fit``:

    run: lightning_logs/sine_rnn/version_3
    best checkpoint: lightning_logs/sine_rnn/version_3/checkpoints/best-epoch=9-step=90.ckpt (val/loss 0.0123)

``validate``, ``test``, ``predict``: ``test folder: lightning_logs/sine_rnn/version_3/test`` (a
prediction or feature writer names its file just before).

Model summary: Lightning lists every child module of the LightningModule, and the lessons' torchmetrics
objects (``train_loss``, ``val_acc``, ...) are modules too; ``LayerSummary`` lists the network only, and
shows FLOPs only when they were measured (a module with an ``example_input_array``): Lightning's
``FLOPs 0`` column and ``Total FLOPs: 0`` otherwise say a measurement that was never made.

Messages: Lightning's log lines go to stdout (``lightning_output_to_stdout``), so that stderr holds what
went wrong and a mistake is its one line there. Set-up lines that say nothing are dropped
(``SetUpLines``): the device lines of accelerators the machine does not have (``TPU available: False``;
``GPU available: False, used: False`` on a CPU-only machine), and in a sweep's trial every set-up line
(the seed, the devices, and the model summary: the same for each trial). Warnings no user of the lessons
can act on are silenced (``silence_known_warnings``), by the command and by every in-process use of
``ExperimentCLI``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse._deprecated import JsonargparseDeprecationWarning
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme
from lightning.pytorch.loops.evaluation_loop import _EvaluationLoop
from lightning.pytorch.utilities.model_summary import ModelSummary as Summary
from lightning.pytorch.utilities.model_summary.model_summary import (
    _format_summary_table,
    get_formatted_model_size,
    get_human_readable_count,
)
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn
from torchmetrics import Metric

from core.distributed import run_dir

#: Significant digits of a printed metric: the epoch lines, the results table, the best checkpoint's score.
DIGITS = 4


def stdout_is_terminal() -> bool:
    """Whether the command's output goes to a terminal (where a redrawn bar reads well)."""
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


#: The environment variable naming the sweep trial that a fit is (experiments/sweep/trial.py); the
#: command (experiments/cli.py) reads it too.
TRIAL_VARIABLE = "EXPERIMENTS_SWEEP_TRIAL"


def in_sweep_trial() -> bool:
    """Whether this process is a sweep's trial (a ``fit`` the sweep worker started)."""
    return bool(os.environ.get(TRIAL_VARIABLE))


def significant(value: float) -> str:
    """``value`` to ``DIGITS`` significant digits: 0.9689, 0.06059, 1.235e+04."""
    return f"{value:.{DIGITS}g}"


class EpochLines(ProgressBar):
    """A progress "bar" of one printed line per training epoch: epoch number, the epoch's logged metrics
    (every value the run has logged but a test's: ``train/loss`` and ``val/acc`` as the lessons name
    them, ``train_loss`` and ``val_acc`` as Lightning's documentation does), and the epoch's wall time.
    Printed by global rank 0 only."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._epoch: int | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            after_each_epoch(trainer, self._print_epoch)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A fit resumed mid-epoch starts no epoch (Lightning skips on_train_epoch_start), yet ends one.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.perf_counter()
        self._epoch = trainer.current_epoch

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print_epoch(trainer)  # an epoch that ended without its line (none in Lightning 2.6)

    def _print_epoch(self, trainer: Trainer) -> None:
        # current_epoch counts completed epochs: an epoch whose end failed half-way has no line.
        if self._epoch is None or trainer.current_epoch <= self._epoch:
            return
        epoch, self._epoch = self._epoch, None
        if not self.is_enabled:
            return
        seconds = time.perf_counter() - self._started
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        metrics = self._metrics(trainer, trainer.lightning_module)
        values = "  ".join(f"{name} {significant(value)}" for name, value in metrics.items())
        print(f"epoch {epoch + 1}{total}  {values}  ({seconds:.1f} s)", flush=True)

    def _metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        shown: dict[str, Any] = dict(self.get_metrics(trainer, pl_module))
        shown.pop("v_num", None)
        for name, value in trainer.callback_metrics.items():
            if not name.startswith("test") and name not in shown:
                shown[name] = value
        plain = {}
        for name, value in sorted(shown.items()):
            try:
                plain[name] = float(value)
            except (TypeError, ValueError):
                continue
        return plain


class RichBar(RichProgressBar):
    """Lightning's rich progress bar, for a terminal, with its metrics as the epoch lines give them: to
    ``DIGITS`` significant digits (Lightning's shows 3 decimals: ``0.000`` for a loss of 3e-4), the
    epoch's training values once the epoch is over (Lightning's bar takes them before the lessons log
    them, so the last epoch's bar shows the epoch before), and without ``v_num``, the run's version,
    which the run's folder names at the end."""

    def __init__(self) -> None:
        super().__init__(theme=RichProgressBarTheme(metrics_format=f".{DIGITS}g"))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            after_each_epoch(trainer, self._show_epoch)

    def _show_epoch(self, trainer: Trainer) -> None:
        if self.progress is not None:
            self._update_metrics(trainer, trainer.lightning_module)
            self.refresh()

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def after_each_epoch(trainer: Trainer, action: Callable[[Trainer], None]) -> None:
    """Call ``action(trainer)`` when each training epoch is over, once Lightning has finished it.

    No callback hook comes late enough: the lessons log their epoch's training values in their own
    ``on_train_epoch_end``, which Lightning runs after the callbacks' hook, and the next hook
    (``on_train_epoch_start``, or ``on_train_end`` after the last epoch) comes after Lightning has
    printed "`Trainer.fit` stopped: `max_epochs=N` reached.", which then came before the last epoch's
    line. The fit loop's ``on_advance_end`` ends the epoch (hooks, logging, the epoch counted); the
    action runs right after it (tests/experiments/test_console.py checks the order).
    """
    loop = trainer.fit_loop
    if getattr(loop.on_advance_end, "_after_each_epoch", None) == action:
        return  # a second fit of the same trainer
    finish_epoch = loop.on_advance_end

    def on_advance_end() -> None:
        try:
            finish_epoch()
        finally:  # also when a stop request ends the epoch with an exception
            action(trainer)

    on_advance_end._after_each_epoch = action  # type: ignore[attr-defined]
    loop.on_advance_end = on_advance_end  # type: ignore[method-assign]


def _rounded(value: Any) -> Any:
    """A floating-point scalar as ``DIGITS`` significant digits (a string, which Lightning's results
    table prints as it is); anything else unchanged."""
    if isinstance(value, Tensor):
        return significant(value.item()) if value.numel() == 1 and value.is_floating_point() else value
    return significant(value) if isinstance(value, float) else value


def _print_rounded_results(results: list[dict[str, Any]], stage: str) -> None:
    _EvaluationLoop._print_results(apply_to_collection(results, (Tensor, float), _rounded), stage)


def round_printed_results(trainer: Trainer) -> None:
    """Lightning's table of ``validate`` and ``test`` results (rich's or plain) with its values to
    ``DIGITS`` significant digits: the loops print it through their ``_print_results``, given here
    values already rounded (float32 values printed in full read ``0.9689000248908997``)."""
    for loop in (trainer.validate_loop, trainer.test_loop):
        loop._print_results = _print_rounded_results  # type: ignore[method-assign]


def shown_path(path: str | Path) -> str:
    """``path`` as the user reads it: relative to the working folder when it lies inside it (a resumed
    run's checkpoint paths are recorded absolute)."""
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return str(path)


class OutputPaths(Callback):
    """Says where the command wrote, as its last lines, on global rank 0: after ``fit`` the run folder and
    the best checkpoint with its score; after ``validate``, ``test`` and ``predict`` the folder they wrote
    to. Printed at ``teardown``, after Lightning's own end-of-run messages and the module's
    ``on_fit_end``; a run that fails prints its error instead."""

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        stage = getattr(stage, "value", stage)
        if stage == "fit":
            lines = [f"run: {self.folder(trainer)}", *self.checkpoints(trainer)]
        else:
            lines = [f"{stage} folder: {self.folder(trainer)}"]
        print("\n".join(lines), flush=True)

    @staticmethod
    def folder(trainer: Trainer) -> str:
        """The run's log folder, or why there is none."""
        folder = run_dir(trainer)
        if folder is not None:
            return shown_path(folder)
        if trainer.fast_dev_run:
            return "none (fast_dev_run logs nothing)"
        if not trainer.loggers:
            return "none (no logger)"
        logger = trainer.loggers[0]
        return f"{type(logger).__name__} run {logger.version} (no local folder)"

    @staticmethod
    def checkpoints(trainer: Trainer) -> list[str]:
        """A line per checkpoint callback that ranks checkpoints by a metric: its best and the score; else
        the latest checkpoint written, or why there is none."""
        callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        if trainer.fast_dev_run:
            return ["best checkpoint: none (fast_dev_run saves none)"]
        if not callbacks:
            return ["best checkpoint: none (checkpointing is off)"]
        lines = []
        for callback in (c for c in callbacks if c.monitor):
            score = callback.best_model_score
            if callback.best_model_path and score is not None:
                value = significant(float(score))
                path = shown_path(callback.best_model_path)
                lines.append(f"best checkpoint: {path} ({callback.monitor} {value})")
            else:
                lines.append(f"best checkpoint: none saved (no {callback.monitor} was logged)")
        if lines:
            return lines
        latest = [c.best_model_path or c.last_model_path for c in callbacks]
        latest = [path for path in latest if path]
        if latest:
            return [f"latest checkpoint: {shown_path(latest[0])} (no metric ranks them)"]
        return ["best checkpoint: none saved"]


class _LayersOnly(Summary):
    """Lightning's summary table without torchmetrics objects (nor their children)."""

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        modules = super().named_modules
        metrics = tuple(f"{name}." for name, module in modules if isinstance(module, Metric))
        return [
            (name, module)
            for name, module in modules
            if not isinstance(module, Metric) and not name.startswith(metrics)
        ]


class LayerSummary(ModelSummary):
    """Lightning's model summary, listing the network's layers but not the lesson's metric objects, and
    FLOPs only when they were measured.

    Lightning counts FLOPs while it runs the module's ``example_input_array`` through it; a module without
    one (every lesson) gets a column of zeros and "Total FLOPs: 0", which are left out here."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)
        self._flops_measured = False

    def _summary(self, trainer: Trainer, pl_module: LightningModule) -> Summary:
        self._flops_measured = pl_module.example_input_array is not None
        return _LayersOnly(pl_module, max_depth=self._max_depth)

    def summarize(  # type: ignore[override]
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = [(name, values) for name, values in summary_data if self._flops_measured or name != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns
        )
        if not self._flops_measured:
            table = "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops"))
        logging.getLogger("lightning.pytorch.callbacks.model_summary").info("\n" + table)


#: How rich aligns and styles the summary's columns (as Lightning's RichModelSummary does).
_RICH_COLUMNS = {
    " ": {"style": "dim"},
    "Name": {"justify": "left", "no_wrap": True},
    "Params": {"justify": "right"},
    "Params per Device": {"justify": "right"},
    "FLOPs": {"justify": "right"},
    "In sizes": {"justify": "right", "style": "white"},
    "Out sizes": {"justify": "right", "style": "white"},
}


class RichLayerSummary(LayerSummary, RichModelSummary):
    """``LayerSummary`` drawn by rich, next to rich's progress bar (Lightning's rich table, its columns
    those of the summary: no FLOPs unless measured)."""

    def summarize(  # type: ignore[override]
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if self._flops_measured or name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, **_RICH_COLUMNS.get(name, {}))
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        counts = [trainable_parameters, total_parameters - trainable_parameters, total_parameters]
        trainable, frozen, total = (get_human_readable_count(int(count)) for count in counts)
        grid = Table.grid(expand=True)
        grid.add_column()
        grid.add_row(f"[bold]Trainable params[/]: {trainable}")
        grid.add_row(f"[bold]Non-trainable params[/]: {frozen}")
        grid.add_row(f"[bold]Total params[/]: {total}")
        size = get_formatted_model_size(model_size)
        grid.add_row(f"[bold]Total estimated model params size (MB)[/]: {size}")
        grid.add_row(f"[bold]Modules in train mode[/]: {total_training_modes['train']}")
        grid.add_row(f"[bold]Modules in eval mode[/]: {total_training_modes['eval']}")
        if self._flops_measured:
            grid.add_row(f"[bold]Total FLOPs[/]: {get_human_readable_count(total_flops)}")
        console = get_console()
        console.print(table)
        console.print(grid)


def lightning_output_to_stdout() -> None:
    """Lightning's messages (the seed, the devices, the model summary) go to stdout, where a program's
    output goes: stderr keeps what went wrong, so a mistake is its one line there. Set-up lines that say
    nothing are dropped (``SetUpLines``)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                handler.setStream(_STDOUT)  # type: ignore[arg-type]
    # Lightning 2.6 advertises its cloud logger on every run; nothing a lesson's user asked about.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvert())
    drop_set_up_lines()


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time: while rich's progress bar is drawn in a terminal,
    that is rich's proxy, which prints a line above the bar; the stream itself, fixed when the command
    starts, would write into the bar ("`Trainer.fit` stopped" at the end of its last line, and the bar
    drawn again below it)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


_STDOUT = _CurrentStdout()


class _NoAdvert(logging.Filter):
    """Drops Lightning's "💡 Tip: ... litlogger" line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


class SetUpLines(logging.Filter):
    """Drops Lightning's set-up lines that tell nothing: a device line of an accelerator the machine
    lacks (``TPU available: False, using: 0 TPU cores``; ``GPU available: False, used: False``: no GPU
    to use, so the run is on the CPU), and in a sweep's trial all of them (the seed, the devices, the GPU
    a rank uses), which would be repeated for every trial. A GPU the machine has is always named, used
    or not (Lightning also warns when one is not)."""

    ABSENT = re.compile(r"(GPU available: False, used: False|[A-Z]PU available: False, using: 0 )")
    SET_UP = re.compile(
        r"(\[rank: \d+\] )?(Seed set to |[A-Z]PU available: |LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: )"
    )
    #: The loggers that write them: the seed's, rank-zero messages', the CUDA accelerator's.
    LOGGERS = (
        "lightning.fabric.utilities.seed",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if in_sweep_trial():
            return self.SET_UP.match(message) is None
        return self.ABSENT.match(message) is None


_SET_UP_LINES = SetUpLines()


def drop_set_up_lines() -> None:
    """Install ``SetUpLines`` on the loggers that write those lines (on the loggers themselves, so that
    the lines are dropped whatever handlers print them: Lightning's, a root logger's)."""
    for name in SetUpLines.LOGGERS:
        logging.getLogger(name).addFilter(_SET_UP_LINES)


def silence_known_warnings(*messages: str) -> None:
    """Ignore Lightning's warnings that say nothing a user of the lessons can act on, and ``messages``
    (regular expressions) as well; benchmarks that run the CLI in-process call it too."""
    # Lightning 2.6 on torch 2.14 warns about its own use of a torch API on every run; not actionable.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Batch indices are only known for DataLoader samplers; nothing here uses them.
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices")
    # Lessons log epoch values computed by torchmetrics, which has already reduced them over all ranks;
    # Lightning cannot tell and asks for sync_dist, which would only average identical numbers again.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(train|val|test)/")
    # Lightning 2.6 calls jsonargparse APIs that jsonargparse 4.49 deprecated; nothing a user can change.
    warnings.filterwarnings("ignore", category=JsonargparseDeprecationWarning, module=r"lightning\.")
    # Every lesson logs per epoch (core/metrics.py), so a run shorter than log_every_n_steps loses nothing.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than")
    # On a machine with SLURM's programs, Lightning warns on every run started outside `srun`: a hint for
    # a multi-process job, noise for the one-process runs, sweeps and bad-config errors of a login node.
    # scripts/slurm.sbatch starts jobs with srun; the README's SLURM lines say so.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not")
    for message in messages:
        warnings.filterwarnings("ignore", message=message)
