"""The eight entry scripts end to end on a tiny generated corpus (CPU, tiny networks)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from models.genotypes import AUTOSPEECH, genotype_to_text, parse_genotype
from tests.conftest import run_script
from utils.checkpoint import load_checkpoint


def small(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "DATASET.DATA_DIR", str(corpus), "OUTPUT_DIR", str(out), "DATASET.PARTIAL_N_FRAMES", "100",
        "TRAIN.BATCH_SIZE", "4", "TRAIN.END_EPOCH", "1", "VAL_FREQ", "1", "PRINT_FREQ", "2",
        "TRAIN.MAX_STEPS_PER_EPOCH", "3", *extra,
    ]


TINY_CELL = ["MODEL.INIT_CHANNELS", "4", "MODEL.LAYERS", "2"]


def only_run(folder: Path) -> Path:
    runs = [path for path in folder.iterdir() if path.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def one_error_line(process) -> str:
    assert process.returncode == 2, process.stderr
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert "Traceback" not in process.stderr, process.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def searched(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    process = run_script("search.py", "--cfg", "exps/demo/search.yaml", *small(tiny_corpus, out, *TINY_CELL))
    return out, only_run(out / "logs_search"), process


def test_search_writes_genotype_pictures_checkpoints_and_tensorboard(searched):
    _, run, process = searched
    genotype = parse_genotype((run / "genotype.txt").read_text())
    assert genotype_to_text(genotype) in process.stdout
    for name in ("cell_normal.png", "cell_reduce.png", "architecture_weights.png", "metrics.jsonl", "train.log"):
        assert (run / "Log" / name).stat().st_size > 0, name
    assert list((run / "Log").glob("events.out.tfevents.*"))
    checkpoint = load_checkpoint(run / "Model" / "checkpoint_last.pth")
    assert checkpoint["epoch"] == 1 and checkpoint["genotype"] == genotype
    assert {"alphas_normal", "alphas_reduce"} <= set(checkpoint["state_dict"])
    history = [json.loads(line) for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]
    assert {"train_loss", "test_top1", "alpha_entropy_normal", "lr"} <= set(history[0])
    assert (run / "config.yaml").exists() and "search.py" in (run / "command.txt").read_text()


def test_train_and_evaluate_identification_with_the_searched_genotype(searched, tiny_corpus, tmp_path):
    _, search_run, _ = searched
    # Output to pipes, as to a file: plain progress lines every PRINT_FREQ (2) batches, no progress-bar frames.
    training = run_script("train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", "--text_arch",
                          str(search_run / "genotype.txt"), *small(tiny_corpus, tmp_path, *TINY_CELL))
    output = training.stdout + training.stderr
    assert "\r" not in output and "\x1b[" not in output
    assert re.search(r"^epoch 0: 2/3 batch \(67 %\), loss \d+\.\d{4}, acc \d+\.\d{2}, .*ETA \d+:\d\d$", output, re.M)
    assert re.search(r"^epochs: 1/1 epoch \(100 %\), ", output, re.M)
    run = only_run(tmp_path / "logs_scratch")
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["test_last"]["top1"] <= results["test_last"]["top5"] <= 100.0
    summary, written = training.stderr.rstrip("\n").splitlines()[-2:]
    assert written.endswith(f"results written to {run / 'results.json'}")
    assert summary.endswith(
        f"test Top-1 {results['test_selected_on_val']['top1']:.2f} % of the checkpoint selected on val (epoch 0), "
        f"{results['test_last']['top1']:.2f} % at the last epoch"
    )
    best = load_checkpoint(run / "Model" / "checkpoint_best.pth")
    assert best["best_acc1"] is not None and best["genotype"] == parse_genotype((run / "genotype.txt").read_text())
    process = run_script("evaluate_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", "--load_path",
                         str(run), *small(tiny_corpus, tmp_path, *TINY_CELL))
    evaluation = json.loads((only_run(tmp_path / "logs_eval") / "results.json").read_text())
    assert "Top-1" in process.stderr and 0.0 <= evaluation["top1"] <= 100.0


def test_train_and_evaluate_verification_writes_scores_and_det_curve(tiny_corpus, tmp_path):
    run_script("train_verification.py", "--cfg", "exps/demo/scratch_veri.yaml", "--text_arch",
               genotype_to_text(AUTOSPEECH), *small(tiny_corpus, tmp_path, *TINY_CELL))
    run = only_run(tmp_path / "logs_scratch")
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["last_epoch"]["eer"] <= 100.0
    # The checkpoint embeds raw audio on its own: config, genotype, feature statistics, the last EER threshold.
    checkpoint = load_checkpoint(run / "Model" / "checkpoint_last.pth")
    assert checkpoint["genotype"] == AUTOSPEECH and "MODEL" in checkpoint["config"]
    assert np.array_equal(checkpoint["feature_stats"]["mean"].numpy(), np.load(tiny_corpus / "mean.npy"))
    assert np.array_equal(checkpoint["feature_stats"]["std"].numpy(), np.load(tiny_corpus / "std.npy"))
    assert -1.0 <= checkpoint["history"][-1]["threshold_at_eer"] <= 1.0
    run_script("evaluate_verification.py", "--cfg", "exps/demo/scratch_veri.yaml", "--load_path",
               str(run / "Model" / "checkpoint_last.pth"), *small(tiny_corpus, tmp_path, *TINY_CELL))
    evaluation_dir = only_run(tmp_path / "logs_eval")
    evaluation = json.loads((evaluation_dir / "results.json").read_text())
    assert evaluation["eer"] == pytest.approx(results["last_epoch"]["eer"])
    score_lines = (evaluation_dir / "scores.txt").read_text().splitlines()
    assert len(score_lines) == evaluation["trials"]
    score, label, first, second = score_lines[0].split()
    assert -1.0 <= float(score) <= 1.0 and label in "01" and first.endswith(".wav") and second.endswith(".wav")
    for picture in ("det_curve.png", "score_histograms.png"):
        assert (evaluation_dir / picture).stat().st_size > 0


@pytest.mark.parametrize("script,cfg", [
    ("train_baseline_identification.py", "exps/demo/resnet18_iden.yaml"),
    ("train_baseline_verification.py", "exps/demo/resnet18_veri.yaml"),
])
def test_baselines_train(script, cfg, tiny_corpus, tmp_path):
    run_script(script, "--cfg", cfg, *small(tiny_corpus, tmp_path))
    run = only_run(tmp_path / "logs")
    checkpoint = load_checkpoint(run / "Model" / "checkpoint_last.pth")
    assert "classifier.weight" in checkpoint["state_dict"] and "genotype" not in checkpoint


def test_published_checkpoint_evaluates_directly(fixtures_dir, tiny_corpus, tmp_path):
    fixture = fixtures_dir / "genotype_net_C8_L3_K10.pth"
    cell = ["MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3"]
    run_script("evaluate_identification.py", "--cfg", "exps/scratch/scratch_iden.yaml", "--load_path", str(fixture),
               *small(tiny_corpus, tmp_path, *cell, "MODEL.NUM_CLASSES", "10"))
    run_script("evaluate_verification.py", "--cfg", "exps/scratch/scratch_veri.yaml", "--load_path", str(fixture),
               *small(tiny_corpus, tmp_path, *cell, "MODEL.NUM_CLASSES", "10"))
    results = sorted((tmp_path / "logs_eval").glob("*/results.json"))
    assert {json.loads(path.read_text())["task"] for path in results} == {"identification", "verification"}


def test_bad_arguments_give_one_clear_line(fixtures_dir, tiny_corpus, tmp_path):
    base = small(tiny_corpus, tmp_path, *TINY_CELL)
    line = one_error_line(run_script("train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", *base,
                                     check=False))
    assert "--text_arch" in line
    line = one_error_line(run_script("evaluate_identification.py", "--cfg", "exps/demo/scratch_iden.yaml",
                                     "--load_path", str(tmp_path / "nowhere.pth"), *base, check=False))
    assert "nowhere.pth" in line
    line = one_error_line(run_script("train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml",
                                     "--load_path", str(tmp_path / "no_run"), *base, check=False))
    assert "no_run" in line
    # The fixture has 10 classes and C = 8: evaluating it as a C = 4 network names the first mismatched key.
    line = one_error_line(run_script("evaluate_identification.py", "--cfg", "exps/demo/scratch_iden.yaml",
                                     "--load_path", str(fixtures_dir / "genotype_net_C8_L3_K10.pth"),
                                     *base, check=False))
    assert "stem0.0.weight" in line and "shape" in line
    line = one_error_line(run_script("train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml",
                                     "--text_arch", genotype_to_text(AUTOSPEECH).replace("sep_conv_3x3", "conv_99x99"),
                                     *base, check=False))
    assert "unknown operation 'conv_99x99'" in line
    line = one_error_line(run_script("search.py", "--cfg", "exps/demo/search.yaml", *base, "TRAIN.LRR", "0.1",
                                     check=False))
    assert "TRAIN.LRR" in line


def test_checkpoint_of_another_class_count_is_named(fixtures_dir, tiny_corpus, tmp_path):
    cell = ["MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3", "MODEL.NUM_CLASSES", "12"]
    line = one_error_line(run_script("evaluate_verification.py", "--cfg", "exps/scratch/scratch_veri.yaml",
                                     "--load_path", str(fixtures_dir / "genotype_net_C8_L3_K10.pth"),
                                     *small(tiny_corpus, tmp_path, *cell), check=False))
    assert "classifier.weight" in line and "10" in line and "12" in line
