"""Front-ends against independent references: the numpy features of data_objects.audio, and librosa."""
from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile
import torch

from data_objects import audio
from models.frontends import (
    FRONTENDS, LOG_FLOOR, FbankFrontend, SpectrogramFrontend, build_frontend, frame_count, samples_for_frames,
)
from utils.config import ConfigError, get_default_config


@pytest.fixture(scope="module")
def speech(fixtures_dir) -> np.ndarray:
    samples, rate = soundfile.read(fixtures_dir / "feature_input.wav", dtype="float32")
    assert rate == 16_000
    return samples


def numpy_features(samples: np.ndarray) -> np.ndarray:
    return audio.spectrogram(audio.normalize_volume(samples))


def config(**dataset):
    cfg = get_default_config()
    cfg.DATASET.update(dataset)
    return cfg


@pytest.mark.parametrize("gain", [1.0, 0.01, 8.0])  # the fixture is at -28.7 dBFS: raised only at gain 0.01
def test_spectrogram_equals_the_numpy_features(speech, gain):
    samples = speech * np.float32(gain)
    expected = numpy_features(samples)
    frontend = SpectrogramFrontend(np.zeros(257), np.ones(257))
    features = frontend(torch.from_numpy(samples)[None])[0].numpy()
    assert features.shape == expected.shape == (frame_count(len(samples)), 257)
    np.testing.assert_allclose(features, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_spectrogram_normalises_each_utterance_of_a_batch_on_its_own(speech):
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=257).astype(np.float32), rng.uniform(0.5, 2.0, size=257).astype(np.float32)
    quiet, loud = speech[:16_000] * np.float32(0.003), speech[16_000:32_000] * np.float32(4.0)
    frontend = build_frontend(config(FEATURES="spectrogram"), mean, std)
    features = frontend(torch.from_numpy(np.stack([quiet, loud]))).numpy()
    for got, samples in zip(features, (quiet, loud)):
        expected = (numpy_features(samples) - mean) / std
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def librosa_fbank(samples: np.ndarray, n_mels: int) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=samples.astype(np.float64), sr=16_000, n_fft=512, hop_length=160, win_length=400, window="hamming",
        center=True, pad_mode="reflect", power=2.0, n_mels=n_mels,
    )
    log_mel = np.log(np.maximum(power, LOG_FLOOR)).T
    return log_mel - log_mel.mean(axis=0)


@pytest.mark.parametrize("n_mels", [80, 40])
def test_fbank_equals_librosa_melspectrogram_with_the_same_log_floor(speech, n_mels):
    expected = librosa_fbank(speech, n_mels)
    features = build_frontend(config(FEATURES="fbank", N_MELS=n_mels))(torch.from_numpy(speech)[None])[0]
    assert features.shape == expected.shape == (frame_count(len(speech)), n_mels)
    assert np.abs(features.numpy() - expected).max() <= 1e-4


def test_fbank_ignores_the_gain_and_floors_silence(speech):
    frontend = FbankFrontend(80)
    # 40 dB quieter: the floor is far enough below the quietest band to leave every band as it was.
    batch = torch.from_numpy(np.stack([speech, speech * np.float32(0.01)]))
    features = frontend(batch)
    torch.testing.assert_close(features[0], features[1], rtol=0, atol=1e-4)
    silent = frontend(torch.zeros(1, 8000))
    torch.testing.assert_close(silent, torch.zeros_like(silent), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_frames", [1, 2, 100, 300])
def test_samples_for_frames_gives_exactly_that_many_frames(n_frames):
    n_samples = max(samples_for_frames(n_frames), 400)
    frontend = FbankFrontend(80)
    assert frontend(torch.randn(1, samples_for_frames(300))).shape == (1, 300, 80)
    assert frame_count(samples_for_frames(n_frames)) == n_frames
    assert frontend(torch.randn(2, n_samples)).shape[1] == frame_count(n_samples)


def test_the_registry_names_the_known_front_ends():
    assert set(FRONTENDS) == {"spectrogram", "fbank", "kaldi_fbank"}
    assert build_frontend(config(FEATURES="fbank", N_MELS=64)).feature_dim == 64
    assert build_frontend(config(), np.zeros(257), np.ones(257)).feature_dim == 257
    with pytest.raises(ConfigError, match=r"^unknown DATASET.FEATURES 'mfcc'; valid names: spectrogram, fbank, kaldi_fbank$"):
        build_frontend(config(FEATURES="mfcc"))
    with pytest.raises(ConfigError, match="DATASET.N_MELS 400 is too many"):
        build_frontend(config(FEATURES="fbank", N_MELS=400))
    with pytest.raises(ConfigError, match="DATASET.N_MELS must be at least 1"):
        build_frontend(config(FEATURES="fbank", N_MELS=0))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ["spectrogram", "fbank"])
def test_script_and_trace_give_the_eager_features_on_any_length(speech, name):
    frontend = build_frontend(config(FEATURES=name), np.zeros(257), np.full(257, 2.0)).eval()
    scripted = torch.jit.script(frontend)
    traced = torch.jit.trace(frontend, torch.from_numpy(speech[:16_000])[None])
    for samples in (speech[:16_000], speech[:24_321], speech):
        batch = torch.from_numpy(np.ascontiguousarray(samples))[None]
        expected = frontend(batch)
        torch.testing.assert_close(scripted(batch), expected, rtol=0, atol=0)
        torch.testing.assert_close(traced(batch), expected, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constant folding:UserWarning")
@pytest.mark.parametrize("name", ["spectrogram", "fbank"])
def test_onnx_export_runs_in_onnxruntime_on_another_batch_and_length(speech, name, tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    frontend = build_frontend(config(FEATURES=name), np.zeros(257), np.full(257, 2.0)).eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(frontend, (torch.from_numpy(speech[:16_000])[None],), str(path), input_names=["waveform"],
                      output_names=["features"], dynamic_axes={"waveform": {0: "batch", 1: "samples"}}, dynamo=False)
    batch = np.stack([speech[:24_321], speech[-24_321:]])
    (features,) = onnxruntime.InferenceSession(str(path)).run(None, {"waveform": batch})
    expected = frontend(torch.from_numpy(batch)).numpy()
    assert features.shape == expected.shape == (2, frame_count(24_321), frontend.feature_dim)
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
