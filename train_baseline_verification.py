"""Train a ResNet-18/34 baseline for speaker verification (VoxCeleb1 dev, 1211 speakers)."""
from functions.experiment import KNOWN_ERRORS
from functions.tasks import run_training
from utils.cli import build_parser, run_main


def main() -> int:
    parser = build_parser(__doc__, load_path="resume the run in this folder from its last checkpoint",
                          init_from=True)
    return run_training(parser.parse_args(), "verification", "logs")


if __name__ == "__main__":
    run_main(main, KNOWN_ERRORS)
