"""Progress output: a tqdm bar on a terminal, plain lines (no carriage returns) where output is redirected."""
from __future__ import annotations

import io
import os
import re

from tqdm import tqdm

from utils import progress as progress_module
from utils.progress import PlainProgress, progress


def test_redirected_output_gets_a_plain_line_every_few_updates():
    stream = io.StringIO()
    bar = progress(10, "epoch 2", "batch", initial=1, every=4, stream=stream)
    assert isinstance(bar, PlainProgress)
    for step in range(2, 11):
        bar.set_postfix(loss=f"{1 / step:.4f}")
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(",")[0] for line in lines] == ["epoch 2: 4/10 batch (40 %)", "epoch 2: 8/10 batch (80 %)"]
    assert re.fullmatch(r"epoch 2: 8/10 batch \(80 %\), loss 0\.1250, [\d.]+ (batch/s|s/batch), ETA \d+:\d\d", lines[1])


def test_without_a_step_count_lines_come_at_most_once_per_interval(monkeypatch):
    clock = iter([0.0, 1.0, 10.0, 31.0, 40.0, 62.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    bar = progress(5, "features", "utt", interval=30.0, stream=stream)
    for _ in range(5):
        bar.update(1)
    # Updates at 1, 10, 31, 40 and 62 s after the start: lines at 31 s and at 62 s.
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == [
        "features: 3/5 utt (60 %)", "features: 5/5 utt (100 %)"]


def test_a_terminal_gets_a_tqdm_bar_and_a_disabled_display_prints_nothing():
    main, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        bar = progress(3, "epochs", "epoch", stream=terminal)
        assert isinstance(bar, tqdm)
        bar.close()
    os.close(main)
    stream = io.StringIO()
    silent = progress(3, "epochs", "epoch", enabled=False, every=1, stream=stream)
    for _ in range(3):
        silent.update(1)
    assert stream.getvalue() == ""
