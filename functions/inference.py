"""A trained network used on audio: its recipe from a checkpoint (or --cfg and --stats), inputs, embeddings.

A checkpoint written by training carries the config, the genotype and the feature statistics; older ones and
the authors' released ones are completed from the command line. Embeddings are computed as evaluation
computes them (each recipe's windows, the mean over windows, the same chunks shared between processes), from
audio files read at any rate and resampled to 16 kHz instead of from preprocessed features.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from data_objects.datasets import AudioWindowsDataset, load_normalization
from data_objects.errors import AudioError, DataError
from data_objects.voxceleb import AUDIO_SUFFIXES
from functions.distributed import DistributedContext
from functions.evaluation import embed_utterances
from functions.experiment import FEATURE_STATS_KEY, checkpoint_file, model_state
from functions.recipe import check_recipe
from models import MODEL_NAMES, build_model
from models.frontends import build_frontend, check_frontend_name
from models.genotypes import Genotype, GenotypeError, load_genotype
from models.waveform_embedder import WaveformEmbedder, build_windowing
from utils.checkpoint import load_checkpoint, load_state_dict_strict
from utils.config import ConfigError, get_default_config, merge_config_text, update_config
from utils.run_logging import get_logger

# Files given on the command line with one of these suffixes are lists of audio paths, one per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass
class TrainedModel:
    """A network in eval mode, with what cuts a 16 kHz waveform into its input windows as evaluation does."""

    cfg: CfgNode
    network: nn.Module
    # waveform [B, samples] -> windows [B, N, PARTIAL_N_FRAMES, feature_dim] (models/waveform_embedder.py)
    windowing: nn.Module
    feature_dim: int
    checkpoint: Path
    # Score at the EER of the last verification run during training; None when the checkpoint has none.
    threshold_at_eer: float | None

    def audio_dataset(self, paths: Sequence[Path]) -> AudioWindowsDataset:
        return AudioWindowsDataset(paths, UtteranceWindows(self.windowing), self.feature_dim,
                                   self.cfg.DATASET.PARTIAL_N_FRAMES)

    def embedder(self) -> WaveformEmbedder:
        return WaveformEmbedder(self.windowing, self.network).eval()


class UtteranceWindows:
    """A windowing module applied to one waveform: float32 samples [n] -> windows [N, frames, F] (a picklable
    callable, for DataLoader workers)."""

    def __init__(self, windowing: nn.Module) -> None:
        self.windowing = windowing

    @torch.no_grad()
    def __call__(self, samples: np.ndarray) -> np.ndarray:
        return self.windowing(torch.from_numpy(samples).unsqueeze(0))[0].numpy()


def _inference_config(checkpoint: dict, args, path: Path) -> CfgNode:
    """Defaults, then the checkpoint's config, then --cfg and the KEY VALUE overrides."""
    cfg = get_default_config()
    carried = checkpoint.get("config")
    if carried:
        merge_config_text(cfg, carried, f"config of {path}")
    elif not args.cfg:
        raise ConfigError(f"{path} carries no recipe (it predates self-contained checkpoints); pass --cfg with the "
                          "config it was trained with, and its overrides")
    cfg = update_config(cfg, args)
    if cfg.MODEL.NAME not in MODEL_NAMES:
        raise ConfigError(f"unknown MODEL.NAME '{cfg.MODEL.NAME}'; valid names: {', '.join(MODEL_NAMES)}")
    return cfg


def _genotype(cfg: CfgNode, args, checkpoint: dict) -> Genotype | None:
    if cfg.MODEL.NAME != "model":
        return None
    if getattr(args, "text_arch", None):
        return load_genotype(args.text_arch)
    if checkpoint.get("genotype") is not None:
        return checkpoint["genotype"]
    raise GenotypeError("MODEL.NAME 'model' needs a genotype and the checkpoint has none: pass --text_arch GENOTYPE")


def _frontend(cfg: CfgNode, args, checkpoint: dict, path: Path) -> nn.Module:
    """The configured front-end, with the feature statistics of --stats DATA_DIR, else of the checkpoint."""
    check_frontend_name(cfg.DATASET.FEATURES)
    mean = std = None
    if getattr(args, "stats", None):
        mean, std = load_normalization(args.stats)
    elif checkpoint.get(FEATURE_STATS_KEY) is not None:
        mean, std = (np.asarray(checkpoint[FEATURE_STATS_KEY][key], dtype=np.float32) for key in ("mean", "std"))
    try:
        return build_frontend(cfg, mean, std).eval()
    except ValueError as error:
        if mean is None:
            raise DataError(f"{path} carries no feature statistics, which DATASET.FEATURES "
                            f"'{cfg.DATASET.FEATURES}' needs; pass --stats DATA_DIR, the folder of the mean.npy and "
                            "std.npy it was trained with") from None
        raise DataError(f"feature statistics do not fit DATASET.FEATURES '{cfg.DATASET.FEATURES}': {error}") from None


def _last_threshold_at_eer(checkpoint: dict) -> float | None:
    verified = [row for row in checkpoint.get("history", []) if "threshold_at_eer" in row]
    return float(verified[-1]["threshold_at_eer"]) if verified else None


def load_trained_model(args) -> TrainedModel:
    """The network of `args.load_path` (a checkpoint file, or a run folder for its checkpoint_best.pth) and its
    recipe, in eval mode on the CPU."""
    path = checkpoint_file(args.load_path)
    checkpoint = load_checkpoint(path, map_location="cpu")
    state = model_state(checkpoint)
    cfg = _inference_config(checkpoint, args, path)
    if cfg.MODEL.NAME == "model_search" or "alphas_normal" in state:
        raise ConfigError(f"{path} is a checkpoint of the search network, which has no fixed architecture: derive "
                          "its genotype (search.py prints it, or pass the checkpoint to --text_arch) and train that "
                          "network with train_verification.py --text_arch GENOTYPE first")
    check_recipe(checkpoint, cfg, str(path))
    genotype = _genotype(cfg, args, checkpoint)
    frontend = _frontend(cfg, args, checkpoint, path)
    windowing = build_windowing(cfg, frontend).eval()
    rows = state.get("classifier.weight")
    num_classes = cfg.MODEL.NUM_CLASSES or (rows.shape[0] if rows is not None else 0)
    network = build_model(cfg, num_classes, genotype)
    load_state_dict_strict(network, state)
    network.eval()
    return TrainedModel(cfg, network, windowing, frontend.feature_dim, path, _last_threshold_at_eer(checkpoint))


# ----- inputs -----
@dataclass
class AudioInputs:
    """Audio files to embed: `keys[i]` names `paths[i]` in the outputs; `missing` lists what does not exist."""

    keys: list[str]
    paths: list[Path]
    missing: list[str]

    def add(self, key: str, path: Path) -> None:
        if path.is_file():
            self.keys.append(key)
            self.paths.append(path)
        else:
            self.missing.append(key)


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES


def _list_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read as a list of audio files: {error}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def collect_audio_inputs(inputs: Sequence[str], audio_dir: str | None = None) -> AudioInputs:
    """Audio files from files, folders (searched recursively for .wav and .flac; keys relative to the folder) and
    list files (LIST_SUFFIXES; one path per line, relative to `audio_dir` or else to the current folder)."""
    found = AudioInputs([], [], [])
    root = Path(audio_dir) if audio_dir else None
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            for audio in sorted(p for p in path.rglob("*") if _is_audio(p) and p.is_file()):
                found.add(audio.relative_to(path).as_posix(), audio)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            for line in _list_lines(path):
                entry = Path(line)
                found.add(line, entry if root is None or entry.is_absolute() else root / entry)
        else:
            found.add(given, path)
    seen: dict[str, Path] = {}
    keys, paths = [], []
    for key, path in zip(found.keys, found.paths):
        if key in seen:
            if seen[key].resolve() != path.resolve():
                raise DataError(f"two inputs are both named {key} ({seen[key]} and {path}); give the folders one "
                                "at a time, or a list of paths")
            continue
        seen[key] = path
        keys.append(key)
        paths.append(path)
    if not keys:
        listed = f" ({len(found.missing)} named that do not exist, e.g. {found.missing[0]})" if found.missing else ""
        raise DataError(f"no audio files among the inputs{listed}")
    return AudioInputs(keys, paths, found.missing)


def count_skipped(reasons: Sequence[str]) -> str:
    """'3 skipped: 2 missing, 1 unreadable', or '0 skipped'."""
    counts = Counter(reasons)
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    return f"{len(reasons)} skipped" + (f": {detail}" if detail else "")


# ----- embeddings -----
@dataclass
class AudioEmbeddings:
    """Mean window embedding of every file that could be read (`embedded[i]` says whether file i could)."""

    embeddings: torch.Tensor
    embedded: np.ndarray
    failures: list[AudioError]


def embed_audio(
    model: TrainedModel, paths: Sequence[Path], ctx: DistributedContext, num_workers: int = 0
) -> AudioEmbeddings:
    """Embed each file once, as evaluation embeds an utterance; unreadable files are named in the log and left out."""
    dataset = model.audio_dataset(paths)
    embeddings, _, counts = embed_utterances(model.network, dataset, ctx, num_workers, desc="embedding")
    embedded = (counts > 0).numpy()
    failures = [dataset.failure(int(index)) for index in np.flatnonzero(~embedded)]
    logger = get_logger()
    for failure in failures:
        logger.info(f"skipped {failure}")
    return AudioEmbeddings(embeddings, embedded, failures)


def require_some(embedded: np.ndarray, what: str, reasons: Callable[[], str]) -> None:
    if not embedded.any():
        raise DataError(f"none of the {embedded.size} {what} could be read as audio ({reasons()})")
