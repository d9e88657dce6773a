"""The 加载数据 (loading data) chapter's face-landmarks data: a CSV of 68 (x, y) points per face beside
its JPEG images, as in PyTorch's data-loading tutorial.

Layout of ``data_dir`` (``download: true`` fetches the tutorial's ``faces.zip`` into it)::

    face_landmarks.csv     header row, then: image_name, part_0_x, part_0_y, ..., part_67_x, part_67_y
    <image_name>           the images the CSV names (JPEG, PNG, ...)

The 69 images are decoded once and held in memory, each rescaled so its longer side is ``image_size``
and padded to a square (aspect kept, so the normalised mean error is that of the image file), with its
landmarks moved alike by torchvision's ``tv_tensors.KeyPoints``. Training faces are augmented one by
one on the batch's device (a small rotation, zoom and shift, then a random ``crop_size`` crop, a flip
and colour jitter; torchvision.transforms.v2 moves the points with the pixels); a flip also swaps the
left and right landmarks (``MIRROR_68``), which ``v2.RandomHorizontalFlip`` cannot know. With 55
training faces, the augmentation is what lets a network learn from scratch. Validation, test and
predict images are centre crops, made once.

Batches are ``(images, landmarks)``: images float in [0, 1] ``(N, 3, crop_size, crop_size)``, landmarks
``(N, 68, 2)`` in the crop's pixel coordinates, x then y, in torchvision's convention. ``predict`` batches
are ``(images, to_original)``: ``to_original`` ``(N, 2, 2)`` holds per-axis scale and offset such that
``points * to_original[:, 0] + to_original[:, 1]`` are the points in the image file's pixels.
"""

from __future__ import annotations

import csv
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from core.domains import (
    CountOrFraction,
    ExistingFolder,
    FolderPath,
    NonEmptyText,
    NonNegativeFloat,
    Pixels,
    PositiveFloat,
    PositiveInt,
    Probability,
    Seed,
)
from core.errors import DataConfigError, DataNotFoundError
from datamodules.images import count_or_fraction, held_out_count, predict_files, read_image
from datamodules.tensors import InMemoryDataModule

NUM_POINTS = 68
CSV_NAME = "face_landmarks.csv"
#: How far outside its image a landmark may lie, as a share of the image's width (x) or height (y). An
#: annotator places a chin or an ear cut off by the frame where it would be: the tutorial's own CSV has
#: points up to 12 pixels (2.7% of the height) outside their 500x446 image. Farther out, the row is wrong
#: (x and y swapped, the wrong image named, another scale).
OUTSIDE_MARGIN = 0.1
#: The data-loading tutorial's archive: a ``faces/`` folder with the CSV and the 69 images.
URL = "https://download.pytorch.org/tutorial/faces.zip"

#: The mirror permutation of the 68-point iBUG / Multi-PIE scheme: after a horizontal flip, point ``i``
#: of the mirrored face is where point ``MIRROR_68[i]`` went. "Right" is the subject's right, on the
#: image's left in a frontal photo. It is its own inverse; the points on the midline map to themselves.
MIRROR_68: tuple[int, ...] = (
    *range(16, -1, -1),  # jaw 0-16, right ear to left ear: reversed (8, the chin, stays)
    *range(26, 16, -1),  # brows: right 17-21 (outer to inner) <-> left 22-26 (inner to outer)
    27, 28, 29, 30,  # nose bridge, on the midline
    35, 34, 33, 32, 31,  # nostrils 31-35, right to left: reversed (33 stays)
    # right eye 36-41 (outer corner, upper lid 37-38, inner corner, lower lid 40-41) <-> left eye 42-47
    # (inner corner, upper lid 43-44, outer corner, lower lid 46-47): corners and lids swap pointwise.
    45, 44, 43, 42, 47, 46,
    39, 38, 37, 36, 41, 40,
    # outer lips 48-59: corners 48 <-> 54, upper lip 49-53 reversed, lower lip 55-59 reversed
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
    # inner lips 60-67: corners 60 <-> 64, upper 61-63 reversed, lower 65-67 reversed
    64, 63, 62, 61, 60, 67, 66, 65,
)  # fmt: skip


class LandmarkHorizontalFlip(v2.RandomHorizontalFlip):
    """``v2.RandomHorizontalFlip`` that also relabels the 68 landmarks of a flipped face.

    The flip moves every point to its mirror position, so the subject's right eye corner (36) would
    sit where the left one (45) belongs, still labelled 36; relabelling with ``MIRROR_68`` makes the
    flipped sample a genuine face again. Only applied when the flip happens (torchvision calls
    ``transform`` only then).
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        output = super().transform(inpt, params)
        if isinstance(output, tv_tensors.KeyPoints):
            return tv_tensors.wrap(output[..., list(MIRROR_68), :], like=output)
        return output


@dataclass
class Faces:
    """Decoded, letterboxed faces: what one read of ``data_dir`` holds."""

    names: list[str]
    images: Tensor  # (N, 3, S, S) uint8
    landmarks: Tensor  # (N, 68, 2) float32, in the square's pixels
    to_original: Tensor  # (N, 2, 2): square pixels -> image-file pixels, scale then offset
    lines: list[int]  # each face's line in the CSV, from 1
    points_read: Tensor  # (N, 68, 2) float32: the CSV's points, in the image file's pixels
    sizes: Tensor  # (N, 2) float32: each image file's width and height
    checked: bool = False  # by check_data


def check_landmarks(csv_path: Path, faces: Faces) -> None:
    """Raise ``DataConfigError`` naming the CSV, its line, the point and its value unless every landmark
    read is finite and within its image, give or take ``OUTSIDE_MARGIN`` of the image's size.
    Whole-tensor reductions; the first bad point is looked for only on failure."""
    points, sizes = faces.points_read, faces.sizes
    finite = torch.isfinite(points)
    if not finite.all():
        face, point, _ = (~finite).nonzero()[0].tolist()
        x, y = points[face, point].tolist()
        raise DataConfigError(
            f"{csv_path} line {faces.lines[face]}: point {point} of {faces.names[face]} is (x={x}, y={y}); "
            "coordinates must be finite numbers"
        )
    low = (-OUTSIDE_MARGIN * sizes).unsqueeze(1)
    high = ((1 + OUTSIDE_MARGIN) * sizes).unsqueeze(1)
    outside = (points < low) | (points > high)
    if outside.any():
        face, point, _ = outside.nonzero()[0].tolist()
        x, y = points[face, point].tolist()
        width, height = (int(v) for v in sizes[face].tolist())
        raise DataConfigError(
            f"{csv_path} line {faces.lines[face]}: point {point} (x={x:g}, y={y:g}) lies outside the "
            f"{width}x{height} image {faces.names[face]} by more than {OUTSIDE_MARGIN:.0%} of its size: the "
            "row is wrong (x and y swapped? another image's points?); correct or remove it"
        )


def decode(path: Path) -> Tensor:
    """An image file as a ``(3, H, W)`` uint8 tensor; a clear error when it is absent or unreadable."""
    if not path.is_file():
        raise DataNotFoundError(f"image {path} not found")
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work.
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise DataNotFoundError(f"cannot decode image {path}: {error}") from error


def letterbox(image: Tensor, points: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rescale ``image`` so its longer side is ``size`` (aspect kept), pad it to a centred square.

    Returns the square image, ``points`` moved alike, and the ``(2, 2)`` map back to the original's
    pixels (``square_points * map[0] + map[1]``).
    """
    height, width = image.shape[-2:]
    image = tv_tensors.Image(image)
    keypoints = tv_tensors.KeyPoints(points, canvas_size=(height, width))
    image, keypoints = (
        F.resize(image, size=None, max_size=size),
        F.resize(keypoints, size=None, max_size=size),
    )
    new_height, new_width = image.shape[-2:]
    left, top = (size - new_width) // 2, (size - new_height) // 2
    padding = [left, top, size - new_width - left, size - new_height - top]
    image, keypoints = F.pad(image, padding), F.pad(keypoints, padding)
    scale = torch.tensor([width / new_width, height / new_height])
    to_original = torch.stack([scale, -torch.tensor([left, top]) * scale])
    return image.as_subclass(Tensor), keypoints.as_subclass(Tensor), to_original


def read_landmarks_csv(path: Path) -> list[tuple[int, str, Tensor]]:
    """The rows of the tutorial's CSV as ``(line number, image name, (68, 2) points)``, line numbers from
    1 as an editor shows them; one-line errors for rows that are not an image name and 136 numbers
    (``FaceLandmarksDataModule.check_data`` checks the values)."""
    columns = 1 + 2 * NUM_POINTS
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    if not rows or len(rows[0]) != columns:
        found = len(rows[0]) if rows else 0
        raise DataConfigError(
            f"{path}: the header must have {columns} columns (image_name, then x and y of "
            f"{NUM_POINTS} points: part_0_x, part_0_y, ...), found {found}"
        )
    faces = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue  # a blank line, as pandas skips them
        if len(row) != columns:
            raise DataConfigError(
                f"{path} line {line}: {len(row)} columns, expected {columns} "
                f"(image name and {NUM_POINTS} x, y pairs)"
            )
        try:
            values = [float(v) for v in row[1:]]
        except ValueError:
            column, value = next((c, v) for c, v in enumerate(row[1:], start=2) if not _is_number(v))
            raise DataConfigError(
                f"{path} line {line}: column {column} ({rows[0][column - 1]}) is {value!r}, not a number"
            ) from None
        if not row[0].strip():
            raise DataConfigError(f"{path} line {line}: the image name (column 1) is empty")
        faces.append((line, row[0], torch.tensor(values, dtype=torch.float32).view(NUM_POINTS, 2)))
    if not faces:
        raise DataConfigError(f"{path} holds no faces, only a header")
    return faces


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class FaceLandmarksDataModule(InMemoryDataModule):
    """The face-landmarks CSV and its images, held in memory; images and landmarks transformed together.

    Validation, test and predict read the held-out faces (the tutorial has no test set); predict reads
    the images of ``predict_path`` instead when it is given (``predict_names``): photographs of any size
    and mode, letterboxed and centre-cropped as the held-out faces are, their landmarks mapped back to
    each file's pixels (``predictions.csv``: the training CSV's columns).

    The faces read are checked once, before the first split is served (``check_data``): every image
    the CSV names is there and decodes, and every landmark is finite and within its image, give or take
    ``OUTSIDE_MARGIN`` of the image's size.

    Args:
        data_dir: Folder holding the CSV and the images it names (downloaded into with ``download``).
        csv_file: The CSV's file name inside ``data_dir`` (a file, not a folder).
        image_size: Each image is rescaled so its longer side has this many pixels (>= 1), and padded
            to a square (the tutorial's ``Rescale``).
        crop_size: Square crops of this size (1..image_size) are what the network sees: random for
            training (the tutorial's ``RandomCrop``), central otherwise.
        horizontal_flip: Training augmentation: flip half the faces, swapping left and right landmarks.
        rotation: Training augmentation: rotate by up to this many degrees either way (0..180; 0: none).
        scale_range: Training augmentation: zoom by a factor drawn from this range (low, high with
            0 < low <= high; (1, 1): none).
        translate: Training augmentation: shift by up to this fraction of the image size ([0, 1]; 0:
            none).
        color_jitter: Training augmentation: brightness, contrast and saturation jitter (>= 0; 0: none).
        val_split: Faces held out for validation: a whole count (>= 0), or a fraction in [0, 1); it must
            leave at least one training face.
        batch_size: Faces per batch (>= 1).
        seed: Seeds the held-out split and the training shuffle (0 to 2**32 - 1).
        download: Fetch the tutorial's ``faces.zip`` into ``data_dir`` when the CSV is absent.
        predict_path: Images (no landmarks needed) for ``predict``: an image file, a folder of images
            (every file in it must be one; hidden files are skipped) or a glob such as ``'photos/*.jpg'``.
        predict_dir: The former name of ``predict_path`` for a folder, kept as an alias; give one of them.
    """

    #: The random crop has no off switch, and its offsets are drawn per process: a fit on two processes
    #: cannot equal one process's (docs/architecture.md).
    deterministic_args: ClassVar[dict[str, Any] | None] = None
    #: Why the batch-transfer hooks read host values on purpose: torchvision draws each face's transform
    #: parameters (crop offsets, flips, angles) on the CPU, and reading those waits for no device.
    host_random_transfer: ClassVar[str | None] = "torchvision draws per-face transform parameters on the CPU"
    #: the first column of predictions.csv, as in the training CSV, so the same reader reads both
    predict_name_column: ClassVar[str] = "image_name"

    @classmethod
    def write_sample(cls, root: Path) -> dict[str, Any]:
        """Tests' data: 12 small faces (4 held out), rescaled to 32 pixels and cropped to 28."""
        from datamodules._samples import write_faces

        folder = write_faces(root, count=12)
        return {"data_dir": str(folder), "image_size": 32, "crop_size": 28, "val_split": 4}

    def __init__(
        self,
        data_dir: FolderPath = "data/faces",
        csv_file: str = CSV_NAME,
        image_size: Pixels = 128,
        crop_size: Pixels = 112,
        horizontal_flip: bool = True,
        rotation: NonNegativeFloat = 15.0,
        scale_range: tuple[PositiveFloat, PositiveFloat] = (0.85, 1.15),
        translate: Probability = 0.08,
        color_jitter: NonNegativeFloat = 0.3,
        val_split: CountOrFraction = 0.2,
        batch_size: PositiveInt = 16,
        seed: Seed = 42,
        download: bool = False,
        predict_path: NonEmptyText | None = None,
        predict_dir: ExistingFolder | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        # The parser enforces each argument's domain for the command; these keep a plain-Python caller
        # safe too, and check what a type cannot say (one argument against another).
        if not 0 < crop_size <= image_size:
            raise DataConfigError(
                f"--data.crop_size={crop_size} must be between 1 and --data.image_size={image_size}: "
                "the crops are cut from the rescaled image"
            )
        if not 0 <= rotation <= 180:
            raise DataConfigError(f"--data.rotation={rotation}: expected degrees in 0..180")
        if not 0 <= translate <= 1:
            raise DataConfigError(f"--data.translate={translate}: expected a fraction of the size in [0, 1]")
        if not color_jitter >= 0:
            raise DataConfigError(f"--data.color_jitter={color_jitter}: expected a number >= 0")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise DataConfigError(
                f"--data.scale_range={list(scale_range)}: expected [low, high] with 0 < low <= high"
            )
        self.data_dir = Path(data_dir)
        self.csv_path = self.data_dir / csv_file
        if not csv_file.strip() or self.csv_path.is_dir():
            raise DataConfigError(
                f"--data.csv_file={csv_file!r}: expected the name of the CSV file inside data_dir={data_dir}"
            )
        self.image_size = image_size
        self.crop_size = crop_size
        self.horizontal_flip = horizontal_flip
        self.val_split = count_or_fraction(val_split, "--data.val_split")
        self.download = download
        if predict_path is not None and predict_dir is not None:
            raise DataConfigError(
                f"--data.predict_dir={predict_dir} and --data.predict_path={predict_path}: predict_dir is "
                "the former name of predict_path; give predict_path alone"
            )
        self.predict_path = predict_path if predict_path is not None else predict_dir
        self._given_path = predict_path is not None  # which flag messages name
        self.predict_names: list[str] = []
        self._faces: Faces | None = None
        # Applied to each training face, in this order, on the rescaled square: the affine first, so the
        # crop cuts away the corners it leaves empty.
        steps: list[v2.Transform] = []
        if rotation or translate or tuple(scale_range) != (1, 1):
            steps.append(
                v2.RandomAffine(degrees=rotation, translate=(translate, translate), scale=scale_range)
            )
        steps.append(v2.RandomCrop(crop_size))
        if horizontal_flip:
            steps.append(LandmarkHorizontalFlip(p=0.5))
        if color_jitter:
            steps.append(
                v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter)
            )
        self.train_transform = v2.Compose(steps)

    # --- reading ----------------------------------------------------------------------------------
    def missing_message(self) -> str:
        return (
            f"face landmarks not found: expected {self.csv_path} (image_name, then 68 x, y pairs per row) "
            f"beside the images it names in data_dir={self.data_dir}; pass --data.download true to fetch "
            f"the tutorial's {URL} (needs the internet), or point --data.data_dir at the unzipped faces/"
        )

    def prepare_data(self) -> None:
        # Lightning calls this once per node before setup: the place to download.
        if self.download and not self.csv_path.is_file():
            from torchvision.datasets.utils import download_and_extract_archive

            try:
                download_and_extract_archive(URL, download_root=str(self.data_dir), remove_finished=True)
            except OSError as error:  # URLError is an OSError
                raise DataNotFoundError(
                    f"could not download {URL} into data_dir={self.data_dir} ({error}): fetch and unzip it "
                    f"by hand so that {self.csv_path} sits beside its images"
                ) from error
            # The archive holds a faces/ folder; its files belong in data_dir itself.
            inner = self.data_dir / "faces"
            if inner.is_dir() and not self.csv_path.is_file():
                for item in inner.iterdir():
                    shutil.move(str(item), str(self.data_dir / item.name))
                inner.rmdir()

    def faces(self) -> Faces:
        """Every face of the CSV, decoded and letterboxed once."""
        if self._faces is None:
            if not self.csv_path.is_file():
                raise DataNotFoundError(self.missing_message())
            rows = read_landmarks_csv(self.csv_path)
            names, images, points, maps, sizes = [], [], [], [], []
            for line, name, landmarks in rows:
                path = self.data_dir / name
                if not path.is_file():
                    raise DataNotFoundError(
                        f"image {path} not found ({self.csv_path} line {line} names it): add it, or remove "
                        "the line"
                    )
                image = decode(path)
                square, moved, to_original = letterbox(image, landmarks, self.image_size)
                names.append(name)
                images.append(square)
                points.append(moved)
                maps.append(to_original)
                sizes.append(image.shape[-2:][::-1])  # (width, height), as the points are (x, y)
            self._faces = Faces(
                names,
                torch.stack(images),
                torch.stack(points),
                torch.stack(maps),
                lines=[line for line, _, _ in rows],
                points_read=torch.stack([landmarks for _, _, landmarks in rows]),
                sizes=torch.tensor(sizes, dtype=torch.float32),
            )
        return self._faces

    def check_data(self, split: str, tensors: tuple[Tensor, ...]) -> None:
        """Once, before a split is served: the landmarks read from the CSV (``check_landmarks``: finite,
        within their images), then ``InMemoryDataModule``'s check of the split's tensors. Every image the
        CSV names was found and decoded when the faces were read."""
        if not (split == "predict" and self.predict_path is not None):
            faces = self.faces()
            if not faces.checked:
                check_landmarks(self.csv_path, faces)
                faces.checked = True
        super().check_data(split, tensors)

    def split_indices(self, n: int) -> tuple[Tensor, Tensor]:
        """Training and held-out indices of ``n`` faces: a permutation seeded by ``seed``."""
        count = held_out_count(self.val_split, n)
        if not 0 <= count < n:
            raise DataConfigError(
                f"val_split={self.val_split:g} leaves no training faces out of {n}: "
                "set --data.val_split to a smaller count or a fraction such as 0.2"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return order[count:], order[:count]

    def centre_crop(self, images: Tensor, points: Tensor, to_original: Tensor) -> tuple[Tensor, ...]:
        """The central ``crop_size`` square of letterboxed images, points and maps moved alike."""
        offset = (self.image_size - self.crop_size) // 2
        end = offset + self.crop_size
        shift = torch.tensor([offset, offset], dtype=torch.float32)
        maps = to_original.clone()
        maps[:, 1] += shift * to_original[:, 0]
        return images[..., offset:end, offset:end].contiguous(), points - shift, maps

    def _predict_files(self) -> tuple[Tensor, Tensor]:
        assert self.predict_path is not None
        flag = "--data.predict_path" if self._given_path else "--data.predict_dir"
        files = predict_files(self.predict_path, flag)
        self.predict_names = [name for _, name in files]
        no_points = torch.zeros(0, 2)
        squares, maps = [], []
        for path, _ in files:
            square, _, to_original = letterbox(read_image(path, "RGB", flag), no_points, self.image_size)
            squares.append(square)
            maps.append(to_original)
        images, _, to_original = self.centre_crop(torch.stack(squares), no_points, torch.stack(maps))
        return images, to_original

    def make_split(self, split: str) -> tuple[Tensor, ...]:
        if split == "predict" and self.predict_path is not None:
            return self._predict_files()
        faces = self.faces()
        train, held_out = self.split_indices(len(faces.names))
        if split == "train":
            return faces.images[train], faces.landmarks[train]
        if len(held_out) == 0 and split != "val":  # fitting on every face, unvalidated, is allowed
            raise DataConfigError(
                f"val_split={self.val_split:g} holds out no faces to {split} on: set --data.val_split "
                "(e.g. 0.2)" + (" or --data.predict_path" if split == "predict" else "")
            )
        images, points, to_original = self.centre_crop(
            faces.images[held_out], faces.landmarks[held_out], faces.to_original[held_out]
        )
        if split == "predict":
            self.predict_names = [faces.names[i] for i in held_out.tolist()]
            return images, to_original
        return images, points

    # --- on the device ----------------------------------------------------------------------------
    def augment(self, images: Tensor, landmarks: Tensor) -> tuple[Tensor, Tensor]:
        """The training augmentation, drawn per face; images ``(N, 3, S, S)`` -> ``(N, 3, crop, crop)``."""
        size = tuple(images.shape[-2:])
        out_images, out_points = [], []
        for image, points in zip(images, landmarks, strict=True):
            image, points = self.train_transform(
                tv_tensors.Image(image), tv_tensors.KeyPoints(points, canvas_size=size)
            )
            out_images.append(image.as_subclass(Tensor))
            out_points.append(points.as_subclass(Tensor))
        return torch.stack(out_images), torch.stack(out_points)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 images -> float in [0, 1]; training batches augmented first."""
        images, second = batch
        if self.trainer is not None and self.trainer.training:
            images, second = self.augment(images, second)
        return images.float().div_(255), second

    # --- for python -m experiments export -------------------------------------------------------------
    def export_batch(self, count: int) -> Tensor:
        """Up to ``count`` held-out faces as the exported model takes them: uint8 ``(N, 3, crop_size,
        crop_size)``, each photo letterboxed to ``image_size`` and centre-cropped, before scaling."""
        return self.split_tensors("test")[0][:count]

    def export_preprocess(self) -> Callable[[Tensor], Tensor]:
        """uint8 faces to the network's input, as ``on_after_batch_transfer`` makes evaluation batches."""
        return lambda images: images.float().div(255)

    def export_description(self) -> dict[str, Any]:
        """The exported input's name, range and meaning (sidecar JSON)."""
        meaning = (
            f"RGB faces, uint8 (N, 3, {self.crop_size}, {self.crop_size}): a photo rescaled so its longer "
            f"side is {self.image_size} pixels, padded square, then its central {self.crop_size}x"
            f"{self.crop_size}"
        )
        return {"input": {"name": "images", "range": [0, 255], "meaning": meaning}}
