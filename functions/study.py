"""Does the search pay off? K searched cells, K random cells of the same space and the paper's cell, each trained
from scratch with the same config and evaluated alike (nas_study.py).

Every member is a cell; its stages (the search, for a searched cell; one training per task) run the entry
scripts as subprocesses, one after the other, each with its own OUTPUT_DIR under `<study>/<member>/<stage>/`.
The state of the study is on disk: a stage whose run folder holds `results.json` is done and skipped, one with a
checkpoint continues with the scripts' exact resume (`--load_path`), so rerunning the study command resumes it;
a stage that fails is recorded as failed and the study goes on with the next member. Each member's record is
its own file (`<member>/member.json`), so members may also run in separate processes or on separate machines
(`--members`) sharing the study folder; study.md, study.json and study.png gather whatever is on disk.
"""
from __future__ import annotations

import ctypes
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

from yacs.config import CfgNode

from functions.experiment import load_config
from functions.plots import plot_study
from models.genotypes import AUTOSPEECH, genotype_to_text
from models.random_cells import random_genotype
from models.search_spaces import SEARCH_SPACES
from utils.cli import EXIT_INTERRUPTED, EXIT_TERMINATED
from utils.config import STUDY_RANGES, ConfigError, get_default_study_config, update_config
from utils.files import ensure_writable_dir, write_text_atomically
from utils.run_logging import create_logger, get_logger

REPO = Path(__file__).resolve().parents[1]
# Task -> (training script, logs folder the script writes its run to).
TASK_SCRIPTS = {
    "identification": ("train_identification.py", "logs_scratch"),
    "verification": ("train_verification.py", "logs_scratch"),
}
ORIGINS = ("searched", "random", "paper")
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


def _only_run(folder: Path) -> Path | None:
    runs = sorted(path for path in folder.glob("*/") if path.is_dir()) if folder.is_dir() else []
    return runs[-1] if runs else None


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
    run = _only_run(folder / logs_kind)
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
    started = time.time()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        child = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent)
        try:
            code = child.wait()
        finally:
            if child.poll() is None:  # the study itself was interrupted: let the stage save its state
                child.send_signal(signal.SIGTERM)
                child.wait()
    record["seconds"] += time.time() - started
    run = _only_run(folder / logs_kind)
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
        stage_folder = folder / task
        stage = run_stage(stage_folder, logs_kind, script, cfg[f"{task.upper()}_CFG"],
                          ["--text_arch", record["genotype"], *overrides, "OUTPUT_DIR", str(stage_folder),
                           *cfg.TRAIN_OPTS])
        entry = {key: stage.get(key) for key in ("status", "seconds", "run", "error")}
        if stage["status"] == "done":
            entry.update(_task_metrics(task, stage["results"]))
            record.setdefault("parameters", stage["results"]["parameters"])
        else:
            errors.append(f"{task} failed: {stage['error']}")
        record["tasks"][task] = entry
    record["status"] = "failed" if errors else "done"
    if errors:
        record["error"] = "; ".join(errors)
    return record


def member_seconds(record: dict) -> float:
    stages = [record.get("search") or {}, *record.get("tasks", {}).values()]
    return sum(stage.get("seconds") or 0.0 for stage in stages)


# ----- the report -----
METRICS = (("identification", "top1", "Top-1 (%)"), ("verification", "eer", "EER (%)"),
           ("verification", "min_dcf_0.01", "minDCF(0.01)"))


def _spread(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summarise(study: Study, records: list[dict]) -> dict:
    """Per origin and metric: the finished members' values, their mean and sample standard deviation."""
    summary: dict = {}
    for origin in ORIGINS:
        for task, metric, _ in METRICS:
            if task not in study.cfg.TASKS:
                continue
            values = [r["tasks"][task][metric] for r in records
                      if r["origin"] == origin and r.get("tasks", {}).get(task, {}).get(metric) is not None]
            if values:
                mean, std = _spread(values)
                summary.setdefault(origin, {})[metric] = {"values": values, "mean": mean, "std": std}
    return summary


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def study_table(study: Study, records: list[dict], summary: dict) -> str:
    metrics = [(task, metric, label) for task, metric, label in METRICS if task in study.cfg.TASKS]
    header = ["Cell", "Origin", "Parameters", *(label for _, _, label in metrics), "Time (s)", "Status"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in records:
        values = [_cell(record.get("tasks", {}).get(task, {}).get(metric), 3 if "dcf" in metric else 2)
                  for task, metric, _ in metrics]
        parameters = f"{record['parameters']:,}" if record.get("parameters") else "-"
        status = record.get("status", "not run")
        if status == "failed":
            status = f"failed: {record.get('error', '')}".replace("|", "/")
        rows.append(f"| {record['name']} | {record['origin']} | {parameters} | {' | '.join(values)} | "
                    f"{member_seconds(record):.0f} | {status} |")
    lines = ["\n".join(rows), "", "Mean ± standard deviation over the finished cells of each origin:", ""]
    summary_header = ["Origin", "Cells", *(label for _, _, label in metrics)]
    lines += ["| " + " | ".join(summary_header) + " |", "|" + "---|" * len(summary_header)]
    for origin in ORIGINS:
        if origin not in summary:
            continue
        stats = summary[origin]
        count = max(len(stats[m]["values"]) for m in stats)
        cells = [(f"{stats[metric]['mean']:.{3 if 'dcf' in metric else 2}f} ± "
                  f"{stats[metric]['std']:.{3 if 'dcf' in metric else 2}f}") if metric in stats else "-"
                 for _, metric, _ in metrics]
        lines.append(f"| {origin} | {count} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def write_report(study: Study) -> dict:
    """study.md, study.json and study.png from every member record on disk (each written atomically)."""
    records = []
    for member in study.members:
        path = study.root / member.name / MEMBER_FILE
        if path.exists():
            records.append(json.loads(path.read_text()))
        else:
            records.append({"name": member.name, "origin": member.origin, "seed": member.seed,
                            "status": "not run", "tasks": {}})
    summary = summarise(study, records)
    report = {"config": json.loads(json.dumps(study.cfg)), "space": study.space, "members": records,
              "summary": summary}
    write_text_atomically(study.root / "study.json", json.dumps(report, indent=2) + "\n")
    genotypes = "\n".join(f"- {r['name']}: `{r['genotype']}`" for r in records if r.get("genotype"))
    markdown = (
        f"# Does the search pay off?\n\nSearch config `{study.cfg.SEARCH_CFG}` (space {study.space}), "
        f"tasks {', '.join(study.cfg.TASKS)}, data `{study.cfg.DATA_DIR}`. Identification: Top-1 on the test "
        "partition of the checkpoint selected on `val`; verification: EER and minDCF of the last epoch. Time: "
        "search and training, wall clock.\n\n"
        f"{study_table(study, records, summary)}\nCells:\n\n{genotypes}\n"
    )
    write_text_atomically(study.root / "study.md", markdown)
    panels = {label: {origin: summary[origin][metric]["values"] for origin in ORIGINS
                      if metric in summary.get(origin, {})}
              for task, metric, label in METRICS if task in study.cfg.TASKS}
    if any(panels.values()):
        plot_study(panels, study.root / "study.png", f"Searched, random and the paper's cells ({study.space})")
    return report


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
            _write_record(study.root / member.name / MEMBER_FILE, record)
            logger.info(f"  {record['status']}{': ' + record['error'] if record.get('error') else ''}"
                        f" ({member_seconds(record):.0f} s)")
            if record["status"] == "failed":
                failed.append(member.name)
            write_report(study)
    finally:
        write_report(study)
    logger.info(f"report: {study.root / 'study.md'}, {study.root / 'study.json'}, {study.root / 'study.png'}")
    if failed:
        print(f"error: {len(failed)} of {len(members)} member(s) failed ({', '.join(failed)}); see "
              f"{study.root / 'study.md'}", file=sys.stderr)
        return 1
    return 0
