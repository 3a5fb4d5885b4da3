"""Row 5: scoring a trial list. Ours embeds each utterance once, its windows batched with other utterances'
(functions.evaluation.evaluate_verification); the published loop embedded both utterances again for every trial,
one utterance's windows per forward pass. Same network, same windows, same EER definition."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import Row, interleaved_medians, quiet, seconds_text
from data_objects import voxceleb
from data_objects.datasets import TrialList, UtteranceWindowsDataset
from functions.distributed import single_process
from functions.evaluation import evaluate_verification
from functions.metrics import equal_error_rate
from functions.trainer import use_faster_memory_format
from models.genotype_network import GenotypeNetwork
from models.genotypes import AUTOSPEECH

# veri_test.txt: 37,720 trials over 4,874 utterances, so each utterance is in ~15.5 trials.
TRIALS_PER_UTTERANCE = 2 * 37_720 / 4_874


def write_trial_list(corpus: Path, utterances: int, target: Path, seed: int = 0) -> None:
    """A veri_test.txt-format list over `utterances` test utterances of the corpus, as dense as VoxCeleb1's,
    alternating target and non-target trials."""
    listed = sorted({path for trial in voxceleb.read_trials(corpus / voxceleb.TRIALS_FILE)
                     for path in (trial.first, trial.second)})
    rng = random.Random(seed)
    chosen = rng.sample(listed, min(utterances, len(listed)))
    lines = []
    for number in range(round(len(chosen) * TRIALS_PER_UTTERANCE / 2)):
        first = chosen[number % len(chosen)]
        speaker = first.split("/")[0] + "/"
        same_speaker = [path for path in chosen if path.startswith(speaker) and path != first]
        others = [path for path in chosen if not path.startswith(speaker)]
        is_target = number % 2 == 0 and bool(same_speaker)
        lines.append(f"{int(is_target)} {first} {rng.choice(same_speaker if is_target else others)}")
    target.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@torch.no_grad()
def published_scores(model: nn.Module, trials: TrialList, windows: UtteranceWindowsDataset) -> np.ndarray:
    """Per trial, both utterances through the network (one utterance's windows per pass) and their cosine."""
    model.eval()
    scores = []
    for first, second in zip(trials.first, trials.second):
        embeddings = [model(windows[int(index)][0]).mean(dim=0, keepdim=True) for index in (first, second)]
        scores.append(F.cosine_similarity(*embeddings).item())
    return np.asarray(scores, dtype=np.float64)


def verification_row(corpus: Path, workdir: Path, utterances: int, repetitions: int) -> Row:
    trials_file = workdir / "benchmark_trials.txt"
    write_trial_list(corpus, utterances, trials_file)
    trials = TrialList(corpus, trials_file)
    windows = trials.utterance_dataset()
    torch.manual_seed(0)
    model = GenotypeNetwork(8, 10, 3, AUTOSPEECH)
    cpu = single_process()
    # Our evaluation leaves the model channels-last on the CPU; both sides use that layout, so that the row
    # measures embedding each utterance once, and row 3 the layout.
    use_faster_memory_format(model, cpu.device)

    results = {}

    def ours() -> None:
        with quiet():
            results["ours"] = evaluate_verification(model, windows, trials.labels, trials.first, trials.second, cpu)

    def published() -> None:
        results["published"] = published_scores(model, trials, windows)

    seconds = interleaved_medians({"published": published, "ours": ours}, repetitions, warmup=0)
    ours_eer = 100.0 * results["ours"].eer
    published_eer = 100.0 * equal_error_rate(results["published"], trials.labels)
    score_difference = float(np.abs(results["ours"].scores - results["published"]).max())
    ratio = seconds["published"] / seconds["ours"]
    same = abs(ours_eer - published_eer) < 1e-9
    per_utterance = 2 * len(trials) / len(trials.paths)
    return Row(
        f"Verification, {len(trials)} trials over {len(trials.paths)} utterances ({per_utterance:.1f} trials per "
        f"utterance), genotype network C 8, 3 layers",
        seconds_text(seconds["ours"]), seconds_text(seconds["published"]), ratio, ">= 10x, same EER",
        ratio >= 10.0 and same,
        f"EER {ours_eer:.2f} % vs {published_eer:.2f} %; max score difference {score_difference:.1e}",
    )
