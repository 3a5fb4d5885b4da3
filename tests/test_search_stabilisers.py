"""Random cells, the search's temperature schedule, skip cap, early stopping and learning-rate scaling."""
from __future__ import annotations

import json
import math
from argparse import Namespace
from collections import Counter
from pathlib import Path

import pytest
import torch

from functions.lr_scaling import lr_scale
from functions.tasks import genotype_settled, run_search
from models.genotypes import main as genotypes_main
from models.genotypes import parse_genotype, validate_genotype
from models.random_cells import random_genotype
from models.search_network import SearchNetwork, derive_genotype, gumbel_temperature
from models.search_spaces import SEARCH_SPACES
from tests.conftest import run_script
from tests.test_scripts import only_run

EDGE_OF_NODE = [0, 2, 5, 9]  # first edge of each intermediate node


def tiny_search(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["DATASET.DATA_DIR", str(corpus), "OUTPUT_DIR", str(out), "DATASET.PARTIAL_N_FRAMES", "50",
            "TRAIN.BATCH_SIZE", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "1", "VAL_FREQ", "100", "MODEL.INIT_CHANNELS", "4",
            "MODEL.LAYERS", "2", *extra]


def search_in_process(corpus: Path, out: Path, *extra: str, load_path: str | None = None) -> tuple[Path, list]:
    run_search(Namespace(cfg="exps/demo/search.yaml", opts=tiny_search(corpus, out, *extra), load_path=load_path))
    run = only_run(out / "logs_search")
    history = [json.loads(line) for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]
    return run, history


# ----- random cells -----
@pytest.mark.parametrize("space", sorted(SEARCH_SPACES))
def test_random_cells_are_valid_cells_of_their_space(space):
    edges = SEARCH_SPACES[space]
    for seed in range(30):
        genotype = random_genotype(space, seed)
        validate_genotype(genotype)
        for cell, edge_ops in ((genotype.normal, edges.normal), (genotype.reduce, edges.reduce)):
            for node in range(4):
                (op_a, in_a), (op_b, in_b) = cell[2 * node: 2 * node + 2]
                assert in_a != in_b and 0 <= min(in_a, in_b) and max(in_a, in_b) <= node + 1
                for op, source in ((op_a, in_a), (op_b, in_b)):
                    assert op != "none" and op in edge_ops[EDGE_OF_NODE[node] + source]


def test_random_cells_differ_across_seeds_and_repeat_for_one_seed(capsys):
    texts = {repr(random_genotype("s2", seed)) for seed in range(20)}
    assert len(texts) == 20
    assert random_genotype("s3", 7) == random_genotype("s3", 7)
    assert random_genotype("s2", 7) != random_genotype("s3", 7)
    genotypes_main(["random", "--space", "s2", "--seed", "7"])
    assert parse_genotype(capsys.readouterr().out) == random_genotype("s2", 7)


def test_random_operations_and_inputs_are_drawn_uniformly():
    ops, pairs = Counter(), Counter()
    for seed in range(300):
        genotype = random_genotype("s2", seed)
        ops.update(op for op, _ in genotype.normal + genotype.reduce)
        pairs[tuple(sorted(source for _, source in genotype.normal[6:8]))] += 1
    total = sum(ops.values())
    assert len(ops) == 7 and all(abs(count / total - 1 / 7) < 0.03 for count in ops.values())
    # Node 3 has 5 inputs: 10 pairs, each with probability 0.1 (300 draws: standard deviation 0.017).
    assert len(pairs) == 10 and all(abs(count / 300 - 0.1) < 0.06 for count in pairs.values())


# ----- temperature -----
def test_temperature_anneals_from_tau_max_at_the_first_epoch_to_tau_min_at_the_last():
    assert gumbel_temperature(0, 50, 10.0, 0.1) == 10.0
    assert gumbel_temperature(49, 50, 10.0, 0.1) == pytest.approx(0.1)
    assert gumbel_temperature(24, 49, 10.0, 0.1) == pytest.approx(5.05)
    assert gumbel_temperature(0, 1, 10.0, 0.1) == 10.0


def test_the_temperature_reaches_the_gumbel_sample():
    """The straight-through gradient is that of softmax((logits + g) / tau): about 1/tau as large."""
    network = SearchNetwork(4, 3, 2)
    target = torch.randn(len(network.cells), 14, 8)
    norms = []
    for tau in (1.0, 100.0):
        network.tau = tau
        network.zero_grad()
        (network.sample_cell_weights(torch.Generator().manual_seed(0)) * target).sum().backward()
        norms.append(network.alphas_reduce.grad.norm().item())
    assert norms[0] / norms[1] > 4


# ----- skip cap -----
def _skip_heavy_alphas() -> torch.Tensor:
    """s2 alphas whose every edge prefers skip_connect (column 3), more strongly on later edges, sep_conv_3x3
    (column 4) second and dil_conv_5x5 (column 7) third."""
    alphas = torch.zeros(14, 8)
    for edge in range(14):
        alphas[edge, 3] = 2.0 + 0.1 * edge
        alphas[edge, 4] = 1.0
        alphas[edge, 7] = 0.5
    return alphas


def test_skip_cap_replaces_the_weakest_skip_connections_by_their_best_other_operation():
    alphas = _skip_heavy_alphas()
    uncapped = derive_genotype(alphas, alphas, "s2")
    assert [op for op, _ in uncapped.normal] == ["skip_connect"] * 8
    # By hand: each node keeps its two strongest (latest) inputs; the skip weight grows with the edge number,
    # so the two strongest skips are node 3's edges from inputs 4 and 3 (edges 13 and 12).
    capped = derive_genotype(alphas, alphas, "s2", max_skip_connect=2)
    assert [source for _, source in capped.normal] == [source for _, source in uncapped.normal]
    assert [op for op, _ in capped.normal] == ["sep_conv_3x3"] * 6 + ["skip_connect"] * 2
    assert capped.reduce == uncapped.reduce
    none_left = derive_genotype(alphas, alphas, "s2", max_skip_connect=0)
    assert [op for op, _ in none_left.normal] == ["sep_conv_3x3"] * 8
    assert derive_genotype(alphas, alphas, "s2", max_skip_connect=8) == uncapped


# ----- early stopping -----
def test_early_stopping_fires_once_the_genotype_is_unchanged_for_the_patience():
    settled = genotype_settled(2)
    assert settled([{"genotype": "A"}, {"genotype": "B"}, {"genotype": "B"}]) is None
    assert settled([{"genotype": "A"}, {"genotype": "B"}, {"genotype": "B"}, {"genotype": "B"}])
    assert settled([{"genotype": "B"}, {"genotype": "B"}]) is None


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """8 speakers, 12 utterances each: 16 `val` utterances, enough for a global batch of 16."""
    data = tmp_path_factory.mktemp("corpus8") / "VoxCeleb1"
    run_script("-m", "data_objects.synthetic", str(data), "--seed", "5", "--dev_speakers", "6",
               "--test_speakers", "2", "--videos", "3", "--utterances", "4", "--workers", "1")
    run_script("data_preprocess.py", str(data), "--workers", "1")
    return data


def test_search_logs_temperature_genotype_and_entropy_and_scales_its_learning_rates(small_corpus, tmp_path):
    _, history = search_in_process(small_corpus, tmp_path, "TRAIN.END_EPOCH", "3", "MODEL.TAU_MAX", "10.0",
                                   "MODEL.TAU_MIN", "0.1", "TRAIN.BATCH_SIZE", "4",
                                   "TRAIN.SEARCH_LR_SCALING", "sqrt")
    assert [row["tau"] for row in history] == pytest.approx([10.0, 5.05, 0.1])
    assert all(parse_genotype(row["genotype"]) and 0 < row["alpha_entropy_normal"] <= 1 for row in history)
    # sqrt(global batch 4 / published 2) x TRAIN.LR 0.01, in the first epoch of the cosine schedule.
    assert history[0]["lr"] == pytest.approx(0.01 * math.sqrt(2))
    assert lr_scale("linear", 64, 2) == 32 and lr_scale("none", 64, 2) == 1


def test_search_stops_early_after_the_patience_and_a_resume_does_not_go_on(small_corpus, tmp_path):
    # A frozen architecture (an ARCH_LR far below the resolution of the alphas) keeps the genotype of the first epoch.
    run, history = search_in_process(small_corpus, tmp_path, "TRAIN.END_EPOCH", "5", "TRAIN.ARCH_LR", "1e-30",
                                     "TRAIN.SEARCH_PATIENCE", "2")
    assert [row["epoch"] for row in history] == [0, 1, 2]
    results = json.loads((run / "results.json").read_text())
    assert results["stopped_early"] and results["epochs"] == 3
    _, resumed = search_in_process(small_corpus, tmp_path, "TRAIN.END_EPOCH", "5", "TRAIN.ARCH_LR", "1e-30",
                                   "TRAIN.SEARCH_PATIENCE", "2", load_path=str(run))
    assert resumed == history


def test_search_runs_at_a_global_batch_of_16_on_two_processes(small_corpus, tmp_path):
    run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "search.py",
               "--cfg", "exps/demo/search.yaml",
               *tiny_search(small_corpus, tmp_path, "TRAIN.BATCH_SIZE", "8", "TRAIN.END_EPOCH", "1",
                            "TRAIN.SEARCH_LR_SCALING", "sqrt"))
    results = json.loads((only_run(tmp_path / "logs_search") / "results.json").read_text())
    assert results["global_batch"] == 16 and results["lr_scale"] == pytest.approx(math.sqrt(8))
    assert results["last"]["lr"] == pytest.approx(0.01 * math.sqrt(8))


def test_warm_up_epochs_leave_the_architecture_alone_and_the_diagnostics_count_the_steps(small_corpus, tmp_path):
    run, history = search_in_process(small_corpus, tmp_path, "TRAIN.END_EPOCH", "3", "TRAIN.MAX_STEPS_PER_EPOCH",
                                     "2", "TRAIN.ARCH_WARMUP_EPOCHS", "1", "TRAIN.ARCH_SAMPLES", "2",
                                     "TRAIN.ARCH_BATCH_SIZE", "3", "TRAIN.ARCH_LR", "0.01")
    assert [row["arch_steps"] for row in history] == [0, 2, 4]
    assert history[0]["arch_changed_reduce"] == 0 and "arch_move_reduce" not in history[0]
    # Two cells are reduction cells: the normal cell's alphas never move.
    rows = [json.loads(line) for line in (run / "Log" / "architecture.jsonl").read_text().splitlines()]
    initial = torch.tensor(rows[0]["edges"]["reduce"]["alphas"])
    assert all(row["arch_move_normal"] == 0 for row in history[1:])
    # Adam's first steps move an alpha by about its learning rate each: a consistent push reads close to 1.
    moved = (torch.tensor(rows[2]["edges"]["reduce"]["alphas"]) - initial).abs().max().item()
    assert history[2]["arch_move_total_reduce"] == pytest.approx(moved / (4 * 0.01))
    assert 0.2 < history[2]["arch_move_total_reduce"] <= 1.2
    assert "on batches of 3 with 2 Gumbel sample(s)" in (run / "Log" / "train.log").read_text()
    assert (run / "Log" / "search_diagnostics.png").read_bytes().startswith(b"\x89PNG")
