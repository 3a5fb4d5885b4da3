"""The whole method on the built-in demo corpus, in minutes on a CPU: `make demo`.

Generates the corpus, preprocesses it, searches a cell, trains that cell from scratch for identification and
for verification, trains ResNet-18 baselines, evaluates every network with the evaluation scripts and prints
a table (also written to demo_results.md). Each step is the command a user would type, printed before it runs.
"""
from __future__ import annotations

import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.reference_system import ReferenceResult, evaluate_reference
from data_objects import available_cores
from utils.cli import OneLineErrorParser
from utils.files import write_text_atomically

PYTHON = sys.executable


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], log: Path) -> float:
    """Run a step, its output to the console and to `log`; stop the demo when it fails. Each step's wall and CPU
    time is printed and logged: on a busy machine the CPU time says more about the step than the wall time."""
    print(f"\n$ {' '.join(shlex.quote(part) for part in command)}", flush=True)
    started, cpu_started = time.time(), _children_cpu_seconds()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        process = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if process.returncode != 0:
        tail = log.read_text(encoding="utf-8").splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        sys.exit(f"demo: step failed with exit code {process.returncode}; full output in {log}")
    elapsed, cpu = time.time() - started, _children_cpu_seconds() - cpu_started
    summary = f"  done in {elapsed:.0f} s (CPU {cpu:.0f} s)"
    print(summary, flush=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(summary + "\n")
    return elapsed


def newest_run(folder: Path) -> Path:
    runs = sorted(folder.glob("*/"), key=lambda path: path.stat().st_mtime)
    if not runs:
        sys.exit(f"demo: no run folder in {folder}")
    return runs[-1]


def main() -> None:
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="demo", help="where the corpus and the runs go (default: demo/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work_dir)
    data = work / "VoxCeleb1"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "demo.log"
    overrides = ["DATASET.DATA_DIR", str(data), "OUTPUT_DIR", str(work)]
    seconds: dict[str, float] = {}

    if not (data / "veri_test.txt").exists():
        seconds["corpus"] = run([PYTHON, "-m", "data_objects.synthetic", str(data), "--seed", str(args.seed)], log)
    seconds["preprocess"] = run([PYTHON, "data_preprocess.py", str(data), "--skip_existing"], log)

    started = time.time()
    reference = evaluate_reference(data)
    seconds["reference"] = time.time() - started

    seconds["search"] = run([PYTHON, "search.py", "--cfg", "exps/demo/search.yaml", *overrides], log)
    genotype_file = newest_run(work / "logs_search") / "genotype.txt"
    print(f"  searched genotype: {genotype_file.read_text().strip()}")

    trainings = {
        "AutoSpeech cell (identification)": ("train_identification.py", "exps/demo/scratch_iden.yaml", True),
        "AutoSpeech cell (verification)": ("train_verification.py", "exps/demo/scratch_veri.yaml", True),
        "ResNet-18 (identification)": ("train_baseline_identification.py", "exps/demo/resnet18_iden.yaml", False),
        "ResNet-18 (verification)": ("train_baseline_verification.py", "exps/demo/resnet18_veri.yaml", False),
    }
    results: dict[str, dict] = {}
    for name, (script, cfg, needs_genotype) in trainings.items():
        arch = ["--text_arch", str(genotype_file)] if needs_genotype else []
        logs_kind = "logs_scratch" if needs_genotype else "logs"
        train_seconds = run([PYTHON, script, "--cfg", cfg, *arch, *overrides], log)
        run_dir = newest_run(work / logs_kind)
        identification = "identification" in name
        evaluate = "evaluate_identification.py" if identification else "evaluate_verification.py"
        checkpoint = run_dir / "Model" / ("checkpoint_best.pth" if identification else "checkpoint_last.pth")
        eval_seconds = run([PYTHON, evaluate, "--cfg", cfg, "--load_path", str(checkpoint), *overrides], log)
        metrics = json.loads((newest_run(work / "logs_eval") / "results.json").read_text())
        metrics["seconds"] = train_seconds + eval_seconds
        results[name] = metrics

    table = results_table(reference, seconds["reference"], results)
    total = sum(seconds.values()) + sum(r["seconds"] for r in results.values())
    report = (
        "# Demo results\n\nBuilt-in synthetic corpus (`python -m data_objects.synthetic`), "
        f"{available_cores()} CPU cores, "
        f"{total / 60:.1f} min in all (search {seconds['search']:.0f} s).\n\n{table}\n"
        "Identification: Top-1 on the test partition of the checkpoint selected on `val`. "
        "Verification: EER and minDCF (p_target 0.01) of the last epoch on `veri_test.txt`.\n\n"
        f"Searched cell (trained above): `{genotype_file.read_text().strip()}`\n"
    )
    write_text_atomically("demo_results.md", report)
    print("\n" + report)


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
