"""Where a recipe's training and test data come from, chosen by DATASET.FEATURES through `FEATURE_SOURCES`.

'spectrogram': the features data_preprocess.py wrote (feature/, mean.npy, std.npy); only SpecAugment can be
applied to them. 'fbank': the wav files themselves through the fbank front-end, with every augmentation.
"""
from __future__ import annotations

from yacs.config import CfgNode

from data_objects import augmentation
from data_objects.datasets import SpectrogramDataset, TrialList, UtteranceWindowsDataset
from data_objects.wav_datasets import (
    WavCropDataset, WavTrialList, WavWindowsDataset, identification_utterances, identification_windows,
    verification_utterances,
)
from models.frontends import N_FFT, build_frontend, check_frontend_name, samples_for_frames
from utils.config import ConfigError


class PrecomputedSpectrograms:
    def __init__(self, cfg: CfgNode) -> None:
        self.cfg = cfg

    def identification_train_set(self, partition: str) -> SpectrogramDataset:
        dataset = self.cfg.DATASET
        return SpectrogramDataset(dataset.DATA_DIR, dataset.SUB_DIR, partition, dataset.PARTIAL_N_FRAMES,
                                  augmentation.build_spec_augment(self.cfg))

    def verification_train_set(self) -> SpectrogramDataset:
        dataset = self.cfg.DATASET
        return SpectrogramDataset(dataset.DATA_DIR, "dev", None, dataset.PARTIAL_N_FRAMES,
                                  augmentation.build_spec_augment(self.cfg))

    def identification_test_set(self, partition: str) -> UtteranceWindowsDataset:
        dataset = self.cfg.DATASET
        return UtteranceWindowsDataset(dataset.DATA_DIR, dataset.SUB_DIR, partition, dataset.PARTIAL_N_FRAMES)

    def trial_list(self, trials: str) -> TrialList:
        return TrialList(self.cfg.DATASET.DATA_DIR, trials)

    def verification_cohort_set(self) -> UtteranceWindowsDataset:
        """Every training utterance of verification, windowed as the trials are, labelled by speaker."""
        dataset = self.cfg.DATASET
        return UtteranceWindowsDataset(dataset.DATA_DIR, "dev", None, dataset.PARTIAL_N_FRAMES)


class WavFiles:
    def __init__(self, cfg: CfgNode) -> None:
        n_frames = cfg.DATASET.PARTIAL_N_FRAMES
        if samples_for_frames(n_frames) <= N_FFT // 2:
            raise ConfigError(f"DATASET.PARTIAL_N_FRAMES must be at least 3 with DATASET.FEATURES fbank (a crop must "
                              f"be longer than half the {N_FFT}-point FFT), got {n_frames}")
        self.cfg = cfg
        self.frontend = build_frontend(cfg).eval()
        shortest = getattr(self.frontend, "shortest_input", 0)
        if samples_for_frames(n_frames) < shortest:
            raise ConfigError(f"DATASET.PARTIAL_N_FRAMES {n_frames} is too short for DATASET.FEATURES "
                              f"{cfg.DATASET.FEATURES}: its crops of {samples_for_frames(n_frames)} samples hold no "
                              f"frame of {shortest}")

    def _train_set(self, classes, utterances) -> WavCropDataset:
        # A front-end of its own, in training mode: one that draws (Kaldi's dither) draws per item there only.
        return WavCropDataset(classes, utterances, build_frontend(self.cfg), self.cfg.DATASET.PARTIAL_N_FRAMES,
                              augmentation.speeds(self.cfg), augmentation.build_waveform_augmentation(self.cfg),
                              augmentation.build_spec_augment(self.cfg))

    def identification_train_set(self, partition: str) -> WavCropDataset:
        return self._train_set(*identification_utterances(self.cfg.DATASET.DATA_DIR, partition))

    def verification_train_set(self) -> WavCropDataset:
        return self._train_set(*verification_utterances(self.cfg.DATASET.DATA_DIR))

    def identification_test_set(self, partition: str) -> WavWindowsDataset:
        return identification_windows(self.cfg.DATASET.DATA_DIR, partition, self.frontend,
                                      self.cfg.DATASET.PARTIAL_N_FRAMES, len(augmentation.speeds(self.cfg)))

    def trial_list(self, trials: str) -> WavTrialList:
        return WavTrialList(self.cfg.DATASET.DATA_DIR, trials, self.frontend)

    def verification_cohort_set(self) -> WavWindowsDataset:
        """Every training utterance of verification, windowed as the trials are, labelled by speaker (its
        original speed only: the cohort stands for the speakers the trials are compared against)."""
        classes, utterances = verification_utterances(self.cfg.DATASET.DATA_DIR)
        return WavWindowsDataset([path for path, _ in utterances], [label for _, label in utterances],
                                 self.frontend, self.cfg.DATASET.PARTIAL_N_FRAMES, classes, len(classes))


FEATURE_SOURCES = {"spectrogram": PrecomputedSpectrograms, "fbank": WavFiles, "kaldi_fbank": WavFiles}


def feature_source(cfg: CfgNode) -> PrecomputedSpectrograms | WavFiles:
    check_frontend_name(cfg.DATASET.FEATURES)
    return FEATURE_SOURCES[cfg.DATASET.FEATURES](cfg)
