"""The paper's recipe, today's modern recipe and the anchors' recipe (WeSpeaker's), for the searched cell and a
WeSpeaker-style ResNet-34, on the built-in corpus at the demo's size, over several training seeds.

    python benchmarks/recipes.py [--seeds 3] [--choice_seeds 1] [--ablation] [--jobs 2] [--device cpu]
                                 [--quick] [--workdir DIR] [--output docs/benchmarks.md]

Generates the demo's corpus (python -m data_objects.synthetic), its features (data_preprocess.py, for the paper's
recipe), a noise / room-response folder (python -m data_objects.synthetic_augmentation) and a second corpus of
other speakers (another seed) whose trials are the held-apart set on which the anchors' demo head is chosen:
statistics pooling to a 128-d embedding (as the anchors) or the published head (average pooling), each with
WeSpeaker's learning-rate decay scaled to the demo's batch or one of three shorter, larger ones, per network, by the
mean over --choice_seeds training seeds. Then it trains every row with seeds 0, 1, ... as a user would (the
training scripts in subprocesses, --jobs at a time, on --device) and scores veri_test.txt raw and with AS-norm.
--ablation also puts each part of today's modern recipe back into the anchors' chosen one in turn (optimiser and
schedule, front-end, augmentation choice, margin schedule, stem, head), --seeds runs each on the held-apart
trials: which part costs the anchors' recipe at this size. The table (mean and spread over
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
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from yacs.config import CfgNode

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine_line  # noqa: E402
from models.genotypes import AUTOSPEECH, genotype_to_text  # noqa: E402
from utils.cli import OneLineErrorParser, run_main  # noqa: E402
from utils.files import OutputError, write_section, write_text_atomically  # noqa: E402
from utils.config import config_value, get_default_config, update_config  # noqa: E402
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
# batch of 64, 0.025 -> 1.25e-5 at the demo's 16) is made for 150 epochs, and 20 demo epochs may need a larger,
# shorter one. The second anchors' row may also take Adam (the paper's optimiser, at the modern rows' two rates).
HEADS = {
    "statistics pooling, 128-d embedding": ("MODEL.POOLING", "stats", "MODEL.EMBEDDING_DIM", "128"),
    "average pooling, no embedding": ("MODEL.POOLING", "avg", "MODEL.EMBEDDING_DIM", "0"),
}
SGD_RATES = {
    "SGD lr 0.025 -> 1.25e-5": ("TRAIN.LR", "0.025", "TRAIN.LR_MIN", "0.0000125"),
    "SGD lr 0.05 -> 5e-4": ("TRAIN.LR", "0.05", "TRAIN.LR_MIN", "0.0005"),
    "SGD lr 0.1 -> 1e-3": ("TRAIN.LR", "0.1", "TRAIN.LR_MIN", "0.001"),
    "SGD lr 0.2 -> 2e-3": ("TRAIN.LR", "0.2", "TRAIN.LR_MIN", "0.002"),
}
ADAM = ("TRAIN.OPTIMIZER", "adam", "TRAIN.LR_SCHEDULE", "cosine", "TRAIN.WD", "0.0", "TRAIN.WARMUP_EPOCHS", "0")
ADAM_RATES = {
    "Adam lr 0.01 -> 1e-3, cosine": (*ADAM, "TRAIN.LR", "0.01", "TRAIN.LR_MIN", "0.001"),
    "Adam lr 1e-3 -> 1e-4, cosine": (*ADAM, "TRAIN.LR", "0.001", "TRAIN.LR_MIN", "0.0001"),
}
# A candidate's runs are named by its position here.
CANDIDATES = {f"{head}, {rate}": (*HEADS[head], *rates[rate])
              for rates in (SGD_RATES, ADAM_RATES) for head in HEADS for rate in rates}
SGD_CANDIDATES = tuple(name for name in CANDIDATES if any(name.endswith(rate) for rate in SGD_RATES))
# The parts of today's modern recipe that --ablation puts back, one at a time, with their keys' values taken from the
# network's modern row; a part whose values the anchors' row already has is left out.
ABLATION_PARTS = {
    "Adam with cosine decay": ("TRAIN.OPTIMIZER", "TRAIN.LR", "TRAIN.LR_MIN", "TRAIN.WD", "TRAIN.LR_SCHEDULE",
                               "TRAIN.WARMUP_EPOCHS"),
    "fbank front-end": ("DATASET.FEATURES",),
    "independent augmentation": ("AUGMENT.MODE",),
    "linear margin warm-up": ("LOSS.MARGIN_SCHEDULE", "LOSS.MARGIN_HOLD_EPOCHS", "LOSS.MARGIN_WARMUP_EPOCHS"),
    "published stem": ("MODEL.STEM",),
    "average pooling head": ("MODEL.POOLING", "MODEL.EMBEDDING_DIM"),
}


@dataclass(frozen=True)
class Recipe:
    network: str
    label: str
    script: str
    config: str
    overrides: tuple[str, ...] = ()
    augmented: bool = False
    # The held-apart candidates an anchors' row chooses among (none: not an anchors' row).
    candidates: tuple[str, ...] = ()

    @property
    def anchors(self) -> bool:
        return bool(self.candidates)

    @property
    def key(self) -> str:
        return f"{self.network}-{self.label}".replace(" ", "_").replace("'", "")


CELL, RESNET34 = "searched cell", "ResNet-34 (WeSpeaker-style, width 8)"
MODERN, ANCHORS_CHOSEN = "modern (today)", "the anchors' recipe with SGD, as chosen"
RECIPES = (
    Recipe(CELL, "paper", "train_verification.py", "exps/demo/scratch_veri.yaml"),
    Recipe(CELL, MODERN, "train_verification.py", "exps/demo/modern_scratch_veri.yaml", augmented=True),
    Recipe(CELL, "anchors'", "train_verification.py", "exps/demo/anchors_scratch_veri.yaml", augmented=True,
           candidates=SGD_CANDIDATES),
    Recipe(CELL, "anchors', optimiser chosen", "train_verification.py", "exps/demo/anchors_scratch_veri.yaml",
           augmented=True, candidates=tuple(CANDIDATES)),
    Recipe(RESNET34, "paper", "train_baseline_verification.py", "exps/demo/resnet18_veri.yaml",
           (*RESNET, *RESNET_EPOCHS)),
    Recipe(RESNET34, MODERN, "train_baseline_verification.py", "exps/demo/modern_resnet34_veri.yaml",
           tuple(RESNET), augmented=True),
    Recipe(RESNET34, "anchors'", "train_baseline_verification.py", "exps/demo/anchors_resnet34_veri.yaml",
           augmented=True, candidates=SGD_CANDIDATES),
    Recipe(RESNET34, "anchors', optimiser chosen", "train_baseline_verification.py",
           "exps/demo/anchors_resnet34_veri.yaml", augmented=True, candidates=tuple(CANDIDATES)),
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


def anchors_key(network: str) -> str:
    """The part of the run names of a network's anchors' runs: both anchors' rows share a candidate's runs."""
    return f"{network}-anchors".replace(" ", "_")


def _anchors_choice(recipe: Recipe, chosen: dict[Recipe, str]) -> tuple[tuple[str, ...], str]:
    """The overrides of a row and its run's name, which names the chosen candidate of an anchors' row."""
    if not recipe.anchors:
        return (), recipe.key
    candidate = chosen[recipe]
    return CANDIDATES[candidate], f"{anchors_key(recipe.network)}-choice{list(CANDIDATES).index(candidate)}"


@dataclass(frozen=True)
class Lane:
    """Where and how the training runs go: the shared folders, their size, threads and device."""
    augmentation: Path
    workdir: Path
    quick: bool
    threads: int
    device: str


def train(job: Job, lane: Lane) -> dict:
    """The last epoch's metrics of one run, read back from the workdir when it was measured before."""
    done = lane.workdir / f"{job.name}.json"
    if done.exists():
        return json.loads(done.read_text())
    out = lane.workdir / job.name
    recipe = job.recipe
    command = [sys.executable, recipe.script, "--cfg", recipe.config]
    if recipe.script == "train_verification.py":
        command += ["--text_arch", genotype_to_text(AUTOSPEECH)]
    command += ["DATASET.DATA_DIR", str(job.corpus), "OUTPUT_DIR", str(out), "SEED", str(job.seed),
                "DEVICE", lane.device, *COHORT, *VALIDATION, *recipe.overrides, *job.extra]
    if recipe.augmented:
        command += ["AUGMENT.NOISE_DIR", str(lane.augmentation / "musan"),
                    "AUGMENT.RIR_DIR", str(lane.augmentation / "rirs")]
    command += QUICK if lane.quick else []
    seconds = _run(command, lane.workdir / f"{job.name}.log", lane.threads)
    run = max((out / kind for kind in ("logs_scratch", "logs") if (out / kind).is_dir()),
              key=lambda path: path.stat().st_mtime)
    results = json.loads(next(run.glob("*/results.json")).read_text())
    metrics = {**results["last_epoch"], "wall_seconds": seconds, "parameters": results["parameters"]}
    write_text_atomically(done, json.dumps(metrics))
    print(f"{job.name}: EER {metrics['eer']:.2f} %, AS-norm {metrics['eer_asnorm']:.2f} %, {seconds:.0f} s",
          file=sys.stderr, flush=True)
    return metrics


def run_all(jobs: list[Job], lane: Lane, parallel: int) -> list[dict]:
    """The metrics of each job, in order; jobs of the same name (rows that chose the same run) run once."""
    unique = list({job.name: job for job in jobs}.values())
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        by_name = dict(zip((job.name for job in unique), pool.map(lambda job: train(job, lane), unique)))
    return [by_name[job.name] for job in jobs]


def choose(anchors: list[Recipe], choice: dict[str, dict[str, list[dict]]]) -> dict[Recipe, str]:
    """Each anchors' row's candidate: the lowest mean AS-norm EER on the held-apart trials among its candidates."""
    return {recipe: min(recipe.candidates, key=lambda name: _mean(choice[recipe.network][name], "eer_asnorm"))
            for recipe in anchors}


def held_apart_name(network: str, candidate: int, seed: int) -> str:
    return f"held_apart-{anchors_key(network)}-{candidate}" + (f"-seed{seed}" if seed else "")


def _resolved(recipe: Recipe, extra: tuple[str, ...]) -> CfgNode:
    """The config a row's runs train with (its file, its overrides and `extra`), as the script resolves it."""
    return update_config(get_default_config(),
                         Namespace(cfg=recipe.config, opts=[*recipe.overrides, *extra]))


def ablation_parts(anchors: Recipe, modern: Recipe, chosen: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each part of `modern` that the anchors' row (with the `chosen` candidate) does not share: its overrides."""
    anchors_cfg, modern_cfg = _resolved(anchors, chosen), _resolved(modern, ())
    parts = {}
    for part, keys in ABLATION_PARTS.items():
        values = [config_value(modern_cfg, key) for key in keys]
        if values != [config_value(anchors_cfg, key) for key in keys]:
            parts[part] = tuple(token for key, value in zip(keys, values) for token in (key, str(value)))
    return parts


def run_ablation(anchors: list[Recipe], chosen: dict[Recipe, str], held_apart: Path, seeds: int, lane: Lane,
                 parallel: int) -> dict[str, dict[str, list[dict]]]:
    """Per network, the anchors' row with SGD as chosen and each part of its modern row put back, on the
    held-apart trials."""
    labelled_jobs = []
    for recipe in anchors:
        modern = next(other for other in RECIPES if other.network == recipe.network and other.label == MODERN)
        candidate = chosen[recipe]
        index, overrides = list(CANDIDATES).index(candidate), CANDIDATES[candidate]
        variants = {ANCHORS_CHOSEN: ((), None), **{
            part: (part_overrides, position) for position, (part, part_overrides)
            in enumerate(ablation_parts(recipe, modern, overrides).items())}}
        for label, (part_overrides, position) in variants.items():
            for seed in range(seeds):
                name = (held_apart_name(recipe.network, index, seed) if position is None
                        else f"ablation-{anchors_key(recipe.network)}-{index}-part{position}-seed{seed}")
                labelled_jobs.append((label, Job(recipe, seed, held_apart, (*overrides, *part_overrides), name)))
    measured = run_all([job for _, job in labelled_jobs], lane, parallel)
    ablation: dict[str, dict[str, list[dict]]] = {}
    for (label, job), metrics in zip(labelled_jobs, measured):
        ablation.setdefault(job.recipe.network, {}).setdefault(label, []).append(metrics)
    return ablation


def pooling_shapes() -> dict[str, str]:
    """Frames x bins reaching the pooling, per network: the demo's 1-s crop and exps/modern's 2-s crop."""
    import torch

    from functions.experiment import count_parameters
    from models import build_model

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


def _mean(runs: list[dict], metric: str) -> float:
    return statistics.fmean(run[metric] for run in runs)


@dataclass(frozen=True)
class Run:
    """How the benchmark ran, for the table's header."""
    seeds: int
    choice_seeds: int
    quick: bool
    minutes: float
    threads: int
    jobs: int
    device: str


def table(results: dict[Recipe, list[dict]], choice: dict[str, dict[str, list[dict]]], chosen: dict[Recipe, str],
          ablation: dict[str, dict[str, list[dict]]], run: Run) -> str:
    threads = f"OMP_NUM_THREADS={run.threads}" if run.threads > 0 else "torch default threads"
    where = ("on the GPU" if run.device == "cuda"
             else f"each with {threads}, on cores shared with other jobs: wall times are those of a busy machine")
    lines = [
        SECTION_START,
        f"## Recipes: {'quick run (numbers mean little)' if run.quick else 'full run'}, {date.today()}, "
        f"{run.minutes:.1f} min",
        "",
        f"{machine_line(run.device).split(', torch intra-op')[0]}; {run.jobs} training runs at a time, {where}; "
        "EER and minDCF do not depend on the load.",
        "",
        f"Built-in corpus at the demo's size (24 dev speakers for training, 8 test speakers, 1,056 trials of "
        f"veri_test.txt), seeds 0-{run.seeds - 1} of each row (mean ± standard deviation over the seeds). The cell "
        "rows at the size of exps/demo/scratch_veri.yaml (C 16, 4 layers, 1-s crops, batch 16, 20 epochs), the "
        "ResNet rows 10 epochs; paper: the demo configs (spectrogram, softmax with label smoothing, average "
        "pooling, Adam, cosine); modern (today): exps/demo/modern_*.yaml (fbank, AAM with a linear margin "
        "warm-up, noise and reverberation p 0.3 each, independently); anchors': exps/demo/anchors_*.yaml "
        "(Kaldi fbank, one of noise or reverberation with total p 0.6, AAM with the exponential margin schedule, "
        "SGD with Nesterov momentum, weight decay, warm-up and exponential decay, AS-norm with the training mean "
        "subtracted, the time-keeping stem for the cell) with the head and learning rates chosen below; "
        "\"optimiser chosen\": the same with Adam among the candidates. Last epoch's scores; AS-norm over the 24 "
        "training speakers' mean embeddings, top 10.",
        "",
        "| Network | Recipe | EER (%) | minDCF(0.01) | EER AS-norm (%) | minDCF(0.01) AS-norm | "
        "EER AS-norm / paper's EER | Parameters | Wall time per run (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    paper = {recipe.network: runs for recipe, runs in results.items() if recipe.label == "paper"}
    for recipe, runs in results.items():
        label = f"{recipe.label}: {chosen[recipe]}" if recipe.anchors else recipe.label
        lines.append(
            f"| {recipe.network} | {label} | {_spread([r['eer'] for r in runs])} | "
            f"{_spread([r['min_dcf_0.01'] for r in runs])} | {_spread([r['eer_asnorm'] for r in runs])} | "
            f"{_spread([r['min_dcf_0.01_asnorm'] for r in runs])} | "
            f"{_mean(runs, 'eer_asnorm') / _mean(paper[recipe.network], 'eer'):.2f}x | {runs[0]['parameters']:,} | "
            f"{_mean(runs, 'wall_seconds'):.0f} |")
    lines += ["", "Goals (means over the seeds):", ""]
    cell_modern = next(_mean(runs, "eer_asnorm") for recipe, runs in results.items()
                       if recipe.network == CELL and recipe.label == MODERN)
    for recipe, runs in results.items():
        if not recipe.anchors:
            continue
        ratio = _mean(runs, "eer_asnorm") / _mean(paper[recipe.network], "eer")
        lines.append(f"- {recipe.network}, {recipe.label} (AS-norm): {ratio:.2f}x the paper recipe's EER, goal "
                     f"<= {GOAL}x: {'met' if ratio <= GOAL else 'not met'}.")
        if recipe.network == RESNET34:
            resnet = _mean(runs, "eer_asnorm")
            lines.append(f"- ResNet-34, {recipe.label} ({resnet:.2f} %, AS-norm) against the cell under today's "
                         f"modern recipe ({cell_modern:.2f} %): {'no worse' if resnet <= cell_modern else 'worse'}.")
    lines += ["",
              f"The anchors' demo head and learning rates, chosen on held-apart trials (veri_test.txt of a second "
              f"corpus, generated with seed {HELD_APART_SEED}: other speakers; EER with AS-norm, mean ± standard "
              f"deviation over training seeds 0-{run.choice_seeds - 1}; the lowest mean is chosen), each network "
              "on its own runs:", "",
              "| Network | Head, optimiser and learning rate | EER AS-norm (%) held apart | Chosen by |",
              "|---|---|---|---|"]
    for network, by_candidate in choice.items():
        for candidate, runs in by_candidate.items():
            rows = [recipe.label for recipe in chosen if recipe.network == network and chosen[recipe] == candidate]
            lines.append(f"| {network} | {candidate} | {_spread([r['eer_asnorm'] for r in runs])} | "
                         f"{', '.join(rows)} |")
    if ablation:
        lines += ["", "Each part of today's modern recipe put back into the anchors' recipe with SGD in turn, on the "
                  f"held-apart trials (seeds 0-{run.seeds - 1}, mean ± standard deviation): a part whose return "
                  "lowers the EER is one the anchors' recipe loses on at this size.", "",
                  "| Network | Anchors' recipe, with | EER (%) held apart | EER AS-norm (%) held apart | "
                  "Change of the mean AS-norm EER |", "|---|---|---|---|---|"]
        for network, by_label in ablation.items():
            base = _mean(by_label[ANCHORS_CHOSEN], "eer_asnorm")
            for label, runs in by_label.items():
                change = _mean(runs, "eer_asnorm") - base
                lines.append(f"| {network} | {label} | {_spread([r['eer'] for r in runs])} | "
                             f"{_spread([r['eer_asnorm'] for r in runs])} | "
                             f"{'' if label == ANCHORS_CHOSEN else f'{change:+.2f}'} |")
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
    parser.add_argument("--choice_seeds", type=int, default=1,
                        help="training seeds of each held-apart candidate; the lowest mean is chosen")
    parser.add_argument("--ablation", action="store_true",
                        help="also each part of today's modern recipe put back into the anchors', on the held-apart "
                             "trials with --seeds seeds")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="DEVICE of the training runs")
    parser.add_argument("--workdir", help="folder for the corpora and the runs (default: a temporary folder)")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of the training runs (0: torch's default, one per core)")
    args = parser.parse_args()
    if args.seeds < 1 or args.choice_seeds < 1 or args.jobs < 1:
        parser.error("--seeds, --choice_seeds and --jobs must be at least 1")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda, but torch sees no CUDA device here")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        corpus, held_apart, augmentation = prepare(workdir)
        lane = Lane(augmentation, workdir, args.quick, args.threads, args.device)
        anchors = [recipe for recipe in RECIPES if recipe.anchors]
        # One set of candidate runs per network, which both of its anchors' rows choose from.
        choosers = list({recipe.network: recipe for recipe in anchors}.values())
        choice_jobs = [Job(recipe, seed, held_apart, overrides, held_apart_name(recipe.network, index, seed))
                       for seed in range(args.choice_seeds) for recipe in choosers
                       for index, overrides in enumerate(CANDIDATES.values())]
        measured = run_all(choice_jobs, lane, args.jobs)
        choice: dict[str, dict[str, list[dict]]] = {}
        for job, metrics in zip(choice_jobs, measured):
            candidate = next(name for name, overrides in CANDIDATES.items() if overrides == job.extra)
            choice.setdefault(job.recipe.network, {}).setdefault(candidate, []).append(metrics)
        chosen = choose(anchors, choice)
        # Seed by seed, so that an interrupted benchmark has the same seeds of every row.
        jobs = [Job(recipe, seed, corpus, overrides, f"{name}-seed{seed}") for seed in range(args.seeds)
                for recipe in RECIPES for overrides, name in [_anchors_choice(recipe, chosen)]]
        measured = run_all(jobs, lane, args.jobs)
        with_sgd = [recipe for recipe in anchors if recipe.candidates == SGD_CANDIDATES]
        ablation = run_ablation(with_sgd, chosen, held_apart, args.seeds, lane, args.jobs) if args.ablation else {}
    results: dict[Recipe, list[dict]] = {}
    for job, metrics in zip(jobs, measured):
        results.setdefault(job.recipe, []).append(metrics)
    section = table(results, choice, chosen, ablation, Run(args.seeds, args.choice_seeds, args.quick,
                                                           (time.perf_counter() - started) / 60, args.threads,
                                                           args.jobs, args.device))
    print(section)
    write_section(Path(args.output), section, SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_main(main, (OutputError,))
