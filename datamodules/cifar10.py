"""CIFAR-10 (CNN chapter) through torchvision.datasets.CIFAR10, its md5 integrity checks kept."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from datamodules.images import DataNotFoundError, ImageClassificationDataModule


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

    def _dataset(self, train: bool, transform: v2.Transform | None = None) -> datasets.CIFAR10:
        try:
            return datasets.CIFAR10(self.data_dir, train=train, download=self.download, transform=transform)
        except RuntimeError as error:
            folder = self.data_dir / datasets.CIFAR10.base_folder
            raise DataNotFoundError(
                f"CIFAR-10 not found or corrupted in data_dir={self.data_dir}: expected {folder}/ with "
                "data_batch_1..5, test_batch and batches.meta matching their md5 sums; pass --data.download "
                "true to fetch it (needs the internet), or use ImageFolderDataModule for a JPEG copy "
                f"({error})"
            ) from error

    def prepare_data(self) -> None:
        if self.download:
            self._dataset(train=True)
            self._dataset(train=False)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        dataset = self._dataset(train)
        # torchvision holds the pickled batches as one (N, 32, 32, 3) uint8 array.
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(dataset.targets, dtype=torch.long)

    def per_sample_dataset(self, train: bool) -> Dataset:
        return self._dataset(train, transform=v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.uint8)]))
