"""The network trained from scratch on a genotype: a fixed cell repeated, with reductions at 1/3 and 2/3 depth."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.genotypes import Genotype, validate_genotype
from models.operations import OPS, FactorizedReduce, Identity, ReLUConvBN, drop_path
from models.speaker_head import HeadSpec, SpeakerHead, halved

# MODEL.STEM: the (time, frequency) strides of stem0's two convolutions; stem1 and the first cell's
# FactorizedReduce halve both axes after them. 'published' halves time three times before the cells (a 2-s crop
# reaches the pooling as 7 frames); 'time_keeping' halves only frequency in stem0, so time is divided by 8 in all
# (25 frames for 2 s) and frequency by 32 as before.
STEMS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "published": ((2, 2), (2, 2)),
    "time_keeping": ((1, 2), (1, 2)),
}


class GenotypeCell(nn.Module):
    def __init__(
        self,
        genotype: Genotype,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        pairs: Sequence[tuple[str, int]] = genotype.reduce if reduction else genotype.normal
        self._concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self._indices = [input_index for _, input_index in pairs]
        self._ops = nn.ModuleList(
            OPS[name](C, 2 if reduction and input_index < 2 else 1, True) for name, input_index in pairs
        )
        self.multiplier = len(self._concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for first in range(0, len(self._ops), 2):
            node = None
            for op, input_index in zip(self._ops[first : first + 2], self._indices[first : first + 2]):
                out = op(states[input_index])
                if drop_prob > 0.0 and not isinstance(op, Identity):
                    out = drop_path(out, drop_prob)
                node = out if node is None else node + out
            states.append(node)
        return torch.cat([states[index] for index in self._concat], dim=1)


class GenotypeNetwork(SpeakerHead, nn.Module):
    """train mode: `forward(x)` gives logits; eval mode: the embedding (`forward_classifier` gives logits).

    `x` is [B, T, F] (time, frequency; F = head.n_features). Set `drop_path_prob` during training (0 by default).
    """

    def __init__(self, C: int, num_classes: int, layers: int, genotype: Genotype, head: HeadSpec = HeadSpec(),
                 stem: str = "published") -> None:
        super().__init__()
        validate_genotype(genotype)
        if stem not in STEMS:
            raise ValueError(f"unknown MODEL.STEM {stem!r}; known: {', '.join(STEMS)}")
        self.genotype = genotype
        self.drop_path_prob = 0.0
        first_stride, second_stride = STEMS[stem]
        self.stem0 = nn.Sequential(
            nn.Conv2d(1, C // 2, kernel_size=3, stride=first_stride, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=second_stride, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        # Not in place: stem0's output is also the first cell's input.
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        # stem1 halves the resolution of stem0's output, so the first cell reduces its first input.
        C_prev_prev, C_prev, C_curr = C, C, C
        reduction_prev = True
        self.cells = nn.ModuleList()
        for index in range(layers):
            reduction = index in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = GenotypeCell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        self.attach_head(C_prev, num_classes, head)

    def last_map_bins(self, n_features: int) -> int:
        """The three stride-2 stem convolutions and each reduction cell halve the frequency axis."""
        return halved(n_features, 3 + sum(cell.reduction for cell in self.cells))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        drop_prob = self.drop_path_prob if self.training else 0.0
        s0 = self.stem0(x.unsqueeze(1))
        s1 = self.stem1(s0)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, drop_prob)
        return s1
