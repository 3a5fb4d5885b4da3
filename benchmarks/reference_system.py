"""A training-free reference: each utterance is its mean log-spectrum, compared by cosine similarity.

    python benchmarks/reference_system.py DATA_DIR

Identification: nearest speaker centroid over the `train` partition of feature/merged, scored on the `test`
partition (Top-1 over utterances). Verification: cosine of the two utterances of each trial of veri_test.txt
(EER as the paper computes it). It shows how far long-term spectral statistics get on a corpus, which is the
floor a trained network should clear.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_objects.datasets import SpectrogramDataset, TrialList, UtteranceWindowsDataset, load_features  # noqa: E402
from data_objects.errors import DataError  # noqa: E402
from functions.metrics import equal_error_rate  # noqa: E402

LOG_FLOOR = 1e-6


@dataclass(frozen=True)
class ReferenceResult:
    top1: float  # percent of test-partition utterances whose nearest train centroid is their speaker
    eer: float  # percent
    test_utterances: int
    trials: int
    skipped_trials: int


def mean_log_spectrum(path: Path) -> np.ndarray:
    features = np.asarray(load_features(path), dtype=np.float64)
    return np.log(features + LOG_FLOOR).mean(axis=0)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def identification_top1(data_dir: str | Path, sub_dir: str = "merged") -> tuple[float, int]:
    """Top-1 (%) of nearest-centroid identification, and the number of test utterances."""
    train = SpectrogramDataset(data_dir, sub_dir, "train")
    test = UtteranceWindowsDataset(data_dir, sub_dir, "test")
    train_profiles = np.stack([mean_log_spectrum(path) for path, _ in train.utterances])
    train_labels = np.array([label for _, label in train.utterances])
    center = train_profiles.mean(axis=0)
    train_profiles = _unit_rows(train_profiles - center)
    speakers = np.unique(train_labels)
    centroids = _unit_rows(np.stack([train_profiles[train_labels == s].mean(axis=0) for s in speakers]))
    test_profiles = _unit_rows(np.stack([mean_log_spectrum(path) for path in test.utterances]) - center)
    predicted = speakers[np.argmax(test_profiles @ centroids.T, axis=1)]
    return 100.0 * float(np.mean(predicted == np.asarray(test.labels))), len(test.utterances)


def verification_eer(data_dir: str | Path, trials_file: str = "veri_test.txt") -> tuple[float, TrialList]:
    """EER (%) of cosine scoring on a trial list, and the parsed list."""
    trials = TrialList(data_dir, trials_file)
    profiles = np.stack([mean_log_spectrum(path) for path in trials.paths])
    profiles = _unit_rows(profiles - profiles.mean(axis=0))
    scores = np.sum(profiles[trials.first] * profiles[trials.second], axis=1)
    return 100.0 * equal_error_rate(scores, trials.labels), trials


def evaluate_reference(data_dir: str | Path, trials_file: str = "veri_test.txt") -> ReferenceResult:
    top1, test_utterances = identification_top1(data_dir)
    eer, trials = verification_eer(data_dir, trials_file)
    return ReferenceResult(top1, eer, test_utterances, len(trials), trials.skipped)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mean log-spectrum + cosine reference: Top-1 and EER.")
    parser.add_argument("data_dir", help="a preprocessed corpus (data_preprocess.py has run on it)")
    parser.add_argument("--trials", default="veri_test.txt", help="trial list, relative to DATA_DIR unless absolute")
    args = parser.parse_args(argv)
    try:
        result = evaluate_reference(args.data_dir, args.trials)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Top-1 {result.top1:.2f} % ({result.test_utterances} test-partition utterances)")
    print(f"EER {result.eer:.2f} % ({result.trials} trials, {result.skipped_trials} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
