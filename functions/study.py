"""Does the search pay off? K searched cells, K random cells of the same space and the paper's cell, each trained
from scratch with the same config and the same training seeds, and evaluated alike (nas_study.py).

Every member is a cell; its stages (the search, for a searched cell; one training per task and seed) run the
entry scripts as subprocesses, one after the other, each with its own OUTPUT_DIR under `<study>/<member>/<stage>/`.
The state of the study is on disk: a stage whose run folder holds `results.json` is done and skipped, one with a
checkpoint continues with the scripts' exact resume (`--load_path`), so rerunning the study command resumes it;
a stage that fails is recorded as failed and the study goes on with the next one. Each member's record is
its own file (`<member>/member.json`), so members may also run in separate processes or on separate machines
(`--members`) sharing the study folder; after its search, a searched member also records its supernet's estimate
of every random cell (`<member>/ranking.json`, functions/supernet_ranking.py). study.md, study.json and the
pictures gather whatever is on disk (functions/study_report.py).
"""
from __future__ import annotations

import ctypes
import json
import shutil
import signal
import sys
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

from yacs.config import CfgNode

from functions import study_report
from functions.experiment import KNOWN_ERRORS, load_config
from functions.study_report import METRIC_NAMES
from functions.supernet_ranking import supernet_estimates
from models.genotypes import AUTOSPEECH, genotype_to_text
from models.random_cells import random_genotype
from models.search_spaces import SEARCH_SPACES
from utils.cli import EXIT_INTERRUPTED, EXIT_TERMINATED
from utils.config import STUDY_RANGES, ConfigError, get_default_study_config, update_config
from utils.files import ensure_writable_dir, write_text_atomically
from utils.run_logging import create_logger, get_logger
from utils.script_runs import newest_run, run_logged

REPO = Path(__file__).resolve().parents[1]
# Task -> (training script, logs folder the script writes its run to).
TASK_SCRIPTS = {
    "identification": ("train_identification.py", "logs_scratch"),
    "verification": ("train_verification.py", "logs_scratch"),
}
MEMBER_FILE = "member.json"


class StudyInterrupted(Exception):
    """A member stopped by Ctrl-C or SIGTERM; its state is saved and a rerun continues it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Member:
    name: str
    origin: str
    seed: int | None


@dataclass(frozen=True)
class Study:
    cfg: CfgNode
    root: Path
    space: str

    @property
    def members(self) -> list[Member]:
        seeds = [self.cfg.SEED + k for k in range(max(self.cfg.SEARCHES, self.cfg.RANDOM_CELLS))]
        members = [Member(f"searched_{seed}", "searched", seed) for seed in seeds[: self.cfg.SEARCHES]]
        members += [Member(f"random_{seed}", "random", seed) for seed in seeds[: self.cfg.RANDOM_CELLS]]
        if self.cfg.PAPER_CELL:
            members.append(Member("paper", "paper", None))
        return members


# ----- configuration -----
def _script_config(path: str, data_dir: str, opts: list[str], expected_model: str, what: str) -> CfgNode:
    """The config a member's script will run with, checked as that script checks it, before anything runs."""
    try:
        cfg = load_config(Namespace(cfg=path, opts=[*opts, "DATASET.DATA_DIR", data_dir]))
    except ConfigError as error:
        raise ConfigError(f"{what} {path}: {error}") from None
    if cfg.MODEL.NAME != expected_model:
        raise ConfigError(f"{what} {path} has MODEL.NAME '{cfg.MODEL.NAME}'; a study needs '{expected_model}' there")
    return cfg


def load_study(args) -> Study:
    cfg = update_config(get_default_study_config(), args, STUDY_RANGES, ())
    seeds = list(cfg.TRAIN_SEEDS)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"TRAIN_SEEDS must name each training seed once, got {seeds}")
    for seed in seeds:
        if not isinstance(seed, int) or seed not in STUDY_RANGES["SEED"]:
            raise ConfigError(f"TRAIN_SEEDS: each seed must be an integer {STUDY_RANGES['SEED']}, got {seed}")
    tasks = list(cfg.TASKS)
    if not tasks or len(set(tasks)) != len(tasks):
        raise ConfigError(f"TASKS must name each task once, got {tasks}; valid names: {', '.join(TASK_SCRIPTS)}")
    for task in tasks:
        if task not in TASK_SCRIPTS:
            raise ConfigError(f"unknown task '{task}' in TASKS; valid names: {', '.join(TASK_SCRIPTS)}")
    if cfg.SEARCH_SPACE and cfg.SEARCH_SPACE not in SEARCH_SPACES:
        raise ConfigError(f"unknown SEARCH_SPACE '{cfg.SEARCH_SPACE}'; valid names: {', '.join(SEARCH_SPACES)}")
    if not cfg.DATA_DIR:
        raise ConfigError("DATA_DIR is not set; add `DATA_DIR /path/to/VoxCeleb1` to the command")
    search = _script_config(cfg.SEARCH_CFG, cfg.DATA_DIR, _search_opts(cfg), "model_search", "SEARCH_CFG")
    for task in tasks:
        key = f"{task.upper()}_CFG"
        _script_config(cfg[key], cfg.DATA_DIR, list(cfg.TRAIN_OPTS), "model", key)
    # The stages run from the repository root: every path they get is made absolute here.
    cfg.defrost()
    for key in ("SEARCH_CFG", "IDENTIFICATION_CFG", "VERIFICATION_CFG", "DATA_DIR"):
        cfg[key] = str(Path(cfg[key]).resolve())
    cfg.freeze()
    root = ensure_writable_dir(Path(cfg.OUTPUT_DIR).resolve())
    return Study(cfg, root, search.MODEL.SEARCH_SPACE)


def _search_opts(cfg: CfgNode) -> list[str]:
    space = ["MODEL.SEARCH_SPACE", cfg.SEARCH_SPACE] if cfg.SEARCH_SPACE else []
    return [*space, *cfg.SEARCH_OPTS]


# ----- running a stage -----
def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the study process dies (even by SIGKILL), so the stage saves its state
    instead of running on unattended. Linux only; elsewhere a killed study leaves its stage running."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _last_error(log: Path) -> str:
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]


def _write_record(path: Path, record: dict) -> None:
    write_text_atomically(path, json.dumps(record, indent=2) + "\n")


def run_stage(folder: Path, logs_kind: str, script: str, cfg_path: str, arguments: list[str]) -> dict:
    """Run, resume or skip `script --cfg cfg_path ARGUMENTS` with its runs in `folder`; returns the stage's
    record: status ('done' or 'failed'), seconds (over every attempt that returned), run folder, results or error."""
    record_path = folder / "stage.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"seconds": 0.0}
    record.pop("error", None)
    run = newest_run(folder / logs_kind)
    if run is not None and (run / "results.json").exists():
        return {**record, "status": "done", "run": str(run), "results": json.loads((run / "results.json").read_text())}
    command = [sys.executable, script, "--cfg", cfg_path]
    if run is not None and any((run / "Model").glob("checkpoint_*.pth")):
        command += ["--load_path", str(run)]
        get_logger().info(f"  continuing {run}")
    elif run is not None:
        shutil.rmtree(run)  # stopped before its first checkpoint: nothing in it to continue from
    command += arguments
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "output.log"
    # Interrupted while it runs, the study passes SIGTERM on, so that the stage saves its state.
    with log.open("a", encoding="utf-8") as handle:
        stage_run = run_logged(command, handle, cwd=REPO, preexec_fn=_die_with_parent)
    code = stage_run.returncode
    record["seconds"] += stage_run.wall_seconds
    run = newest_run(folder / logs_kind)
    record["run"] = str(run) if run else None
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED, -signal.SIGINT, -signal.SIGTERM):
        _write_record(record_path, record)
        exit_code = EXIT_INTERRUPTED if code in (EXIT_INTERRUPTED, -signal.SIGINT) else EXIT_TERMINATED
        raise StudyInterrupted(f"{script} in {folder} was stopped; its state is saved: rerun the study to continue",
                               exit_code)
    if code == 0 and run is not None and (run / "results.json").exists():
        _write_record(record_path, record)
        return {**record, "status": "done", "results": json.loads((run / "results.json").read_text())}
    record.update(status="failed", error=f"exit {code}: {_last_error(log)}")
    _write_record(record_path, record)
    return record


# ----- members -----
def _task_metrics(task: str, results: dict) -> dict:
    if task == "identification":
        selected = results.get("test_selected_on_val") or results["test_last"]
        return {"top1": selected["top1"], "top1_last": results["test_last"]["top1"]}
    last = results["last_epoch"]
    return {"eer": last["eer"], "min_dcf_0.01": last["min_dcf_0.01"]}


def run_member(study: Study, member: Member) -> dict:
    """The member's genotype (search, random draw or the paper's), then its training for every task."""
    cfg, folder = study.cfg, study.root / member.name
    record: dict = {"name": member.name, "origin": member.origin, "seed": member.seed, "tasks": {}}
    overrides = ["DATASET.DATA_DIR", cfg.DATA_DIR]
    if member.origin == "searched":
        stage = run_stage(folder / "search", "logs_search", "search.py", cfg.SEARCH_CFG,
                          [*overrides, "OUTPUT_DIR", str(folder / "search"), "SEED", str(member.seed),
                           *_search_opts(cfg)])
        record["search"] = {key: stage.get(key) for key in ("status", "seconds", "run", "error")}
        if stage["status"] != "done":
            record.update(status="failed", error=f"search failed: {stage['error']}")
            return record
        record["genotype"] = stage["results"]["genotype"]
    elif member.origin == "random":
        record["genotype"] = genotype_to_text(random_genotype(study.space, member.seed))
    else:
        record["genotype"] = genotype_to_text(AUTOSPEECH)
    errors = []
    for task in cfg.TASKS:
        script, logs_kind = TASK_SCRIPTS[task]
        runs = {}
        for seed in cfg.TRAIN_SEEDS:
            stage_folder = folder / task / f"seed_{seed}"
            stage = run_stage(stage_folder, logs_kind, script, cfg[f"{task.upper()}_CFG"],
                              ["--text_arch", record["genotype"], *overrides, "OUTPUT_DIR", str(stage_folder),
                               *cfg.TRAIN_OPTS, "SEED", str(seed)])
            entry = {key: stage.get(key) for key in ("status", "seconds", "run", "error")}
            if stage["status"] == "done":
                entry.update(_task_metrics(task, stage["results"]))
                record.setdefault("parameters", stage["results"]["parameters"])
            else:
                errors.append(f"{task} seed {seed} failed: {stage['error']}")
            runs[str(seed)] = entry
        record["tasks"][task] = {"seeds": runs, **_seed_means(runs)}
    record["status"] = "failed" if errors else "done"
    if errors:
        record["error"] = "; ".join(errors)
    return record


def _seed_means(runs: dict[str, dict]) -> dict:
    """Each metric's values over the finished seeds (`<metric>_values`) and their mean (`<metric>`)."""
    means = {}
    for metric in {key for entry in runs.values() for key in entry} & METRIC_NAMES:
        values = [entry[metric] for entry in runs.values() if entry.get(metric) is not None]
        means[f"{metric}_values"] = values
        means[metric] = sum(values) / len(values)
    return means


def member_seconds(record: dict) -> float:
    stages = [record.get("search") or {}]
    stages += [run for task in record.get("tasks", {}).values() for run in task.get("seeds", {}).values()]
    return sum(stage.get("seconds") or 0.0 for stage in stages)


# ----- the supernet's estimates of the random cells -----
RANKING_FILE = "ranking.json"


def rank_random_cells(study: Study, record: dict) -> dict:
    """A finished search's estimates of every random cell of the study (functions/supernet_ranking.py), kept in
    `<member>/ranking.json` and computed again only for cells it lacks."""
    path = study.root / record["name"] / RANKING_FILE
    ranking = json.loads(path.read_text()) if path.exists() else {"cells": {}}
    wanted = {m.name: random_genotype(study.space, m.seed) for m in study.members if m.origin == "random"}
    missing = {name: genotype for name, genotype in wanted.items() if name not in ranking["cells"]}
    if missing:
        ranking["cells"].update(supernet_estimates(Path(record["search"]["run"]), study.cfg.DATA_DIR, missing))
        _write_record(path, ranking)
    return ranking


def write_report(study: Study) -> dict:
    records, rankings = [], {}
    for member in study.members:
        path = study.root / member.name / MEMBER_FILE
        if path.exists():
            records.append(json.loads(path.read_text()))
        else:
            records.append({"name": member.name, "origin": member.origin, "seed": member.seed,
                            "status": "not run", "tasks": {}})
        ranking = study.root / member.name / RANKING_FILE
        if ranking.exists():
            rankings[member.name] = json.loads(ranking.read_text())
    return study_report.write_report(study.cfg, study.root, study.space, records, rankings, member_seconds)


def run_study(args) -> int:
    study = load_study(args)
    logger = create_logger(study.root / "study.log")
    wanted = set(args.members.split(",")) if getattr(args, "members", None) else None
    known = {member.name for member in study.members}
    if wanted and not wanted <= known:
        raise ConfigError(f"--members: unknown member(s) {', '.join(sorted(wanted - known))}; "
                          f"this study has {', '.join(sorted(known))}")
    if getattr(args, "report_only", False):
        write_report(study)
        logger.info(f"report from the members on disk: {study.root / 'study.md'}")
        return 0
    members = [member for member in study.members if wanted is None or member.name in wanted]
    logger.info(f"study in {study.root}: {len(members)} member(s), tasks {', '.join(study.cfg.TASKS)}")
    failed = []
    try:
        for index, member in enumerate(members, start=1):
            logger.info(f"[{index}/{len(members)}] {member.name}")
            record = run_member(study, member)
            if member.origin == "searched" and record.get("search", {}).get("status") == "done":
                try:
                    rank_random_cells(study, record)
                except (*KNOWN_ERRORS, RuntimeError) as error:
                    record["ranking_error"] = f"ranking the random cells failed: {error}"
            _write_record(study.root / member.name / MEMBER_FILE, record)
            logger.info(f"  {record['status']}{': ' + record['error'] if record.get('error') else ''}"
                        f" ({member_seconds(record):.0f} s)")
            if record["status"] == "failed":
                failed.append(member.name)
            write_report(study)
    finally:
        write_report(study)
    logger.info(f"report: {study.root / 'study.md'}, {study.root / 'study.json'}, {study.root / 'study.png'}, "
                f"{study.root / 'study_search.png'}")
    if failed:
        print(f"error: {len(failed)} of {len(members)} member(s) failed ({', '.join(failed)}); see "
              f"{study.root / 'study.md'}", file=sys.stderr)
        return 1
    return 0
