"""Data-parallel runs on the CPU (gloo, 2 processes) against single-process runs.

Script-level runs go through tests/helpers/launch.py, which records what each training forward pass sees and, with
`--group_norm`, gives the network per-sample normalisation: batch norm takes its statistics per process (over a
part of the global batch), the one thing the README lets differ between W processes and one, so without it the
runs must agree up to float rounding. In-process runs spawn a gloo group of their own (torch.multiprocessing).
"""
from __future__ import annotations

import itertools
import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from models.genotypes import AUTOSPEECH, genotype_to_text
from tests.conftest import launch
from tests.helpers.launch import read_record, without_batch_statistics
from tests.test_scripts import TINY_CELL, only_run, small
from utils.checkpoint import load_checkpoint, save_checkpoint

IDEN_CFG = "exps/demo/scratch_iden.yaml"
GENOTYPE = genotype_to_text(AUTOSPEECH)
# Float rounding only: the processes' gradients are averaged (a sum of two halves) where one process takes the
# mean of the whole batch, and convolutions run on half batches. Measured over 2 such epochs: losses within 3e-8
# relative, weights within 1.5e-7 (of weights up to 1.0), validation metrics equal.
RTOL, ATOL = 1e-5, 1e-6
EPOCH_STEPS = 2  # 30 training utterances: 2 global batches of 12


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]


def training_args(corpus: Path, out: Path, batch: int, *options: str) -> list[str]:
    return ["train_identification.py", "--cfg", IDEN_CFG, *options,
            *small(corpus, out, *TINY_CELL, "TRAIN.BATCH_SIZE", str(batch), "TRAIN.END_EPOCH", "2",
                   "MODEL.DROP_PATH_PROB", "0.0")]


def train(corpus: Path, out: Path, processes: int, batch: int) -> Path:
    launch(processes, "--group_norm", "--record", str(out / "record"),
           *training_args(corpus, out, batch, "--text_arch", GENOTYPE))
    return only_run(out / "logs_scratch")


def global_batches(record: Path, processes: int) -> list[list[str]]:
    """The samples of each global batch in the order of the epoch: process r of W holds positions r, r + W, ..."""
    per_process = [read_record(record, rank) for rank in range(processes)]
    assert len({len(calls) for calls in per_process}) == 1
    return [[sample for samples in zip(*(calls[step]["items"] for calls in per_process)) for sample in samples]
            for step in range(len(per_process[0]))]


def assert_close_runs(run: Path, reference: Path) -> None:
    """Same logged metrics (learning rates exactly) and the same final weights, up to float rounding."""
    rows, expected = history(run), history(reference)
    assert [row.keys() for row in rows] == [row.keys() for row in expected]
    for row, expected_row in zip(rows, expected):
        assert row["lr"] == expected_row["lr"]
        assert row == pytest.approx(expected_row, rel=RTOL, abs=ATOL)
    weights, expected_weights = (load_checkpoint(r / "Model" / "checkpoint_last.pth")["state_dict"]
                                 for r in (run, reference))
    assert weights.keys() == expected_weights.keys()
    for key in weights:
        assert torch.allclose(weights[key].float(), expected_weights[key].float(), rtol=RTOL, atol=ATOL), key


@pytest.fixture(scope="module")
def two_process_run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return out, train(tiny_corpus, out, 2, 6)


def test_two_processes_see_the_global_batches_of_one_and_reach_its_weights(two_process_run, tiny_corpus, tmp_path):
    out, double = two_process_run
    single = train(tiny_corpus, tmp_path, 1, 12)
    batches = global_batches(tmp_path / "record", 1)
    assert len(batches) == 2 * EPOCH_STEPS and all(len(batch) == 12 for batch in batches)
    assert global_batches(out / "record", 2) == batches
    for epoch in range(2):
        samples = [s for batch in batches[epoch * EPOCH_STEPS:(epoch + 1) * EPOCH_STEPS] for s in batch]
        assert len(set(samples)) == len(samples), "an utterance taken twice in one epoch"
    assert batches[0] != batches[EPOCH_STEPS], "each epoch has its own order and crops"
    assert_close_runs(double, single)
    assert history(single)[0]["train_loss"] != pytest.approx(history(single)[1]["train_loss"], abs=1e-3)


def stop_mid_epoch(corpus: Path, out: Path) -> Path:
    """Two processes, each signalled at its first step of epoch 1: they stop together after that step."""
    stopped = launch(2, "--group_norm", "--send_signal", "SIGTERM", "--at_call", str(EPOCH_STEPS + 1),
                     *training_args(corpus, out, 6, "--text_arch", GENOTYPE), check=False)
    assert stopped.returncode != 0
    run = only_run(out / "logs_scratch")
    saved = load_checkpoint(run / "Model" / "checkpoint_last.pth")
    assert (saved["epoch"], saved["step_in_epoch"], saved["rng_world_size"]) == (1, 1, 2)
    return run


def test_a_run_stopped_mid_epoch_and_resumed_on_another_process_count_restarts_that_epoch(
    two_process_run, tiny_corpus, tmp_path
):
    """2 processes stopped inside epoch 1, resumed on 1 (batch 12), against the same checkpoint resumed on the same
    2 processes with its per-process random state taken out, which makes a resume restart the epoch too."""
    stopped = stop_mid_epoch(tiny_corpus, tmp_path / "stopped")
    same_count = Path(shutil.copytree(stopped, tmp_path / "same_count" / stopped.name))
    checkpoint = load_checkpoint(same_count / "Model" / "checkpoint_last.pth")
    save_checkpoint({**checkpoint, "rng": None}, same_count / "Model" / "checkpoint_last.pth")

    launch(1, "--group_norm", "--record", str(tmp_path / "record_one"),
           *training_args(tiny_corpus, tmp_path / "stopped", 12, "--load_path", str(stopped)))
    launch(2, "--group_norm", "--record", str(tmp_path / "record_two"),
           *training_args(tiny_corpus, tmp_path / "same_count", 6, "--load_path", str(same_count)))

    restarted = "the checkpoint stopped inside epoch 1 with another number of processes; that epoch restarts"
    assert restarted in (stopped / "Log" / "train.log").read_text()
    resumed_batches = global_batches(tmp_path / "record_one", 1)
    assert resumed_batches == global_batches(tmp_path / "record_two", 2)
    # The whole of epoch 1, from its first batch: what an uninterrupted run takes in that epoch.
    assert resumed_batches == global_batches(two_process_run[0] / "record", 2)[EPOCH_STEPS:]
    assert_close_runs(stopped, same_count)
    assert load_checkpoint(stopped / "Model" / "checkpoint_last.pth")["global_step"] == 2 * EPOCH_STEPS


def test_only_rank_zero_writes_and_an_epoch_end_resume_may_change_the_process_count(two_process_run, tiny_corpus):
    out, run = two_process_run
    assert len(list((run / "Log").glob("events.out.tfevents.*"))) == 1
    launch(1, "--group_norm", "train_identification.py", "--cfg", IDEN_CFG, "--load_path", str(run),
           *small(tiny_corpus, out, *TINY_CELL, "TRAIN.END_EPOCH", "3", "TRAIN.BATCH_SIZE", "12"))
    assert [row["epoch"] for row in history(run)] == [0, 1, 2]


@pytest.mark.parametrize("script,cfg", [
    ("evaluate_verification.py", "exps/scratch/scratch_veri.yaml"),
    ("evaluate_identification.py", "exps/scratch/scratch_iden.yaml"),
])
def test_distributed_evaluation_equals_single_process(script, cfg, fixtures_dir, tiny_corpus, tmp_path):
    """Chunks of 4 utterances: 5 chunks for 18 trial utterances or 20 test utterances, so each process embeds
    several, and not as many as the other."""
    overrides = small(tiny_corpus, tmp_path, "MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3",
                      "MODEL.NUM_CLASSES", "10")
    fixture = str(fixtures_dir / "genotype_net_C8_L3_K10.pth")
    for processes in (1, 2):
        launch(processes, "--chunk", "4", script, "--cfg", cfg, "--load_path", fixture, *overrides)
    runs = sorted((tmp_path / "logs_eval").iterdir())
    results = [json.loads((run / "results.json").read_text()) for run in runs]
    assert len(results) == 2
    keys = ("eer", "min_dcf_0.01", "min_dcf_0.05", "trials") if "verification" in script else (
        "top1", "top5", "top1_window_weighted", "utterances")
    assert [results[0][key] for key in keys] == [results[1][key] for key in keys]
    if "verification" in script:
        scores = [(run / "scores.txt").read_text() for run in runs]
        assert scores[0] == scores[1] and len(scores[0].splitlines()) == results[0]["trials"]


@pytest.mark.parametrize("layers", ["2", "3"])
def test_search_runs_on_two_processes_with_or_without_a_normal_cell(layers, tiny_corpus, tmp_path):
    # Half-second crops: the shortest that still leave a frame after the five halvings of three layers.
    process = launch(2, "search.py", "--cfg", "exps/demo/search.yaml",
                     *small(tiny_corpus, tmp_path, *TINY_CELL, "MODEL.LAYERS", layers, "DATASET.PARTIAL_N_FRAMES", "50"))
    results = json.loads((only_run(tmp_path / "logs_search") / "results.json").read_text())
    assert results["genotype"].startswith("Genotype(") and process.stdout.count(results["genotype"]) == 1


# ----- in-process gloo groups -----
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def join_group(rank: int, world_size: int, port: int):
    import os

    from functions.distributed import init_distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    return init_distributed("cpu")


def spawn(work, world_size: int, *args) -> None:
    mp.spawn(work, args=(world_size, free_port(), *args), nprocs=world_size)


class Utterances(torch.utils.data.Dataset):
    """Utterances of 1 to 5 windows [3, 4] each, drawn from their index."""

    def __len__(self) -> int:
        return 70

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(index)
        count = int(torch.randint(1, 6, (), generator=generator))
        return torch.randn(count, 3, 4, generator=generator), index % 7


def window_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5))


def _embed(rank: int, world_size: int, port: int, root: str) -> None:
    from functions.distributed import shutdown_distributed
    from functions.evaluation import embed_utterances

    ctx = join_group(rank, world_size, port)
    embeddings, labels, counts = embed_utterances(window_model(), Utterances(), ctx)
    torch.save((embeddings, labels, counts), Path(root) / f"rank{rank}.pt")
    shutdown_distributed()


def test_gathered_embeddings_are_each_utterances_own_in_dataset_order(tmp_path):
    """70 utterances in chunks of 16: 5 chunks, 3 for one process and 2 for the other, the last one short. Every
    process ends with every utterance's mean window embedding, in dataset order, as computed one by one here."""
    spawn(_embed, 2, str(tmp_path))
    model, dataset = window_model(), Utterances()
    with torch.no_grad():
        expected = torch.stack([model(dataset[i][0]).mean(0) for i in range(len(dataset))])
    for rank in (0, 1):
        embeddings, labels, counts = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(embeddings, expected, atol=1e-6)
        assert labels.tolist() == [dataset[i][1] for i in range(len(dataset))]
        assert counts.tolist() == [len(dataset[i][0]) for i in range(len(dataset))]


def plain_sgd(parameters) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=0.5)


def _train_tiny_net(rank: int, world_size: int, port: int, root: str, batch: int) -> None:
    from functions.distributed import shutdown_distributed
    from tests.test_trainer import make_trainer

    ctx = join_group(rank, world_size, port)
    trainer = make_trainer(Path(root), epochs=2, ctx=ctx, batch=batch, dropout=0.0,
                           optimizer=plain_sgd)
    trainer.fit()
    if rank == 0:
        torch.save(trainer.model.state_dict(), Path(root) / "final.pt")
    shutdown_distributed()


def test_gradients_and_metrics_are_averaged_exactly_across_processes(tmp_path):
    """Without batch norm, 2 processes x 2 samples give the weights and metrics of 1 process x 4 samples. Plain
    SGD: a step is the learning rate times the gradient, so a sum over the processes (twice the mean) would show,
    where Adam's normalised step would hide it."""
    for world_size, batch in ((1, 4), (2, 2)):
        spawn(_train_tiny_net, world_size, str(tmp_path / f"world{world_size}"), batch)
    one, two = (torch.load(tmp_path / f"world{n}" / "final.pt") for n in (1, 2))
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)
    rows = [history(tmp_path / f"world{n}") for n in (1, 2)]
    for a, b in zip(*rows):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["train_top1"] == b["train_top1"]


class _LabelledNoise:
    """Spectrogram-shaped items whose level depends on the label, drawn from torch's RNG."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int):
        return torch.randn(16, 257) + index % 3, index % 3


def _search_tiny_net(rank: int, world_size: int, port: int, root: str, batch: int) -> None:
    from functions.data_loading import training_loader
    from functions.distributed import shutdown_distributed
    from functions.run_directory import RunDirectory
    from functions.trainer import ArchitectureStep, Selection, Trainer
    from models.search_network import SearchNetwork
    from utils.config import get_default_config
    from utils.run_logging import create_logger

    ctx = join_group(rank, world_size, port)
    cfg = get_default_config()
    cfg.TRAIN.END_EPOCH, cfg.VAL_FREQ, cfg.SEED = 1, 1, 5
    cfg.freeze()
    run = RunDirectory(Path(root))
    for folder in (run.model_dir, run.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = without_batch_statistics(SearchNetwork(4, 3, 3))
    # Each process draws its own Gumbel sample of the cell (as it draws its own drop-path masks); here every
    # process and the single one draw the same sample at each forward pass, so that only the arithmetic differs.
    draws, sample = itertools.count(), model.sample_cell_weights
    model.sample_cell_weights = lambda: sample(torch.Generator().manual_seed(next(draws)))
    torch.save([a.detach().clone() for a in model.arch_parameters()], Path(root) / "initial_alphas.pt")
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=0.05)
    arch_optimizer = torch.optim.SGD(model.arch_parameters(), lr=5.0)
    loader = training_loader(_LabelledNoise(), batch, cfg.SEED, ctx, 0, max_batches=3)
    arch_loader = training_loader(_LabelledNoise(), batch, cfg.SEED + 1, ctx, 0)
    create_logger(None, ctx.is_main)
    trainer = Trainer(cfg, ctx, run, model, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1),
                      loader, lambda _epoch: {}, Selection("test_top1", True, "best_acc1"),
                      drop_path_prob=lambda _epoch: 0.0, architecture=ArchitectureStep(arch_loader, arch_optimizer))
    trainer.fit()
    torch.save({"alphas": [a.detach() for a in model.arch_parameters()], "weights": model.state_dict()},
               Path(root) / f"rank{rank}.pt")
    shutdown_distributed()


def test_architecture_step_averaged_across_processes_equals_the_one_process_step(tmp_path):
    """3 architecture and weight steps with plain SGD, 2 processes x 2 samples against 1 process x 4 samples:
    the same alphas and weights, identical on both processes."""
    for world_size, batch in ((1, 4), (2, 2)):
        spawn(_search_tiny_net, world_size, str(tmp_path / f"world{world_size}"), batch)
    initial = torch.load(tmp_path / "world1" / "initial_alphas.pt")
    one = torch.load(tmp_path / "world1" / "rank0.pt")
    rank0, rank1 = (torch.load(tmp_path / "world2" / f"rank{rank}.pt") for rank in (0, 1))
    for start, single, first, second in zip(initial, one["alphas"], rank0["alphas"], rank1["alphas"]):
        assert torch.equal(first, second)
        # Float rounding of the averaged gradients, carried through 3 steps: measured 7e-5 of the update at most.
        # Gradients summed over the 2 processes instead of averaged would make the update twice as large.
        update = (single - start).abs().max()
        assert update > 0.1
        assert (first - single).abs().max() <= 1e-3 * update
    for key, value in one["weights"].items():
        assert torch.allclose(rank0["weights"][key], value, rtol=RTOL, atol=ATOL), key
