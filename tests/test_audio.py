"""Features (SPEC §2): loading, volume normalisation, the reflection-padded magnitude STFT, optional VAD."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
from scipy.signal import get_window

from data_objects.audio import (
    HOP_LENGTH, INT16_MAX, N_BINS, N_FFT, SAMPLE_RATE, TARGET_DBFS, WIN_LENGTH, compute_features, load_waveform,
    normalize_volume, prepare_waveform, spectrogram,
)
from data_objects.errors import AudioError
from data_objects.synthetic import draw_channel, draw_speaker, synthesize_utterance


def dbfs(samples: np.ndarray) -> float:
    rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64))) * INT16_MAX
    return 20.0 * np.log10(rms / INT16_MAX)


def reference_stft(samples: np.ndarray, pad_mode: str) -> np.ndarray:
    """librosa's centred STFT written out in numpy float64: pad n_fft/2, Hann(400) centred in each 512 frame."""
    padded = np.pad(samples.astype(np.float64), N_FFT // 2, mode=pad_mode)
    window = np.zeros(N_FFT)
    offset = (N_FFT - WIN_LENGTH) // 2
    window[offset : offset + WIN_LENGTH] = get_window("hann", WIN_LENGTH, fftbins=True)
    n_frames = 1 + len(samples) // HOP_LENGTH
    frames = np.stack([padded[t * HOP_LENGTH : t * HOP_LENGTH + N_FFT] for t in range(n_frames)])
    return np.abs(np.fft.rfft(frames * window, axis=1))


def frames_padding_reaches(n_samples: int) -> np.ndarray:
    """Frames whose 400-sample window extends past either end of the waveform."""
    centres = np.arange(1 + n_samples // HOP_LENGTH) * HOP_LENGTH
    return (centres - WIN_LENGTH // 2 < 0) | (centres + WIN_LENGTH // 2 > n_samples)


def speech(seed: int = 0) -> np.ndarray:
    """Four to six seconds of the demo corpus's synthetic speech."""
    rng = np.random.default_rng(seed)
    return synthesize_utterance(rng, draw_speaker(rng), draw_channel(rng))


def scaled_to(samples: np.ndarray, level_dbfs: float) -> np.ndarray:
    return (samples * 10.0 ** ((level_dbfs - dbfs(samples)) / 20.0)).astype(np.float32)


def test_fixture_features_with_the_padding_they_were_made_with(fixtures_dir):
    # The fixture was computed with zero padding (librosa >= 0.10's default): --pad_mode constant reproduces it.
    features = compute_features(fixtures_dir / "feature_input.wav", pad_mode="constant")
    expected = np.load(fixtures_dir / "feature_expected.npy")
    assert features.dtype == np.float32 and features.shape == expected.shape == (321, N_BINS)
    assert np.abs(features - expected).max() <= 1e-4


def test_default_features_are_reflection_padded(fixtures_dir):
    features = compute_features(fixtures_dir / "feature_input.wav")
    expected = np.load(fixtures_dir / "feature_expected.npy")
    samples = prepare_waveform(fixtures_dir / "feature_input.wav").samples
    edges = frames_padding_reaches(len(samples))
    assert edges.sum() == 4
    # Away from the ends the padding mode plays no part: the fixture's numbers, to float32 rounding.
    assert np.abs(features[~edges] - expected[~edges]).max() <= 1e-4
    # At the ends, SPEC §2's reflection padding (librosa 0.7's default), computed independently in float64.
    assert np.abs(features - reference_stft(samples, "reflect")).max() <= 1e-4


def test_reflection_padding_matters_at_the_edges(fixtures_dir):
    # The fixture has a DC offset, so zero padding puts a step into the first and last frames.
    samples = prepare_waveform(fixtures_dir / "feature_input.wav").samples
    reflected, zero_padded = spectrogram(samples), spectrogram(samples, pad_mode="constant")
    edges = frames_padding_reaches(len(samples))
    assert np.abs(zero_padded - reference_stft(samples, "constant")).max() <= 1e-4
    assert np.array_equal(reflected[~edges], zero_padded[~edges])
    assert np.abs(reflected[edges] - zero_padded[edges]).max(axis=1).min() > 0.01
    assert np.abs(reflected[0] - zero_padded[0]).max() > 1.0


def test_quiet_audio_is_raised_to_minus_30_dbfs():
    quiet = scaled_to(speech(), -65.0)
    assert dbfs(quiet) == pytest.approx(-65.0, abs=1e-3)
    raised = normalize_volume(quiet)
    assert dbfs(raised) == pytest.approx(TARGET_DBFS, abs=1e-3)
    np.testing.assert_allclose(raised, quiet * 10.0 ** (35.0 / 20.0), rtol=1e-5)


def test_loud_audio_is_never_lowered():
    for level in (-12.0, TARGET_DBFS + 0.5):
        loud = scaled_to(speech(), level)
        assert np.array_equal(normalize_volume(loud), loud)


def test_silence_cannot_be_normalised():
    with pytest.raises(AudioError) as raised:
        normalize_volume(np.zeros(16000, dtype=np.float32))
    assert raised.value.reason == "silent"


def test_flac_wav_and_stereo_load_the_same_mono_samples(tmp_path):
    pcm = np.round(speech() * INT16_MAX).astype(np.int16)
    samples = pcm / np.float32(2**15)
    soundfile.write(tmp_path / "mono.wav", pcm, SAMPLE_RATE)
    soundfile.write(tmp_path / "mono.flac", pcm, SAMPLE_RATE)
    soundfile.write(tmp_path / "stereo.wav", np.stack([samples, 0.5 * samples], axis=1), SAMPLE_RATE, subtype="FLOAT")
    wav, flac = load_waveform(tmp_path / "mono.wav"), load_waveform(tmp_path / "mono.flac")
    assert np.array_equal(wav.samples, flac.samples) and wav.conversions == ()
    stereo = load_waveform(tmp_path / "stereo.wav")
    np.testing.assert_allclose(stereo.samples, 0.75 * samples, atol=1e-7)
    assert stereo.conversions == ("mixed 2 channels to mono",)
    first = load_waveform(tmp_path / "stereo.wav", first_channel_only=True)
    assert np.array_equal(first.samples, samples.astype(np.float32))
    assert first.conversions == ("took the first of 2 channels",)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled_to_16_khz(tmp_path, rate):
    tone_hz, seconds = 1000.0, 3.5
    n_samples = int(seconds * rate)
    tone = 0.3 * np.sin(2 * np.pi * tone_hz * np.arange(n_samples) / rate)
    soundfile.write(tmp_path / "tone.wav", tone, rate, subtype="PCM_16")
    waveform = load_waveform(tmp_path / "tone.wav")
    assert waveform.source_rate == rate and waveform.conversions == (f"resampled from {rate} Hz",)
    assert len(waveform.samples) == math.ceil(n_samples * SAMPLE_RATE / rate)
    features = compute_features(tmp_path / "tone.wav")
    assert features.shape == (1 + len(waveform.samples) // HOP_LENGTH, N_BINS)
    peak_bins = np.argmax(features[5:-5], axis=1)
    assert np.all(peak_bins == round(tone_hz * N_FFT / SAMPLE_RATE))


def test_unusable_files_raise_with_a_reason(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    soundfile.write(tmp_path / "no_samples.wav", np.zeros((0, 1), dtype=np.float32), SAMPLE_RATE)
    soundfile.write(tmp_path / "short.wav", speech()[:SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    reasons = {}
    for name, min_frames in [("empty.wav", 0), ("junk.wav", 0), ("no_samples.wav", 0), ("short.wav", 300)]:
        with pytest.raises(AudioError) as raised:
            compute_features(tmp_path / name, min_frames=min_frames)
        assert name in str(raised.value) and "\n" not in str(raised.value)
        reasons[name] = raised.value.reason
    assert reasons == {"empty.wav": "empty", "junk.wav": "unreadable", "no_samples.wav": "empty",
                       "short.wav": "too short"}


def test_vad_is_off_by_default_and_trims_long_silences(tmp_path):
    samples = speech()
    silence = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    soundfile.write(tmp_path / "padded.wav", np.concatenate([silence, samples, silence]), SAMPLE_RATE, subtype="FLOAT")
    kept = len(prepare_waveform(tmp_path / "padded.wav").samples)
    trimmed = len(prepare_waveform(tmp_path / "padded.wav", vad=True).samples)
    assert kept == len(samples) + 2 * len(silence)
    # Up to six 30 ms windows of silence are kept on each side of speech, plus the smoothing window.
    assert len(samples) - SAMPLE_RATE // 2 <= trimmed <= len(samples) + SAMPLE_RATE
    assert compute_features(tmp_path / "padded.wav", vad=True).shape[0] == 1 + trimmed // HOP_LENGTH
