"""A plain Lightning lesson is a complete lesson: the tests that run every config cover it with nothing
added under tests/ but its own test file.

A copy of the project gets a two-spirals lesson written as a contributor following
docs/architecture.md and Lightning's documentation would write it: a LightningModule with its own
``configure_optimizers`` and ``self.log`` calls, a LightningDataModule that makes points in memory and
returns plain ``DataLoader``\\ s, a config, and an end-to-end test. None of the attributes the tests can
read from a lesson's classes (tests/lesson_data.py) is set. Then the every-config tests run on the copy,
in a subprocess with the copy first on ``PYTHONPATH``, selected with ``-k two_spirals``: bf16, the
host-sync check, fit, test and predict under DDP (one torchrun launch) against one process,
the packaged config's name, and the lesson's own test (it learns, and resumes with
``--ckpt_path last``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

#: What a lesson author touches (docs/architecture.md, "Adding a lesson"), as such an author writes it.
LESSON = {
    "modules/two_spirals.py": '''
        """Two interleaved spirals told apart by a small MLP (a lesson written the way Lightning's
        documentation shows a LightningModule)."""

        import torch
        import torch.nn.functional as F
        from lightning.pytorch import LightningModule
        from torch import nn


        class TwoSpiralsClassifier(LightningModule):
            """An MLP from a point (x, y) to the scores of its two spirals."""

            def __init__(self, hidden_size: int = 32, lr: float = 0.05) -> None:
                super().__init__()
                self.save_hyperparameters()
                self.net = nn.Sequential(
                    nn.Linear(2, hidden_size), nn.Tanh(),
                    nn.Linear(hidden_size, hidden_size), nn.Tanh(),
                    nn.Linear(hidden_size, 2),
                )

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x)

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                self.log("train/loss", loss)
                return loss

            def _evaluate(self, batch, phase: str) -> None:
                x, y = batch
                logits = self(x)
                # sync_dist: on several processes, the mean over all of them (docs/architecture.md).
                self.log(f"{phase}/loss", F.cross_entropy(logits, y), sync_dist=True)
                self.log(f"{phase}/acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)

            def validation_step(self, batch, batch_idx):
                self._evaluate(batch, "val")

            def test_step(self, batch, batch_idx):
                self._evaluate(batch, "test")

            def predict_step(self, batch, batch_idx):
                x, _ = batch
                return self(x).softmax(dim=1)

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
    ''',
    "datamodules/two_spirals.py": '''
        """Points on two interleaved spirals, made in memory."""

        import math

        import torch
        from lightning.pytorch import LightningDataModule
        from torch.utils.data import DataLoader, TensorDataset


        def spirals(n: int, noise: float, generator: torch.Generator) -> TensorDataset:
            """``n`` points, each on one of two spirals (its label), a turn each."""
            t = torch.rand(n, generator=generator) * 2 * math.pi
            label = torch.randint(0, 2, (n,), generator=generator)
            angle, radius = t + label * math.pi, t / (2 * math.pi)
            points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
            return TensorDataset(points + noise * torch.randn(n, 2, generator=generator), label)


        class TwoSpiralsDataModule(LightningDataModule):
            """Training, validation and test points of the two spirals."""

            def __init__(
                self, n_train: int = 600, n_val: int = 200, noise: float = 0.02, batch_size: int = 32,
                seed: int = 0,
            ) -> None:
                super().__init__()
                self.save_hyperparameters()

            def setup(self, stage: str) -> None:
                generator = torch.Generator().manual_seed(self.hparams.seed)
                n, noise = self.hparams.n_train, self.hparams.noise
                self.train_set = spirals(n, noise, generator)
                self.val_set = spirals(self.hparams.n_val, noise, generator)
                self.test_set = spirals(self.hparams.n_val, noise, generator)

            def train_dataloader(self) -> DataLoader:
                return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

            def val_dataloader(self) -> DataLoader:
                return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

            def test_dataloader(self) -> DataLoader:
                return DataLoader(self.test_set, batch_size=self.hparams.batch_size)

            def predict_dataloader(self) -> DataLoader:
                return DataLoader(self.test_set, batch_size=self.hparams.batch_size)
    ''',
    "configs/two_spirals.yaml": """
        # Two interleaved spirals told apart by an MLP.
        #   python -m experiments fit --config configs/two_spirals.yaml
        #   python -m experiments test --config configs/two_spirals.yaml --ckpt_path best
        # Bar: test accuracy above 90 % (chance: 50 %).
        model:
          class_path: modules.TwoSpiralsClassifier
          init_args:
            hidden_size: 32
            lr: 0.05
        data:
          class_path: datamodules.TwoSpiralsDataModule
          init_args:
            n_train: 600
            n_val: 200        # even, so two processes share it without repeating a point
            batch_size: 32
        trainer:
          max_epochs: 20
    """,
    "tests/lessons/test_two_spirals.py": '''
        """The two-spirals lesson end to end: it learns, and a fit resumes from its last checkpoint."""

        from pathlib import Path

        from tests.conftest import EVERY_EPOCH, config


        def test_two_spirals_learns_and_resumes(cli) -> None:
            lesson = ["--config", config("two_spirals"), EVERY_EPOCH]
            fit = cli("fit", *lesson, "--trainer.max_epochs=6")
            run = Path(fit.trainer.loggers[0].log_dir)
            assert (run / "checkpoints" / "last.ckpt").is_file()
            test = cli("test", *lesson, "--ckpt_path", "best")
            accuracy = float(test.trainer.callback_metrics["test/acc"])
            print(f"two_spirals: test accuracy {accuracy:.3f}")
            assert accuracy > 0.85  # after 6 epochs; chance: 0.5
            resumed = cli("fit", *lesson, "--trainer.max_epochs=7", "--ckpt_path", "last")
            assert Path(resumed.trainer.loggers[0].log_dir) == run
            assert resumed.trainer.current_epoch == 7
            assert resumed.trainer.global_step > fit.trainer.global_step
    ''',
}
#: The tests that run every lesson config, and the lesson's own test.
TEST_FILES = [
    "tests/experiments/test_precision.py",
    "tests/experiments/test_host_syncs.py",
    "tests/experiments/test_ddp_lessons.py",
    "tests/experiments/test_packaging.py",
    "tests/lessons/test_two_spirals.py",
]
GPU = "passed" if torch.cuda.is_available() else "skipped"
#: Every test that ``-k two_spirals`` selects, and how it ends.
EXPECTED = {
    "test_precision.py::test_bf16_mixed_fast_dev_run_has_a_finite_loss[two_spirals]": "passed",
    "test_precision.py::test_every_lesson_trains_on_a_gpu[two_spirals-32-true]": GPU,
    "test_precision.py::test_every_lesson_trains_on_a_gpu[two_spirals-bf16-mixed]": GPU,
    "test_host_syncs.py::test_a_training_step_never_reads_a_value_back[two_spirals]": "passed",
    "test_ddp_lessons.py::test_fit_under_ddp_writes_one_run[two_spirals]": "passed",
    "test_ddp_lessons.py::test_ddp_fit_matches_one_process_with_the_same_global_batch[two_spirals]": "passed",
    "test_ddp_lessons.py::test_ddp_evaluation_matches_one_process[two_spirals]": "passed",
    "test_packaging.py::test_a_lesson_config_is_a_lesson_name[two_spirals]": "passed",
    "test_two_spirals.py::test_two_spirals_learns_and_resumes": "passed",
}
#: What the lesson needs of the project, copied; the rest of a checkout (environments, runs) is not.
PROJECT = ("core", "experiments", "modules", "datamodules", "configs", "tests", "pyproject.toml")


def outcomes(report: Path) -> dict[str, str]:
    """``file::test`` -> passed, failed, error or skipped, from pytest's JUnit XML report."""
    ended = {}
    for case in ElementTree.parse(report).iter("testcase"):
        file = case.get("classname", "").rsplit(".", 1)[-1] + ".py"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        ended[f"{file}::{case.get('name')}"] = kinds[0].replace("failure", "failed") if kinds else "passed"
    return ended


@pytest.mark.slow
def test_a_plain_lightning_lesson_passes_the_every_config_tests(tmp_path: Path) -> None:
    project = tmp_path / "project"
    skip = shutil.ignore_patterns("lightning_logs", ".*cache")
    for name in PROJECT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=skip)
        else:
            shutil.copy2(source, project / name)
    for path, text in LESSON.items():
        (project / path).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    report = tmp_path / "report.xml"
    # The copy first on the path, before this checkout (installed in editable mode); the caller's own
    # PYTHONPATH after it.
    path = os.pathsep.join(p for p in (str(project), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *TEST_FILES, "-k", "two_spirals", "-p", "no:cacheprovider", "-q",
         f"--junitxml={report}", "--basetemp", str(tmp_path / "pytest")],
        cwd=project,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    assert outcomes(report) == EXPECTED, done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, done.stdout[-3000:]
