"""The Lightning internals the code still reads, each because Lightning 2.6 offers no public way to do
the same. If a Lightning release moves one, its test here fails and names where it is used, instead of
a feature going quietly wrong. Everything else uses Lightning's public API."""

from __future__ import annotations

from pathlib import Path

from lightning.fabric.plugins.environments import ClusterEnvironment, LightningEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}


def test_launcher_children_for_end_together() -> None:
    # experiments/faults.py FailedRun waits for, then kills, the ranks rank 0 launched.
    launcher = _SubprocessScriptLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    assert launcher.procs == []


def test_cluster_environment_for_slurm_requeue() -> None:
    # experiments/preemption.py Preemption finds the SLURM environment of a one-device run here.
    trainer = Trainer(accelerator="cpu", **QUIET)
    assert isinstance(trainer._accelerator_connector.cluster_environment, ClusterEnvironment)


def test_hpc_checkpoint_path_for_slurm_requeue(tmp_path: Path) -> None:
    # experiments/preemption.py Preemption writes the checkpoint where the next start looks for it.
    trainer = Trainer(accelerator="cpu", default_root_dir=tmp_path, **QUIET)
    path = Path(trainer._checkpoint_connector.hpc_save_path(str(tmp_path)))
    assert path == tmp_path / "hpc_ckpt_1.ckpt"
    path.write_bytes(b"")
    assert Path(trainer._checkpoint_connector.hpc_save_path(str(tmp_path))).name == "hpc_ckpt_2.ckpt"


def test_last_saved_step_for_last_checkpoint() -> None:
    # experiments/callbacks.py LastCheckpoint saves the final state unless ModelCheckpoint already did.
    assert ModelCheckpoint()._last_global_step_saved == 0


def test_every_write_goes_through_save_checkpoint_for_last_checkpoint(tmp_path: Path) -> None:
    # experiments/callbacks.py LastCheckpoint times its writes by overriding ModelCheckpoint's
    # _save_checkpoint(trainer, filepath), the one method every write of ModelCheckpoint calls.
    import inspect

    assert list(inspect.signature(ModelCheckpoint._save_checkpoint).parameters) == [
        "self",
        "trainer",
        "filepath",
    ]
    source = inspect.getsource(ModelCheckpoint)
    assert source.count("self._save_checkpoint(") >= 2  # the top-k and the no-monitor paths


def test_step_counter_for_sine_rnn() -> None:
    # modules/sine_rnn.py counts its per-point optimizer steps into global_step.
    progress = Trainer(accelerator="cpu", **QUIET).fit_loop.epoch_loop.manual_optimization.optim_step_progress
    before = progress.total.completed
    progress.increment_ready()
    progress.increment_completed()
    assert progress.total.completed == before + 1


def test_fit_loop_position_for_exact_resume() -> None:
    # experiments/faults.py ExactResume reads where an interrupted epoch stopped (public attributes of
    # the fit loop, an object Lightning documents as internal).
    fit_loop = Trainer(accelerator="cpu", **QUIET).fit_loop
    assert fit_loop.restarted_mid_epoch is False
    assert fit_loop.epoch_loop.batch_progress.current.processed == 0


def test_file_writer_for_encoded_figures(tmp_path: Path) -> None:
    # core/figures.py add_png puts a PNG encoded once (for the run's figures/ file too) into TensorBoard.
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    assert callable(writer._get_file_writer().add_summary)
    writer.close()


def test_logging_step_counter_for_evaluation_step() -> None:
    # experiments/tensorboard.py RunLogs logs an evaluation at the checkpoint's step through this counter.
    trainer = Trainer(accelerator="cpu", **QUIET)
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 0


def test_model_summary_hooks_for_layer_summary() -> None:
    # experiments/progress.py LayerSummary replaces _summary and keeps the default's _max_depth.
    from lightning.pytorch.callbacks import ModelSummary

    assert ModelSummary(max_depth=2)._max_depth == 2 and callable(ModelSummary._summary)


def test_jsonargparse_print_config_steps_for_the_cli() -> None:
    # experiments/cli.py prints --print_config itself, after the experiment's name is filled in, and
    # silences the deprecation warnings Lightning's CLI triggers by their class.
    from jsonargparse._actions import _ActionPrintConfig
    from jsonargparse._deprecated import JsonargparseDeprecationWarning

    for name in ("skip_print_config", "is_print_config_requested", "print_config_if_requested"):
        assert callable(getattr(_ActionPrintConfig, name))
    assert issubclass(JsonargparseDeprecationWarning, Warning)
