"""Genotypes: the paper's cell, and a safe reader and writer of the genotype text format.

The text format is the repr of the `Genotype` namedtuple, as the published code printed it and as its README
passes it on the command line (`--text_arch`):

    Genotype(normal=[('dil_conv_5x5', 1), ...], normal_concat=range(2, 6), reduce=[...], reduce_concat=range(2, 6))

`parse_genotype` reads it by walking the syntax tree of literals; nothing in the text is ever executed.

    python -m models.genotypes random --space s2 --seed 3     # prints a random cell's text for --text_arch
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from models.random_cells import random_genotype
from models.search_spaces import KNOWN_OPS, NUM_NODES, SEARCH_SPACES
from utils import Genotype
from utils.checkpoint import load_checkpoint
from utils.cli import OneLineErrorParser

__all__ = [
    "AUTOSPEECH", "Genotype", "GenotypeError", "genotype_to_text", "load_genotype", "parse_genotype",
    "validate_genotype",
]

# The cell found by the search in the paper (seed README).
AUTOSPEECH = Genotype(
    normal=[
        ("dil_conv_5x5", 1), ("dil_conv_3x3", 0),
        ("dil_conv_5x5", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
        ("dil_conv_3x3", 2), ("max_pool_3x3", 1),
    ],
    normal_concat=range(2, 6),
    reduce=[
        ("max_pool_3x3", 1), ("max_pool_3x3", 0),
        ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
        ("dil_conv_5x5", 3), ("dil_conv_3x3", 2),
        ("dil_conv_5x5", 4), ("dil_conv_5x5", 2),
    ],
    reduce_concat=range(2, 6),
)

PAIRS_PER_CELL = 2 * NUM_NODES
# States of a cell: 0 and 1 are the cell inputs, 2..5 the intermediate nodes.
FIRST_NODE_STATE, LAST_NODE_STATE = 2, NUM_NODES + 1


class GenotypeError(ValueError):
    """Text or a value that is not a valid genotype; the message is one line saying what is wrong."""


def _describe(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 40 else text[:37] + "..."


def _int_literal(node: ast.AST, what: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    raise GenotypeError(f"{what} must be an integer literal, got {_describe(node)}")


def _read_pairs(node: ast.AST, field: str) -> list[tuple[str, int]]:
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise GenotypeError(f"{field} must be a list of (operation, input) pairs, got {_describe(node)}")
    pairs = []
    for element in node.elts:
        if not (isinstance(element, ast.Tuple) and len(element.elts) == 2):
            raise GenotypeError(f"{field}: expected an (operation, input) pair, got {_describe(element)}")
        op_node, input_node = element.elts
        if not (isinstance(op_node, ast.Constant) and isinstance(op_node.value, str)):
            raise GenotypeError(f"{field}: operation names are string literals, got {_describe(op_node)}")
        pairs.append((op_node.value, _int_literal(input_node, f"{field}: input index")))
    return pairs


def _read_concat(node: ast.AST, field: str) -> range | list[int]:
    is_range_call = (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and not node.keywords
        and len(node.args) == 2
    )
    if is_range_call:
        start, stop = (_int_literal(arg, f"{field}: range bound") for arg in node.args)
        return range(start, stop)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_int_literal(element, f"{field}: node index") for element in node.elts]
    raise GenotypeError(f"{field} must be range(a, b) or a list of node indices, got {_describe(node)}")


def _check_cell(pairs: Sequence[tuple[str, int]], concat: Sequence[int], cell: str) -> None:
    if len(pairs) != PAIRS_PER_CELL:
        raise GenotypeError(f"{cell} has {len(pairs)} (operation, input) pairs; a cell needs {PAIRS_PER_CELL}")
    for position, (op, input_index) in enumerate(pairs):
        node = position // 2
        if op not in KNOWN_OPS:
            raise GenotypeError(f"{cell}: unknown operation {op!r}; known: {', '.join(sorted(KNOWN_OPS))}")
        if not 0 <= input_index <= node + 1:
            raise GenotypeError(f"{cell}: node {node} takes inputs 0..{node + 1}, got {input_index}")
    concat_field = f"{cell}_concat"
    if len(concat) == 0:
        raise GenotypeError(f"{concat_field} is empty")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{concat_field} repeats a node: {list(concat)}")
    for state in concat:
        if not FIRST_NODE_STATE <= state <= LAST_NODE_STATE:
            raise GenotypeError(
                f"{concat_field} may only hold nodes {FIRST_NODE_STATE}..{LAST_NODE_STATE}, got {state}"
            )


def validate_genotype(genotype: Genotype) -> None:
    """Raise GenotypeError unless both cells have 8 known (operation, valid input) pairs and a valid concat."""
    _check_cell(genotype.normal, genotype.normal_concat, "normal")
    _check_cell(genotype.reduce, genotype.reduce_concat, "reduce")


def parse_genotype(text: str) -> Genotype:
    """Read `Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)` without evaluating it."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise GenotypeError(f"not a genotype: invalid syntax ({error.msg}, column {error.offset})") from None
    except ValueError as error:  # e.g. a NUL character in the text
        raise GenotypeError(f"not a genotype: {error}") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise GenotypeError(f"not a genotype: expected Genotype(normal=..., ...), got {_describe(call)}")
    if call.args:
        raise GenotypeError("Genotype(...) fields must be given by name: normal=, normal_concat=, reduce=, ...")
    fields = {}
    for keyword in call.keywords:
        if keyword.arg not in Genotype._fields:
            raise GenotypeError(f"Genotype has no field {keyword.arg!r}; fields: {', '.join(Genotype._fields)}")
        if keyword.arg in fields:
            raise GenotypeError(f"Genotype field {keyword.arg!r} is given twice")
        fields[keyword.arg] = keyword.value
    missing = [name for name in Genotype._fields if name not in fields]
    if missing:
        raise GenotypeError(f"Genotype is missing {', '.join(missing)}")
    genotype = Genotype(
        normal=_read_pairs(fields["normal"], "normal"),
        normal_concat=_read_concat(fields["normal_concat"], "normal_concat"),
        reduce=_read_pairs(fields["reduce"], "reduce"),
        reduce_concat=_read_concat(fields["reduce_concat"], "reduce_concat"),
    )
    validate_genotype(genotype)
    return genotype


def _concat_to_text(concat: Sequence[int]) -> str:
    values = list(concat)
    if values and values == list(range(values[0], values[-1] + 1)):
        return repr(range(values[0], values[-1] + 1))
    return repr(values)


def genotype_to_text(genotype: Genotype) -> str:
    """The genotype's repr, with a run of consecutive concat nodes written range(a, b) as the published code did."""
    def pairs_to_text(pairs: Sequence[tuple[str, int]]) -> str:
        return repr([(str(op), int(index)) for op, index in pairs])

    return (
        f"Genotype(normal={pairs_to_text(genotype.normal)}, "
        f"normal_concat={_concat_to_text(genotype.normal_concat)}, "
        f"reduce={pairs_to_text(genotype.reduce)}, "
        f"reduce_concat={_concat_to_text(genotype.reduce_concat)})"
    )


def _genotype_from_checkpoint(path: Path) -> Genotype:
    genotype = load_checkpoint(path).get("genotype")
    if not isinstance(genotype, tuple) or len(genotype) != len(Genotype._fields):
        raise GenotypeError(f"{path} holds no genotype (a search-network or ResNet checkpoint?)")
    genotype = Genotype(*genotype)
    validate_genotype(genotype)
    return genotype


def load_genotype(source: str) -> Genotype:
    """`source` is genotype text, a file holding the text, or a checkpoint with a 'genotype'."""
    if source.lstrip().startswith("Genotype"):
        return parse_genotype(source)
    path = Path(source)
    if not path.is_file():
        raise GenotypeError(f"{source!r} is neither an existing file nor genotype text Genotype(normal=[...], ...)")
    with path.open("rb") as file:
        holds_text = file.read(4096).lstrip().startswith(b"Genotype")
    if holds_text:
        return parse_genotype(path.read_text(encoding="utf-8", errors="replace"))
    return _genotype_from_checkpoint(path)


def choose_genotype(text_arch: str | None, carried: Genotype | None, carrier: str) -> Genotype:
    """The genotype named by --text_arch, which must agree with the one `carried` by a checkpoint (described by
    `carrier` in the error), else the carried one."""
    if text_arch:
        genotype = load_genotype(text_arch)
        if carried is not None and tuple(map(list, genotype)) != tuple(map(list, carried)):
            raise GenotypeError(f"--text_arch differs from the genotype {carrier}")
        return genotype
    if carried is not None:
        return carried
    raise GenotypeError("MODEL.NAME 'model' needs a genotype: pass --text_arch GENOTYPE (text, file or checkpoint)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = OneLineErrorParser(prog="python -m models.genotypes", description="Genotype tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    random_parser = commands.add_parser("random", help="print the text of a cell drawn uniformly from a space")
    random_parser.add_argument("--space", choices=sorted(SEARCH_SPACES), default="s2")
    random_parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    print(genotype_to_text(random_genotype(args.space, args.seed)))


if __name__ == "__main__":
    main()
