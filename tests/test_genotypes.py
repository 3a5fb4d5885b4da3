"""Genotypes: derivation from alphas, the text format and its parser, and the cell diagrams."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.genotypes import AUTOSPEECH, Genotype, GenotypeError, genotype_to_text, parse_genotype
from models.search_network import derive_genotype
from models.visualize import main as visualize_main
from models.visualize import plot_genotype

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / ".." / "shared" / "fixtures"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PAPER_TEXT = (
    "Genotype(normal=[('dil_conv_5x5', 1), ('dil_conv_3x3', 0), ('dil_conv_5x5', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 2), ('dil_conv_3x3', 2), ('max_pool_3x3', 1)], "
    "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 1), ('max_pool_3x3', 0), ('dil_conv_5x5', 2), "
    "('max_pool_3x3', 1), ('dil_conv_5x5', 3), ('dil_conv_3x3', 2), ('dil_conv_5x5', 4), ('dil_conv_5x5', 2)], "
    "reduce_concat=range(2, 6))"
)


def _derivation_cases() -> list[dict]:
    return json.loads((FIXTURES / "genotype_derivation.json").read_text())


@pytest.mark.parametrize("case", _derivation_cases(), ids=lambda case: case["space"])
def test_derivation_matches_the_published_code(case: dict) -> None:
    genotype = derive_genotype(
        torch.tensor(case["alphas_normal"]), torch.tensor(case["alphas_reduce"]), case["space"]
    )
    assert [list(pair) for pair in genotype.normal] == case["normal"]
    assert [list(pair) for pair in genotype.reduce] == case["reduce"]
    assert list(genotype.normal_concat) == case["normal_concat"]
    assert list(genotype.reduce_concat) == case["reduce_concat"]


def test_derivation_set_has_three_cases_per_space() -> None:
    assert sorted(case["space"] for case in _derivation_cases()) == ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3


def test_derivation_never_keeps_none() -> None:
    alphas = torch.zeros(14, 8)
    alphas[:, 0] = 10.0  # `none` dominates every edge
    genotype = derive_genotype(alphas, alphas, "s2")
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)


def test_paper_genotype_text_is_the_readme_string() -> None:
    assert repr(AUTOSPEECH) == PAPER_TEXT
    assert genotype_to_text(AUTOSPEECH) == PAPER_TEXT


def test_parser_round_trips_repr_and_text() -> None:
    assert parse_genotype(PAPER_TEXT) == AUTOSPEECH
    assert parse_genotype(repr(AUTOSPEECH)) == AUTOSPEECH
    assert parse_genotype(genotype_to_text(AUTOSPEECH)) == AUTOSPEECH
    parsed = parse_genotype("  " + PAPER_TEXT + "\n")
    assert type(parsed) is Genotype and parsed.normal_concat == range(2, 6)


def test_parser_accepts_list_concat() -> None:
    text = PAPER_TEXT.replace("range(2, 6)", "[2, 3, 4, 5]")
    parsed = parse_genotype(text)
    assert list(parsed.normal_concat) == [2, 3, 4, 5] and list(parsed.reduce_concat) == [2, 3, 4, 5]
    assert parsed.normal == AUTOSPEECH.normal
    assert genotype_to_text(parsed) == PAPER_TEXT
    partial = parse_genotype(PAPER_TEXT.replace("normal_concat=range(2, 6)", "normal_concat=[2, 5]"))
    assert "normal_concat=[2, 5]" in genotype_to_text(partial)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (PAPER_TEXT.replace("'max_pool_3x3', 1)]", "'conv_9x9', 1)]", 1), "unknown operation 'conv_9x9'"),
        (PAPER_TEXT.replace("('max_pool_3x3', 1)], normal_concat", "('max_pool_3x3', 5)], normal_concat"),
         "node 3 takes inputs 0..4, got 5"),
        (PAPER_TEXT.replace("normal=[('dil_conv_5x5', 1)", "normal=[('dil_conv_5x5', 2)"),
         "node 0 takes inputs 0..1, got 2"),
        (PAPER_TEXT.replace("('dil_conv_5x5', 1), ", "", 1), "normal has 7"),
        (PAPER_TEXT.replace("reduce=[", "reduce=[('skip_connect', 0), ", 1), "reduce has 9"),
        (PAPER_TEXT.replace("normal_concat=range(2, 6)", "normal_concat=range(0, 6)"), "nodes 2..5, got 0"),
        (PAPER_TEXT.replace("normal_concat=range(2, 6)", "normal_concat=[]"), "normal_concat is empty"),
        (PAPER_TEXT.replace("normal_concat=range(2, 6)", "normal_concat=[2, 2]"), "repeats"),
        (PAPER_TEXT.replace("('dil_conv_5x5', 1)", "('dil_conv_5x5', True)", 1), "integer literal"),
        (PAPER_TEXT.replace("('dil_conv_5x5', 1)", "('dil_conv_5x5', -1)", 1), "integer literal"),
        (PAPER_TEXT.replace("('dil_conv_5x5', 1)", "('dil_conv_5x5', 1, 2)", 1), "pair"),
        (PAPER_TEXT.replace(", reduce_concat=range(2, 6)", ""), "missing reduce_concat"),
        (PAPER_TEXT.replace("reduce_concat=", "extra=1, reduce_concat="), "no field 'extra'"),
        (PAPER_TEXT[:-1], "invalid syntax"),
        ("", "invalid syntax"),
        ("__import__('os').system('true')", "not a genotype"),
        ("Genotype(normal=[(__import__('os'), 0)], normal_concat=range(2, 6), reduce=[], "
         "reduce_concat=range(2, 6))", "operation names are string literals"),
        (PAPER_TEXT.replace("range(2, 6)", "__import__('os').system('true')", 1), "normal_concat must be"),
        ("Genotype([('sep_conv_3x3', 0)] * 8, range(2, 6), [('sep_conv_3x3', 0)] * 8, range(2, 6))", "by name"),
        ("Genotype(normal=[('sep_conv_3x3', 0)] * 8, normal_concat=range(2, 6), reduce=[], reduce_concat=[])",
         "normal must be a list"),
        ("os.Genotype(normal=[])", "not a genotype"),
        ("a\x00b", "not a genotype"),
    ],
)
def test_parser_rejects_with_one_clear_line(text: str, complaint: str) -> None:
    with pytest.raises(GenotypeError) as error:
        parse_genotype(text)
    message = str(error.value)
    assert complaint in message
    assert "\n" not in message


def test_parser_never_runs_the_text(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payloads = [
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        PAPER_TEXT.replace("range(2, 6)", f"__import__('pathlib').Path({str(marker)!r}).touch()", 1),
        PAPER_TEXT.replace("'dil_conv_5x5'", f"__import__('pathlib').Path({str(marker)!r}).touch()", 1),
    ]
    for payload in payloads:
        with pytest.raises(GenotypeError):
            parse_genotype(payload)
    assert not marker.exists()


# Cell diagrams ------------------------------------------------------------------------------------------------


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_genotype_writes_both_cells(tmp_path: Path) -> None:
    paths = plot_genotype(AUTOSPEECH, tmp_path / "cells" / "paper")
    assert paths == [tmp_path / "cells" / "paper_normal.png", tmp_path / "cells" / "paper_reduce.png"]
    for path in paths:
        _assert_png(path)


@pytest.mark.parametrize("source", ["text", "text_file", "checkpoint"])
def test_visualize_command_reads_text_files_and_checkpoints(tmp_path: Path, source: str) -> None:
    argument = {
        "text": PAPER_TEXT,
        "text_file": str(tmp_path / "genotype.txt"),
        "checkpoint": str(FIXTURES / "genotype_net_C8_L3_K10.pth"),
    }[source]
    (tmp_path / "genotype.txt").write_text(PAPER_TEXT + "\n")
    assert visualize_main([argument, str(tmp_path / "out")]) == 0
    _assert_png(tmp_path / "out_normal.png")
    _assert_png(tmp_path / "out_reduce.png")


@pytest.mark.parametrize(
    "argument",
    ["Genotype(normal=[('sep_conv_3x3', 0)])", "__import__('os').system('true')", "missing_checkpoint.pth"],
)
def test_visualize_command_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, argument: str
) -> None:
    assert visualize_main([argument, str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_visualize_refuses_a_checkpoint_without_genotype(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "search.pth"
    torch.save({"epoch": 1, "state_dict": {}}, path)
    assert visualize_main([str(path), str(tmp_path / "out")]) == 2
    assert "holds no genotype" in capsys.readouterr().err


def test_visualize_module_exits_2_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "models.visualize", "Genotype(normal=[('nope', 0)])", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
