"""Shared test fixtures: the published-code fixtures in ../shared, and a tiny preprocessed demo corpus."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
PYTHON = sys.executable
# One thread per process: runs compared with each other then do the same arithmetic in the same order, bit for bit.
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
LAUNCHER = ["-m", "tests.helpers.launch"]


def run_script(*args: str, check: bool = True, timeout: float = 300, env: dict | None = None):
    """Run a repository script or module from the repository root; returns the CompletedProcess."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.run(
        [PYTHON, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=environment
    )
    if check and process.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {process.returncode}:\n{process.stdout}\n{process.stderr}")
    return process


def launch(processes: int, *args: str, check: bool = True, timeout: float = 300):
    """Run an entry script through tests/helpers/launch.py (its probes are options before the script), as one
    plain process or as `processes` torchrun processes on gloo; one thread each."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return run_script(*(torchrun if processes > 1 else []), *LAUNCHER, *args, check=check, timeout=timeout,
                      env=SINGLE_THREAD)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A generated VoxCeleb1-shaped corpus (7 dev + 3 test speakers), preprocessed; shared by the script tests."""
    data = tmp_path_factory.mktemp("corpus") / "VoxCeleb1"
    run_script("-m", "data_objects.synthetic", str(data), "--seed", "3", "--dev_speakers", "7",
               "--test_speakers", "3", "--videos", "2", "--utterances", "3")
    run_script("data_preprocess.py", str(data), "--workers", "2")
    return data


@pytest.fixture(scope="session")
def wav_corpus(tmp_path_factory) -> Path:
    """A generated VoxCeleb1-shaped corpus (7 dev + 3 test speakers), wavs only: what DATASET.FEATURES fbank reads."""
    data = tmp_path_factory.mktemp("wav_corpus") / "VoxCeleb1"
    run_script("-m", "data_objects.synthetic", str(data), "--seed", "3", "--dev_speakers", "7",
               "--test_speakers", "3", "--videos", "2", "--utterances", "3")
    return data


@pytest.fixture(scope="session")
def augmentation_dir(tmp_path_factory) -> Path:
    """Generated augmentation data: musan/{noise,music,speech}/ and rirs/, 3 files each."""
    folder = tmp_path_factory.mktemp("augmentation")
    run_script("-m", "data_objects.synthetic_augmentation", str(folder), "--files", "3")
    return folder


def pytest_itemcollected(item: pytest.Item) -> None:
    """Tests that share a module-scoped fixture (a training run, a search, a study) go to one pytest-xdist worker
    (`make test` runs `--dist loadgroup`), so that the fixture is built once, not once per worker."""
    module = item.nodeid.split("::")[0]
    definitions = getattr(item, "_fixtureinfo", None)
    if definitions is not None and any(fixture[-1].scope == "module" and fixture[-1].baseid == module
                                       for fixture in definitions.name2fixturedefs.values()):
        item.add_marker(pytest.mark.xdist_group(module))
