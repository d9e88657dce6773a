"""MNIST (数据集 chapter) through torchvision.datasets.MNIST, held in memory as one uint8 tensor."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets

from core.errors import DataConfigError
from datamodules.images import ImageClassificationDataModule

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: An IDX file's first four bytes: 0, 0, the type (8: unsigned bytes), the number of dimensions.
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}


def idx_problem(path: Path) -> str | None:
    """What is wrong with an MNIST IDX file (None if nothing): its magic number, or its length against
    the sizes its header gives."""
    kind = "images" if "images" in path.name else "labels"
    data = path.read_bytes()
    if len(data) < 8:
        return f"{path} is {len(data)} bytes, shorter than an IDX header"
    (magic,) = struct.unpack(">I", data[:4])
    if magic != IDX_MAGIC[kind]:
        return (
            f"{path} is not an IDX {kind} file (magic number {magic:#010x}, expected {IDX_MAGIC[kind]:#010x})"
        )
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(data) < header:
        return f"{path} is {len(data)} bytes, shorter than its header"
    sizes = struct.unpack(f">{dims}I", data[4:header])
    expected = header + _product(sizes)
    if len(data) != expected:
        return f"{path} is truncated or corrupt: {len(data):,} bytes where its header says {expected:,}"
    return None


def _product(sizes: tuple[int, ...]) -> int:
    total = 1
    for size in sizes:
        total *= size
    return total


class MNISTDataModule(ImageClassificationDataModule):
    """The 60,000 training images (5,000 held out for validation by default) and 10,000 test images.

    Reads torchvision's layout, ``<data_dir>/MNIST/raw/`` with the four IDX files; ``download: true``
    fetches them. Arguments are those of ``ImageClassificationDataModule``. The tensors torchvision
    parses from the IDX files are checked once (``check_data``): 28x28 single-channel uint8 images, one
    label in 0..9 per image (an IDX label byte can hold 0..255, and torchvision does not look).
    """

    mean_std = ((0.1307,), (0.3081,))  # of the 60,000 training images, the usual constants
    classes = tuple(str(d) for d in range(10))
    image_shape = (1, 28, 28)
    dataset_name = "MNIST"

    torchvision_dataset = datasets.MNIST

    @classmethod
    def write_sample(cls, root: Path) -> dict[str, Any]:
        """Tests' data: 64 training images (16 held out) and 32 test images in the IDX files."""
        from datamodules._samples import write_mnist

        return {"data_dir": str(write_mnist(root)), "val_split": 16}

    def missing_message(self) -> str:
        return (
            f"MNIST not found in data_dir={self.data_dir}: expected {self.data_dir / 'MNIST' / 'raw'}/ "
            f"with {', '.join(MNIST_FILES)}; pass --data.download true to fetch it (needs the internet) "
            "or point --data.data_dir at a folder holding MNIST/raw/"
        )

    def corrupt_fix(self) -> str:
        return "the file is corrupt: delete it and run again with --data.download true to download it"

    def idx_files(self, train: bool) -> tuple[Path, Path]:
        """The images and labels IDX files of the training or test set."""
        raw = self.data_dir / "MNIST" / "raw"
        prefix = "train" if train else "t10k"
        return raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"

    def _checked(self, dataset: datasets.MNIST, train: bool) -> tuple[Tensor, Tensor]:
        # torchvision has already parsed the IDX file into one (N, 28, 28) uint8 tensor.
        images, labels = dataset.data.unsqueeze(1), dataset.targets.long()
        self.check_data(images, labels, *self.idx_files(train))
        return images, labels

    def per_sample_dataset(self, train: bool) -> Dataset:
        dataset = super().per_sample_dataset(train)
        self._checked(dataset, train)  # the parsed tensors are in memory either way
        return dataset

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        try:
            dataset = self._dataset(train)
        except (AssertionError, RuntimeError, ValueError) as error:  # torchvision's parser asserts
            raw = self.data_dir / "MNIST" / "raw"
            prefix = "train" if train else "t10k"
            for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
                if (problem := idx_problem(raw / name)) is not None:
                    raise DataConfigError(f"{problem}: download MNIST again (--data.download true)") from None
            raise DataConfigError(f"MNIST in {raw} cannot be read ({error}): download it again") from None
        images, labels = self._checked(dataset, train)
        return images.contiguous(), labels
