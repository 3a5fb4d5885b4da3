"""nas_study.py on a tiny corpus: the table holds every member, a killed study resumes, a failure is reported."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from argparse import Namespace
from pathlib import Path

import pytest

from functions.study import load_study, run_study
from models.genotypes import AUTOSPEECH, genotype_to_text
from models.random_cells import random_genotype
from tests.conftest import PYTHON, REPO, run_script
from tests.test_scripts import one_error_line
from utils.config import ConfigError

TINY = ["DATASET.PARTIAL_N_FRAMES", "50", "MODEL.INIT_CHANNELS", "4", "MODEL.LAYERS", "2", "VAL_FREQ", "1"]


def study_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    # The search fails inside search.py (a batch larger than the corpus), after the study's own checks.
    search_opts = [*TINY, "TRAIN.BATCH_SIZE", "1000"]
    train_opts = [*TINY, "TRAIN.BATCH_SIZE", "4", "TRAIN.END_EPOCH", "4", "TRAIN.MAX_STEPS_PER_EPOCH", "2"]
    return ["nas_study.py", "--cfg", "exps/demo/study.yaml", "DATA_DIR", str(corpus), "OUTPUT_DIR", str(out),
            "SEARCHES", "1", "RANDOM_CELLS", "1", "SEED", "4",
            "SEARCH_OPTS", repr(search_opts), "TRAIN_OPTS", repr(train_opts), *extra]


def commands_run(stage: Path) -> list[str]:
    return [line for line in (stage / "output.log").read_text().splitlines() if line.startswith("$ ")]


@pytest.fixture(scope="module")
def study(tiny_corpus, tmp_path_factory):
    """Run 1 is killed (SIGKILL) while the paper's cell trains; run 2 finishes the study."""
    out = tmp_path_factory.mktemp("study")
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([PYTHON, *study_args(tiny_corpus, out)], cwd=REPO, env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paper_run = out / "paper" / "identification" / "logs_scratch"
    deadline = time.time() + 900  # generous: a shared machine may be many times slower than a quiet one
    while time.time() < deadline and not list(paper_run.glob("*/Model/checkpoint_last.pth")):
        assert driver.poll() is None, "the study ended before it could be killed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # The member, told by the kernel that its parent died, saves its state and exits.
    log = out / "paper" / "identification" / "output.log"
    while time.time() < deadline and "(SIGTERM)" not in log.read_text() and "by SIGTERM" not in log.read_text():
        time.sleep(0.2)
    first_results = (out / "random_4" / "identification").glob("logs_scratch/*/results.json")
    finished_before = {path: path.stat().st_mtime_ns for path in first_results}
    second = run_script(*study_args(tiny_corpus, out), check=False, timeout=900)
    return out, second, finished_before


def test_study_writes_a_table_with_every_member_and_its_origin(study):
    out, _, _ = study
    report = json.loads((out / "study.json").read_text())
    assert [m["name"] for m in report["members"]] == ["searched_4", "random_4", "paper"]
    table = (out / "study.md").read_text()
    for name, origin in (("searched_4", "searched"), ("random_4", "random"), ("paper", "paper")):
        assert any(line.startswith(f"| {name} | {origin} |") for line in table.splitlines())
    members = {m["name"]: m for m in report["members"]}
    assert members["random_4"]["genotype"] == genotype_to_text(random_genotype("s2", 4))
    assert members["paper"]["genotype"] == genotype_to_text(AUTOSPEECH)
    for name in ("random_4", "paper"):
        assert members[name]["status"] == "done" and 0 <= members[name]["tasks"]["identification"]["top1"] <= 100
    assert report["summary"]["paper"]["top1"]["values"] == [members["paper"]["tasks"]["identification"]["top1"]]
    assert (out / "study.png").read_bytes().startswith(b"\x89PNG")


def test_a_failed_search_is_reported_as_failed_not_dropped(study):
    out, second, _ = study
    assert second.returncode == 1 and "1 of 3 member(s) failed (searched_4)" in second.stderr
    member = json.loads((out / "searched_4" / "member.json").read_text())
    assert member["status"] == "failed" and "fewer than one global batch" in member["error"]
    row = next(line for line in (out / "study.md").read_text().splitlines() if line.startswith("| searched_4 "))
    assert "failed: search failed" in row


def test_report_only_rewrites_the_report_from_the_members_on_disk(study, tiny_corpus):
    out, _, _ = study
    table = (out / "study.md").read_text()
    (out / "study.md").unlink()
    arguments = study_args(tiny_corpus, out)
    assert run_study(Namespace(cfg=arguments[2], opts=arguments[3:], members=None, report_only=True)) == 0
    assert (out / "study.md").read_text() == table


def test_a_killed_study_skips_finished_members_and_continues_the_interrupted_one(study):
    out, _, finished_before = study
    assert finished_before and all(path.stat().st_mtime_ns == stamp for path, stamp in finished_before.items())
    assert len(commands_run(out / "random_4" / "identification")) == 1
    paper = commands_run(out / "paper" / "identification")
    assert len(paper) == 2 and "--load_path" in paper[1] and "--load_path" not in paper[0]
    run = next((out / "paper" / "identification" / "logs_scratch").iterdir())
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
