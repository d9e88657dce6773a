"""MNIST (数据集 chapter) through torchvision.datasets.MNIST, held in memory as one uint8 tensor."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms.v2 import functional as F

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


#: MNIST's digits are size-normalised into a 20x20 box, aspect kept, and centred by their centre of mass
#: in the 28x28 image (LeCun et al.'s description of the dataset).
DIGIT_BOX, IMAGE_SIDE = 20, 28
#: Ink darker than this share of the strongest stroke is background noise (JPEG ringing, paper grain)
#: when finding the digit's bounding box.
INK_THRESHOLD = 0.25


def mnist_digit(image: Tensor) -> Tensor:
    """A picture of one digit, uint8 ``(1, H, W)`` of any size, made the way MNIST's images were: light ink
    on black, the digit's bounding box scaled so its longer side is 20 pixels (aspect kept, antialiased),
    placed in a 28x28 black image with its centre of mass at the centre.

    The background is the median of the picture's border; where it is light (a digit written or drawn dark
    on white paper, the usual way) the picture is inverted first, since MNIST's digits are white on black.
    The background level is then subtracted and the strongest stroke stretched to 255, as MNIST's
    digits span 0..255. A picture with no ink is only resized."""
    pixels = image[0].float()
    border = torch.cat([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = border.median()
    if background > 127:
        pixels, background = 255 - pixels, 255 - background
    ink = (pixels - background).clamp_min(0)
    if ink.max() <= 0:
        return F.resize(image, [IMAGE_SIDE, IMAGE_SIDE], antialias=True)
    ink = ink * (255 / ink.max())
    rows = (ink > 255 * INK_THRESHOLD).any(dim=1).nonzero()[:, 0]
    columns = (ink > 255 * INK_THRESHOLD).any(dim=0).nonzero()[:, 0]
    box = ink[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    digit = F.resize(box[None], size=None, max_size=DIGIT_BOX, antialias=True).clamp(0, 255)[0]
    height, width = digit.shape
    # The centre of mass, where MNIST puts the image's centre; the digit stays inside the image.
    weights = digit / digit.sum()
    y = float((weights.sum(dim=1) * torch.arange(height)).sum())
    x = float((weights.sum(dim=0) * torch.arange(width)).sum())
    top = min(max(round(IMAGE_SIDE / 2 - 0.5 - y), 0), IMAGE_SIDE - height)
    left = min(max(round(IMAGE_SIDE / 2 - 0.5 - x), 0), IMAGE_SIDE - width)
    padding = [left, top, IMAGE_SIDE - width - left, IMAGE_SIDE - height - top]
    return F.pad(digit.round().to(torch.uint8)[None], padding)


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
    ``predict_path`` takes pictures of single digits, of any size, made like MNIST's (``mnist_digit``).
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

    def predict_image(self, image: Tensor) -> Tensor:
        """A picture of a digit (grey, any size, dark on light or light on dark) as MNIST's images are:
        ``mnist_digit``."""
        return mnist_digit(image)

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
