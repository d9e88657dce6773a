"""Figures and images into TensorBoard (and PNG files in the run folder), drawn by global rank 0 off the
training path.

They are drawn when a logger can take them (``IMAGE_LOGGERS``): TensorBoard keeps each as an image at its
step, and the figures given a file name also as ``figures/<name>.png`` in the run folder; with MLflow,
whose run folder is the run's artifact folder, every figure and image is such a file
(``figures/<name or tag>.png``, the latest of each), an image in the run's Artifacts tab. Without such a
logger (none, CSV, ``fast_dev_run``) nothing is drawn.

A figure callback gathers what it shows on the training thread (every rank takes part: see
``core.distributed``), then hands rank 0's copy and a drawing function to ``log_figure`` (or an image
to ``add_image``). Drawing with matplotlib and encoding PNGs is the slow part (tenths of a second for a
grid of 32 panels), so while a run's ``FigureThread`` callback is active it happens on one background
thread, under a budget:

- figures are never queued: one still waiting to be drawn is replaced by a newer one of its tag;
- past the first of each tag, a figure is drawn only while drawing has taken at most ``max_share`` of
  the run's wall time so far (default 5 %); one that would exceed it is held, and the newest held one
  of each tag is drawn when the stage ends. So the last epoch's figures are always there, early ones
  appear during training, and a lesson whose epochs take milliseconds gets a figure now and then
  instead of being slowed down 50-fold. ``--figures.background false`` draws every figure, in line.

Without an active ``FigureThread`` (callbacks used with a bare ``Trainer``) figures are drawn at once.
Drawing uses matplotlib's object API (``new_figure``), never pyplot's global state, so it is safe off the
main thread; matplotlib is imported on first use, so loading the command (``--help``) never pays for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from core.distributed import run_dir
from core.domains import Share


def new_figure(figsize: tuple[float, float], **kwargs: Any) -> Any:
    """A matplotlib ``Figure`` with an Agg canvas, made without pyplot (safe on any thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(figure)
    return figure


#: The loggers that take figures: TensorBoard as images, MLflow as PNG files among its run's artifacts.
IMAGE_LOGGERS = (TensorBoardLogger, MLFlowLogger)


def logs_images(trainer: Trainer) -> bool:
    """Whether this run has a logger that takes figures (``IMAGE_LOGGERS``); the same answer on every
    rank (decided by the loggers' types, not by rank 0's run folder)."""
    # fast_dev_run swaps the loggers for a DummyLogger, so the type check alone covers it; said
    # explicitly because drawing for a smoke run is wasted time.
    return not trainer.fast_dev_run and any(isinstance(lg, IMAGE_LOGGERS) for lg in trainer.loggers)


def files_every_figure(trainer: Trainer) -> bool:
    """Whether every figure and image is also a PNG file in the run folder: with MLflow, where files are
    what its UI shows (TensorBoard shows them from its own log)."""
    return not trainer.fast_dev_run and any(isinstance(lg, MLFlowLogger) for lg in trainer.loggers)


def draws_this_validation(trainer: Trainer) -> bool:
    """Whether a validation epoch's figures are drawn: not during the sanity check, and only when the run
    has a logger that takes them. The same answer on every rank, so callbacks that gather may rely on
    it."""
    return not trainer.sanity_checking and logs_images(trainer)


class FigureWorker:
    """One background thread that runs drawing jobs, at most one waiting per tag, under a time budget
    (see the module docstring). ``flush`` draws what was held back and waits for everything."""

    def __init__(self, max_share: float = 0.05) -> None:
        self.max_share = max_share
        self._lock = threading.Condition()
        self._waiting: dict[str, Callable[[], None]] = {}  # submitted, to run in order of submission
        self._held: dict[str, Callable[[], None]] = {}  # over the budget: the newest of each tag
        self._seen: set[str] = set()
        self._running = False
        self._closed = False
        self._started = time.perf_counter()
        self.busy = 0.0  # seconds spent drawing
        self.drawn = 0
        self.replaced = 0  # jobs dropped for a newer one of the same tag
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="figures", daemon=True)
        self._thread.start()

    def submit(self, tag: str, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                return
            elapsed = time.perf_counter() - self._started
            first = tag not in self._seen
            self._seen.add(tag)
            if not first and self.busy > self.max_share * elapsed:
                self.replaced += tag in self._held
                self._held[tag] = job
                return
            self._held.pop(tag, None)
            self.replaced += tag in self._waiting
            self._waiting.pop(tag, None)  # re-inserted last: its turn comes after the others
            self._waiting[tag] = job
            self._lock.notify_all()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if not self._waiting:
                    return
                tag = next(iter(self._waiting))
                job = self._waiting.pop(tag)
                self._running = True
            start = time.perf_counter()
            try:
                job()
            except Exception as error:  # a figure must never end a run; it is reported at the flush
                self.errors.append(f"{tag}: {type(error).__name__}: {error}")
            with self._lock:
                self.busy += time.perf_counter() - start
                self.drawn += 1
                self._running = False
                self._lock.notify_all()

    def flush(self) -> None:
        """Draw the figures held back by the budget and wait until every figure is written."""
        with self._lock:
            for tag, job in self._held.items():
                self._waiting.pop(tag, None)
                self._waiting[tag] = job
            self._held.clear()
            self._lock.notify_all()
            while self._waiting or self._running:
                self._lock.wait()

    def close(self, drop: bool = False) -> None:
        """Stop the thread: after drawing everything (``flush``), or dropping what has not started."""
        if drop:
            with self._lock:
                self._waiting.clear()
                self._held.clear()
        else:
            self.flush()
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join()


_worker: FigureWorker | None = None


def figure_worker() -> FigureWorker | None:
    """The active background worker of this process, if a ``FigureThread`` started one."""
    return _worker


def _later(tag: str, job: Callable[[], None]) -> None:
    worker = _worker
    if worker is None:
        job()
    else:
        worker.submit(tag, job)


def _tensorboards(trainer: Trainer) -> list[Any]:
    # Read on the training thread: `experiment` creates the writer on first use.
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def encode_png(image: Any) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 array. Encoded once for TensorBoard and the file alike, at
    zlib level 1: a third of the time of the default level, for files a little larger."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def add_png(writer: Any, tag: str, png: bytes, shape: tuple[int, ...], step: int) -> None:
    """Put encoded PNG bytes in a TensorBoard ``SummaryWriter`` as an image, as its ``add_image`` does
    after encoding (which would encode the pixels a second time)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width, channels = shape
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def write_png(folder: Path, name: str, png: bytes) -> None:
    """Write PNG bytes as the run folder's ``figures/<name>.png`` (a tag's ``/`` makes sub-folders)."""
    path = folder / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def image_pixels(image: Tensor) -> Any:
    """An ``(H, W, C)`` uint8 array (``(H, W)`` for one channel) of a ``(C, H, W)`` image, uint8 or float
    in [0, 1], as TensorBoard's ``add_image`` scales it."""
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = image.permute(1, 2, 0).numpy()
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


@rank_zero_only
def add_image(trainer: Trainer, tag: str, image: Tensor) -> None:
    """Put a ``(C, H, W)`` image (uint8, or float in [0, 1]) in every TensorBoard log of the run, and with
    MLflow in the run folder's ``figures/<tag>.png`` (PNG encoding happens on the figure thread when
    there is one)."""
    writers, step, image = _tensorboards(trainer), trainer.global_step, image.detach().cpu()
    folder = run_dir(trainer) if files_every_figure(trainer) else None

    def job() -> None:
        for writer in writers:
            writer.add_image(tag, image, global_step=step)
        if folder is not None:
            write_png(folder, tag, encode_png(image_pixels(image)))

    _later(tag, job)


@rank_zero_only
def log_figure(trainer: Trainer, draw: Callable[[], Any], tag: str, png_name: str | None = None) -> None:
    """Draw the figure ``draw()`` returns (a ``new_figure``) into TensorBoard under ``tag`` and, if
    ``png_name``, the run's ``figures/<png_name>.png`` (with MLflow always a file: ``figures/<tag>.png``
    without a ``png_name``): on the figure thread when one is active.

    ``draw`` runs later, on another thread: it must use only what it was given (CPU tensors and plain
    values captured now), never the module or the trainer. The figure is rendered once and the same
    pixels go to both outputs.
    """
    writers, step = _tensorboards(trainer), trainer.global_step
    folder = run_dir(trainer) if png_name or files_every_figure(trainer) else None

    def job() -> None:
        import numpy as np

        figure = draw()
        figure.canvas.draw()
        image = np.asarray(figure.canvas.buffer_rgba())[..., :3]
        png = encode_png(image)
        for writer in writers:
            add_png(writer, tag, png, image.shape, step)
        if folder is not None:
            write_png(folder, png_name or tag, png)

    _later(tag, job)


class FigureThread(Callback):
    """Draws the run's figures on a background thread under a time budget (see the module docstring),
    on global rank 0. The command adds it to every run: ``--figures.max_share``,
    ``--figures.background``.

    Args:
        max_share: The share of the run's wall time, in (0, 1], that drawing may take before figures
            past the first of each tag are held back until the stage ends (1.0: no budget; a figure still
            waiting is replaced by a newer one all the same).
        background: Draw on the background thread; false draws each figure at once on the training
            thread, as a plain ``Trainer`` without this callback does.
    """

    def __init__(self, max_share: Share = 0.05, background: bool = True) -> None:
        if not 0 < max_share <= 1:
            raise ValueError(f"max_share must be in (0, 1], got {max_share}")
        self.max_share = max_share
        self.background = background

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        global _worker
        if self.background and trainer.is_global_zero and _worker is None:
            _worker = FigureWorker(self.max_share)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Before the loggers are closed (Lightning calls teardown hooks first).
        self._stop(drop=False)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stop(drop=True)

    def _stop(self, drop: bool) -> None:
        global _worker
        worker, _worker = _worker, None
        if worker is None:
            return
        worker.close(drop=drop)
        for error in worker.errors:
            rank_zero_warn(f"a figure could not be drawn: {error}")
