"""Saving and loading checkpoints safely.

A checkpoint is a dict (`epoch`, `state_dict`, `optimizer`, `path_helper`, `genotype`, `best_acc1` or
`best_eer`). Loading never runs code from the file: it unpickles with `weights_only=True`, which allows tensors
and plain containers, plus the two globals the published checkpoints carry: `utils.Genotype` and `range`
(pickled by Python 2 era protocols as `__builtin__.xrange`, which torch maps to `builtins.range`).
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.files import write_atomically
from utils.genotype import Genotype

ALLOWED_GLOBALS = [Genotype, range]

PathLike = str | os.PathLike
# Phrases of torch's weights-only unpickler when it refuses an object rather than fails to read the file.
_REFUSAL_MARKERS = ("call reduce for unrecognized function", "Can only create new object")
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model; the message is one line."""


def _first_sentence(text: str) -> str:
    return text.split(". ", 1)[0].rstrip(".")


def _describe(error: BaseException) -> str:
    """The informative part of an error from torch.load, in one short line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # Weights-only failures wrap the cause in generic paragraphs.
    informative = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    if not informative:
        return type(error).__name__
    if isinstance(error, LookupError):  # their message is the bare key or index
        return f"{type(error).__name__}: {informative[0]}"
    return _first_sentence(informative[0])


def _refusal(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"refused to load {path}: it carries code or objects that are not allowed ({what})")


def save_checkpoint(state: dict[str, Any], path: PathLike) -> None:
    """Write `state` atomically: a crash or a full disk leaves either the previous file or the new one, never a part."""
    write_atomically(path, lambda handle: torch.save(state, handle))


def _refused_globals(path: Path) -> list[str]:
    """Globals in the checkpoint's pickle that weights-only loading would refuse; [] when it cannot tell."""
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a zip checkpoint, or a damaged one: torch.load below names the problem
        return []


def load_checkpoint(path: PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict without executing anything from the file; raise CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    refused = _refused_globals(path)
    if refused:
        raise _refusal(path, ", ".join(refused))
    try:
        # torch warns, on several lines, about files pickled with another protocol; the outcome says enough.
        with torch.serialization.safe_globals(ALLOWED_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # The static scan above misses globals in legacy (non-zip) files; the unpickler names them.
        named_global = re.search(r"GLOBAL ([\w.]+)", str(error))
        if named_global:
            raise _refusal(path, named_global.group(1)) from None
        if any(marker in str(error) for marker in _REFUSAL_MARKERS):
            raise _refusal(path, _describe(error)) from None
        if "Unsupported operand" in str(error):  # a plain pickle of a newer protocol, not a torch.save file
            raise CheckpointError(
                f"refused to load {path}: not a checkpoint written by torch.save ({_describe(error)})"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt file ({_describe(error)})") from None
    except Exception as error:  # whatever else a damaged file makes the reader raise (EOF, zip, decoding errors)
        raise CheckpointError(
            f"cannot read checkpoint {path}: truncated or corrupt file ({_describe(error)})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    return checkpoint


def _shape(tensor: torch.Tensor) -> str:
    return str(list(tensor.shape))


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load `state_dict` into `model` after checking every key and shape; the error names the first misfit."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise CheckpointError(f"checkpoint does not fit the model: {key} is missing from the checkpoint")
        found = state_dict[key]
        if not isinstance(found, torch.Tensor):
            raise CheckpointError(f"checkpoint does not fit the model: {key} is a {type(found).__name__}, not a tensor")
        if found.shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint does not fit the model: {key} has shape {_shape(found)} in the checkpoint, "
                f"{_shape(tensor)} in the model"
            )
    for key in state_dict:
        if key not in expected:
            raise CheckpointError(f"checkpoint does not fit the model: {key} in the checkpoint is not in the model")
    model.load_state_dict(state_dict)
