"""The search network: a stack of cells whose 14 edges each mix the operations of a search space.

Edge weights. At every forward, each cell draws its own hard Gumbel-softmax sample of log_softmax(alpha) at
the temperature `tau` (1 in the paper; `gumbel_temperature` anneals it over the epochs as GDAS does): the forward
value is one-hot per edge, the gradient that of the soft sample (straight-through). The sample is drawn once per
cell per forward, for all cells in one batch of kernels.

Two ways to run an edge, with the same forward value for the same sample:

- full mode (`single_path=False`, as the published code did): every operation of the edge runs and the edge
  output is sum_k w_k * op_k(x). With a one-hot w only the sampled term is non-zero, but each operation's output
  still reaches its weight: d(loss)/d(w_k) = <d(loss)/d(edge output), op_k(x)> for every k.
- single-path mode (`single_path=True`): only the sampled operation k* runs and the edge output is
  w_k* * op_k*(x). d(loss)/d(w_k*) is as in full mode; for every other k the term is zero, because op_k(x) is
  never computed. Each alpha of the edge still gets a gradient, through the softmax of the soft sample:
  d(w_k*)/d(alpha_j) is non-zero for all j. Only the sampled operations' weights (and BN statistics) are updated.

Choosing the operations to run needs their indices on the host: single-path mode reads all cells' sampled
indices with one `.tolist()` per forward, the only host-device synchronisation of the forward.

The `none` operation is never run in either mode: its output and its weight's gradient are zero.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.genotypes import Genotype
from models.operations import OPS, FactorizedReduce, ReLUConvBN, drop_path
from models.search_spaces import NUM_EDGES, NUM_NODES, SearchSpace, get_search_space
from models.speaker_head import HeadSpec, SpeakerHead, halved

CONCAT = range(2, 2 + NUM_NODES)


def hard_gumbel_softmax(
    logits: torch.Tensor, tau: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One-hot along the last axis in the forward pass, the gradient of the soft Gumbel-softmax sample."""
    gumbels = -torch.empty_like(logits).exponential_(generator=generator).log()
    soft = ((logits + gumbels) / tau).softmax(dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    return hard - soft.detach() + soft


class MixedOp(nn.Module):
    """The candidate operations of one edge. In the search network each pooling is followed by a BN."""

    def __init__(self, C: int, stride: int, op_names: Sequence[str]) -> None:
        super().__init__()
        self.op_names = tuple(op_names)
        self._ops = nn.ModuleList()
        for name in self.op_names:
            op = OPS[name](C, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)
        self.active = tuple(k for k, name in enumerate(self.op_names) if name != "none")

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = weights[self.active[0]] * self._ops[self.active[0]](x)
        for k in self.active[1:]:
            out = out + weights[k] * self._ops[k](x)
        return out

    def forward_sampled(self, x: torch.Tensor, weights: torch.Tensor, index: int) -> torch.Tensor | None:
        """Only operation `index`, scaled by its weight; None when that operation is `none`."""
        if self.op_names[index] == "none":
            return None
        return weights[index] * self._ops[index](x)


class SearchCell(nn.Module):
    def __init__(
        self,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        edge_ops: Sequence[Sequence[str]],
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.C = C
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList()
        for node in range(NUM_NODES):
            for input_index in range(2 + node):
                stride = 2 if reduction and input_index < 2 else 1
                self._ops.append(MixedOp(C, stride, edge_ops[len(self._ops)]))

    def _zero_node(self, s1: torch.Tensor) -> torch.Tensor:
        """A node all of whose edges sampled `none`."""
        batch, _, height, width = s1.shape
        if self.reduction:
            height, width = (height + 1) // 2, (width + 1) // 2
        return s1.new_zeros(batch, self.C, height, width)

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        weights: torch.Tensor,
        drop_prob: float,
        sampled: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """`weights`: [14, ops]; `sampled`: the operation to run on each edge (single-path), or None for all."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        edge = 0
        for _ in range(NUM_NODES):
            node = None
            for state in states:
                mixed = self._ops[edge]
                if sampled is None:
                    out = mixed(state, weights[edge])
                else:
                    out = mixed.forward_sampled(state, weights[edge], sampled[edge])
                edge += 1
                if out is None:
                    continue
                if drop_prob > 0.0:
                    out = drop_path(out, drop_prob)
                node = out if node is None else node + out
            states.append(node if node is not None else self._zero_node(states[1]))
        return torch.cat(states[2:], dim=1)


class SearchNetwork(SpeakerHead, nn.Module):
    """train mode: `forward(x)` gives logits; eval mode: the embedding (`forward_classifier` gives logits).

    `x` is [B, T, F] (time, frequency; F = head.n_features). The stem's BN is affine, as in DARTS; all BNs in the
    cells are not. The head's parameters are weights, stepped with the cells'.
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        space: str | SearchSpace = "s2",
        single_path: bool = False,
        stem_multiplier: int = 3,
        head: HeadSpec = HeadSpec(),
        max_skip_connect: int = -1,
    ) -> None:
        super().__init__()
        self.space = get_search_space(space) if isinstance(space, str) else space
        self.single_path = single_path
        self.max_skip_connect = max_skip_connect
        self.drop_path_prob = 0.0
        # Gumbel-softmax temperature of the samples; the search sets it each epoch from its schedule.
        self.tau = 1.0
        # [cells, 14, ops] weights that replace the samples (one cell of the space run with the supernet's weights).
        self.fixed_cell_weights: torch.Tensor | None = None

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(1, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        # The stem's output feeds both inputs of the first cell at one resolution: no reduction before it.
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        reduction_prev = False
        self.cells = nn.ModuleList()
        for index in range(layers):
            reduction = index in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = SearchCell(
                C_prev_prev, C_prev, C_curr, reduction, reduction_prev, self.space.edge_ops(reduction)
            )
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, NUM_NODES * C_curr
        self.attach_head(C_prev, num_classes, head)

        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, self.space.num_ops))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, self.space.num_ops))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch_ids = {id(parameter) for parameter in self.arch_parameters()}
        return [parameter for parameter in self.parameters() if id(parameter) not in arch_ids]

    def sample_cell_weights(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh straight-through one-hot sample per cell: [cells, 14, ops]."""
        log_probs = {
            False: F.log_softmax(self.alphas_normal, dim=-1),
            True: F.log_softmax(self.alphas_reduce, dim=-1),
        }
        return hard_gumbel_softmax(
            torch.stack([log_probs[cell.reduction] for cell in self.cells]), self.tau, generator
        )

    def last_map_bins(self, n_features: int) -> int:
        """The stem's max pooling and each reduction cell halve the frequency axis."""
        return halved(n_features, 1 + sum(cell.reduction for cell in self.cells))

    def feature_map(self, x: torch.Tensor, cell_weights: torch.Tensor | None = None) -> torch.Tensor:
        """`cell_weights` ([cells, 14, ops], from `sample_cell_weights`) fixes the sample; by default one is drawn."""
        fixed = cell_weights is None and self.fixed_cell_weights is not None
        if cell_weights is None:
            cell_weights = self.fixed_cell_weights if fixed else self.sample_cell_weights()
        # A fixed cell runs only its own operations; an edge it does not use is all zeros, and its argmax, `none`
        # (column 0 of s2 and s3) or an operation of weight 0, adds nothing.
        if self.single_path or fixed:
            sampled = cell_weights.argmax(dim=-1).tolist()
        else:
            sampled = [None] * len(self.cells)
        drop_prob = self.drop_path_prob if self.training else 0.0
        s0 = s1 = self.stem(x.unsqueeze(1))
        for cell, weights, cell_sample in zip(self.cells, cell_weights, sampled):
            s0, s1 = s1, cell(s0, s1, weights, drop_prob, cell_sample)
        return s1

    def arch_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(alpha) of the normal and the reduction cell, detached (e.g. for heat maps)."""
        return (
            F.softmax(self.alphas_normal.detach(), dim=-1),
            F.softmax(self.alphas_reduce.detach(), dim=-1),
        )

    def genotype(self) -> Genotype:
        return derive_genotype(self.alphas_normal, self.alphas_reduce, self.space, self.max_skip_connect)


def gumbel_temperature(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """Linear from `tau_max` at the first epoch to `tau_min` at the last (GDAS' schedule; 1 -> 1 is the paper)."""
    if epochs <= 1:
        return tau_max
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)


AlphaLike = torch.Tensor | Sequence[Sequence[float]]


def _first_edge(node: int) -> int:
    return sum(2 + earlier for earlier in range(node))


def _cap_skip_connections(
    gene: list[tuple[str, int]], weights: list[list[float]], edge_ops: Sequence[Sequence[str]], cap: int
) -> list[tuple[str, int]]:
    """Keep at most `cap` skip connections: the weakest others take their edge's best other operation.

    A simplified form of P-DARTS' rule: that one drops the weakest skip connections and ranks the node's inputs
    again, so the node may take another input; this one keeps the edge and swaps its operation."""
    skips = []
    for position, (op, input_index) in enumerate(gene):
        if op == "skip_connect":
            edge = _first_edge(position // 2) + input_index
            skips.append((weights[edge][list(edge_ops[edge]).index(op)], position, edge))
    gene = list(gene)
    excess = len(skips) - cap
    # Weakest first; equal weights go to the earlier position.
    for _, position, edge in sorted(skips):
        if excess <= 0:
            break
        names = edge_ops[edge]
        others = [k for k, name in enumerate(names) if name not in ("none", "skip_connect")]
        if not others:
            continue
        best = max(others, key=lambda k: weights[edge][k])
        gene[position] = (names[best], gene[position][1])
        excess -= 1
    return gene


def _derive_cell(
    alphas: AlphaLike, edge_ops: Sequence[Sequence[str]], max_skip_connect: int = -1
) -> list[tuple[str, int]]:
    weights = F.softmax(torch.as_tensor(alphas, dtype=torch.float32).detach().cpu(), dim=-1).tolist()
    gene = []
    start = 0
    for node in range(NUM_NODES):
        num_inputs = 2 + node
        best_op = {}
        for input_index in range(num_inputs):
            row, names = weights[start + input_index], edge_ops[start + input_index]
            candidates = [k for k, name in enumerate(names) if name != "none"]
            # max() keeps the first of equal weights: ties go to the earlier column.
            best_op[input_index] = max(candidates, key=lambda k: row[k])
        # Strongest inputs first; sorted() is stable, so ties go to the earlier input.
        ranked = sorted(range(num_inputs), key=lambda j: -weights[start + j][best_op[j]])
        for input_index in ranked[:2]:
            gene.append((edge_ops[start + input_index][best_op[input_index]], input_index))
        start += num_inputs
    if max_skip_connect >= 0:
        gene = _cap_skip_connections(gene, weights, edge_ops, max_skip_connect)
    return gene


def derive_genotype(
    alphas_normal: AlphaLike, alphas_reduce: AlphaLike, space: str | SearchSpace, max_skip_connect: int = -1
) -> Genotype:
    """For each node keep the two inputs with the largest best non-`none` softmax weight, each with that op.

    `max_skip_connect` >= 0 caps the skip connections of the normal cell (-1: no cap, the paper)."""
    space = get_search_space(space) if isinstance(space, str) else space
    return Genotype(
        normal=_derive_cell(alphas_normal, space.normal, max_skip_connect),
        normal_concat=CONCAT,
        reduce=_derive_cell(alphas_reduce, space.reduce),
        reduce_concat=CONCAT,
    )
