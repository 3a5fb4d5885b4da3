"""`make bench`'s script in its quick mode: one table with every row, a numeric ratio in each, and the same
results on both sides where a row compares results."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import run_script

ROWS = (
    r"Preprocessing throughput",
    r"Preprocessing peak memory",
    r"Search step, full mode vs the published mixed op",
    r"Search step, single-path vs full mode",
    # The quick run's batches are 2, 4 and 8 (the full run's 2, 16 and 64).
    *(rf"Search cost, {mode}, batch {batch} " for mode in ("full mode", "single-path") for batch in (2, 4, 8)),
    r"Training step, AutoSpeech genotype network",
    r"Training epoch end to end",
    r"Verification",
    r"Training crop, bytes read per sample",
    r"Training crop, time per sample",
    r"Disk, feature/ of \d+ utterances, float32",
    r"Disk, feature/ of \d+ utterances, float16",
)
# Rows whose notes give our result and the reference's, which must agree.
SAME_RESULT = {
    "Search step, full mode": r"loss of one fixed sample: (\S+) vs (\S+)$",
    "Search step, single-path": r"loss of the same sample: (\S+) vs (\S+)$",
    "Training step": r"first-step loss (\S+) vs (\S+);",
    "Verification": r"EER (\S+) % vs (\S+) %",
}


def _cells(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| Benchmark"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_quick_run_writes_every_row_with_a_ratio_and_equal_results(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    other_section = "<!-- recipes: written by benchmarks/recipes.py -->\n| kept |\n<!-- end of recipes -->\n"
    output.write_text(other_section, encoding="utf-8")
    process = run_script("benchmarks/run_all.py", "--quick", "--output", str(output), timeout=600)
    page = output.read_text(encoding="utf-8")
    assert page.startswith(other_section), "another benchmark's section of the page was not kept"
    table = page[len(other_section):]
    assert table.strip() in process.stdout
    assert sorted(tmp_path.iterdir()) == [output], "a temporary file was left beside the table"
    assert "CPU rows only" in table and "cores" in table

    rows = _cells(table)
    assert len(rows) == len(ROWS)
    for pattern in ROWS:
        assert sum(bool(re.match(pattern, name)) for name in rows) == 1, f"no single row named '{pattern}...'"
    for name, cells in rows.items():
        assert len(cells) == 7, name
        ratio = re.fullmatch(r"(\d+\.\d\d)x", cells[3])
        assert ratio and float(ratio.group(1)) > 0, f"{name}: ratio '{cells[3]}'"
        assert cells[5] in ("yes", "no", "-"), name

    for prefix, pattern in SAME_RESULT.items():
        (notes,) = [cells[6] for name, cells in rows.items() if name.startswith(prefix)]
        ours, reference = map(float, re.search(pattern, notes).groups())
        assert math.isclose(ours, reference, rel_tol=1e-5), f"{prefix}: {notes}"
    (preprocessing,) = [cells[6] for name, cells in rows.items() if name.startswith("Preprocessing throughput")]
    assert float(re.search(r"max feature difference (\S+) ", preprocessing).group(1)) <= 1e-4


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: tests/test_cuda.py runs the GPU rows")
def test_gpu_rows_without_a_gpu_are_refused_in_one_line(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS_GPU.md"
    process = run_script("benchmarks/run_all.py", "--quick", "--device", "cuda", "--output", str(output), check=False)
    assert process.returncode != 0
    assert process.stderr.strip() == "error: --device cuda but no CUDA device is available"
    assert not output.exists()


def test_peak_memory_of_a_step_sees_what_it_allocates() -> None:
    from benchmarks.common import peak_memory_of

    def megabytes(count: int) -> list[torch.Tensor]:
        return [torch.ones(2**18) for _ in range(count)]  # 1 MiB each: the heap, not a mapping of their own

    # A few MiB of slack: other threads of the process may free memory while the step runs.
    before, peak = peak_memory_of(lambda: torch.ones(32, 2**20).sum())  # 128 MiB, freed on return
    assert peak - before >= 120 * 2**20
    # Memory that earlier work freed would be reused by the step without growing the resident set.
    freed = megabytes(512)
    del freed
    before, peak = peak_memory_of(lambda: megabytes(256))
    assert peak - before >= 240 * 2**20


def test_a_search_cost_batch_that_would_not_fit_in_memory_is_reported_not_run(monkeypatch) -> None:
    from benchmarks import search_step
    from benchmarks.common import markdown_table

    def batches_run(rows) -> list[int]:
        return [int(re.search(r"batch (\d+) \(", row.benchmark).group(1)) for row in rows if row.ratio is not None]

    def eight_mebibytes_above_nothing(step, device):  # 4 MiB per item at batch 2
        step()
        return 0, 8 * 2**20

    monkeypatch.setattr(search_step, "peak_memory_of", eight_mebibytes_above_nothing)
    # Batch 4 would need 16 MiB: more than 90 % of 17 MiB.
    monkeypatch.setattr(search_step, "available_memory_bytes", lambda device: 17 * 2**20)
    rows = search_step.search_cost_rows(search_step.QUICK, "cpu", (2, 4))
    assert batches_run(rows) == [2, 2]
    skipped = [row for row in rows if row.ratio is None]
    assert [row.benchmark.split(" (")[0] for row in skipped] == ["Search cost, full mode, batch 4",
                                                                   "Search cost, single-path, batch 4"]
    assert all(row.ours == "not measured" and "16.0 MiB more" in row.notes and "17.0 MiB available" in row.notes
               for row in skipped)
    ratios = {name: cells[3] for name, cells in _cells(markdown_table(rows, "cost")).items()}
    assert sorted(ratios.values())[:2] == ["-", "-"] and sum(ratio == "-" for ratio in ratios.values()) == 2
