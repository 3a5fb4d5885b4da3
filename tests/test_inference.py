"""A trained model used on audio files: extract_embeddings.py, score_trials.py and export.py against the
evaluation path, resampled copies, eager PyTorch, and every kind of bad input.

The scripts' `main` runs in this process through `run_main`, as their `__main__` does (an error `run_main` did
not turn into one line fails the test). The model is a C 8, 3-layer genotype network whose batch-norm
statistics are set on the tiny corpus's windows, so that embeddings differ between utterances.
"""
from __future__ import annotations

import importlib
import json
import os
import stat
import sys
from math import gcd
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import resample_poly

from data_objects.audio import compute_features, normalize_volume, spectrogram
from data_objects.datasets import SpectrogramDataset, UtteranceWindowsDataset, sliding_windows
from data_objects.errors import AudioError
from data_objects.voxceleb import feature_name
from data_objects.wav_datasets import WavWindowsDataset, sliding_sample_windows
from functions import inference
from functions.distributed import single_process
from functions.evaluation import embed_utterances
from functions.experiment import KNOWN_ERRORS, inference_recipe
from functions.export import EXPORTERS
from functions.speaker_model import SpeakerModel
from functions.inference_tasks import check_lengths, compare_exported
from models import AUTOSPEECH, build_model
from models.frontends import SpectrogramFrontend, build_frontend
from models.waveform_embedder import window_frame_indices, window_sample_indices
from utils.checkpoint import save_checkpoint
from utils.cli import run_main
from utils.config import get_default_config
from utils.files import write_text_atomically

REPO = Path(__file__).resolve().parents[1]

WINDOW = 100
CELL = {"INIT_CHANNELS": 8, "LAYERS": 3}


def run(script: str, *argv: str, capsys, monkeypatch) -> tuple[int, str, str]:
    module = importlib.import_module(script.removesuffix(".py"))
    monkeypatch.setattr(sys, "argv", [script, *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(module.main, KNOWN_ERRORS)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def ok(script: str, *argv: str, capsys, monkeypatch) -> tuple[str, str]:
    code, out, err = run(script, *argv, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    return out, err


def error_line(script: str, *argv: str, capsys, monkeypatch) -> str:
    code, _, err = run(script, *argv, capsys=capsys, monkeypatch=monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("error: "), err
    return lines[-1]


def corpus_wav(corpus: Path, index: int = 0) -> Path:
    return sorted((corpus / "test" / "wav").rglob("*.wav"))[index]




def _config(corpus: Path):
    cfg = get_default_config()
    cfg.MODEL.INIT_CHANNELS, cfg.MODEL.LAYERS = CELL["INIT_CHANNELS"], CELL["LAYERS"]
    cfg.DATASET.DATA_DIR, cfg.DATASET.PARTIAL_N_FRAMES, cfg.DEVICE = str(corpus), WINDOW, "cpu"
    return cfg


def _save_calibrated(cfg, num_classes: int, batch: torch.Tensor, extras: dict, path: Path) -> Path:
    """A network whose batch-norm statistics are the averages over `batch`, saved as training saves it."""
    torch.manual_seed(0)
    network = build_model(cfg, num_classes, AUTOSPEECH)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration pass
    with torch.no_grad():
        network.train()(batch)
    save_checkpoint({"epoch": 1, "state_dict": network.state_dict(), "config": cfg.dump(),
                     "history": [{"epoch": 0, "eer": 20.0, "threshold_at_eer": 0.25}], **extras}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_corpus, tmp_path_factory) -> Path:
    """A checkpoint as training writes it (config, genotype, feature statistics, a verification in its history)."""
    train_set = SpectrogramDataset(tiny_corpus, "dev", None, WINDOW)
    torch.manual_seed(0)  # the crops
    batch = torch.stack([train_set[i][0] for i in range(0, len(train_set), 2)])
    return _save_calibrated(_config(tiny_corpus), train_set.num_classes, batch,
                            inference_recipe(AUTOSPEECH, train_set),
                            tmp_path_factory.mktemp("model") / "checkpoint_last.pth")


def evaluation_embeddings(checkpoint: Path, corpus: Path, wavs: list[Path]) -> torch.Tensor:
    """Embeddings of the preprocessed features of `wavs`, as evaluate_verification.py computes them."""
    model = SpeakerModel.from_checkpoint(checkpoint, "cpu")
    features = []
    for wav in wavs:
        speaker, npy = feature_name(wav.relative_to(corpus / "test" / "wav").as_posix())
        features.append(corpus / "feature" / "test" / speaker / npy)
    dataset = UtteranceWindowsDataset.from_paths(corpus, features, WINDOW)
    return embed_utterances(model.network, dataset, single_process())[0]


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# Frame counts (1 + samples // 160) around window boundaries of a 100-frame window with a 50-frame hop, where one
# frame more or less changes the windows: 100 (tiled below 101), 149 and 199 (a window starts at 150 and 200).
BOUNDARY_FRAMES = (100, 149, 199)
# Residues of samples mod 160 on either side of 104, from which on the STFT once found room for one more frame.
RESIDUES = (0, 103, 104, 159)


def boundary_crops(corpus: Path, folder: Path) -> list[Path]:
    """Crops of a corpus utterance whose lengths hit every residue that matters at every boundary."""
    samples, rate = soundfile.read(corpus_wav(corpus, 2), dtype="float32")
    folder.mkdir()
    crops = []
    for frames in BOUNDARY_FRAMES:
        for residue in RESIDUES:
            length = (frames - 1) * 160 + residue
            assert length <= samples.size
            crops.append(folder / f"{frames}_{residue}.wav")
            soundfile.write(crops[-1], samples[:length], rate, subtype="FLOAT")
    return crops


def preprocessed_embeddings(checkpoint: Path, corpus: Path, wavs: list[Path], folder: Path) -> torch.Tensor:
    """Embeddings of `wavs` through data_preprocess.py's feature (compute_features) and evaluation's windows."""
    folder.mkdir()
    features = []
    for index, wav in enumerate(wavs):
        features.append(folder / f"{index}.npy")
        np.save(features[-1], compute_features(wav))
    dataset = UtteranceWindowsDataset.from_paths(corpus, features, WINDOW)
    return embed_utterances(SpeakerModel.from_checkpoint(checkpoint, "cpu").network, dataset, single_process())[0]


def test_extracted_embeddings_equal_the_evaluation_path_on_every_length(checkpoint, tiny_corpus, tmp_path, capsys,
                                                                         monkeypatch):
    folder = tiny_corpus / "test" / "wav"
    crops = boundary_crops(tiny_corpus, tmp_path / "crops")
    _, err = ok("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"),
                str(folder), *map(str, crops), capsys=capsys, monkeypatch=monkeypatch)
    stored = np.load(tmp_path / "out" / "embeddings.npz")
    wavs = sorted(folder.rglob("*.wav"))
    assert sorted(stored.files) == sorted([wav.relative_to(folder).as_posix() for wav in wavs] + list(map(str, crops)))
    extracted = np.stack([stored[wav.relative_to(folder).as_posix()] for wav in wavs])
    reference = evaluation_embeddings(checkpoint, tiny_corpus, wavs).numpy()
    spread = np.abs(reference - reference.mean(axis=0)).mean()
    np.testing.assert_allclose(extracted, reference, rtol=0, atol=1e-4 * spread)
    cropped = np.stack([stored[str(crop)] for crop in crops])
    expected = preprocessed_embeddings(checkpoint, tiny_corpus, crops, tmp_path / "features").numpy()
    for crop, got, want in zip(crops, cropped, expected):
        # Features written and read back as float32 round the last bits differently from those computed in torch.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * spread, err_msg=crop.name)
    assert f"{len(wavs) + len(crops)} embeddings of size {reference.shape[1]}" in err


def test_the_torch_front_end_has_the_frames_of_the_numpy_features_on_every_residue():
    frontend = SpectrogramFrontend(np.zeros(257, dtype=np.float32), np.ones(257, dtype=np.float32))
    waveform = 0.1 * torch.randn(1, 257 + 2 * 160, generator=torch.Generator().manual_seed(0))
    for length in range(257, waveform.shape[1]):  # every residue mod 160, twice
        samples = waveform[:, :length]
        with torch.no_grad():
            features = frontend(samples)[0].numpy()
        expected = spectrogram(normalize_volume(samples[0].numpy()))
        assert features.shape == expected.shape == (1 + length // 160, 257), length
        np.testing.assert_allclose(features, expected, rtol=0, atol=2e-3 * np.abs(expected).max(), err_msg=length)


def test_a_44_khz_stereo_copy_embeds_as_the_16_khz_file_its_channels_averaged(checkpoint, tiny_corpus, tmp_path,
                                                                               capsys, monkeypatch):
    wav, other = corpus_wav(tiny_corpus, 0), corpus_wav(tiny_corpus, 9)
    samples, rate = soundfile.read(wav, dtype="float32")
    common = gcd(44_100, rate)
    upsampled = resample_poly(samples, 44_100 // common, rate // common).astype(np.float32)
    # Channels are averaged, as preprocessing averages them: noise added to one channel and taken from the other
    # cancels (the first channel alone would carry it).
    noise = np.random.default_rng(0).normal(0, 0.3, upsampled.size).astype(np.float32)
    stereo = np.stack([upsampled + noise, upsampled - noise], axis=1)
    soundfile.write(tmp_path / "copy.wav", stereo, 44_100, subtype="FLOAT")
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{wav}\n{tmp_path / 'copy.wav'}\n{other}\n")
    ok("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"), "--format", "npy",
       str(listing), capsys=capsys, monkeypatch=monkeypatch)
    original = np.load((tmp_path / "out").joinpath(*Path(str(wav)).parts[1:]).with_suffix(".npy"))
    copy = np.load((tmp_path / "out").joinpath(*(tmp_path / "copy.npy").parts[1:]))
    different = np.load((tmp_path / "out").joinpath(*Path(str(other)).parts[1:]).with_suffix(".npy"))
    assert cosine(original, copy) >= 0.999
    # Closer to its original than another speaker's utterance is, by far (the resampling filters' roll-off near
    # 8 kHz changes the top bins a little).
    assert np.linalg.norm(original - copy) < 0.5 * np.linalg.norm(original - different)


def test_score_trials_gives_the_eer_of_evaluate_verification(checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    cell = ["MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3", "DATASET.PARTIAL_N_FRAMES", str(WINDOW)]
    asnorm = ["EVAL.SCORE_NORM", "asnorm", "EVAL.COHORT_SIZE", "3"]
    ok("evaluate_verification.py", "--cfg", "exps/demo/scratch_veri.yaml", "--load_path", str(checkpoint),
       "DATASET.DATA_DIR", str(tiny_corpus), "OUTPUT_DIR", str(tmp_path), *cell, *asnorm,
       capsys=capsys, monkeypatch=monkeypatch)
    evaluation_dir = next((tmp_path / "logs_eval").iterdir())
    evaluated = json.loads((evaluation_dir / "results.json").read_text())
    # The cohort of AS-norm is the training speakers of the checkpoint's DATASET.DATA_DIR.
    ok("score_trials.py", "--load_path", str(checkpoint), "--trials", str(tiny_corpus / "veri_test.txt"),
       "--audio_dir", str(tiny_corpus / "test" / "wav"), "--output", str(tmp_path / "scored"), *asnorm,
       capsys=capsys, monkeypatch=monkeypatch)
    scored = json.loads((tmp_path / "scored" / "results.json").read_text())
    assert 5.0 < scored["eer"] < 95.0 and scored["trials"] == evaluated["trials"] == 90
    assert scored["eer"] == evaluated["eer"] and scored["eer_asnorm"] == evaluated["eer_asnorm"]
    assert scored["eer_asnorm"] != scored["eer"] or scored["min_dcf_0.01_asnorm"] != scored["min_dcf_0.01"]
    assert scored["min_dcf_0.01"] == pytest.approx(evaluated["min_dcf_0.01"])
    assert scored["min_dcf_0.01_asnorm"] == pytest.approx(evaluated["min_dcf_0.01_asnorm"])
    ours = [line.split() for line in (tmp_path / "scored" / "scores.txt").read_text().splitlines()]
    theirs = [line.split() for line in (evaluation_dir / "scores.txt").read_text().splitlines()]
    assert [row[1:] for row in ours] == [row[1:] for row in theirs]
    np.testing.assert_allclose([float(r[0]) for r in ours], [float(r[0]) for r in theirs], atol=2e-6)
    assert (tmp_path / "scored" / "det_curve.png").stat().st_size > 0


def test_a_pair_prints_its_score_and_the_decision_at_the_eer(checkpoint, tiny_corpus, capsys, monkeypatch):
    a, b = corpus_wav(tiny_corpus, 0), corpus_wav(tiny_corpus, 1)
    out, _ = ok("score_trials.py", "--load_path", str(checkpoint), "--pair", str(a), str(b),
                capsys=capsys, monkeypatch=monkeypatch)
    score, decision = out.split()[:2]
    reference = evaluation_embeddings(checkpoint, tiny_corpus, [a, b]).numpy()
    assert float(score) == pytest.approx(cosine(*reference), abs=1e-5)
    # The checkpoint's last verification put the EER at the score 0.25.
    assert decision == ("same" if cosine(*reference) >= 0.25 else "different")


def test_windows_of_the_exported_module_are_those_of_evaluation():
    for n_frames in (1, 7, 49, 50, 51, 99, 100, 101, 150, 151, 1003):
        expected = sliding_windows(np.arange(n_frames)[:, None], WINDOW)[..., 0]
        assert np.array_equal(window_frame_indices(torch.tensor(n_frames), WINDOW).numpy(), expected), n_frames
    for n_samples in (257, 1000, 7999, 8000, 15840, 15999, 16000, 16160, 24000, 160_321):
        expected = sliding_sample_windows(np.arange(n_samples), WINDOW)
        got = window_sample_indices(torch.tensor(n_samples), WINDOW).numpy()
        assert np.array_equal(got, expected), n_samples


def test_fbank_model_embeds_files_as_its_evaluation_does(tiny_corpus, tmp_path, capsys, monkeypatch):
    cfg = _config(tiny_corpus)
    cfg.DATASET.FEATURES = "fbank"
    frontend = build_frontend(cfg)
    wavs = sorted((tiny_corpus / "test" / "wav").rglob("*.wav"))[:4]
    evaluation = WavWindowsDataset(wavs, range(len(wavs)), frontend, WINDOW)
    path = _save_calibrated(cfg, 7, torch.cat([evaluation[i][0] for i in range(len(wavs))]),
                            {"genotype": AUTOSPEECH}, tmp_path / "fbank.pth")
    ok("extract_embeddings.py", "--load_path", str(path), "--output", str(tmp_path), *map(str, wavs),
       capsys=capsys, monkeypatch=monkeypatch)
    stored = np.load(tmp_path / "embeddings.npz")
    reference = embed_utterances(SpeakerModel.from_checkpoint(path, "cpu").network, evaluation,
                                 single_process())[0].numpy()
    spread = np.abs(reference - reference.mean(axis=0)).mean()
    np.testing.assert_allclose(np.stack([stored[str(w)] for w in wavs]), reference, rtol=0, atol=1e-4 * spread)


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_exported_module_equals_eager_on_three_lengths(fmt, checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    output = tmp_path / f"model.{fmt}"
    ok("export.py", "--load_path", str(checkpoint), "--format", fmt, "--output", str(output),
       capsys=capsys, monkeypatch=monkeypatch)
    model = SpeakerModel.from_checkpoint(checkpoint, "cpu")
    embedder = model.embedder()
    report = compare_exported(embedder, EXPORTERS[fmt][1](output), check_lengths(WINDOW), seed=5)
    for name, row in report.items():
        assert row["min_cosine"] >= 0.9999 and row["max_abs_diff"] <= 1e-4, (name, row)


def test_the_eager_waveform_module_embeds_as_evaluation_does(checkpoint, tiny_corpus):
    model = SpeakerModel.from_checkpoint(checkpoint, "cpu")
    embedder = model.embedder()
    wav = corpus_wav(tiny_corpus, 3)
    with torch.no_grad():
        eager = embedder(torch.from_numpy(soundfile.read(wav, dtype="float32")[0]).unsqueeze(0))[0].numpy()
    reference = evaluation_embeddings(checkpoint, tiny_corpus, [wav])[0].numpy()
    assert cosine(eager, reference) >= 0.99999


# ----- bad input -----
def test_unreadable_files_are_named_skipped_and_counted(checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "good.wav").write_bytes(corpus_wav(tiny_corpus).read_bytes())
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.flac").write_text("not audio at all")
    soundfile.write(folder / "click.wav", np.ones(100, dtype=np.float32) * 0.1, 16_000)
    listing = tmp_path / "list.txt"
    listing.write_text("audio/good.wav\naudio/missing.wav\n")
    _, err = ok("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"),
                "--audio_dir", str(tmp_path), str(folder), str(listing), capsys=capsys, monkeypatch=monkeypatch)
    assert "4 skipped: 1 empty, 1 missing, 1 too short, 1 unreadable" in err
    for name in ("empty.wav", "notes.flac", "click.wav", "missing.wav"):
        assert f"skipped {folder / name if name != 'missing.wav' else 'audio/missing.wav'}" in err, name
    assert sorted(np.load(tmp_path / "out" / "embeddings.npz").files) == ["audio/good.wav", "good.wav"]
    (folder / "good.wav").unlink()
    line = error_line("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"),
                      str(folder), capsys=capsys, monkeypatch=monkeypatch)
    assert line == "error: none of the 3 files could be read as audio (3 skipped: 1 empty, 1 too short, 1 unreadable)"
    line = error_line("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"),
                      str(tmp_path / "nowhere.wav"), str(tmp_path / "gone"), capsys=capsys, monkeypatch=monkeypatch)
    nowhere = tmp_path / "nowhere.wav"
    assert line == f"error: no audio files among the inputs (2 named that do not exist, e.g. {nowhere})"
    line = error_line("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"),
                      str(folder), "--format", "npy", capsys=capsys, monkeypatch=monkeypatch)
    assert line == "error: --format comes after the INPUT files; put options such as --format before them"


def test_trial_lines_of_the_wrong_shape_are_named_by_file_and_line(checkpoint, tmp_path, capsys, monkeypatch):
    trials = tmp_path / "trials.txt"
    for text, expected in [("1 a.wav b.wav\n1 a.wav\n", "trials.txt:2: malformed line"),
                           ("1 a.wav b.wav\nb.wav c.wav\n", "trials.txt:2: malformed line, expected '<1|0>"),
                           ("2 a.wav b.wav\n", "trials.txt:1: malformed line")]:
        trials.write_text(text)
        line = error_line("score_trials.py", "--load_path", str(checkpoint), "--trials", str(trials), "--output",
                          str(tmp_path / "out"), capsys=capsys, monkeypatch=monkeypatch)
        assert expected in line, line
    trials.write_text("1 a.wav b.wav\n")
    line = error_line("score_trials.py", "--load_path", str(checkpoint), "--trials", str(trials), "--audio_dir",
                      str(tmp_path), "--output", str(tmp_path / "out"), capsys=capsys, monkeypatch=monkeypatch)
    assert "none of its 1 trials has both audio files" in line


def _without(checkpoint: Path, tmp_path: Path, *keys: str) -> Path:
    state = torch.load(checkpoint, weights_only=False)
    for key in keys:
        del state[key]
    path = tmp_path / f"without_{'_'.join(keys)}.pth"
    save_checkpoint(state, path)
    return path


def test_checkpoints_missing_their_recipe_say_what_to_pass(checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    old = _without(checkpoint, tmp_path, "config", "feature_stats")
    args = ["--output", str(tmp_path / "out"), str(corpus_wav(tiny_corpus))]
    line = error_line("extract_embeddings.py", "--load_path", str(old), *args, capsys=capsys, monkeypatch=monkeypatch)
    assert "carries no recipe" in line and "--cfg" in line
    cell = ["MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3", "DATASET.PARTIAL_N_FRAMES", str(WINDOW)]
    line = error_line("extract_embeddings.py", "--load_path", str(old), "--cfg", "exps/scratch/scratch_veri.yaml",
                      *args, *cell, capsys=capsys, monkeypatch=monkeypatch)
    assert "carries no feature statistics" in line and "--stats DATA_DIR" in line
    ok("extract_embeddings.py", "--load_path", str(old), "--cfg", "exps/scratch/scratch_veri.yaml", "--stats",
       str(tiny_corpus), *args, *cell, "MODEL.NUM_CLASSES", "0", capsys=capsys, monkeypatch=monkeypatch)
    line = error_line("export.py", "--load_path", str(old), "--cfg", "exps/scratch/scratch_veri.yaml", "--stats",
                      str(tmp_path), "--format", "onnx", "--output", str(tmp_path / "m.onnx"), *cell,
                      capsys=capsys, monkeypatch=monkeypatch)
    assert f"{tmp_path / 'mean.npy'} not found" in line


def test_published_checkpoint_embeds_with_cfg_and_stats(fixtures_dir, tiny_corpus, tmp_path, capsys, monkeypatch):
    ok("extract_embeddings.py", "--load_path", str(fixtures_dir / "genotype_net_C8_L3_K10.pth"), "--cfg",
       "exps/scratch/scratch_veri.yaml", "--stats", str(tiny_corpus), "--output", str(tmp_path),
       str(corpus_wav(tiny_corpus)), "MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3", "MODEL.NUM_CLASSES", "10",
       capsys=capsys, monkeypatch=monkeypatch)
    assert np.load(tmp_path / "embeddings.npz")[str(corpus_wav(tiny_corpus))].shape == (128,)


def test_unwritable_output_and_search_checkpoints_are_refused(checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    line = error_line("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(blocker / "out"),
                      str(corpus_wav(tiny_corpus)), capsys=capsys, monkeypatch=monkeypatch)
    assert line.startswith(f"error: output folder {blocker / 'out'} is not writable")
    line = error_line("export.py", "--load_path", str(checkpoint), "--format", "onnx", "--output",
                      str(blocker / "model.onnx"), capsys=capsys, monkeypatch=monkeypatch)
    assert "is not writable" in line
    cfg = get_default_config()
    cfg.MODEL.NAME, cfg.MODEL.INIT_CHANNELS, cfg.MODEL.LAYERS = "model_search", 4, 2
    search = tmp_path / "search.pth"
    save_checkpoint({"epoch": 1, "state_dict": build_model(cfg, 7).state_dict(), "config": cfg.dump()}, search)
    line = error_line("score_trials.py", "--load_path", str(search), "--pair", "a.wav", "b.wav",
                      capsys=capsys, monkeypatch=monkeypatch)
    assert "search network" in line and "derive its genotype" in line


# ----- silence, short clips, devices, file modes -----
def test_silent_and_short_clips_follow_one_rule(checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "audio"
    folder.mkdir()
    samples, rate = soundfile.read(corpus_wav(tiny_corpus), dtype="float32")
    soundfile.write(folder / "good.wav", samples, rate)
    soundfile.write(folder / "clip.wav", samples[: rate // 10], rate)  # 0.1 s
    for name in ("silence_a.wav", "silence_b.wav"):
        soundfile.write(folder / name, np.zeros(3 * rate, dtype=np.float32), rate)
    _, err = ok("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"),
                str(folder), capsys=capsys, monkeypatch=monkeypatch)
    assert "3 skipped: 2 silent, 1 too short" in err
    assert f"skipped {folder / 'silence_a.wav'}: audio is entirely silent" in err
    assert f"skipped {folder / 'clip.wav'}: too short (0.10 s, less than the minimum of 0.99 s)" in err
    assert np.load(tmp_path / "out" / "embeddings.npz").files == ["good.wav"]
    # --short warn embeds a short clip and says so; --min_seconds moves the minimum.
    _, err = ok("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "warned"),
                "--short", "warn", str(folder / "clip.wav"), capsys=capsys, monkeypatch=monkeypatch)
    assert "clip.wav: embedded although short (0.10 s, less than 0.99 s)" in err
    _, err = ok("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "lower"),
                "--min_seconds", "0.05", str(folder / "clip.wav"), capsys=capsys, monkeypatch=monkeypatch)
    assert "embedded although short" not in err
    assert np.load(tmp_path / "lower" / "embeddings.npz").files == [str(folder / "clip.wav")]
    # Two silent files are not "the same speaker": the pair is refused, with its reason said once.
    code, out, err = run("score_trials.py", "--load_path", str(checkpoint), "--pair", str(folder / "silence_a.wav"),
                         str(folder / "silence_b.wav"), capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and not out and err.count("entirely silent") == 1, err
    # Below 257 samples the STFT's reflection padding has too little to reflect: refused in one line.
    model = SpeakerModel.from_checkpoint(checkpoint, "cpu", short="warn")
    with pytest.raises(AudioError, match="too short for an STFT"):
        model.embed(samples[:256])
    assert model.embed(samples[:257]).shape == (128,)


def _trained_on_a_gpu(checkpoint: Path, tmp_path: Path) -> Path:
    """The checkpoint as a GPU machine writes it: DEVICE cuda and 4 loader workers in its config."""
    state = torch.load(checkpoint, weights_only=False)
    cfg = get_default_config()
    cfg.merge_from_other_cfg(cfg.load_cfg(state["config"]))
    cfg.DEVICE, cfg.DATASET.NUM_WORKERS = "cuda", 4
    state["config"] = cfg.dump()
    save_checkpoint(state, tmp_path / "gpu.pth")
    return tmp_path / "gpu.pth"


def test_a_checkpoint_trained_on_a_gpu_runs_on_this_machine(checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    gpu = _trained_on_a_gpu(checkpoint, tmp_path)
    workers = []
    embed = inference.embed_utterances
    monkeypatch.setattr(inference, "embed_utterances", lambda *a, **k: workers.append(a[3]) or embed(*a, **k))
    wav = str(corpus_wav(tiny_corpus))
    ok("extract_embeddings.py", "--load_path", str(gpu), "--output", str(tmp_path / "auto"), wav,
       capsys=capsys, monkeypatch=monkeypatch)
    ok("extract_embeddings.py", "--load_path", str(gpu), "--output", str(tmp_path / "cpu"), "--device", "cpu", wav,
       capsys=capsys, monkeypatch=monkeypatch)
    # The loader workers are the command's (--workers, default 0), not those of the machine it was trained on.
    assert workers == [0, 0]
    reference = np.load(tmp_path / "cpu" / "embeddings.npz")[wav]
    # On a GPU machine 'auto' is cuda, whose cuDNN convolutions (TF32 included) round differently from oneDNN's.
    tolerance = 5e-3 if torch.cuda.is_available() else 1e-4
    np.testing.assert_allclose(np.load(tmp_path / "auto" / "embeddings.npz")[wav], reference, atol=tolerance)
    if not torch.cuda.is_available():
        line = error_line("extract_embeddings.py", "--load_path", str(gpu), "--output", str(tmp_path / "cuda"),
                          "--device", "cuda", wav, capsys=capsys, monkeypatch=monkeypatch)
        assert line == "error: DEVICE is 'cuda' but no CUDA device is available"


def test_outputs_get_the_mode_of_a_plain_open_under_the_umask(checkpoint, tiny_corpus, tmp_path, capsys,
                                                              monkeypatch):
    previous = os.umask(0o022)
    try:
        ok("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"),
           str(corpus_wav(tiny_corpus)), capsys=capsys, monkeypatch=monkeypatch)
        ok("export.py", "--load_path", str(checkpoint), "--format", "torchscript", "--output",
           str(tmp_path / "model.pt"), capsys=capsys, monkeypatch=monkeypatch)
        save_checkpoint({"epoch": 1}, tmp_path / "checkpoint.pth")
        os.umask(0o027)
        write_text_atomically(tmp_path / "group.txt", "shared with the group only\n")
    finally:
        os.umask(previous)
    for path in (tmp_path / "out" / "embeddings.npz", tmp_path / "model.pt", tmp_path / "checkpoint.pth"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((tmp_path / "group.txt").stat().st_mode) == 0o640


# ----- score_trials.py and export.py: their options -----
def test_pair_options_are_checked_and_decided_at_a_given_threshold(checkpoint, tiny_corpus, tmp_path, capsys,
                                                                   monkeypatch):
    a, b = str(corpus_wav(tiny_corpus, 0)), str(corpus_wav(tiny_corpus, 1))
    base = ["--load_path", str(checkpoint)]
    line = error_line("score_trials.py", *base, "--pair", a, b, "--output", str(tmp_path),
                      capsys=capsys, monkeypatch=monkeypatch)
    assert line == ("error: --pair scores two files and takes no --output; give either --pair A B or --trials LIST "
                    "--output OUT")
    line = error_line("score_trials.py", *base, "--pair", a, b, "--trials", "t.txt",
                      capsys=capsys, monkeypatch=monkeypatch)
    assert "takes no --trials" in line
    out, _ = ok("score_trials.py", *base, "--pair", a, b, "--threshold", "-1", capsys=capsys, monkeypatch=monkeypatch)
    assert out.split()[1:3] == ["same", "(--threshold"]
    out, _ = ok("score_trials.py", *base, "--pair", a, b, "--threshold", "1.01", capsys=capsys, monkeypatch=monkeypatch)
    assert out.split()[1] == "different"
    # With AS-norm in the recipe, the pair is also scored by it (the cohort: the checkpoint's training speakers).
    out, _ = ok("score_trials.py", *base, "--pair", a, b, "EVAL.SCORE_NORM", "asnorm", "EVAL.COHORT_SIZE", "3",
                capsys=capsys, monkeypatch=monkeypatch)
    raw, normalised = out.splitlines()
    assert normalised.split()[1] == "(asnorm)" and "carries no EER threshold" in normalised
    assert float(raw.split()[0]) == pytest.approx(SpeakerModel.from_checkpoint(checkpoint, "cpu").score(a, b), abs=1e-6)


def test_skipped_trials_name_their_missing_files(checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    wav = corpus_wav(tiny_corpus).relative_to(tiny_corpus / "test" / "wav")
    other = corpus_wav(tiny_corpus, 5).relative_to(tiny_corpus / "test" / "wav")
    trials = tmp_path / "trials.txt"
    lost = [f"lost/{index}.wav" for index in range(7)]
    trials.write_text(f"1 {wav} {wav}\n0 {wav} {other}\n" + "".join(f"0 {wav} {name}\n" for name in lost))
    _, err = ok("score_trials.py", "--load_path", str(checkpoint), "--trials", str(trials), "--audio_dir",
                str(tiny_corpus / "test" / "wav"), "--output", str(tmp_path / "out"), capsys=capsys,
                monkeypatch=monkeypatch)
    for name in lost[:5]:
        assert f"skipped trials of {name}: no such file" in err
    assert "lost/5.wav" not in err and "... and of 2 more missing files" in err
    assert "2 trials over 2 files (7 skipped: 7 missing audio)" in err
    trials.write_text("1 a.wav b.wav\nb.wav c.wav\n")
    line = error_line("score_trials.py", "--load_path", str(checkpoint), "--trials", str(trials), "--output",
                      str(tmp_path / "out"), capsys=capsys, monkeypatch=monkeypatch)
    assert line.endswith("malformed line, expected '<1|0> <audio path> <audio path>' as the first trial, got "
                         "'b.wav c.wav'")


def test_formats_other_than_wav_and_flac_are_refused_by_name(checkpoint, tiny_corpus, tmp_path, capsys,
                                                             monkeypatch):
    wav = corpus_wav(tiny_corpus)
    (tmp_path / "a.mp3").write_bytes(wav.read_bytes())  # libsndfile would decode it by its content
    _, err = ok("extract_embeddings.py", "--load_path", str(checkpoint), "--output", str(tmp_path / "out"),
                str(wav), str(tmp_path / "a.mp3"), capsys=capsys, monkeypatch=monkeypatch)
    assert f"skipped {tmp_path / 'a.mp3'}: unsupported audio format '.mp3' (supported: .wav, .flac" in err
    assert "(1 skipped: 1 unsupported format)" in err


def test_export_refuses_a_folder_before_tracing(checkpoint, tmp_path, capsys, monkeypatch):
    traced = []
    monkeypatch.setitem(EXPORTERS, "onnx", (lambda *args: traced.append(args), EXPORTERS["onnx"][1]))
    line = error_line("export.py", "--load_path", str(checkpoint), "--format", "onnx", "--output", str(tmp_path),
                      capsys=capsys, monkeypatch=monkeypatch)
    assert line == f"error: --output {tmp_path} is a folder; name the file to write (e.g. {tmp_path / 'model.onnx'})"
    assert not traced


def test_a_padded_batch_changes_the_embeddings_so_files_go_one_length_at_a_time(checkpoint, tiny_corpus):
    embedder = SpeakerModel.from_checkpoint(checkpoint, "cpu").embedder()
    short = torch.from_numpy(soundfile.read(corpus_wav(tiny_corpus, 0), dtype="float32")[0])
    long = torch.from_numpy(soundfile.read(corpus_wav(tiny_corpus, 1), dtype="float32")[0])
    short, long = (short, long) if short.numel() < long.numel() else (long, short)
    padded = torch.zeros(2, long.numel())
    padded[0, : short.numel()], padded[1] = short, long
    with torch.no_grad():
        alone, in_batch, long_alone = embedder(short[None])[0], embedder(padded), embedder(long[None])[0]
    assert cosine(in_batch[1], long_alone) >= 0.99999
    assert cosine(in_batch[0], alone) < 0.999


# ----- the Python API -----
def python_example(page: Path) -> str:
    """The Python block of docs/using_a_model.md that follows '<!-- example run by the tests -->'."""
    text = page.read_text(encoding="utf-8")
    return text.split("<!-- example run by the tests -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_python_example_runs(checkpoint, tiny_corpus, tmp_path, capsys, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint_best.pth").write_bytes(checkpoint.read_bytes())
    for name, index in (("a.wav", 0), ("b.wav", 1), ("c.wav", 12)):
        (tmp_path / name).write_bytes(corpus_wav(tiny_corpus, index).read_bytes())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(python_example(REPO / "docs" / "using_a_model.md"), namespace)
    model = namespace["model"]
    a, c = namespace["a"], namespace["c"]
    reference = evaluation_embeddings(checkpoint, tiny_corpus, [corpus_wav(tiny_corpus, i) for i in (0, 12)])
    assert cosine(a, reference[0]) >= 0.99999 and cosine(c, reference[1]) >= 0.99999
    assert namespace["score"] == pytest.approx(cosine(reference[0], reference[1]), abs=1e-5)
    assert namespace["same"] == (namespace["score"] >= 0.25)
    assert namespace["batch"].shape == (3, 128)
    samples, rate = soundfile.read(corpus_wav(tiny_corpus, 0), dtype="float32")
    common = gcd(22_050, rate)
    resampled = resample_poly(samples, 22_050 // common, rate // common).astype(np.float32)
    assert cosine(model.embed(resampled, sample_rate=22_050), a) >= 0.999
