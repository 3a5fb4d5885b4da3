"""Does the search pay off? Searched, random and the paper's cells, trained and evaluated alike:
python nas_study.py --cfg exps/demo/study.yaml (rerun the same command to resume)"""
from functions.experiment import KNOWN_ERRORS
from functions.study import StudyInterrupted, run_study
from utils.cli import build_parser, run_main


def main() -> int:
    parser = build_parser(__doc__)
    parser.add_argument("--members", help="run only these members, comma-separated (e.g. searched_0,random_1); "
                                          "the report covers every member found in the study folder")
    parser.add_argument("--report_only", action="store_true",
                        help="write study.md, study.json and the pictures from the members on disk; run nothing")
    return run_study(parser.parse_args())


if __name__ == "__main__":
    run_main(main, (*KNOWN_ERRORS, StudyInterrupted))
