"""Throughput of each image lesson on a GPU in fp32, bf16-mixed and 16-mixed, as ratios to fp32.

Run on a machine with a GPU, from the project root:

    python benchmarks/gpu_check.py --mnist <folder holding MNIST/raw> --cifar <CIFAR-10 folder> [--steps 300]

``--cifar`` is either torchvision's ``cifar-10-batches-py`` parent or a class-per-folder copy (``train/``,
``test/``; e.g. cifar10_jpg.tar.gz extracted), which is then read with ``ImageFolderDataModule``. Each
lesson runs through the experiments command exactly as a user runs it (``--config configs/<lesson>.yaml
--config configs/trainer/gpu.yaml --config configs/trainer/<precision>.yaml``), for ``--steps`` training
steps with validation, logging and checkpointing off. Throughput is measured over the steps after the
first ``--warmup`` (cuDNN autotuning, allocator growth), with the device synchronised at both ends.
``--accelerator cpu --precisions 32-true bf16-mixed`` runs the same on a CPU (a smoke test of the script).
A table goes to stdout and, with ``--output``, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from experiments.cli import ExperimentCLI

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {"32-true": None, "bf16-mixed": "bf16", "16-mixed": "fp16"}


class StepTimer(Callback):
    """Wall time of the training steps after ``warmup``, the device synchronised at both ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.samples = 0
        self.start: float | None = None
        self.seconds = 0.0

    @staticmethod
    def _sync(module: LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, out: Any, batch: Any, *_) -> None:
        if self.start is not None:
            self.samples += len(batch[0])

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        self._sync(module)
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def lesson_args(lesson: str, args: argparse.Namespace) -> list[str]:
    if lesson == "mnist_convnet":
        return ["--config", str(ROOT / "configs" / "mnist_convnet.yaml"), "--data.data_dir", args.mnist]
    data = ["--data.data_dir", args.cifar]
    if (Path(args.cifar) / "train").is_dir():  # class-per-folder JPEGs
        data = ["--data", "datamodules.ImageFolderDataModule", *data, "--data.val_split", "5000"]
    return ["--config", str(ROOT / "configs" / "simple_cnn.yaml"), *data]


def measure(lesson: str, precision: str, args: argparse.Namespace, scratch: str) -> dict[str, Any]:
    timer = StepTimer(args.warmup)
    # Checkpoints and the saved config of these throwaway runs go to a temporary folder.
    cli_args = [*lesson_args(lesson, args), "--trainer.default_root_dir", scratch]
    if args.accelerator == "gpu":
        cli_args += ["--config", str(ROOT / "configs" / "trainer" / "gpu.yaml")]
    else:
        cli_args += ["--trainer.accelerator", args.accelerator, "--trainer.devices", "1"]
    if PRESETS[precision]:
        cli_args += ["--config", str(ROOT / "configs" / "trainer" / f"{PRESETS[precision]}.yaml")]
    cli_args += [
        "--trainer.max_steps", str(args.steps),
        "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "true",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.callbacks=[]",
        "--checkpoint.save_top_k", "0",
        "--last_checkpoint.every_n_epochs", "0",
    ]  # fmt: skip
    cli = ExperimentCLI(args=cli_args, run=False)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    loss = float(cli.trainer.callback_metrics.get("train/loss", torch.tensor(float("nan"))))
    return {
        "lesson": lesson,
        "precision": precision,
        "samples_per_s": timer.samples / timer.seconds if timer.seconds else float("nan"),
        "steps_timed": args.steps - args.warmup,
        "train_loss": loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mnist", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--cifar", required=True, help="cifar-10-batches-py parent, or a train/ test/ folder")
    parser.add_argument("--lessons", nargs="+", default=["mnist_convnet", "simple_cnn"])
    parser.add_argument("--precisions", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --accelerator cpu for a smoke test")

    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else platform.processor() or "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        results = [measure(lesson, p, args, scratch) for lesson in args.lessons for p in args.precisions]
    baseline = {r["lesson"]: r["samples_per_s"] for r in results if r["precision"] == "32-true"}
    print(f"\n{device}, torch {torch.__version__}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"{'lesson':<16}{'precision':<12}{'samples/s':>12}{'vs fp32':>9}{'loss':>8}")
    for r in results:
        r["ratio_to_fp32"] = r["samples_per_s"] / baseline[r["lesson"]] if r["lesson"] in baseline else None
        ratio = f"{r['ratio_to_fp32']:.2f}x" if r["ratio_to_fp32"] else "-"
        print(
            f"{r['lesson']:<16}{r['precision']:<12}{r['samples_per_s']:>12.0f}{ratio:>9}{r['train_loss']:>8.3f}"
        )
    if args.output:
        args.output.write_text(json.dumps({"device": device, "results": results}, indent=2))


if __name__ == "__main__":
    main()
