"""COCO captions (数据集 chapter): images with their reference captions, for a captioning model.

The chapter reads COCO with ``torchvision.datasets.CocoCaptions(root=<image folder>, annFile=<json>)``;
so does this datamodule (it needs ``pycocotools``). COCO (118k training images) does not fit in memory,
so images are read per sample by a ``DataLoader`` with workers, resized to ``image_size`` square there,
and travel as uint8; they become float and are normalised on the device (``on_after_batch_transfer``).

Splits. ``train_*`` names the training annotation file and image folder, ``val_*`` the validation ones
(the official 2017 files by default). With ``val_annotations: null`` a seeded ``val_split`` of the
training images is held out instead, which is how one annotation file alone (say captions_val2017.json)
serves for both. COCO's test captions are not public, so ``test`` and ``predict`` read ``test_*`` when
given, else the validation images. ``predict`` also takes images without captions (a JSON whose
``annotations`` are empty or absent, such as COCO's image_info_test2017.json): it only captions them.
``predict_path`` captions the user's own image files instead (a file, a folder or a glob): each is
resized as the validation images are, and ``predictions.csv`` gives each file's caption.

A partial image folder (the usual state of a COCO download in progress) is an error that counts and
names the missing images; ``skip_missing: true`` trains on the images present and reports the counts.
Each annotation file is checked once when it is read (``check_data``): every caption a non-empty string
whose ``image_id`` is among the file's images, each image id listed once.

Captions are tokenised by ``tokenize`` (lower case, words and numbers, punctuation dropped). The
vocabulary holds ``<pad> <bos> <eos> <unk>`` then the training captions' words seen ``min_count`` times
or more, most frequent first; the model reads it from ``vocabulary``. A batch is a dict, one entry per
image and all of its captions:

- ``images``: ``(B, 3, S, S)``; uint8 on the host, normalised float after the transfer to the device
- ``captions``: ``(N, T)`` int64, every caption of the batch's images, ``<bos> ... <eos>`` then
  ``<pad>``; ``lengths``: ``(N,)`` tokens per caption, ``<bos>`` and ``<eos>`` included
- ``caption_image``: ``(N,)`` the index in ``images`` of each caption's image
- ``references``: per image, its captions tokenised and joined by spaces (BLEU's references)
- ``image_ids``: ``(B,)`` COCO image ids
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CocoCaptions
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from core.domains import (
    CountOrFraction,
    FiniteFloat,
    FolderPath,
    NonEmptyText,
    Pixels,
    PositiveFloat,
    PositiveInt,
    Seed,
    WorkerCount,
    require_at_least,
)
from core.errors import DataConfigError, DataNotFoundError
from datamodules.captions import CaptionBatch, Vocabulary
from datamodules.images import count_or_fraction, held_out_count, open_image, predict_files

ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
IMAGES_URL = "http://images.cocodataset.org/zips/{folder}.zip"
# What annotations_trainval2017.zip holds (under annotations/) and the image archives there are.
OFFICIAL_ANNOTATIONS = ("captions_train2017.json", "captions_val2017.json")
OFFICIAL_IMAGE_FOLDERS = ("train2017", "val2017")
# ImageNet's statistics: what torchvision's pretrained encoders expect, and close enough for COCO.
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MISSING_SHOWN = 5  # missing files named in the error message


class ImageFiles(Dataset):
    """The user's images for ``predict``, decoded and resized once: ``(uint8 image, no captions, index)``
    samples, as ``CaptionedImages`` serves them."""

    def __init__(self, images: list[Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, list[str], int]:
        return self.images[index], [], index


def _is_caption(value: Any) -> bool:
    """A caption is text with a word in it; an empty one would train the model to say nothing."""
    return isinstance(value, str) and bool(value.strip())


class CaptionedImages(Dataset):
    """Some images of a ``CocoCaptions`` dataset: ``(uint8 image, caption strings, image id)``."""

    def __init__(self, coco: CocoCaptions, ids: list[int]) -> None:
        self.coco = coco
        self.ids = ids
        self.position = {image_id: i for i, image_id in enumerate(coco.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, list[str], int]:
        image, captions = self.coco[self.position[self.ids[index]]]
        return image, captions, self.ids[index]

    def captions(self) -> list[str]:
        """Every caption of these images, without reading an image."""
        anns = self.coco.coco.loadAnns(self.coco.coco.getAnnIds(imgIds=self.ids))
        return [ann["caption"] for ann in anns]


class CocoCaptionsDataModule(LightningDataModule):
    """COCO captions JSON + image folder(s) -> batches of resized images with all their captions.

    Args:
        data_dir: Folder the annotation and image paths below are relative to (absolute ones are kept);
            downloaded into with ``download``.
        train_annotations: Training captions JSON file, relative to ``data_dir``.
        train_images: Folder of the training images, relative to ``data_dir``.
        val_annotations: Validation captions JSON file; null holds out ``val_split`` of the training
            images.
        val_images: Folder of the validation images.
        test_annotations: Captions JSON file for ``test`` and ``predict`` (for ``predict`` a JSON of
            images alone will do); null uses the validation images.
        test_images: Folder of the test images (needed with ``test_annotations``).
        val_split: With ``val_annotations: null``: training images held out, a whole count (>= 1) or a
            fraction in (0, 1); it must leave at least one training and one validation image.
        image_size: Images are resized to this square size in pixels (>= 1).
        min_count: Words seen fewer times in the training captions become ``<unk>`` (>= 1).
        skip_missing: Use the images present when some listed in an annotation file are missing
            (their count is reported); by default a missing image is an error.
        batch_size: Images per batch (>= 1; each brings all of its captions, five for most of COCO).
        num_workers: Loader processes that read and resize images (0 to 256).
        seed: Seeds the validation split and the training shuffle (0 to 2**32 - 1).
        mean_std: Per-channel mean (finite) and std (finite, > 0) of the three channels the images are
            normalised with; ImageNet's by default.
        download: Fetch the official 2017 annotations and image archives that are absent (needs the
            internet; ~1 GB for val2017 and the annotations, 18 GB for train2017).
        pin_memory: Pin host batches so copies to a GPU are asynchronous (only when CUDA is available).
        predict_path: Images to caption in ``predict`` instead of the test (or validation) images: an
            image file, a folder of images (every file in it must be one; hidden files are skipped) or
            a glob such as ``'photos/*.jpg'``; any size and mode, resized as the validation images are.
    """

    @classmethod
    def write_sample(cls, root: Path) -> dict[str, Any]:
        """Tests' data: 6 training and 3 validation images, 32x32, two captions each, every word kept."""
        from datamodules._samples import write_coco_captions

        folder = write_coco_captions(root, "annotations/captions_train2017.json", "train2017", 6)
        folder = write_coco_captions(folder, "annotations/captions_val2017.json", "val2017", 3, first_id=100)
        return {"data_dir": str(folder), "image_size": 32, "min_count": 1, "num_workers": 0}

    def __init__(
        self,
        data_dir: FolderPath = "data/coco",
        train_annotations: str = "annotations/captions_train2017.json",
        train_images: str = "train2017",
        val_annotations: str | None = "annotations/captions_val2017.json",
        val_images: str = "val2017",
        test_annotations: str | None = None,
        test_images: str | None = None,
        val_split: CountOrFraction = 0.1,
        image_size: Pixels = 128,
        min_count: PositiveInt = 5,
        skip_missing: bool = False,
        batch_size: PositiveInt = 32,
        num_workers: WorkerCount = 0,
        seed: Seed = 42,
        mean_std: tuple[
            tuple[FiniteFloat, FiniteFloat, FiniteFloat], tuple[PositiveFloat, PositiveFloat, PositiveFloat]
        ] = IMAGENET_MEAN_STD,
        download: bool = False,
        pin_memory: bool = True,
        predict_path: NonEmptyText | None = None,
    ) -> None:
        super().__init__()
        # The parser enforces the domains for the command; these keep a plain-Python caller safe too.
        require_at_least("data", 1, batch_size=batch_size, image_size=image_size, min_count=min_count)
        require_at_least("data", 0, num_workers=num_workers)
        val_split = count_or_fraction(val_split, "--data.val_split")
        if not all(s > 0 for s in mean_std[1]):
            raise DataConfigError(f"--data.mean_std: the stds {list(mean_std[1])} must all be > 0")
        if test_annotations is not None and test_images is None:
            raise DataConfigError("test_annotations needs test_images: set --data.test_images <folder>")
        self.data_dir = Path(data_dir)
        self.sources = {
            "train": (train_annotations, train_images),
            "val": (val_annotations, val_images) if val_annotations is not None else None,
            "test": (test_annotations, test_images) if test_annotations is not None else None,
        }
        self.val_split = val_split
        self.image_size = image_size
        self.min_count = min_count
        self.skip_missing = skip_missing
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.mean_std = mean_std
        self.download = download
        self.pin_memory = pin_memory
        self.predict_path = predict_path
        #: each predicted image's file (the user's) or COCO file name, in order: predictions.csv's rows
        self.predict_names: list[str] = []
        self.splits: dict[str, CaptionedImages | ImageFiles] = {}
        #: per annotation file read: (images found, images skipped because missing)
        self.image_counts: dict[str, tuple[int, int]] = {}
        self._vocabulary: Vocabulary | None = None
        self._mean: Tensor | None = None
        self._std: Tensor | None = None

    # --- files ----------------------------------------------------------------------------------------
    def _paths(self, source: tuple[str, str]) -> tuple[Path, Path]:
        annotations, images = source
        return self.data_dir / annotations, self.data_dir / images

    def _all_sources(self) -> list[tuple[str, str]]:
        return [s for s in self.sources.values() if s is not None]

    def prepare_data(self) -> None:
        # Lightning calls this once per node before setup: the place to download.
        if not self.download:
            return
        for source in self._all_sources():
            annotations, images = self._paths(source)
            if not annotations.is_file():
                if annotations.name not in OFFICIAL_ANNOTATIONS or annotations.parent.name != "annotations":
                    raise DataNotFoundError(
                        f"{annotations} is absent and not an official COCO 2017 captions file, so "
                        f"download cannot fetch it; official: annotations/{'|'.join(OFFICIAL_ANNOTATIONS)}"
                    )
                download_and_extract_archive(ANNOTATIONS_URL, str(annotations.parent.parent))
            if not images.is_dir():
                if images.name not in OFFICIAL_IMAGE_FOLDERS:
                    raise DataNotFoundError(
                        f"image folder {images} is absent and not an official COCO 2017 folder "
                        f"({', '.join(OFFICIAL_IMAGE_FOLDERS)}), so download cannot fetch it"
                    )
                download_and_extract_archive(IMAGES_URL.format(folder=images.name), str(images.parent))

    def _missing(self, path: Path, what: str, archive: str, into: Path) -> DataNotFoundError:
        return DataNotFoundError(
            f"COCO {what} not found: {path} (data_dir={self.data_dir}); get {archive} and extract it into "
            f"{into}, or set --data.download true (needs the internet), or point --data.data_dir and the "
            "annotation and image options at your copy"
        )

    def _read(self, source: tuple[str, str], captioned_only: bool = True) -> CaptionedImages:
        """The images of one annotation file (those with captions, if ``captioned_only``) that are
        present; a missing one is an error unless ``skip_missing``."""
        annotations, folder = self._paths(source)
        if not annotations.is_file():
            raise self._missing(annotations, "captions file", ANNOTATIONS_URL, annotations.parent.parent)
        if not folder.is_dir():
            official = folder.name if folder.name in OFFICIAL_IMAGE_FOLDERS else "{train2017,val2017}"
            raise self._missing(folder, "image folder", IMAGES_URL.format(folder=official), folder.parent)
        transform = self.transform()
        try:
            # pycocotools prints its progress ("loading annotations into memory...") on stdout.
            with contextlib.redirect_stdout(io.StringIO()):
                coco = CocoCaptions(str(folder), str(annotations), transform=transform)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AssertionError) as error:
            raise DataConfigError(
                f"{annotations} is not a COCO captions JSON (an object with 'images' and 'annotations' "
                f"lists): {type(error).__name__}: {error}"
            ) from error
        index = coco.coco
        self.check_data(annotations, index)
        captioned = [i for i in coco.ids if index.imgToAnns.get(i) or not captioned_only]
        if not captioned:
            raise DataConfigError(f"{annotations} lists no image with a caption")
        missing = [i for i in captioned if not (folder / index.imgs[i]["file_name"]).is_file()]
        if missing and not self.skip_missing:
            names = ", ".join(index.imgs[i]["file_name"] for i in missing[:MISSING_SHOWN])
            more = ", ..." if len(missing) > MISSING_SHOWN else ""
            raise DataNotFoundError(
                f"{len(missing)} of the {len(captioned)} images of {annotations.name} are missing from "
                f"{folder} ({names}{more}): add them, or set --data.skip_missing true to use the "
                f"{len(captioned) - len(missing)} present"
            )
        absent = set(missing)
        present = [i for i in captioned if i not in absent]
        if not present:
            raise DataNotFoundError(
                f"none of the {len(captioned)} images of {annotations.name} is in {folder}: check "
                "--data.data_dir and the image folder option"
            )
        self.image_counts[str(annotations)] = (len(present), len(missing))
        rank_zero_info(
            f"COCO captions {annotations.name}: {len(present)} images found in {folder}, "
            f"{len(missing)} skipped (missing)"
        )
        return CaptionedImages(coco, present)

    def transform(self) -> v2.Transform:
        """What a PIL image becomes before batching: squashed to ``image_size`` square, uint8 tensor."""
        return v2.Compose([v2.Resize((self.image_size, self.image_size)), v2.PILToTensor()])

    def read_predict_files(self) -> ImageFiles:
        """The images of ``predict_path``, decoded once (a file that is not an image is an error naming
        it before any batch) and transformed as COCO's are; ``predict_names`` their names."""
        assert self.predict_path is not None
        files = predict_files(self.predict_path)
        transform = self.transform()
        images = [transform(open_image(path, "RGB")) for path, _ in files]
        self.predict_names = [name for _, name in files]
        return ImageFiles(images)

    def check_data(self, annotations: Path, index: Any) -> None:
        """Raise ``DataConfigError`` naming the file, the entry and the value unless every annotation of
        ``index`` (pycocotools' ``COCO`` of ``annotations``) has a caption that is a non-empty string and
        an ``image_id`` among the file's images, and no image id is listed twice (pycocotools would keep
        the last silently). Set operations and one pass over the captions, once per file read; the first
        bad entry is looked for only on failure."""
        images = index.dataset.get("images", [])
        if len(index.imgs) != len(images):
            seen: set[Any] = set()
            for position, image in enumerate(images):
                if image["id"] in seen:
                    raise DataConfigError(
                        f"{annotations}: images[{position}] has id {image['id']!r}, as an earlier image "
                        "has: give every image its own id"
                    )
                seen.add(image["id"])
        anns = index.dataset.get("annotations", [])
        if {ann["image_id"] for ann in anns} - index.imgs.keys():
            position, ann = next((i, a) for i, a in enumerate(anns) if a["image_id"] not in index.imgs)
            raise DataConfigError(
                f"{annotations}: annotations[{position}] (id {ann.get('id')!r}) is for image_id "
                f"{ann['image_id']!r}, which is not among the file's {len(index.imgs)} images: remove it, "
                "or add its image to 'images'"
            )
        if not all(_is_caption(ann.get("caption")) for ann in anns):
            position, ann = next((i, a) for i, a in enumerate(anns) if not _is_caption(a.get("caption")))
            raise DataConfigError(
                f"{annotations}: annotations[{position}] (id {ann.get('id')!r}, image_id "
                f"{ann['image_id']!r}) has caption {ann.get('caption')!r}, expected a non-empty string: "
                "write its caption, or remove it"
            )

    # --- splits ---------------------------------------------------------------------------------------
    def _held_out(self, n: int) -> int:
        count = held_out_count(self.val_split, n)
        if not 1 <= count < n:
            raise DataConfigError(
                f"val_split={self.val_split:g} of {n} training images leaves no validation or no training "
                "images: set --data.val_split to a count between 1 and "
                f"{n - 1}, or give --data.val_annotations"
            )
        return count

    def _load_train_val(self) -> None:
        train = self._read(self.sources["train"])
        if self.sources["val"] is not None:
            self.splits["train"], self.splits["val"] = train, self._read(self.sources["val"])
            return
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(train.ids), generator=generator).tolist()
        n_val = self._held_out(len(order))
        self.splits["val"] = CaptionedImages(train.coco, sorted(train.ids[i] for i in order[:n_val]))
        self.splits["train"] = CaptionedImages(train.coco, sorted(train.ids[i] for i in order[n_val:]))

    def setup(self, stage: str) -> None:
        # Every stage needs the training split: the vocabulary is made of its captions.
        if "train" not in self.splits:
            self._load_train_val()
        if stage == "predict" and self.predict_path is not None and "predict" not in self.splits:
            self.splits["predict"] = self.read_predict_files()
        for split in ("test", "predict"):
            if stage == split and split not in self.splits:
                source = self.sources["test"]
                captioned_only = split == "test"  # BLEU needs references; captioning does not
                self.splits[split] = self._read(source, captioned_only) if source else self.splits["val"]
        if stage == "predict" and self.predict_path is None:
            images = self.splits["predict"]
            self.predict_names = [images.coco.coco.imgs[i]["file_name"] for i in images.ids]

    def _built_vocabulary(self) -> Vocabulary:
        if self._vocabulary is None:
            if "train" not in self.splits:
                self._load_train_val()
            self._vocabulary = Vocabulary.build(self.splits["train"].captions(), self.min_count)
        return self._vocabulary

    @property
    def vocabulary(self) -> list[str]:
        """Every token, index = id: ``<pad> <bos> <eos> <unk>``, then the training captions' words."""
        return self._built_vocabulary().words

    # --- loaders --------------------------------------------------------------------------------------
    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Batches of ``split`` (train, val, test or predict); in file order unless ``shuffle``.

        On several processes Lightning gives a training loader a ``DistributedSampler``; an evaluation
        loader gets one that does not repeat images to even out the shards (Lightning's default would,
        and a repeated image would count twice in val/bleu4), unless there are fewer images than
        processes, when every process still needs a batch.
        """
        dataset = self.splits[split]
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        sampler = None
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1 and not shuffle and len(dataset) >= world:
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=world, rank=self.trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            generator=generator,
            collate_fn=CaptionBatch(self._built_vocabulary()),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("predict")

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """uint8 images -> normalised float, on the batch's device."""
        images = batch["images"]
        if self._mean is None or self._mean.device != images.device:
            self._mean = torch.tensor(self.mean_std[0], device=images.device).view(1, -1, 1, 1)
            self._std = torch.tensor(self.mean_std[1], device=images.device).view(1, -1, 1, 1)
        return {**batch, "images": (images.float().div_(255) - self._mean) / self._std}
