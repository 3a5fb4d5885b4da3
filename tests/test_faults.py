"""Faults and bad input end to end: killed or signalled runs resume to the result of an uninterrupted run, and
every kind of bad input stops the entry script with one line, exit status 2 and nothing half-written.

Killing, signalling and resuming use real processes. Bad input runs each entry script's `main` in this process
through `run_main`, as the script's `__main__` does: an exception that `run_main` did not turn into one line
would fail the test, exactly as it would print a traceback from the command line.
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from functions.experiment import KNOWN_ERRORS
from functions.run_directory import RunDirectory
from models.genotypes import AUTOSPEECH, genotype_to_text
from tests.conftest import PYTHON, REPO, SINGLE_THREAD, launch, run_script
from tests.helpers.launch import read_record
from tests.test_scripts import TINY_CELL, only_run, small
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.cli import run_main

GENOTYPE = genotype_to_text(AUTOSPEECH)
IDEN_CFG, VERI_CFG, SEARCH_CFG = "exps/demo/scratch_iden.yaml", "exps/demo/scratch_veri.yaml", "exps/demo/search.yaml"
RESNET_IDEN_CFG, RESNET_VERI_CFG = "exps/demo/resnet18_iden.yaml", "exps/demo/resnet18_veri.yaml"
# Epochs of 6 steps, validated every epoch: a signal sent when an epoch ends lands inside the next one (or, on a
# busy machine, a later one: 4 epochs leave room for that).
EPOCHS = 4
RUN_LENGTH = ["TRAIN.END_EPOCH", str(EPOCHS), "TRAIN.BATCH_SIZE", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "6"]
TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ----- real processes: kill, signal, resume -----
def training_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["train_identification.py", "--cfg", IDEN_CFG, *extra, *small(corpus, out, *TINY_CELL, *RUN_LENGTH)]


def start(args: list[str], stderr: Path) -> subprocess.Popen:
    """A training process in the background; its stderr goes to a file, which never fills up as a pipe can."""
    with stderr.open("w") as handle:
        return subprocess.Popen([PYTHON, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=handle,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **SINGLE_THREAD})


def wait_until(process: subprocess.Popen, condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 240
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"the run ended or stalled before {what}")
        time.sleep(0.02)


def epoch_ended(out: Path, epoch: int, log_offset: int = 0) -> Callable[[], bool]:
    """Whether the run's log, past `log_offset` bytes, reports the end of `epoch`: its checkpoint is then on disk."""
    line = f" epoch {epoch}: lr ".encode()
    return lambda: any(line in log.read_bytes()[log_offset:] for log in out.glob("logs_scratch/*/Log/train.log"))


def resume(corpus: Path, out: Path, run: Path) -> None:
    run_script(*training_args(corpus, out, "--load_path", str(run)), env=SINGLE_THREAD)


def logged_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]


def outcome(run: Path) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """What a finished run leaves: its logged metrics, final weights and test scores."""
    history = logged_metrics(run)
    weights = load_checkpoint(run / "Model" / "checkpoint_last.pth")["state_dict"]
    results = json.loads((run / "results.json").read_text())
    return history, weights, {key: results[key] for key in ("test_last", "test_selected_on_val")}


def assert_same_outcome(run: Path, reference: Path) -> None:
    history, weights, scores = outcome(run)
    expected_history, expected_weights, expected_scores = outcome(reference)
    assert [row["epoch"] for row in history] == list(range(EPOCHS))
    assert history == expected_history
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[key], expected_weights[key]) for key in weights)
    assert scores == expected_scores


def last_line(stderr: str) -> str:
    """The last line of the output as a terminal shows it (progress bars redraw with carriage returns and cursor
    moves); nothing may come after it, not even a progress bar cleaning up."""
    assert "Traceback" not in stderr, stderr
    last = stderr.rstrip("\n").rsplit("\n", 1)[-1]
    return TERMINAL_CONTROL.sub("", last).rsplit("\r", 1)[-1].strip()


@pytest.fixture(scope="module")
def uninterrupted(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_script(*training_args(tiny_corpus, out, "--text_arch", GENOTYPE), env=SINGLE_THREAD)
    return only_run(out / "logs_scratch")


def test_sigkill_in_the_middle_of_a_run_then_resume_gives_the_uninterrupted_result(
    uninterrupted, tiny_corpus, tmp_path
):
    stderr = tmp_path / "stderr.txt"
    process = start(training_args(tiny_corpus, tmp_path, "--text_arch", GENOTYPE), stderr)
    # The progress bar shows a step of epoch 1 done (or, if it drew none, epoch 1 has ended).
    in_epoch_1 = re.compile(rb"epoch 1: +\d+%\|[^|]*\| [1-5]/6")
    wait_until(process, lambda: bool(in_epoch_1.search(stderr.read_bytes())) or epoch_ended(tmp_path, 1)(),
               "a step of epoch 1")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    run = only_run(tmp_path / "logs_scratch")
    assert not (run / "results.json").exists()
    killed_at = load_checkpoint(run / "Model" / "checkpoint_last.pth")
    assert 1 <= killed_at["epoch"] < EPOCHS and killed_at["step_in_epoch"] == 0
    # What a kill in the middle of writing a checkpoint leaves behind.
    stale = run / "Model" / ".checkpoint_last.pth.x1y2z3.tmp"
    stale.write_bytes(b"partial")

    resume(tiny_corpus, tmp_path, run)
    assert_same_outcome(run, uninterrupted)
    assert not stale.exists()


def test_sigint_then_sigterm_save_the_state_and_the_resumed_run_gives_the_uninterrupted_result(
    uninterrupted, tiny_corpus, tmp_path
):
    run_args = training_args(tiny_corpus, tmp_path, "--text_arch", GENOTYPE)
    epoch, log_offset = 0, 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        stderr_file = tmp_path / f"stderr_{signum}.txt"
        process = start(run_args, stderr_file)
        wait_until(process, epoch_ended(tmp_path, epoch, log_offset), f"the end of epoch {epoch}")
        process.send_signal(signum)
        run = only_run(tmp_path / "logs_scratch")
        assert process.wait(timeout=120) == 128 + signum
        stderr = stderr_file.read_text()
        saved = load_checkpoint(run / "Model" / "checkpoint_last.pth")
        where = (f"at epoch {saved['epoch']}, step {saved['step_in_epoch']}" if saved["step_in_epoch"]
                 else f"after epoch {saved['epoch'] - 1}")
        assert last_line(stderr) == (
            f"error: stopped by {signal.Signals(signum).name} {where}; state saved to "
            f"{run / 'Model' / 'checkpoint_last.pth'}; continue with --load_path {run}"
        )
        assert not (run / "results.json").exists()
        # The resumed run is signalled when it finishes the epoch this one was stopped in or before.
        run_args = training_args(tiny_corpus, tmp_path, "--load_path", str(run))
        epoch, log_offset = saved["epoch"], (run / "Log" / "train.log").stat().st_size

    resume(tiny_corpus, tmp_path, run)
    assert_same_outcome(run, uninterrupted)


def test_a_finished_run_extended_by_resume_equals_one_run_with_the_longer_schedule(
    uninterrupted, tiny_corpus, tmp_path
):
    """One epoch, then `--load_path` with a longer TRAIN.END_EPOCH: the learning-rate schedule and drop-path follow
    the new length, so the result is that of a run of that length from the start (epoch 0 is the same under both
    schedules)."""
    run_script(*training_args(tiny_corpus, tmp_path, "--text_arch", GENOTYPE), "TRAIN.END_EPOCH", "1",
               env=SINGLE_THREAD)
    run = only_run(tmp_path / "logs_scratch")
    assert len((run / "Log" / "metrics.jsonl").read_text().splitlines()) == 1
    resume(tiny_corpus, tmp_path, run)
    assert_same_outcome(run, uninterrupted)


# ----- the other entry scripts: killed or stopped at a chosen step (tests/helpers/launch.py), then resumed -----
def two_trials(corpus: Path, folder: Path) -> Path:
    """The first target trial of the corpus and a non-target trial: validation embeds 3 or 4 utterances, not 18."""
    trials = [line.split() for line in (corpus / "veri_test.txt").read_text().splitlines()]
    target = next(trial for trial in trials if trial[0] == "1")
    non_targets = [trial for trial in trials if trial[0] == "0"]
    sharing = [trial for trial in non_targets if set(trial[1:]) & set(target[1:])]
    path = folder / "two_trials.txt"
    path.write_text("".join(" ".join(trial) + "\n" for trial in (target, (sharing or non_targets)[0])))
    return path


def assert_same_tensors(value, expected, where: str = "") -> None:
    """Equal nested checkpoint contents, tensors bit for bit."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(value, torch.Tensor) and torch.equal(value, expected), where
    elif isinstance(expected, dict):
        assert value.keys() == expected.keys(), where
        for key in expected:
            assert_same_tensors(value[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(value) == len(expected), where
        for index, (item, expected_item) in enumerate(zip(value, expected)):
            assert_same_tensors(item, expected_item, f"{where}/{index}")
    else:
        assert value == expected, where


def assert_resumed_exactly(run: Path, reference: Path, state_keys: tuple[str, ...]) -> None:
    """The metrics, the checkpoint's `state_keys` (weights, optimisers) and the results of an uninterrupted run."""
    history, expected_history = (logged_metrics(r) for r in (run, reference))
    assert history == expected_history
    last, expected_last = (load_checkpoint(r / "Model" / "checkpoint_last.pth") for r in (run, reference))
    for key in state_keys:
        assert_same_tensors(last[key], expected_last[key], key)
    results, expected_results = ({key: value for key, value in json.loads((r / "results.json").read_text()).items()
                                  if not key.endswith("_seconds")} for r in (run, reference))
    assert results == expected_results


def test_search_stopped_then_killed_mid_epoch_resumes_to_the_uninterrupted_search(tiny_corpus, tmp_path):
    """3 steps an epoch, each an architecture step on a `val` batch (10 utterances: 2 batches of 4, so the cycle
    of `val` batches wraps inside an epoch) and a weight step. SIGTERM at step 1 of epoch 0: the resume skips the
    2 steps taken, in both loaders; SIGKILL at step 1 of epoch 1: the resume redoes that epoch from its start.
    Single-path mode and half-second crops: four searches at half the cost (the same loop, samples and resume)."""
    def search(out: Path, record: str, *probes: str, options: tuple = (), check: bool = True):
        return launch(1, "--record", str(out / record), *probes, "search.py", "--cfg", SEARCH_CFG, *options,
                      *small(tiny_corpus, out, *TINY_CELL, "TRAIN.END_EPOCH", "2", "MODEL.SINGLE_PATH", "True",
                             "DATASET.PARTIAL_N_FRAMES", "50"), check=check)

    search(tmp_path / "straight", "record0")
    reference = only_run(tmp_path / "straight" / "logs_search")
    out = tmp_path / "interrupted"
    stopped = search(out, "record0", "--send_signal", "SIGTERM", "--at_call", "4", check=False)
    assert stopped.returncode == 128 + signal.SIGTERM
    run = only_run(out / "logs_search")
    saved = load_checkpoint(run / "Model" / "checkpoint_last.pth")
    assert (saved["epoch"], saved["step_in_epoch"]) == (0, 2)
    killed = search(out, "record1", "--send_signal", "SIGKILL", "--at_call", "5", options=("--load_path", str(run)),
                    check=False)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(run / "Model" / "checkpoint_last.pth")["step_in_epoch"] == 0
    search(out, "record2", options=("--load_path", str(run)))

    # Training forward passes: architecture step, weight step, ... (3 of each an epoch).
    passes = [call["items"] for call in read_record(tmp_path / "straight" / "record0")]
    assert [len(p) for p in passes] == [4] * 12 and len({tuple(p) for p in passes}) == 12
    assert [call["items"] for call in read_record(out / "record0")] == passes[:4]
    assert [call["items"] for call in read_record(out / "record1")] == passes[4:9]
    assert [call["items"] for call in read_record(out / "record2")] == passes[6:]
    # exps/demo/search.yaml's TRAIN.DROPPATH_PROB 0.2, reached in the last epoch: 0.2 * epoch / (2 - 1).
    assert [call["drop_path_prob"] for call in read_record(tmp_path / "straight" / "record0")] == [0.0] * 6 + [0.2] * 6
    assert_resumed_exactly(run, reference, ("state_dict", "optimizer", "arch_optimizer", "genotype", "global_step"))


@pytest.mark.parametrize("script,cfg,needs,logs,size", [
    ("train_verification.py", VERI_CFG, ["--text_arch", GENOTYPE], "logs_scratch", []),
    # ResNet-18 is the costliest network here: half-second crops in pairs.
    ("train_baseline_verification.py", RESNET_VERI_CFG, [], "logs",
     ["TRAIN.BATCH_SIZE", "2", "DATASET.PARTIAL_N_FRAMES", "50"]),
], ids=["genotype network", "ResNet-18"])
def test_verification_training_killed_mid_epoch_resumes_to_the_uninterrupted_run(
    script, cfg, needs, logs, size, tiny_corpus, tmp_path
):
    """SIGKILL at step 1 of epoch 1 (of 2, 3 steps each); the resume redoes epoch 1 from its end-of-epoch-0
    checkpoint. Drop-path 0.5 for the genotype network: 0.5 * epoch / 2 in each epoch, so 0.25 in epoch 1."""
    def train(out: Path, record: str, *probes: str, options: tuple = (), check: bool = True):
        return launch(1, "--record", str(out / record), *probes, script, "--cfg", cfg, *options, *needs,
                      *small(tiny_corpus, out, *TINY_CELL, "TRAIN.END_EPOCH", "2", "MODEL.DROP_PATH_PROB", "0.5",
                             "DATASET.TRIALS", str(two_trials(tiny_corpus, tmp_path)), *size), check=check)

    train(tmp_path / "straight", "record0")
    reference = only_run(tmp_path / "straight" / logs)
    out = tmp_path / "interrupted"
    killed = train(out, "record0", "--send_signal", "SIGKILL", "--at_call", "5", check=False)
    assert killed.returncode == -signal.SIGKILL
    run = only_run(out / logs)
    assert load_checkpoint(run / "Model" / "checkpoint_last.pth")["epoch"] == 1
    train(out, "record1", options=("--load_path", str(run)))

    straight = read_record(tmp_path / "straight" / "record0")
    assert [call["items"] for call in read_record(out / "record0")] == [call["items"] for call in straight[:5]]
    assert [call["items"] for call in read_record(out / "record1")] == [call["items"] for call in straight[3:]]
    if "--text_arch" in needs:
        assert [call["drop_path_prob"] for call in straight] == [0.0] * 3 + [0.25] * 3
    assert_resumed_exactly(run, reference, ("state_dict", "optimizer", "global_step", "best_eer"))


# ----- bad input: one line, exit status 2, nothing half-written -----
BAD_INPUT_STATUS = 2  # the README's promise for every row of its bad-input table


def fail(script: str, *argv: str, capsys, monkeypatch) -> str:
    """Run `script`'s main in this process; it must exit with status 2 and one `error:` line as its last output."""
    module = importlib.import_module(script.removesuffix(".py"))
    monkeypatch.setattr(sys, "argv", [script, *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(module.main, KNOWN_ERRORS)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == BAD_INPUT_STATUS, stderr
    assert "Warning" not in stderr, stderr
    line = last_line(stderr)
    assert line.startswith("error: ") and "\n" not in line
    return line


def test_sigterm_outside_training_exits_with_one_line_and_restores_the_handler(capsys):
    """Training saves its state on SIGTERM itself; anywhere else, `finally` blocks run and one line says why."""
    cleaned_up = []

    def main() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises long before this ends
            return 0
        finally:
            cleaned_up.append(True)

    previous = signal.getsignal(signal.SIGTERM)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, KNOWN_ERRORS)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "error: terminated (SIGTERM)"
    assert cleaned_up == [True]
    assert signal.getsignal(signal.SIGTERM) is previous


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def corpus_copy(tiny_corpus: Path, tmp_path: Path) -> Path:
    """A copy of the shared corpus to damage (feature/merged's relative links then point into the copy)."""
    return Path(shutil.copytree(tiny_corpus, tmp_path / "VoxCeleb1", symlinks=True))


SCRIPTS = {  # script: (config, arguments it needs besides --cfg)
    "search.py": (SEARCH_CFG, []),
    "train_identification.py": (IDEN_CFG, ["--text_arch", GENOTYPE]),
    "train_verification.py": (VERI_CFG, ["--text_arch", GENOTYPE]),
    "train_baseline_identification.py": (RESNET_IDEN_CFG, []),
    "train_baseline_verification.py": (RESNET_VERI_CFG, []),
}


@pytest.fixture(scope="module")
def checkpoint_path(uninterrupted) -> Path:
    return uninterrupted / "Model" / "checkpoint_last.pth"


def every_script(checkpoint: Path) -> dict[str, tuple[str, list[str]]]:
    evaluation = {name: (IDEN_CFG if "identification" in name else VERI_CFG, ["--load_path", str(checkpoint)])
                  for name in ("evaluate_identification.py", "evaluate_verification.py")}
    return {**SCRIPTS, **evaluation}


@pytest.mark.parametrize("script", [*SCRIPTS, "evaluate_identification.py", "evaluate_verification.py"])
@pytest.mark.parametrize("problem,overrides,expected", [
    ("missing data folder", ["DATASET.DATA_DIR", "{tmp}/nowhere"], "DATASET.DATA_DIR {tmp}/nowhere does not exist"),
    ("empty data folder setting", ["DATASET.DATA_DIR", ""], "DATASET.DATA_DIR is not set"),
    ("misspelt override", ["TRAIN.LRR", "0.1"], "unknown config key TRAIN.LRR (did you mean TRAIN.LR"),
    ("value of the wrong type", ["TRAIN.END_EPOCH", "many"], "TRAIN.END_EPOCH must be of type int, got str many"),
    ("option after the overrides", ["--trials", "veri_test.txt"], "--trials comes after the KEY VALUE overrides"),
    ("unwritable output (under a file)", ["OUTPUT_DIR", "{tmp}/a_file/out"], "{tmp}/a_file/out/logs"),
    ("unwritable output (/proc)", ["OUTPUT_DIR", "/proc/autospeech"], "/proc/autospeech/logs"),
])
def test_bad_settings_stop_every_script_before_any_work(
    script, problem, overrides, expected, checkpoint_path, tiny_corpus, tmp_path, capsys, monkeypatch
):
    (tmp_path / "a_file").write_text("not a folder")
    cfg, needs = every_script(checkpoint_path)[script]
    overrides = [value.replace("{tmp}", str(tmp_path)) for value in overrides]
    # Output comes before input: with an unwritable output the broken data folder is never read.
    data = str(tmp_path / "empty") if problem.startswith("unwritable") else str(tiny_corpus)
    (tmp_path / "empty").mkdir()
    line = fail(script, "--cfg", cfg, *needs, *small(Path(data), tmp_path / "out", *TINY_CELL), *overrides,
                capsys=capsys, monkeypatch=monkeypatch)
    assert expected.replace("{tmp}", str(tmp_path)) in line
    if problem.startswith("unwritable"):
        assert "not writable" in line
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("name,text,expected", [
    ("misspelt.yaml", "TRAIN:\n  LRR: 0.1\n", "misspelt.yaml: unknown config key TRAIN.LRR (did you mean TRAIN.LR"),
    ("section.yaml", "TRAINN:\n  LR: 0.1\n", "section.yaml: unknown config key TRAINN (did you mean TRAIN"),
    ("malformed.yaml", "TRAIN:\n  LR: [0.1\n  END_EPOCH: 3\n", "malformed.yaml: line 3: not valid YAML"),
    ("tab.yaml", "TRAIN:\n\tLR: 0.1\n", "tab.yaml: line 2: not valid YAML"),
    ("list.yaml", "- TRAIN\n- MODEL\n", "list.yaml: not a YAML mapping of config keys"),
    ("absent.yaml", None, "config file not found: {tmp}/absent.yaml"),
])
def test_bad_config_files(name, text, expected, tiny_corpus, tmp_path, capsys, monkeypatch):
    cfg = tmp_path / name
    if text is not None:
        cfg.write_text(text)
    line = fail("search.py", "--cfg", str(cfg), *small(tiny_corpus, tmp_path / "out"),
                capsys=capsys, monkeypatch=monkeypatch)
    assert expected.replace("{tmp}", str(tmp_path)) in line
    assert not (tmp_path / "out").exists()


ALL_SCRIPTS = [*SCRIPTS, "evaluate_identification.py", "evaluate_verification.py"]


@pytest.mark.parametrize("script", ALL_SCRIPTS)
@pytest.mark.parametrize("arguments,expected", [
    ([], "error: the following arguments are required: --cfg"),
    (["--cfg"], "error: argument --cfg: expected one argument (see {script} --help)"),
    (["--cfg", IDEN_CFG, "--bogus"], "error: unrecognized arguments: --bogus (see {script} --help)"),
    (["--cfg", IDEN_CFG, "--load_path"], "error: argument --load_path: expected one argument (see {script} --help)"),
    (["--cfg", IDEN_CFG, "TRAIN.LR"], "error: overrides must be KEY VALUE pairs; 'TRAIN.LR' has no value"),
    (["--cfg", IDEN_CFG, "TRAIN.LR", "0.1", "TRAIN.END_EPOCH"],
     "error: overrides must be KEY VALUE pairs; 'TRAIN.END_EPOCH' has no value"),
], ids=["no arguments", "--cfg without a value", "unknown option", "--load_path without a value",
        "override without a value", "last override without a value"])
def test_argument_errors_of_every_entry_script(script, arguments, expected, tmp_path, capsys, monkeypatch):
    if script.startswith("evaluate") and arguments[2:3] != ["--load_path"]:
        arguments = [*arguments[:2], "--load_path", str(tmp_path / "checkpoint.pth"), *arguments[2:]]
    line = fail(script, *arguments, capsys=capsys, monkeypatch=monkeypatch)
    assert line.startswith(expected.replace("{script}", script))
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("script,arguments,expected", [
    ("data_preprocess.py", [], "error: the following arguments are required: data_dir (see data_preprocess.py --help)"),
    ("data_preprocess.py", ["/data", "--bogus"], "error: unrecognized arguments: --bogus (see data_preprocess.py"),
    ("data_objects.synthetic", [], "error: the following arguments are required: out_dir"),
    ("models.visualize", [], "error: the following arguments are required: genotype, out_prefix"),
    ("demo.py", ["--bogus"], "error: unrecognized arguments: --bogus (see demo.py --help)"),
])
def test_argument_errors_of_the_other_entry_points(script, arguments, expected, capsys, monkeypatch):
    assert fail(script, *arguments, capsys=capsys, monkeypatch=monkeypatch).startswith(expected)


# (script, overrides, what the one line must name: the key, the value given and the values accepted)
UNUSABLE_SETTINGS = {
    "batch of 0": ("train_identification.py", ["TRAIN.BATCH_SIZE", "0"], ["TRAIN.BATCH_SIZE", "at least 1", "0"]),
    "no epoch": ("search.py", ["TRAIN.END_EPOCH", "0"], ["TRAIN.END_EPOCH", "at least 1", "0"]),
    "validation never": ("train_verification.py", ["VAL_FREQ", "0"], ["VAL_FREQ", "at least 1", "0"]),
    "negative window": ("train_baseline_identification.py", ["DATASET.PARTIAL_N_FRAMES", "-3"],
                        ["DATASET.PARTIAL_N_FRAMES", "at least 1", "-3"]),
    "unknown model": ("train_baseline_verification.py", ["MODEL.NAME", "resnet50"],
                      ["MODEL.NAME", "resnet50", "model_search", "model", "resnet18", "resnet34"]),
    "unknown search space": ("search.py", ["MODEL.SEARCH_SPACE", "s9"], ["MODEL.SEARCH_SPACE", "s9", "s1, s2, s3"]),
    "unknown device": ("evaluate_identification.py", ["DEVICE", "tpu"], ["DEVICE", "tpu", "auto", "cpu", "cuda"]),
    "cuda without a GPU": ("evaluate_verification.py", ["DEVICE", "cuda"], ["DEVICE", "cuda", "no CUDA device"]),
}


@pytest.mark.parametrize("setting", UNUSABLE_SETTINGS)
def test_settings_no_run_can_use(setting, checkpoint_path, tiny_corpus, tmp_path, capsys, monkeypatch):
    script, overrides, named = UNUSABLE_SETTINGS[setting]
    if setting == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cfg, needs = every_script(checkpoint_path)[script]
    line = fail(script, "--cfg", cfg, *needs, *small(tiny_corpus, tmp_path / "out", *TINY_CELL), *overrides,
                capsys=capsys, monkeypatch=monkeypatch)
    assert all(word in line for word in named), line
    assert files_under(tmp_path / "out") == []


def run_copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def test_resuming_with_another_text_arch_is_refused_and_leaves_the_run_as_it_was(
    uninterrupted, tiny_corpus, tmp_path, capsys, monkeypatch
):
    run = run_copy(uninterrupted, tmp_path)
    # The log says which checkpoint was read before the genotype in it was compared; nothing else changes.
    before = {path: path.read_bytes() for path in files_under(run) if path.name != "train.log"}
    other = GENOTYPE.replace("max_pool_3x3", "avg_pool_3x3")
    line = fail("train_identification.py", "--cfg", IDEN_CFG, "--load_path", str(run), "--text_arch", other,
                *small(tiny_corpus, tmp_path / "out", *TINY_CELL, *RUN_LENGTH), capsys=capsys, monkeypatch=monkeypatch)
    assert line == "error: --text_arch differs from the genotype of the checkpoint being resumed"
    assert {path: path.read_bytes() for path in files_under(run) if path.name != "train.log"} == before


def test_a_truncated_checkpoint_is_named_and_a_resume_falls_back_to_the_previous_one(
    uninterrupted, tiny_corpus, tmp_path, capsys, monkeypatch
):
    checkpoint = uninterrupted / "Model" / "checkpoint_last.pth"
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    line = fail("evaluate_verification.py", "--cfg", VERI_CFG, "--load_path", str(truncated),
                *small(tiny_corpus, tmp_path / "out", *TINY_CELL), capsys=capsys, monkeypatch=monkeypatch)
    assert line.startswith(f"error: cannot read checkpoint {truncated}: truncated or corrupt file (")
    assert files_under(tmp_path / "out") == []

    # The run's last checkpoint cut in half; its end-of-epoch checkpoint of the last epoch holds the same state.
    run = run_copy(uninterrupted, tmp_path)
    last = run / "Model" / "checkpoint_last.pth"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    resume(tiny_corpus, tmp_path, run)
    log = (run / "Log" / "train.log").read_text()
    assert f"warning: cannot read checkpoint {last}: truncated or corrupt file (" in log
    assert "; trying the previous checkpoint" in log
    assert f"resuming from {run / 'Model' / f'checkpoint_{EPOCHS - 1}.pth'} (epoch {EPOCHS}, step 0)" in log
    expected_history, _, expected_scores = outcome(uninterrupted)
    assert logged_metrics(run) == expected_history
    results = json.loads((run / "results.json").read_text())
    assert {key: results[key] for key in expected_scores} == expected_scores


def remove(corpus: Path, *patterns: str) -> None:
    for pattern in patterns:
        for path in corpus.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def append(corpus: Path, relative: str, text: str) -> None:
    with open(corpus / relative, "a", encoding="utf-8") as handle:
        handle.write(text)


SPEAKER = "feature/merged/id10003"
# (script, damage, expected): damage(corpus) breaks a copy of the corpus; {data} stands for its path.
DATA_PROBLEMS = {
    "empty data folder": (
        "train_identification.py", lambda c: remove(c, "*"), "{data}/mean.npy not found; run data_preprocess.py",
    ),
    "features not yet preprocessed": (
        "train_verification.py", lambda c: remove(c, "feature", "mean.npy", "std.npy"),
        "{data}/mean.npy not found; run data_preprocess.py {data} first",
    ),
    "feature folder missing, mean.npy present": (
        "search.py", lambda c: remove(c, "feature"), "no preprocessed features in {data}/feature/merged",
    ),
    "missing mean.npy": ("train_baseline_identification.py", lambda c: remove(c, "mean.npy"), "{data}/mean.npy"),
    "missing _sources_train.txt": (
        "train_identification.py", lambda c: remove(c, f"{SPEAKER}/_sources_train.txt"),
        f"{{data}}/{SPEAKER}/_sources_train.txt not found; run data_preprocess.py",
    ),
    "malformed _sources_val.txt": (
        "search.py", lambda c: append(c, f"{SPEAKER}/_sources_val.txt", "not a listing line\n"),
        f"{{data}}/{SPEAKER}/_sources_val.txt:2: malformed line",
    ),
    "malformed _sources_test.txt": (
        "evaluate_identification.py", lambda c: append(c, f"{SPEAKER}/_sources_test.txt", "x.wav,y\n"),
        f"{{data}}/{SPEAKER}/_sources_test.txt:3: malformed line",
    ),
    "missing trial list": (
        "train_verification.py", lambda c: remove(c, "veri_test.txt"), "{data}/veri_test.txt not found",
    ),
    "malformed trial list": (
        "evaluate_verification.py", lambda c: append(c, "veri_test.txt", "1 id10009/only_one.wav\n"),
        "{data}/veri_test.txt:91: malformed line",
    ),
    "no trial left": (
        "train_baseline_verification.py", lambda c: remove(c, "feature/test/*/*.npy"),
        "{data}/veri_test.txt: none of its 90 trials has both feature files in {data}/feature/test",
    ),
    "training batch larger than the data": (
        "train_identification.py", lambda c: None, "30 training items are fewer than one global batch (64 x 1",
    ),
}


@pytest.mark.parametrize("problem", DATA_PROBLEMS)
def test_bad_data(problem, checkpoint_path, tiny_corpus, tmp_path, capsys, monkeypatch):
    script, damage, expected = DATA_PROBLEMS[problem]
    corpus = corpus_copy(tiny_corpus, tmp_path)
    damage(corpus)
    cfg, needs = every_script(checkpoint_path)[script]
    extra = ["TRAIN.BATCH_SIZE", "64"] if "batch" in problem else []
    line = fail(script, "--cfg", cfg, *needs, *small(corpus, tmp_path / "out", *TINY_CELL, *extra),
                capsys=capsys, monkeypatch=monkeypatch)
    assert expected.replace("{data}", str(corpus)) in line
    assert files_under(tmp_path / "out") == []


def test_trials_naming_missing_features_are_counted_and_the_rest_scored(
    checkpoint_path, tiny_corpus, tmp_path, capsys, monkeypatch
):
    corpus = corpus_copy(tiny_corpus, tmp_path)
    remove(corpus, "feature/test/id10009/*.npy")
    module = importlib.import_module("evaluate_verification")
    monkeypatch.setattr(sys, "argv", ["evaluate_verification.py", "--cfg", VERI_CFG, "--load_path",
                                      str(checkpoint_path), *small(corpus, tmp_path, *TINY_CELL)])
    with pytest.raises(SystemExit) as exit_info:
        run_main(module.main, KNOWN_ERRORS)
    assert exit_info.value.code == 0
    trials = (corpus / "veri_test.txt").read_text().splitlines()
    skipped = sum("id10009/" in line for line in trials)
    evaluation = only_run(tmp_path / "logs_eval")
    results = json.loads((evaluation / "results.json").read_text())
    assert 0 < skipped < len(trials)
    assert (results["skipped_trials"], results["trials"]) == (skipped, len(trials) - skipped)
    assert f"({skipped} skipped: missing features)" in (evaluation / "Log" / "evaluate.log").read_text()


def test_genotype_problems(tmp_path, tiny_corpus, capsys, monkeypatch):
    base = small(tiny_corpus, tmp_path / "out", *TINY_CELL)
    line = fail("train_identification.py", "--cfg", IDEN_CFG, *base, capsys=capsys, monkeypatch=monkeypatch)
    assert "needs a genotype: pass --text_arch" in line
    line = fail("train_verification.py", "--cfg", VERI_CFG, "--text_arch", GENOTYPE[:40], *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert "not a genotype: invalid syntax" in line
    line = fail("train_verification.py", "--cfg", VERI_CFG, "--text_arch", GENOTYPE.replace("range(2, 6)", "[9]"),
                *base, capsys=capsys, monkeypatch=monkeypatch)
    assert "normal_concat may only hold nodes 2..5, got 9" in line
    line = fail("train_identification.py", "--cfg", IDEN_CFG, "--text_arch", str(tmp_path / "genotype.txt"), *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert "is neither an existing file nor genotype text" in line
    assert files_under(tmp_path / "out") == []


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


CODE_REFUSED = "it carries code or objects that are not allowed (posix.system)"
WRITERS = {
    "torch.save": (lambda state, path: torch.save(state, path), CODE_REFUSED),
    "torch.save, legacy format": (
        lambda state, path: torch.save(state, path, _use_new_zipfile_serialization=False), CODE_REFUSED,
    ),
    "pickle protocol 4": (
        lambda state, path: path.write_bytes(pickle.dumps(state, protocol=4)), "not a checkpoint written by torch.save",
    ),
}


@pytest.mark.parametrize("written_by", WRITERS)
def test_a_checkpoint_carrying_code_is_refused_everywhere_a_checkpoint_is_read(
    written_by, checkpoint_path, tiny_corpus, tmp_path, capsys, monkeypatch
):
    write, reason = WRITERS[written_by]
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    write({**load_checkpoint(checkpoint_path), "payload": RunsACommand(marker)}, evil)
    base = small(tiny_corpus, tmp_path / "out", *TINY_CELL)
    line = fail("evaluate_identification.py", "--cfg", IDEN_CFG, "--load_path", str(evil), *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert line.startswith(f"error: refused to load {evil}: {reason}")
    line = fail("train_verification.py", "--cfg", VERI_CFG, "--text_arch", str(evil), *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert line.startswith(f"error: refused to load {evil}: {reason}")
    run = RunDirectory(tmp_path / "run")
    run.model_dir.mkdir(parents=True)
    shutil.copy(evil, run.last_checkpoint)
    line = fail("train_identification.py", "--cfg", IDEN_CFG, "--load_path", str(run.root), *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert line.startswith(f"error: no usable checkpoint in {run.model_dir} (refused to load {run.last_checkpoint}: "
                           f"{reason}")
    assert not marker.exists()
    assert files_under(tmp_path / "out") == []


def with_classes(checkpoint: dict, count: int) -> dict:
    """The checkpoint of the same network trained on `count` speakers."""
    state = dict(checkpoint["state_dict"])
    state["classifier.weight"] = state["classifier.weight"][:count]
    state["classifier.bias"] = state["classifier.bias"][:count]
    return {**checkpoint, "state_dict": state}


def test_checkpoints_that_do_not_fit_name_the_first_mismatched_key(
    checkpoint_path, tiny_corpus, tmp_path, capsys, monkeypatch
):
    base = small(tiny_corpus, tmp_path / "out", *TINY_CELL)
    line = fail("evaluate_identification.py", "--cfg", RESNET_IDEN_CFG, "--load_path", str(checkpoint_path), *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert line == "error: checkpoint does not fit the model: conv1.weight is missing from the checkpoint"
    seven = tmp_path / "seven_speakers.pth"
    save_checkpoint(with_classes(load_checkpoint(checkpoint_path), 7), seven)
    line = fail("evaluate_identification.py", "--cfg", IDEN_CFG, "--load_path", str(seven), *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert line == ("error: checkpoint does not fit the model: classifier.weight has shape [7, 64] in the checkpoint, "
                    "[10, 64] in the model")
    assert files_under(tmp_path / "out") == []

    # Resuming with another architecture: the run folder is left as it was.
    run = RunDirectory(tmp_path / "run")
    run.model_dir.mkdir(parents=True)
    shutil.copy(checkpoint_path, run.last_checkpoint)
    before = run.last_checkpoint.read_bytes()
    line = fail("train_identification.py", "--cfg", IDEN_CFG, "--load_path", str(run.root), *base,
                "MODEL.INIT_CHANNELS", "8", capsys=capsys, monkeypatch=monkeypatch)
    assert line.startswith("error: checkpoint does not fit the model: stem0.0.weight has shape [2, 1, 3, 3]")
    assert run.last_checkpoint.read_bytes() == before
    assert [path.name for path in files_under(run.model_dir)] == ["checkpoint_last.pth"]


@pytest.mark.parametrize("command,expected", [
    (["train_identification.py"], "error: the following arguments are required: --cfg "
                                  "(see train_identification.py --help)"),
    (["search.py", "--cfg"], "error: argument --cfg: expected one argument (see search.py --help)"),
    (["data_preprocess.py", "/data", "--workers", "0"], "error: argument --workers: expected a positive number of "
                                                        "processes, got '0' (see data_preprocess.py --help)"),
    (["-m", "models.visualize"], "error: the following arguments are required: genotype, out_prefix "
                                 "(see python -m models.visualize --help)"),
])
def test_bad_command_lines_give_one_line(command, expected):
    process = run_script(*command, check=False)
    assert process.returncode == 2
    assert process.stderr.splitlines() == [expected]


def test_load_paths_that_do_not_exist(tmp_path, tiny_corpus, capsys, monkeypatch):
    base = small(tiny_corpus, tmp_path / "out", *TINY_CELL)
    missing = tmp_path / "no_run"
    line = fail("search.py", "--cfg", SEARCH_CFG, "--load_path", str(missing), *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert line == f"error: --load_path {missing} does not exist or is not a folder"
    checkpoint = missing / "checkpoint_best.pth"
    line = fail("evaluate_verification.py", "--cfg", VERI_CFG, "--load_path", str(checkpoint), *base,
                capsys=capsys, monkeypatch=monkeypatch)
    assert line == f"error: --load_path {checkpoint}: no checkpoint at {checkpoint}"
    assert files_under(tmp_path / "out") == []


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    checkpoint_path, tiny_corpus, tmp_path, capsys, monkeypatch
):
    """A huge learning rate makes the loss non-finite within two steps; here in an epoch added to a finished run."""
    run = RunDirectory(tmp_path / "run")
    run.model_dir.mkdir(parents=True)
    shutil.copy(checkpoint_path, run.last_checkpoint)
    good = load_checkpoint(run.last_checkpoint)
    line = fail("train_identification.py", "--cfg", IDEN_CFG, "--load_path", str(run.root),
                *small(tiny_corpus, tmp_path, *TINY_CELL, "TRAIN.END_EPOCH", str(EPOCHS + 1), "TRAIN.LR", "1e30"),
                capsys=capsys, monkeypatch=monkeypatch)
    assert re.fullmatch(rf"error: loss became (nan|inf) at epoch {EPOCHS}, step [01] \(global step \d+\); "
                        rf"the last good checkpoint is {re.escape(str(run.last_checkpoint))}", line), line
    kept = load_checkpoint(run.last_checkpoint)
    assert kept["epoch"] == good["epoch"] == EPOCHS
    assert all(torch.equal(kept["state_dict"][key], good["state_dict"][key]) for key in good["state_dict"])
