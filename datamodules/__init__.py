"""LightningDataModules, one file per data source; importing the package registers them with the CLI."""

from datamodules.cifar10 import CIFAR10DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.images import DataConfigError, DataNotFoundError, ImageClassificationDataModule
from datamodules.line import LineDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.random_tensors import RandomTensorDataModule
from datamodules.sine_wave import SineWaveDataModule
from datamodules.tensors import InMemoryDataModule, TensorBatches

__all__ = [
    "CIFAR10DataModule",
    "DataConfigError",
    "DataNotFoundError",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "LineDataModule",
    "MNISTDataModule",
    "RandomTensorDataModule",
    "SineWaveDataModule",
    "TensorBatches",
]
