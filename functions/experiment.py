"""What the entry scripts share: config and process set-up, data, models, optimisers, resume and reports."""
from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from yacs.config import CfgNode

from data_objects.augmentation import AUGMENT_MODES, check_augment_config
from data_objects.datasets import TrialList
from data_objects.errors import DataError
from data_objects.sources import feature_source
from functions.distributed import DistributedContext, broadcast_object, init_distributed
from functions.evaluation import CohortScoring, evaluate_identification, evaluate_verification
from functions.lr_scaling import check_rule
from functions.lr_schedules import LR_SCHEDULES
from functions.optimisers import OPTIMIZERS, check_optimizer_config
from functions.score_norm import SCORE_NORMS, score_normalisation
from functions.run_directory import RunDirectory, RunDirectoryError
from functions.trainer import NonFiniteLossError, Selection, TrainingInterrupted
from models import MODEL_NAMES, build_model
from models.frontends import FRONTENDS
from models.genotype_network import STEMS
from models.genotypes import Genotype, GenotypeError, genotype_to_text
from models.losses import LOSSES
from models.margin_schedules import MARGIN_SCHEDULES
from models.pooling import POOLINGS
from models.search_spaces import SEARCH_SPACES
from utils.checkpoint import CheckpointError
from utils.config import ConfigError, config_value, get_default_config, update_config
from utils.files import OutputError, ensure_writable_dir, write_text_atomically
from utils.run_logging import create_logger

KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, CheckpointError, GenotypeError, RunDirectoryError,
    OutputError, NonFiniteLossError, TrainingInterrupted,
)

# Checkpoint key of the feature statistics: {"mean": tensor, "std": tensor}, one value per frequency bin.
FEATURE_STATS_KEY = "feature_stats"

IDENTIFICATION_SELECTION = Selection(metric="val_top1", higher_is_better=True, checkpoint_key="best_acc1")
VERIFICATION_SELECTION = Selection(metric="eer", higher_is_better=False, checkpoint_key="best_eer")


def _on_main_then_share(ctx: DistributedContext, work: Callable[[], object]) -> object:
    """Run `work` on rank 0 and hand its result, or its error, to every process."""
    outcome: tuple[bool, object] = (True, None)
    if ctx.is_main:
        try:
            outcome = (True, work())
        except KNOWN_ERRORS as error:
            outcome = (False, error)
    ok, value = broadcast_object(ctx, outcome)
    if not ok:
        raise value
    return value


@dataclass
class Experiment:
    cfg: CfgNode
    ctx: DistributedContext
    logs_kind: str
    config_path: str
    log_name: str
    # The folder of a resumed run; None for a new run until `open_run` creates it.
    run: RunDirectory | None = None

    def open_run(self) -> RunDirectory:
        """The run folder; a new one is created here, once every input has been read and checked, so that
        bad input leaves nothing behind."""
        if self.run is None:
            root = _on_main_then_share(
                self.ctx, lambda: RunDirectory.create(self.cfg.OUTPUT_DIR, self.logs_kind, self.config_path).root
            )
            self.run = RunDirectory(Path(root))
            self._log_to_run()
        return self.run

    def _log_to_run(self) -> None:
        create_logger(self.run.log_dir / self.log_name, self.ctx.is_main).info(
            f"run folder {self.run.root}; device {self.ctx.device}; {self.ctx.world_size} process(es); "
            f"python {platform.python_version()}, torch {torch.__version__}"
        )


# Keys naming an entry of a registry.
_CHOICE_KEYS = {"DATASET.FEATURES": FRONTENDS, "LOSS.NAME": LOSSES, "MODEL.POOLING": POOLINGS,
                "EVAL.SCORE_NORM": SCORE_NORMS, "LOSS.MARGIN_SCHEDULE": MARGIN_SCHEDULES,
                "TRAIN.OPTIMIZER": OPTIMIZERS, "TRAIN.LR_SCHEDULE": LR_SCHEDULES, "AUGMENT.MODE": AUGMENT_MODES,
                "MODEL.STEM": STEMS}


def load_config(args) -> CfgNode:
    """The config of `args`, with the values no run could use rejected up front (ranges: utils/config.py)."""
    cfg = update_config(get_default_config(), args)
    for key, registry in _CHOICE_KEYS.items():
        if config_value(cfg, key) not in registry:
            raise ConfigError(f"unknown {key} '{config_value(cfg, key)}'; valid names: {', '.join(registry)}")
    if cfg.MODEL.NAME not in MODEL_NAMES:
        raise ConfigError(f"unknown MODEL.NAME '{cfg.MODEL.NAME}'; valid names: {', '.join(MODEL_NAMES)}")
    if cfg.MODEL.NAME == "model_search" and cfg.MODEL.SEARCH_SPACE not in SEARCH_SPACES:
        raise ConfigError(
            f"unknown MODEL.SEARCH_SPACE '{cfg.MODEL.SEARCH_SPACE}'; valid names: {', '.join(SEARCH_SPACES)}"
        )
    check_augment_config(cfg)
    check_optimizer_config(cfg)
    check_search_config(cfg)
    if not cfg.DATASET.DATA_DIR:
        raise ConfigError("DATASET.DATA_DIR is not set; add `DATASET.DATA_DIR /path/to/VoxCeleb1` to the command")
    if not Path(cfg.DATASET.DATA_DIR).is_dir():
        raise ConfigError(f"DATASET.DATA_DIR {cfg.DATASET.DATA_DIR} does not exist or is not a folder")
    return cfg


def check_search_config(cfg: CfgNode) -> None:
    """The search stabilisers' learning-rate rule, which only a search reads but every config carries (their
    numbers are checked with every other key's range)."""
    check_rule(cfg.TRAIN.SEARCH_LR_SCALING)


def start_experiment(args, logs_kind: str, resume_path: str | None = None, log_name: str = "train.log") -> Experiment:
    """Config, process group and back-ends; the folder being resumed, or a check that a new one can be written."""
    cfg = load_config(args)
    ctx = init_distributed(cfg.DEVICE)
    torch.backends.cudnn.benchmark = cfg.CUDNN.BENCHMARK
    torch.backends.cudnn.deterministic = cfg.CUDNN.DETERMINISTIC
    torch.backends.cudnn.enabled = cfg.CUDNN.ENABLED
    torch.manual_seed(cfg.SEED)
    np.random.seed(cfg.SEED)
    exp = Experiment(cfg, ctx, logs_kind, args.cfg, log_name)
    if resume_path:
        exp.run = RunDirectory(Path(_on_main_then_share(ctx, lambda: RunDirectory.existing(resume_path).root)))
        exp._log_to_run()
    else:
        # An unwritable OUTPUT_DIR is reported before any input is read.
        _on_main_then_share(ctx, lambda: ensure_writable_dir(Path(cfg.OUTPUT_DIR) / logs_kind))
        create_logger(None, ctx.is_main)
    return exp


def class_count(cfg: CfgNode, from_data: int) -> int:
    """MODEL.NUM_CLASSES, checked against the data; 0 takes the number of speakers of the data."""
    configured = cfg.MODEL.NUM_CLASSES
    if configured and configured != from_data:
        raise ConfigError(
            f"MODEL.NUM_CLASSES is {configured} but the training data has {from_data} speakers; "
            f"set MODEL.NUM_CLASSES {from_data} (or 0 to take it from the data)"
        )
    return from_data


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad and p.dim() > 0)


# ----- data: from the source DATASET.FEATURES names (data_objects/sources.py) -----
def identification_train_set(cfg: CfgNode, partition: str = "train") -> Dataset:
    return feature_source(cfg).identification_train_set(partition)


def identification_test_set(cfg: CfgNode, partition: str) -> Dataset:
    return feature_source(cfg).identification_test_set(partition)


def verification_train_set(cfg: CfgNode) -> Dataset:
    return feature_source(cfg).verification_train_set()


def cohort_scoring(cfg: CfgNode) -> CohortScoring | None:
    """The cohort of EVAL.SCORE_NORM: every training utterance of verification, windowed as the trials are;
    None when scores are not normalised."""
    if score_normalisation(cfg.EVAL.SCORE_NORM) is None:
        return None
    return CohortScoring(cfg.EVAL.SCORE_NORM, feature_source(cfg).verification_cohort_set(), cfg.EVAL.COHORT_SIZE,
                         cfg.EVAL.SCORE_NORM_MEAN)


def trial_list(cfg: CfgNode, trials: str | None = None) -> TrialList:
    """DATASET.TRIALS (or `trials`), relative to DATASET.DATA_DIR unless it is absolute or exists as given."""
    return feature_source(cfg).trial_list(trials or cfg.DATASET.TRIALS)


# ----- validation -----
def identification_validator(cfg: CfgNode, ctx: DistributedContext, model: nn.Module, partition: str, prefix: str):
    dataset = identification_test_set(cfg, partition)

    def validate(_epoch: int) -> dict[str, float]:
        metrics = evaluate_identification(model, dataset, ctx, cfg.DATASET.NUM_WORKERS)
        return {f"{prefix}_{name}": value for name, value in metrics.items() if name != "utterances"}

    return validate


def verification_validator(cfg: CfgNode, ctx: DistributedContext, model: nn.Module, trials: TrialList):
    utterances = trials.utterance_dataset(cfg.DATASET.PARTIAL_N_FRAMES)
    cohort = cohort_scoring(cfg)

    def validate(_epoch: int) -> dict[str, float]:
        result = evaluate_verification(model, utterances, trials.labels, trials.first, trials.second, ctx,
                                       cfg.DATASET.NUM_WORKERS, cohort)
        return {k: v for k, v in result.summary().items() if k != "trials"}

    return validate


# ----- checkpoints -----
def model_state(checkpoint: dict) -> dict:
    """The checkpoint's weights, without the `module.` prefix that (Distributed)DataParallel adds."""
    state = checkpoint["state_dict"]
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _checkpoint_in(option: str, value: str, in_run_folder: Callable[[RunDirectory], Path]) -> Path:
    """The checkpoint that `option VALUE` names: a checkpoint file, or a run folder's `in_run_folder` checkpoint."""
    path = Path(value)
    if path.is_dir():
        path = in_run_folder(RunDirectory(path))
    if not path.is_file():
        raise CheckpointError(f"{option} {value}: no checkpoint at {path}")
    return path


def checkpoint_file(load_path: str) -> Path:
    """`--load_path` of the evaluation scripts: a checkpoint file, or a run folder (its checkpoint_best.pth)."""
    return _checkpoint_in("--load_path", load_path, lambda run: run.best_checkpoint)


def inference_recipe(genotype: Genotype | None, train_set: Dataset) -> dict:
    """What a checkpoint needs beyond its config to embed raw audio without the training data: the genotype of a
    genotype network and the statistics the features are normalised with (the trainer adds the config)."""
    recipe = {} if genotype is None else {"genotype": genotype}
    mean, std = getattr(train_set, "mean", None), getattr(train_set, "std", None)
    if mean is not None and std is not None:
        recipe[FEATURE_STATS_KEY] = {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}
    return recipe


def initial_checkpoint_file(init_from: str) -> Path:
    """`--init_from` of the training scripts: a checkpoint file, or a finished run's folder (its last weights)."""
    return _checkpoint_in("--init_from", init_from, lambda run: run.last_checkpoint)


def write_results(path: Path, results: dict) -> None:
    write_text_atomically(path, json.dumps(results, indent=2, sort_keys=True) + "\n")


def entropy_of_rows(weights: torch.Tensor) -> float:
    """Mean entropy of the rows of a matrix of probabilities, divided by log(columns): 1 for uniform rows, 0 for
    one-hot ones. Near uniform rows it falls with the square of their change (functions/search_diagnostics.py)."""
    logs = torch.log(weights.clamp_min(1e-12))
    return float(-(weights * logs).sum(dim=1).mean()) / math.log(weights.size(1))


def genotype_text(genotype: Genotype | None) -> str | None:
    return None if genotype is None else genotype_to_text(genotype)


def build_network(cfg: CfgNode, ctx: DistributedContext, num_classes: int, genotype: Genotype | None) -> nn.Module:
    return build_model(cfg, num_classes, genotype).to(ctx.device)
