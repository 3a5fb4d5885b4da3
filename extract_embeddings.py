"""Embed audio with a trained model: wav/flac files, folders (searched recursively) or lists of paths (.txt,
.lst, .list; one per line). Writes OUT/embeddings.npz (keys = the paths as given, relative to a folder
given), or one .npy per input with --format npy."""
from functions.experiment import KNOWN_ERRORS
from functions.inference_tasks import add_inference_arguments, run_extraction
from utils.cli import build_parser, run_main
from utils.config import ConfigError, split_overrides


def main() -> int:
    parser = build_parser(
        __doc__, text_arch=True, load_path="checkpoint file, or run folder (its checkpoint_best.pth)",
        load_path_required=True, cfg_help="config of a checkpoint that carries none (older or released ones)",
    )
    parser.usage = "%(prog)s --load_path CKPT --output OUT [options] INPUT... [KEY VALUE ...]"
    parser.add_argument("--output", required=True, help="folder for embeddings.npz (or the .npy files)")
    parser.add_argument("--format", choices=("npz", "npy"), default="npz",
                        help="one .npz (default) or one .npy per input")
    add_inference_arguments(parser)
    parser.add_argument("--audio_dir", help="folder the relative paths of list files are under (default: here)")
    args = parser.parse_args()
    inputs, args.opts = split_overrides(list(args.opts or []))
    if not inputs:
        raise ConfigError("no INPUT: give audio files, folders or lists of paths after the options")
    options = [given for given in inputs if given.startswith("--")]
    if options:
        raise ConfigError(f"{options[0]} comes after the INPUT files; put options such as {options[0]} before them")
    return run_extraction(args, inputs)


if __name__ == "__main__":
    run_main(main, KNOWN_ERRORS)
