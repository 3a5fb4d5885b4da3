"""Augmentation (SPEC §13) against properties computed here: SNRs, a delta room response, tone frequencies, masks,
and the determinism exact resume relies on."""
from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from data_objects import augmentation
from data_objects.augmentation import (
    NOISE_KINDS, SPEEDS, AdditiveNoise, Reverberation, SpecAugment, WaveformAugmentation, change_speed, mix_at_snr,
    reverberate, scan_audio_folder,
)
from data_objects.errors import DataError
from data_objects.synthetic_augmentation import DIRECT_TO_REVERBERANT_DB
from data_objects.sources import feature_source
from functions.data_loading import SeededItems, item_seed, training_loader
from functions.distributed import single_process
from utils.config import get_default_config

RATE = 16_000


def tone(frequency: float, seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * RATE / len(samples))


def snr_db(clean: np.ndarray, mixed: np.ndarray) -> float:
    noise = mixed.astype(np.float64) - clean
    return 10.0 * np.log10(np.mean(np.square(clean, dtype=np.float64)) / np.mean(noise**2))


@pytest.fixture(scope="module")
def speech(wav_corpus) -> np.ndarray:
    path = sorted((wav_corpus / "dev" / "wav").rglob("*.wav"))[0]
    return soundfile.read(path, dtype="float32")[0][: 2 * RATE]


@pytest.mark.parametrize("target", [0.0, 7.5, 20.0])
def test_mixing_gives_the_asked_snr(speech, target):
    noise = np.random.default_rng(1).standard_normal(len(speech)).astype(np.float32)
    assert abs(snr_db(speech, mix_at_snr(speech, noise, target)) - target) < 0.01


def test_noise_of_each_kind_is_mixed_at_its_drawn_snr_in_its_range(speech, augmentation_dir):
    noise = AdditiveNoise(augmentation_dir / "musan")
    assert noise.kinds == ["noise", "music", "speech"]
    seen = set()
    speech_power = np.mean(np.square(speech, dtype=np.float64))
    for seed in range(30):
        torch.manual_seed(seed)
        draw = noise.draw(len(speech))
        torch.manual_seed(seed)
        mixed = noise(speech)
        low, high = NOISE_KINDS[draw.kind][0]
        assert all(low <= snr <= high for snr in draw.snrs_db)
        # Each file at its own SNR against the clean speech.
        expected = sum(n * np.sqrt(speech_power / (np.mean(np.square(n, dtype=np.float64)) * 10 ** (snr / 10)))
                       for n, snr in zip(draw.noises, draw.snrs_db))
        np.testing.assert_allclose(mixed - speech, expected, atol=1e-5)
        if draw.kind != "speech":
            assert len(draw.noises) == 1 and abs(snr_db(speech, mixed) - draw.snrs_db[0]) < 0.5
        seen.add(draw.kind)
    assert seen == set(NOISE_KINDS)


def test_babble_sums_three_to_seven_different_speech_files(augmentation_dir, monkeypatch):
    noise = AdditiveNoise(augmentation_dir / "musan")
    noise.kinds = ["speech"]
    folder = augmentation_dir / "musan" / "speech"
    read = []
    monkeypatch.setattr(augmentation, "read_random_span",
                        lambda file, n: read.append(file.path) or np.ones(n, dtype=np.float32))
    noise.files["speech"] = [augmentation.AudioFile(folder / f"{i}.wav", 16000) for i in range(8)]
    counts = set()
    for seed in range(40):
        torch.manual_seed(seed)
        read.clear()
        draw = noise.draw(1000)
        assert {path.parent.name for path in read} == {"speech"} and len(draw.noises) == len(draw.snrs_db) == len(read)
        assert len(set(read)) == len(read), "a babble file drawn twice"
        counts.add(len(read))
    assert counts == {3, 4, 5, 6, 7}
    # A folder of 3 files gives at most 3 different ones.
    noise.files["speech"] = noise.files["speech"][:3]
    for seed in range(10):
        torch.manual_seed(seed)
        read.clear()
        noise.draw(1000)
        assert len(set(read)) == len(read) == 3


def test_five_babble_files_at_15_db_each_sum_to_about_8_db():
    rng = np.random.default_rng(0)
    speech = rng.standard_normal(16000).astype(np.float32)
    noises = [rng.standard_normal(16000).astype(np.float32) for _ in range(5)]
    mixed = augmentation.mix_at_snrs(speech, noises, [15.0] * 5)
    assert abs(snr_db(speech, mixed) - (15.0 - 10 * np.log10(5))) < 0.2


def test_one_of_applies_at_most_one_step_with_its_probability(speech):
    marks = []
    chain = augmentation.AUGMENT_MODES["one_of"]([(0.3, lambda s: marks.append("a") or s),
                                                 (0.3, lambda s: marks.append("b") or s)])
    torch.manual_seed(0)
    for _ in range(1000):
        before = len(marks)
        chain(speech)
        assert len(marks) - before <= 1
    assert 250 <= marks.count("a") <= 350 and 250 <= marks.count("b") <= 350


def test_one_of_probabilities_above_1_are_refused(tmp_path):
    import argparse

    from functions.experiment import load_config
    from utils.config import ConfigError

    with pytest.raises(ConfigError, match=r"AUGMENT.NOISE_PROB \+ AUGMENT.RIR_PROB must be at most 1, got 1.2"):
        load_config(argparse.Namespace(cfg=None, opts=[
            "DATASET.DATA_DIR", str(tmp_path), "DATASET.FEATURES", "fbank", "AUGMENT.MODE", "one_of",
            "AUGMENT.NOISE_DIR", str(tmp_path), "AUGMENT.NOISE_PROB", "0.6", "AUGMENT.RIR_DIR", str(tmp_path),
            "AUGMENT.RIR_PROB", "0.6"]))
    with pytest.raises(ConfigError, match="unknown AUGMENT.MODE 'both'; valid names: independent, one_of"):
        load_config(argparse.Namespace(cfg=None, opts=["DATASET.DATA_DIR", str(tmp_path), "AUGMENT.MODE", "both"]))


def test_a_delta_room_response_returns_the_input_at_any_delay_and_gain(speech):
    for delay, gain in ((0, 1.0), (37, 0.2), (400, 5.0)):
        rir = np.zeros(2000, dtype=np.float32)
        rir[delay] = gain
        np.testing.assert_allclose(reverberate(speech, rir), speech, atol=1e-6)


def test_reverberation_keeps_length_and_alignment(speech, augmentation_dir):
    reverberation = Reverberation(augmentation_dir / "rirs")
    torch.manual_seed(0)
    out = reverberation(speech)
    assert out.shape == speech.shape and out.dtype == np.float32
    assert not np.allclose(out, speech, atol=1e-3)
    # Aligned on the direct path: reverberant white noise correlates best with the dry noise at lag 0.
    white = np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    torch.manual_seed(0)
    wet = reverberation(white)
    lags = range(-200, 201)
    correlation = [np.dot(wet[200:-200], white[200 + lag : len(white) - 200 + lag]) for lag in lags]
    assert lags[int(np.argmax(correlation))] == 0
    # Normalised to unit energy: a louder copy of the same room gives the same output.
    rir = soundfile.read(reverberation.files[0].path, dtype="float32")[0]
    np.testing.assert_allclose(reverberate(speech, rir * 3.0), reverberate(speech, rir), atol=1e-5)


@pytest.mark.parametrize("speed", SPEEDS)
def test_speed_changes_tempo_and_pitch(speed):
    samples = tone(440.0, 1.0)
    faster = change_speed(samples, speed)
    assert abs(len(faster) - len(samples) / speed) <= 1
    assert abs(dominant_frequency(faster) - 440.0 * speed) < 2.0


def test_spec_augment_masks_one_time_span_and_one_band():
    features = torch.randn(100, 80) + 10.0
    masked_frames, masked_bins = set(), set()
    for seed in range(50):
        torch.manual_seed(seed)
        out = SpecAugment(1.0, 20, 10)(features)
        zero = out == 0
        frames, bins = torch.nonzero(zero.all(dim=1)).flatten(), torch.nonzero(zero.all(dim=0)).flatten()
        assert torch.equal(zero, zero.all(dim=1, keepdim=True) | zero.all(dim=0, keepdim=True))
        for span, widest in ((frames, 20), (bins, 10)):
            assert len(span) <= widest and (len(span) == 0 or span[-1] - span[0] == len(span) - 1)
        masked_frames.add(len(frames))
        masked_bins.add(len(bins))
    assert max(masked_frames) >= 15 and max(masked_bins) >= 8
    assert torch.equal(SpecAugment(0.0, 20, 10)(features), features)


def test_waveform_steps_apply_with_their_probability(speech):
    marks = []
    chain = WaveformAugmentation([(0.25, lambda s: marks.append("a") or s), (0.75, lambda s: marks.append("b") or s)])
    torch.manual_seed(0)
    for _ in range(400):
        chain(speech)
    assert 60 <= marks.count("a") <= 140 and 260 <= marks.count("b") <= 340


def write_wav(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, RATE, "PCM_16")
    return path


def test_unreadable_files_are_named_counted_skipped_and_logged(tmp_path):
    write_wav(tmp_path / "rirs" / "good.wav", tone(100.0, 0.1))
    (tmp_path / "rirs" / "broken.wav").write_bytes(b"RIFF nonsense")
    (tmp_path / "rirs" / "empty.wav").write_bytes(b"")
    # A handler on the project's logger itself: a run set up earlier in this process stops its propagation.
    logger = logging.getLogger("autospeech")
    collected = logging.handlers.BufferingHandler(capacity=100)
    logger.addHandler(collected)
    try:
        files = scan_audio_folder(tmp_path / "rirs", "AUGMENT.RIR_DIR")
    finally:
        logger.removeHandler(collected)
    assert [file.path.name for file in files] == ["good.wav"] and files[0].length == 1600
    (message,) = [record.getMessage() for record in collected.buffer if record.levelno >= logging.WARNING]
    assert "2 of 3 audio files cannot be read and are skipped" in message
    assert "broken.wav" in message and "empty.wav" in message
    (tmp_path / "rirs" / "good.wav").unlink()
    with pytest.raises(DataError, match=r"none of its 2 audio files can be read"):
        scan_audio_folder(tmp_path / "rirs", "AUGMENT.RIR_DIR")


def augmented_config(corpus: Path, augmentation_dir: Path, **augment):
    cfg = get_default_config()
    cfg.DATASET.DATA_DIR, cfg.DATASET.FEATURES, cfg.DATASET.PARTIAL_N_FRAMES = str(corpus), "fbank", 100
    cfg.AUGMENT.update({"NOISE_DIR": str(augmentation_dir / "musan"), "NOISE_PROB": 0.6,
                        "RIR_DIR": str(augmentation_dir / "rirs"), "RIR_PROB": 0.6, "SPEED_PERTURB": True,
                        "SPECAUGMENT_PROB": 0.6, **augment})
    return cfg


def test_an_augmented_item_is_a_function_of_seed_epoch_and_index(wav_corpus, augmentation_dir):
    items = SeededItems(feature_source(augmented_config(wav_corpus, augmentation_dir)).verification_train_set())
    key = (5, item_seed(0, 2, 5))
    torch.manual_seed(123)
    first, label = items[key]
    torch.rand(17)  # the global generator's state must not matter
    again, label_again = items[key]
    assert torch.equal(first, again) and label == label_again
    others = [items[(5, item_seed(seed, epoch, 5))][0] for seed, epoch in ((1, 2), (0, 3))]
    assert all(not torch.equal(first, other) for other in others)


def test_speed_perturbation_makes_three_times_the_classes(wav_corpus, augmentation_dir, monkeypatch):
    source = feature_source(augmented_config(wav_corpus, augmentation_dir))
    train = source.verification_train_set()
    speakers = sorted(entry.name for entry in (wav_corpus / "dev" / "wav").iterdir())
    assert train.num_classes == 3 * len(speakers) == 21
    assert train.classes == speakers + [f"{s}@0.9" for s in speakers] + [f"{s}@1.1" for s in speakers]
    speeds_read = []
    crop = train.crop
    monkeypatch.setattr(train, "crop", lambda path, speed: speeds_read.append(speed) or crop(path, speed))
    labels = set()
    for seed in range(24):
        torch.manual_seed(seed)
        _, label = train[4]
        speaker = speakers.index(train.utterances[4][0].parts[-3])
        assert label == speaker + SPEEDS.index(speeds_read[-1]) * len(speakers)
        labels.add(label)
    assert labels == {speaker + k * len(speakers) for k in range(3)}
    # Evaluation is never perturbed: test labels are the speakers themselves, the classifier keeps its size.
    test_set = source.identification_test_set("test")
    assert test_set.num_classes == 3 * len(test_set.classes) and max(test_set.labels) < len(test_set.classes)


def test_a_crop_at_another_speed_is_that_span_played_faster(tmp_path):
    from data_objects.wav_datasets import WavCropDataset
    from models.frontends import FbankFrontend, samples_for_frames

    path = write_wav(tmp_path / "tone.wav", tone(500.0, 3.0))
    dataset = WavCropDataset(["a"], [(path, 0)], FbankFrontend(), 100, SPEEDS)
    for speed in SPEEDS:
        torch.manual_seed(0)
        crop = dataset.crop(path, speed)
        assert len(crop) == samples_for_frames(100)
        assert abs(dominant_frequency(crop) - 500.0 * speed) < 3.0


def test_the_generated_room_responses_start_with_their_direct_path_and_decay(augmentation_dir):
    for kind in ("noise", "music", "speech"):
        assert len(list((augmentation_dir / "musan" / kind).glob("*.wav"))) == 3
    for path in sorted((augmentation_dir / "rirs").glob("*.wav")):
        rir = soundfile.read(path, dtype="float32")[0]
        direct = int(np.argmax(np.abs(rir)))
        assert 16 <= direct <= 80 and np.all(rir[:direct] == 0)  # 1-5 ms
        quarter = len(rir) // 4
        tail = rir[direct + 1 :]
        assert np.sum(tail[-quarter:] ** 2) < 1e-3 * np.sum(tail[:quarter] ** 2)


def test_the_generated_rooms_keep_the_direct_path_within_their_direct_to_reverberant_ratio(augmentation_dir):
    low, high = DIRECT_TO_REVERBERANT_DB
    for path in sorted((augmentation_dir / "rirs").glob("*.wav")):
        rir = soundfile.read(path, dtype="float64")[0]
        direct = int(np.argmax(np.abs(rir)))
        ratio_db = 10.0 * np.log10(rir[direct] ** 2 / np.sum(rir[direct + 1 :] ** 2))
        # 16-bit rounding of the tail moves the ratio by far less than 0.1 dB.
        assert low - 0.1 <= ratio_db <= high + 0.1, (path.name, ratio_db)


def test_augmented_batches_do_not_depend_on_the_number_of_loader_workers(wav_corpus, augmentation_dir):
    dataset = feature_source(augmented_config(wav_corpus, augmentation_dir)).verification_train_set()
    ctx = single_process("cpu")
    batches = []
    for workers in (0, 2):
        loader = training_loader(dataset, 4, seed=5, ctx=ctx, num_workers=workers, max_batches=2)
        loader.sampler.set_epoch(1)
        batches.append(list(loader))
    for (features, labels), (features_w, labels_w) in zip(*batches):
        assert torch.equal(features, features_w) and torch.equal(labels, labels_w)


def test_the_precomputed_spectrograms_take_spec_augment_and_stay_as_published_without_it(tiny_corpus):
    from data_objects.datasets import SpectrogramDataset

    cfg = get_default_config()
    cfg.DATASET.DATA_DIR, cfg.DATASET.PARTIAL_N_FRAMES = str(tiny_corpus), 100
    published = SpectrogramDataset(tiny_corpus, "merged", "train", 100)
    plain = feature_source(cfg).identification_train_set("train")
    cfg.AUGMENT.SPECAUGMENT_PROB = 1.0
    masked = feature_source(cfg).identification_train_set("train")
    for seed in range(5):
        torch.manual_seed(seed)
        expected, label = published[3]
        torch.manual_seed(seed)
        assert torch.equal(plain[3][0], expected)
        torch.manual_seed(seed)
        window, masked_label = masked[3]
        zero = window == 0
        assert masked_label == label and window.shape == expected.shape == (100, 257)
        # The same crop; the masks' draws come before the time reversal's, which may then go the other way.
        assert any(torch.equal(window[~zero], crop[~zero]) for crop in (expected, expected.flip(0)))
        assert zero.any() and torch.equal(zero, zero.all(dim=1, keepdim=True) | zero.all(dim=0, keepdim=True))
