"""Seconds per epoch of each image lesson on a GPU: a plain PyTorch loop against the lesson as shipped,
without figures and compiled, in fp32 and bf16-mixed.

Run on a machine with a GPU, from the project root:

    python benchmarks/gpu_check.py --mnist <folder holding MNIST/raw> --cifar <CIFAR-10 folder> \\
        [--epochs 3] [--output results.json]

``--cifar`` is either torchvision's ``cifar-10-batches-py`` parent or a class-per-folder copy (``train/``,
``test/``; e.g. cifar10_jpg.tar.gz extracted), which is then read with ``ImageFolderDataModule``.

For each lesson (``mnist_convnet``, ``simple_cnn``) and precision (``32-true``, ``bf16-mixed``; add
``16-mixed`` with ``--precisions``) the variants (``--variants``) are:

- ``plain``: a plain PyTorch loop in this process, the honest baseline. The lesson's network
  (``module.net`` of the module the lesson's config builds, seeded alike), its optimizer and scheduler
  (``configure_optimizers``: Adadelta lr 1.0 for MNIST, SGD + cosine for CIFAR-10), batch size and data
  (the datamodule's split). The whole uint8 training and validation sets are moved to the device once;
  each step indexes a batch with a device-side permutation, makes it float in [0, 1], augments it with
  the datamodule's own device-side function (``random_crop_flip``: ±2-pixel shifts for MNIST, ±4 and
  flips for CIFAR-10) and normalises it as the datamodule does; then forward, cross-entropy, backward,
  optimizer step, under ``torch.autocast(dtype=torch.bfloat16)`` for bf16-mixed (fp16 autocast and a
  GradScaler for 16-mixed). An epoch is the training batches, then a validation pass over the validation
  batches (no grad, eval mode), then the scheduler step: the same work as the lesson's epoch;
- ``shipped``: the lesson as a user runs it, through ``ExperimentCLI`` in this process (``--config
  configs/<lesson>.yaml``, plus ``configs/trainer/gpu.yaml`` on a GPU and the precision's preset), with
  figures, TensorBoard logging, checkpointing and validation as the config sets them; only
  ``--trainer.max_epochs`` (and ``limit_*_batches`` when ``--steps`` / ``--val-steps`` are given) is
  changed, and the progress bar and model summary are off, as in any non-interactive run;
- ``no_figures``: the same with ``--trainer.callbacks=[]``;
- ``compiled``: ``shipped`` with ``--compile.enabled true --compile.mode <--compile-mode>``;
- ``lean`` (not run by default): the measurement this script made before, validation, logging,
  checkpointing and figures off (``limit_val_batches 0``, ``logger false``, ``callbacks=[]``, no checkpoint
  files); its ``train img/s`` is the old table's samples/s.

Each run lasts ``--epochs`` epochs (default 3); the first is the warm-up (cuDNN autotuning, allocator
growth, compilation) and is reported alone as ``first epoch``; ``s/epoch`` is the mean of the others. An
epoch runs from its start to the next epoch's start (or the end of training): training steps, validation,
epoch-end logging, figures and checkpoints; ``train s`` is its training steps alone (to the start of
validation). The device is synchronised at each of these marks. ``whole fit`` is the wall time of the
whole ``trainer.fit`` call (reading the data, the sanity check, every epoch, and the end of the run, where
figures still held back are drawn); for ``plain``, reading the data, moving it to the device and every
epoch. Ratios: ``epoch / plain``, ``train / plain`` and ``fit / plain`` against the plain loop of the
same lesson and precision; ``epoch / 32-true`` is a variant's s/epoch against the same variant in fp32
(below 1: faster than fp32).

Smoke test on a CPU (tiny data, a minute or two):

    python -c "from tests.image_data import write_mnist; write_mnist('/tmp/tiny', n_train=600)"
    python benchmarks/gpu_check.py --accelerator cpu --lessons mnist_convnet --mnist /tmp/tiny \\
        --val-split 88 --steps 3 --val-steps 1 --epochs 2

A markdown table goes to stdout and, with ``--output``, every figure to a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning
import torch
import torch.nn.functional as F
from _common import markdown_table
from lightning.pytorch import Callback, LightningModule, Trainer

from datamodules.images import random_crop_flip
from experiments.cli import ExperimentCLI
from experiments.progress import silence_known_warnings

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {"32-true": None, "bf16-mixed": "bf16", "16-mixed": "fp16"}
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
#: the flags of each Lightning variant, after the lesson's (``plain`` is not a Lightning run)
VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "shipped": [],
    "no_figures": ["--trainer.callbacks=[]"],
    "compiled": ["--compile.enabled", "true"],
    "lean": [
        "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.logger", "false",
        "--trainer.callbacks=[]",
        "--checkpoint.save_top_k", "0",
        "--last_checkpoint.every_n_epochs", "0",
    ],
}  # fmt: skip
DEFAULT_VARIANTS = ["plain", "shipped", "no_figures", "compiled"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(Callback):
    """Per training epoch: wall seconds from its start to the next one's (or the end of training), and of
    its training steps alone (to the start of validation, else the epoch's end), with the images it
    trained on; the device synchronised at each mark."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.end: float | None = None

    @staticmethod
    def _now(module: LightningModule) -> float:
        synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs.append({"start": self._now(pl_module), "images": 0, "steps": 0})

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        batch = args[1]
        self.epochs[-1]["images"] += len(batch[0])
        self.epochs[-1]["steps"] += 1

    def _train_done(self, pl_module: LightningModule) -> None:
        if self.epochs and "train_end" not in self.epochs[-1]:
            self.epochs[-1]["train_end"] = self._now(pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._train_done(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_done(pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.end = self._now(pl_module)

    def seconds(self) -> list[dict[str, float]]:
        """Per epoch: ``epoch_s``, ``train_s``, ``images``, ``steps``."""
        assert self.end is not None, "training did not end"
        ends = [e["start"] for e in self.epochs[1:]] + [self.end]
        return [
            {
                "epoch_s": end - e["start"],
                "train_s": e["train_end"] - e["start"],
                "images": e["images"],
                "steps": e["steps"],
            }
            for e, end in zip(self.epochs, ends, strict=True)
        ]


def summary(epochs: list[dict[str, float]]) -> dict[str, Any]:
    """The first epoch alone, the mean of the others."""
    if len(epochs) < 2:
        raise ValueError("need at least 2 epochs: the first is the warm-up")
    timed = epochs[1:]

    def mean(key: str) -> float:
        return sum(e[key] for e in timed) / len(timed)

    return {
        "first_epoch_s": epochs[0]["epoch_s"],
        "epoch_s": mean("epoch_s"),
        "train_s": mean("train_s"),
        "images_per_epoch": mean("images"),
        "steps_per_epoch": mean("steps"),
        "train_images_per_s": mean("images") / mean("train_s"),
        "epochs_timed": len(timed),
        "per_epoch": epochs,
    }


def lesson_args(lesson: str, args: argparse.Namespace) -> list[str]:
    if lesson == "mnist_convnet":
        data = ["--data.data_dir", str(Path(args.mnist).resolve())]
        return ["--config", str(ROOT / "configs" / "mnist_convnet.yaml"), *data]
    data = ["--data.data_dir", str(Path(args.cifar).resolve())]
    if (Path(args.cifar) / "train").is_dir():  # class-per-folder JPEGs
        data = ["--data", "datamodules.ImageFolderDataModule", *data, "--data.val_split", "5000"]
    return ["--config", str(ROOT / "configs" / "simple_cnn.yaml"), *data]


def base_args(lesson: str, precision: str, args: argparse.Namespace) -> list[str]:
    """The lesson as shipped, on the chosen device and precision, for ``--epochs`` epochs."""
    cli_args = lesson_args(lesson, args)
    if args.val_split is not None:
        cli_args += ["--data.val_split", str(args.val_split)]
    if args.accelerator == "gpu":
        cli_args += ["--config", str(ROOT / "configs" / "trainer" / "gpu.yaml")]
    else:
        cli_args += ["--trainer.accelerator", args.accelerator, "--trainer.devices", "1"]
    if PRESETS[precision]:
        cli_args += ["--config", str(ROOT / "configs" / "trainer" / f"{PRESETS[precision]}.yaml")]
    cli_args += ["--trainer.max_epochs", str(args.epochs)]
    if args.steps:
        cli_args += ["--trainer.limit_train_batches", str(args.steps)]
    if args.val_steps is not None:
        cli_args += ["--trainer.limit_val_batches", str(args.val_steps)]
    if not args.progress_bar:
        cli_args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    return cli_args


def variant_args(variant: str, args: argparse.Namespace) -> list[str]:
    if variant == "compiled":
        return [*VARIANTS[variant], "--compile.mode", args.compile_mode]
    return VARIANTS[variant]


def metric(cli: ExperimentCLI, name: str) -> float:
    value = cli.trainer.callback_metrics.get(name)
    return float(value) if value is not None else float("nan")


def lightning_run(lesson: str, precision: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of the lesson through the experiments command, in this process."""
    if variant == "compiled":
        torch._dynamo.reset()  # each run compiles afresh; no earlier run's graphs count towards its limits
    cli = ExperimentCLI(args=[*base_args(lesson, precision, args), *variant_args(variant, args)], run=False)
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    synchronize(cli.model.device)
    fit_s = time.perf_counter() - start
    result = {
        **summary(timer.seconds()),
        "fit_s": fit_s,
        "val_steps": sum(cli.trainer.num_val_batches),
        "train_loss": metric(cli, "train/loss"),
        "val_acc": metric(cli, "val/acc"),
    }
    del cli
    return result


class PlainLoop:
    """The lesson's network, optimizer, scheduler and data from its config, trained by hand."""

    def __init__(self, lesson: str, precision: str, args: argparse.Namespace) -> None:
        # The same construction as the shipped run (seed_everything 42 first): same weights, same split.
        cli = ExperimentCLI(args=base_args(lesson, precision, args), run=False)
        self.device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as configs/trainer/gpu.yaml
        module, data = cli.model.to(self.device), cli.datamodule
        self.net = module.net
        self.data = data
        configured = module.configure_optimizers()
        if isinstance(configured, dict):
            self.optimizer = configured["optimizer"]
            self.scheduler = configured["lr_scheduler"]["scheduler"]
        else:
            self.optimizer, self.scheduler = configured, None
        start = time.perf_counter()  # reading the data and moving it to the device, as in a whole fit
        data.setup("fit")
        self.train = [t.to(self.device) for t in data.splits["train"]]
        self.val = [t.to(self.device) for t in data.splits["val"]]
        synchronize(self.device)
        self.setup_s = time.perf_counter() - start
        self.batch_size = data.batch_size
        self.mean, self.std = data._normalisation(self.device) if data.normalize else (None, None)
        dtype = AUTOCAST[precision]
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=dtype))
            if dtype is not None
            else contextlib.nullcontext
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if dtype is torch.float16 else None
        self.steps = self._batches(len(self.train[1]), args.steps)
        self.val_steps = self._batches(len(self.val[1]), args.val_steps)

    def _batches(self, n: int, limit: int | None) -> int:
        batches = -(-n // self.batch_size)
        return batches if limit is None else min(batches, limit)

    def _prepare(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """What the datamodule's ``on_after_batch_transfer`` does on the device."""
        images = images.float().div_(255)
        if train:
            images = random_crop_flip(images, self.data.random_crop_padding, self.data.horizontal_flip)
        if self.mean is not None:
            images = (images - self.mean) / self.std
        return images

    def _slices(self, order: torch.Tensor, steps: int) -> Iterator[torch.Tensor]:
        for i in range(steps):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]

    def epoch(self) -> dict[str, float]:
        images, labels = self.train
        synchronize(self.device)
        start = time.perf_counter()
        self.net.train()
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        for index in self._slices(torch.randperm(len(labels), device=self.device), self.steps):
            x, y = self._prepare(images[index], train=True), labels[index]
            with self.autocast():
                loss = F.cross_entropy(self.net(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            loss_sum += loss.detach() * len(y)
            seen += len(y)
        synchronize(self.device)
        train_end = time.perf_counter()
        self.net.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        val_images, val_labels = self.val
        counted = 0
        with torch.inference_mode():
            for index in self._slices(torch.arange(len(val_labels), device=self.device), self.val_steps):
                with self.autocast():
                    logits = self.net(self._prepare(val_images[index], train=False))
                correct += (logits.argmax(1) == val_labels[index]).sum()
                counted += len(index)
        if self.scheduler is not None:
            self.scheduler.step()
        synchronize(self.device)
        end = time.perf_counter()
        return {
            "epoch_s": end - start,
            "train_s": train_end - start,
            "images": seen,
            "steps": self.steps,
            "train_loss": float(loss_sum) / max(seen, 1),
            "val_acc": float(correct) / counted if counted else float("nan"),
        }


def plain_run(lesson: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    loop = PlainLoop(lesson, precision, args)
    epochs = [loop.epoch() for _ in range(args.epochs)]
    result = {
        **summary(epochs),
        "fit_s": loop.setup_s + sum(e["epoch_s"] for e in epochs),
        "val_steps": loop.val_steps,
        "train_loss": epochs[-1]["train_loss"],
        "val_acc": epochs[-1]["val_acc"],
    }
    del loop
    return result


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """Every (lesson, precision, variant) run, in that order, and the notes on what failed (a failed
    run's traceback goes to stderr, and the others go on)."""
    notes = []
    results = []
    for lesson in args.lessons:
        for precision in args.precisions:
            for variant in args.variants:
                started = time.perf_counter()
                try:
                    if variant == "plain":
                        figures = plain_run(lesson, precision, args)
                    else:
                        figures = lightning_run(lesson, precision, variant, args)
                # One failed run (a compiler error, say) leaves the others' figures.
                except Exception as error:
                    traceback.print_exc()
                    notes.append(f"{lesson} {precision} {variant}: failed, {type(error).__name__}: {error}")
                    continue
                results.append({"lesson": lesson, "precision": precision, "variant": variant, **figures})
                print(
                    f"{lesson} {precision} {variant}: {figures['epoch_s']:.3f} s/epoch "
                    f"({time.perf_counter() - started:.0f} s in all)",
                    file=sys.stderr,
                    flush=True,
                )
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    add_ratios(results)
    return results, notes


def add_ratios(results: list[dict[str, Any]]) -> None:
    """``epoch_vs_plain``, ``train_vs_plain``, ``fit_vs_plain`` and ``epoch_vs_fp32`` of each result (None
    when the run to compare with is not there)."""
    by_key = {(r["lesson"], r["precision"], r["variant"]): r for r in results}
    for r in results:
        plain = by_key.get((r["lesson"], r["precision"], "plain"))
        fp32 = by_key.get((r["lesson"], "32-true", r["variant"]))
        r["epoch_vs_plain"] = r["epoch_s"] / plain["epoch_s"] if plain else None
        r["train_vs_plain"] = r["train_s"] / plain["train_s"] if plain else None
        r["fit_vs_plain"] = r["fit_s"] / plain["fit_s"] if plain else None
        r["epoch_vs_fp32"] = r["epoch_s"] / fp32["epoch_s"] if fp32 and r["precision"] != "32-true" else None


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(results: list[dict[str, Any]]) -> list[str]:
    columns = {
        "lesson": "{lesson}",
        "precision": "{precision}",
        "variant": "{variant}",
        "s/epoch": "{epoch_s:.3f}",
        "epoch / plain": "{epoch_vs_plain}",
        "epoch / 32-true": "{epoch_vs_fp32}",
        "train s": "{train_s:.3f}",
        "train / plain": "{train_vs_plain}",
        "train img/s": "{train_images_per_s:.0f}",
        "first epoch (s)": "{first_epoch_s:.2f}",
        "whole fit (s)": "{fit_s:.2f}",
        "fit / plain": "{fit_vs_plain}",
        "steps + val steps": "{steps_per_epoch:.0f} + {val_steps}",
        "train loss": "{train_loss:.3f}",
        "val acc": "{val_acc:.3f}",
    }
    lines, row = markdown_table(columns)
    for r in results:
        shown = {k: ratio(v) if k.endswith(("_vs_plain", "_vs_fp32")) else v for k, v in r.items()}
        lines.append(row.format(**shown))
    return lines


def quiet() -> None:
    """Lightning's per-run messages (seed, devices, "max_epochs reached") and its known warnings off."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    silence_known_warnings(
        # This script's own arguments are in sys.argv; the runs' are given to ExperimentCLI(args=...).
        r"LightningCLI's args parameter is intended to run",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mnist", help="folder holding MNIST/raw (for mnist_convnet)")
    parser.add_argument(
        "--cifar", help="cifar-10-batches-py parent, or a train/ test/ folder (for simple_cnn)"
    )
    parser.add_argument("--lessons", nargs="+", default=["mnist_convnet", "simple_cnn"])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"], choices=list(PRESETS))
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed")
    parser.add_argument("--steps", type=int, help="training batches per epoch (default: all)")
    parser.add_argument("--val-steps", type=int, help="validation batches per epoch (default: all)")
    parser.add_argument("--val-split", type=float, help="the datamodule's val_split (default: the config's)")
    parser.add_argument("--compile-mode", default="default", help="--compile.mode of the compiled variant")
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--progress-bar", action="store_true", help="keep the progress bar and model summary")
    parser.add_argument("--output", type=Path, help="write every figure to this JSON file")
    args = parser.parse_args()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --accelerator cpu for a smoke test")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first is the warm-up")
    for lesson, folder in (("mnist_convnet", "mnist"), ("simple_cnn", "cifar")):
        if lesson in args.lessons and not getattr(args, folder):
            parser.error(f"{lesson} needs --{folder}")
    if args.val_split is not None and args.val_split >= 1:
        args.val_split = int(args.val_split)
    if args.output:
        args.output = args.output.resolve()
    quiet()

    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else platform.processor() or "cpu"
    header = (
        f"# {device}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"lightning {lightning.__version__}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{args.epochs} epochs per run (first untimed)"
    )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        home = Path.cwd()
        os.chdir(scratch)  # the runs' lightning_logs/ (logs, checkpoints, figures) go here and are deleted
        try:
            results, notes = measure(args)
        finally:
            os.chdir(home)
    print(f"\n{header}")
    print("\n".join(table(results)))
    for note in notes:
        print(f"\nnote: {note}")
    if args.output:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.output.write_text(
            json.dumps(
                {
                    "header": header,
                    "device": device,
                    "settings": settings,
                    "notes": notes,
                    "results": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
