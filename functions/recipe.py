"""The recipe of a network: what a checkpoint's weights only make sense with, and what is checked before they load.

A checkpoint carries the config it was trained with (`config`, the YAML of cfg.dump()); its recipe is read from
there. A checkpoint without one (runs from before the key existed, the authors' released checkpoints) was trained
with the published recipe. Keys missing from a stored config take their published default.
"""
from __future__ import annotations

import yaml
from yacs.config import CfgNode

from models.losses import LOSSES, classifier_kind
from models.speaker_head import feature_dimension
from utils.checkpoint import CheckpointError
from utils.config import get_default_config

# Recipe entry -> the config key a user changes to match it.
RECIPE_KEYS = {
    "features": "DATASET.FEATURES",
    "n_features": "DATASET.N_MELS",
    "pooling": "MODEL.POOLING",
    "embedding_dim": "MODEL.EMBEDDING_DIM",
    "classifier": "LOSS.NAME",
    "speed_perturb": "AUGMENT.SPEED_PERTURB",
    "stem": "MODEL.STEM",
}


def recipe_of(cfg: CfgNode) -> dict[str, str | int]:
    """Front-end, input bins, pooling, embedding size and classifier kind ('linear' or 'cosine') of `cfg`."""
    return {
        "features": cfg.DATASET.FEATURES,
        "n_features": feature_dimension(cfg),
        "pooling": cfg.MODEL.POOLING,
        "embedding_dim": cfg.MODEL.EMBEDDING_DIM,
        "classifier": classifier_kind(cfg.LOSS.NAME),
        # Speed perturbation triples the classifier's classes.
        "speed_perturb": bool(cfg.AUGMENT.SPEED_PERTURB),
        # The stems' strides differ, their weights do not: only the recipe tells them apart.
        "stem": cfg.MODEL.STEM,
    }


def _typed(key: str, value, default):
    """A stored value as the type of its default (a YAML dump may hold 80 as '80'); CheckpointError when it is not
    one."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise CheckpointError(f"the checkpoint's stored config has {key} {value!r}, not True or False")
    if isinstance(default, (int, float)):
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            raise CheckpointError(f"the checkpoint's stored config has {key} {value!r}, not a number") from None
    return str(value) if isinstance(default, str) else value


def _stored_config(checkpoint: dict) -> CfgNode:
    """The checkpoint's config over the defaults: its known keys, published defaults for the rest."""
    cfg = get_default_config()
    text = checkpoint.get("config")
    if not isinstance(text, str):
        return cfg
    try:
        stored = yaml.safe_load(text)
    except yaml.YAMLError:
        raise CheckpointError("the checkpoint's stored config is not valid YAML") from None
    if not isinstance(stored, dict):
        return cfg
    for section, keys in stored.items():
        if isinstance(keys, dict) and isinstance(cfg.get(section), CfgNode):
            for key, value in keys.items():
                if key in cfg[section]:
                    cfg[section][key] = _typed(f"{section}.{key}", value, cfg[section][key])
    if cfg.LOSS.NAME not in LOSSES:
        raise CheckpointError(f"the checkpoint's stored config has an unknown LOSS.NAME '{cfg.LOSS.NAME}'; "
                              f"known: {', '.join(LOSSES)}")
    return cfg


def checkpoint_recipe(checkpoint: dict) -> dict[str, str | int]:
    """The recipe the checkpoint was trained with; the published recipe when it carries no config."""
    return recipe_of(_stored_config(checkpoint))


def check_recipe(checkpoint: dict, cfg: CfgNode, source: str) -> None:
    """Raise CheckpointError naming the first recipe entry in which `cfg` differs from the checkpoint `source`."""
    try:
        trained = checkpoint_recipe(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    wanted = recipe_of(cfg)
    for entry, key in RECIPE_KEYS.items():
        if trained[entry] != wanted[entry]:
            raise CheckpointError(
                f"{source} was trained with {entry} {trained[entry]} but the config has {wanted[entry]}; "
                f"set {key} to match the checkpoint"
            )
