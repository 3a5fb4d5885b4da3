"""nas_study.py on a tiny corpus: every cell with every seed, the statistics (a dash for a group of one), the
search's estimates and diagnostics, a killed study resumes, a failed member is named."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from argparse import Namespace
from pathlib import Path

import pytest

from functions.study import load_study, run_study
from models.genotypes import genotype_to_text
from models.random_cells import random_genotype
from tests.conftest import PYTHON, REPO, run_script
from tests.test_scripts import one_error_line
from utils.config import ConfigError

TINY = ["DATASET.PARTIAL_N_FRAMES", "50", "MODEL.INIT_CHANNELS", "4", "MODEL.LAYERS", "2", "VAL_FREQ", "1"]
SEEDS = (0, 1)


def study_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    search_opts = [*TINY, "TRAIN.BATCH_SIZE", "2", "TRAIN.END_EPOCH", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "2",
                   "VAL_FREQ", "100"]
    train_opts = [*TINY, "TRAIN.BATCH_SIZE", "4", "TRAIN.END_EPOCH", "4", "TRAIN.MAX_STEPS_PER_EPOCH", "2"]
    return ["nas_study.py", "--cfg", "exps/demo/study.yaml", "DATA_DIR", str(corpus), "OUTPUT_DIR", str(out),
            "SEARCHES", "1", "RANDOM_CELLS", "2", "PAPER_CELL", "False", "SEED", "4", "TRAIN_SEEDS", repr(list(SEEDS)),
            "SEARCH_OPTS", repr(search_opts), "TRAIN_OPTS", repr(train_opts), *extra]


def commands_run(stage: Path) -> list[str]:
    return [line for line in (stage / "output.log").read_text().splitlines() if line.startswith("$ ")]


@pytest.fixture(scope="module")
def study(tiny_corpus, tmp_path_factory):
    """A small study (a search, two random cells, two training seeds each): run 1 is killed (SIGKILL) while the
    last cell's second seed trains; run 2 finishes the study."""
    out = tmp_path_factory.mktemp("study")
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([PYTHON, *study_args(tiny_corpus, out)], cwd=REPO, env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last_stage = out / "random_5" / "identification" / "seed_1"
    deadline = time.time() + 900  # generous: a shared machine may be many times slower than a quiet one
    while time.time() < deadline and not list(last_stage.glob("logs_scratch/*/Model/checkpoint_last.pth")):
        assert driver.poll() is None, "the study ended before it could be killed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # The member, told by the kernel that its parent died, saves its state and exits.
    log = last_stage / "output.log"
    while time.time() < deadline and "(SIGTERM)" not in log.read_text() and "by SIGTERM" not in log.read_text():
        time.sleep(0.2)
    first_results = (out / "random_4" / "identification").glob("seed_*/logs_scratch/*/results.json")
    finished_before = {path: path.stat().st_mtime_ns for path in first_results}
    second = run_script(*study_args(tiny_corpus, out), check=False, timeout=900)
    return out, second, finished_before


def test_study_trains_every_cell_with_every_seed_and_reports_them(study):
    out, second, _ = study
    assert second.returncode == 0, second.stderr
    report = json.loads((out / "study.json").read_text())
    assert [m["name"] for m in report["members"]] == ["searched_4", "random_4", "random_5"]
    members = {m["name"]: m for m in report["members"]}
    assert members["random_4"]["genotype"] == genotype_to_text(random_genotype("s2", 4))
    for name, member in members.items():
        runs = member["tasks"]["identification"]["seeds"]
        assert member["status"] == "done" and sorted(runs) == ["0", "1"]
        values = [runs[str(seed)]["top1"] for seed in SEEDS]
        assert all(0 <= value <= 100 for value in values)
        assert member["tasks"]["identification"]["top1"] == pytest.approx(sum(values) / 2)
        for seed in SEEDS:  # each seed is the training's own SEED
            config = next((out / name / "identification" / f"seed_{seed}").glob("logs_scratch/*/config.yaml"))
            assert f"SEED: {seed}" in config.read_text().splitlines()
    table = (out / "study.md").read_text()
    for name, origin in (("searched_4", "searched"), ("random_4", "random"), ("random_5", "random")):
        assert any(line.startswith(f"| {name} | {origin} |") for line in table.splitlines())
    assert (out / "study.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "study_search.png").read_bytes().startswith(b"\x89PNG")


def test_groups_of_one_cell_show_a_dash_and_the_random_cells_get_variance_components(study):
    out, _, _ = study
    report = json.loads((out / "study.json").read_text())
    top1 = report["summary"]["top1"]
    searched, random = top1["groups"]["searched"], top1["groups"]["random"]
    assert searched["cells"] == 1 and searched["std"] is None and searched["interval"] is None
    assert random["cells"] == 2 and random["interval"][0] <= random["mean"] <= random["interval"][1]
    comparison = top1["searched_minus_random"]
    assert comparison["welch_t"] is None and comparison["p"] is None
    assert comparison["difference"] == pytest.approx(searched["mean"] - random["mean"])
    components = top1["variance_components"]
    assert components["cells"] == 2 and components["runs"] == 4 and components["seed_std"] >= 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in (out / "study.md").read_text().splitlines()
            if line.startswith("| searched |")}
    assert rows["searched"].startswith(f"| searched | 1 | {searched['mean']:.2f} | - | - |")
    answer = top1["answer"]  # one searched cell: no test and no interval, only its percentile can answer
    assert not answer["shows_searched_better"] and not answer["bounds_difference"]
    width = top1["percentiles"]["searched_4"]["interval"][1] - top1["percentiles"]["searched_4"]["interval"][0]
    assert answer["percentile_widths"] == {"searched_4": pytest.approx(width)}
    assert answer["answered"] == answer["places_each_searched_cell"] == (width <= 25)
    verdict = "yes" if answer["answered"] else "no"
    assert f"Does the study answer its question? **{verdict}**" in (out / "study.md").read_text()


def test_the_search_estimates_each_random_cell_and_logs_its_diagnostics(study):
    out, _, _ = study
    ranking = json.loads((out / "searched_4" / "ranking.json").read_text())["cells"]
    assert sorted(ranking) == ["random_4", "random_5"]
    for estimate in ranking.values():
        # 16 edges, 8 operations: a uniform supernet gives each cell 16 log(1/8).
        assert estimate["log_probability"] == pytest.approx(16 * math.log(1 / 8), abs=0.1)
        assert 0 <= estimate["val_top1"] <= 100
    report = json.loads((out / "study.json").read_text())
    assert report["summary"]["top1"]["ranking"]["searched_4"]["val_top1"]["tau"] is None  # two cells: no tau
    rows = report["search_diagnostics"]["searches"]["searched_4"]
    assert [row["epoch"] for row in rows] == [0, 1] and rows[-1]["arch_steps"] == 4
    # Two layers are two reduction cells: only the reduction cell's alphas are stepped.
    assert all(0 < row["arch_spread_reduce"] < 0.1 and 0 <= row["arch_changed_reduce"] <= 14 for row in rows)
    # Adam moves an alpha by at most about its learning rate per step (weight decay adds a little).
    assert all(0 < row["arch_move_reduce"] <= 1.5 and row["arch_move_normal"] == 0 for row in rows)


def test_report_only_rewrites_the_report_from_the_members_on_disk(study, tiny_corpus):
    out, _, _ = study
    table = (out / "study.md").read_text()
    (out / "study.md").unlink()
    arguments = study_args(tiny_corpus, out)
    assert run_study(Namespace(cfg=arguments[2], opts=arguments[3:], members=None, report_only=True)) == 0
    assert (out / "study.md").read_text() == table


def test_a_failed_member_is_named_and_the_others_still_reported(study, tiny_corpus, tmp_path):
    out, _, _ = study
    copy = tmp_path / "study"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.pth"))
    # A third random cell whose training fails inside train_identification.py (a batch larger than the corpus).
    arguments = study_args(tiny_corpus, copy, "RANDOM_CELLS", "3")
    train_opts = arguments.index("TRAIN_OPTS") + 1
    arguments[train_opts] = arguments[train_opts].replace("'TRAIN.BATCH_SIZE', '4'", "'TRAIN.BATCH_SIZE', '1000'")
    failing = run_script(*arguments[:3], "--members", "random_6", *arguments[3:], check=False, timeout=300)
    assert failing.returncode == 1 and "1 of 1 member(s) failed (random_6)" in failing.stderr
    report = json.loads((copy / "study.json").read_text())
    assert list(report["failed"]) == ["random_6"] and "fewer than one global batch" in report["failed"]["random_6"]
    assert report["summary"]["top1"]["groups"]["random"]["cells"] == 2
    table = (copy / "study.md").read_text()
    assert f"- random_6: {report['failed']['random_6']}" in table
    assert any(line.startswith("| random_6 | random | - |") and line.endswith("| failed |")
               for line in table.splitlines())


def test_a_killed_study_skips_finished_members_and_continues_the_interrupted_one(study):
    out, _, finished_before = study
    assert finished_before and all(path.stat().st_mtime_ns == stamp for path, stamp in finished_before.items())
    assert len(commands_run(out / "random_4" / "identification" / "seed_0")) == 1
    resumed = commands_run(out / "random_5" / "identification" / "seed_1")
    assert len(resumed) == 2 and "--load_path" in resumed[1] and "--load_path" not in resumed[0]
    run = next((out / "random_5" / "identification" / "seed_1" / "logs_scratch").iterdir())
    epochs = [json.loads(line)["epoch"] for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]


@pytest.mark.parametrize("override,message", [
    (["SEARCH_CFG", "exps/demo/scratch_iden.yaml"], "has MODEL.NAME 'model'; a study needs 'model_search'"),
    (["RANDOM_CELLS", "0"], "RANDOM_CELLS must be at least 1"),
    (["SEARCHES", "-1"], "SEARCHES must be at least 1"),
    (["TASKS", "['identification', 'speaking']"], "unknown task 'speaking'"),
    (["SEARCH_SPACE", "s4"], "unknown SEARCH_SPACE 's4'; valid names: s1, s2, s3"),
    (["SEARCH_OPTS", "['MODEL.TAU_MIN', '2.0']"], "MODEL.TAU_MIN must be at most MODEL.TAU_MAX (1), got 2"),
    (["SEARCH_OPTS", "['MODEL.TAU_MIN', '0.0']"], "MODEL.TAU_MIN must be greater than 0, got 0"),
    (["SEARCHESS", "3"], "unknown config key SEARCHESS (did you mean SEARCHES"),
    (["TRAIN_SEEDS", "[]"], "TRAIN_SEEDS must name each training seed once, got []"),
    (["TRAIN_SEEDS", "[1, 1]"], "TRAIN_SEEDS must name each training seed once, got [1, 1]"),
    (["TRAIN_SEEDS", "[-1]"], "TRAIN_SEEDS: each seed must be an integer in [0, 4294967295], got -1"),
    (["SEARCH_OPTS", "['TRAIN.ARCH_WARMUP_EPOCHS', '2']"],
     "TRAIN.ARCH_WARMUP_EPOCHS must be below TRAIN.END_EPOCH (2), got 2"),
])
def test_bad_study_configs_are_refused_before_anything_runs(override, message, tiny_corpus, tmp_path):
    args = Namespace(cfg="exps/demo/study.yaml",
                     opts=["DATA_DIR", str(tiny_corpus), "OUTPUT_DIR", str(tmp_path / "study"), *override])
    with pytest.raises(ConfigError) as error:
        load_study(args)
    assert message in str(error.value)
    assert not (tmp_path / "study").exists()


def test_a_bad_study_config_is_one_line_and_exit_status_2(tiny_corpus, tmp_path):
    process = run_script("nas_study.py", "--cfg", "exps/demo/study.yaml", "DATA_DIR", str(tiny_corpus),
                         "OUTPUT_DIR", str(tmp_path / "study"), "TASKS", "['speaking']", check=False)
    assert process.returncode == 2
    assert one_error_line(process) == "error: unknown task 'speaking' in TASKS; valid names: identification, verification"
