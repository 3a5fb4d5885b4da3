"""benchmarks/recipes.py's choices, without training: which candidate each anchors' row takes, which parts of
today's modern recipe the ablation puts back, and that rows sharing a run train it once."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import recipes
from benchmarks.recipes import (ABLATION_PARTS, CANDIDATES, CELL, RECIPES, RESNET34, SGD_CANDIDATES, Job, Lane,
                                ablation_parts, choose)


def _row(network: str, label: str) -> recipes.Recipe:
    return next(recipe for recipe in RECIPES if recipe.network == network and recipe.label == label)


def test_each_anchors_row_chooses_among_its_own_candidates() -> None:
    # Adam at 0.01 is best overall, SGD at 0.05 the best SGD candidate; every other candidate scores 40 %.
    best_adam = "average pooling, no embedding, Adam lr 0.01 -> 1e-3, cosine"
    best_sgd = "statistics pooling, 128-d embedding, SGD lr 0.05 -> 5e-4"
    scores = {name: 40.0 for name in CANDIDATES} | {best_adam: 5.0, best_sgd: 20.0}
    # Two seeds each: the mean decides, not the first seed.
    choice = {network: {name: [{"eer_asnorm": score - 15.0}, {"eer_asnorm": score + 15.0}]
                        for name, score in scores.items()} for network in (CELL, RESNET34)}
    choice[CELL][best_sgd] = [{"eer_asnorm": 1.0}, {"eer_asnorm": 45.0}]  # mean 23: still the best SGD one
    anchors = [recipe for recipe in RECIPES if recipe.anchors]
    chosen = choose(anchors, choice)
    for network in (CELL, RESNET34):
        assert chosen[_row(network, "anchors'")] == best_sgd
        assert chosen[_row(network, "anchors', optimiser chosen")] == best_adam
    assert best_adam not in SGD_CANDIDATES and best_sgd in SGD_CANDIDATES


def test_the_ablation_puts_back_only_the_parts_the_anchors_row_lacks() -> None:
    cell = ablation_parts(_row(CELL, "anchors'"), _row(CELL, "modern (today)"),
                          CANDIDATES["average pooling, no embedding, SGD lr 0.025 -> 1.25e-5"])
    # The cell's anchors' row already has the modern row's head (average pooling, no embedding layer).
    assert set(cell) == set(ABLATION_PARTS) - {"average pooling head"}
    assert cell["Adam with cosine decay"] == ("TRAIN.OPTIMIZER", "adam", "TRAIN.LR", "0.01", "TRAIN.LR_MIN", "0.001",
                                              "TRAIN.WD", "0.0", "TRAIN.LR_SCHEDULE", "cosine",
                                              "TRAIN.WARMUP_EPOCHS", "0")
    assert cell["published stem"] == ("MODEL.STEM", "published")
    assert cell["fbank front-end"] == ("DATASET.FEATURES", "fbank")

    resnet = ablation_parts(_row(RESNET34, "anchors'"), _row(RESNET34, "modern (today)"),
                            CANDIDATES["statistics pooling, 128-d embedding, SGD lr 0.025 -> 1.25e-5"])
    # Both ResNet rows have the published stem key at its default; the modern ResNet trains with Adam at 1e-3.
    assert set(resnet) == set(ABLATION_PARTS) - {"published stem"}
    assert resnet["Adam with cosine decay"][2:6] == ("TRAIN.LR", "0.001", "TRAIN.LR_MIN", "0.0001")
    assert resnet["average pooling head"] == ("MODEL.POOLING", "avg", "MODEL.EMBEDDING_DIM", "0")


def test_rows_that_chose_the_same_run_train_it_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trained = []

    def train(job: Job, lane: Lane) -> dict:
        trained.append(job.name)
        return {"eer_asnorm": float(len(trained))}

    monkeypatch.setattr(recipes, "train", train)
    lane = Lane(tmp_path, tmp_path, quick=True, threads=1, device="cpu")
    sgd, adam = _row(CELL, "anchors'"), _row(CELL, "anchors', optimiser chosen")
    jobs = [Job(sgd, 0, tmp_path, (), "shared"), Job(adam, 0, tmp_path, (), "shared"),
            Job(adam, 1, tmp_path, (), "own")]
    measured = recipes.run_all(jobs, lane, parallel=2)
    assert sorted(trained) == ["own", "shared"]
    assert measured[0] is measured[1] and measured[2] is not measured[0]
