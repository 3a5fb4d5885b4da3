"""What the scripts that use a trained model do: embed audio files, score trials of audio files, export it."""
from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from data_objects.errors import DataError
from data_objects.voxceleb import read_audio_trials
from functions.distributed import DEVICES, DistributedContext, broadcast_object, init_distributed, run_in_process_group
from functions.evaluation import (
    CohortScoring, normalised_scores, score_trials, verification_result, write_score_file,
)
from functions.experiment import cohort_scoring, write_results
from functions.export import EXPORTERS
from functions.inference import AudioInputs, collect_audio_inputs, count_skipped, embed_audio, require_some
from functions.plots import plot_det_curve, plot_score_histograms
from functions.speaker_model import SHORT_CLIP_ACTIONS, SpeakerModel, from_arguments
from models.frontends import samples_for_frames
from models.waveform_embedder import WaveformEmbedder
from utils.config import ConfigError
from utils.files import OutputError, ensure_writable_dir, write_atomically, write_text_atomically
from utils.run_logging import create_logger, get_logger

EMBEDDINGS_FILE = "embeddings.npz"


# How many files a message names before it counts the rest.
NAMED_AT_MOST = 5


def _start(args) -> tuple[SpeakerModel, DistributedContext]:
    """The model on the device of --device (default: this machine's GPU if it has one, wherever the checkpoint
    was trained)."""
    check_inference_arguments(args)
    ctx = init_distributed(args.device)
    create_logger(None, ctx.is_main)
    return from_arguments(args, ctx.device), ctx


def _writable_output(ctx: DistributedContext, folder: str) -> Path:
    """`folder`, created and checked by rank 0; a problem stops every process."""
    problem = None
    if ctx.is_main:
        try:
            ensure_writable_dir(folder)
        except OutputError as error:
            problem = str(error)
    problem = broadcast_object(ctx, problem)
    if problem:
        raise OutputError(problem)
    return Path(folder)


def add_inference_arguments(parser: argparse.ArgumentParser, embeds_files: bool = True) -> None:
    """The options of the scripts that use a trained model: what completes an older checkpoint, and (for those
    that embed files) the device, the loader workers and the rule for short clips."""
    parser.add_argument("--stats", help="folder of the mean.npy and std.npy of a checkpoint that carries none")
    if not embeds_files:
        return
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run (default auto: this machine's GPU if it has one, else the CPU)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="processes that read and window the audio beside the network (default 0: none)")
    parser.add_argument("--min_seconds", type=float, metavar="S",
                        help="clips shorter than this are short (default: one evaluation window, "
                             "DATASET.PARTIAL_N_FRAMES frames)")
    parser.add_argument("--short", choices=SHORT_CLIP_ACTIONS, default="skip",
                        help="skip short clips (default), or embed them with a warning")


def check_inference_arguments(args) -> None:
    if getattr(args, "workers", 0) < 0:
        raise ConfigError(f"--workers must be at least 0, got {args.workers}")
    if getattr(args, "min_seconds", None) is not None and args.min_seconds < 0:
        raise ConfigError(f"--min_seconds must be at least 0, got {args.min_seconds}")


# ----- embeddings of files -----
def run_extraction(args, inputs: list[str]) -> int:
    return run_in_process_group(lambda: _extract(args, inputs))


def _npy_path(output: Path, key: str) -> Path:
    """Where `--format npy` writes the embedding of `key`: its path under `output`, without '..' or a root."""
    parts = [part for part in PurePosixPath(Path(key).as_posix()).parts if part not in ("..", ".", "/")]
    return output.joinpath(*parts).with_suffix(".npy")


def _check_npy_names(output: Path, keys: list[str]) -> None:
    seen: dict[Path, str] = {}
    for key in keys:
        path = _npy_path(output, key)
        if path in seen:
            raise DataError(f"inputs {seen[path]} and {key} would both be written to {path}; use --format npz")
        seen[path] = key


def _extract(args, inputs: list[str]) -> int:
    model, ctx = _start(args)
    logger = get_logger()
    found: AudioInputs = collect_audio_inputs(inputs, args.audio_dir)
    output = _writable_output(ctx, args.output)
    if args.format == "npy":
        _check_npy_names(output, found.keys)
    for key in found.missing:
        logger.info(f"skipped {key}: no such file")
    result = embed_audio(model, found.paths, ctx, args.workers)
    reasons = ["missing"] * len(found.missing) + [failure.reason for failure in result.failures]
    require_some(result.embedded, "files", lambda: count_skipped(reasons))
    if ctx.is_main:
        vectors = {key: result.embeddings[index].numpy()
                   for index, key in enumerate(found.keys) if result.embedded[index]}
        if args.format == "npz":
            written = output / EMBEDDINGS_FILE
            write_atomically(written, lambda handle: np.savez(handle, **vectors))
        else:
            for key, vector in vectors.items():
                path = _npy_path(output, key)
                _make_folder(path.parent)
                write_atomically(path, lambda handle, vector=vector: np.save(handle, vector))
            written = output
        size = next(iter(vectors.values())).size
        logger.info(f"{len(vectors)} embeddings of size {size} written to {written} ({count_skipped(reasons)})")
    return 0


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"could not create {folder}: {error.strerror or error}") from None


# ----- trials -----
def run_trial_scoring(args) -> int:
    return run_in_process_group(lambda: _score(args))


def _audio_path(audio_dir: str | None, path: str) -> Path:
    return Path(path) if audio_dir is None or Path(path).is_absolute() else Path(audio_dir) / path


def _score_pair(model: SpeakerModel, ctx: DistributedContext, args) -> int:
    """The cosine score of two files, and under the recipe's score normalisation; each decided at --threshold or
    at the checkpoint's EER threshold of that score."""
    paths = [_audio_path(args.audio_dir, p) for p in args.pair]
    for given, path in zip(args.pair, paths):
        if not path.is_file():
            raise DataError(f"{given}: no such file")
    cohort = _cohort(model)
    result = embed_audio(model, paths, ctx, log_skips=False)
    if result.failures:
        raise result.failures[0]
    raw = score_trials(result.embeddings, [0], [1])
    scores = {"": raw, **normalised_scores(model.network, raw, result.embeddings, [0], [1], cohort, ctx,
                                           args.workers)}
    if ctx.is_main:
        for name, score in scores.items():
            print(_pair_line(float(score[0]), name, model, args.threshold))
    return 0


def _pair_line(score: float, name: str, model: SpeakerModel, threshold: float | None) -> str:
    """'0.731204 same (EER threshold 0.520000 of the checkpoint's last verification)', a normalisation named."""
    shown = f"{score:.6f}" + (f" ({name})" if name else "")
    if threshold is not None and not name:
        return f"{shown} {_decision(score, threshold)} (--threshold {threshold:.6f})"
    if name in model.thresholds:
        threshold = model.thresholds[name]
        return (f"{shown} {_decision(score, threshold)} (EER threshold {threshold:.6f} of the checkpoint's last "
                "verification)")
    return f"{shown} (the checkpoint carries no EER threshold to decide same or different)"


def _decision(score: float, threshold: float) -> str:
    return "same" if score >= threshold else "different"


def _cohort(model: SpeakerModel) -> CohortScoring | None:
    """The cohort of EVAL.SCORE_NORM: the training speakers of the recipe's DATASET.DATA_DIR."""
    try:
        return cohort_scoring(model.cfg)
    except DataError as error:
        raise DataError(f"EVAL.SCORE_NORM '{model.cfg.EVAL.SCORE_NORM}' takes its cohort from the training data "
                        f"(DATASET.DATA_DIR, or EVAL.SCORE_NORM none to score without): {error}") from None


def check_scoring_arguments(args) -> None:
    """--pair A B, or --trials LIST with --output OUT; --threshold decides a pair only."""
    if args.pair:
        given = [option for option in ("trials", "output") if getattr(args, option)]
        if given:
            raise ConfigError(f"--pair scores two files and takes no --{given[0]}; give either --pair A B or "
                              "--trials LIST --output OUT")
    elif not args.trials or not args.output:
        raise ConfigError("give --trials LIST and --output OUT, or --pair A B")
    elif args.threshold is not None:
        raise ConfigError("--threshold decides a --pair; a trial list is scored without one (EER and minDCF)")


def _score(args) -> int:
    check_scoring_arguments(args)
    model, ctx = _start(args)
    if args.pair:
        return _score_pair(model, ctx, args)
    logger = get_logger()
    trials = read_audio_trials(args.trials)
    output = _writable_output(ctx, args.output)
    cohort = _cohort(model)
    position: dict[str, int] = {}
    paths: list[Path] = []
    for trial in trials:
        for name in (trial.first, trial.second):
            path = _audio_path(args.audio_dir, name)
            if name not in position and path.is_file():
                position[name] = len(paths)
                paths.append(path)
    kept = [t for t in trials if t.first in position and t.second in position]
    missing = len(trials) - len(kept)
    absent = sorted({name for t in trials for name in (t.first, t.second) if name not in position})
    for name in absent[:NAMED_AT_MOST]:
        logger.info(f"skipped trials of {name}: no such file")
    if len(absent) > NAMED_AT_MOST:
        logger.info(f"... and of {len(absent) - NAMED_AT_MOST} more missing files")
    if not kept:
        raise DataError(f"{args.trials}: none of its {len(trials)} trials has both audio files"
                        + (f" under {args.audio_dir}" if args.audio_dir else "") + "; check --audio_dir")
    result = embed_audio(model, paths, ctx, args.workers)
    usable = [t for t in kept if result.embedded[position[t.first]] and result.embedded[position[t.second]]]
    reasons = ["missing audio"] * missing + ["unreadable audio"] * (len(kept) - len(usable))
    if not usable:
        raise DataError(f"{args.trials}: none of its {len(trials)} trials has two readable audio files "
                        f"({count_skipped(reasons)})")
    first = [position[t.first] for t in usable]
    second = [position[t.second] for t in usable]
    raw = score_trials(result.embeddings, first, second)
    # The raw cosine scores under no suffix, each normalisation's under its name (as evaluate_verification.py).
    score_sets = {"": raw, **{f"_{name}": scores for name, scores in normalised_scores(
        model.network, raw, result.embeddings, first, second, cohort, ctx, args.workers).items()}}
    files = int(result.embedded.sum())
    summary = {"trials": len(usable), "skipped_trials": len(reasons), "files": files,
               "checkpoint": str(model.checkpoint)}
    lines = []
    labels = np.asarray([t.label for t in usable], dtype=np.int64) if usable[0].label is not None else None
    firsts, seconds = [t.first for t in usable], [t.second for t in usable]
    with_metrics = labels is not None and 0 < labels.sum() < labels.size
    for suffix, scores in score_sets.items():
        if with_metrics:
            verification = verification_result(scores, labels)
            summary.update({f"{key}{suffix}": value for key, value in verification.summary().items()
                            if key != "trials"})
            name = f" ({suffix[1:]})" if suffix else ""
            lines += [f"EER{name} {100 * verification.eer:.2f} %",
                      f"minDCF(p=0.01){name} {verification.min_dcf_01:.4f}",
                      f"minDCF(p=0.05){name} {verification.min_dcf_05:.4f}"]
        if not ctx.is_main:
            continue
        if with_metrics:
            write_score_file(output / f"scores{suffix}.txt", verification, firsts, seconds)
            plot_det_curve(scores, labels, verification.eer, output / f"det_curve{suffix}.png")
            plot_score_histograms(scores, labels, output / f"score_histograms{suffix}.png")
        else:
            text = "".join(f"{s:.6f} {a} {b}\n" for s, a, b in zip(scores, firsts, seconds))
            write_text_atomically(output / f"scores{suffix}.txt", text)
    lines.append(f"{len(usable)} trials over {files} files ({count_skipped(reasons)})")
    if labels is not None and not with_metrics:
        lines.append("every trial has the same label: no EER or minDCF")
    if ctx.is_main:
        write_results(output / "results.json", summary)
        for line in lines:
            logger.info(line)
        logger.info(f"scores in {output / 'scores.txt'}")
    return 0


# ----- export -----
def check_lengths(window: int) -> dict[str, int]:
    """Waveform lengths (samples) of the three cases of evaluation's windowing, for a window of `window` frames."""
    return {"shorter than a window": samples_for_frames(window // 2), "one window": samples_for_frames(window + 1),
            "many windows": samples_for_frames(4 * window)}


def compare_exported(embedder: WaveformEmbedder, run_exported, lengths: dict[str, int], batch: int = 2,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """Max |difference| and least cosine between the exported and the eager embeddings of random waveforms."""
    generator = torch.Generator().manual_seed(seed)
    report = {}
    for name, samples in lengths.items():
        waveform = 0.1 * torch.randn(batch, samples, generator=generator)
        with torch.no_grad():
            eager = embedder(waveform)
        exported = torch.from_numpy(run_exported(waveform.numpy()))
        report[name] = {"samples": samples,
                        "max_abs_diff": float((exported - eager).abs().max()),
                        "min_cosine": float(torch.nn.functional.cosine_similarity(exported, eager, dim=1).min())}
    return report


def run_export(args) -> int:
    create_logger(None)
    logger = get_logger()
    output = Path(args.output)
    if output.is_dir():
        raise OutputError(f"--output {output} is a folder; name the file to write (e.g. {output / 'model.onnx'})")
    ensure_writable_dir(output.parent)
    model = from_arguments(args, "cpu")
    write, load = EXPORTERS[args.format]
    window = model.cfg.DATASET.PARTIAL_N_FRAMES
    embedder = model.embedder()
    lengths = check_lengths(window)
    example = 0.1 * torch.randn(1, lengths["many windows"], generator=torch.Generator().manual_seed(1))
    write(embedder, example, output)
    logger.info(f"{args.format} module written to {output}: waveform [batch, samples] at 16 kHz -> embedding "
                f"[batch, {embedder(example).shape[1]}], windows of {window} frames averaged inside")
    # One check at export time, on the case that takes every step (tiling aside): several windows, averaged.
    checked = {name: lengths[name] for name in ("many windows",)}
    for name, row in compare_exported(embedder, load(output), checked, batch=2).items():
        logger.info(f"{name} ({row['samples']} samples): max |exported - eager| {row['max_abs_diff']:.2e}, "
                    f"cosine {row['min_cosine']:.6f}")
    return 0
