"""Image classification data held in memory as uint8 tensors, batched by indexing, augmented per batch.

A dataset that fits in memory (MNIST: 47 MB, CIFAR-10: 180 MB as uint8) is decoded once into one
``(N, C, H, W)`` uint8 tensor plus a label tensor. Batches are made by indexing it with a shuffled
permutation (``TensorBatches``), so an epoch costs one indexing call per batch instead of a Python
``__getitem__``, a PIL conversion and a collate per image. Batches travel to the device as uint8 (a
quarter of float32's bytes) and become float, augmented and normalised there, in
``on_after_batch_transfer``: on a GPU the augmentation runs on the GPU.

Data that does not fit (``in_memory: false``) goes through the usual per-sample torchvision dataset and
``DataLoader`` with workers, yielding the same uint8 batches, so the device-side steps are shared.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from core.domains import (
    CountOrFraction,
    FolderPath,
    NonEmptyText,
    Padding,
    PositiveInt,
    Seed,
    WorkerCount,
    require_at_least,
)
from core.errors import DataConfigError, DataNotFoundError
from datamodules.tensors import TensorBatches, shard_arguments


def count_or_fraction(value: float, flag: str) -> float:
    """``value`` as a part of a data set: a whole count, or a fraction in [0, 1). The parser checks this
    for the command (``CountOrFraction``); this does the same for a plain-Python caller. 2.5 is neither
    and is refused, naming ``flag``."""
    try:
        return float(CountOrFraction(value))
    except ValueError as error:
        raise DataConfigError(f"{flag}={value}: {error}") from None


def held_out_count(val_split: float, n: int) -> int:
    """How many of ``n`` items ``val_split`` holds out: a fraction (< 1) of ``n``, rounded, or a count.
    ``val_split`` has been through ``count_or_fraction``, so a count is whole."""
    return round(val_split * n) if val_split < 1 else int(val_split)


def _shape_text(shape: tuple[int | None, ...]) -> str:
    """``(C, H, W)`` in words, ``None`` meaning any: "1 channel of 28x28 pixels", "3 channels"."""
    channels, height, width = shape
    text = "any channels" if channels is None else f"{channels} channel{'s' if channels != 1 else ''}"
    if height is not None or width is not None:
        text += f" of {height or 'any'}x{width or 'any'} pixels"
    return text


def sample_text(index: int, name_of: Callable[[int], str] | None = None) -> str:
    """Sample ``index`` for a message: its 0-based index, and its name (its file) where known."""
    return f"sample {index} (counting from 0{', ' + name_of(index) if name_of is not None else ''})"


#: What ``--data.predict_path`` takes, for messages.
PREDICT_PATH_TAKES = "an image file, a folder of images or a glob such as 'digits/*.png'"


def predict_files(predict_path: str, flag: str = "--data.predict_path") -> list[tuple[Path, str]]:
    """The files ``predict_path`` names, each with the name a prediction is listed under, in order: a
    file (named as given); a folder's files, sorted, not its sub-folders (named by file name; hidden
    files such as ``.DS_Store`` are skipped, every other file must be an image); or a glob (``*``, ``?``,
    ``[...]``; ``**`` for any depth), its matches sorted (named as matched). One ``DataNotFoundError``
    naming ``flag`` when there is no such file or folder, the folder is empty or the glob matches none."""
    path = Path(predict_path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataNotFoundError(f"{flag}={predict_path}: the folder holds no files; put images in it")
        return [(p, p.name) for p in files]
    if path.is_file():
        return [(path, predict_path)]
    if any(c in predict_path for c in "*?["):
        matches = glob.glob(os.path.expanduser(predict_path), recursive=True)
        files = sorted(Path(m) for m in matches if Path(m).is_file())
        if not files:
            raise DataNotFoundError(f"{flag}={predict_path}: the pattern matches no file")
        return [(p, str(p)) for p in files]
    raise DataNotFoundError(f"{flag}={predict_path}: no such file or folder; give {PREDICT_PATH_TAKES}")


def read_image(path: Path, mode: Literal["L", "RGB"], flag: str = "--data.predict_path") -> Tensor:
    """The image file ``path`` as a uint8 ``(C, H, W)`` tensor in ``mode`` (``L``: one grey channel;
    ``RGB``: three): ``open_image``'s picture."""
    return v2.functional.pil_to_tensor(open_image(path, mode, flag))


def open_image(path: Path, mode: Literal["L", "RGB"], flag: str = "--data.predict_path") -> Any:
    """The image file ``path`` as a PIL image in ``mode`` (``L``: grey; ``RGB``), whatever its format
    (PNG, JPEG, GIF, BMP, WebP, TIFF...) and mode: turned upright as its EXIF orientation says (a phone's
    photo), transparency laid over white paper, 16- and 32-bit grey scaled to 8 bits, palettes and CMYK
    converted. A file that is not an image PIL can decode, or a
    truncated one, is one ``DataConfigError`` naming it and ``flag``."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # loads the pixels: a truncated file fails here
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataConfigError(
            f"{flag}: {path} is not an image that can be read ({reason}): remove it from the folder or the "
            "glob, or replace it with a PNG or JPEG"
        ) from None
    if image.mode == "F" or image.mode.startswith("I"):
        # PIL's own conversion of these to 8 bits clips at 255 instead of scaling.
        values = torch.from_numpy(np.asarray(image, dtype=np.float64))
        if image.mode.startswith("I;16"):
            top = 65535.0
        elif image.mode == "F":
            top = 1.0 if values.max() <= 1 else 255.0
        else:  # "I": 32-bit integers, which PIL also uses for 16-bit PNGs
            top = 255.0 if values.max() <= 255 else 65535.0
        grey = (values.clamp(0, top) * (255.0 / top)).round().to(torch.uint8)
        image = Image.fromarray(grey.numpy())
    if image.has_transparency_data:  # an alpha channel, or a palette's transparent colour
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert(mode)


def random_crop_flip(images: Tensor, padding: int, flip: bool) -> Tensor:
    """Per-image random crop (after zero padding by ``padding``) and horizontal flip of a batch.

    torchvision.transforms.v2 applies one set of random parameters to a whole batched tensor; the usual
    CIFAR augmentation draws them per image, so the offsets and flips are drawn per image here and
    applied with one gather.
    """
    n, _, h, w = images.shape
    if padding:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), device=images.device)
        dx = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), device=images.device)
        rows = dy + torch.arange(h, device=images.device).view(1, 1, h, 1)
        cols = dx + torch.arange(w, device=images.device).view(1, 1, 1, w)
        padded_w = w + 2 * padding
        flat = padded.flatten(2)  # index rows and columns of every channel at once
        index = (rows * padded_w + cols).expand(n, images.shape[1], h, w).flatten(2)
        images = flat.gather(2, index).view_as(images)
    if flip:
        flipped = torch.rand(n, device=images.device) < 0.5
        images = torch.where(flipped.view(n, 1, 1, 1), images.flip(-1), images)
    return images


class ImageClassificationDataModule(LightningDataModule):
    """Shared machinery of the image datamodules; subclasses implement ``load_split``.

    The data read are checked once, when a split is loaded (``check_data``): images ``(N, C, H, W)``
    uint8 of ``image_shape``, one integer label per image in ``0..len(classes)-1``.

    Args:
        data_dir: Folder where the dataset lives (or is downloaded to); not a file.
        val_split: Training images held out for validation: a whole count (>= 0), or a fraction in
            [0, 1); it must leave at least one training image.
        batch_size: Images per batch (>= 1).
        num_workers: Loader processes for the per-sample path (``in_memory: false``; >= 0); the in-memory
            path needs none.
        seed: Seeds the validation split and the training shuffle (0 to 2**32 - 1).
        normalize: Subtract the training set's per-channel mean and divide by its std; else x / 255.
        download: Download the data when it is absent (needs the internet).
        in_memory: Hold the whole dataset as one uint8 tensor (default); false for data that does not
            fit in memory: per-sample dataset and DataLoader.
        random_crop_padding: Training augmentation: random crop after zero padding by this many pixels
            (>= 0; 0: none).
        horizontal_flip: Training augmentation: random horizontal flip.
        pin_memory: Pin host batches so copies to a GPU are asynchronous (only when CUDA is available).
        predict_path: Images for ``predict`` instead of the test split: an image file, a folder of
            images (every file in it must be one; hidden files are skipped) or a glob such as
            ``'digits/*.png'``. Any size and mode (PNG, JPEG...): each is read as ``read_image`` says and
            converted as the dataset's images were (``predict_image``), then normalised as test batches are.
            ``predictions.csv`` lists them by file name with the predicted class and its probability.
    """

    #: per-channel mean and std of the training set in [0, 1], when known; else computed.
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    #: names of the classes, index = label
    classes: tuple[str, ...] | list[str]
    #: (channels, height, width) every image must have; None where any size is accepted
    image_shape: tuple[int | None, int | None, int | None] = (None, None, None)
    #: the dataset's name in messages
    dataset_name = "the dataset"
    #: The arguments that turn the training augmentation off (random crops and flips are drawn per
    #: process): with them a run on two processes computes what one process computes (docs/architecture.md).
    deterministic_args: ClassVar[dict[str, Any] | None] = {"random_crop_padding": 0, "horizontal_flip": False}

    def __init__(
        self,
        data_dir: FolderPath = "data",
        val_split: CountOrFraction = 5000,
        batch_size: PositiveInt = 128,
        num_workers: WorkerCount = 0,
        seed: Seed = 42,
        normalize: bool = True,
        download: bool = False,
        in_memory: bool = True,
        random_crop_padding: Padding = 0,
        horizontal_flip: bool = False,
        pin_memory: bool = True,
        predict_path: NonEmptyText | None = None,
    ) -> None:
        super().__init__()
        # The parser enforces the domains for the command; these keep a plain-Python caller safe too.
        require_at_least("data", 1, batch_size=batch_size)
        require_at_least("data", 0, num_workers=num_workers, random_crop_padding=random_crop_padding)
        self.data_dir = Path(data_dir)
        self.val_split = count_or_fraction(val_split, "--data.val_split")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.normalize = normalize
        self.download = download
        self.in_memory = in_memory
        self.random_crop_padding = random_crop_padding
        self.horizontal_flip = horizontal_flip
        self.pin_memory = pin_memory
        self.predict_path = predict_path
        #: what each predicted sample is, in order (a file name; ``test/<index>`` for the test split), the
        #: first column of ``predictions.csv``
        self.predict_names: list[str] = []
        self.splits: dict[str, Any] = {}
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    #: the torchvision dataset class that reads (and downloads) this data, if there is one
    torchvision_dataset: type | None = None

    # --- what a subclass provides -------------------------------------------------------------------
    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64 of the training or test set."""
        raise NotImplementedError

    def missing_message(self) -> str:
        """For ``torchvision_dataset`` data: what the folder should hold and how to get it, one line."""
        raise NotImplementedError

    def corrupt_fix(self) -> str:
        """What to do about a data file that fails ``check_data``, for the end of its message."""
        return "the file is corrupt: replace it with a good copy"

    def predict_image(self, image: Tensor) -> Tensor:
        """One of the user's images, uint8 ``(C, H, W)`` with ``image_shape``'s channels, made like the
        dataset's images: resized to ``image_shape``'s height and width, the whole picture, its aspect
        not kept (CIFAR-10's images are whole photographs shrunk to 32x32; ``ImageFolderDataModule``
        resizes its training images the same way). Kept as it is where the size is open."""
        _, height, width = self.image_shape
        if height is None or width is None:
            return image
        return v2.functional.resize(image, [height, width], antialias=True)

    def read_predict_files(self) -> tuple[Tensor, Tensor]:
        """The images of ``predict_path``, converted (``predict_image``), as ``(N, C, H, W)`` uint8 with
        labels -1 (unknown); ``predict_names`` their names."""
        assert self.predict_path is not None
        files = predict_files(self.predict_path)
        mode: Literal["L", "RGB"] = "L" if self.image_shape[0] == 1 else "RGB"
        images = [self.predict_image(read_image(path, mode)) for path, _ in files]
        sizes = {tuple(image.shape[1:]): name for image, (_, name) in zip(images, files, strict=True)}
        if len(sizes) > 1:
            (first, a), (second, b) = list(sizes.items())[:2]
            raise DataConfigError(
                f"--data.predict_path={self.predict_path}: {a} is {first[1]}x{first[0]} pixels and {b} "
                f"{second[1]}x{second[0]}; set --data.image_size to the model's input size so that every "
                "image is resized to it"
            )
        self.predict_names = [name for _, name in files]
        return torch.stack(images).contiguous(), torch.full((len(images),), -1, dtype=torch.long)

    # --- the data read, checked once --------------------------------------------------------------------
    def check_data(
        self,
        images: Tensor,
        labels: Tensor,
        images_file: str | Path,
        labels_file: str | Path | None = None,
        name_of: Callable[[int], str] | None = None,
    ) -> None:
        """Raise ``DataConfigError`` naming the file, the sample and the value unless ``images`` are
        ``(N, C, H, W)`` uint8 of ``image_shape`` and ``labels`` ``(N,)`` integers in
        ``0..len(classes)-1``. Whole-tensor reductions, run once when a split is loaded (never per
        batch); the first bad sample is looked for only on failure. ``name_of(index)`` names a sample (its
        image file) in the message, where there is a name."""
        labels_file = images_file if labels_file is None else labels_file
        fix = self.corrupt_fix()
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataConfigError(
                f"{images_file}: images are {str(images.dtype).removeprefix('torch.')} of shape "
                f"{tuple(images.shape)}, expected uint8 (N, channels, height, width): {fix}"
            )
        found = tuple(images.shape[1:])
        if any(e is not None and e != f for e, f in zip(self.image_shape, found, strict=True)):
            raise DataConfigError(
                f"{images_file}: images are {_shape_text(found)}, expected {_shape_text(self.image_shape)} "
                f"for {self.dataset_name}: {fix}"
            )
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex:
            raise DataConfigError(
                f"{labels_file}: labels are {str(labels.dtype).removeprefix('torch.')} of shape "
                f"{tuple(labels.shape)}, expected one integer per image: {fix}"
            )
        if len(labels) != len(images):
            raise DataConfigError(
                f"{labels_file}: {len(labels)} labels for the {len(images)} images of {images_file}: {fix}"
            )
        count = len(self.classes)
        if len(labels) and (labels.min() < 0 or labels.max() >= count):
            index = int(((labels < 0) | (labels >= count)).nonzero()[0])
            raise DataConfigError(
                f"{labels_file}: label {int(labels[index])} at {sample_text(index, name_of)} is outside "
                f"0..{count - 1} ({count} classes in {self.dataset_name}): {fix}"
            )

    # --- torchvision datasets -------------------------------------------------------------------------
    def _dataset(self, train: bool, transform: v2.Transform | None = None) -> Dataset:
        assert self.torchvision_dataset is not None
        try:
            return self.torchvision_dataset(
                self.data_dir, train=train, download=self.download, transform=transform
            )
        except RuntimeError as error:  # torchvision's "not found or corrupted"
            raise DataNotFoundError(f"{self.missing_message()} ({error})") from error

    def prepare_data(self) -> None:
        # Lightning calls this once per node before setup: the place to download.
        if self.download and self.torchvision_dataset is not None:
            self._dataset(train=True)
            self._dataset(train=False)

    def per_sample_dataset(self, train: bool) -> Dataset:
        """The dataset for ``in_memory: false``, yielding (uint8 CHW tensor, label)."""
        return self._dataset(train, transform=v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.uint8)]))

    # --- splits ---------------------------------------------------------------------------------------
    def _val_count(self, n: int) -> int:
        count = held_out_count(self.val_split, n)
        if not 0 <= count < n:
            raise DataConfigError(
                f"val_split={self.val_split:g} leaves no training images out of {n}: "
                "set --data.val_split to a smaller count or a fraction such as 0.1"
            )
        return count

    def _split_indices(self, n: int) -> tuple[Tensor, Tensor]:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_val = self._val_count(n)
        return order[n_val:], order[:n_val]

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and "train" not in self.splits:
            if self.in_memory:
                images, labels = self.load_split(train=True)
                train_idx, val_idx = self._split_indices(len(labels))
                self.splits["train"] = (images[train_idx], labels[train_idx])
                self.splits["val"] = (images[val_idx], labels[val_idx])
            else:
                dataset = self.per_sample_dataset(train=True)
                train_idx, val_idx = self._split_indices(len(dataset))
                self.splits["train"] = torch.utils.data.Subset(dataset, train_idx.tolist())
                self.splits["val"] = torch.utils.data.Subset(dataset, val_idx.tolist())
        if stage == "predict" and self.predict_path is not None:
            if "predict" not in self.splits:
                self.splits["predict"] = self.read_predict_files()
            return
        if stage in ("test", "predict") and "test" not in self.splits:
            self.splits["test"] = (
                self.load_split(train=False) if self.in_memory else self.per_sample_dataset(False)
            )
        if stage == "predict":
            test = self.splits["test"]
            self.predict_names = [f"test/{i}" for i in range(len(test[0] if self.in_memory else test))]

    def _normalisation(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Resolved on first use, not in setup: Lightning restores a datamodule's state (the statistics a
        # checkpoint's model was trained with) only after setup has run.
        if self.mean is None:
            if self.mean_std is None:
                pixels = self._training_images().float().div_(255)
                self.mean_std = (
                    tuple(pixels.mean(dim=(0, 2, 3)).tolist()),
                    tuple(pixels.std(dim=(0, 2, 3)).tolist()),
                )
            self.mean = torch.tensor(self.mean_std[0]).view(1, -1, 1, 1)
            self.std = torch.tensor(self.mean_std[1]).view(1, -1, 1, 1)
        if self.mean.device != device:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self.mean, self.std

    def _training_images(self, most: int = 1000) -> Tensor:
        """The training images the normalisation statistics come from: all of them in memory; else up to
        ``most``, evenly spread, decoded one by one."""
        train = self.splits.get("train")
        if self.in_memory:
            return train[0] if train is not None else self.load_split(train=True)[0]
        dataset = train if train is not None else self.per_sample_dataset(train=True)
        picks = torch.linspace(0, len(dataset) - 1, min(len(dataset), most)).long().unique()
        return torch.stack([dataset[int(i)][0] for i in picks])

    # --- loaders --------------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> Any:
        data = self.splits[split]
        pin = self.pin_memory and torch.cuda.is_available()
        if self.in_memory or split == "predict":  # the user's files are held in memory either way
            return TensorBatches(
                *data,
                batch_size=self.batch_size,
                shuffle=shuffle,
                seed=self.seed,
                pin_memory=pin,
                **shard_arguments(self.trainer, split),
            )
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> Any:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> Any:
        return self._loader("predict" if self.predict_path is not None else "test", shuffle=False)

    # --- on the device --------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 images -> float in [0, 1], training augmentation, normalisation; on the batch's device."""
        images, labels = batch[0], batch[1]
        images = images.float().div_(255)
        if self.trainer is not None and self.trainer.training:
            images = random_crop_flip(images, self.random_crop_padding, self.horizontal_flip)
        if self.normalize:
            mean, std = self._normalisation(images.device)
            images = (images - mean) / std
        return images, labels

    def state_dict(self) -> dict[str, Any]:
        # The normalisation is part of what a checkpoint's model expects, so it travels with it.
        return {"mean_std": self.mean_std}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("mean_std") is not None:
            self.mean_std = state_dict["mean_std"]

    # --- for python -m experiments export -------------------------------------------------------------
    def export_batch(self, count: int) -> Tensor:
        """Up to ``count`` test images as a user hands them to an exported model: uint8 ``(N, C, H, W)``,
        the files' pixels, before any scaling (the export is checked on them)."""
        self.setup("test")
        test = self.splits["test"]
        if self.in_memory:
            return test[0][:count]
        return torch.stack([test[i][0] for i in range(min(count, len(test)))])

    def export_preprocess(self) -> Callable[[Tensor], Tensor]:
        """uint8 images to the network's input, as ``on_after_batch_transfer`` makes evaluation batches:
        x / 255, then, with ``normalize``, this datamodule's statistics (a checkpoint's, once loaded)."""
        if not self.normalize:
            return lambda images: images.float().div(255)
        mean, std = self._normalisation(torch.device("cpu"))
        return lambda images: (images.float().div(255) - mean) / std

    def export_description(self) -> dict[str, Any]:
        """The exported input's name, range and meaning, and the output's class names (sidecar JSON)."""
        meaning = f"{self.dataset_name} images as their pixels, uint8 (N, channels, height, width)"
        return {
            "input": {"name": "images", "range": [0, 255], "meaning": meaning},
            "output": {"classes": [str(name) for name in self.classes]},
        }
