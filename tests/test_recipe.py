"""The modern recipe end to end on the tiny corpus: margin loss, statistics pooling, embedding, AS-norm, fbank;
fine-tuning with --init_from; the recipe a checkpoint carries; bad input."""
from __future__ import annotations

import argparse
import json
import re

import pytest
import torch

from functions.experiment import load_config
from functions.recipe import check_recipe, checkpoint_recipe, recipe_of
from models.genotypes import AUTOSPEECH, genotype_to_text
from tests.conftest import run_script
from tests.test_scripts import TINY_CELL, one_error_line, only_run, small
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.config import ConfigError, get_default_config

MODERN = ["DATASET.FEATURES", "fbank", "DATASET.N_MELS", "40", "LOSS.NAME", "aam", "LOSS.MARGIN_WARMUP_EPOCHS", "1",
          "MODEL.POOLING", "stats", "MODEL.EMBEDDING_DIM", "16", "EVAL.SCORE_NORM", "asnorm", "EVAL.COHORT_SIZE", "3"]
GENOTYPE = ["--text_arch", genotype_to_text(AUTOSPEECH)]
VERI_CFG = "exps/demo/modern_scratch_veri.yaml"
# The demo config's augmentation folders are not generated here.
NO_AUGMENTATION = ["AUGMENT.NOISE_DIR", "", "AUGMENT.NOISE_PROB", "0.0", "AUGMENT.RIR_DIR", "", "AUGMENT.RIR_PROB",
                   "0.0", "AUGMENT.SPEED_PERTURB", "False"]


def modern(corpus, out, *extra: str) -> list[str]:
    return small(corpus, out, *TINY_CELL, *NO_AUGMENTATION, *MODERN, *extra)


@pytest.fixture(scope="module")
def modern_run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("modern")
    run_script("train_verification.py", "--cfg", VERI_CFG, *GENOTYPE, *modern(tiny_corpus, out))
    return only_run(out / "logs_scratch")


def test_training_reports_raw_and_asnorm_scores(modern_run):
    results = json.loads((modern_run / "results.json").read_text())
    for key in ("eer", "eer_asnorm", "min_dcf_0.01", "min_dcf_0.01_asnorm", "min_dcf_0.05_asnorm"):
        assert 0.0 <= results["last_epoch"][key] <= 100.0, key
    checkpoint = load_checkpoint(modern_run / "Model" / "checkpoint_last.pth")
    assert checkpoint_recipe(checkpoint) == {"features": "fbank", "n_features": 40, "pooling": "stats",
                                             "embedding_dim": 16, "classifier": "cosine", "speed_perturb": False,
                                             "stem": "published"}
    assert "classifier.bias" not in checkpoint["state_dict"] and "embedding.1.running_mean" in checkpoint["state_dict"]


def test_evaluation_gives_both_and_a_score_file_each(modern_run, tiny_corpus, tmp_path):
    trained = json.loads((modern_run / "results.json").read_text())["last_epoch"]
    run_script("evaluate_verification.py", "--cfg", VERI_CFG, "--load_path",
               str(modern_run / "Model" / "checkpoint_last.pth"), *modern(tiny_corpus, tmp_path))
    evaluation_dir = only_run(tmp_path / "logs_eval")
    evaluation = json.loads((evaluation_dir / "results.json").read_text())
    assert evaluation["eer"] == pytest.approx(trained["eer"])
    assert evaluation["eer_asnorm"] == pytest.approx(trained["eer_asnorm"])
    raw = (evaluation_dir / "scores.txt").read_text().splitlines()
    normalised = (evaluation_dir / "scores_asnorm.txt").read_text().splitlines()
    assert len(raw) == len(normalised) == evaluation["trials"]
    assert [line.split()[1:] for line in raw] == [line.split()[1:] for line in normalised]
    assert [line.split()[0] for line in raw] != [line.split()[0] for line in normalised]


def test_evaluating_under_another_recipe_names_the_mismatch(modern_run, tiny_corpus, tmp_path):
    process = run_script("evaluate_verification.py", "--cfg", VERI_CFG, "--load_path", str(modern_run),
                         *modern(tiny_corpus, tmp_path, "MODEL.POOLING", "attentive"), check=False)
    assert process.returncode == 2
    line = one_error_line(process)
    assert "pooling stats" in line and "attentive" in line and "MODEL.POOLING" in line
    assert not list((tmp_path / "logs_eval").glob("*"))


def test_init_from_takes_the_weights_and_starts_a_new_schedule(modern_run, tiny_corpus, tmp_path):
    source = load_checkpoint(modern_run / "Model" / "checkpoint_last.pth")
    # A learning rate far below float32's resolution of the weights: they stay the ones taken over, so they show
    # what was loaded (a rate of 0 is refused as no run can use it).
    run_script("train_verification.py", "--cfg", "exps/demo/modern_scratch_veri_lm.yaml", "--init_from",
               str(modern_run), *modern(tiny_corpus, tmp_path, "TRAIN.LR", "1e-30", "TRAIN.LR_MIN", "0.0",
                                        "DATASET.PARTIAL_N_FRAMES", "150"))
    tuned_run = only_run(tmp_path / "logs_scratch")
    tuned = load_checkpoint(tuned_run / "Model" / "checkpoint_last.pth")
    # The source run had finished its one epoch; resuming it would train nothing.
    assert source["epoch"] == 1 and tuned["epoch"] == 1 and tuned["history"][0]["epoch"] == 0
    for key in ("stem0.0.weight", "classifier.weight", "embedding.0.weight"):
        torch.testing.assert_close(tuned["state_dict"][key], source["state_dict"][key], msg=key)
    assert tuned["genotype"] == source["genotype"]


def test_init_from_is_not_resuming_and_checks_the_recipe(modern_run, tiny_corpus, tmp_path):
    line = one_error_line(run_script("train_verification.py", "--cfg", VERI_CFG, "--init_from", str(modern_run),
                                     "--load_path", str(modern_run), *modern(tiny_corpus, tmp_path), check=False))
    assert "--init_from" in line and "--load_path" in line
    process = run_script("train_verification.py", "--cfg", VERI_CFG, "--init_from", str(modern_run),
                         *modern(tiny_corpus, tmp_path, "MODEL.EMBEDDING_DIM", "32"), check=False)
    assert process.returncode == 2 and "embedding_dim 16" in one_error_line(process)
    assert not list((tmp_path / "logs_scratch").glob("*"))


def test_search_runs_under_the_modern_recipe(tiny_corpus, tmp_path):
    run_script("search.py", "--cfg", "exps/demo/modern_search.yaml",
               *small(tiny_corpus, tmp_path, *TINY_CELL, *NO_AUGMENTATION[:8], *MODERN[:12],
                      "MODEL.SINGLE_PATH", "True"))
    checkpoint = load_checkpoint(only_run(tmp_path / "logs_search") / "Model" / "checkpoint_last.pth")
    assert {"alphas_normal", "alphas_reduce", "embedding.0.weight"} <= set(checkpoint["state_dict"])
    assert checkpoint_recipe(checkpoint)["classifier"] == "cosine"


BAD_VALUES = [
    (["LOSS.NAME", "arcface"], "softmax, aam, am"),
    (["MODEL.POOLING", "max"], "avg, stats, attentive, astp"),
    (["EVAL.SCORE_NORM", "snorm"], "none, asnorm"),
    (["LOSS.MARGIN", "1.2"], "LOSS.MARGIN"),
    (["LOSS.MARGIN", "-0.1"], "LOSS.MARGIN"),
    (["LOSS.SCALE", "0.5"], "LOSS.SCALE"),
    (["EVAL.COHORT_SIZE", "0"], "EVAL.COHORT_SIZE"),
]


@pytest.mark.parametrize("override,named", BAD_VALUES)
def test_bad_recipe_values_are_config_errors_naming_the_key(override, named, tiny_corpus, tmp_path):
    args = argparse.Namespace(cfg=VERI_CFG, opts=modern(tiny_corpus, tmp_path, *override))
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(args)


def test_a_bad_recipe_value_exits_2_with_one_line_before_the_run_folder(tiny_corpus, tmp_path):
    process = run_script("train_verification.py", "--cfg", VERI_CFG, *GENOTYPE,
                         *modern(tiny_corpus, tmp_path, "LOSS.NAME", "arcface"), check=False)
    assert process.returncode == 2 and "softmax, aam, am" in one_error_line(process)
    assert not list((tmp_path / "logs_scratch").glob("*"))


def test_a_checkpoint_without_a_config_has_the_published_recipe():
    published = recipe_of(get_default_config())
    assert checkpoint_recipe({"state_dict": {}}) == published
    assert published == {"features": "spectrogram", "n_features": 257, "pooling": "avg", "embedding_dim": 0,
                         "classifier": "linear", "speed_perturb": False,
                         "stem": "published"}
    cfg = get_default_config()
    cfg.LOSS.NAME = "am"
    with pytest.raises(CheckpointError, match="classifier linear .* cosine"):
        check_recipe({}, cfg, "the released checkpoint")
    # Keys the stored config lacks take their published default; a margin loss of the same head is the same recipe.
    stored = get_default_config()
    stored.LOSS.NAME = "aam"
    check_recipe({"config": stored.dump()}, cfg, "a run")


def _stored(**sections: dict) -> dict:
    """A checkpoint whose stored config is the defaults with `sections` (e.g. DATASET={...}) written over them."""
    import yaml

    config = yaml.safe_load(get_default_config().dump())
    for section, keys in sections.items():
        config[section].update(keys)
    return {"config": yaml.safe_dump(config)}


def _fbank_config(**changes) -> object:
    cfg = get_default_config()
    cfg.DATASET.FEATURES = "fbank"
    for key, value in changes.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def test_a_stored_number_written_as_text_is_read_as_the_number():
    checkpoint = _stored(DATASET={"FEATURES": "fbank", "N_MELS": "80"})
    check_recipe(checkpoint, _fbank_config(), "a run")
    with pytest.raises(CheckpointError, match="n_features 80 but the config has 40"):
        check_recipe(checkpoint, _fbank_config(DATASET__N_MELS=40), "a run")
    with pytest.raises(CheckpointError, match="a run: .*DATASET.N_MELS 'eighty', not a number"):
        check_recipe(_stored(DATASET={"N_MELS": "eighty"}), _fbank_config(), "a run")


def test_an_unknown_stored_loss_is_a_checkpoint_error_naming_the_key():
    with pytest.raises(CheckpointError, match="a run: .*unknown LOSS.NAME 'arcface'; known: softmax, aam, am"):
        check_recipe(_stored(LOSS={"NAME": "arcface"}), get_default_config(), "a run")


def test_speed_perturbation_of_the_checkpoint_is_named():
    checkpoint = _stored(DATASET={"FEATURES": "fbank"}, AUGMENT={"SPEED_PERTURB": True})
    with pytest.raises(CheckpointError, match="speed_perturb True but the config has False; set AUGMENT.SPEED_PERTURB"):
        check_recipe(checkpoint, _fbank_config(), "a run")
    check_recipe(checkpoint, _fbank_config(AUGMENT__SPEED_PERTURB=True), "a run")


def test_an_unknown_stored_loss_exits_2_with_one_line(modern_run, tiny_corpus, tmp_path):
    checkpoint = load_checkpoint(modern_run / "Model" / "checkpoint_last.pth")
    checkpoint["config"] = checkpoint["config"].replace("NAME: aam", "NAME: arcface")
    path = tmp_path / "renamed.pth"
    torch.save(checkpoint, path)
    process = run_script("evaluate_verification.py", "--cfg", VERI_CFG, "--load_path", str(path),
                         *modern(tiny_corpus, tmp_path), check=False)
    assert process.returncode == 2 and "unknown LOSS.NAME 'arcface'" in one_error_line(process)
