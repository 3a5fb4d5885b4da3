"""The paper's recipe, today's modern recipe and the anchors' recipe (WeSpeaker's), for the searched cell and a
WeSpeaker-style ResNet-34, on the built-in corpus at the demo's size, over several training seeds.

    python benchmarks/recipes.py [--seeds 3] [--jobs 2] [--quick] [--workdir DIR] [--output docs/benchmarks.md]

Generates the demo's corpus (python -m data_objects.synthetic), its features (data_preprocess.py, for the paper's
recipe), a noise / room-response folder (python -m data_objects.synthetic_augmentation) and a second corpus of
other speakers (another seed) whose trials are the held-apart set on which the anchors' demo head is chosen:
statistics pooling to a 128-d embedding (as the anchors) or the published head (average pooling), one run each,
each with WeSpeaker's learning-rate decay scaled to the demo's batch or a milder one, per network. Then it trains every row with seeds 0, 1, ... as a user would (the training scripts in
subprocesses, --jobs at a time) and scores veri_test.txt raw and with AS-norm. The table (mean and spread over
the seeds, parameters, frames reaching the pooling) replaces the recipes section of --output, which is created
if absent. Runs already measured in --workdir are read back, so an interrupted benchmark continues where it
stopped. --quick runs 2 epochs of 3 steps, to check that the benchmark works; its numbers mean little.
--threads sets the runs' torch threads (default 1: on a shared 2-core machine two OpenMP threads wait for each
other at every operator whenever another process holds a core; 0 keeps torch's default).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine_line  # noqa: E402
from models.genotypes import AUTOSPEECH, genotype_to_text  # noqa: E402
from utils.cli import OneLineErrorParser, run_main  # noqa: E402
from utils.files import OutputError, write_section, write_text_atomically  # noqa: E402
from utils.script_runs import run_logged  # noqa: E402

SECTION_START = "<!-- recipes: written by benchmarks/recipes.py -->"
SECTION_END = "<!-- end of recipes -->"
# The goals: the anchors' recipe at most this fraction of the paper recipe's EER, for both networks.
GOAL = 0.5
# Of the corpus's 24 training speakers; the demo configs take the same.
COHORT = ["EVAL.SCORE_NORM", "asnorm", "EVAL.COHORT_SIZE", "10"]
# Validation at the last epoch only: with AS-norm each one also embeds every training utterance.
VALIDATION = ["VAL_FREQ", "1000"]
RESNET = ["MODEL.NAME", "wespeaker_resnet34", "MODEL.RESNET_WIDTH", "8"]
RESNET_EPOCHS = ["TRAIN.END_EPOCH", "10"]
QUICK = ["TRAIN.END_EPOCH", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "3"]
HELD_APART_SEED = 7
# The anchors' demo head and learning rates, chosen on the held-apart trials: WeSpeaker's decay (0.1 -> 5e-5 at its
# batch of 64, 0.025 -> 1.25e-5 at the demo's 16) is made for 150 epochs, and 20 demo epochs may need a milder one.
HEADS = {
    "statistics pooling, 128-d embedding": ("MODEL.POOLING", "stats", "MODEL.EMBEDDING_DIM", "128"),
    "average pooling, no embedding": ("MODEL.POOLING", "avg", "MODEL.EMBEDDING_DIM", "0"),
}
RATES = {
    "lr 0.025 -> 1.25e-5": ("TRAIN.LR", "0.025", "TRAIN.LR_MIN", "0.0000125"),
    "lr 0.05 -> 5e-4": ("TRAIN.LR", "0.05", "TRAIN.LR_MIN", "0.0005"),
}
CANDIDATES = {f"{head}, {rate}": (*HEADS[head], *RATES[rate]) for head in HEADS for rate in RATES}


@dataclass(frozen=True)
class Recipe:
    network: str
    label: str
    script: str
    config: str
    overrides: tuple[str, ...] = ()
    augmented: bool = False
    anchors: bool = False

    @property
    def key(self) -> str:
        return f"{self.network}-{self.label}".replace(" ", "_").replace("'", "")


CELL, RESNET34 = "searched cell", "ResNet-34 (WeSpeaker-style, width 8)"
RECIPES = (
    Recipe(CELL, "paper", "train_verification.py", "exps/demo/scratch_veri.yaml"),
    Recipe(CELL, "modern (today)", "train_verification.py", "exps/demo/modern_scratch_veri.yaml", augmented=True),
    Recipe(CELL, "anchors'", "train_verification.py", "exps/demo/anchors_scratch_veri.yaml", augmented=True,
           anchors=True),
    Recipe(RESNET34, "paper", "train_baseline_verification.py", "exps/demo/resnet18_veri.yaml",
           (*RESNET, *RESNET_EPOCHS)),
    Recipe(RESNET34, "modern (today)", "train_baseline_verification.py", "exps/demo/modern_resnet34_veri.yaml",
           tuple(RESNET), augmented=True),
    Recipe(RESNET34, "anchors'", "train_baseline_verification.py", "exps/demo/anchors_resnet34_veri.yaml",
           augmented=True, anchors=True),
)


def _run(command: list[str], log_path: Path, threads: int = 0) -> float:
    """Run `command` from the repository root, its output to `log_path`; `threads` > 0 sets torch's threads."""
    with log_path.open("a", encoding="utf-8") as log:
        run = run_logged(command, log, threads, cwd=REPO)
    if run.returncode != 0:
        raise OutputError(f"{' '.join(command[:2])} failed with status {run.returncode}; see {log_path}")
    return run.wall_seconds


def prepare(workdir: Path) -> tuple[Path, Path, Path]:
    corpus, held_apart, augmentation = workdir / "VoxCeleb1", workdir / "held_apart", workdir / "augmentation"
    python, log = sys.executable, workdir / "prepare.log"
    for folder, seed in ((corpus, 0), (held_apart, HELD_APART_SEED)):
        if not (folder / "mean.npy").exists():
            _run([python, "-m", "data_objects.synthetic", str(folder), "--seed", str(seed)], log)
            _run([python, "data_preprocess.py", str(folder)], log)
    if not (augmentation / "rirs").exists():
        _run([python, "-m", "data_objects.synthetic_augmentation", str(augmentation)], log)
    return corpus, held_apart, augmentation


@dataclass(frozen=True)
class Job:
    recipe: Recipe
    seed: int
    corpus: Path
    extra: tuple[str, ...]
    name: str


def _anchors_choice(recipe: Recipe, chosen: dict[str, str]) -> tuple[tuple[str, ...], str]:
    """The overrides of a row and its run's name, which names the chosen candidate of an anchors' row."""
    if not recipe.anchors:
        return (), recipe.key
    candidate = chosen[recipe.network]
    return CANDIDATES[candidate], f"{recipe.key}-choice{list(CANDIDATES).index(candidate)}"


def train(job: Job, augmentation: Path, workdir: Path, quick: bool, threads: int) -> dict:
    """The last epoch's metrics of one run, read back from workdir when it was measured before."""
    done = workdir / f"{job.name}.json"
    if done.exists():
        return json.loads(done.read_text())
    out = workdir / job.name
    recipe = job.recipe
    command = [sys.executable, recipe.script, "--cfg", recipe.config]
    if recipe.script == "train_verification.py":
        command += ["--text_arch", genotype_to_text(AUTOSPEECH)]
    command += ["DATASET.DATA_DIR", str(job.corpus), "OUTPUT_DIR", str(out), "SEED", str(job.seed), *COHORT,
                *VALIDATION, *recipe.overrides, *job.extra]
    if recipe.augmented:
        command += ["AUGMENT.NOISE_DIR", str(augmentation / "musan"), "AUGMENT.RIR_DIR", str(augmentation / "rirs")]
    command += QUICK if quick else []
    seconds = _run(command, workdir / f"{job.name}.log", threads)
    run = max((out / kind for kind in ("logs_scratch", "logs") if (out / kind).is_dir()),
              key=lambda path: path.stat().st_mtime)
    results = json.loads(next(run.glob("*/results.json")).read_text())
    metrics = {**results["last_epoch"], "wall_seconds": seconds, "parameters": results["parameters"]}
    write_text_atomically(done, json.dumps(metrics))
    print(f"{job.name}: EER {metrics['eer']:.2f} %, AS-norm {metrics['eer_asnorm']:.2f} %, {seconds:.0f} s",
          file=sys.stderr, flush=True)
    return metrics


def run_all(jobs: list[Job], augmentation: Path, workdir: Path, quick: bool, threads: int, parallel: int) -> list:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda job: train(job, augmentation, workdir, quick, threads), jobs))


def pooling_shapes() -> dict[str, str]:
    """Frames x bins reaching the pooling, per network: the demo's 1-s crop and exps/modern's 2-s crop."""
    import torch

    from functions.experiment import count_parameters
    from models import build_model
    from utils.config import get_default_config

    def shape(name: str, features: str, frames: int, **model) -> tuple[int, int, int]:
        cfg = get_default_config()
        cfg.MODEL.NAME, cfg.DATASET.FEATURES = name, features
        cfg.MODEL.update(model)
        network = build_model(cfg, 24, AUTOSPEECH if name == "model" else None).eval()
        with torch.no_grad():
            feature_map = network.feature_map(torch.zeros(1, frames, 257 if features == "spectrogram" else 80))
        return feature_map.shape[2], feature_map.shape[3], count_parameters(network)

    cell = {"INIT_CHANNELS": 16, "LAYERS": 4}
    rows = {
        "searched cell, published stem (paper and modern rows)": (shape("model", "fbank", 101, **cell),
                                                                   shape("model", "fbank", 201, INIT_CHANNELS=128)),
        "searched cell, time-keeping stem (anchors' row)": (
            shape("model", "kaldi_fbank", 97, STEM="time_keeping", **cell),
            shape("model", "kaldi_fbank", 197, STEM="time_keeping", INIT_CHANNELS=128)),
        "ResNet-34, WeSpeaker-style (width 8 here, 32 in exps/modern/)": (
            shape("wespeaker_resnet34", "kaldi_fbank", 97, RESNET_WIDTH=8),
            shape("wespeaker_resnet34", "kaldi_fbank", 197, RESNET_WIDTH=32)),
        "ResNet-34, torchvision's (the earlier exps/modern/resnet34_veri.yaml)": (
            shape("resnet34", "fbank", 101), shape("resnet34", "fbank", 201)),
    }
    return {label: f"{demo[0]} x {demo[1]} | {demo[2]:,} | {full[0]} x {full[1]} | {full[2]:,}"
            for label, (demo, full) in rows.items()}


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {spread:.2f}"


def table(results: dict[Recipe, list[dict]], choice: dict[str, dict[str, dict]], chosen: dict[str, str],
          seeds: int, quick: bool, minutes: float, threads: int, jobs: int) -> str:
    lines = [
        SECTION_START,
        f"## Recipes: {'quick run (numbers mean little)' if quick else 'full run'}, {date.today()}, "
        f"{minutes:.1f} min",
        "",
        f"{machine_line('cpu').split(', torch intra-op')[0]}; {jobs} training runs at a time, each with "
        f"{f'OMP_NUM_THREADS={threads}' if threads > 0 else 'torch default threads'}, on cores shared with other "
        "jobs: wall times are those of a busy machine; EER and minDCF do not depend on the load.",
        "",
        f"Built-in corpus at the demo's size (24 dev speakers for training, 8 test speakers, 1,056 trials of "
        f"veri_test.txt), seeds 0-{seeds - 1} of each row (mean ± standard deviation over the seeds). The cell "
        "rows at the size of exps/demo/scratch_veri.yaml (C 16, 4 layers, 1-s crops, batch 16, 20 epochs), the "
        "ResNet rows 10 epochs; paper: the demo configs (spectrogram, softmax with label smoothing, average "
        "pooling, Adam, cosine); modern (today): exps/demo/modern_*.yaml (fbank, AAM with a linear margin "
        "warm-up, noise and reverberation p 0.3 each, independently); anchors': exps/demo/anchors_*.yaml "
        "(Kaldi fbank, one of noise or reverberation with total p 0.6, AAM with the exponential margin schedule, "
        "SGD with Nesterov momentum, weight decay, warm-up and exponential decay, AS-norm with the training mean "
        "subtracted, the time-keeping stem for the cell). Last epoch's scores; AS-norm over the 24 training "
        "speakers' mean embeddings, top 10.",
        "",
        "| Network | Recipe | EER (%) | minDCF(0.01) | EER AS-norm (%) | minDCF(0.01) AS-norm | "
        "EER AS-norm / paper's EER | Parameters | Wall time per run (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    paper = {recipe.network: runs for recipe, runs in results.items() if recipe.label == "paper"}
    for recipe, runs in results.items():
        base = statistics.fmean(run["eer"] for run in paper[recipe.network])
        lines.append(
            f"| {recipe.network} | {recipe.label} | {_spread([r['eer'] for r in runs])} | "
            f"{_spread([r['min_dcf_0.01'] for r in runs])} | {_spread([r['eer_asnorm'] for r in runs])} | "
            f"{_spread([r['min_dcf_0.01_asnorm'] for r in runs])} | "
            f"{statistics.fmean(r['eer_asnorm'] for r in runs) / base:.2f}x | {runs[0]['parameters']:,} | "
            f"{statistics.fmean(r['wall_seconds'] for r in runs):.0f} |")
    lines += ["", "Goals (means over the seeds):", ""]
    anchors = {recipe.network: runs for recipe, runs in results.items() if recipe.anchors}
    modern = {recipe.network: runs for recipe, runs in results.items() if recipe.label == "modern (today)"}
    for network, runs in anchors.items():
        ratio = statistics.fmean(r["eer_asnorm"] for r in runs) / statistics.fmean(r["eer"] for r in paper[network])
        lines.append(f"- {network}: the anchors' recipe (AS-norm) at {ratio:.2f}x the paper recipe's EER, goal "
                     f"<= {GOAL}x: {'met' if ratio <= GOAL else 'not met'}.")
    resnet = statistics.fmean(r["eer_asnorm"] for r in anchors[RESNET34])
    cell_modern = statistics.fmean(r["eer_asnorm"] for r in modern[CELL])
    lines += [f"- ResNet-34 under the anchors' recipe ({resnet:.2f} %, AS-norm) against the cell under today's "
              f"modern recipe ({cell_modern:.2f} %): {'no worse' if resnet <= cell_modern else 'worse'}.", "",
              f"The anchors' demo head and learning rates, chosen on held-apart trials (veri_test.txt of a second corpus, generated "
              f"with seed {HELD_APART_SEED}: other speakers; seed 0, EER with AS-norm), each network on its own runs:", "",
              "| Network | Head and learning rate | EER AS-norm (%) held apart | Chosen |", "|---|---|---|---|"]
    for network, by_head in choice.items():
        for head, metrics in by_head.items():
            lines.append(f"| {network} | {head} | {metrics['eer_asnorm']:.2f} | "
                         f"{'yes' if chosen[network] == head else ''} |")
    lines += ["", "Frames x bins reaching the pooling, and parameters of each trunk with the published head "
              "(average pooling, a linear classifier of 24 speakers), so that the trunks compare; the statistics "
              "pooling and embedding layer of a row or of exps/modern/ add theirs (WeSpeaker's ResNet34 is 6.6 M "
              "with its 256-d embedding):", "",
              "| Network | Demo, 1-s crop | Parameters (demo) | exps/modern, 2-s crop | Parameters (exps/modern "
              "size) |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {cells} |" for label, cells in pooling_shapes().items()]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs of 3 steps: checks that the benchmark works")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of every row (0, 1, ...)")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    parser.add_argument("--workdir", help="folder for the corpora and the runs (default: a temporary folder)")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of the training runs (0: torch's default, one per core)")
    args = parser.parse_args()
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        corpus, held_apart, augmentation = prepare(workdir)
        anchors = [recipe for recipe in RECIPES if recipe.anchors]
        choice_jobs = [Job(recipe, 0, held_apart, overrides, f"held_apart-{recipe.key}-{index}")
                       for recipe in anchors for index, overrides in enumerate(CANDIDATES.values())]
        measured = run_all(choice_jobs, augmentation, workdir, args.quick, args.threads, args.jobs)
        choice = {recipe.network: dict(zip(CANDIDATES, measured[index * len(CANDIDATES):]))
                  for index, recipe in enumerate(anchors)}
        chosen = {network: min(by_candidate, key=lambda candidate: by_candidate[candidate]["eer_asnorm"])
                  for network, by_candidate in choice.items()}
        # Seed by seed, so that an interrupted benchmark has the same seeds of every row.
        jobs = [Job(recipe, seed, corpus, overrides, f"{name}-seed{seed}") for seed in range(args.seeds)
                for recipe in RECIPES for overrides, name in [_anchors_choice(recipe, chosen)]]
        measured = run_all(jobs, augmentation, workdir, args.quick, args.threads, args.jobs)
    results: dict[Recipe, list[dict]] = {}
    for job, metrics in zip(jobs, measured):
        results.setdefault(job.recipe, []).append(metrics)
    section = table(results, choice, chosen, args.seeds, args.quick, (time.perf_counter() - started) / 60,
                    args.threads, args.jobs)
    print(section)
    write_section(Path(args.output), section, SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_main(main, (OutputError,))
