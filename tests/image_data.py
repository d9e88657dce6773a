"""Tiny image datasets in their genuine formats (MNIST's IDX files, CIFAR-10's pickles, class folders of
JPEGs), so the real loading code runs in tests. The writers live in ``datamodules/_samples.py``, where the
datamodules' ``write_sample`` finds them; this module keeps the name the tests import them by."""

from datamodules._samples import CIFAR_CLASSES, class_images, write_cifar10, write_image_folder, write_mnist

__all__ = ["CIFAR_CLASSES", "class_images", "write_cifar10", "write_image_folder", "write_mnist"]
