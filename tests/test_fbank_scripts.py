"""The fbank recipe end to end on wavs alone (no data_preprocess.py run): an augmented run stopped mid-epoch and
resumed equals one never stopped; bad front-end and augmentation settings stop with one line and exit status 2
before the run folder is created."""
from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tests.conftest import run_script
from tests.test_faults import GENOTYPE, IDEN_CFG, SINGLE_THREAD, VERI_CFG, fail, files_under, last_line, start, wait_until
from tests.test_scripts import TINY_CELL, only_run, small
from utils.checkpoint import load_checkpoint
from utils.config import get_default_config

EPOCHS = 2
RUN_LENGTH = ["TRAIN.END_EPOCH", str(EPOCHS), "TRAIN.BATCH_SIZE", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "5"]


def augmented(augmentation_dir: Path) -> list[str]:
    return ["DATASET.FEATURES", "fbank", "DATASET.N_MELS", "40",
            "AUGMENT.NOISE_DIR", str(augmentation_dir / "musan"), "AUGMENT.NOISE_PROB", "0.6",
            "AUGMENT.RIR_DIR", str(augmentation_dir / "rirs"), "AUGMENT.RIR_PROB", "0.6",
            "AUGMENT.SPEED_PERTURB", "True", "AUGMENT.SPECAUGMENT_PROB", "0.6"]


def training_args(corpus: Path, out: Path, augmentation_dir: Path, *options: str) -> list[str]:
    return ["train_identification.py", "--cfg", IDEN_CFG, *options,
            *small(corpus, out, *TINY_CELL, *RUN_LENGTH, *augmented(augmentation_dir))]


def outcome(run: Path):
    history = [json.loads(line) for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]
    weights = load_checkpoint(run / "Model" / "checkpoint_last.pth")["state_dict"]
    results = json.loads((run / "results.json").read_text())
    return history, weights, {key: results[key] for key in ("test_last", "test_selected_on_val")}


def test_an_augmented_fbank_run_stopped_mid_epoch_then_resumed_equals_one_never_stopped(
    wav_corpus, augmentation_dir, tmp_path
):
    reference_out = tmp_path / "uninterrupted"
    run_script(*training_args(wav_corpus, reference_out, augmentation_dir, "--text_arch", GENOTYPE),
               env=SINGLE_THREAD)
    reference = only_run(reference_out / "logs_scratch")
    assert not (wav_corpus / "feature").exists()

    out = tmp_path / "stopped"
    stderr = tmp_path / "stderr.txt"
    process = start(training_args(wav_corpus, out, augmentation_dir, "--text_arch", GENOTYPE), stderr)
    # A progress bar on a terminal, plain progress lines (every PRINT_FREQ batches) in a file as here.
    in_epoch_1 = re.compile(rb"epoch 1: +(\d+%\|[^|]*\| )?[1-4]/5")
    wait_until(process, lambda: bool(in_epoch_1.search(stderr.read_bytes())), "a step of epoch 1")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    run = only_run(out / "logs_scratch")
    saved = load_checkpoint(run / "Model" / "checkpoint_last.pth")
    assert saved["epoch"] == 1 and 1 <= saved["step_in_epoch"] < 5, last_line(stderr.read_text())
    assert not (run / "results.json").exists()

    run_script(*training_args(wav_corpus, out, augmentation_dir, "--load_path", str(run)), env=SINGLE_THREAD)
    history, weights, scores = outcome(run)
    expected_history, expected_weights, expected_scores = outcome(reference)
    assert [row["epoch"] for row in history] == list(range(EPOCHS)) and history == expected_history
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[key], expected_weights[key]) for key in weights)
    assert scores == expected_scores
    # Speed perturbation: a classifier over 3 x 10 speakers.
    assert weights["classifier.weight"].shape[0] == 30


def write_damaged_folders(tmp_path: Path) -> None:
    """Augmentation folders that are wrong in one way each: empty/, no_audio/, unreadable/, rirs_unreadable/."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_audio" / "noise").mkdir(parents=True)
    (tmp_path / "no_audio" / "noise" / "README.txt").write_text("no sounds here")
    (tmp_path / "unreadable" / "noise").mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        (tmp_path / "unreadable" / "noise" / name).write_bytes(b"RIFF....WAVE broken")
    shutil.copytree(tmp_path / "unreadable" / "noise", tmp_path / "rirs_unreadable")


# (overrides, expected line); {tmp} is the test's folder.
BAD_SETTINGS = {
    "unknown front-end": (["DATASET.FEATURES", "mfcc"],
                          "error: unknown DATASET.FEATURES 'mfcc'; valid names: spectrogram, fbank"),
    "noise folder missing": (["AUGMENT.NOISE_DIR", "{tmp}/nowhere"],
                             "error: AUGMENT.NOISE_DIR {tmp}/nowhere does not exist or is not a folder"),
    "noise folder empty": (["AUGMENT.NOISE_DIR", "{tmp}/empty"],
                           "error: AUGMENT.NOISE_DIR {tmp}/empty has none of the sub-folders noise/, music/, speech/ "
                           "(MUSAN's layout)"),
    "noise folder without audio": (["AUGMENT.NOISE_DIR", "{tmp}/no_audio", "AUGMENT.NOISE_PROB", "0.5"],
                                   "error: AUGMENT.NOISE_DIR {tmp}/no_audio/noise holds no audio files (.wav, .flac)"),
    "noise files all unreadable": (["AUGMENT.NOISE_DIR", "{tmp}/unreadable", "AUGMENT.NOISE_PROB", "0.5"],
                                   "error: AUGMENT.NOISE_DIR {tmp}/unreadable/noise: none of its 2 audio files can be "
                                   "read ({tmp}/unreadable/noise/a.wav: unreadable audio"),
    "RIR folder missing": (["AUGMENT.RIR_DIR", "{tmp}/nowhere", "AUGMENT.RIR_PROB", "0.5"],
                           "error: AUGMENT.RIR_DIR {tmp}/nowhere does not exist or is not a folder"),
    "RIR folder empty": (["AUGMENT.RIR_DIR", "{tmp}/empty"], "error: AUGMENT.RIR_DIR {tmp}/empty holds no audio files"),
    "RIR files all unreadable": (["AUGMENT.RIR_DIR", "{tmp}/rirs_unreadable"],
                                 "error: AUGMENT.RIR_DIR {tmp}/rirs_unreadable: none of its 2 audio files can be read"),
    "noise probability without a folder": (["AUGMENT.NOISE_PROB", "0.5"],
                                           "error: AUGMENT.NOISE_PROB 0.5 needs AUGMENT.NOISE_DIR (a folder in "
                                           "MUSAN's layout)"),
    "RIR probability without a folder": (["AUGMENT.RIR_PROB", "0.3"],
                                         "error: AUGMENT.RIR_PROB 0.3 needs AUGMENT.RIR_DIR (a folder of room impulse "
                                         "responses)"),
    "probability above 1": (["AUGMENT.SPECAUGMENT_PROB", "1.5"],
                            "error: AUGMENT.SPECAUGMENT_PROB must be in [0, 1], got 1.5"),
    "too many mel bands": (["DATASET.N_MELS", "300"], "error: DATASET.N_MELS 300 is too many for a 512-point FFT"),
    "crop too short for the FFT": (["DATASET.PARTIAL_N_FRAMES", "2"],
                                   "error: DATASET.PARTIAL_N_FRAMES must be at least 3 with DATASET.FEATURES fbank"),
}


@pytest.mark.parametrize("script", ["train_identification.py", "train_verification.py"])
@pytest.mark.parametrize("problem", BAD_SETTINGS)
def test_bad_front_end_and_augmentation_settings(problem, script, wav_corpus, tmp_path, capsys, monkeypatch):
    write_damaged_folders(tmp_path)
    overrides, expected = BAD_SETTINGS[problem]
    overrides = [value.replace("{tmp}", str(tmp_path)) for value in overrides]
    cfg = IDEN_CFG if "identification" in script else VERI_CFG
    line = fail(script, *["--cfg", cfg, "--text_arch", GENOTYPE,
                                       *small(wav_corpus, tmp_path / "out", *TINY_CELL, "DATASET.FEATURES", "fbank",
                                              *overrides)], capsys=capsys, monkeypatch=monkeypatch)
    assert line.startswith(expected.replace("{tmp}", str(tmp_path))), line
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("key, value", [("AUGMENT.NOISE_PROB", "0.5"), ("AUGMENT.SPEED_PERTURB", "True")])
def test_waveform_augmentation_of_the_precomputed_spectrograms_is_refused(key, value, augmentation_dir, tiny_corpus,
                                                                          tmp_path, capsys, monkeypatch):
    line = fail("train_identification.py", *[
        "--cfg", IDEN_CFG, "--text_arch", GENOTYPE,
        *small(tiny_corpus, tmp_path / "out", *TINY_CELL, "AUGMENT.NOISE_DIR", str(augmentation_dir / "musan"), key,
               value)], capsys=capsys, monkeypatch=monkeypatch)
    assert line == (f"error: {key} need waveforms: set DATASET.FEATURES fbank (the spectrogram recipe reads "
                    "precomputed features and takes AUGMENT.SPECAUGMENT_PROB only)")
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("script, missing", [("train_verification.py", "dev/wav"),
                                             ("evaluate_verification.py", "test/wav")])
def test_fbank_with_a_data_folder_without_wavs(script, missing, tiny_corpus, tmp_path, capsys, monkeypatch):
    data = tmp_path / "VoxCeleb1"
    data.mkdir()
    for name in ("iden_split.txt", "veri_test.txt"):
        shutil.copy(tiny_corpus / name, data / name)
    if missing == "test/wav":
        shutil.copytree(tiny_corpus / "dev", data / "dev")
    extra = ["--text_arch", GENOTYPE]
    if script.startswith("evaluate"):
        fbank_config = get_default_config()
        fbank_config.DATASET.FEATURES = "fbank"
        torch.save({"state_dict": {}, "epoch": 0, "config": fbank_config.dump()}, tmp_path / "checkpoint.pth")
        extra += ["--load_path", str(tmp_path / "checkpoint.pth")]
    line = fail(script, *["--cfg", VERI_CFG, *extra, *small(data, tmp_path / "out", *TINY_CELL,
                                                                        "DATASET.FEATURES", "fbank")], capsys=capsys, monkeypatch=monkeypatch)
    assert line == (f"error: no wav files in {data}/{missing}: DATASET.FEATURES fbank reads "
                    f"{missing}/<speaker>/<video>/<utterance>.wav of VoxCeleb1's layout")
    assert files_under(tmp_path / "out") == []


def test_fbank_verification_trains_and_evaluates_from_wavs_alone(wav_corpus, tmp_path):
    out = tmp_path / "out"
    fbank = ["DATASET.FEATURES", "fbank", "DATASET.N_MELS", "40"]
    run_script("train_verification.py", "--cfg", VERI_CFG, "--text_arch", GENOTYPE,
               *small(wav_corpus, out, *TINY_CELL, *fbank, "TRAIN.MAX_STEPS_PER_EPOCH", "2"), env=SINGLE_THREAD)
    run = only_run(out / "logs_scratch")
    trained = json.loads((run / "results.json").read_text())["last_epoch"]
    run_script("evaluate_verification.py", "--cfg", VERI_CFG, "--load_path", str(run / "Model" / "checkpoint_last.pth"),
               *small(wav_corpus, out, *TINY_CELL, *fbank), env=SINGLE_THREAD)
    evaluation = only_run(out / "logs_eval")
    results = json.loads((evaluation / "results.json").read_text())
    assert results["trials"] == 90 and results["skipped_trials"] == 0
    # The same weights on the same windows: the evaluation repeats the last epoch's validation.
    assert results["eer"] == pytest.approx(trained["eer"], abs=1e-9)
    assert len((evaluation / "scores.txt").read_text().splitlines()) == 90
    assert not (wav_corpus / "feature").exists()
