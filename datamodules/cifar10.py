"""CIFAR-10 (CNN chapter) through torchvision.datasets.CIFAR10, its md5 integrity checks kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets

from core.domains import Padding
from datamodules.images import ImageClassificationDataModule


class CIFAR10DataModule(ImageClassificationDataModule):
    """50,000 training images (5,000 held out for validation by default) and 10,000 test images.

    Reads torchvision's layout, ``<data_dir>/cifar-10-batches-py/`` (the pickled batches and
    ``batches.meta``); ``download: true`` fetches it. Training augmentation defaults to the usual
    random crop with 4-pixel padding and horizontal flip. For the class-per-folder JPEG copy, use
    ``ImageFolderDataModule``. torchvision checks the files' md5 sums; the arrays it unpickles are
    checked once too (``check_data``: 3x32x32 uint8 images, one label in 0..9 per image).

    Args:
        random_crop_padding: As in ``ImageClassificationDataModule`` (>= 0), default 4.
        horizontal_flip: As in ``ImageClassificationDataModule``, default true.
        *args, **kwargs: The arguments of ``ImageClassificationDataModule``.
    """

    mean_std = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # of the 50,000 training images
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    image_shape = (3, 32, 32)
    dataset_name = "CIFAR-10"

    def __init__(
        self, *args, random_crop_padding: Padding = 4, horizontal_flip: bool = True, **kwargs
    ) -> None:
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

    def corrupt_fix(self) -> str:
        return "the batches are corrupt: delete cifar-10-batches-py/ and run again with --data.download true"

    def batch_files(self, train: bool) -> str:
        """The pickled batches of the training or test set, for messages."""
        folder = self.data_dir / datasets.CIFAR10.base_folder
        return f"{folder}/{'data_batch_1..5' if train else 'test_batch'}"

    def _checked(self, dataset: datasets.CIFAR10, train: bool) -> tuple[Tensor, Tensor]:
        # torchvision holds the pickled batches as one (N, 32, 32, 3) uint8 array: a view, no copy yet.
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)
        labels = torch.as_tensor(dataset.targets, dtype=torch.long)
        self.check_data(images, labels, self.batch_files(train))
        return images, labels

    def per_sample_dataset(self, train: bool) -> Dataset:
        dataset = super().per_sample_dataset(train)
        self._checked(dataset, train)  # the unpickled arrays are in memory either way
        return dataset

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        images, labels = self._checked(self._dataset(train), train)
        return images.contiguous(), labels
