"""Evaluate a checkpoint for identification: Top-1 and Top-5 on the test partition."""
from functions.experiment import KNOWN_ERRORS
from functions.tasks import run_evaluation
from utils.cli import build_parser, run_main


def main() -> int:
    parser = build_parser(
        __doc__, text_arch=True, load_path="checkpoint file, or run folder (its checkpoint_best.pth)",
        load_path_required=True,
    )
    return run_evaluation(parser.parse_args(), "identification")


if __name__ == "__main__":
    run_main(main, KNOWN_ERRORS)
