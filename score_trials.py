"""Score a trial list of audio files with a trained model (EER, minDCF and a DET curve where it has labels), or
two files with --pair."""
from functions.experiment import KNOWN_ERRORS
from functions.inference_tasks import add_inference_arguments, run_trial_scoring
from utils.cli import build_parser, run_main


def main() -> int:
    parser = build_parser(
        __doc__, text_arch=True, load_path="checkpoint file, or run folder (its checkpoint_best.pth)",
        load_path_required=True, cfg_help="config of a checkpoint that carries none (older or released ones)",
    )
    parser.add_argument("--trials",
                        help="trial list: '<1|0> <path> <path>' lines (VoxCeleb's format), or '<path> <path>'")
    parser.add_argument("--audio_dir", help="folder the trial list's paths are relative to")
    parser.add_argument("--output", help="folder for scores.txt, results.json, det_curve.png, score_histograms.png")
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"), help="print the score of two audio files")
    parser.add_argument("--threshold", type=float,
                        help="with --pair: decide same or different at this score (default: the checkpoint's EER "
                             "threshold)")
    add_inference_arguments(parser)
    return run_trial_scoring(parser.parse_args())


if __name__ == "__main__":
    run_main(main, KNOWN_ERRORS)
