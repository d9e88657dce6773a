"""MNIST (数据集 chapter) through torchvision.datasets.MNIST, held in memory as one uint8 tensor."""

from __future__ import annotations

from torch import Tensor
from torchvision import datasets

from datamodules.images import ImageClassificationDataModule

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MNISTDataModule(ImageClassificationDataModule):
    """The 60,000 training images (5,000 held out for validation by default) and 10,000 test images.

    Reads torchvision's layout, ``<data_dir>/MNIST/raw/`` with the four IDX files; ``download: true``
    fetches them. Arguments are those of ``ImageClassificationDataModule``.
    """

    mean_std = ((0.1307,), (0.3081,))  # of the 60,000 training images, the usual constants
    classes = tuple(str(d) for d in range(10))

    torchvision_dataset = datasets.MNIST

    def missing_message(self) -> str:
        return (
            f"MNIST not found in data_dir={self.data_dir}: expected {self.data_dir / 'MNIST' / 'raw'}/ "
            f"with {', '.join(MNIST_FILES)}; pass --data.download true to fetch it (needs the internet) "
            "or point --data.data_dir at a folder holding MNIST/raw/"
        )

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        dataset = self._dataset(train)
        # torchvision has already parsed the IDX file into one (N, 28, 28) uint8 tensor.
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()
