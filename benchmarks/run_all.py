"""make bench: our code against straightforward references of the published approach, one table.

    python benchmarks/run_all.py [--quick] [--device cpu|cuda] [--output docs/benchmarks.md]

Every row runs both sides in this process on the same data (benchmarks/README.md describes each). The table is
printed and written to --output. --quick runs every row at tiny sizes, to check that the benchmarks work; its
numbers mean little. --device cuda runs the rows that a GPU changes (search step, training step with AMP) on the
GPU and writes docs/benchmarks_gpu.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Sequence

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (  # noqa: E402
    crop_loading, end_to_end, preprocessing, search_step, training_step, verification,
)
from benchmarks.common import NetworkSize, Row, markdown_table  # noqa: E402
from benchmarks.preprocessing import CorpusSize  # noqa: E402
from utils.cli import OneLineErrorParser  # noqa: E402
from utils.files import OutputError, ensure_writable_dir, write_section  # noqa: E402

SECTION_START = "<!-- benchmarks: written by benchmarks/run_all.py -->"
SECTION_END = "<!-- end of benchmarks -->"
DEFAULT_OUTPUT = {"cpu": Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md",
                  "cuda": Path(__file__).resolve().parents[1] / "docs" / "benchmarks_gpu.md"}


@dataclass(frozen=True)
class Plan:
    name: str
    corpus: CorpusSize
    small_corpus: CorpusSize  # for the peak-memory comparison
    preprocessing_repetitions: int
    search: NetworkSize
    # The paper's search network at these batches (the full run: 2, 16 and 64): one timed step each, as a step at
    # batch 64 takes minutes.
    search_cost: NetworkSize
    search_cost_batches: tuple[int, ...]
    training: tuple[NetworkSize, ...]
    verification_utterances: int
    verification_repetitions: int
    crops_per_length: int
    crop_repetitions: int
    epoch: end_to_end.EpochSize


COST_SEARCH = dataclasses.replace(search_step.PAPER, repetitions=1)
FULL = Plan("full run", CorpusSize(16, 4, 4, 5), CorpusSize(4, 2, 4, 5), 5, search_step.PAPER, COST_SEARCH,
            search_step.COST_BATCHES,
            (training_step.PAPER, training_step.DEMO), 40, 3, 10, 5, end_to_end.FULL)
QUICK = Plan("quick run (tiny sizes: checks that every row works; the numbers mean little)",
             CorpusSize(2, 2, 2, 3), CorpusSize(2, 2, 2, 2), 1, search_step.QUICK, search_step.QUICK, (2, 4, 8),
             (training_step.QUICK,), 8, 1, 2, 1, end_to_end.QUICK)
# On a GPU a step takes milliseconds: more repetitions, and the paper's own training batch.
GPU_SEARCH = dataclasses.replace(search_step.PAPER, repetitions=20)
GPU_TRAINING = (
    NetworkSize.from_config("exps/scratch/scratch_iden.yaml", 10, "paper size", classes=1251),
    dataclasses.replace(training_step.DEMO, repetitions=20),
)


def run_gpu(plan: Plan) -> list[Row]:
    torch.backends.cudnn.benchmark = True  # as the configs set it
    search = search_step.QUICK if plan is QUICK else GPU_SEARCH
    training = (training_step.QUICK,) if plan is QUICK else GPU_TRAINING
    cost = search_step.QUICK if plan is QUICK else COST_SEARCH
    return (search_step.search_rows(search, "cuda")
            + search_step.search_cost_rows(cost, "cuda", plan.search_cost_batches)
            + [training_step.training_row(size, "cuda") for size in training])


def run(plan: Plan, workdir: Path) -> list[Row]:
    def timed(name: str, rows):
        started = time.perf_counter()
        result = rows()
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        return result

    throughput, disk, corpus = timed("preprocessing and disk", lambda: preprocessing.preprocessing_rows(
        workdir, plan.corpus, plan.small_corpus, plan.preprocessing_repetitions))
    search = timed("search step", lambda: search_step.search_rows(plan.search))
    cost = timed("search cost", lambda: search_step.search_cost_rows(plan.search_cost, "cpu",
                                                                      plan.search_cost_batches))
    training = timed("training step", lambda: [training_step.training_row(size) for size in plan.training])
    epoch = timed("training epoch end to end", lambda: end_to_end.end_to_end_row(corpus, plan.epoch))
    verifying = timed("verification", lambda: verification.verification_row(
        corpus, workdir, plan.verification_utterances, plan.verification_repetitions))
    crops = timed("training crops", lambda: crop_loading.crop_rows(workdir, plan.crops_per_length,
                                                                   plan.crop_repetitions))
    return throughput + search + cost + training + [epoch, verifying] + crops + disk


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrorParser(description="Benchmark the project against references of the published code.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in well under a minute")
    parser.add_argument("--device", choices=sorted(DEFAULT_OUTPUT), default="cpu",
                        help="cuda: the GPU rows (search and training steps) on the first GPU")
    parser.add_argument("--output", type=Path,
                        help="markdown file (default docs/benchmarks.md; docs/benchmarks_gpu.md on cuda)")
    parser.add_argument("--threads", type=_positive,
                        help="torch intra-op threads (default: torch's own, as the scripts run; see "
                             "benchmarks/README.md, 'Threads')")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    output = args.output or DEFAULT_OUTPUT[args.device]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ensure_writable_dir(output.resolve().parent)
        started = time.perf_counter()
        if args.device == "cuda":
            rows = run_gpu(plan)
        else:
            with tempfile.TemporaryDirectory(prefix="autospeech-bench-") as workdir:
                rows = run(plan, Path(workdir))
        minutes = (time.perf_counter() - started) / 60.0
        title = f"Benchmarks: {plan.name}, {date.today().isoformat()}, {minutes:.1f} min"
        section = f"{SECTION_START}\n{markdown_table(rows, title, args.device)}{SECTION_END}\n"
        write_section(output, section, SECTION_START, SECTION_END)
    except OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(section)
    print(f"written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
