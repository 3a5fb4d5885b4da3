"""The folder of one run: `<OUTPUT_DIR>/<logs kind>/<config name>_<timestamp>/{Model,Log}`."""
from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from yacs.config import CfgNode

from utils.checkpoint import CheckpointError, load_checkpoint
from utils.files import ensure_writable_dir, remove_stale_temporaries, write_text_atomically

CHECKPOINT_LAST = "checkpoint_last.pth"
CHECKPOINT_BEST = "checkpoint_best.pth"
METRICS_FILE = "metrics.jsonl"


class RunDirectoryError(FileNotFoundError):
    """A run folder that does not exist or does not hold a run."""


@dataclass(frozen=True)
class RunDirectory:
    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "Model"

    @property
    def log_dir(self) -> Path:
        return self.root / "Log"

    @property
    def last_checkpoint(self) -> Path:
        return self.model_dir / CHECKPOINT_LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.model_dir / CHECKPOINT_BEST

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.model_dir / f"checkpoint_{epoch}.pth"

    @property
    def path_helper(self) -> dict[str, str]:
        """The run's paths in the form published checkpoints carry."""
        return {
            "prefix": str(self.root),
            "ckpt_path": str(self.model_dir),
            "log_path": str(self.log_dir),
            "sample_path": str(self.root / "Samples"),
        }

    @classmethod
    def create(cls, output_dir: str, logs_kind: str, cfg_path: str) -> "RunDirectory":
        timestamp = datetime.now().strftime("%Y_%m_%d_%H_%M_%S")
        base = Path(output_dir) / logs_kind / f"{Path(cfg_path).stem}_{timestamp}"
        root, suffix = base, 1
        while root.exists():
            root, suffix = base.with_name(f"{base.name}_{suffix}"), suffix + 1
        run = cls(root)
        ensure_writable_dir(run.model_dir)
        ensure_writable_dir(run.log_dir)
        return run

    @classmethod
    def existing(cls, path: str | Path) -> "RunDirectory":
        root = Path(path)
        if not root.is_dir():
            raise RunDirectoryError(f"--load_path {path} does not exist or is not a folder")
        if not (root / "Model").is_dir():
            raise RunDirectoryError(f"--load_path {path} is not a run folder (it has no Model/ folder)")
        run = cls(root)
        ensure_writable_dir(run.model_dir)
        ensure_writable_dir(run.log_dir)
        # A run killed while writing a checkpoint or log leaves its temporary file behind.
        for folder in (run.root, run.model_dir, run.log_dir):
            remove_stale_temporaries(folder)
        return run

    def save_run_info(self, cfg: CfgNode, genotype_text: str | None = None) -> None:
        """Keep what is needed to repeat the run: the config, the command line and the genotype."""
        write_text_atomically(self.root / "config.yaml", cfg.dump())
        command = " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv])
        with open(self.root / "command.txt", "a", encoding="utf-8") as handle:
            handle.write(command + "\n")
        if genotype_text is not None:
            write_text_atomically(self.root / "genotype.txt", genotype_text + "\n")

    def write_metrics(self, history: list[dict]) -> None:
        write_text_atomically(self.log_dir / METRICS_FILE, "".join(json.dumps(row) + "\n" for row in history))


def checkpoint_candidates(run: RunDirectory) -> list[Path]:
    """checkpoint_last.pth, then the epoch checkpoints from newest to oldest."""
    epochs = []
    for path in run.model_dir.glob("checkpoint_*.pth"):
        suffix = path.stem.split("_", 1)[1]
        if suffix.isdigit():
            epochs.append((int(suffix), path))
    return [run.last_checkpoint] + [path for _, path in sorted(epochs, reverse=True)]


def load_resume_checkpoint(run: RunDirectory, logger: logging.Logger) -> dict:
    """The newest checkpoint of `run` that loads; a corrupt one is reported and the one before it is used."""
    problems = []
    for path in checkpoint_candidates(run):
        if not path.exists():
            continue
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            logger.info(f"warning: {error}; trying the previous checkpoint")
            problems.append(str(error))
            continue
        logger.info(f"resuming from {path} (epoch {checkpoint['epoch']}, step {checkpoint.get('step_in_epoch', 0)})")
        return checkpoint
    detail = f" ({problems[-1]})" if problems else ""
    raise CheckpointError(f"no usable checkpoint in {run.model_dir}{detail}")
