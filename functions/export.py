"""Writing a WaveformEmbedder as TorchScript or ONNX, and running the written file, by format name.

Both formats are traced from one example waveform; the module's shape arithmetic is made of tensor operations
(models/waveform_embedder.py), so the written graph takes any batch size and any number of samples.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from utils.files import write_atomically

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "waveform", "embedding"


def _traced(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice; tracing is what TorchScript needs
        return torch.jit.trace(module, example, check_trace=False)


def write_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    traced = _traced(module, example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.save's deprecation notice
        write_atomically(path, lambda handle: torch.jit.save(traced, handle))


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"}, OUTPUT_NAME: {0: "batch"}},
        )
    write_atomically(path, lambda handle: handle.write(buffer.getvalue()))


def run_torchscript(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(path), map_location="cpu")

    def embed(waveform: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(waveform)).numpy()

    return embed


def run_onnx(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime  # only ONNX files need it

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda waveform: session.run([OUTPUT_NAME], {INPUT_NAME: waveform})[0]


EXPORTERS: dict[str, tuple[Callable[[nn.Module, torch.Tensor, Path], None], Callable[[Path], Callable]]] = {
    "torchscript": (write_torchscript, run_torchscript),
    "onnx": (write_onnx, run_onnx),
}
