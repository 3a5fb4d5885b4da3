"""Evaluate a checkpoint for verification: EER and minDCF on a trial list, with a score file and a DET curve."""
from functions.experiment import KNOWN_ERRORS
from functions.tasks import run_evaluation
from utils.cli import build_parser, run_main


def main() -> int:
    parser = build_parser(
        __doc__, text_arch=True, load_path="checkpoint file, or run folder (its checkpoint_best.pth)",
        load_path_required=True,
    )
    parser.add_argument("--trials", help="trial list to score instead of DATASET.TRIALS (e.g. veri_test2.txt)")
    return run_evaluation(parser.parse_args(), "verification")


if __name__ == "__main__":
    run_main(main, KNOWN_ERRORS)
