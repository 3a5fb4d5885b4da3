"""The recipe of a network: what a checkpoint's weights only make sense with, and what is checked before they load.

A checkpoint carries the config it was trained with (`config`, the YAML of cfg.dump()); its recipe is read from
there. A checkpoint without one (runs from before the key existed, the authors' released checkpoints) was trained
with the published recipe. Keys missing from a stored config take their published default.
"""
from __future__ import annotations

import yaml
from yacs.config import CfgNode

from models.losses import classifier_kind
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
}


def recipe_of(cfg: CfgNode) -> dict[str, str | int]:
    """Front-end, input bins, pooling, embedding size and classifier kind ('linear' or 'cosine') of `cfg`."""
    return {
        "features": cfg.DATASET.FEATURES,
        "n_features": feature_dimension(cfg),
        "pooling": cfg.MODEL.POOLING,
        "embedding_dim": cfg.MODEL.EMBEDDING_DIM,
        "classifier": classifier_kind(cfg.LOSS.NAME),
    }


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
                    cfg[section][key] = value
    return cfg


def checkpoint_recipe(checkpoint: dict) -> dict[str, str | int]:
    """The recipe the checkpoint was trained with; the published recipe when it carries no config."""
    return recipe_of(_stored_config(checkpoint))


def check_recipe(checkpoint: dict, cfg: CfgNode, source: str) -> None:
    """Raise CheckpointError naming the first recipe entry in which `cfg` differs from the checkpoint `source`."""
    trained, wanted = checkpoint_recipe(checkpoint), recipe_of(cfg)
    for entry, key in RECIPE_KEYS.items():
        if trained[entry] != wanted[entry]:
            raise CheckpointError(
                f"{source} was trained with {entry} {trained[entry]} but the config has {wanted[entry]}; "
                f"set {key} to match the checkpoint"
            )
