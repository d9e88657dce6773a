"""Any class-per-folder image dataset, decoded once and cached as one tensor file.

Layout: ``<data_dir>/train/<class>/*`` and, when present, ``val/`` and ``test/`` with the same class
folders; without ``val/`` a seeded part of ``train/`` is held out. The first run decodes every image
(torchvision.io, JPEG/PNG/...) into one uint8 tensor per split and saves it under ``cache_dir``; later
runs, and every epoch, decode nothing. The cache is keyed by the files' names, sizes and modification
times and by ``image_size``, so changed data is decoded again. What is read (decoded or from the cache)
is checked once (``check_data``): every image of the same size and channels (``image_size``,
``grayscale``), one label per image in the class range; a cache that fails the check is decoded again.

``predict`` reads ``test/`` (else ``val/``), or the user's images with ``--data.predict_path``, resized to
``image_size`` (and made grey with ``grayscale``) as the training images were.

CIFAR-10 as JPEGs (``tar xzf cifar10_jpg.tar.gz -C data/``) trains with
``--data ImageFolderDataModule --data.data_dir data/cifar10_jpg``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from core.domains import FiniteFloat, FolderPath, Pixels, PositiveFloat
from core.errors import DataConfigError, DataNotFoundError
from datamodules.images import ImageClassificationDataModule, sample_text

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def load_rgb(path: str) -> Any:
    """torchvision's image loader for ``ImageFolder`` (PIL, RGB), with a file that cannot be decoded an
    error naming it. A module-level function: DataLoader workers pickle it."""
    from PIL import Image

    try:
        with open(path, "rb") as file:
            return Image.open(file).convert("RGB")
    except OSError as error:  # PIL's UnidentifiedImageError, a truncated file
        raise DataNotFoundError(f"cannot decode image {path} ({error}): replace or remove the file") from None


class ImageFolderDataModule(ImageClassificationDataModule):
    """Images from ``train/<class>/``, ``val/<class>/`` and ``test/<class>/`` folders.

    Args:
        image_size: Resize every image to this square size in pixels (>= 1); None keeps sizes, which
            must then agree.
        grayscale: Decode to one channel instead of RGB.
        cache_dir: Folder where decoded tensors are cached (not a file); default ``<data_dir>/.cache``.
            If it cannot be written, the run goes on without a cache.
        mean_std: Per-channel mean (finite) and std (finite, > 0) for ``normalize``, one of each per
            channel (3, or 1 with ``grayscale``); None computes them from the training split.
        *args, **kwargs: The arguments of ``ImageClassificationDataModule``.
    """

    def __init__(
        self,
        *args,
        image_size: Pixels | None = None,
        grayscale: bool = False,
        cache_dir: FolderPath | None = None,
        mean_std: tuple[tuple[FiniteFloat, ...], tuple[PositiveFloat, ...]] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if image_size is not None and image_size < 1:
            raise DataConfigError(f"--data.image_size={image_size}: expected a size in pixels >= 1, or null")
        channels = 1 if grayscale else 3
        if mean_std is not None:
            mean, std = mean_std
            if len(mean) != channels or len(std) != channels:
                raise DataConfigError(
                    f"--data.mean_std: {len(mean)} means and {len(std)} stds for {channels}-channel images "
                    f"(grayscale={grayscale}): give {channels} of each"
                )
            if not all(s > 0 for s in std):
                raise DataConfigError(f"--data.mean_std: the stds {list(std)} must all be > 0")
        self.image_size = image_size
        self.grayscale = grayscale
        self.image_shape = (channels, image_size, image_size)
        self.dataset_name = f"the class folders of {self.data_dir}"
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / ".cache"
        self.mean_std = mean_std
        self.classes = self._class_names()

    @classmethod
    def write_sample(cls, root: Path) -> dict[str, Any]:
        """Tests' data: JPEGs of 3 classes, 16x16, 8 a class in ``train/`` (6 held out), 4 in ``test/``."""
        from datamodules._samples import write_image_folder

        return {"data_dir": str(write_image_folder(root)), "val_split": 6}

    def _class_names(self) -> list[str]:
        train = self.data_dir / "train"
        classes = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
        if not classes:
            raise DataNotFoundError(
                f"no class folders in data_dir={self.data_dir}: expected {train}/<class>/<image> (and "
                "optionally val/ and test/ alike); for CIFAR-10 as JPEGs, extract cifar10_jpg.tar.gz there"
            )
        return classes

    def _files(self, split: str) -> list[tuple[Path, int]]:
        folder = self.data_dir / split
        files = []
        for label, name in enumerate(self.classes):
            class_dir = folder / name
            if class_dir.is_dir():
                files += [(p, label) for p in sorted(class_dir.iterdir()) if p.suffix.lower() in EXTENSIONS]
        unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in self.classes)
        if unknown:
            raise DataNotFoundError(f"{folder} has classes absent from train/: {', '.join(unknown)}")
        if not files:
            raise DataNotFoundError(f"no images ({', '.join(EXTENSIONS)}) under {folder}/<class>/")
        return files

    def _cache_path(self, split: str, files: list[tuple[Path, int]]) -> Path:
        key = hashlib.sha256(repr((self.image_size, self.grayscale, self.classes)).encode())
        for path, label in files:
            stat = path.stat()
            key.update(
                f"{path.relative_to(self.data_dir)}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
            )
        return self.cache_dir / f"{split}-{key.hexdigest()[:16]}.pt"

    def _decode(self, files: list[tuple[Path, int]]) -> tuple[Tensor, Tensor]:
        mode = ImageReadMode.GRAY if self.grayscale else ImageReadMode.RGB
        images = []
        for path, _ in files:
            try:
                with warnings.catch_warnings():
                    # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    image = decode_image(str(path), mode=mode)
            except RuntimeError as error:
                raise DataNotFoundError(f"cannot decode image {path}: {error}") from error
            if self.image_size is not None:
                image = v2.functional.resize(image, [self.image_size, self.image_size], antialias=True)
            images.append(image)
        sizes = {tuple(i.shape) for i in images}
        if len(sizes) > 1:
            raise DataConfigError(
                f"images under {self.data_dir} differ in size ({sorted(sizes)[:3]} ...); "
                "set --data.image_size"
            )
        return torch.stack(images), torch.tensor([label for _, label in files], dtype=torch.long)

    def corrupt_fix(self) -> str:
        # Only a cache can fail the check (decoding makes what it expects); it is then decoded again.
        return "the cache does not hold these images"

    def check_data(
        self,
        images: Tensor,
        labels: Tensor,
        images_file: str | Path,
        labels_file: str | Path | None = None,
        name_of: Callable[[int], str] | None = None,
        files: list[tuple[Path, int]] | None = None,
    ) -> None:
        """``ImageClassificationDataModule.check_data``, and with ``files``: one image per file, labelled
        with its folder's class (a cache made from other files fails this)."""
        if files is not None:

            def name_of(index: int) -> str:
                return str(files[index][0].relative_to(self.data_dir))

        super().check_data(images, labels, images_file, labels_file, name_of)
        if files is None:
            return
        if len(labels) != len(files):
            raise DataConfigError(
                f"{images_file}: {len(labels)} images for the {len(files)} image files: {self.corrupt_fix()}"
            )
        expected = torch.tensor([label for _, label in files], dtype=labels.dtype)
        if not torch.equal(labels, expected):
            index = int((labels != expected).nonzero()[0])
            raise DataConfigError(
                f"{images_file}: label {int(labels[index])} at {sample_text(index, name_of)}, whose folder "
                f"is class {int(expected[index])}: {self.corrupt_fix()}"
            )

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        files = self._files(split)
        cache = self._cache_path(split, files)
        if cache.is_file():
            try:
                cached = torch.load(cache, weights_only=True)
                images, labels = cached["images"], cached["labels"]
                self.check_data(images, labels, cache, files=files)
                return images, labels
            except DataConfigError as error:  # readable, but not these images: rebuild it
                warnings.warn(f"{error}; decoding the images again", stacklevel=2)
            except Exception as error:  # truncated, or not ours: any failure to read means rebuild it
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                warnings.warn(
                    f"the image cache {cache} is unreadable ({reason}); decoding the images again",
                    stacklevel=2,
                )
        images, labels = self._decode(files)
        self.check_data(images, labels, self.data_dir / split, files=files)
        # One temporary file per process: the processes of a multi-node run may all build the cache at
        # once, and a half-written cache is never read.
        temporary = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"images": images, "labels": labels}, temporary)
            temporary.replace(cache)
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
            temporary.unlink(missing_ok=True)
            reason = str(error).splitlines()[0]
            warnings.warn(
                f"could not write the image cache {cache} ({reason}); decoding again next run", stacklevel=2
            )
        return images, labels

    def _test_split(self) -> str:
        """The folder ``test``/``predict`` read: ``test/``, else ``val/``."""
        split = "test" if (self.data_dir / "test").is_dir() else "val"
        if not (self.data_dir / split).is_dir():
            raise DataNotFoundError(f"no test/ or val/ folder in data_dir={self.data_dir} to test on")
        return split

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        return self._load("train" if train else self._test_split())

    def setup(self, stage: str) -> None:
        has_val = (self.data_dir / "val").is_dir()
        if stage in ("fit", "validate") and has_val and "train" not in self.splits and self.in_memory:
            # A val/ folder replaces the held-out split.
            self.splits["train"] = self._load("train")
            self.splits["val"] = self._load("val")
        super().setup(stage)
        if stage == "predict" and self.predict_path is None:
            # The test split's rows of predictions.csv are named by their files, as the user's are.
            split = self._test_split()
            self.predict_names = [str(path.relative_to(self.data_dir)) for path, _ in self._files(split)]

    def per_sample_dataset(self, train: bool) -> Dataset:
        split = "train" if train else self._test_split()
        steps = [v2.PILToTensor()]
        if self.image_size is not None:
            steps.append(v2.Resize([self.image_size, self.image_size], antialias=True))
        if self.grayscale:
            steps.insert(0, v2.Grayscale())
        return datasets.ImageFolder(self.data_dir / split, transform=v2.Compose(steps), loader=load_rgb)
