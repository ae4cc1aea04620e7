"""Running an exported network in ONNX Runtime or OpenVINO behind the detector's own pre- and post-processing.

``ExportedNetwork(detector, records, folder, runtime)`` is a drop-in for ``detector.network``:
``batch -> raw outputs`` in the same structure (SSD: (offsets [B, A, 4], logits [B, A, C+1]);
YOLO: [B, S, S, 5 B' + C]; Faster / Fast R-CNN: {"class_logits", "box_regression", "proposals"};
R-CNN: {"logits", "fc7", "pool5", "proposals"}), the graphs run by the runtime on float32 numpy
arrays, the detector's ``network_from_parts`` doing the PyTorch steps between them.
``RuntimeDetector`` wraps both into a ``Detector`` whose eval forward is preprocess (PyTorch) ->
network (runtime) -> postprocess (PyTorch): what the evaluator and the speed protocol run.

Runtime settings (stated in every record): ONNX Runtime's CPU provider, all graph optimisations,
``intra_op_num_threads`` = ``threads``, one inter-op thread, no spinning (its threads would
otherwise busy-wait through the PyTorch post-processing that follows and slow it); OpenVINO on "CPU" with
``INFERENCE_NUM_THREADS`` = ``threads``, ``PERFORMANCE_HINT`` LATENCY and
``INFERENCE_PRECISION_HINT`` f32: on CPUs with AMX/AVX512-BF16 OpenVINO otherwise runs fp32
models in bf16 (measured here: raw outputs 1e-2 off PyTorch's, not 1e-6). ``tensorrt`` (CUDA only,
``benchmarks/gpu_suite.sh``): ONNX Runtime's TensorrtExecutionProvider (onnxruntime-gpu built with
TensorRT), fp32 engines (TensorRT may use TF32), cached beside the ONNX files, CUDA provider as the
fallback for nodes TensorRT does not take; inputs and outputs pass through host memory.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from detectors.base import Batch, Detection, Detector
from experiments.speed.export import in_parts

#: runtime -> the Python package it needs (pytorch: none).
RUNTIMES = {"pytorch": None, "onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "onnxruntime"}
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
#: export format -> the runtime that runs it.
FORMAT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino"}
INSTALL_HINT = 'pip install -e ".[deploy]" (onnx, onnxscript, onnxruntime, openvino)'


class RuntimeMissing(RuntimeError):
    """A runtime whose package is not installed."""


def require(runtime: str):
    """The runtime's module; ValueError for an unknown runtime, RuntimeMissing (with the install
    line) when its package is not installed."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose from {list(RUNTIMES)}")
    package = RUNTIMES[runtime]
    if package is None:
        return torch
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise RuntimeMissing(f"runtime '{runtime}' is not installed ({error}): {INSTALL_HINT}") from None
    if runtime == "tensorrt" and TENSORRT_PROVIDER not in module.get_available_providers():
        raise RuntimeMissing(f"runtime 'tensorrt' needs ONNX Runtime's {TENSORRT_PROVIDER} (onnxruntime-gpu with "
                             f"the TensorRT libraries); this onnxruntime has {module.get_available_providers()}")
    return module


def runtime_errors(runtimes) -> list[RuntimeMissing]:
    """Why each runtime of ``runtimes`` that cannot run is missing (empty: all can)."""
    out = []
    for runtime in runtimes:
        try:
            require(runtime)
        except RuntimeMissing as error:
            out.append(error)
    return out


def missing_runtimes(runtimes) -> list[str]:
    """The runtimes of ``runtimes`` whose package (or, for tensorrt, provider) is absent."""
    return [r for r in runtimes if runtime_errors([r])]


class OnnxRuntimeGraph:
    """One ONNX file in an ONNX Runtime CPU session: list of float32 arrays -> list of arrays."""

    def __init__(self, path: Path, threads: int):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # no busy-waiting between runs: its spinning threads would slow the PyTorch post-processing that follows
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.input_names, arrays)))


class OpenVinoGraph:
    """One ONNX or OpenVINO IR file compiled for OpenVINO's CPU plugin (module docstring)."""

    def __init__(self, path: Path, threads: int):
        ov = require("openvino")
        config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(arrays)
        return [np.asarray(results[output]) for output in self.compiled.outputs]


class TensorRTGraph(OnnxRuntimeGraph):
    """One ONNX file in an ONNX Runtime session on TensorRT (fp32 engine, cached beside the file),
    the CUDA provider for what TensorRT does not take (module docstring)."""

    def __init__(self, path: Path, threads: int):
        ort = require("tensorrt")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        trt = {"device_id": 0, "trt_fp16_enable": False, "trt_engine_cache_enable": True,
               "trt_engine_cache_path": str(Path(path).parent / "trt_cache")}
        self.session = ort.InferenceSession(str(path), options, providers=[
            (TENSORRT_PROVIDER, trt), "CUDAExecutionProvider", "CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]


GRAPH_KINDS = {"onnxruntime": OnnxRuntimeGraph, "openvino": OpenVinoGraph, "tensorrt": TensorRTGraph}


def runtime_settings(runtime: str, threads: int) -> str:
    """One line stating how ``runtime`` runs (its version, threads, precision)."""
    if runtime == "pytorch":
        return f"PyTorch {torch.__version__} eager, {threads} threads"
    module = require(runtime)
    if runtime == "onnxruntime":
        return (f"ONNX Runtime {module.__version__} CPUExecutionProvider, {threads} intra-op threads, "
                "ORT_ENABLE_ALL, no spinning")
    if runtime == "tensorrt":
        return (f"ONNX Runtime {module.__version__} {TENSORRT_PROVIDER} (fp32 engines, TF32 allowed), CUDA provider "
                "as fallback, inputs and outputs through host memory")
    return f"OpenVINO {module.__version__} CPU plugin, {threads} threads, LATENCY hint, f32 precision"


def _array(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().contiguous().cpu().numpy())


class ExportedNetwork:
    """``detector.network`` run by ``runtime`` from the files of ``records`` (``export_network``'s)
    in ``folder``: per graph, the file of the batch's size, else the dynamic one."""

    def __init__(self, detector: Detector, records: list[dict], folder: Path, runtime: str,
                 threads: int | None = None):
        if runtime not in GRAPH_KINDS:
            raise ValueError(f"runtime {runtime!r} runs no exported graph: choose from {list(GRAPH_KINDS)}")
        require(runtime)
        self.detector, self.runtime, self.folder = detector, runtime, Path(folder)
        self.threads = int(threads or torch.get_num_threads())
        self.files: dict[str, dict] = {}
        for record in records:
            file = record.get("openvino_file") if runtime == "openvino" else None
            self.files.setdefault(record["graph"], {})[str(record["batch"])] = file or record["file"]
        self.sessions: dict[tuple[str, str], object] = {}

    def graph(self, name: str, batch_size: int):
        """The runtime session of graph ``name`` for a batch of ``batch_size`` (built once)."""
        files = self.files.get(name, {})
        key = str(batch_size) if str(batch_size) in files else next((k for k in files if k.startswith("dynamic")),
                                                                     None)
        if key is None:
            raise ValueError(f"no exported '{name}' graph for batch {batch_size} (have batches {sorted(files)}): "
                             "export with that batch size or dynamic_batch=true")
        if (name, key) not in self.sessions:
            path = self.folder / files[key]
            if not path.is_file():
                raise FileNotFoundError(f"exported graph {path} is missing")
            self.sessions[(name, key)] = GRAPH_KINDS[self.runtime](path, self.threads)
        return self.sessions[(name, key)]

    def run(self, name: str, inputs: list[Tensor], batch_size: int) -> list[Tensor]:
        """Graph ``name``'s outputs on ``inputs``, on the first input's device."""
        outputs = self.graph(name, batch_size)([_array(t) for t in inputs])
        return [torch.from_numpy(np.asarray(o)).to(inputs[0].device) for o in outputs]

    def __call__(self, batch: Batch):
        b = int(batch.images.shape[0])
        if in_parts(self.detector):
            return self.detector.network_from_parts(
                batch, **{name: (lambda x, name=name: tuple(self.run(name, [x], b)))
                          for name in self.detector.export_parts})
        outputs = self.run("network", [batch.images], b)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class RuntimeDetector(Detector):
    """``detector`` with its network stage replaced by ``network`` (an ``ExportedNetwork``):
    same preprocess, postprocess, classes and input size; eval only."""

    def __init__(self, detector: Detector, network: ExportedNetwork):
        super().__init__()
        self.detector, self.exported = detector, network
        self.num_classes, self.input_size = detector.num_classes, detector.input_size
        self.fixed_input_size = detector.fixed_input_size
        self.train(False)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("an exported network runs in eval mode only")
        return super().train(False)

    def preprocess(self, images: list[Tensor], targets=None) -> Batch:
        return self.detector.preprocess(images, targets)

    def network(self, batch: Batch):
        return self.exported(batch)

    def postprocess(self, outputs, batch: Batch) -> list[Detection]:
        return self.detector.postprocess(outputs, batch)

    def candidates_scored(self, outputs, batch: Batch) -> list[int]:
        return self.detector.candidates_scored(outputs, batch)

    def num_candidates(self, image_size: tuple[int, int]) -> int:
        return self.detector.num_candidates(image_size)


def threads_default() -> int:
    """torch's intra-op thread count (what the PyTorch rows use), at most the CPUs."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
