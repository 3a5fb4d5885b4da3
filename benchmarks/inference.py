"""Using a trained model: embeddings per second through the command, the Python API, TorchScript and ONNX Runtime,
the command's start-up time, and score_trials.py against evaluate_verification.py on one trial list.

    python benchmarks/inference.py [--workdir DIR] [--output docs/benchmarks.md] [--repetitions 3]

Generates a small corpus (python -m data_objects.synthetic) and its features (data_preprocess.py), a folder of
100 files of 3-10 s cut from its utterances (lengths drawn uniformly, seeded), and a checkpoint as training
writes it of the demo's verification cell (exps/demo/scratch_veri.yaml, the AutoSpeech genotype; weights as
initialised, their values do not change the cost; batch-norm statistics set on the corpus's windows so that
embeddings differ). Each way of embedding the folder is timed as a user runs it: the command in a subprocess
(start-up included), the API, the exported TorchScript and ONNX files in this process, one file per call, with
one thread and with all cores. Ratio = the API's time / the row's (the command's row: the API's, at the
command's thread count), start-up's: `python -c "import torch"` / the command's start-up. The table replaces the
inference section of --output. Took 6.2 minutes on a 2-core machine busy with other work (load 4-5).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import REPO, experiment_config, interleaved_medians, machine_line, quiet  # noqa: E402
from data_objects.datasets import SpectrogramDataset  # noqa: E402
from functions.experiment import inference_recipe  # noqa: E402
from functions.export import run_torchscript  # noqa: E402
from functions.speaker_model import SpeakerModel  # noqa: E402
from models import AUTOSPEECH, build_model  # noqa: E402
from utils.checkpoint import save_checkpoint  # noqa: E402
from utils.cli import OneLineErrorParser, run_main  # noqa: E402
from utils.files import OutputError, write_section  # noqa: E402
from utils.script_runs import run_logged  # noqa: E402

SECTION_START = "<!-- inference: written by benchmarks/inference.py -->"
SECTION_END = "<!-- end of inference -->"
CONFIG = "exps/demo/scratch_veri.yaml"
FILES, SHORTEST, LONGEST = 100, 3.0, 10.0
PYTHON = sys.executable


def _run(command: list[str], threads: int, log) -> float:
    """Wall seconds of a command run as a user runs it, with `threads` torch threads (0: torch's default)."""
    run = run_logged(command, log, threads, cwd=REPO)
    if run.returncode != 0:
        raise OutputError(f"{' '.join(command[:2])} failed with status {run.returncode}; see {log.name}")
    return run.wall_seconds


def prepare(workdir: Path, log) -> tuple[Path, Path, list[Path]]:
    """The corpus with its features, the checkpoint, and the folder of FILES files of 3-10 s."""
    corpus, folder, checkpoint = workdir / "VoxCeleb1", workdir / "files", workdir / "checkpoint_last.pth"
    if not (corpus / "veri_test.txt").exists():
        _run([PYTHON, "-m", "data_objects.synthetic", str(corpus), "--seed", "1", "--dev_speakers", "8",
              "--test_speakers", "4", "--videos", "2", "--utterances", "4"], 1, log)
        _run([PYTHON, "data_preprocess.py", str(corpus)], 1, log)
    if not checkpoint.exists():
        cfg = experiment_config(CONFIG)
        cfg.defrost()
        cfg.DATASET.DATA_DIR, cfg.DEVICE = str(corpus), "cpu"
        train_set = SpectrogramDataset(corpus, "dev", None, cfg.DATASET.PARTIAL_N_FRAMES)
        torch.manual_seed(0)
        network = build_model(cfg, train_set.num_classes, AUTOSPEECH)
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # running statistics: the plain average of the pass below
        with torch.no_grad():
            network.train()(torch.stack([train_set[i][0] for i in range(0, len(train_set), 4)]))
        save_checkpoint({"epoch": 1, "state_dict": network.state_dict(), "config": cfg.dump(),
                         "history": [{"epoch": 0, "threshold_at_eer": 0.5}],
                         **inference_recipe(AUTOSPEECH, train_set)}, checkpoint)
    files = sorted(folder.glob("*.wav"))
    if len(files) != FILES:
        folder.mkdir(exist_ok=True)
        speech = np.concatenate([soundfile.read(path, dtype="float32")[0]
                                 for path in sorted((corpus / "test" / "wav").rglob("*.wav"))])
        generator = np.random.default_rng(0)
        files = []
        for index, seconds in enumerate(generator.uniform(SHORTEST, LONGEST, FILES)):
            length = int(seconds * 16_000)
            start = int(generator.integers(0, speech.size - length))
            files.append(folder / f"{index:03d}.wav")
            soundfile.write(files[-1], speech[start:start + length], 16_000)
    return corpus, checkpoint, files


def exported(checkpoint: Path, workdir: Path, log) -> dict[str, Path]:
    paths = {"torchscript": workdir / "model.pt", "onnx": workdir / "model.onnx"}
    for fmt, path in paths.items():
        if not path.exists():
            _run([PYTHON, "export.py", "--load_path", str(checkpoint), "--format", fmt, "--output", str(path)], 0, log)
    return paths


def throughput_rows(model: SpeakerModel, paths: dict[str, Path], files: list[Path], command: dict[int, float],
                    threads: int, repetitions: int) -> list[tuple[str, float, float]]:
    """(way, seconds, the API's seconds) of embedding every file, in this process, at `threads` threads."""
    import onnxruntime

    torch.set_num_threads(threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(paths["onnx"]), options, providers=["CPUExecutionProvider"])
    script = run_torchscript(paths["torchscript"])

    def per_file(run):
        # Each file read as a user's loop reads it; reading is a small part of the cost.
        return lambda: [run(soundfile.read(path, dtype="float32")[0][None]) for path in files]

    with quiet():
        medians = interleaved_medians({
            "api": lambda: model.embed_batch(files),
            "torchscript": per_file(script),
            "onnx": per_file(lambda waveform: session.run(["embedding"], {"waveform": waveform})[0]),
        }, repetitions)
    api = medians["api"]
    return [("extract_embeddings.py (subprocess, start-up included)", command[threads], api),
            ("Python API: SpeakerModel.embed_batch", api, api),
            ("TorchScript file, one file per call", medians["torchscript"], api),
            ("ONNX Runtime, one file per call", medians["onnx"], api)]


def scoring_row(corpus: Path, checkpoint: Path, workdir: Path, log) -> tuple[dict, dict, float, float]:
    """score_trials.py and evaluate_verification.py on the corpus's trial list: their results and wall times."""
    evaluation = workdir / "evaluation"
    evaluated_seconds = _run([PYTHON, "evaluate_verification.py", "--cfg", CONFIG, "--load_path", str(checkpoint),
                              "DATASET.DATA_DIR", str(corpus), "OUTPUT_DIR", str(evaluation)], 0, log)
    run = max((evaluation / "logs_eval").iterdir(), key=lambda path: path.stat().st_mtime)
    scored_seconds = _run([PYTHON, "score_trials.py", "--load_path", str(checkpoint), "--trials",
                           str(corpus / "veri_test.txt"), "--audio_dir", str(corpus / "test" / "wav"), "--output",
                           str(workdir / "scored")], 0, log)
    evaluated = json.loads((run / "results.json").read_text())
    scored = json.loads((workdir / "scored" / "results.json").read_text())
    return evaluated, scored, evaluated_seconds, scored_seconds


def table(rows: list[tuple[str, int, float, float]], startup: tuple[float, float], scoring: tuple, minutes: float,
          total_seconds: float) -> str:
    evaluated, scored, evaluated_seconds, scored_seconds = scoring
    # EER is read off the same sorted scores: equal or not. minDCF sums rates in floating point.
    same = evaluated["eer"] == scored["eer"] and evaluated["trials"] == scored["trials"] and all(
        abs(evaluated[key] - scored[key]) < 1e-9 for key in ("min_dcf_0.01", "min_dcf_0.05"))
    lines = [
        SECTION_START,
        "## Using a trained model",
        "",
        f"`python benchmarks/inference.py` regenerates this section ({minutes:.1f} min, "
        f"{time.strftime('%Y-%m-%d')}). " + machine_line(),
        "",
        f"{FILES} files of {SHORTEST:.0f}-{LONGEST:.0f} s ({total_seconds / 60:.1f} min of audio in all, 16 kHz wav) "
        f"embedded by the demo's verification cell ({CONFIG}: C 16, 4 layers, 100-frame windows). Ratio = the "
        "Python API's time / the row's, at the row's threads (above 1: faster than the API); start-up: "
        "`python -c \"import torch\"` / the command's start-up.",
        "",
        "| Way | Threads | Files per second | Seconds per minute of audio | Ratio |",
        "|---|---|---|---|---|",
    ]
    for way, threads, seconds, api in rows:
        lines.append(f"| {way} | {threads} | {FILES / seconds:.1f} | {60 * seconds / total_seconds:.2f} | "
                     f"{api / seconds:.2f}x |")
    command_startup, torch_import = startup
    lines += [
        "",
        f"Start-up of `extract_embeddings.py` (one file's command less one file's share of the API's time): "
        f"{command_startup:.2f} s; `python -c \"import torch\"`: {torch_import:.2f} s (ratio "
        f"{torch_import / command_startup:.2f}x).",
        "",
        f"`score_trials.py` on the corpus's trial list ({scored['trials']} trials) against "
        f"`evaluate_verification.py` on the preprocessed features: EER {scored['eer']:.4f} % / "
        f"{evaluated['eer']:.4f} %, minDCF(0.01) {scored['min_dcf_0.01']:.4f} / {evaluated['min_dcf_0.01']:.4f}, "
        f"minDCF(0.05) {scored['min_dcf_0.05']:.4f} / {evaluated['min_dcf_0.05']:.4f}: "
        f"{'the same, exactly' if same else 'DIFFERENT'}; {scored_seconds:.1f} s / {evaluated_seconds:.1f} s wall, "
        "start-up included.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="folder for the corpus, the files and the model (default: temporary)")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--repetitions", type=int, default=3, help="timed rounds of each in-process way")
    args = parser.parse_args()
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        with (workdir / "inference.log").open("a", encoding="utf-8") as log:
            corpus, checkpoint, files = prepare(workdir, log)
            paths = exported(checkpoint, workdir, log)
            total_seconds = sum(soundfile.info(path).duration for path in files)
            embed = [PYTHON, "extract_embeddings.py", "--load_path", str(checkpoint)]
            command = {threads: _run([*embed, "--output", str(workdir / f"out_{threads}"), str(files[0].parent)],
                                     threads, log) for threads in sorted({1, cores})}
            one_file = _run([*embed, "--output", str(workdir / "out_one"), str(files[0])], 1, log)
            torch_import = _run([PYTHON, "-c", "import torch"], 1, log)
            model = SpeakerModel.from_checkpoint(checkpoint, "cpu")
            rows = []
            for threads in sorted({1, cores}):
                rows += [(way, threads, seconds, api) for way, seconds, api in
                         throughput_rows(model, paths, files, command, threads, args.repetitions)]
                print(f"{threads} thread(s) done", file=sys.stderr, flush=True)
            api_one_thread = next(api for _, threads, _, api in rows if threads == 1)
            startup = (one_file - api_one_thread / FILES, torch_import)
            scoring = scoring_row(corpus, checkpoint, workdir, log)
    section = table(rows, startup, scoring, (time.perf_counter() - started) / 60, total_seconds)
    print(section)
    write_section(Path(args.output), section, SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_main(main, (OutputError,))
