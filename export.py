"""Export a trained model as one TorchScript or ONNX module: a 16 kHz waveform [batch, samples] in, the
embedding out, with the front-end (STFT, normalisation) and evaluation's windows and averaging inside."""
from functions.experiment import KNOWN_ERRORS
from functions.inference_tasks import add_inference_arguments, run_export
from utils.cli import build_parser, run_main


def main() -> int:
    parser = build_parser(
        __doc__, text_arch=True, load_path="checkpoint file, or run folder (its checkpoint_best.pth)",
        load_path_required=True, cfg_help="config of a checkpoint that carries none (older or released ones)",
    )
    parser.add_argument("--format", choices=("torchscript", "onnx"), required=True)
    parser.add_argument("--output", required=True, help="file to write (e.g. model.pt, model.onnx)")
    add_inference_arguments(parser, embeds_files=False)
    return run_export(parser.parse_args())


if __name__ == "__main__":
    run_main(main, KNOWN_ERRORS)
