"""Writing a WaveformEmbedder as TorchScript or ONNX, and running the written file, by format name.

Both formats are traced from one example waveform; the module's shape arithmetic is made of tensor operations
(models/waveform_embedder.py), so the written graph takes any batch size and any number of samples.

Tracing (torch.jit.trace, and the TorchScript-based ONNX exporter) is deprecated since torch 2.9, but the
torch.export-based ONNX exporter of the pinned torch cannot export this module with a dynamic length: the number
of windows is computed from the input's length, and torch.export refuses to guard on it ("Could not guard on
data-dependent expression", docs/using_a_model.md). The deprecation notices are silenced, nothing else.
"""
from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from utils.files import write_atomically

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "waveform", "embedding"


@contextmanager
def _deprecation_notices_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # The window indices are Slice ops with a step: left unfolded, as they must be for a dynamic length.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        yield


def _traced(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with _deprecation_notices_silenced():
        return torch.jit.trace(module, example, check_trace=False)


def write_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    traced = _traced(module, example)
    with _deprecation_notices_silenced():
        write_atomically(path, lambda handle: torch.jit.save(traced, handle))


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    buffer = io.BytesIO()
    with _deprecation_notices_silenced():
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"}, OUTPUT_NAME: {0: "batch"}},
        )
    write_atomically(path, lambda handle: handle.write(buffer.getvalue()))


def run_torchscript(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    with _deprecation_notices_silenced():
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
