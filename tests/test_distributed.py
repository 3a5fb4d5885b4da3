"""Data-parallel runs with torchrun on the CPU (gloo, 2 processes) against single-process runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.genotypes import AUTOSPEECH, genotype_to_text
from tests.conftest import run_script
from tests.test_scripts import TINY_CELL, only_run, small

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# Batch-norm statistics are taken per process (over half the global batch), so the runs agree closely, not exactly.
LOSS_TOLERANCE = 0.05


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]


def train(corpus: Path, out: Path, batch: int, processes: int, *extra: str) -> Path:
    launcher = TORCHRUN if processes == 2 else []
    run_script(*launcher, "train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", "--text_arch",
               genotype_to_text(AUTOSPEECH),
               *small(corpus, out, *TINY_CELL, "TRAIN.BATCH_SIZE", str(batch), "TRAIN.END_EPOCH", "2", *extra))
    return only_run(out / "logs_scratch")


@pytest.fixture(scope="module")
def two_process_run(tiny_corpus, tmp_path_factory):
    return train(tiny_corpus, tmp_path_factory.mktemp("ddp"), 2, 2)


def test_two_processes_match_one_with_the_same_global_batch(two_process_run, tiny_corpus, tmp_path):
    single = history(train(tiny_corpus, tmp_path, 4, 1))
    double = history(two_process_run)
    assert len(single) == len(double) == 2
    for one, two in zip(single, double):
        assert one["lr"] == two["lr"]
        assert abs(one["train_loss"] - two["train_loss"]) < LOSS_TOLERANCE
    assert single[0]["train_loss"] != pytest.approx(single[1]["train_loss"], abs=1e-6)


def test_only_rank_zero_writes_and_a_resume_may_change_the_process_count(two_process_run, tiny_corpus, tmp_path):
    assert len(list((two_process_run / "Log").glob("events.out.tfevents.*"))) == 1
    run_script("train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", "--load_path",
               str(two_process_run), *small(tiny_corpus, tmp_path, *TINY_CELL, "TRAIN.END_EPOCH", "3",
                                             "TRAIN.BATCH_SIZE", "4"))
    assert [row["epoch"] for row in history(two_process_run)] == [0, 1, 2]


@pytest.mark.parametrize("script,cfg,key", [
    ("evaluate_verification.py", "exps/scratch/scratch_veri.yaml", "eer"),
    ("evaluate_identification.py", "exps/scratch/scratch_iden.yaml", "top1"),
])
def test_distributed_evaluation_equals_single_process(script, cfg, key, fixtures_dir, tiny_corpus, tmp_path):
    overrides = small(tiny_corpus, tmp_path, "MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3",
                      "MODEL.NUM_CLASSES", "10")
    fixture = str(fixtures_dir / "genotype_net_C8_L3_K10.pth")
    run_script(script, "--cfg", cfg, "--load_path", fixture, *overrides)
    run_script(*TORCHRUN, script, "--cfg", cfg, "--load_path", fixture, *overrides)
    results = [json.loads(path.read_text()) for path in sorted((tmp_path / "logs_eval").glob("*/results.json"))]
    assert len(results) == 2
    assert results[0][key] == results[1][key]
    if key == "eer":
        assert results[0]["min_dcf_0.01"] == results[1]["min_dcf_0.01"]
