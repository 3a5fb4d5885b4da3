"""Console and file logging that leaves tqdm progress bars intact; quiet on every process but rank 0."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

LOGGER_NAME = "autospeech"
_FORMAT = "%(asctime)s %(message)s"


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def create_logger(log_file: Path | None = None, is_main: bool = True) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if not is_main:
        logger.addHandler(logging.NullHandler())
        return logger
    formatter = logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    console = _TqdmHandler()
    console.setFormatter(formatter)
    logger.addHandler(console)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
