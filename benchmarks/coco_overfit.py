"""Overfit the captioning lesson on a handful of real COCO images: proof that the whole path works.

    .venv/bin/python benchmarks/coco_overfit.py --data-dir <folder holding annotations/ and val2017/>

Reads ``annotations/captions_val2017.json`` and ``val2017/`` under ``--data-dir`` through
``CocoCaptionsDataModule`` with ``skip_missing: true`` (a folder with only some of the 5,000 images is
what this is for), holds out ``--val-images`` of the images found by the seeded split, and trains
``CaptionModel`` (the config's small CNN + GRU, no dropout) on the rest with teacher forcing. Reported:
the images found and skipped, the training loss before and after, BLEU-4 (torchmetrics, all references
of each image) of the greedy captions of the training images and of the held-out ones, and a few
captions beside their references.

Goal: BLEU-4 > 0.9 on the (10) training images. The held-out BLEU is shown for contrast only: a model
that has seen 10 images cannot caption new ones.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything  # noqa: E402
from torchmetrics.text import BLEUScore  # noqa: E402

from datamodules import CocoCaptionsDataModule  # noqa: E402
from modules import CaptionModel  # noqa: E402


class LossHistory(Callback):
    """``train/loss`` of every epoch (the module logs it in its own ``on_train_epoch_end``, which runs
    after the callbacks' hook, so it is read when the next epoch starts and when training ends)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.values.append(trainer.callback_metrics["train/loss"].item())

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.values.append(trainer.callback_metrics["train/loss"].item())


def bleu4(model: CaptionModel, data: CocoCaptionsDataModule, split: str) -> tuple[float, list[tuple]]:
    """BLEU-4 of the greedy captions of ``split``'s images, and (caption, references) per image."""
    metric, pairs = BLEUScore(n_gram=4), []
    model.eval()
    for batch in data.loader(split):
        batch = data.on_after_batch_transfer(batch, 0)
        captions = model.caption(batch["images"].to(model.device))
        metric.update(captions, batch["references"])
        pairs += zip(captions, batch["references"], strict=True)
    return metric.compute().item(), pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="holds annotations/captions_val2017.json, val2017/")
    parser.add_argument("--val-images", type=int, default=2, help="images held out of training")
    parser.add_argument("--epochs", type=int, default=150, help="one step each: all training images")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    seed_everything(args.seed)
    data = CocoCaptionsDataModule(
        args.data_dir,
        train_annotations="annotations/captions_val2017.json",
        train_images="val2017",
        val_annotations=None,
        val_split=args.val_images,
        image_size=args.image_size,
        min_count=1,  # ten images' captions: every word counts
        skip_missing=True,
        batch_size=64,  # every training image in one batch
        seed=args.seed,
    )
    data.setup("fit")
    ((found, skipped),) = data.image_counts.values()
    model = CaptionModel(dropout=0.0, optimizer=functools.partial(torch.optim.Adam, lr=args.lr))
    history = LossHistory()
    trainer = Trainer(
        max_epochs=args.epochs,
        check_val_every_n_epoch=args.epochs,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history],
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    train_bleu, train_pairs = bleu4(model, data, "train")
    held_out_bleu, _ = bleu4(model, data, "val")

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {model.device}"
    )
    print(
        f"images in captions_val2017.json with captions: {found + skipped}; found {found}, "
        f"skipped {skipped} (missing)"
    )
    print(
        f"training images {len(data.splits['train'])}, held out {len(data.splits['val'])}; "
        f"vocabulary {len(data.vocabulary)} tokens; "
        f"captions {sum(len(r) for _, r in train_pairs)}"
    )
    print(
        f"{args.epochs} epochs in {seconds:.1f} s; train/loss {history.values[0]:.3f} -> "
        f"{history.values[-1]:.3f}"
    )
    print(f"BLEU-4 on the training images: {train_bleu:.4f}  (goal > 0.9)")
    print(f"BLEU-4 on the held-out images: {held_out_bleu:.4f}  (not expected to be high)")
    for caption, references in train_pairs[:3]:
        print(f"  greedy: {caption}\n    refs: {' | '.join(references)}")


if __name__ == "__main__":
    main()
