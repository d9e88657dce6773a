"""CPU latency per batch of each exportable lesson: eager PyTorch against its ONNX file in onnxruntime and
its ``torch.export`` file (``.pt2``) loaded back, in one process.

Run from the project root:

    python benchmarks/export_latency.py [--batch N] [--repeats 30] [--lessons mnist_convnet ...]

Each lesson config whose model has a fixed graph (``export_unsupported`` unset) is built as the config
says (its model at full size) on the tiny data its datamodule's ``write_sample`` writes (the shapes are the
lesson's; the face lesson keeps its config's image and crop sizes), and exported as
``python -m experiments export`` exports it (``experiments/export.py``: raw input in, meaning out, batch
dimension dynamic). The weights are the random initial ones: latency does not depend on their values.
The held-out batch is repeated to a batch of the lesson's ``batch_size`` (its config's; 256 for the
lessons without one: sine_rnn's sequences of 20 values, scratch_network's students), or ``--batch``
samples. Each round runs
the three implementations one after the other on that batch, ``--repeats`` rounds after a warm-up; the
table gives the median per batch and the ratio to eager's median (below 1: faster than eager).
torch and onnxruntime each compute on ``--threads`` intra-op threads (default 1: on a machine whose cores
other jobs share, a parallel operation waits for every one of its threads to be scheduled, which
measured the scheduler rather than the model); onnxruntime's threads do not spin between runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import _common
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import export
from experiments.cli import ExperimentCLI
from tests.conftest import QUIET, config
from tests.lesson_data import as_flags, bypass_cifar_integrity, lesson_configs, load_lesson

#: Data sizes the config sets that the benchmark keeps over the tiny sample's (the network's input size).
CONFIG_SIZES = ("image_size", "crop_size")


def build(lesson: str, root: Path) -> tuple[export.Exported, torch.Tensor]:
    """The lesson's export graph (random weights) and its raw held-out batch."""
    found = load_lesson(lesson)
    sample = found.sample_args(root)
    configured = found.config["data"].get("init_args") or {}
    sample.update({key: configured[key] for key in CONFIG_SIZES if key in sample and key in configured})
    args = ["--config", config(lesson), *as_flags("data", sample), *QUIET]
    cli = ExperimentCLI(args=args, run=False)
    wrapper, raw, _, _ = export.prepare(cli.model, cli.datamodule)
    return wrapper, raw


def timed(run: object, batch: torch.Tensor) -> float:
    start = time.perf_counter()
    run(batch)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="default: the lesson's batch size, else 256")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--lessons", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch's and onnxruntime's intra-op threads")
    options = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(options.threads)
    export.ONNX_THREADS = options.threads
    bypass_cifar_integrity()
    lessons = options.lessons or [
        name for name in lesson_configs() if not getattr(load_lesson(name).model, "export_unsupported", None)
    ]
    print(_common.machine())
    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, {options.threads} thread(s) each, "
        f"{options.repeats} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    header, row = _common.markdown_table(
        {
            "lesson": "{lesson}",
            "batch": "{batch}",
            "input": "{input}",
            "eager ms": "{eager:.3f}",
            "onnxruntime ms": "{onnx:.3f}",
            "onnxruntime / eager": "**{onnx_ratio:.2f}x**",
            ".pt2 ms": "{pt2:.3f}",
            ".pt2 / eager": "**{pt2_ratio:.2f}x**",
        }
    )
    print("\n".join(header))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.chdir(root)  # anything a lesson writes stays in the temporary folder
        for lesson in lessons:
            wrapper, raw = build(lesson, root / lesson)
            size = options.batch or load_lesson(lesson).batch_size or 256
            batch = raw.repeat(-(-size // len(raw)), *([1] * (raw.dim() - 1)))[:size]
            program = export.trace(wrapper, raw)
            names = ("input", "output")
            export.write_format("onnx", program, root / f"{lesson}.onnx", names)
            export.write_format("pt2", program, root / f"{lesson}.pt2", names)
            runs = {
                "eager": wrapper,
                "onnx": export.runner("onnx", root / f"{lesson}.onnx"),
                "pt2": export.runner("pt2", root / f"{lesson}.pt2"),
            }
            times: dict[str, list[float]] = {name: [] for name in runs}
            with torch.inference_mode():
                for _ in range(3):  # warm-up: first calls allocate and pick kernels
                    for run in runs.values():
                        run(batch)
                for _ in range(options.repeats):
                    for name, run in runs.items():
                        times[name].append(timed(run, batch))
            median = {name: statistics.median(values) * 1000 for name, values in times.items()}
            shape = "x".join(str(d) for d in batch.shape[1:])
            print(
                row.format(
                    lesson=lesson,
                    batch=size,
                    input=f"{str(batch.dtype).removeprefix('torch.')} {shape}",
                    eager=median["eager"],
                    onnx=median["onnx"],
                    onnx_ratio=median["onnx"] / median["eager"],
                    pt2=median["pt2"],
                    pt2_ratio=median["pt2"] / median["eager"],
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
