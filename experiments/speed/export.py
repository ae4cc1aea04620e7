"""A detector's network stage as ONNX graphs (and OpenVINO IR): what is exported, what stays in PyTorch.

Only ``Detector.network`` is exported. ``preprocess`` and ``postprocess`` (decode, NMS, boxes
back to the original pixels) stay the detector's own PyTorch code for every runtime, so that
runtime rows of the speed protocol differ in the network alone. Graphs per family:

- SSD, YOLO: one graph ``network``: ``images`` float32 [B, 3, H, W] (preprocessed) -> SSD
  ``offsets`` [B, A, 4] and ``logits`` [B, A, C+1]; YOLO ``grid`` [B, S, S, 5 B' + C].
- Faster R-CNN: two graphs. ``features``: ``images`` -> per feature level the map [B, C, h, w],
  the RPN objectness [B, A, h, w] and box deltas [B, 4A, h, w]; ``box_head``: ``pooled`` RoIs
  [P, C, 7, 7] (P dynamic) -> ``class_logits`` [P, C+1], ``box_regression`` [P, 4(C+1)].
  Between them, in PyTorch (``FasterRCNN.network_from_parts``): anchors, proposal decoding, the
  RPN's top-n and NMS (data-dependent shapes), RoI pooling.
- Fast R-CNN: the same two graphs, ``features`` the conv trunk alone (``feature_0`` [B, C, h, w]);
  the selective-search proposals and RoI pooling stay in PyTorch.
- R-CNN: one graph ``region_cnn``: warped ``regions`` [R, 3, S, S] (R dynamic) -> ``pool5``
  [R, C (S/32)^2], ``fc7`` [R, D], ``logits`` [R, N+1], fed ``region_batch`` regions at a time;
  proposals, warping, SVM scoring, box regression and NMS stay in PyTorch.

A detector exported in parts declares them (``export_parts``: graph -> (method, input name, the
input's axis 0)) and runs its eval network from callables standing for them
(``network_from_parts(batch, **{graph: callable})``); each graph is traced on the inputs that
PyTorch's own ``network_from_parts`` gives that part on seeded example images (``part_calls``).

Each graph is exported at every fixed batch size asked for (the runtimes plan for that shape)
and, with ``dynamic_batch``, once with a dynamic batch axis. The exporter is torch's default
(``dynamo``: ``torch.export`` then onnxscript); when it fails, the layer being traced is named
and the other exporter (``torchscript``) is tried: the record says so (``workaround``).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from detectors.base import Batch, Detector
from detectors.fast_rcnn import FastRCNN
from detectors.faster_rcnn import FasterRCNN
from detectors.rcnn import RCNN

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
FORMATS = ("onnx", "openvino")
DEFAULT_OPSET = 18
PYTORCH_STEPS_TWO_STAGE = ["preprocess (transform)", "RPN anchors, proposal decoding, per-level top-n, "
                           "clipping, small-box filter and NMS", "RoI pooling",
                           "postprocess (decode, score threshold, per-class NMS, top-k, map back)"]
PYTORCH_STEPS_ONE_STAGE = ["preprocess (resize, normalise, stack)", "postprocess (decode, NMS, map back)"]
PYTORCH_STEPS_FAST_RCNN = ["proposals (the proposal source: selective search)",
                           "preprocess (transform; proposals scaled to input pixels)", "RoI pooling",
                           "postprocess (decode, score threshold, per-class NMS, top-k, map back)"]
PYTORCH_STEPS_RCNN = ["proposals (the proposal source: selective search)",
                      "preprocess (normalise; each proposal dilated by its context and warped to S x S)",
                      "region batches of region_batch regions through the exported CNN",
                      "postprocess (SVM scores on fc7, or the softmax before SVMs are fitted; ridge box "
                      "regression on pool5; score threshold, per-class NMS, top-k)"]
#: output names of a part's graph (``features``: by level, ``part_output_names``)
PART_OUTPUTS = {"box_head": ["class_logits", "box_regression"], "region_cnn": ["pool5", "fc7", "logits"]}


class ExportError(RuntimeError):
    """An export that failed with every exporter: names the layer and each exporter's error."""


class ImagesToRaw(nn.Module):
    """A one-stage detector's network stage as a module of one tensor: images [B, 3, H, W] ->
    its raw outputs (a tensor or a tuple of tensors, as ``network`` returns them)."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor):
        return self.detector.network(Batch(images=images, original_sizes=[], input_sizes=[]))


class Part(nn.Module):
    """One method of a detector (``rpn_head_outputs``, ``box_head_outputs``) as a module."""

    def __init__(self, detector: Detector, method: str):
        super().__init__()
        self.detector, self.method = detector, method

    def forward(self, x: Tensor):
        return getattr(self.detector, self.method)(x)


@dataclass
class GraphSpec:
    """One graph to export. example: the inputs traced; dynamic: input name -> {axis: name}."""

    name: str
    module: nn.Module
    example: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)


def in_parts(detector: Detector) -> bool:
    """Whether ``detector`` exports as parts with PyTorch steps between them (``export_parts``)."""
    return bool(getattr(detector, "export_parts", None))


def pytorch_steps(detector: Detector) -> list[str]:
    """The steps of the eval forward that stay in PyTorch whatever the runtime."""
    for kind, steps in ((FasterRCNN, PYTORCH_STEPS_TWO_STAGE), (FastRCNN, PYTORCH_STEPS_FAST_RCNN),
                        (RCNN, PYTORCH_STEPS_RCNN)):
        if isinstance(detector, kind):
            return steps
    return PYTORCH_STEPS_ONE_STAGE


def example_batch(detector: Detector, batch_size: int, seed: int = 0) -> Batch:
    """Seeded noise images at the detector's input size through its own preprocess (R-CNN and
    Fast R-CNN: with their proposal source's boxes)."""
    generator = torch.Generator().manual_seed(seed)
    h, w = detector.input_size
    with torch.no_grad():
        return detector.preprocess([torch.rand(3, h, w, generator=generator) for _ in range(batch_size)])


def example_images(detector: Detector, batch_size: int, seed: int = 0) -> Tensor:
    """float32 [B, 3, H, W]: ``example_batch``'s network input."""
    return example_batch(detector, batch_size, seed).images.contiguous()


@torch.no_grad()
def part_calls(detector: Detector, batch: Batch) -> dict[str, list[tuple[Tensor, tuple[Tensor, ...]]]]:
    """PyTorch's ``network_from_parts(batch)`` with every call of each part recorded: graph ->
    [(its input, its outputs), ...] (R-CNN: one call per region batch; a part never called, as
    on an image without proposals: [])."""
    calls: dict[str, list] = {name: [] for name in detector.export_parts}

    def recorder(name: str):
        method = getattr(detector, detector.export_parts[name][0])

        def call(x: Tensor):
            outputs = tuple(method(x))
            calls[name].append((x, outputs))
            return outputs
        return call

    detector.network_from_parts(batch, **{name: recorder(name) for name in detector.export_parts})
    return calls


def part_output_names(graph: str, count: int) -> list[str]:
    """Names of a part graph's ``count`` outputs: ``PART_OUTPUTS``, or ``features`` by level (Faster
    R-CNN: maps, RPN objectness, RPN deltas; Fast R-CNN: its one map)."""
    if graph in PART_OUTPUTS:
        return PART_OUTPUTS[graph]
    if count % 3:
        return [f"feature_{i}" for i in range(count)]
    levels = count // 3
    return ([f"feature_{i}" for i in range(levels)] + [f"objectness_{i}" for i in range(levels)]
            + [f"rpn_deltas_{i}" for i in range(levels)])


def graph_specs(detector: Detector, batch_size: int | None) -> list[GraphSpec]:
    """The graphs of ``detector``'s network at a fixed ``batch_size`` (None: a dynamic batch axis,
    traced at batch 2). A part whose input is not the images (RoIs, regions) always has a dynamic
    axis 0. Detectors other than one-graph networks and those with ``export_parts``: ValueError."""
    batch = example_batch(detector, batch_size or 2)
    images = batch.images.contiguous()
    batch_axis = {"images": {0: "batch"}} if batch_size is None else {}
    if in_parts(detector):
        specs = []
        for name, calls in part_calls(detector, batch).items():
            method, input_name, axis = detector.export_parts[name]
            if not calls:
                raise ValueError(f"{type(detector).__name__}: its part '{name}' was never called on the example "
                                 "images (no proposals?): nothing to trace")
            example, outputs = calls[0]
            dynamic = batch_axis if input_name == "images" else {input_name: {0: axis}}
            specs.append(GraphSpec(name, Part(detector, method), (example.contiguous(),), [input_name],
                                   part_output_names(name, len(outputs)), dynamic))
        return specs
    module = ImagesToRaw(detector)
    with torch.no_grad():
        raw = module(images)
    if isinstance(raw, Tensor):
        outputs = ["grid"] if raw.ndim == 4 else ["raw"]
    elif isinstance(raw, (tuple, list)) and all(isinstance(t, Tensor) for t in raw):
        outputs = ["offsets", "logits"] if len(raw) == 2 else [f"raw_{i}" for i in range(len(raw))]
    else:
        raise ValueError(f"{type(detector).__name__}: its network returns {type(raw).__name__}, not tensors: "
                         "no export for this detector (SSD, YOLO and the export_parts detectors export)")
    return [GraphSpec("network", module, (images,), ["images"], outputs, batch_axis)]


@contextlib.contextmanager
def layer_stack(module: nn.Module):
    """Yields a list that holds, while ``module`` runs, the qualified names of the layers
    entered and not yet left: after an exception, its last item is the failing layer."""
    stack: list[str] = []

    def leave(module, args, output) -> None:   # a forward hook's return value would replace the output
        if stack:
            stack.pop()

    handles = []
    for name, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(lambda m, a, n=name: stack.append(n or "<top>")))
        handles.append(sub.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def root_cause(error: BaseException) -> str:
    """'Type: first line' of the innermost exception of ``error``'s chain (the exporters wrap it)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0].strip()[:300] if lines else ''}"


def _describe(module: nn.Module, layer: str) -> str:
    """'features.trunk.23 (MaxPool2d)': a layer's qualified name and type."""
    if layer == "<top>":
        return f"<top> ({type(module).__name__})"
    return f"{layer} ({type(module.get_submodule(layer)).__name__})"


def _export_once(spec: GraphSpec, path: Path, opset: int, exporter: str) -> None:
    kwargs = {"input_names": spec.input_names, "output_names": spec.output_names, "opset_version": opset}
    if exporter == "dynamo":
        dims = {n: {a: torch.export.Dim(d, min=1) for a, d in axes.items()} for n, axes in spec.dynamic.items()}
        shapes = tuple(dims.get(n) for n in spec.input_names) if dims else None
        kwargs.update(dynamo=True, dynamic_shapes=shapes, verbose=False)
    else:
        kwargs.update(dynamo=False, dynamic_axes=spec.dynamic or None)
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        torch.onnx.export(spec.module.eval(), spec.example, str(path), **kwargs)


def export_graph(spec: GraphSpec, path: Path, opset: int = DEFAULT_OPSET, exporter: str = "dynamo") -> dict:
    """Write ``spec`` as ONNX to ``path``; returns its record (file, inputs, outputs, opset,
    exporter, workaround). The first exporter's failure names the layer and tries the other."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    errors, workaround = [], None
    for attempt in (exporter, *[e for e in EXPORTERS if e != exporter]):
        with layer_stack(spec.module) as stack:
            try:
                _export_once(spec, path, opset, attempt)
                break
            except Exception as error:  # the exporters raise many types; each is reported
                layer = _describe(spec.module, stack[-1]) if stack else "after tracing (ONNX translation)"
                errors.append(f"{attempt} exporter failed at layer {layer}: {root_cause(error)}")
                log.warning("export of %s: %s", spec.name, errors[-1])
    else:
        raise ExportError(f"export of graph '{spec.name}' failed with every exporter: " + "; ".join(errors))
    if errors:
        workaround = f"{errors[0]}; exported with the {attempt} exporter instead"
    batch = ("dynamic" if "images" in spec.dynamic else int(spec.example[0].shape[0])) \
        if spec.input_names == ["images"] else f"dynamic {spec.dynamic[spec.input_names[0]][0]}"
    return {"graph": spec.name, "file": path.name, "batch": batch, "exporter": attempt, "opset": opset,
            "inputs": {n: list(t.shape) for n, t in zip(spec.input_names, spec.example)},
            "dynamic_axes": {n: {str(a): d for a, d in axes.items()} for n, axes in spec.dynamic.items()},
            "outputs": spec.output_names, "workaround": workaround}


def to_openvino(onnx_path: Path) -> Path:
    """Convert an ONNX file to OpenVINO IR (``.xml`` + ``.bin`` beside it), weights kept in fp32
    (``save_model`` would compress them to fp16 by default)."""
    import openvino as ov

    xml = onnx_path.with_suffix(".xml")
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml


def export_network(detector: Detector, folder: Path, name: str, batch_sizes=(1, 8), dynamic_batch: bool = True,
                   opset: int = DEFAULT_OPSET, exporter: str = "dynamo", format: str = "onnx") -> list[dict]:
    """Every graph of ``detector`` (eval mode, CPU) at each of ``batch_sizes`` and, if
    ``dynamic_batch``, with a dynamic batch; ``format`` "openvino" adds the IR of each ONNX file.
    Files ``<name>_<graph>_b<B>.onnx`` / ``_dynamic.onnx``; returns one record per file."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: choose from {list(FORMATS)}")
    detector.eval()
    records, done = [], set()
    for batch_size in [*[int(b) for b in batch_sizes], *([None] if dynamic_batch else [])]:
        for spec in graph_specs(detector, batch_size):
            tag = "dynamic" if (batch_size is None or spec.input_names != ["images"]) else f"b{batch_size}"
            path = Path(folder) / f"{name}_{spec.name}_{tag}.onnx"
            if path in done:   # a RoI / region axis is dynamic whatever the batch: one file
                continue
            done.add(path)
            record = export_graph(spec, path, opset, exporter)
            if format == "openvino":
                record["openvino_file"] = to_openvino(path).name
            records.append(record)
            log.info("exported %s (batch %s, %s exporter, opset %d)", path.name, record["batch"],
                     record["exporter"], opset)
    return records
