"""LightningDataModules, one file per data source; importing the package registers them with the CLI."""

from datamodules.cifar10 import CIFAR10DataModule
from datamodules.coco_captions import CocoCaptionsDataModule, Vocabulary
from datamodules.face_landmarks import FaceLandmarksDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.images import DataConfigError, DataNotFoundError, ImageClassificationDataModule
from datamodules.line import LineDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.random_tensors import RandomTensorDataModule
from datamodules.sine_wave import SineWaveDataModule
from datamodules.study_scores import StudyScoresDataModule
from datamodules.tabular import BostonHousingDataModule, CSVFormatError, CSVRegressionDataModule
from datamodules.tensors import InMemoryDataModule, TensorBatches
from datamodules.text_corpus import TextCorpusDataModule
from datamodules.treebank import TreebankDataModule, TreeSyntaxError

__all__ = [
    "BostonHousingDataModule",
    "CIFAR10DataModule",
    "CSVFormatError",
    "CSVRegressionDataModule",
    "CocoCaptionsDataModule",
    "DataConfigError",
    "DataNotFoundError",
    "FaceLandmarksDataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "LineDataModule",
    "MNISTDataModule",
    "RandomTensorDataModule",
    "SineWaveDataModule",
    "StudyScoresDataModule",
    "TensorBatches",
    "TextCorpusDataModule",
    "TreeSyntaxError",
    "TreebankDataModule",
    "Vocabulary",
]
