"""The Kaldi-compatible fbank against kaldi-native-fbank, its dither, framing, export, and its use in training."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from data_objects.sources import feature_source
from models.frontends import build_frontend, samples_for_frames
from models.kaldi_fbank import KaldiFbankFrontend, snip_edges_frames
from utils.config import ConfigError, get_default_config

knf = pytest.importorskip("kaldi_native_fbank")


@pytest.fixture(scope="module")
def speech(fixtures_dir) -> np.ndarray:
    samples, rate = soundfile.read(fixtures_dir / "feature_input.wav", dtype="float32")
    assert rate == 16_000
    return samples


def kaldi_native_log_energies(samples: np.ndarray, n_mels: int) -> np.ndarray:
    """kaldi-native-fbank's fbank with Kaldi's defaults (povey window, pre-emphasis 0.97, DC removal, snip edges,
    mel banks from 20 Hz) and no dither, on the int16 scale as WeSpeaker calls it."""
    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.mel_opts.num_bins = n_mels
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(16_000, (samples * 32768.0).tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(index) for index in range(fbank.num_frames_ready)])


def config(**dataset):
    cfg = get_default_config()
    cfg.DATASET.update({"FEATURES": "kaldi_fbank", **dataset})
    return cfg


@pytest.mark.parametrize("n_mels", [80, 40])
def test_log_energies_equal_kaldi_native_fbank(speech, n_mels):
    # A stretch of exact zeros as well: Kaldi floors such frames at float32's epsilon.
    samples = np.concatenate([speech, np.zeros(4000, dtype=np.float32), speech[:5000]])
    frontend = KaldiFbankFrontend(n_mels).eval()
    ours = frontend.log_energies(torch.from_numpy(samples)[None])[0].numpy()
    reference = kaldi_native_log_energies(samples, n_mels)
    assert ours.shape == reference.shape == (snip_edges_frames(len(samples)), n_mels)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-3)
    features = frontend(torch.from_numpy(samples)[None])[0].numpy()
    np.testing.assert_allclose(features, reference - reference.mean(axis=0), rtol=0, atol=1e-3)


def test_snip_edges_keeps_only_whole_frames():
    frontend = KaldiFbankFrontend(40).eval()
    for n_samples in (400, 559, 560, 16_000):
        assert frontend(torch.randn(2, n_samples)).shape == (2, snip_edges_frames(n_samples), 40)
    assert snip_edges_frames(399) == 0 and snip_edges_frames(560) == 2 and snip_edges_frames(32_000) == 198


def test_dither_in_training_only_and_a_function_of_the_seed(speech):
    frontend = KaldiFbankFrontend(80)
    batch = torch.from_numpy(speech[:16_000])[None]
    torch.manual_seed(5)
    first = frontend(batch)
    torch.manual_seed(5)
    again = frontend(batch)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    plain = frontend.eval()(batch)
    difference = (first - plain).abs()
    # Dither of one int16 step moves the log energies of a speech recording a little, not nowhere.
    assert 0 < difference.mean() < 0.05
    torch.testing.assert_close(frontend(batch), plain, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_script_and_trace_give_the_eager_features_without_dither(speech):
    frontend = KaldiFbankFrontend(80).eval()
    scripted = torch.jit.script(frontend)
    traced = torch.jit.trace(frontend, torch.from_numpy(speech[:16_000])[None])
    for samples in (speech[:16_000], speech[:24_321]):
        batch = torch.from_numpy(np.ascontiguousarray(samples))[None]
        expected = frontend(batch)
        torch.testing.assert_close(scripted(batch), expected, rtol=0, atol=0)
        torch.testing.assert_close(traced(batch), expected, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constant folding:UserWarning")
def test_onnx_export_runs_in_onnxruntime_on_another_batch_and_length(speech, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    frontend = KaldiFbankFrontend(80).eval()
    path = tmp_path / "kaldi_fbank.onnx"
    torch.onnx.export(frontend, (torch.from_numpy(speech[:16_000])[None],), str(path), input_names=["waveform"],
                      output_names=["features"], dynamic_axes={"waveform": {0: "batch", 1: "samples"}}, dynamo=False)
    batch = np.stack([speech[:24_321], speech[-24_321:]])
    (features,) = onnxruntime.InferenceSession(str(path)).run(None, {"waveform": batch})
    expected = frontend(torch.from_numpy(batch)).numpy()
    assert features.shape == expected.shape == (2, snip_edges_frames(24_321), 80)
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_training_items_are_dithered_and_test_items_are_not(wav_corpus):
    source = feature_source(config(DATA_DIR=str(wav_corpus), PARTIAL_N_FRAMES=50))
    train_set = source.verification_train_set()
    assert train_set.frontend.training and not source.frontend.training
    assert not source.trial_list("veri_test.txt").utterance_dataset(50).frontend.training
    torch.manual_seed(0)
    features, _ = train_set[0]
    assert features.shape == (snip_edges_frames(samples_for_frames(50)), 80)


def test_crops_too_short_for_one_frame_are_refused(wav_corpus):
    with pytest.raises(ConfigError, match="DATASET.PARTIAL_N_FRAMES 3 is too short for DATASET.FEATURES kaldi_fbank"):
        feature_source(config(DATA_DIR=str(wav_corpus), PARTIAL_N_FRAMES=3))
    assert build_frontend(config(N_MELS=64)).feature_dim == 64
