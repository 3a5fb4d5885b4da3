"""A trained speaker model, loaded once from its checkpoint: the Python API, and what every script that uses a
checkpoint loads it through (extract_embeddings.py, score_trials.py, export.py, evaluate_*.py).

    from functions.speaker_model import SpeakerModel

    model = SpeakerModel.from_checkpoint("runs/logs_scratch/run/Model/checkpoint_best.pth")
    embedding = model.embed("a.wav")                  # or model.embed(samples, sample_rate=44_100)
    score, same = model.verify("a.wav", "b.wav")      # cosine score, and score >= the checkpoint's EER threshold

A checkpoint written by training carries its config, the genotype of a cell network, the feature statistics
and the EER threshold of its verifications; older ones and the authors' released ones are completed with
`cfg_file` and `overrides`, `text_arch` and `stats`. Audio is embedded as evaluation embeds an utterance
(functions/inference.py).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from data_objects.audio import SAMPLE_RATE, resample
from data_objects.datasets import AudioWindowsDataset, ClipRule, load_normalization
from data_objects.errors import AudioError, DataError
from functions.distributed import select_device, single_process
from functions.evaluation import embed_utterances
from functions.experiment import FEATURE_STATS_KEY, checkpoint_file, model_state
from functions.recipe import check_recipe
from models import MODEL_NAMES, build_model
from models.frontends import build_frontend, check_frontend_name, samples_for_frames
from models.genotypes import Genotype, choose_genotype
from models.waveform_embedder import WaveformEmbedder, build_windowing
from utils.checkpoint import load_checkpoint, load_state_dict_strict
from utils.config import ConfigError, get_default_config, merge_config_text, update_config

Audio = str | os.PathLike | np.ndarray
# What happens to a clip shorter than the minimum: left out, or embedded with a warning.
SHORT_CLIP_ACTIONS = ("skip", "warn")


class UtteranceWindows:
    """A windowing module applied to one waveform: float32 samples [n] -> windows [N, frames, F] (a picklable
    callable, for DataLoader workers)."""

    def __init__(self, windowing: nn.Module) -> None:
        self.windowing = windowing

    @torch.no_grad()
    def __call__(self, samples: np.ndarray) -> np.ndarray:
        return self.windowing(torch.from_numpy(samples).unsqueeze(0))[0].numpy()


class SpeakerModel:
    """A network in eval mode with its recipe: the config, the genotype, the front-end with its statistics (what
    cuts a 16 kHz waveform into evaluation's windows), the EER thresholds and the rule for short clips."""

    def __init__(self, cfg: CfgNode, network: nn.Module, windowing: nn.Module | None, feature_dim: int,
                 checkpoint: Path, genotype: Genotype | None, thresholds: dict[str, float],
                 device: torch.device, rule: ClipRule) -> None:
        self.cfg, self.network, self._windowing, self.feature_dim = cfg, network, windowing, feature_dim
        self.checkpoint, self.genotype, self.thresholds = checkpoint, genotype, thresholds
        self.device, self.rule = device, rule

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device | None = None, *, cfg_file: str | None = None,
        overrides: Sequence[str] = (), text_arch: str | None = None, stats: str | os.PathLike | None = None,
        min_seconds: float | None = None, short: str = "skip", evaluation_config: CfgNode | None = None,
        num_classes: int | None = None,
    ) -> "SpeakerModel":
        """The model of a checkpoint file, or of a run folder (its checkpoint_best.pth).

        `device`: 'cpu', 'cuda' or a torch.device; None takes CUDA when the machine has it, else the CPU,
        wherever the checkpoint was trained. The config is the defaults, then the checkpoint's, then `cfg_file`
        and the KEY VALUE `overrides`. Clips shorter than `min_seconds` (None: one evaluation window,
        DATASET.PARTIAL_N_FRAMES frames) are refused (`short` 'skip') or embedded (`short` 'warn').
        `evaluation_config` is the config of an evaluation script, used instead: the network alone is built
        (evaluation reads preprocessed features), for `num_classes` classes when given.
        """
        path = checkpoint_file(str(path))
        checkpoint = load_checkpoint(path, map_location="cpu")
        state = model_state(checkpoint)
        if evaluation_config is None:
            cfg = _config(checkpoint, path, cfg_file, overrides)
            if cfg.MODEL.NAME == "model_search" or "alphas_normal" in state:
                raise ConfigError(
                    f"{path} is a checkpoint of the search network, which has no fixed architecture: derive its "
                    "genotype (search.py prints it, or pass the checkpoint to --text_arch) and train that network "
                    "with train_verification.py --text_arch GENOTYPE first")
        else:
            cfg = evaluation_config
        check_recipe(checkpoint, cfg, str(path))
        genotype = _genotype(cfg, text_arch, checkpoint)
        windowing, feature_dim = None, 0
        if evaluation_config is None:
            frontend = _frontend(cfg, stats, checkpoint, path)
            windowing, feature_dim = build_windowing(cfg, frontend).eval(), frontend.feature_dim
        if num_classes is None:
            rows = state.get("classifier.weight")
            num_classes = cfg.MODEL.NUM_CLASSES or (rows.shape[0] if rows is not None else 0)
        network = build_model(cfg, num_classes, genotype)
        load_state_dict_strict(network, state)
        device = torch.device(device) if device is not None else select_device("auto")
        network.to(device).eval()
        if short not in SHORT_CLIP_ACTIONS:
            raise ConfigError(f"unknown action '{short}' for short clips; valid: {', '.join(SHORT_CLIP_ACTIONS)}")
        window_samples = samples_for_frames(cfg.DATASET.PARTIAL_N_FRAMES)
        minimum = window_samples if min_seconds is None else round(min_seconds * SAMPLE_RATE)
        if minimum < 0:
            raise ConfigError(f"the minimum clip length must be at least 0 s, got {min_seconds}")
        return cls(cfg, network, windowing, feature_dim, path, genotype, _thresholds(checkpoint), device,
                   ClipRule(minimum, short == "skip"))

    # ----- what the scripts use -----
    @property
    def windowing(self) -> nn.Module:
        """waveform [B, samples] -> windows [B, N, PARTIAL_N_FRAMES, F] (models/waveform_embedder.py)."""
        if self._windowing is None:
            raise ConfigError("this model was loaded for evaluation of preprocessed features and has no front-end")
        return self._windowing

    @property
    def threshold_at_eer(self) -> float | None:
        """Score at the EER of the last verification run during training; None when the checkpoint has none."""
        return self.thresholds.get("")

    def audio_dataset(self, clips: Sequence[Audio]) -> AudioWindowsDataset:
        return AudioWindowsDataset(clips, UtteranceWindows(self.windowing), self.feature_dim,
                                   self.cfg.DATASET.PARTIAL_N_FRAMES, self.rule)

    def embedder(self) -> WaveformEmbedder:
        """One module, waveform [B, samples] at 16 kHz -> embedding [B, E] (what export.py writes)."""
        return WaveformEmbedder(self.windowing, self.network).eval()

    # ----- the Python API -----
    def embed(self, audio: Audio, sample_rate: int | None = None) -> np.ndarray:
        """The embedding [E] of an audio file (.wav or .flac) or of float samples ([n], or [n, channels],
        averaged) at `sample_rate` (default 16 kHz; other rates are resampled)."""
        return self.embed_batch([audio], sample_rate)[0]

    def embed_batch(self, clips: Sequence[Audio], sample_rate: int | None = None) -> np.ndarray:
        """Embeddings [N, E] of several clips, batched as extract_embeddings.py batches them; a clip that cannot
        be embedded (unreadable, silent, too short) raises its one-line AudioError."""
        dataset = self.audio_dataset([_mono_16k(clip, sample_rate) if isinstance(clip, np.ndarray) else clip
                                      for clip in clips])
        embeddings, _, counts = embed_utterances(self.network, dataset, single_process(str(self.device)))
        failed = np.flatnonzero(counts.numpy() == 0)
        if failed.size:
            raise dataset.failure(int(failed[0]))
        return embeddings.numpy()

    def score(self, a: Audio, b: Audio, sample_rate: int | None = None) -> float:
        """Cosine similarity of the embeddings of two clips."""
        first, second = self.embed_batch([a, b], sample_rate)
        return cosine_score(first, second)

    def verify(self, a: Audio, b: Audio, sample_rate: int | None = None,
               threshold: float | None = None) -> tuple[float, bool]:
        """(score, same speaker): the cosine score and whether it reaches `threshold` (default: the checkpoint's
        EER threshold)."""
        threshold = self.threshold_at_eer if threshold is None else threshold
        if threshold is None:
            raise DataError(f"{self.checkpoint} carries no EER threshold: pass threshold=")
        score = self.score(a, b, sample_rate)
        return score, score >= threshold


def cosine_score(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def from_arguments(args: argparse.Namespace, device: str | torch.device | None = None) -> SpeakerModel:
    """The model of a script's --load_path, --cfg, KEY VALUE overrides, --text_arch, --stats, --min_seconds and
    --short."""
    return SpeakerModel.from_checkpoint(
        args.load_path, device, cfg_file=args.cfg, overrides=list(args.opts or []),
        text_arch=getattr(args, "text_arch", None), stats=getattr(args, "stats", None),
        min_seconds=getattr(args, "min_seconds", None), short=getattr(args, "short", "skip"),
    )


def _mono_16k(samples: np.ndarray, sample_rate: int | None) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    if samples.ndim != 1:
        raise AudioError("unreadable", f"samples must be [n] or [n, channels], got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise AudioError("unreadable", "samples contain NaN or infinite values")
    return np.ascontiguousarray(resample(samples, sample_rate or SAMPLE_RATE))


def _config(checkpoint: dict, path: Path, cfg_file: str | None, overrides: Sequence[str]) -> CfgNode:
    """Defaults, then the checkpoint's config, then `cfg_file` and the KEY VALUE overrides."""
    cfg = get_default_config()
    carried = checkpoint.get("config")
    if carried:
        merge_config_text(cfg, carried, f"config of {path}")
    elif not cfg_file:
        raise ConfigError(f"{path} carries no recipe (it predates self-contained checkpoints); pass --cfg with the "
                          "config it was trained with, and its overrides")
    cfg = update_config(cfg, argparse.Namespace(cfg=cfg_file, opts=list(overrides)))
    if cfg.MODEL.NAME not in MODEL_NAMES:
        raise ConfigError(f"unknown MODEL.NAME '{cfg.MODEL.NAME}'; valid names: {', '.join(MODEL_NAMES)}")
    return cfg


def _genotype(cfg: CfgNode, text_arch: str | None, checkpoint: dict) -> Genotype | None:
    """The genotype of a genotype network: `text_arch`, else the checkpoint's; both must agree."""
    if cfg.MODEL.NAME != "model":
        return None
    return choose_genotype(text_arch, checkpoint.get("genotype"), "the checkpoint carries")


def _frontend(cfg: CfgNode, stats: str | os.PathLike | None, checkpoint: dict, path: Path) -> nn.Module:
    """The configured front-end, with the feature statistics of `stats` (a DATA_DIR), else of the checkpoint."""
    check_frontend_name(cfg.DATASET.FEATURES)
    mean = std = None
    if stats:
        mean, std = load_normalization(stats)
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


def _thresholds(checkpoint: dict) -> dict[str, float]:
    """The EER threshold of the last verification in the checkpoint's history: of the raw scores under '', of
    each score normalisation under its name."""
    verified = [row for row in checkpoint.get("history", []) if "threshold_at_eer" in row]
    if not verified:
        return {}
    prefix = "threshold_at_eer"
    return {key[len(prefix) + 1:]: float(value) for key, value in verified[-1].items() if key.startswith(prefix)}
