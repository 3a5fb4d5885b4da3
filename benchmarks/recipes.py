"""The published recipe against the modern one on the built-in corpus, with an ablation of the modern parts.

    python benchmarks/recipes.py [--quick] [--workdir DIR] [--output docs/benchmarks.md]

Generates the demo's corpus (python -m data_objects.synthetic), its features (data_preprocess.py, for the
published recipe) and a noise / room-response folder (python -m data_objects.synthetic_augmentation), then trains
the searched cell at the demo's size with each recipe, as a user would: train_verification.py in a subprocess,
the crops, batches and epochs of exps/demo/scratch_veri.yaml for every row, and ResNet-34 with the
modern recipe of exps/demo/modern_resnet34_veri.yaml. Every run scores the test trials raw and with AS-norm
(scoring only: AS-norm does not change training). The table replaces the recipes section of --output.
Rows already measured in --workdir are read back, so an interrupted benchmark continues where it stopped.
--quick runs 2 epochs of 3 steps, to check that the benchmark works; its numbers mean little. --threads sets
the runs' torch threads (default 1, as benchmarks/run_all.py: on a shared 2-core machine two OpenMP threads wait
for each other at every operator whenever another process holds a core; 0 keeps torch's default).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine_line  # noqa: E402
from models.genotypes import AUTOSPEECH, genotype_to_text  # noqa: E402
from utils.cli import OneLineErrorParser, run_main  # noqa: E402
from utils.files import OutputError, write_text_atomically  # noqa: E402

SECTION_START = "<!-- recipes: written by benchmarks/recipes.py -->"
SECTION_END = "<!-- end of recipes -->"
GOAL = 0.6
# Of the corpus's 24 training speakers; the demo configs take the same.
COHORT = ["EVAL.SCORE_NORM", "asnorm", "EVAL.COHORT_SIZE", "10"]
# Validation at the first and the last epoch only: with AS-norm each one also embeds every training utterance.
VALIDATION = ["VAL_FREQ", "1000"]
FBANK = ["DATASET.FEATURES", "fbank", "DATASET.N_MELS", "80"]
NO_AUGMENTATION = ["AUGMENT.NOISE_PROB", "0.0", "AUGMENT.RIR_PROB", "0.0", "AUGMENT.SPEED_PERTURB", "False",
                   "AUGMENT.NOISE_DIR", "", "AUGMENT.RIR_DIR", ""]


@dataclass(frozen=True)
class Recipe:
    label: str
    script: str
    config: str
    overrides: tuple[str, ...]
    augmented: bool = False


# Each cell row adds one part to the row above; AS-norm, the last part, is the columns on the right of every row.
RECIPES = (
    Recipe("published: spectrogram, softmax + label smoothing, average pooling", "train_verification.py",
           "exps/demo/scratch_veri.yaml", ()),
    Recipe("fbank alone", "train_verification.py", "exps/demo/scratch_veri.yaml", tuple(FBANK)),
    Recipe("+ additive angular margin (0.2, s 32)", "train_verification.py", "exps/demo/modern_scratch_veri.yaml",
           tuple(NO_AUGMENTATION)),
    Recipe("+ noise, reverberation (p 0.3 each) = modern", "train_verification.py",
           "exps/demo/modern_scratch_veri.yaml", (), augmented=True),
    Recipe("ResNet-34, modern", "train_baseline_verification.py", "exps/demo/modern_resnet34_veri.yaml", (),
           augmented=True),
)
QUICK = ["TRAIN.END_EPOCH", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "3"]


def _run(command: list[str], log, threads: int = 0) -> float:
    """Run `command` from the repository root; `threads` > 0 sets the intra-op threads of its torch."""
    started = time.perf_counter()
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads > 0 else {})}
    process = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=environment)
    if process.returncode != 0:
        raise OutputError(f"{' '.join(command[:2])} failed with status {process.returncode}; see {log.name}")
    return time.perf_counter() - started


def prepare(workdir: Path, log) -> tuple[Path, Path]:
    corpus, augmentation = workdir / "VoxCeleb1", workdir / "augmentation"
    python = sys.executable
    if not (corpus / "mean.npy").exists():
        _run([python, "-m", "data_objects.synthetic", str(corpus)], log)
        _run([python, "data_preprocess.py", str(corpus)], log)
    if not (augmentation / "rirs").exists():
        _run([python, "-m", "data_objects.synthetic_augmentation", str(augmentation)], log)
    return corpus, augmentation


def train(recipe: Recipe, corpus: Path, augmentation: Path, out: Path, quick: bool, threads: int, log) -> dict:
    command = [sys.executable, recipe.script, "--cfg", recipe.config]
    if recipe.script == "train_verification.py":
        command += ["--text_arch", genotype_to_text(AUTOSPEECH)]
    command += ["DATASET.DATA_DIR", str(corpus), "OUTPUT_DIR", str(out), *COHORT, *VALIDATION, *recipe.overrides]
    if recipe.augmented:
        command += ["AUGMENT.NOISE_DIR", str(augmentation / "musan"), "AUGMENT.RIR_DIR", str(augmentation / "rirs")]
    command += QUICK if quick else []
    seconds = _run(command, log, threads)
    run = max((out / kind for kind in ("logs_scratch", "logs") if (out / kind).is_dir()),
              key=lambda path: path.stat().st_mtime)
    results = json.loads(next(run.glob("*/results.json")).read_text())
    return {**results["last_epoch"], "wall_seconds": seconds, "parameters": results["parameters"]}


def table(rows: list[tuple[Recipe, dict]], quick: bool, minutes: float, threads: int) -> str:
    published = rows[0][1]
    lines = [
        SECTION_START,
        f"## Recipes: {'quick run (numbers mean little)' if quick else 'full run'}, {date.today()}, "
        f"{minutes:.1f} min",
        "",
        f"{machine_line('cpu').split(', torch intra-op')[0]}; training runs with "
        f"{f'OMP_NUM_THREADS={threads}' if threads > 0 else 'torch default threads'}. Measured while other jobs "
        "shared the 2 cores: wall times are those of a busy machine and vary from run to run; EER and minDCF do "
        "not depend on the machine's load (one seed, 0).",
        "",
        "Built-in corpus at the demo's size (24 dev speakers for training, 8 test speakers, 1,056 trials of "
        "veri_test.txt), the searched cell (AUTOSPEECH genotype) at the size of exps/demo/scratch_veri.yaml "
        "(C 16, 4 layers, 1-s crops, batch 16, 20 epochs) for every cell row, each of the first four adding one "
        "part to the one above and AS-norm, the last part, in the columns on the right; the demo's modern recipe "
        "keeps the published head (average pooling, no embedding layer). ResNet-34 with "
        "exps/demo/modern_resnet34_veri.yaml (1-s crops, batch 16, 10 epochs, lr 0.001). Last "
        "epoch's scores; AS-norm over the 24 training speakers' mean embeddings, top 10.",
        "",
        "| Recipe | EER (%) | minDCF(0.01) | EER AS-norm (%) | minDCF(0.01) AS-norm | EER / published's (raw; AS-norm) | "
        "Parameters | Wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for recipe, metrics in rows:
        lines.append(
            f"| {recipe.label} | {metrics['eer']:.2f} | {metrics['min_dcf_0.01']:.3f} | "
            f"{metrics['eer_asnorm']:.2f} | {metrics['min_dcf_0.01_asnorm']:.3f} | "
            f"{metrics['eer'] / published['eer']:.2f}x; {metrics['eer_asnorm'] / published['eer']:.2f}x | "
            f"{metrics['parameters']:,} | "
            f"{metrics['wall_seconds']:.0f} |"
        )
    modern = next(metrics for recipe, metrics in rows if recipe.label.endswith("= modern"))
    ratio = modern["eer_asnorm"] / published["eer"]
    lines += [
        "",
        f"Goal: the modern recipe's EER (with AS-norm) at most {GOAL}x the published recipe's (raw, as published): "
        f"{modern['eer_asnorm']:.2f} % / {published['eer']:.2f} % = {ratio:.2f}x, "
        f"{'met' if ratio <= GOAL else 'not met'}. Raw against raw: "
        f"{modern['eer'] / published['eer']:.2f}x.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(output: Path, section: str) -> None:
    text = output.read_text(encoding="utf-8") if output.exists() else ""
    if SECTION_START in text and SECTION_END in text:
        before, rest = text.split(SECTION_START, 1)
        text = before + section + rest.split(SECTION_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    write_text_atomically(output, text)


def main() -> int:
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs of 3 steps: checks that the benchmark works")
    parser.add_argument("--workdir", help="folder for the corpus and the runs (default: a temporary folder)")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "docs/benchmarks.md"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of the training runs (0: torch's default, one per core)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        with (workdir / "recipes.log").open("a", encoding="utf-8") as log:
            corpus, augmentation = prepare(workdir, log)
            rows = []
            for index, recipe in enumerate(RECIPES):
                # A row already measured in this --workdir is read back: an interrupted benchmark continues.
                done = workdir / f"run_{index}.json"
                if done.exists():
                    metrics = json.loads(done.read_text())
                else:
                    metrics = train(recipe, corpus, augmentation, workdir / f"run_{index}", args.quick,
                                    args.threads, log)
                    write_text_atomically(done, json.dumps(metrics))
                rows.append((recipe, metrics))
                print(f"{recipe.label}: EER {metrics['eer']:.2f} %, AS-norm {metrics['eer_asnorm']:.2f} %, "
                      f"{metrics['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    section = table(rows, args.quick, (time.perf_counter() - started) / 60, args.threads)
    print(section)
    write_section(Path(args.output), section)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_main(main, (OutputError,))
