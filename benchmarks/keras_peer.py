"""One MNIST epoch of the convnet chapter's Keras model (Keras 3, torch backend) against our lesson.

    make bench-keras DATA=<folder holding MNIST/raw>       # installs keras into .venv if it is missing
    .venv/bin/python benchmarks/keras_peer.py --data-dir <folder holding MNIST/raw> \
        [--repeats 1] [--threads T] [--no-keras-shifts]

Keras is not a dependency of the project: it is installed only for this benchmark (``make bench-keras``
does it); without it the script says so in one line and exits with status 2. The script sets
``KERAS_BACKEND=torch`` before importing keras, so both sides run on the same torch, on the CPU, with
the same ``torch.set_num_threads`` (``--threads``; default: torch's own choice).

Both sides train one epoch on the same data in this process, then are tested on the 10,000 test images:

- ours: the real command path of ``configs/mnist_convnet.yaml``, in-process:
  ``ExperimentCLI(args=["--config", ..., "--data.data_dir", <dir>, "--trainer.max_epochs", "1",
  progress bar and model summary off], run=False)``; timed is ``cli.trainer.fit(cli.model,
  cli.datamodule)``, which is everything the lesson does in an epoch: reading MNIST into memory
  (``setup``), Lightning's two-batch validation sanity check, 430 training steps of 128 images (the
  55,000 left by ``val_split: 5000``) with ±2-pixel random shifts (``random_crop_padding: 2``), the
  validation pass over the 5,000 held-out images, TensorBoard logging, checkpointing and the lesson's
  four figure callbacks (inputs, predictions, filters, confusion matrix). Test accuracy is
  ``test/acc`` of ``cli.trainer.test(cli.model, cli.datamodule)`` (the weights after the epoch).
- Keras: the classic keras examples ``mnist_cnn`` model, Conv2D(32, 3, relu) -> Conv2D(64, 3, relu)
  -> MaxPooling2D(2) -> Dropout(0.25) -> Flatten -> Dense(128, relu) -> Dropout(0.5) -> Dense(10,
  softmax), categorical cross-entropy, ``Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-7)`` (the
  settings our config gives ``torch.optim.Adadelta``; Keras 3's own default learning rate is 0.001),
  pixels scaled to [0, 1], channels last; built and compiled outside the timing (as the CLI builds
  ours before ``fit``). Timed is ``model.fit(x, y, epochs=1, batch_size=128,
  validation_data=<held out>, verbose=0)``. The arrays are our datamodule's own uint8 splits (the
  55,000 / 5,000 of its seeded permutation, and the test images), converted before any timing. Keras's
  ``validation_split=5000/60000`` would hold out the *last* 5,000 images instead, so it is not used.
  Test accuracy is ``model.evaluate(x_test, y_test, batch_size=128)``.

The one augmentation: our lesson shifts each training image by a random offset of -2..2 pixels per axis
(zero padding, then a 28x28 crop), which the chapter's Keras recipe does not do. By default the Keras
model gets the nearest equivalent, ``RandomTranslation(2/28, 2/28, fill_mode="constant",
interpolation="nearest")`` as its first layer (active only in training): per image, the same range and
zero fill, but the offset is drawn from a continuous uniform in [-2, 2] and rounded, so -2 and +2 come
up half as often as in ours. ``--no-keras-shifts`` runs the chapter's exact Keras recipe instead.

What still differs, by design: ours does the work of the real lesson that Keras's bare ``fit`` does not
(reading the IDX files in ``setup``, the sanity check, logging, the checkpoint, the figures); Keras
converts channels-last batches for torch's convolutions. The first run of each side pays for first
kernels and imports, so a short warm-up of each (5 batches) runs untimed first. Then ``--repeats``
rounds alternate ours, Keras, ours, Keras ... and the medians are printed: epoch wall time (and this
process's CPU time, all threads), validation and test accuracy after the one epoch, and the ratio
ours / Keras of the epoch wall times. One epoch takes on the order of a minute per side on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported, anywhere

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import machine, markdown_table  # noqa: E402

from experiments.cli import ExperimentCLI  # noqa: E402
from experiments.progress import silence_known_warnings  # noqa: E402

CONFIG = REPO / "configs" / "mnist_convnet.yaml"
WARM_UP_BATCHES = 5
FLAGS = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def import_keras() -> ModuleType:
    """keras on the torch backend; exits with status 2 and one line when it is not installed."""
    try:
        import keras
    except ImportError:
        print(
            "keras is not installed (it is no project dependency): run `make bench-keras DATA=<dir>`, "
            'or `.venv/bin/python -m pip install "keras>=3"`',
            file=sys.stderr,
        )
        sys.exit(2)
    if keras.backend.backend() != "torch":
        print(f"keras runs on the {keras.backend.backend()} backend, not torch", file=sys.stderr)
        sys.exit(2)
    return keras


@contextmanager
def temporary_cwd() -> Iterator[None]:
    """Run in a fresh temporary working folder (logs and checkpoints land there and are deleted)."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(previous)


def timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, all threads, result) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


# --- data ---------------------------------------------------------------------------------------------
def keras_arrays(dm: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train / val / test arrays for Keras: float32 (N, 28, 28, 1) in [0, 1] and one-hot float32 labels,
    the datamodule's own splits (its seeded permutation of the training images; ``setup("test")`` adds
    the test images), so Keras sees exactly our images."""
    dm.setup("test")

    def prepare(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        pixels = (x.squeeze(1).numpy().astype(np.float32) / 255.0)[..., None]
        return pixels, np.eye(10, dtype=np.float32)[y.numpy()]

    return {split: prepare(*dm.splits[split]) for split in ("train", "val", "test")}


# --- ours ---------------------------------------------------------------------------------------------
def ours_cli(data_dir: Path, batches: int | None = None) -> ExperimentCLI:
    limits = [] if batches is None else ["--trainer.limit_train_batches", str(batches)]
    limits += [] if batches is None else ["--trainer.limit_val_batches", str(batches)]
    args = ["--config", str(CONFIG), "--data.data_dir", str(data_dir), "--trainer.max_epochs", "1"]
    return ExperimentCLI(args=[*args, *FLAGS, *limits], run=False)


def ours_once(data_dir: Path) -> dict[str, float]:
    """One epoch of the lesson through the CLI, then its test."""
    with temporary_cwd():
        cli = ours_cli(data_dir)
        wall, cpu, _ = timed(lambda: cli.trainer.fit(cli.model, cli.datamodule))
        steps = cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed
        val_acc = float(cli.trainer.callback_metrics["val/acc"])
        (tested,) = cli.trainer.test(cli.model, cli.datamodule, verbose=False)
    return {"wall": wall, "cpu": cpu, "steps": steps, "val_acc": val_acc, "test_acc": tested["test/acc"]}


# --- Keras --------------------------------------------------------------------------------------------
def keras_model(keras: ModuleType, shift: int, seed: int) -> Any:
    """The keras examples' mnist_cnn, compiled with the chapter's loss and Adadelta settings."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    augment = []
    if shift:
        factor = shift / 28
        augment = [
            layers.RandomTranslation(
                factor, factor, fill_mode="constant", fill_value=0.0, interpolation="nearest"
            )
        ]
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            *augment,
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-7),
        metrics=["accuracy"],
    )
    return model


def keras_once(
    keras: ModuleType,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    shift: int,
    seed: int,
    batch_size: int,
    samples: int | None = None,
) -> dict[str, float]:
    """One epoch of ``model.fit`` (with our validation split as validation data), then ``evaluate``."""
    model = keras_model(keras, shift, seed)
    (x, y), (x_val, y_val) = arrays["train"], arrays["val"]
    if samples is not None:  # the warm-up
        x, y, x_val, y_val = x[:samples], y[:samples], x_val[:samples], y_val[:samples]

    def fit() -> Any:
        return model.fit(
            x, y, batch_size=batch_size, epochs=1, validation_data=(x_val, y_val), shuffle=True, verbose=0
        )

    wall, cpu, history = timed(fit)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if samples is not None:
        return {}
    x_test, y_test = arrays["test"]
    tested = model.evaluate(x_test, y_test, batch_size=batch_size, verbose=0, return_dict=True)
    return {
        "wall": wall,
        "cpu": cpu,
        "steps": steps,
        "val_acc": history.history["val_accuracy"][-1],
        "test_acc": tested["accuracy"],
    }


# --- the run ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw/*-ubyte")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of ours then Keras (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    parser.add_argument(
        "--keras-shifts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give Keras RandomTranslation equal to our random_crop_padding (default); "
        "--no-keras-shifts: the chapter's exact Keras recipe, no augmentation",
    )
    args = parser.parse_args()
    keras = import_keras()
    data_dir = Path(args.data_dir).resolve()  # the runs happen in temporary working folders
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # Besides experiments.progress's: the in-memory loader needing no workers, and args given to the CLI in a
    # script with its own argv.
    silence_known_warnings(r".*does not have many workers.*", r"LightningCLI's args parameter is intended")

    # Warm-up of each side, untimed; ours also gives the datamodule whose split Keras is given.
    with temporary_cwd():
        cli = ours_cli(data_dir, WARM_UP_BATCHES)
        cli.trainer.fit(cli.model, cli.datamodule)
    dm = cli.datamodule
    shift = dm.random_crop_padding if args.keras_shifts else 0
    arrays = keras_arrays(dm)
    keras_once(keras, arrays, shift, dm.seed, dm.batch_size, samples=WARM_UP_BATCHES * dm.batch_size)

    print(
        f"{machine()}, "
        f"torch {torch.__version__}, keras {keras.__version__} (backend {keras.backend.backend()}), "
        f"{time.strftime('%Y-%m-%d')}, median of {args.repeats}, one epoch each, interleaved, "
        f"torch threads {torch.get_num_threads()}, data {data_dir}",
        flush=True,
    )
    print(
        f"# same data: {len(arrays['train'][0])} training / {len(arrays['val'][0])} validation images "
        f"(our seeded split), {len(arrays['test'][0])} test; batch {dm.batch_size}; pixels / 255; "
        "Adadelta lr 1.0, rho 0.95, eps 1e-7; Glorot-uniform weights, zero biases"
    )
    augmentation = (
        f"Keras: RandomTranslation({shift}/28, nearest, zero fill), the equivalent of ours"
        if shift
        else "Keras: none (the chapter's exact recipe)"
    )
    print(f"# shifts: ours ±{dm.random_crop_padding} px per image (random_crop_padding); {augmentation}")
    print(
        "# ours: trainer.fit incl. reading MNIST, 2-batch sanity check, validation on the held-out "
        "images, TensorBoard, checkpoint, the lesson's 4 figure callbacks; Keras: model.fit with "
        "validation_data, verbose=0, no callbacks",
        flush=True,
    )
    results: dict[str, list[dict[str, float]]] = {"ours (Lightning)": [], "Keras 3 (torch)": []}
    for i in range(args.repeats):
        ours = ours_once(data_dir)
        results["ours (Lightning)"].append(ours)
        peer = keras_once(keras, arrays, shift, dm.seed, dm.batch_size)
        results["Keras 3 (torch)"].append(peer)
        print(
            f"# round {i + 1}: ours {ours['wall']:.1f} s, test {ours['test_acc']:.4f}; "
            f"Keras {peer['wall']:.1f} s, test {peer['test_acc']:.4f}",
            flush=True,
        )

    columns = {
        "side": "{side}",
        "epoch wall (s)": "{wall:.1f}",
        "epoch CPU (s)": "{cpu:.1f}",
        "steps": "{steps:.0f}",
        "per step (ms)": "{step_ms:.1f}",
        "val acc": "{val_acc:.4f}",
        "test acc": "{test_acc:.4f}",
    }
    header, row = markdown_table(columns)
    print(*header, sep="\n")
    medians = {}
    for side, runs in results.items():
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        median["step_ms"] = median["wall"] / median["steps"] * 1e3
        medians[side] = median
        print(row.format(side=side, **median))
    ours, peer = medians.values()
    print(
        f"ratio ours / Keras, epoch wall time: {ours['wall'] / peer['wall']:.2f}x "
        f"(CPU time: {ours['cpu'] / peer['cpu']:.2f}x)",
        flush=True,
    )


if __name__ == "__main__":
    main()
