"""Convents: 特征提取 — named intermediate activations of a trained network, written out by ``predict``.

    python -m experiments predict --config configs/feature_extraction.yaml --ckpt_path best

``FeatureWriter`` builds a torchvision feature extractor (``create_feature_extractor``: the network traced
by torch.fx, its graph cut after the requested layers) over the module's network, runs it on every
predict batch and saves ``{"features": {layer: (N, ...)}, "labels": (N,), "layers": [...]}`` as one file
in the run folder, in dataset order, and draws the first image's features (``figures/features.png``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torchvision
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor
from torchvision.utils import make_grid

from core.distributed import Columns, gather_samples, run_dir, sample_positions
from core.domains import FileName, NonEmptyText
from core.errors import ExperimentError
from core.figures import log_figure, logs_images, new_figure

# The tracer settings torchvision's get_graph_node_names and create_feature_extractor use, so the names
# found here are theirs: torchvision.ops modules stay whole nodes instead of being traced through.
TRACER_KWARGS: dict[str, Any] = {
    "autowrap_modules": (math, torchvision.ops),
    "leaf_modules": [
        c for c in vars(torchvision.ops).values() if isinstance(c, type) and issubclass(c, nn.Module)
    ],
}


class UnknownLayerError(ExperimentError, ValueError):
    """A requested layer or network is not in the module; an ExperimentError, so the command shows it as
    one line, and a ValueError, as a bad argument is."""


def layer_nodes(network: nn.Module) -> dict[str, str]:
    """The layer names ``FeatureWriter`` accepts, in order of execution, each with its torchvision node name.

    torchvision's names (``get_graph_node_names``) are module paths, except that a trailing ``_<digits>`` is
    taken for torch.fx's numbering of repeated calls, stripped, and renumbered: MNISTConvNet's ``conv_1``
    becomes the node ``conv`` and ``conv_2`` the node ``conv_1``, so asking torchvision for "conv_1" would
    silently return the second convolution. Here a module is named by its own path (for its first call);
    operations that are not modules (``add``, a ``flatten`` method call), later calls of a module
    (ResNet's ``layer1.0.relu_1``) and the input keep torchvision's node names.
    """
    tracer = NodePathTracer(**TRACER_KWARGS)
    graph = tracer.trace(network)
    calls = [(node, tracer.node_to_qualname[node]) for node in graph.nodes if node in tracer.node_to_qualname]
    modules = {str(node.target) for node, _ in calls if node.op == "call_module"}
    names: dict[str, str] = {}
    for node, node_name in calls:
        if node.op == "call_module" and str(node.target) not in names:
            names[str(node.target)] = node_name
        # Operations and later calls of a module, unless the name is some module's own.
        elif node_name not in modules:
            names[node_name] = node_name
    return names


class FeatureWriter(Callback):
    """Writes the activations of named layers of ``pl_module.<module>`` over the whole predict set.

    The file is ``<run folder>/<filename>``; nothing is written without a run folder (``fast_dev_run``, no
    logger), though the features are still computed, so a smoke run checks the layer names. On several
    processes each computes the features of its shard and rank zero gathers them, in dataset order, into
    the file one process would have written.

    Args:
        layers: Layers to keep (one or more, none repeated), by module path as in ``named_modules()``
            (``conv_1``, ``features.3``); a module that holds others gives its last output. Operations
            that are not modules go by their torchvision node names (``get_graph_node_names``).
        filename: File name inside the run folder (a name, no folder).
        module: Attribute of the LightningModule that holds the network (``net`` in every image lesson).
        dtype: Floating type of the saved activations (float32, float16, bfloat16 or float64);
            ``float16`` halves the file (10,000 MNIST images give 1.5 GB of float32 ``conv_2``
            activations).
    """

    def __init__(
        self,
        layers: list[NonEmptyText],
        filename: FileName = "features.pt",
        module: NonEmptyText = "net",
        dtype: Literal["float32", "float16", "bfloat16", "float64"] = "float32",
    ) -> None:
        if not layers:
            raise ValueError("FeatureWriter needs at least one layer name")
        if len(set(layers)) != len(layers):
            raise ValueError(f"FeatureWriter layers are repeated: {layers}")
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
            raise ValueError(
                f'FeatureWriter dtype "{dtype}" is not a floating type: use float32, float16 or bfloat16'
            )
        self.layers = list(layers)
        self.filename = filename
        self.module = module
        self.dtype = torch_dtype
        self.extractor: nn.Module | None = None
        self._features: dict[str, list[Tensor]] = {}
        self._labels: list[Tensor] = []
        self._first_image: Tensor | None = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        network = getattr(pl_module, self.module, None)
        if not isinstance(network, nn.Module):
            raise UnknownLayerError(
                f'FeatureWriter: {type(pl_module).__name__} has no network "{self.module}"'
            )
        nodes = layer_nodes(network)
        node_names = set(nodes.values())
        return_nodes = {}
        for layer in self.layers:
            if layer in nodes:
                return_nodes[nodes[layer]] = layer
            # A module holding others is not a node itself; torchvision takes the last node inside it.
            elif any(name.startswith(f"{layer}.") for name in node_names):
                return_nodes[layer] = layer
            else:
                raise UnknownLayerError(
                    f'FeatureWriter: no layer "{layer}" in {type(pl_module).__name__}.{self.module}; '
                    f"its layers are: {', '.join(nodes)}"
                )
        # Parameters are shared with the network, not copied: the extractor sees the checkpoint's weights
        # and follows the network to any device.
        self.extractor = create_feature_extractor(network, return_nodes=return_nodes)
        self._features = {layer: [] for layer in self.layers}
        self._labels = []
        self._first_image = None

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.extractor is None:
            return
        images, labels = batch[0], batch[1]
        # The extractor follows the network's train/eval mode (dropout off in predict). The precision
        # context is the one predict_step ran in, so the features are those the predictions came from.
        self.extractor.train(pl_module.training)
        with torch.no_grad(), trainer.precision_plugin.predict_step_context():
            activations = self.extractor(images)
        for layer in self.layers:
            self._features[layer].append(activations[layer].to(device="cpu", dtype=self.dtype))
        self._labels.append(labels.cpu())
        if batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero:
            # For the figure: the first image of the set (rank 0's first under a sharding loader).
            self._first_image = images[0].detach().float().cpu()

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.extractor is None:
            return
        loaders = trainer.predict_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        labels = torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)
        self._labels = []
        positions = sample_positions(loader, len(labels)) if trainer.world_size > 1 else None
        # Every rank sends its shard to rank 0, one layer at a time (a gather each, in the same order on
        # every rank), freeing its batches as it goes: the peak is one layer, not twice everything.
        gathered: dict[str, Tensor] = {}
        for layer in [*self.layers, None]:
            if layer is None:
                columns: Columns = {"labels": labels} if len(labels) else {}
            else:
                batches = self._features.pop(layer)
                columns = {layer: torch.cat(batches)} if batches else {}
            whole = gather_samples(trainer, columns, positions)
            if whole:
                gathered.update(whole)
        self._features = {}
        folder = run_dir(trainer)
        if folder is None or "labels" not in gathered:  # not rank 0, no run folder, or nothing predicted
            return
        features = {layer: gathered[layer] for layer in self.layers}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.filename
        torch.save({"features": features, "labels": gathered["labels"], "layers": list(self.layers)}, path)
        shapes = ", ".join(f"{layer} {tuple(f.shape)}" for layer, f in features.items())
        labels_shape = tuple(gathered["labels"].shape)
        rank_zero_info(f"Features written to {path}: {shapes}, labels {labels_shape}, {self.dtype}")
        if logs_images(trainer):
            self._draw(trainer, {layer: f[0] for layer, f in features.items()}, int(gathered["labels"][0]))

    def _draw(self, trainer: Trainer, features: dict[str, Tensor], label: int) -> None:
        """The first predicted image and its features, one map per channel: ``predict/features`` and
        ``figures/features.png``."""
        image, self._first_image = self._first_image, None
        grids = {layer: feature_grid(f) for layer, f in features.items()}
        panels = ([("input", picture(image))] if image is not None else []) + list(grids.items())

        def draw() -> Any:
            from matplotlib import colormaps

            # Each panel as wide as its grid is tall, in one row.
            ratios = [grid.shape[1] / grid.shape[0] for _, grid in panels]
            figure = new_figure((min(12.0, 1.0 + 3.0 * sum(ratios)), 3.6), layout="constrained")
            axes = figure.subplots(1, len(panels), width_ratios=ratios, squeeze=False)[0]
            for ax, (name, grid) in zip(axes, panels, strict=True):
                # NaN (the grid's padding) is drawn in the background's colour.
                cmap = colormaps["gray" if name == "input" else "viridis"].with_extremes(bad="white")
                ax.imshow(grid.numpy(), cmap=cmap, interpolation="nearest")
                size = "" if name == "input" else f": {features[name].shape[0]} maps"
                ax.set_title(f"{name}{size}")
                ax.axis("off")
            figure.suptitle(f"features of the first image (label {label}), each map scaled to its own range")
            return figure

        log_figure(trainer, draw, "predict/features", png_name="features")


def picture(image: Tensor) -> Tensor:
    """An input image ``(C, H, W)`` to show, scaled to [0, 1] by its min and max: ``(H, W, 3)`` in colour
    for three channels, else the first channel ``(H, W)``."""
    image = image.float()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    return image.permute(1, 2, 0) if image.shape[0] == 3 else image[0]


def grid_columns(count: int) -> int:
    """Columns for ``count`` maps: the smallest divisor of ``count`` from its square root up to twice it
    (a full rectangle, 32 as 8 x 4), else the square root rounded up."""
    low = math.ceil(math.sqrt(count))
    return next((c for c in range(low, 2 * low + 1) if count % c == 0), low)


def feature_grid(activation: Tensor) -> Tensor:
    """One sample's activation as a 2-D image to show: ``(C, H, W)`` maps tiled in a grid
    (``grid_columns``), each scaled to [0, 1] by its own min and max, with 1 pixel of NaN (drawn as the
    background) around each; ``(N,)`` values (a dense layer) as a near-square block scaled together, NaN
    after the last; other shapes flattened as those."""
    activation = activation.detach().float().cpu()
    if activation.ndim == 3:
        low = activation.amin(dim=(1, 2), keepdim=True)
        high = activation.amax(dim=(1, 2), keepdim=True)
        maps = ((activation - low) / (high - low).clamp_min(1e-12)).unsqueeze(1)
        return make_grid(maps, nrow=grid_columns(len(maps)), padding=1, pad_value=math.nan)[0]
    values = activation.flatten()
    side = math.ceil(math.sqrt(len(values)))
    scaled = (values - values.min()) / (values.max() - values.min()).clamp_min(1e-12)
    return torch.cat([scaled, scaled.new_full((side * side - len(values),), math.nan)]).view(side, side)
