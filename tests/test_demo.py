"""demo.py's lanes: a step's output goes to its lane's log, its timing to the console and the demo's log, and a
step that fails in one lane stops the step running in the other."""
from __future__ import annotations

import sys
import time

import pytest

from demo import RECORD_END, RECORD_START, Lane, StepFailed, run_side_by_side
from utils.files import write_section

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_step_logs_its_output_in_its_lane_and_its_timing_in_the_demo_log(tmp_path, capsys):
    lane = Lane("cell", tmp_path / "cell.log", tmp_path / "demo.log", threads=1)
    lane.run([sys.executable, "-c", "import os; print('threads', os.environ['OMP_NUM_THREADS'])"])
    assert "threads 1" in (tmp_path / "cell.log").read_text()
    summary = (tmp_path / "demo.log").read_text()
    assert "[cell] $ " in summary and "[cell] done in " in summary and "threads 1" not in summary
    assert "[cell] done in " in capsys.readouterr().out


def test_a_failing_step_stops_the_other_lane_and_names_its_log(tmp_path):
    sleeper = Lane("baselines", tmp_path / "baselines.log", tmp_path / "demo.log", threads=1)
    failing = Lane("cell", tmp_path / "cell.log", tmp_path / "demo.log", threads=1)
    started = time.time()
    with pytest.raises(StepFailed, match=r"step failed with exit code 3; full output in .*cell\.log") as failure:
        run_side_by_side(lambda: sleeper.run(SLEEP),
                         lambda: (time.sleep(1), failing.run([sys.executable, "-c", "print('bad'); exit(3)"])))
    assert "bad" in str(failure.value)
    assert time.time() - started < 30, "the other lane's step was not stopped"


def test_lanes_return_their_results_in_order(tmp_path):
    assert run_side_by_side(lambda: (time.sleep(0.5), 1)[1], lambda: 2) == [1, 2]


def test_a_step_can_show_what_it_printed_without_its_progress_bars(tmp_path, capsys):
    lane = Lane("cell", tmp_path / "cell.log", tmp_path / "demo.log")
    lane.run([sys.executable, "-c", "print('before')"])
    script = ("import sys; print('0.731204 same'); "
              "sys.stderr.write('embedding: 50%|#| 1/2 [00:01<00:01, 1.00it/s]\\r'); print('written', file=sys.stderr)")
    lane.run([sys.executable, "-c", script], show_output=True)
    out = capsys.readouterr().out
    assert "[cell] 0.731204 same" in out and "[cell] written" in out
    shown = [line for line in out.splitlines() if line.startswith("  [cell] ")]
    assert not any("it/s]" in line for line in shown) and "[cell] before" not in out
    assert "[cell] 0.731204 same" in (tmp_path / "demo.log").read_text()


def test_a_recorded_run_replaces_its_own_section_of_the_page_and_keeps_the_rest(tmp_path):
    page = tmp_path / "demo.md"
    page.write_text(f"# The demo\n\nbefore\n\n{RECORD_START}\nold table\n{RECORD_END}\n\nafter\n", encoding="utf-8")
    write_section(page, f"{RECORD_START}\nnew table\n{RECORD_END}\n", RECORD_START, RECORD_END)
    expected = f"# The demo\n\nbefore\n\n{RECORD_START}\nnew table\n{RECORD_END}\nafter\n"
    assert page.read_text(encoding="utf-8") == expected
    fresh = tmp_path / "fresh.md"
    write_section(fresh, f"{RECORD_START}\ntable\n{RECORD_END}\n", RECORD_START, RECORD_END)
    assert fresh.read_text(encoding="utf-8") == f"{RECORD_START}\ntable\n{RECORD_END}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo.md", "fresh.md"]
