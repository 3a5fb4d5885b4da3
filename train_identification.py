"""Train the network of a genotype from scratch for speaker identification (VoxCeleb1 merged, 1251 speakers)."""
from functions.experiment import KNOWN_ERRORS
from functions.tasks import run_training
from utils.cli import build_parser, run_main


def main() -> int:
    parser = build_parser(__doc__, text_arch=True, load_path="resume the run in this folder from its last checkpoint",
                          init_from=True)
    return run_training(parser.parse_args(), "identification", "logs_scratch")


if __name__ == "__main__":
    run_main(main, KNOWN_ERRORS)
