"""CIFAR-10 (CNN chapter) through torchvision.datasets.CIFAR10, its md5 integrity checks kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision import datasets

from datamodules.images import ImageClassificationDataModule


class CIFAR10DataModule(ImageClassificationDataModule):
    """50,000 training images (5,000 held out for validation by default) and 10,000 test images.

    Reads torchvision's layout, ``<data_dir>/cifar-10-batches-py/`` (the pickled batches and
    ``batches.meta``); ``download: true`` fetches it. Training augmentation defaults to the usual
    random crop with 4-pixel padding and horizontal flip. For the class-per-folder JPEG copy, use
    ``ImageFolderDataModule``.
    """

    mean_std = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # of the 50,000 training images
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def __init__(self, *args, random_crop_padding: int = 4, horizontal_flip: bool = True, **kwargs) -> None:
        super().__init__(
            *args, random_crop_padding=random_crop_padding, horizontal_flip=horizontal_flip, **kwargs
        )

    torchvision_dataset = datasets.CIFAR10

    @classmethod
    def write_sample(cls, root: Path) -> dict[str, Any]:
        """Tests' data: 5 x 20 training images (20 held out), 30 test images. torchvision checks the
        batches' md5 sums, which test-made pickles cannot match: tests bypass that check."""
        from datamodules._samples import write_cifar10

        return {"data_dir": str(write_cifar10(root)), "val_split": 20}

    def missing_message(self) -> str:
        folder = self.data_dir / datasets.CIFAR10.base_folder
        return (
            f"CIFAR-10 not found or corrupted in data_dir={self.data_dir}: expected {folder}/ with "
            "data_batch_1..5, test_batch and batches.meta matching their md5 sums; pass --data.download "
            "true to fetch it (needs the internet), or use ImageFolderDataModule for a JPEG copy"
        )

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        dataset = self._dataset(train)
        # torchvision holds the pickled batches as one (N, 32, 32, 3) uint8 array.
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(dataset.targets, dtype=torch.long)
