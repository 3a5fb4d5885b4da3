"""A search whose answer is known: one candidate of every edge is useless (noise of its input's shape), and the
search, run as search.py runs it on the tiny corpus, must give it the lowest weight on more than half of the 28
edges (20 here). By chance, as with a lost or detached architecture gradient, it comes last on about a third of
them (11 with the straight-through gradient detached, 12 with the architecture step's labels shifted by one
against its inputs; more than 14 happens by chance with probability 0.003).

Single-path mode with four Gumbel samples per step: in full mode the noise operation runs on every step, and its
weight's gradient, <d loss / d output, noise>, is then mostly noise too (it took more steps than a test can run).
"""
from __future__ import annotations

from argparse import Namespace

import torch
from torch import nn

from functions.tasks import run_search
from models import search_spaces
from models.operations import OPS
from models.search_spaces import NUM_EDGES, SearchSpace
from tests.test_scripts import only_run
from utils.checkpoint import load_checkpoint

USELESS = "noise_of_input_shape"
KNOWN = SearchSpace("known", normal=((USELESS, "skip_connect", "avg_pool_3x3"),) * NUM_EDGES,
                    reduce=((USELESS, "skip_connect", "avg_pool_3x3"),) * NUM_EDGES)


class NoiseOfInputShape(nn.Module):
    """Gaussian noise of the output's shape at four times the input's scale: carries nothing about the input."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return torch.randn_like(x) * (4 * x.detach().std())


def test_the_search_gives_a_useless_operation_the_lowest_weight_on_most_edges(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(OPS, USELESS, lambda C, stride, affine: NoiseOfInputShape(stride))
    monkeypatch.setitem(search_spaces.SEARCH_SPACES, KNOWN.name, KNOWN)
    # Three cells: one normal, two reduction cells, so that both sets of alphas are searched; 7 steps an epoch.
    opts = ["DATASET.DATA_DIR", str(tiny_corpus), "OUTPUT_DIR", str(tmp_path), "MODEL.SEARCH_SPACE", KNOWN.name,
            "DATASET.PARTIAL_N_FRAMES", "50", "MODEL.INIT_CHANNELS", "4", "MODEL.LAYERS", "3",
            "TRAIN.BATCH_SIZE", "4", "TRAIN.END_EPOCH", "3", "VAL_FREQ", "100",
            "TRAIN.ARCH_LR", "0.01", "TRAIN.DROPPATH_PROB", "0.0", "MODEL.SINGLE_PATH", "True",
            "TRAIN.ARCH_SAMPLES", "4"]
    run_search(Namespace(cfg="exps/demo/search.yaml", opts=opts, load_path=None))
    state = load_checkpoint(only_run(tmp_path / "logs_search") / "Model" / "checkpoint_last.pth")["state_dict"]
    alphas = torch.cat([state["alphas_normal"], state["alphas_reduce"]])
    lowest = int((alphas.argmin(dim=-1) == KNOWN.normal[0].index(USELESS)).sum())
    assert lowest > 0.5 * len(alphas), f"the useless operation is the weakest on only {lowest} of {len(alphas)} edges"
