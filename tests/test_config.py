"""Config loading: every numeric key has a range checked at load time, integers are accepted for float keys, and
the published configs hold the published settings (SPEC §8, §10)."""
from __future__ import annotations

import argparse
import importlib
import re
import sys

import pytest
import torch
from yacs.config import CfgNode

from functions.experiment import KNOWN_ERRORS
from models.resnet import resnet18, resnet34
from tests.conftest import REPO
from utils.cli import run_main
from utils.config import RANGES, STUDY_RANGES, ConfigError, get_default_config, get_default_study_config, update_config

PUBLISHED_CONFIGS = [REPO / "exps" / "search.yaml", *sorted((REPO / "exps" / "scratch").glob("*.yaml")),
                     *sorted((REPO / "exps" / "baseline").glob("*.yaml"))]


def load(*opts: str, cfg: str | None = None) -> CfgNode:
    return update_config(get_default_config(), argparse.Namespace(cfg=cfg, opts=list(opts)))


def numeric_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        if isinstance(value, CfgNode):
            keys += numeric_keys(value, f"{prefix}{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            keys.append(f"{prefix}{name}")
    return keys


def test_every_numeric_key_has_a_range():
    assert sorted(RANGES) == sorted(numeric_keys(get_default_config()))


def test_every_default_and_every_shipped_config_is_in_range():
    for path in sorted((REPO / "exps").rglob("*.yaml")):
        if path.name.startswith("study"):
            update_config(get_default_study_config(), argparse.Namespace(cfg=str(path), opts=[]), STUDY_RANGES, ())
        else:
            load(cfg=str(path))


OUT_OF_RANGE = [
    ("PRINT_FREQ", "0", "PRINT_FREQ must be at least 1, got 0"),
    ("VAL_FREQ", "0", "VAL_FREQ must be at least 1, got 0"),
    ("SEED", "-1", "SEED must be in [0, 4294967295], got -1"),
    ("SEED", "4294967296", "SEED must be in [0, 4294967295], got 4294967296"),
    ("MODEL.NUM_CLASSES", "-1", "MODEL.NUM_CLASSES must be at least 0, got -1"),
    ("MODEL.LAYERS", "0", "MODEL.LAYERS must be at least 1, got 0"),
    ("MODEL.INIT_CHANNELS", "0", "MODEL.INIT_CHANNELS must be at least 2 and a multiple of 2, got 0"),
    ("MODEL.INIT_CHANNELS", "5", "MODEL.INIT_CHANNELS must be at least 2 and a multiple of 2, got 5"),
    ("MODEL.DROP_PATH_PROB", "1.0", "MODEL.DROP_PATH_PROB must be in [0, 1), got 1"),
    ("MODEL.DROP_PATH_PROB", "-0.1", "MODEL.DROP_PATH_PROB must be in [0, 1), got -0.1"),
    ("MODEL.EMBEDDING_DIM", "-1", "MODEL.EMBEDDING_DIM must be at least 0, got -1"),
    ("MODEL.RESNET_WIDTH", "0", "MODEL.RESNET_WIDTH must be at least 1, got 0"),
    ("MODEL.TAU_MAX", "0", "MODEL.TAU_MAX must be greater than 0, got 0"),
    ("MODEL.TAU_MIN", "-1", "MODEL.TAU_MIN must be greater than 0, got -1"),
    ("MODEL.MAX_SKIP_CONNECT", "-2", "MODEL.MAX_SKIP_CONNECT must be at least -1, got -2"),
    ("DATASET.NUM_WORKERS", "-1", "DATASET.NUM_WORKERS must be at least 0, got -1"),
    ("DATASET.PARTIAL_N_FRAMES", "0", "DATASET.PARTIAL_N_FRAMES must be at least 1, got 0"),
    ("DATASET.N_MELS", "0", "DATASET.N_MELS must be at least 1, got 0"),
    ("AUGMENT.NOISE_PROB", "1.5", "AUGMENT.NOISE_PROB must be in [0, 1], got 1.5"),
    ("AUGMENT.RIR_PROB", "-0.1", "AUGMENT.RIR_PROB must be in [0, 1], got -0.1"),
    ("AUGMENT.SPECAUGMENT_PROB", "2", "AUGMENT.SPECAUGMENT_PROB must be in [0, 1], got 2"),
    ("AUGMENT.TIME_MASK_WIDTH", "-1", "AUGMENT.TIME_MASK_WIDTH must be at least 0, got -1"),
    ("AUGMENT.FREQ_MASK_WIDTH", "-3", "AUGMENT.FREQ_MASK_WIDTH must be at least 0, got -3"),
    ("LOSS.MARGIN", "1", "LOSS.MARGIN must be in [0, 1), got 1"),
    ("LOSS.MARGIN", "-0.2", "LOSS.MARGIN must be in [0, 1), got -0.2"),
    ("LOSS.SCALE", "0.5", "LOSS.SCALE must be in [1, 128], got 0.5"),
    ("LOSS.SCALE", "200", "LOSS.SCALE must be in [1, 128], got 200"),
    ("LOSS.MARGIN_WARMUP_EPOCHS", "-1", "LOSS.MARGIN_WARMUP_EPOCHS must be at least 0, got -1"),
    ("LOSS.MARGIN_HOLD_EPOCHS", "-1", "LOSS.MARGIN_HOLD_EPOCHS must be at least 0, got -1"),
    ("EVAL.COHORT_SIZE", "0", "EVAL.COHORT_SIZE must be at least 1, got 0"),
    ("TRAIN.BATCH_SIZE", "0", "TRAIN.BATCH_SIZE must be at least 1, got 0"),
    ("TRAIN.LR", "-0.5", "TRAIN.LR must be greater than 0, got -0.5"),
    ("TRAIN.LR", "0", "TRAIN.LR must be greater than 0, got 0"),
    ("TRAIN.LR_MIN", "-0.001", "TRAIN.LR_MIN must be at least 0, got -0.001"),
    ("TRAIN.WD", "-1e-4", "TRAIN.WD must be at least 0, got -0.0001"),
    ("TRAIN.MOMENTUM", "1", "TRAIN.MOMENTUM must be in [0, 1), got 1"),
    ("TRAIN.WARMUP_EPOCHS", "-2", "TRAIN.WARMUP_EPOCHS must be at least 0, got -2"),
    ("TRAIN.BETA1", "1", "TRAIN.BETA1 must be in [0, 1), got 1"),
    ("TRAIN.BETA2", "-0.5", "TRAIN.BETA2 must be in [0, 1), got -0.5"),
    ("TRAIN.ARCH_LR", "0", "TRAIN.ARCH_LR must be greater than 0, got 0"),
    ("TRAIN.ARCH_WD", "-0.001", "TRAIN.ARCH_WD must be at least 0, got -0.001"),
    ("TRAIN.ARCH_BETA1", "1.0", "TRAIN.ARCH_BETA1 must be in [0, 1), got 1"),
    ("TRAIN.ARCH_BETA2", "1.5", "TRAIN.ARCH_BETA2 must be in [0, 1), got 1.5"),
    ("TRAIN.DROPPATH_PROB", "1", "TRAIN.DROPPATH_PROB must be in [0, 1), got 1"),
    ("TRAIN.BEGIN_EPOCH", "-1", "TRAIN.BEGIN_EPOCH must be at least 0, got -1"),
    ("TRAIN.END_EPOCH", "0", "TRAIN.END_EPOCH must be at least 1, got 0"),
    ("TRAIN.MAX_STEPS_PER_EPOCH", "-1", "TRAIN.MAX_STEPS_PER_EPOCH must be at least 0, got -1"),
    ("TRAIN.LABEL_SMOOTHING", "1", "TRAIN.LABEL_SMOOTHING must be in [0, 1), got 1"),
    ("TRAIN.SEARCH_PATIENCE", "-1", "TRAIN.SEARCH_PATIENCE must be at least 0, got -1"),
    ("TRAIN.SEARCH_REFERENCE_BATCH", "0", "TRAIN.SEARCH_REFERENCE_BATCH must be at least 1, got 0"),
    ("TRAIN.ARCH_WARMUP_EPOCHS", "-1", "TRAIN.ARCH_WARMUP_EPOCHS must be at least 0, got -1"),
    ("TRAIN.ARCH_BATCH_SIZE", "-1", "TRAIN.ARCH_BATCH_SIZE must be at least 0, got -1"),
    ("TRAIN.ARCH_SAMPLES", "0", "TRAIN.ARCH_SAMPLES must be at least 1, got 0"),
]
OUT_OF_ORDER = [
    (["TRAIN.LR_MIN", "0.02"], "TRAIN.LR_MIN must be at most TRAIN.LR (0.01), got 0.02"),
    (["MODEL.TAU_MIN", "2", "MODEL.TAU_MAX", "1.5"], "MODEL.TAU_MIN must be at most MODEL.TAU_MAX (1.5), got 2"),
    (["TRAIN.BEGIN_EPOCH", "5", "TRAIN.END_EPOCH", "5"], "TRAIN.BEGIN_EPOCH must be below TRAIN.END_EPOCH (5), got 5"),
    (["TRAIN.ARCH_WARMUP_EPOCHS", "5", "TRAIN.END_EPOCH", "5"],
     "TRAIN.ARCH_WARMUP_EPOCHS must be below TRAIN.END_EPOCH (5), got 5"),
    (["LOSS.MARGIN_HOLD_EPOCHS", "3", "LOSS.MARGIN_WARMUP_EPOCHS", "2"],
     "LOSS.MARGIN_HOLD_EPOCHS must be at most LOSS.MARGIN_WARMUP_EPOCHS (2), got 3"),
]


def test_the_bad_values_cover_every_ranged_key():
    assert {key for key, _, _ in OUT_OF_RANGE} == set(RANGES)


@pytest.mark.parametrize("overrides,expected", [([key, value], message) for key, value, message in OUT_OF_RANGE]
                         + OUT_OF_ORDER)
def test_a_value_out_of_range_stops_the_script_with_one_line_and_exit_2(
    overrides, expected, tmp_path, capsys, monkeypatch
):
    module = importlib.import_module("train_identification")
    monkeypatch.setattr(sys, "argv", ["train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml",
                                      "OUTPUT_DIR", str(tmp_path / "out"), *overrides])
    with pytest.raises(SystemExit) as exit_info:
        run_main(module.main, KNOWN_ERRORS)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {expected}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides", [
    ["TRAIN.BETA1", "0", "TRAIN.LR_MIN", "0", "TRAIN.WD", "0"],
    ["AUGMENT.NOISE_PROB", "1", "AUGMENT.RIR_PROB", "0", "AUGMENT.SPECAUGMENT_PROB", "1"],
    ["MODEL.MAX_SKIP_CONNECT", "-1", "MODEL.INIT_CHANNELS", "2", "SEED", "4294967295"],
    ["TRAIN.LR_MIN", "0.01", "TRAIN.BEGIN_EPOCH", "49", "MODEL.TAU_MIN", "1.0", "LOSS.MARGIN", "0.999"],
])
def test_values_on_the_edge_of_their_range_are_accepted(overrides):
    load(*overrides)


def test_an_integer_is_accepted_for_a_float_key_in_overrides_and_files(tmp_path):
    cfg = load("TRAIN.LR", "1", "TRAIN.WD", "0")
    assert (cfg.TRAIN.LR, cfg.TRAIN.WD) == (1.0, 0.0)
    assert type(cfg.TRAIN.LR) is float and type(cfg.TRAIN.WD) is float
    path = tmp_path / "ints.yaml"
    path.write_text("TRAIN:\n  LR: 1\n  LR_MIN: 0\nLOSS:\n  SCALE: 30\n")
    cfg = load(cfg=str(path))
    assert (cfg.TRAIN.LR, cfg.TRAIN.LR_MIN, cfg.LOSS.SCALE) == (1.0, 0.0, 30.0)
    assert all(type(v) is float for v in (cfg.TRAIN.LR, cfg.TRAIN.LR_MIN, cfg.LOSS.SCALE))


def test_types_are_still_checked_the_other_way():
    with pytest.raises(ConfigError, match="TRAIN.END_EPOCH must be of type int, got float 2.5"):
        load("TRAIN.END_EPOCH", "2.5")
    with pytest.raises(ConfigError, match="TRAIN.LR must be of type float, got bool True"):
        load("TRAIN.LR", "True")


# ----- the published settings (SPEC §8, §10) -----
def published(name: str) -> CfgNode:
    return load(cfg=str(REPO / "exps" / name))


def test_the_published_default_seed_is_3():
    assert get_default_config().SEED == 3


@pytest.mark.parametrize("name,batch", [
    ("scratch/scratch_iden.yaml", 96), ("scratch/scratch_veri.yaml", 48),
    ("baseline/resnet18_iden.yaml", 256), ("baseline/resnet18_veri.yaml", 256),
    ("baseline/resnet34_iden.yaml", 128), ("baseline/resnet34_veri.yaml", 128),
])
def test_published_batch_sizes(name, batch):
    assert published(name).TRAIN.BATCH_SIZE == batch


def test_the_published_configs_reproduce_the_lr_lag_and_the_others_do_not():
    assert PUBLISHED_CONFIGS and all(load(cfg=str(path)).TRAIN.PUBLISHED_LR_LAG for path in PUBLISHED_CONFIGS)
    others = [path for path in (REPO / "exps").rglob("*.yaml")
              if path not in PUBLISHED_CONFIGS and not path.name.startswith("study")]
    assert others and not any(load(cfg=str(path)).TRAIN.PUBLISHED_LR_LAG for path in others)


def test_the_readme_verification_command_trains_with_the_published_verification_batch():
    # The published recipe's command; the modern recipe's (exps/modern/) and the demo's have their own batches.
    commands = re.findall(r"^python train_verification\.py\s+--cfg (exps/(?!modern/|demo/)\S+)",
                          (REPO / "README.md").read_text(), re.M)
    assert commands
    assert all(load(cfg=str(REPO / cfg)).TRAIN.BATCH_SIZE == 48 for cfg in commands)


@pytest.mark.parametrize("build", [resnet18, resnet34])
def test_resnet_classifier_is_drawn_from_a_normal_of_std_0_01_with_zero_bias(build):
    torch.manual_seed(0)
    classifier = build(1251).classifier
    weight = classifier.weight.detach().double()
    # 642,512 draws: the sample standard deviation is within 0.1 % of the true one (nn.Linear's default: 0.0255).
    assert abs(weight.std().item() - 0.01) < 1e-4
    assert abs(weight.mean().item()) < 1e-4
    assert torch.equal(classifier.bias.detach(), torch.zeros(1251))
