"""Every configuration key and its default; YAML files in exps/ and command-line overrides may only change these."""
from __future__ import annotations

import argparse
import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from yacs.config import CfgNode as CN

_C = CN()

_C.PRINT_FREQ = 20
_C.VAL_FREQ = 20
# The published scripts' default seed.
_C.SEED = 3
# 'auto' picks CUDA when it is available, else the CPU; 'cpu' or 'cuda' force one.
_C.DEVICE = "auto"
# Folder under which logs_search/, logs_scratch/ and logs/ are created.
_C.OUTPUT_DIR = "."

_C.CUDNN = CN()
_C.CUDNN.BENCHMARK = True
_C.CUDNN.DETERMINISTIC = False
_C.CUDNN.ENABLED = True

_C.MODEL = CN()
# 'model_search' (search network), 'model' (network of a genotype), 'resnet18', 'resnet34' (torchvision's, the
# paper's baselines), 'wespeaker_resnet34' (3x3 stride-1 stem, strides 1-2-2-2: models/time_keeping_resnet.py).
_C.MODEL.NAME = "model"
# Speakers to classify; 0 takes the number of speakers of the training data, any other value is checked against it.
_C.MODEL.NUM_CLASSES = 0
_C.MODEL.LAYERS = 8
_C.MODEL.INIT_CHANNELS = 16
_C.MODEL.DROP_PATH_PROB = 0.2
# ResNet initialisation: '' (Kaiming), 'imagenet' (torchvision weights from the hub cache) or a path to them.
_C.MODEL.PRETRAINED = ""
# Base width (channels of the first stage) of 'wespeaker_resnet34'; WeSpeaker's ResNet34 has 32.
_C.MODEL.RESNET_WIDTH = 32
# Stem of the genotype network (models/genotype_network.py STEMS): 'published' (three stride-2 convolutions) or
# 'time_keeping' (time halved once in the stem: a 2-s crop reaches the pooling as 25 frames instead of 7).
_C.MODEL.STEM = "published"
# Search space of the search network: 's1', 's2' or 's3'.
_C.MODEL.SEARCH_SPACE = "s2"
# Compute only the sampled operation of each edge during search (straight-through gradient to every alpha).
_C.MODEL.SINGLE_PATH = False
# Pooling over time of the last feature map: 'avg' (global average, the paper), 'stats' (mean and standard
# deviation over time), 'attentive' (attentive statistics pooling, one weight per frame), 'astp' (one weight per
# frame and channel, WeSpeaker's ASTP).
_C.MODEL.POOLING = "avg"
# Size of the speaker embedding: 0 scores the pooled vector (the paper); otherwise a linear layer with batch norm
# to this size gives the embedding used for scoring.
_C.MODEL.EMBEDDING_DIM = 0
# Gumbel-softmax temperature of the search, annealed from TAU_MAX at the first epoch to TAU_MIN at the last
# (the paper keeps 1.0; GDAS anneals 10 -> 0.1).
_C.MODEL.TAU_MAX = 1.0
_C.MODEL.TAU_MIN = 1.0
# Most skip connections the derived normal cell may keep (the weakest others take their best other operation);
# -1 = no cap.
_C.MODEL.MAX_SKIP_CONNECT = -1

_C.DATASET = CN()
# VoxCeleb1 root: dev/, test/, the meta files and, after data_preprocess.py, feature/, mean.npy, std.npy.
_C.DATASET.DATA_DIR = ""
# DataLoader worker processes per training process.
_C.DATASET.NUM_WORKERS = 0
# Frames per training crop and per test window (300 frames = 3 s).
_C.DATASET.PARTIAL_N_FRAMES = 300
# Feature sub-folder of identification and search (train / val / test partitions of iden_split.txt).
# Verification always trains on feature/dev, whose speakers are disjoint from those of the trial list.
_C.DATASET.SUB_DIR = "merged"
# Trial list for verification, relative to DATASET.DATA_DIR unless absolute.
_C.DATASET.TRIALS = "veri_test.txt"
# Front-end: 'spectrogram' (the paper's 257-bin magnitude, precomputed by data_preprocess.py) or 'fbank'
# (log-mel filterbank computed on the fly from the wav files; no preprocessing needed).
_C.DATASET.FEATURES = "spectrogram"
# Mel bands of the 'fbank' front-end.
_C.DATASET.N_MELS = 80

# Waveform augmentation of training items (each applied with its own probability; 0 = off, the paper).
_C.AUGMENT = CN()
# Folder in MUSAN's layout (noise/, music/, speech/ sub-folders of wav files) for additive noise.
_C.AUGMENT.NOISE_DIR = ""
_C.AUGMENT.NOISE_PROB = 0.0
# Folder of room impulse responses (wav files, searched recursively) for reverberation.
_C.AUGMENT.RIR_DIR = ""
_C.AUGMENT.RIR_PROB = 0.0
# How reverberation and noise combine: 'independent' (each with its own probability, both may apply) or 'one_of'
# (at most one: reverberation with RIR_PROB, noise with NOISE_PROB, as WeSpeaker).
_C.AUGMENT.MODE = "independent"
# Speed perturbation 0.9 / 1.1, each speed a new speaker (3x the classes).
_C.AUGMENT.SPEED_PERTURB = False
# SpecAugment-style masking of the features: probability, widest time mask (frames), widest frequency mask (bins).
_C.AUGMENT.SPECAUGMENT_PROB = 0.0
_C.AUGMENT.TIME_MASK_WIDTH = 20
_C.AUGMENT.FREQ_MASK_WIDTH = 10

_C.LOSS = CN()
# 'softmax' (cross-entropy with TRAIN.LABEL_SMOOTHING, the paper), 'aam' (additive angular margin, ArcFace),
# 'am' (additive margin).
_C.LOSS.NAME = "softmax"
_C.LOSS.MARGIN = 0.2
_C.LOSS.SCALE = 32.0
# The margin rises linearly from 0 to LOSS.MARGIN over this many epochs (0 = full margin from the start).
_C.LOSS.MARGIN_WARMUP_EPOCHS = 0
# How the margin rises (models/margin_schedules.py): 'linear' or 'exponential' (WeSpeaker's); it stays 0 for the
# first MARGIN_HOLD_EPOCHS epochs and reaches LOSS.MARGIN at epoch MARGIN_WARMUP_EPOCHS.
_C.LOSS.MARGIN_SCHEDULE = "linear"
_C.LOSS.MARGIN_HOLD_EPOCHS = 0

_C.EVAL = CN()
# Score normalisation of verification: 'none' (cosine, the paper) or 'asnorm' (adaptive symmetric normalisation
# against a cohort of the training speakers' mean embeddings).
_C.EVAL.SCORE_NORM = "none"
# Top cohort scores that AS-norm takes for each side of a trial.
_C.EVAL.COHORT_SIZE = 300
# Subtract the mean embedding of the training utterances from trial and cohort embeddings before AS-norm
# (WeSpeaker's cal_mean); the raw scores stay plain cosines.
_C.EVAL.SCORE_NORM_MEAN = False

_C.TRAIN = CN()
_C.TRAIN.BATCH_SIZE = 32
_C.TRAIN.LR = 0.01
_C.TRAIN.LR_MIN = 0.001
# The published search and training scripts call `lr_scheduler.step(epoch)` after each epoch, so epochs 0 and 1
# train at lr(0) and epoch e at lr(e - 1). True reproduces that lag, and the published configs (exps/search.yaml,
# exps/scratch/, exps/baseline/) turn it on so that they train as the published runs did; False (the demo, new
# configs) trains epoch e at lr(e), the schedule as CosineAnnealingLR defines it.
_C.TRAIN.PUBLISHED_LR_LAG = False
_C.TRAIN.WD = 0.0
# Optimiser of the weights (functions/optimisers.py): 'adam' (the paper) or 'sgd' with TRAIN.MOMENTUM, Nesterov's
# form when TRAIN.NESTEROV, and weight decay TRAIN.WD.
_C.TRAIN.OPTIMIZER = "adam"
_C.TRAIN.MOMENTUM = 0.9
_C.TRAIN.NESTEROV = True
# Learning-rate schedule (functions/lr_schedules.py): 'cosine' (the paper) or 'exponential' (LR to LR_MIN,
# WeSpeaker's), after a linear warm-up over TRAIN.WARMUP_EPOCHS epochs (0 = none).
_C.TRAIN.LR_SCHEDULE = "cosine"
_C.TRAIN.WARMUP_EPOCHS = 0
_C.TRAIN.BETA1 = 0.9
_C.TRAIN.BETA2 = 0.999
_C.TRAIN.ARCH_LR = 0.001
_C.TRAIN.ARCH_WD = 0.001
_C.TRAIN.ARCH_BETA1 = 0.5
_C.TRAIN.ARCH_BETA2 = 0.999
_C.TRAIN.DROPPATH_PROB = 0.2
# First epoch of a new run (a resumed run continues from its checkpoint).
_C.TRAIN.BEGIN_EPOCH = 0
_C.TRAIN.END_EPOCH = 50
# Mixed precision (bfloat16/float16 autocast with a grad scaler); used on CUDA only.
_C.TRAIN.AMP = False
# Batches per epoch cap (0 = the whole partition); for quick looks and tests.
_C.TRAIN.MAX_STEPS_PER_EPOCH = 0
# Label smoothing of the cross-entropy loss.
_C.TRAIN.LABEL_SMOOTHING = 0.1
# Search: stop once the derived genotype has not changed for this many epochs (0 = off).
_C.TRAIN.SEARCH_PATIENCE = 0
# Search: the learning rates (LR, LR_MIN, ARCH_LR) are multiplied by rule(global batch / SEARCH_REFERENCE_BATCH):
# 'none' (the configured rates, the paper), 'sqrt' (Adam's rule, for larger search batches) or 'linear'
# (functions/lr_scaling.py). The global batch is TRAIN.BATCH_SIZE x the number of processes.
_C.TRAIN.SEARCH_LR_SCALING = "none"
# The global batch the configured search learning rates are meant for (the published search's 2).
_C.TRAIN.SEARCH_REFERENCE_BATCH = 2
# Search, less noisy architecture steps (all off by default: the paper steps the architecture from the first
# batch, on one Gumbel sample of one batch of TRAIN.BATCH_SIZE). Epochs that train the weights only, before the
# first architecture step (P-DARTS, PC-DARTS warm the weights up first); must be below TRAIN.END_EPOCH.
_C.TRAIN.ARCH_WARMUP_EPOCHS = 0
# Validation batch of an architecture step; 0 = TRAIN.BATCH_SIZE.
_C.TRAIN.ARCH_BATCH_SIZE = 0
# Gumbel samples whose losses are averaged in one architecture step.
_C.TRAIN.ARCH_SAMPLES = 1

# The study of nas_study.py (functions/study.py): searched, random and the paper's cells, trained alike. Its own
# schema: a study config holds only these keys.
_STUDY = CN()
# Search config of the searched cells (its MODEL.NAME must be 'model_search').
_STUDY.SEARCH_CFG = "exps/demo/search.yaml"
# Searches, with seeds SEED, SEED + 1, ...; random cells, drawn with the same seeds.
_STUDY.SEARCHES = 3
_STUDY.RANDOM_CELLS = 3
# Train the paper's cell (models.genotypes.AUTOSPEECH) alike.
_STUDY.PAPER_CELL = True
_STUDY.SEED = 0
# Space of the searches and the random cells; '' = the search config's MODEL.SEARCH_SPACE.
_STUDY.SEARCH_SPACE = ""
# What every cell is trained for: 'identification' and/or 'verification', with the training config of each.
_STUDY.TASKS = ["identification"]
_STUDY.IDENTIFICATION_CFG = "exps/demo/scratch_iden.yaml"
_STUDY.VERIFICATION_CFG = "exps/demo/scratch_veri.yaml"
_STUDY.DATA_DIR = ""
# Folder of the study (a sub-folder per member, study.md, study.json, study.png); a rerun resumes there.
_STUDY.OUTPUT_DIR = "study"
# KEY VALUE overrides given to every search / every training of the study.
_STUDY.SEARCH_OPTS = []
_STUDY.TRAIN_OPTS = []
# Every cell is trained once per seed (the training's SEED), the same seeds for every cell, to measure the
# spread between seeds of one cell against the spread between cells.
_STUDY.TRAIN_SEEDS = [0]


class ConfigError(ValueError):
    """A configuration file or override that does not fit the defaults."""


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Range:
    """The values a numeric key may take: bounds, each inclusive or not, and optionally a step it must divide."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    multiple_of: int = 1

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        if self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)):
            return False
        return self.multiple_of == 1 or value % self.multiple_of == 0

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            text = f"in {'[' if self.low_inclusive else '('}{low}, {high}{']' if self.high_inclusive else ')'}"
        elif self.low is not None:
            text = f"{'at least' if self.low_inclusive else 'greater than'} {low}"
        else:
            text = f"{'at most' if self.high_inclusive else 'less than'} {high}"
        return text + (f" and a multiple of {self.multiple_of}" if self.multiple_of > 1 else "")


_AT_LEAST_1 = Range(1)
_NON_NEGATIVE = Range(0)
_POSITIVE = Range(0, low_inclusive=False)
_PROBABILITY = Range(0, 1)
_BELOW_1 = Range(0, 1, high_inclusive=False)

# Every numeric key and the values a run can use; checked when a config is loaded (string keys that name a
# registry entry are checked by their registry).
RANGES: dict[str, Range] = {
    "PRINT_FREQ": _AT_LEAST_1,
    "VAL_FREQ": _AT_LEAST_1,
    "SEED": Range(0, 2**32 - 1),  # numpy's seed range
    "MODEL.NUM_CLASSES": _NON_NEGATIVE,
    "MODEL.LAYERS": _AT_LEAST_1,
    # The stem halves C and FactorizedReduce splits it in two halves.
    "MODEL.INIT_CHANNELS": Range(2, multiple_of=2),
    "MODEL.DROP_PATH_PROB": _BELOW_1,
    "MODEL.EMBEDDING_DIM": _NON_NEGATIVE,
    "MODEL.RESNET_WIDTH": _AT_LEAST_1,
    "MODEL.TAU_MAX": _POSITIVE,
    "MODEL.TAU_MIN": _POSITIVE,
    "MODEL.MAX_SKIP_CONNECT": Range(-1),
    "DATASET.NUM_WORKERS": _NON_NEGATIVE,
    "DATASET.PARTIAL_N_FRAMES": _AT_LEAST_1,
    "DATASET.N_MELS": _AT_LEAST_1,
    "AUGMENT.NOISE_PROB": _PROBABILITY,
    "AUGMENT.RIR_PROB": _PROBABILITY,
    "AUGMENT.SPECAUGMENT_PROB": _PROBABILITY,
    "AUGMENT.TIME_MASK_WIDTH": _NON_NEGATIVE,
    "AUGMENT.FREQ_MASK_WIDTH": _NON_NEGATIVE,
    # Radians for 'aam' (cos(theta + m)), a cosine offset for 'am' (cos(theta) - m).
    "LOSS.MARGIN": _BELOW_1,
    # Scales in use are 16-64; one outside [1, 128] is taken for a typo.
    "LOSS.SCALE": Range(1, 128),
    "LOSS.MARGIN_WARMUP_EPOCHS": _NON_NEGATIVE,
    "LOSS.MARGIN_HOLD_EPOCHS": _NON_NEGATIVE,
    "EVAL.COHORT_SIZE": _AT_LEAST_1,
    "TRAIN.BATCH_SIZE": _AT_LEAST_1,
    "TRAIN.LR": _POSITIVE,
    "TRAIN.LR_MIN": _NON_NEGATIVE,
    "TRAIN.WD": _NON_NEGATIVE,
    "TRAIN.MOMENTUM": _BELOW_1,
    "TRAIN.WARMUP_EPOCHS": _NON_NEGATIVE,
    "TRAIN.BETA1": _BELOW_1,
    "TRAIN.BETA2": _BELOW_1,
    "TRAIN.ARCH_LR": _POSITIVE,
    "TRAIN.ARCH_WD": _NON_NEGATIVE,
    "TRAIN.ARCH_BETA1": _BELOW_1,
    "TRAIN.ARCH_BETA2": _BELOW_1,
    "TRAIN.DROPPATH_PROB": _BELOW_1,
    "TRAIN.BEGIN_EPOCH": _NON_NEGATIVE,
    "TRAIN.END_EPOCH": _AT_LEAST_1,
    "TRAIN.MAX_STEPS_PER_EPOCH": _NON_NEGATIVE,
    "TRAIN.LABEL_SMOOTHING": _BELOW_1,
    "TRAIN.SEARCH_PATIENCE": _NON_NEGATIVE,
    "TRAIN.SEARCH_REFERENCE_BATCH": _AT_LEAST_1,
    "TRAIN.ARCH_WARMUP_EPOCHS": _NON_NEGATIVE,
    "TRAIN.ARCH_BATCH_SIZE": _NON_NEGATIVE,
    "TRAIN.ARCH_SAMPLES": _AT_LEAST_1,
}
# Pairs of keys where the first may not exceed the second (strictly below it when the flag is set).
ORDERED_PAIRS: tuple[tuple[str, str, bool], ...] = (
    ("TRAIN.LR_MIN", "TRAIN.LR", False),
    ("MODEL.TAU_MIN", "MODEL.TAU_MAX", False),
    ("TRAIN.BEGIN_EPOCH", "TRAIN.END_EPOCH", True),
    ("TRAIN.ARCH_WARMUP_EPOCHS", "TRAIN.END_EPOCH", True),
    ("LOSS.MARGIN_HOLD_EPOCHS", "LOSS.MARGIN_WARMUP_EPOCHS", False),
)


def config_value(cfg: CN, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_ranges(cfg: CN, ranges: dict[str, Range] = RANGES,
                 ordered_pairs: tuple[tuple[str, str, bool], ...] = ORDERED_PAIRS) -> None:
    """Raise ConfigError, naming the key and its range, for the first numeric value no run can use."""
    for key, allowed in ranges.items():
        value = config_value(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key} must be {allowed}, got {_number(value)}")
    for low_key, high_key, strict in ordered_pairs:
        low, high = config_value(cfg, low_key), config_value(cfg, high_key)
        if low > high or (strict and low == high):
            relation = "below" if strict else "at most"
            raise ConfigError(f"{low_key} must be {relation} {high_key} ({_number(high)}), got {_number(low)}")


def get_default_config() -> CN:
    return _C.clone()


# The numeric keys of a study config (nas_study.py).
STUDY_RANGES: dict[str, Range] = {
    "SEARCHES": _AT_LEAST_1,
    "RANDOM_CELLS": _AT_LEAST_1,
    "SEED": RANGES["SEED"],
}


def get_default_study_config() -> CN:
    return _STUDY.clone()


def _full_keys(node: CN, prefix: str = "") -> list[str]:
    """Every key and section of `node`, dotted: 'TRAIN', 'TRAIN.LR', ..."""
    keys = []
    for name, value in node.items():
        keys.append(f"{prefix}{name}")
        if isinstance(value, CN):
            keys += _full_keys(value, f"{prefix}{name}.")
    return keys


_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: (\S+)")
_TYPE_MISMATCH = re.compile(
    r"Type mismatch \(<class '([\w.]+)'> vs\. <class '([\w.]+)'>\) with values \((.*) vs\. (.*)\) "
    r"for config key: (\S+)",
    re.DOTALL,
)


def _short(value: str) -> str:
    line = value.splitlines()[0] if value else value
    return line if len(line) <= 40 else line[:37] + "..."


def _describe(error: Exception, schema: CN = _C) -> str:
    """yacs' message in one line; an unknown key gets the closest known ones of `schema`, a misspelling being the
    usual cause."""
    text = str(error.args[0]) if error.args else str(error)
    unknown = _UNKNOWN_KEY.fullmatch(text)
    if unknown is not None:
        key = unknown.group(1)
        close = difflib.get_close_matches(key, _full_keys(schema), n=2)
        return f"unknown config key {key}" + (f" (did you mean {' or '.join(close)}?)" if close else "")
    mismatch = _TYPE_MISMATCH.fullmatch(text)
    if mismatch is not None:
        expected, given, _, value, key = mismatch.groups()
        expected, given = expected.rsplit(".", 1)[-1], given.rsplit(".", 1)[-1]
        if expected == "CfgNode":
            return f"{key} is a section of keys, not a single value"
        return f"{key} must be of type {expected}, got {given} {_short(value)}"
    return text.splitlines()[0] if text.strip() else type(error).__name__


def _file_problem(error: Exception, schema: CN) -> str:
    """Why a config file could not be read, with the line when the YAML parser knows it."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}: not valid YAML ({getattr(error, 'problem', None) or 'syntax error'})"
    if isinstance(error, UnicodeDecodeError):
        return "not a text file"
    if isinstance(error, AttributeError):  # yacs walks the document as a mapping
        return "not a YAML mapping of config keys (KEY: value, sections indented below their name)"
    return f"not a valid YAML config ({_describe(error, schema)})"


def merge_config_text(cfg: CN, text: str, source: str) -> CN:
    """Merge a config dumped as YAML text (as checkpoints carry it) into `cfg`; `source` names it in errors."""
    cfg.defrost()
    try:
        cfg.merge_from_other_cfg(cfg.load_cfg(text))
    except (KeyError, ValueError, TypeError, AssertionError) as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None
    except Exception as error:  # malformed YAML raises parser-specific types
        raise ConfigError(f"{source}: {_file_problem(error)}") from None
    return cfg


def split_overrides(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments, then KEY VALUE overrides: the overrides start at the first token that is a key of
    the defaults (a top-level key such as DEVICE, or SECTION.KEY of a known section)."""
    for position, token in enumerate(tokens):
        head = token.split(".", 1)[0]
        if head in _C and (isinstance(_C[head], CN) == ("." in token)):
            return tokens[:position], tokens[position:]
    return tokens, []


def update_config(cfg: CN, args: argparse.Namespace, ranges: dict[str, Range] = RANGES,
                  ordered_pairs: tuple[tuple[str, str, bool], ...] = ORDERED_PAIRS) -> CN:
    """Merge `args.cfg` (a YAML file) and `args.opts` (KEY VALUE pairs) into `cfg` and freeze it."""
    cfg.defrost()
    cfg_file = getattr(args, "cfg", None)
    if cfg_file:
        path = Path(cfg_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {cfg_file}")
        try:
            with path.open(encoding="utf-8") as handle:
                loaded = cfg.load_cfg(handle)
            cfg.merge_from_other_cfg(_floats_where_expected(loaded, cfg))
        except UnicodeDecodeError as error:
            raise ConfigError(f"{cfg_file}: {_file_problem(error, cfg)}") from None
        except (KeyError, ValueError, TypeError, AssertionError) as error:
            raise ConfigError(f"{cfg_file}: {_describe(error, cfg)}") from None
        except Exception as error:  # malformed YAML raises parser-specific types
            raise ConfigError(f"{cfg_file}: {_file_problem(error, cfg)}") from None
    opts = list(getattr(args, "opts", None) or [])
    options = [opt for opt in opts if opt.startswith("--")]
    if options:
        raise ConfigError(f"{options[0]} comes after the KEY VALUE overrides; put options such as {options[0]} "
                          "before them")
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs; '{opts[-1]}' has no value")
    try:
        cfg.merge_from_list(_override_floats_where_expected(opts, cfg))
    except (KeyError, ValueError, TypeError, AssertionError, SyntaxError) as error:
        raise ConfigError(f"override: {_describe(error, cfg)}") from None
    check_ranges(cfg, ranges, ordered_pairs)
    cfg.freeze()
    return cfg


def _as_float_if_expected(value, default):
    """An integer given for a float key, as a float (yacs would refuse it); any other value unchanged."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _floats_where_expected(loaded: CN, defaults: CN) -> CN:
    """`loaded` (a parsed config file) with integers turned into floats where `defaults` holds a float."""
    for name, value in loaded.items():
        default = defaults.get(name) if isinstance(defaults, CN) else None
        if isinstance(value, CN):
            _floats_where_expected(value, default)
        else:
            loaded[name] = _as_float_if_expected(value, default)
    return loaded


def _override_floats_where_expected(opts: list[str], defaults: CN) -> list:
    """KEY VALUE overrides with integer values of float keys given as floats; other values stay as typed."""
    converted = list(opts)
    for position in range(0, len(opts) - 1, 2):
        try:
            default = config_value(defaults, opts[position])
        except (KeyError, TypeError):
            continue  # an unknown key, which yacs reports
        converted[position + 1] = _as_float_if_expected(CN._decode_cfg_value(opts[position + 1]), default)
    return converted

