"""Command-line plumbing of the entry scripts: the published arguments, and one clear line for bad input."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm

EXIT_BAD_INPUT = 2
# What a shell reports for a process stopped by Ctrl-C (128 + SIGINT) or by SIGTERM (128 + SIGTERM).
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(Exception):
    """SIGTERM arrived outside the training loop (which saves its state before it stops)."""


def _raise_terminated(_signum: int, _frame) -> None:
    raise Terminated()


def _default_sigterm_in_child() -> None:
    # A forked worker (data loader, preprocessing pool) that kept the raising handler would not die when its
    # parent terminates it; a pool's workers then hung in its shutdown.
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_child)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in this process, so that `finally` blocks and temporary-file
    clean-ups run and the process says why it stopped. Processes forked from it still die at once, as by default.
    The previous handler is restored on leaving."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the scripts."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def build_parser(
    description: str, text_arch: bool = False, load_path: str | None = None, load_path_required: bool = False,
    init_from: bool = False, cfg_help: str | None = None,
) -> argparse.ArgumentParser:
    """The published arguments; `init_from` adds --init_from, which starts a new run from another run's weights
    (fine-tuning) and cannot be combined with --load_path, which resumes a run; `cfg_help` makes --cfg optional
    (for scripts that can take the config from a checkpoint) and says so."""
    parser = OneLineErrorParser(description=description)
    parser.add_argument("--cfg", required=cfg_help is None,
                        help=cfg_help or "experiment config (YAML) file, e.g. exps/search.yaml")
    if text_arch:
        parser.add_argument(
            "--text_arch",
            help="the genotype: its text (as printed by search.py), a file holding the text, or a checkpoint",
        )
    # --load_path and --init_from exclude each other only where a script takes both; a group of fewer members
    # excludes nothing, and argparse cannot write the usage of an empty one.
    excludes = bool(load_path) and init_from and not load_path_required
    starts = parser.add_mutually_exclusive_group() if excludes else parser
    if load_path:
        starts.add_argument("--load_path", help=load_path, required=load_path_required)
    if init_from:
        starts.add_argument(
            "--init_from", metavar="CHECKPOINT",
            help="start a new run with the weights of this checkpoint file or run folder (its checkpoint_last.pth); "
                 "epochs, learning-rate schedule and optimiser start afresh from this run's config",
        )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=None,
        help="config overrides as KEY VALUE pairs, e.g. DATASET.DATA_DIR /data/VoxCeleb1 TRAIN.END_EPOCH 10",
    )
    return parser


def _close_progress_bars() -> None:
    """Close the bars an error left open: closed later, at exit, they would redraw below its message."""
    for bar in list(tqdm._instances):
        bar.close()


def run_main(main: Callable[[], int | None], known_errors: tuple[type[BaseException], ...]) -> None:
    """Run `main`; an error of a known kind, or Ctrl-C or SIGTERM outside training (which saves its own state),
    is printed as one line and the process exits non-zero."""
    try:
        with sigterm_raises():
            code = main()
    except known_errors as error:
        _close_progress_bars()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", EXIT_BAD_INPUT))
    except KeyboardInterrupt:
        _close_progress_bars()
        print("error: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        _close_progress_bars()
        print("error: terminated (SIGTERM)", file=sys.stderr)
        sys.exit(EXIT_TERMINATED)
    sys.exit(code or 0)
