"""Search a cell (DARTS-style, hard Gumbel-softmax edge weights): python search.py --cfg exps/search.yaml"""
from functions.experiment import KNOWN_ERRORS
from functions.tasks import run_search
from utils.cli import build_parser, run_main


def main() -> int:
    parser = build_parser(__doc__, load_path="resume the run in this folder from its last checkpoint")
    return run_search(parser.parse_args())


if __name__ == "__main__":
    run_main(main, KNOWN_ERRORS)
