"""The whole method on the built-in demo corpus, in minutes on a CPU: `make demo`.

Generates the corpus, preprocesses it, searches a cell, trains that cell from scratch for identification and
for verification (with the published recipe, and for verification with the demo's modern recipe too), trains
ResNet-18 baselines, evaluates every network with the evaluation scripts and prints a table (also written to
demo_results.md). Then it uses the verification cell as a user would: embeds a few test files, scores a
same-speaker and a different-speaker pair, and exports it to ONNX, checked against eager. Each step is the
command a user would type, printed before it runs (the last ones with what they printed).

The baselines do not depend on the searched cell, so they run in a second lane beside the search and the cell's
trainings, each lane with half the cores: a search step's small operators keep two threads busy only part of the
time, two processes keep both cores busy. Once the search is done, the cell's modern-recipe training runs in a
third lane beside the cell's other trainings, so that the three share the cores until the baselines end.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, TypeVar

from benchmarks.reference_system import ReferenceResult, evaluate_reference
from data_objects import available_cores
from utils.cli import OneLineErrorParser
from utils.files import write_section, write_text_atomically
from utils.script_runs import newest_run, run_logged

PYTHON = sys.executable
T = TypeVar("T")
CELL_TRAININGS = {
    "AutoSpeech cell (identification)": ("train_identification.py", "exps/demo/scratch_iden.yaml"),
    "AutoSpeech cell (verification)": ("train_verification.py", "exps/demo/scratch_veri.yaml"),
}
# The demo's modern recipe (fbank, AAM, noise and reverberation, AS-norm) with the searched cell.
MODERN_TRAINING = {
    "AutoSpeech cell, modern recipe (verification)": ("train_verification.py", "exps/demo/modern_scratch_veri.yaml"),
}
BASELINE_TRAININGS = {
    "ResNet-18 (identification)": ("train_baseline_identification.py", "exps/demo/resnet18_iden.yaml"),
    "ResNet-18 (verification)": ("train_baseline_verification.py", "exps/demo/resnet18_veri.yaml"),
}


RECORD_START = "<!-- demo: written by demo.py --record -->"
RECORD_END = "<!-- end of demo -->"
# Every lane's steps, so that a failure in one lane stops the other; terminating a finished one does nothing.
RUNNING_STEPS: set[subprocess.Popen] = set()


class StepFailed(Exception):
    pass


class Lane:
    """Steps run one after another, each step's output in this lane's log and its command and timing also on the
    console and in the demo's log; `threads` torch threads per step (0: torch's default)."""

    _print_lock = threading.Lock()

    def __init__(self, name: str, log: Path, summary_log: Path, threads: int = 0) -> None:
        self.name, self.log, self.summary_log, self.threads = name, log, summary_log, threads

    def say(self, line: str) -> None:
        with self._print_lock:
            print(line, flush=True)
            with self.summary_log.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def run(self, command: list[str], show_output: bool = False) -> float:
        """Run a step; its wall and CPU time are printed: on a busy machine the CPU time says more about the step
        than the wall time. With `show_output`, what the step printed (progress bars aside) is printed too."""
        prefix = f"[{self.name}] "
        self.say(f"\n{prefix}$ {' '.join(shlex.quote(part) for part in command)}")
        with self.log.open("a", encoding="utf-8") as handle:
            step_starts = handle.tell()
            step = run_logged(command, handle, self.threads, started=RUNNING_STEPS.add)
        if step.returncode != 0:
            tail = "\n".join(self.log.read_text(encoding="utf-8").splitlines()[-15:])
            raise StepFailed(f"{tail}\ndemo: step failed with exit code {step.returncode}; full output in "
                             f"{self.log}")
        elapsed = step.wall_seconds
        if show_output:
            with self.log.open(encoding="utf-8") as handle:
                handle.seek(step_starts)
                printed = handle.read().replace("\r", "\n").splitlines()[1:]  # after the `$ command` line
            for line in printed:
                if line.strip() and "it/s]" not in line and "s/it]" not in line:
                    self.say(f"  {prefix}{line.strip()}")
        self.say(f"  {prefix}done in {elapsed:.0f} s (CPU {step.cpu_seconds:.0f} s)")
        return elapsed


def run_side_by_side(*jobs: Callable[[], T]) -> list[T]:
    """Each job in its own thread; their results in order. The first job to fail stops the others' running steps,
    and its failure is raised."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future.exception() for future in futures if future in done and future.exception()]
        if failed:
            for process in list(RUNNING_STEPS):
                process.terminate()
            raise failed[0]
        return [future.result() for future in futures]


def last_run(folder: Path) -> Path:
    run = newest_run(folder)
    if run is None:
        raise StepFailed(f"demo: no run folder in {folder}")
    return run


def train_and_evaluate(lane: Lane, trainings: dict[str, tuple[str, str]], out: Path, data: Path,
                       genotype_file: Path | None = None, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """Each training, then its evaluation with the evaluation script; runs go under `out`; `extra` overrides
    both."""
    overrides = ["DATASET.DATA_DIR", str(data), "OUTPUT_DIR", str(out), *extra]
    arch = ["--text_arch", str(genotype_file)] if genotype_file else []
    results = {}
    for name, (script, cfg) in trainings.items():
        train_seconds = lane.run([PYTHON, script, "--cfg", cfg, *arch, *overrides])
        run_dir = last_run(out / ("logs_scratch" if genotype_file else "logs"))
        identification = "identification" in name
        evaluate = "evaluate_identification.py" if identification else "evaluate_verification.py"
        checkpoint = run_dir / "Model" / ("checkpoint_best.pth" if identification else "checkpoint_last.pth")
        eval_seconds = lane.run([PYTHON, evaluate, "--cfg", cfg, "--load_path", str(checkpoint), *overrides])
        results[name] = json.loads((last_run(out / "logs_eval") / "results.json").read_text())
        results[name]["seconds"] = train_seconds + eval_seconds
    return results


def search_and_train_the_cell(lane: Lane, modern: Lane, out: Path, data: Path,
                              augmentation: Path) -> tuple[dict[str, dict], float, Path]:
    """The search, then the searched cell's trainings and its use in this lane, beside its modern-recipe training
    in the `modern` lane."""
    search_seconds = lane.run([PYTHON, "search.py", "--cfg", "exps/demo/search.yaml", "DATASET.DATA_DIR", str(data),
                               "OUTPUT_DIR", str(out)])
    genotype_file = last_run(out / "logs_search") / "genotype.txt"
    lane.say(f"  [{lane.name}] searched genotype: {genotype_file.read_text().strip()}")

    def train_and_use() -> dict[str, dict]:
        results = train_and_evaluate(lane, CELL_TRAININGS, out, data, genotype_file)
        use_the_model(lane, Path(results["AutoSpeech cell (verification)"]["checkpoint"]), data, out)
        return results

    # Validation at the first and the last epoch only, as the published cell's demo config (and the recipes
    # benchmark) validate: with AS-norm each validation also embeds every training utterance.
    modern_overrides = ("AUGMENT.NOISE_DIR", str(augmentation / "musan"), "AUGMENT.RIR_DIR",
                        str(augmentation / "rirs"), "VAL_FREQ", "20")
    results, modern_results = run_side_by_side(
        train_and_use,
        lambda: train_and_evaluate(modern, MODERN_TRAINING, out / "modern", data, genotype_file, modern_overrides),
    )
    return {**results, **modern_results}, search_seconds, genotype_file


def use_the_model(lane: Lane, checkpoint: Path, data: Path, out: Path) -> None:
    """The verification cell as a user uses it: embeddings of a few test files, the score of a same-speaker and
    of a different-speaker pair, and an ONNX export checked against eager."""
    speakers = sorted(folder for folder in (data / "test" / "wav").iterdir() if folder.is_dir())
    first, second = (sorted(speaker.rglob("*.wav")) for speaker in speakers[:2])
    model = ["--load_path", str(checkpoint)]
    lane.run([PYTHON, "extract_embeddings.py", *model, "--output", str(out / "embeddings"),
              *map(str, (first[0], first[-1], second[0], second[-1]))], show_output=True)
    for what, pair in ((f"one speaker ({speakers[0].name}), two of its videos", (first[0], first[-1])),
                       (f"two speakers ({speakers[0].name}, {speakers[1].name})", (first[0], second[0]))):
        lane.say(f"  [{lane.name}] a pair of {what}:")
        lane.run([PYTHON, "score_trials.py", *model, "--pair", *map(str, pair)], show_output=True)
    lane.run([PYTHON, "export.py", *model, "--format", "onnx", "--output", str(out / "model.onnx")],
             show_output=True)


def main() -> None:
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="demo", help="where the corpus and the runs go (default: demo/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", type=Path, metavar="PAGE",
                        help="also write the results as this page's demo section (docs/demo.md holds the run "
                             "it reports)")
    args = parser.parse_args()
    work = Path(args.work_dir)
    data = work / "VoxCeleb1"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "demo.log"
    started = time.time()
    try:
        prepare = Lane("corpus", log, log)
        if not (data / "veri_test.txt").exists():
            prepare.run([PYTHON, "-m", "data_objects.synthetic", str(data), "--seed", str(args.seed)])
        prepare.run([PYTHON, "data_preprocess.py", str(data), "--skip_existing"])
        augmentation = work / "augmentation"
        if not (augmentation / "rirs").exists():
            prepare.run([PYTHON, "-m", "data_objects.synthetic_augmentation", str(augmentation)])
        reference_started = time.time()
        reference = evaluate_reference(data)
        reference_seconds = time.time() - reference_started

        threads = max(1, available_cores() // 2)
        cell = Lane("cell", work / "cell.log", log, threads)
        modern = Lane("modern", work / "modern.log", log, threads)
        baselines = Lane("baselines", work / "baselines.log", log, threads)
        (cell_results, search_seconds, genotype_file), baseline_results = run_side_by_side(
            lambda: search_and_train_the_cell(cell, modern, work / "cell", data, augmentation),
            lambda: train_and_evaluate(baselines, BASELINE_TRAININGS, work / "baselines", data),
        )
        results = {**cell_results, **baseline_results}
    except StepFailed as failure:
        sys.exit(str(failure))

    table = results_table(reference, reference_seconds, results)
    report = (
        "# Demo results\n\nBuilt-in synthetic corpus (`python -m data_objects.synthetic`), "
        f"{available_cores()} CPU cores, {(time.time() - started) / 60:.1f} min in all (search "
        f"{search_seconds:.0f} s; the baselines trained beside the search and the cell, {threads} torch "
        f"thread(s) per process).\n\n{table}\n"
        "Identification: Top-1 on the test partition of the checkpoint selected on `val`. "
        "Verification: EER and minDCF (p_target 0.01) of the last epoch on `veri_test.txt`"
        f"{asnorm_note(results)}.\n\n"
        f"Searched cell (trained above): `{genotype_file.read_text().strip()}`\n"
    )
    write_text_atomically("demo_results.md", report)
    if args.record:
        write_section(args.record, f"{RECORD_START}\n{report}{RECORD_END}\n", RECORD_START, RECORD_END)
    print("\n" + report)


def asnorm_note(results: dict[str, dict]) -> str:
    """'; with AS-norm, the modern recipe's scoring: EER 7.40 % (...)' for the rows scored with it, else ''."""
    normalised = [f"EER {metrics['eer_asnorm']:.2f} % ({name})" for name, metrics in results.items()
                  if "eer_asnorm" in metrics]
    return f" (raw cosine scores); with AS-norm: {', '.join(normalised)}" if normalised else ""


def results_table(reference: ReferenceResult, reference_seconds: float, results: dict[str, dict]) -> str:
    rows = [
        "| System | Top-1 (%) | EER (%) | minDCF(0.01) | Parameters | Time (s) | Better than the reference |",
        "|---|---|---|---|---|---|---|",
        f"| Reference: mean log-spectrum, cosine / nearest centroid | {reference.top1:.2f} | "
        f"{reference.eer:.2f} | - | 0 | {reference_seconds:.0f} | - |",
    ]
    for name, metrics in results.items():
        top1 = f"{metrics['top1']:.2f}" if "top1" in metrics else "-"
        eer = f"{metrics['eer']:.2f}" if "eer" in metrics else "-"
        dcf = f"{metrics['min_dcf_0.01']:.3f}" if "min_dcf_0.01" in metrics else "-"
        rows.append(f"| {name} | {top1} | {eer} | {dcf} | {metrics['parameters']:,} | {metrics['seconds']:.0f} | "
                    f"{beats_reference(reference, metrics)} |")
    return "\n".join(rows) + "\n"


def beats_reference(reference: ReferenceResult, metrics: dict) -> str:
    verdicts = []
    if "top1" in metrics:
        verdicts.append(f"Top-1 {'yes' if metrics['top1'] > reference.top1 else 'no'}")
    if "eer" in metrics:
        verdicts.append(f"EER {'yes' if metrics['eer'] < reference.eer else 'no'}")
    return ", ".join(verdicts)


if __name__ == "__main__":
    main()
