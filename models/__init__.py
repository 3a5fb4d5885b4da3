"""Networks of the project and `build_model`, which picks one from the configuration."""
from __future__ import annotations

import warnings

from torch import nn
from yacs.config import CfgNode

# `python -m models.genotypes random ...` runs a module this package has already imported; runpy's warning about
# that is harmless here (the module keeps no state).
warnings.filterwarnings("ignore", message="'models.genotypes' found in sys.modules", category=RuntimeWarning)

from models.genotype_network import GenotypeNetwork  # noqa: E402
from models.genotypes import AUTOSPEECH, Genotype, GenotypeError, genotype_to_text, parse_genotype  # noqa: E402
from models.search_network import SearchNetwork, derive_genotype  # noqa: E402
from models.speaker_head import HeadSpec  # noqa: E402

MODEL_NAMES = ("model_search", "model", "resnet18", "resnet34", "wespeaker_resnet34")

__all__ = [
    "AUTOSPEECH",
    "MODEL_NAMES",
    "Genotype",
    "GenotypeError",
    "GenotypeNetwork",
    "SearchNetwork",
    "build_model",
    "derive_genotype",
    "genotype_to_text",
    "parse_genotype",
]


def build_model(cfg: CfgNode, num_classes: int, genotype: Genotype | None = None) -> nn.Module:
    """The network named by cfg.MODEL.NAME, with the head of the config (pooling, embedding, classifier of the loss)
    for its input features; 'model' (the network of a genotype) needs `genotype`."""
    name = cfg.MODEL.NAME
    head = HeadSpec.from_config(cfg)
    if name == "model_search":
        return SearchNetwork(
            cfg.MODEL.INIT_CHANNELS,
            num_classes,
            cfg.MODEL.LAYERS,
            space=cfg.MODEL.SEARCH_SPACE,
            single_path=cfg.MODEL.SINGLE_PATH,
            head=head,
            max_skip_connect=cfg.MODEL.MAX_SKIP_CONNECT,
        )
    if name == "model":
        if genotype is None:
            raise ValueError("MODEL.NAME 'model' needs a genotype (e.g. --text_arch or a checkpoint's 'genotype')")
        return GenotypeNetwork(cfg.MODEL.INIT_CHANNELS, num_classes, cfg.MODEL.LAYERS, genotype, head, cfg.MODEL.STEM)
    if name in ("resnet18", "resnet34"):
        # Importing torchvision takes seconds; the cell networks never need it.
        from models.resnet import build_resnet

        return build_resnet(name, num_classes, cfg.MODEL.PRETRAINED, head)
    if name == "wespeaker_resnet34":
        from models.time_keeping_resnet import build_time_keeping_resnet

        return build_time_keeping_resnet(name, num_classes, cfg.MODEL.RESNET_WIDTH, head)
    raise ValueError(f"unknown MODEL.NAME {name!r}; valid names: {', '.join(MODEL_NAMES)}")
