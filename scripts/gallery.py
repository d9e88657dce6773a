"""The README's pictures: one figure per lesson from a short real run on the real data, written small to
``docs/images/<image>.png``. They are the one kind of generated output the repository commits.

    python scripts/gallery.py --data <folder>            # every lesson whose data is there (make gallery)
    python scripts/gallery.py --data <folder> --only mnist_convnet

``<folder>`` has the layout of the project's offline data copy (``MNIST/raw``, ``cifar10_jpg.tar.gz``,
``faces/``, ``sst/``, ``text/``, ``coco/``, ``boston_housing.csv``). Each entry of ``SHOTS`` says which
config runs with which budget (a few epochs or batches: the whole gallery took 25 minutes on 2 CPU cores
shared with other jobs, load average 8-22), and which picture of the run becomes the image: a PNG the
lesson writes into its run folder (``figures/<name>.png``) or an image it logs to TensorBoard only
(``tensorboard:<tag>``). The runs go to a temporary folder (``--keep DIR`` keeps them there instead).
Each picture is scaled and quantised to at most ``MAX_BYTES`` (about 100 KB) and the whole folder must
stay under ``MAX_TOTAL``. A lesson whose data is missing under ``--data``, or that draws no picture yet,
is skipped with a line saying why.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
MAX_BYTES = 100_000  # one image
MAX_TOTAL = 2_000_000  # docs/images/ in all
MAX_WIDTH = 640  # pixels: the README shows 240; this stays sharp on a dense screen and when opened


@dataclass(frozen=True)
class Shot:
    """One README image: the run that makes it and the picture taken from that run.

    ``figure`` is the PNG's name in the run's ``figures/`` folder, ``tensorboard:<tag>`` for an image the
    run logs to TensorBoard only (the first tag starting with ``<tag>``), or None while the lesson draws
    nothing (the image is skipped). ``flags`` follow the config on the command line; ``{data}`` in them is
    the ``--data`` folder and ``{cifar}`` a class-per-folder extract of its CIFAR-10 JPEGs. ``needs`` are
    the paths under ``--data`` the run reads. Shots with the same ``config``, ``command`` and ``flags`` share
    one run, in the same folder as all the others."""

    image: str
    config: str
    figure: str | None
    flags: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    command: tuple[str, ...] = ("fit",)
    budget: str = "as configured"
    shows: str = ""
    after: str | None = None  # the image whose run this one reads (a checkpoint): run first if not yet

    def args(self, data: Path, cifar: Path | None) -> list[str]:
        values = {"data": str(data), "cifar": str(cifar)}
        return [flag.format(**values) for flag in self.flags]

    @property
    def run_key(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        return self.config, self.command, self.flags


MNIST = ("MNIST/raw",)
MNIST_CONVNET_FLAGS = (
    "--data.data_dir", "{data}",
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "60", "--trainer.limit_val_batches", "10",
)  # fmt: skip
#: The README's images, in the order they are made (feature_extraction reads mnist_convnet's checkpoint).
SHOTS: tuple[Shot, ...] = (
    Shot(
        "linear_regression", "linear_regression", "fit_after_training",
        shows="the 256 noisy points of y = 2x + 3 and the fitted line after training",
    ),
    Shot(
        "sine_rnn", "sine_rnn", "predictions",
        shows="the sine wave's points and the hand-made recurrent cell's next-point predictions",
    ),
    Shot(
        "logistic_regression", "logistic_regression", "confusion_matrix",
        flags=(
            "--data.data_dir", "{data}", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "100",
        ),
        needs=MNIST, budget="100 of an epoch's 430 batches (of 10 epochs)",
        shows="the confusion matrix of softmax regression on the 5,000 validation digits",
    ),
    Shot(
        "mnist_convnet", "mnist_convnet", "val_predictions", flags=MNIST_CONVNET_FLAGS, needs=MNIST,
        budget="60 of an epoch's 430 batches of 128, 10 validation batches",
        shows="validation digits titled true / predicted, mistakes in red",
    ),
    Shot(
        "visualize", "mnist_convnet", "confusion_matrix", flags=MNIST_CONVNET_FLAGS, needs=MNIST,
        budget="the mnist_convnet run above",
        shows="the MNIST convnet's confusion matrix on its 1,280 validation digits",
    ),
    Shot(
        "simple_cnn", "simple_cnn", "tensorboard:train/inputs",
        flags=(
            "--data", "ImageFolderDataModule", "--data.data_dir", "{cifar}", "--data.val_split", "500",
            "--data.random_crop_padding", "4", "--data.horizontal_flip", "true",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5",
            "--trainer.limit_val_batches", "2",
        ),
        needs=("cifar10_jpg.tar.gz",),
        budget="5 batches of an extract of the JPEG copy (500 training and 100 test images a class)",
        shows="the first training batch of CIFAR-10 as the loader yields it, before augmentation",
    ),
    Shot(
        "face_landmarks", "face_landmarks", "val_landmarks",
        flags=("--data.data_dir", "{data}/faces", "--trainer.max_epochs", "20"), needs=("faces",),
        budget="20 of 150 epochs (7.6 s each on 2 idle cores)",
        shows="held-out faces with the predicted landmarks",
    ),
    Shot(
        "boston_housing", "boston_housing", "val_predicted_vs_actual",
        shows="the Boston MLP's predicted against actual prices on the 76 validation rows",
    ),
    Shot(
        "first_network", "first_network", "loss_curve",
        shows="the tutorial's first network: the training loss per epoch, falling slowly",
    ),
    Shot(
        "scratch_network", "scratch_network", "loss_curve",
        shows="the hand-written backward pass: the loss of its 1,000 updates, on a log scale",
    ),
    Shot(
        "tree_lstm", "tree_lstm", "confusion_matrix",
        flags=(
            "--data.data_dir", "{data}/sst", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "40", "--trainer.limit_val_batches", "20",
        ),
        needs=("sst",), budget="40 of an epoch's 342 batches of 25 trees; 500 dev trees",
        shows="the Tree-LSTM's root sentiment on the dev trees, true against predicted (5 classes)",
    ),
    Shot(
        "word2vec", "word2vec", "neighbours",
        flags=("--data.path", "{data}/text/tinyshakespeare.txt", "--trainer.max_epochs", "1"),
        needs=("text/tinyshakespeare.txt",), budget="1 epoch of tinyshakespeare",
        shows="the nearest neighbours of a few probe words in the trained vectors",
    ),
    Shot(
        "coco_captions", "coco_captions", "val_captions",
        flags=(
            "--data.data_dir", "{data}/coco", "--data.train_annotations", "annotations/captions_val2017.json",
            "--data.train_images", "val2017", "--data.val_annotations", "null", "--data.val_split", "2",
            "--data.min_count", "1", "--data.skip_missing", "true", "--data.num_workers", "0",
            "--model.dropout", "0", "--trainer.max_epochs", "40",
        ),
        needs=("coco",), budget="40 epochs on the 12 images of the copy, 2 held out",
        shows="held-out COCO images with the generated and a reference caption",
    ),
    Shot(
        "feature_extraction", "feature_extraction", "features",
        flags=("--data.data_dir", "{data}", "--trainer.limit_predict_batches", "1"),
        command=("predict", "--ckpt_path", "last"), needs=MNIST, after="mnist_convnet",
        budget="one batch of test digits, through the mnist_convnet run's checkpoint",
        shows="a test digit's conv_1 and conv_2 feature maps, through the mnist_convnet run's checkpoint",
    ),
)  # fmt: skip
#: Configs that get no image of their own, and why.
SKIPPED: dict[str, str] = {
    "boston_housing_linear": "the README's Boston row shows boston_housing's figure",
}


def configs() -> list[str]:
    """The lessons' configs: every ``configs/*.yaml`` (the trainer presets and sweeps are in folders)."""
    return sorted(path.stem for path in (ROOT / "configs").glob("*.yaml"))


def shrink(png: bytes, max_bytes: int = MAX_BYTES, max_width: int = MAX_WIDTH) -> bytes:
    """``png`` as a PNG of at most ``max_bytes``: at most ``max_width`` pixels wide, quantised to a palette
    of 256 colours (figures have few colours, photographs lose little at this size), narrower and with
    fewer colours only as far as the budget needs."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width = min(image.width, max_width)
    while True:
        height = max(1, round(image.height * width / image.width))
        scaled = image if width == image.width else image.resize((width, height), Image.Resampling.LANCZOS)
        for colors in (256, 64):
            buffer = io.BytesIO()
            scaled.quantize(colors=colors, method=Image.Quantize.FASTOCTREE).save(
                buffer, "PNG", optimize=True
            )
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        # The bytes follow the pixel count: narrow by the square root of the excess, at least 10 %.
        width = int(width * min(0.9, 0.95 * (max_bytes / buffer.tell()) ** 0.5))
        if width < 64:
            raise ValueError(f"a {image.width}x{image.height} image does not fit in {max_bytes} bytes")


def extract_cifar(archive: Path, folder: Path, train_per_class: int = 500, test_per_class: int = 100) -> Path:
    """The first ``train_per_class`` / ``test_per_class`` JPEGs of each class of the CIFAR-10 archive
    (``<split>/<class>/*.jpg`` inside), in ``folder``: enough for a picture, a fraction of the decoding."""
    limits, taken = {"train": train_per_class, "test": test_per_class}, {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            split = next((i for i, part in enumerate(parts) if part in limits), None)
            if not member.isfile() or split is None or len(parts) != split + 3:
                continue
            key = parts[split : split + 2]
            if taken.get(key, 0) >= limits[parts[split]]:
                continue
            taken[key] = taken.get(key, 0) + 1
            target = folder.joinpath(*parts[split:])
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    if not taken:
        raise ValueError(f"{archive} holds no train/<class>/*.jpg files")
    return folder


def newest_png(logs: Path, name: str, since: float) -> bytes | None:
    """The ``figures/<name>.png`` written under ``logs`` since ``since`` (the newest, if several)."""
    found = [p for p in logs.rglob(f"figures/{name}.png") if p.stat().st_mtime >= since]
    return max(found, key=lambda p: p.stat().st_mtime).read_bytes() if found else None


def tensorboard_image(logs: Path, tag: str, since: float) -> bytes | None:
    """The last image logged under the first tag starting with ``tag``, in the event files written under
    ``logs`` since ``since``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for events in sorted(logs.rglob("events.out.tfevents.*"), key=lambda p: -p.stat().st_mtime):
        if events.stat().st_mtime < since:
            continue
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        tags = sorted(t for t in accumulator.Tags()["images"] if t.startswith(tag))
        if tags:
            return accumulator.Images(tags[0])[-1].encoded_image_string
    return None


def picture(shot: Shot, logs: Path, since: float) -> bytes | None:
    assert shot.figure is not None
    if shot.figure.startswith("tensorboard:"):
        return tensorboard_image(logs, shot.figure.removeprefix("tensorboard:"), since)
    return newest_png(logs, shot.figure, since)


def missing(shot: Shot, data: Path | None) -> str | None:
    """Why ``shot`` cannot run with this ``--data``, or None."""
    if shot.figure is None:
        return "the lesson draws no picture yet (name its PNG in scripts/gallery.py's SHOTS)"
    if shot.needs and data is None:
        return f"needs {', '.join(shot.needs)} under --data"
    absent = [need for need in shot.needs if data is not None and not (data / need).exists()]
    return f"{', '.join(str(data / a) for a in absent)} missing" if absent else None


def run(shot: Shot, args: list[str], workdir: Path) -> tuple[bool, float, str]:
    """The lesson's command in ``workdir`` (its ``lightning_logs/`` there): success, seconds, log tail."""
    command = [
        sys.executable,
        "-m",
        "experiments",
        *shot.command,
        "--config",
        str(ROOT / "configs" / f"{shot.config}.yaml"),
    ]
    command += [*args, "--trainer.enable_progress_bar", "false"]
    started = time.perf_counter()
    with open(workdir / f"{shot.image}.log", "w") as log:
        done = subprocess.run(
            command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
    tail = (workdir / f"{shot.image}.log").read_text(errors="replace").strip().splitlines()[-3:]
    return done.returncode == 0, time.perf_counter() - started, "\n    ".join(tail)


def make(shots: list[Shot], data: Path | None, workdir: Path, out: Path, say: Callable[[str], None]) -> int:
    """Runs what ``shots`` need and writes their images to ``out``; the number of failures."""
    failures, done_runs = 0, {}
    cifar: Path | None = None
    for shot in shots:
        why = missing(shot, data)
        if why:
            say(f"skipped {shot.image}: {why}")
            continue
        assert shot.figure is not None
        if "{cifar}" in " ".join(shot.flags) and cifar is None:
            assert data is not None
            cifar = extract_cifar(data / "cifar10_jpg.tar.gz", workdir / "cifar10_jpg")
        before = [other for other in SHOTS if other.image == shot.after and other.run_key not in done_runs]
        for other in [*before, shot]:
            if other.run_key in done_runs:
                continue
            since = time.time() - 1  # file times may be coarser than the clock
            ok, seconds, tail = run(other, other.args(data or Path("."), cifar), workdir)
            done_runs[other.run_key] = since if ok else None
            if ok:
                say(f"ran {other.command[0]} {other.config} ({other.budget}) in {seconds:.0f} s")
            else:
                say(f"`{other.command[0]} {other.config}` failed after {seconds:.0f} s:\n    {tail}")
        since = done_runs[shot.run_key]
        if since is None or any(done_runs.get(o.run_key, 0) is None for o in SHOTS if o.image == shot.after):
            failures += 1
            say(f"failed {shot.image}: its run failed (above)")
            continue
        png = picture(shot, workdir / "lightning_logs", since)
        if png is None:
            failures += 1
            say(f"failed {shot.image}: the run wrote no {shot.figure!r} (look in {workdir})")
            continue
        small = shrink(png)
        (out / f"{shot.image}.png").write_bytes(small)
        say(f"wrote {out / f'{shot.image}.png'}: {len(small):,} bytes, {shot.shows}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, help="the folder of the real datasets (the offline copy's layout)"
    )
    parser.add_argument("--only", nargs="+", metavar="IMAGE", help="make only these images")
    parser.add_argument("--out", type=Path, default=IMAGES, help=f"where the images go (default {IMAGES})")
    parser.add_argument(
        "--keep", type=Path, help="run in this folder and keep the runs (default: a temporary one)"
    )
    options = parser.parse_args(argv)
    names = [shot.image for shot in SHOTS]
    unknown = sorted(set(options.only or []) - set(names))
    if unknown:
        parser.error(f"--only: no image named {', '.join(unknown)}; the images are {', '.join(names)}")
    if options.data is not None and not options.data.is_dir():
        parser.error(f"--data {options.data}: not a folder")
    data = options.data.resolve() if options.data else None
    shots = [shot for shot in SHOTS if options.only is None or shot.image in options.only]
    options.out.mkdir(parents=True, exist_ok=True)
    if options.keep:
        options.keep.mkdir(parents=True, exist_ok=True)
        failures = make(shots, data, options.keep.resolve(), options.out, print)
    else:
        with tempfile.TemporaryDirectory(prefix="gallery_") as folder:
            failures = make(shots, data, Path(folder), options.out, print)
    sizes = {path.name: path.stat().st_size for path in sorted(options.out.glob("*.png"))}
    total = sum(sizes.values())
    print(f"{options.out}: {len(sizes)} images, {total:,} bytes")
    if total > MAX_TOTAL:
        print(f"error: {options.out} holds {total:,} bytes, over the {MAX_TOTAL:,} allowed", file=sys.stderr)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
