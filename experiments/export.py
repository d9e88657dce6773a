"""``python -m experiments export``: a trained checkpoint as a file that runs without this project, checked
against the eager model every time.

    python -m experiments export --config mnist_convnet --ckpt_path best                # model.onnx
    python -m experiments export --config boston_housing --ckpt_path last --format both  # .onnx and .pt2

The config, stacked presets and flags are ``fit``'s (``ExportCLI``, an ``ExperimentCLI`` that builds no
Trainer, so no run folder or TensorBoard events are made); ``--ckpt_path best|last|FILE`` is found as
``test`` finds it (experiments/ckpt_path.py: weights-only, another lesson's checkpoint refused), and its
hyperparameters build the model, as LightningCLI does for ``test``. Formats: ``onnx`` (torch.onnx's
exporter, checked in onnxruntime; the ``[export]`` extra), ``pt2`` (``torch.export``, checked with
``torch.export.load``), or ``both``. The files go to ``--output``, by default ``export/model.<format>``
in the run folder the checkpoint belongs to, with ``model.json`` (the sidecar) beside them.

What the exported graph computes is the lesson's, end to end: raw input in, meaning out. It is made of
three parts, each an optional hook of the lesson's own classes (none is a table here):

- datamodule ``export_batch(count) -> Tensor``: up to ``count`` held-out inputs (test split) as a user
  gives them, before any scaling (MNIST: uint8 images; Boston: the feature columns' raw values);
- datamodule ``export_preprocess() -> Callable``: those raw inputs to the model's input, as the
  datamodule makes evaluation batches (``/ 255`` and the checkpoint's normalisation; standardisation);
- module ``export_forward(inputs) -> Tensor``: the model's input to its meaning (class probabilities;
  landmarks in the input's pixels); without it, ``forward``;
- datamodule ``export_postprocess() -> Callable``: the output to the data's units (a score from a
  fraction of the maximum score);
- module and datamodule ``export_description() -> dict``: ``input`` and ``output`` entries (name, range,
  meaning, class names, target names) merged into the sidecar, the datamodule's over the module's;
- module ``export_unsupported`` (a class attribute): why the lesson has no fixed graph to export and
  what it offers instead; the command refuses in that one line.

A plain Lightning lesson with none of them still exports: the input is the first tensor of the test (else
validation) loader's batches after the datamodule's ``on_after_batch_transfer``, as ``forward`` receives
it, and the output is ``forward``'s. Its model must be traceable by ``torch.export`` (a fixed graph);
otherwise the export fails in one line naming the tracer's reason.

Every export is verified before it is kept: the graph is traced with a dynamic batch dimension, written
under a temporary name, loaded back (onnxruntime; ``torch.export.load``), and run on the held-out batch
and on its first sample alone (two batch sizes); each output is compared with the eager wrapper's, the
same computation in PyTorch, with ``torch.allclose`` at ``RTOL`` and ``ATOL`` (fp32). The largest
difference is printed and recorded; outputs that differ more end the command with one ``error:`` line
and remove the file. Only then are the files renamed to their names, the sidecar last. The export runs on
the CPU in one process; launched on several, only global rank 0 exports.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import lightning
import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from core.errors import ExperimentError
from experiments.ckpt_path import one_line_of, read_checkpoint
from experiments.cli import PARSER_KWARGS, ExperimentCLI, configuration_mistakes
from experiments.runs import RunLayout, experiment_name

#: Relative and absolute tolerance of the comparison of the exported model's outputs with the eager
#: model's (``torch.allclose``: |exported - eager| <= ATOL + RTOL * |eager|). Every shipped lesson is
#: fp32 end to end and its exported graph runs the same operations, so differences are rounding only:
#: the .pt2 files give exactly the eager outputs; onnxruntime sums in another order, which moved the
#: probabilities of an MNIST logistic regression trained one epoch by up to 2.9e-6 over the 10,000 test
#: images (1.3e-5 relative, on a small probability), a face's landmarks by 2e-6 pixels. ATOL is 1e-5, not
#: 1e-6, for those small probabilities: a probability 1e-5 off is no different prediction, while a wrong
#: graph (a missing normalisation, another weight) moves them by 1e-2 and more.
RTOL = 1e-5
ATOL = 1e-5
#: Held-out samples the export is checked on (fewer when the split has fewer).
CHECK_SAMPLES = 64
#: Each format's file suffix, and the packages it needs beyond torch.
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnx": (".onnx", ("onnx", "onnxscript", "onnxruntime")),
    "pt2": (".pt2", ()),
}
SIDECAR = ".json"
#: onnxruntime's intra-op threads for the check (0: its default, one per core); benchmarks set it.
ONNX_THREADS = 0


class ExportCLI(ExperimentCLI):
    """``fit``'s parser with the export's flags; it builds the model and the datamodule, not a Trainer."""

    def __init__(self, args: list[str]) -> None:
        self.layout: RunLayout | None = None
        super().__init__(
            args=list(args),
            run=False,
            parser_kwargs={
                **PARSER_KWARGS,
                "prog": "python -m experiments export",
                "description": "Export a trained checkpoint as ONNX or torch.export (.pt2), raw input in and "
                "meaning out, verified against the eager model on held-out data.",
            },
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="The checkpoint to export: best, last (the newest run of the experiment that has one) or a "
            "file; by default best when the config's checkpoint monitors a metric, else last.",
        )
        parser.add_argument(
            "--format",
            type=Literal["onnx", "pt2", "both"],
            default="onnx",
            help="onnx (checked with onnxruntime; pip install -e '.[export]'), pt2 (torch.export, checked "
            "with torch.export.load) or both.",
        )
        parser.add_argument(
            "--output",
            type=str | None,
            default=None,
            help="The file to write (its suffix follows the format; with both, the .onnx and .pt2 share its "
            "name), or a folder to write model.<format> into; the sidecar JSON goes beside it. By default "
            "export/model.<format> in the checkpoint's run folder.",
        )

    def complete_config(self, config: Namespace, layout: RunLayout) -> None:
        self.layout = layout
        # A lesson that has no graph to export says so before its checkpoint is looked for.
        for key in ("model", "data"):
            refuse_unsupported(config_class(config.get(key)))
        if not config.get("ckpt_path"):
            config.ckpt_path = "best" if config.checkpoint.get("monitor") else "last"

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)  # resolves --ckpt_path and reads it weights-only
        # As LightningCLI does for test and predict: the checkpoint's hyperparameters build the model.
        checkpoint = read_checkpoint(Path(self.config.ckpt_path))
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            model = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
            self.config = self.parser.parse_object({"model": model}, self.config)

    def instantiate_classes(self) -> None:
        # The model and the datamodule only: a Trainer would make a run folder.
        with configuration_mistakes():
            self.config_init = self.parser.instantiate_classes(self.config)
            self.datamodule = self._get(self.config_init, "data")
            self.model = self._get(self.config_init, "model")
            self.links.drop_foreign(self.model)
        self.links.note()


def config_class(part: Any) -> type | None:
    """The class a parsed ``model`` or ``data`` entry names, None when it names none."""
    class_path = part.get("class_path") if isinstance(part, Namespace) else None
    if not class_path:
        return None
    module, _, name = str(class_path).rpartition(".")
    return getattr(importlib.import_module(module), name, None) if module else None


def refuse_unsupported(part: Any) -> None:
    """One line when a lesson's class (or instance) says it cannot be exported (``export_unsupported``)."""
    reason = getattr(part, "export_unsupported", None)
    if reason:
        name = part.__name__ if isinstance(part, type) else type(part).__name__
        raise ExperimentError(f"{name} cannot be exported: {reason}")


# --- the graph ------------------------------------------------------------------------------------------
class Exported(nn.Module):
    """Raw input -> the model's input -> the model's meaning -> the data's units: what the exported file
    computes, and, run eagerly, what it is checked against."""

    def __init__(
        self,
        model: LightningModule,
        preprocess: Callable[[Tensor], Tensor] | None,
        postprocess: Callable[[Tensor], Tensor] | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.postprocess = postprocess

    def forward(self, inputs: Tensor) -> Tensor:
        x = self.preprocess(inputs) if self.preprocess is not None else inputs
        forward = getattr(self.model, "export_forward", None)
        y = forward(x) if forward is not None else self.model(x)
        return self.postprocess(y) if self.postprocess is not None else y


def loader_inputs(datamodule: LightningDataModule, count: int) -> Tensor:
    """A plain datamodule's held-out inputs as ``forward`` receives them: the first tensor of its test
    (else validation) batches, after ``on_after_batch_transfer``, up to ``count``."""
    for stage, loader in (("test", "test_dataloader"), ("validate", "val_dataloader")):
        try:
            datamodule.setup(stage)
            batches = getattr(datamodule, loader)()
        except (NotImplementedError, MisconfigurationException):  # Lightning's "must be implemented"
            continue
        found: list[Tensor] = []
        for batch in batches:
            batch = datamodule.on_after_batch_transfer(batch, 0)
            first = batch[0] if isinstance(batch, (tuple, list)) else batch
            if not isinstance(first, Tensor):
                raise ExperimentError(
                    f"{type(datamodule).__name__}'s {stage} batches hold a {type(first).__name__} first, "
                    "not a tensor: give the datamodule an export_batch(count) method returning the model's "
                    "input"
                )
            found.append(first)
            if sum(len(t) for t in found) >= count:
                break
        if found:
            return torch.cat(found)[:count]
    raise ExperimentError(
        f"{type(datamodule).__name__} serves no test or validation batches to check the export on: give it "
        "a test_dataloader, or an export_batch(count) method"
    )


def description(*parts: Any) -> dict[str, dict[str, Any]]:
    """The ``input`` and ``output`` entries of the classes' ``export_description``, the later's over the
    earlier's."""
    merged: dict[str, dict[str, Any]] = {"input": {}, "output": {}}
    for part in parts:
        describe = getattr(part, "export_description", None)
        for key, entry in (describe() if describe is not None else {}).items():
            merged.setdefault(key, {}).update(entry)
    return merged


def tensor_spec(name: str, tensor: Tensor, entry: dict[str, Any]) -> dict[str, Any]:
    """Name, shape (``batch`` first: dynamic), dtype and the lesson's words about a tensor."""
    range_ = entry.pop("range", None)
    if range_ is None and not tensor.is_floating_point():
        info = torch.iinfo(tensor.dtype)
        range_ = [info.min, info.max]
    spec = {
        "name": name,
        "shape": ["batch", *tensor.shape[1:]],
        "dtype": str(tensor.dtype).removeprefix("torch."),
    }
    if range_ is not None:
        spec["range"] = range_
    return {**spec, **{k: v for k, v in entry.items() if k != "name"}}


def require_packages(format_: str) -> None:
    """One line naming the extra when a package a format needs is missing."""
    for package in FORMATS[format_][1]:
        try:
            importlib.import_module(package)
        except ImportError:
            raise ExperimentError(
                f'--format {format_} needs {package}, which is not installed: pip install -e ".[export]" '
                "(or --format pt2, which needs only torch)"
            ) from None


# --- the run it came from -------------------------------------------------------------------------------
def checkpoint_run(
    checkpoint: dict[str, Any], path: Path, experiment: str, run: Path | None
) -> dict[str, Any]:
    """The checkpoint's origin for the sidecar: experiment, run folder, step, epoch, and the monitored
    metric with its score when the checkpoint was written and its best (ModelCheckpoint's state)."""
    origin: dict[str, Any] = {
        "experiment": experiment,
        "version": run.name if run is not None else None,
        "checkpoint": str(path.resolve()),
        "epoch": checkpoint.get("epoch"),
        "step": checkpoint.get("global_step"),
    }
    for state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("monitor"):
            score, best = state.get("current_score"), state.get("best_model_score")
            origin["monitor"] = state["monitor"]
            origin["score"] = float(score) if score is not None else None
            origin["best_score"] = float(best) if best is not None else None
            break
    return origin


# --- the files ------------------------------------------------------------------------------------------
def output_stem(output: str | None, default_folder: Path) -> Path:
    """The files' path without suffix: ``--output`` (a file, or a folder to write ``model.*`` into), else
    ``model`` in ``default_folder``."""
    if output is None:
        return default_folder / "model"
    path = Path(output).expanduser()
    if path.is_dir() or output.endswith(("/", os.sep)):
        return path / "model"
    return path.with_suffix("") if path.suffix in (".onnx", ".pt2", SIDECAR) else path


@contextlib.contextmanager
def writable_folder(folder: Path, flag: str) -> Iterator[None]:
    """Make ``folder`` (and its parents) if needed and check a file can be written there; on an error
    inside, remove the folders made here. A folder that cannot be made or written is one error line."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".export-check-"):
            pass
    except OSError as error:
        _remove_folders(made)
        reason = error.strerror or one_line_of(error)
        raise ExperimentError(f"{flag}: cannot write in {folder} ({reason}); give another --output") from None
    try:
        yield
    except BaseException:
        _remove_folders(made)
        raise


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def temporary_folder(path: Path) -> Path:
    """The hidden folder beside ``path`` where it is written before it is verified: on the same file
    system, so that the rename that publishes it is atomic."""
    return path.parent / f".export.tmp-{os.getpid()}"


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is verified: in ``temporary_folder``, under its own name
    (``torch.export.save`` names the archive's root folder after the file, and ``torch.export.load`` asks
    for the suffix)."""
    folder = temporary_folder(path)
    folder.mkdir(exist_ok=True)
    return folder / path.name


# --- export and check -----------------------------------------------------------------------------------
def prepare(
    model: LightningModule, datamodule: LightningDataModule
) -> tuple[Exported, Tensor, dict[str, Any], dict[str, Any]]:
    """The lesson's graph (``Exported``, eval mode), its raw held-out batch, and the input's and the
    output's descriptions for the sidecar."""
    method = getattr(datamodule, "export_batch", None)
    raw = method(CHECK_SAMPLES) if method is not None else loader_inputs(datamodule, CHECK_SAMPLES)
    if len(raw) == 0:
        raise ExperimentError(f"{type(datamodule).__name__} has no held-out samples to check the export on")
    # A copy: a slice of the whole test set keeps its storage, which torch.export.save would write whole
    # into the .pt2 as the example input (10,000 MNIST images, 7.8 MB).
    raw = raw.cpu().clone()
    preprocess = getattr(datamodule, "export_preprocess", None)
    postprocess = getattr(datamodule, "export_postprocess", None)
    wrapper = Exported(
        model.eval().cpu(),
        preprocess() if preprocess is not None else None,
        postprocess() if postprocess is not None else None,
    ).eval()
    with torch.no_grad():
        output = wrapper(raw)
    words = description(model, datamodule)
    input_spec = tensor_spec(words["input"].get("name", "input"), raw, dict(words["input"]))
    output_spec = tensor_spec(words["output"].get("name", "output"), output, dict(words["output"]))
    return wrapper, raw, input_spec, output_spec


def check_batches(raw: Tensor) -> list[Tensor]:
    """Two batch sizes to check the export on: the held-out batch and its first sample alone; a batch of
    one sample and two copies of it."""
    return [raw, raw[:1]] if len(raw) > 1 else [raw, raw.repeat(2, *([1] * (raw.dim() - 1)))]


def trace(wrapper: Exported, raw: Tensor) -> torch.export.ExportedProgram:
    """The wrapper as a ``torch.export`` graph whose first dimension (the batch) is dynamic."""
    batch = torch.export.Dim("batch", min=1)
    # torch.export specialises a dimension of size 1: trace with two samples at least.
    example = raw if len(raw) > 1 else raw.repeat(2, *([1] * (raw.dim() - 1)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
    except Exception as error:
        raise ExperimentError(
            f"{type(wrapper.model).__name__} cannot be exported as a fixed graph with a dynamic batch "
            f"(torch.export: {one_line_of(error)})"
        ) from None


def write_format(
    format_: str, program: torch.export.ExportedProgram, path: Path, names: tuple[str, str]
) -> None:
    """Write ``program`` to ``path`` in ``format_``."""
    if format_ == "pt2":
        torch.export.save(program, str(path))
        return
    quiet = io.StringIO()  # the ONNX exporter reports its steps on stdout
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program, input_names=[names[0]], output_names=[names[1]], dynamo=True, verbose=False
            )
            onnx_program.save(str(path))
    except OSError:
        raise
    except Exception as error:
        raise ExperimentError(f"the ONNX exporter failed: {one_line_of(error)}") from None


def runner(format_: str, path: Path) -> Callable[[Tensor], Tensor]:
    """A function that runs the file at ``path`` as the format's own runtime does."""
    if format_ == "pt2":
        module = torch.export.load(str(path)).module()
        return lambda inputs: module(inputs)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # onnxruntime's threads otherwise spin after each run, taking the cores PyTorch computes on next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = ONNX_THREADS
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda inputs: torch.from_numpy(session.run(None, {name: inputs.numpy()})[0])


def compare(run: Callable[[Tensor], Tensor], wrapper: Exported, batches: list[Tensor]) -> dict[str, Any]:
    """Each batch through the exported file and the eager wrapper: the largest absolute and relative
    differences, and whether every output is within ``RTOL`` and ``ATOL``."""
    largest, relative, close = 0.0, 0.0, True
    for batch in batches:
        with torch.no_grad():
            expected = wrapper(batch)
            got = run(batch)
        if got.shape != expected.shape:
            raise ExperimentError(
                f"the exported model gives shape {tuple(got.shape)} for a batch of {len(batch)}, the eager "
                f"model {tuple(expected.shape)}"
            )
        difference = (got.double() - expected.double()).abs()
        largest = max(largest, float(difference.max()) if difference.numel() else 0.0)
        scale = expected.double().abs().clamp_min(torch.finfo(expected.dtype).tiny)
        relative = max(relative, float((difference / scale).max()) if difference.numel() else 0.0)
        close = close and torch.allclose(got, expected, rtol=RTOL, atol=ATOL, equal_nan=True)
    return {"max_abs_diff": largest, "max_rel_diff": relative, "within_tolerance": close}


class Export:
    """One export: the checked classes, the files' names, and the steps of ``run``."""

    def __init__(self, cli: ExportCLI) -> None:
        self.cli = cli
        self.config = cli.config
        self.model: LightningModule = cli.model
        self.datamodule: LightningDataModule = cli.datamodule
        self.format: str = self.config.format
        self.formats = ["onnx", "pt2"] if self.format == "both" else [self.format]
        self.checkpoint_path = Path(self.config.ckpt_path)
        layout = cli.layout
        self.experiment = layout.experiment if layout is not None else experiment_name(self.config)
        self.run_folder = layout.run_of(self.checkpoint_path) if layout and layout.kind != "none" else None

    def default_folder(self) -> Path:
        """``export/`` in the checkpoint's run folder (``export_<config>/`` for a config evaluating another
        experiment's runs, as feature_extraction does mnist_convnet's); beside the run's checkpoints
        folder for a checkpoint elsewhere."""
        config_name = experiment_name(self.config)
        name = "export" if config_name == self.experiment else f"export_{config_name}"
        if self.run_folder is not None:
            return self.run_folder / name
        parent = self.checkpoint_path.parent
        return (parent.parent if parent.name == "checkpoints" else parent) / name

    def load(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's weights into the model, its datamodule state (a normalisation's statistics)
        into the datamodule, as Lightning restores them."""
        try:
            self.model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:
            raise ExperimentError(
                f"--ckpt_path {self.checkpoint_path} does not fit the configured {type(self.model).__name__} "
                f"({one_line_of(error)}): give the config it was trained with (config.yaml in its run folder)"
            ) from None
        state = checkpoint.get(type(self.datamodule).__qualname__)
        if state:
            self.datamodule.load_state_dict(state)
        self.model.eval().cpu()

    def run(self) -> None:
        for part in (self.model, self.datamodule):  # an instance may set it (a setting without a graph)
            refuse_unsupported(part)
        for format_ in self.formats:
            require_packages(format_)
        stem = output_stem(self.config.output, self.default_folder())
        with writable_folder(stem.parent, f"--output {self.config.output or stem.parent}"):
            self._export(stem)

    def _export(self, stem: Path) -> None:
        checkpoint = read_checkpoint(self.checkpoint_path)
        self.load(checkpoint)
        print(
            f"Exporting {self.checkpoint_path} (epoch {checkpoint.get('epoch')}, step "
            f"{checkpoint.get('global_step')}) as {' and '.join(self.formats)}"
        )
        wrapper, raw, input_spec, output_spec = prepare(self.model, self.datamodule)
        names = (input_spec["name"], output_spec["name"])
        program = trace(wrapper, raw)
        batches = check_batches(raw)
        written: dict[str, Path] = {}
        results: dict[str, dict[str, Any]] = {}
        try:
            for format_ in self.formats:
                final = stem.with_suffix(FORMATS[format_][0])
                temporary = written[format_] = temporary_name(final)
                write_format(format_, program, temporary, names)
                result = compare(runner(format_, temporary), wrapper, batches)
                results[format_] = {"file": final.name, **result}
                print(
                    f"{format_}: largest difference from the eager model {result['max_abs_diff']:.3g} "
                    f"(relative {result['max_rel_diff']:.3g}) over {len(raw)} held-out samples, batch sizes "
                    f"{', '.join(str(len(b)) for b in batches)} (tolerance rtol {RTOL:g}, atol {ATOL:g})"
                )
                if not result["within_tolerance"]:
                    raise ExperimentError(
                        f"the {format_} export differs from the eager model by up to "
                        f"{result['max_abs_diff']:.3g} (tolerance rtol {RTOL:g}, atol {ATOL:g}); nothing was "
                        "written"
                    )
            sidecar = self.sidecar(checkpoint, input_spec, output_spec, results, [len(b) for b in batches])
            sidecar_path = stem.with_suffix(SIDECAR)
            temporary = written["sidecar"] = temporary_name(sidecar_path)
            temporary.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
            for format_ in self.formats:
                os.replace(written.pop(format_), stem.with_suffix(FORMATS[format_][0]))
            os.replace(written.pop("sidecar"), sidecar_path)
        finally:
            for leftover in written.values():
                with contextlib.suppress(OSError):
                    leftover.unlink()
            with contextlib.suppress(OSError):
                temporary_folder(stem).rmdir()
        for format_ in self.formats:
            print(f"Exported {stem.with_suffix(FORMATS[format_][0])}")
        print(f"Described in {stem.with_suffix(SIDECAR)}")

    def sidecar(
        self,
        checkpoint: dict[str, Any],
        input_spec: dict[str, Any],
        output_spec: dict[str, Any],
        results: dict[str, dict[str, Any]],
        sizes: list[int],
    ) -> dict[str, Any]:
        versions = {"torch": torch.__version__, "lightning": lightning.__version__}
        if "onnx" in results:
            for package in FORMATS["onnx"][1]:
                versions[package] = importlib.import_module(package).__version__
        return {
            "formats": results,
            "input": input_spec,
            "output": output_spec,
            "run": checkpoint_run(checkpoint, self.checkpoint_path, self.experiment, self.run_folder),
            "verification": {
                "data": "held-out samples (test split) of the lesson's data",
                "samples": sizes[0],
                "batch_sizes": sizes,
                "rtol": RTOL,
                "atol": ATOL,
                "compared_with": "the same graph run eagerly in PyTorch (fp32, CPU)",
            },
            "versions": versions,
        }


def main(args: ArgsType) -> None:
    """``python -m experiments export <args>``."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    cli = ExportCLI(list(args or []))
    if rank_zero_only.rank != 0:
        return  # one process exports; the others of a launch have nothing to add
    export = Export(cli)
    export.run()
