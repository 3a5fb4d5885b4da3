"""Checkpoints: atomic saving, weights-only loading of published files, refusal of anything else."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from models.genotype_network import GenotypeNetwork
from models.genotypes import AUTOSPEECH
from utils import Genotype
from utils.checkpoint import CheckpointError, load_checkpoint, load_state_dict_strict, save_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
PUBLISHED = FIXTURES / "genotype_net_C8_L3_K10.pth"


class NotAllowed:
    """An object whose class is no tensor, container or allow-listed record."""

    def __init__(self) -> None:
        self.value = 3


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_published_checkpoint_loads_with_its_genotype_and_range() -> None:
    checkpoint = load_checkpoint(PUBLISHED)
    assert {"epoch", "state_dict", "optimizer", "path_helper", "genotype", "best_acc1"} <= set(checkpoint)
    assert type(checkpoint["genotype"]) is Genotype
    assert checkpoint["genotype"].normal_concat == range(2, 6)
    assert checkpoint["state_dict"]["classifier.weight"].shape == (10, 128)


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    state = {
        "epoch": 4,
        "state_dict": {"w": torch.arange(6.0).reshape(2, 3)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.01, "params": [0]}]},
        "genotype": AUTOSPEECH,
        "best_eer": 8.95,
        "path_helper": {"prefix": "logs_scratch/x"},
    }
    path = tmp_path / "checkpoint_4.pth"
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert loaded["genotype"] == AUTOSPEECH and type(loaded["genotype"]) is Genotype
    assert torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert loaded["best_eer"] == 8.95 and loaded["epoch"] == 4
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_4.pth"]


def test_failed_save_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_best.pth"
    save_checkpoint({"epoch": 1}, path)
    with pytest.raises(Exception):
        save_checkpoint({"epoch": 2, "unpicklable": lambda: None}, path)
    assert load_checkpoint(path) == {"epoch": 1}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_best.pth"]


def test_foreign_class_is_refused_and_named(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pth"
    torch.save({"epoch": 1, "extra": NotAllowed()}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = _one_line(error)
    assert "refused" in message and "not allowed" in message and "NotAllowed" in message


@pytest.mark.parametrize("zip_format", [True, False])
def test_code_in_a_checkpoint_is_refused_and_never_run(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "payload.pth"
    torch.save({"state_dict": {}, "x": RunsACommand(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = _one_line(error)
    assert "refused" in message and "system" in message
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 10, 1000, 0.5, -200])
def test_truncated_checkpoint_is_reported(tmp_path: Path, keep: float) -> None:
    data = PUBLISHED.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "truncated or corrupt" in _one_line(error)


def test_missing_checkpoint_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found") as error:
        load_checkpoint(tmp_path / "absent.pth")
    _one_line(error)


def test_checkpoint_that_is_not_a_dict_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.ones(2), path)
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def published_state_dict() -> dict:
    return load_checkpoint(PUBLISHED)["state_dict"]


def test_strict_loading_fills_a_fitting_model(published_state_dict: dict) -> None:
    model = GenotypeNetwork(8, 10, 3, AUTOSPEECH)
    load_state_dict_strict(model, published_state_dict)
    assert torch.equal(model.classifier.weight, published_state_dict["classifier.weight"])


def test_class_count_mismatch_names_the_classifier_and_both_shapes(published_state_dict: dict) -> None:
    model = GenotypeNetwork(8, 20, 3, AUTOSPEECH)
    with pytest.raises(CheckpointError) as error:
        load_state_dict_strict(model, published_state_dict)
    assert _one_line(error) == (
        "checkpoint does not fit the model: classifier.weight has shape [10, 128] in the checkpoint, "
        "[20, 128] in the model"
    )


def test_missing_and_unexpected_keys_are_named(published_state_dict: dict) -> None:
    model = GenotypeNetwork(8, 10, 3, AUTOSPEECH)
    without_stem = {key: value for key, value in published_state_dict.items() if key != "stem1.1.weight"}
    with pytest.raises(CheckpointError, match="stem1.1.weight is missing from the checkpoint"):
        load_state_dict_strict(model, without_stem)
    with_extra = {**published_state_dict, "auxiliary_head.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="auxiliary_head.weight in the checkpoint is not in the model"):
        load_state_dict_strict(model, with_extra)
