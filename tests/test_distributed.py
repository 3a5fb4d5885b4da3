"""Data-parallel runs with torchrun on the CPU (gloo, 2 processes) against single-process runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.genotypes import AUTOSPEECH, genotype_to_text
from tests.conftest import run_script
from tests.test_scripts import TINY_CELL, only_run, small

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# Batch-norm statistics are taken per process (over half the global batch), so networks with batch norm agree
# closely, not exactly: measured 0.047 with 6 samples per process against 12 in one.
LOSS_TOLERANCE = 0.1


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]


def train(corpus: Path, out: Path, batch: int, processes: int, *extra: str) -> Path:
    launcher = TORCHRUN if processes == 2 else []
    run_script(*launcher, "train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", "--text_arch",
               genotype_to_text(AUTOSPEECH),
               *small(corpus, out, *TINY_CELL, "TRAIN.BATCH_SIZE", str(batch), "TRAIN.END_EPOCH", "2",
                      "MODEL.DROP_PATH_PROB", "0.0", *extra))
    return only_run(out / "logs_scratch")


@pytest.fixture(scope="module")
def two_process_run(tiny_corpus, tmp_path_factory):
    return train(tiny_corpus, tmp_path_factory.mktemp("ddp"), 6, 2)


def test_two_processes_match_one_with_the_same_global_batch(two_process_run, tiny_corpus, tmp_path):
    single = history(train(tiny_corpus, tmp_path, 12, 1))
    double = history(two_process_run)
    assert len(single) == len(double) == 2
    for one, two in zip(single, double):
        assert one["lr"] == two["lr"]
        assert abs(one["train_loss"] - two["train_loss"]) < LOSS_TOLERANCE
    assert single[0]["train_loss"] != pytest.approx(single[1]["train_loss"], abs=1e-6)


def test_only_rank_zero_writes_and_a_resume_may_change_the_process_count(two_process_run, tiny_corpus, tmp_path):
    assert len(list((two_process_run / "Log").glob("events.out.tfevents.*"))) == 1
    run_script("train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", "--load_path",
               str(two_process_run), *small(tiny_corpus, tmp_path, *TINY_CELL, "TRAIN.END_EPOCH", "3",
                                             "TRAIN.BATCH_SIZE", "12"))
    assert [row["epoch"] for row in history(two_process_run)] == [0, 1, 2]


@pytest.mark.parametrize("script,cfg,key", [
    ("evaluate_verification.py", "exps/scratch/scratch_veri.yaml", "eer"),
    ("evaluate_identification.py", "exps/scratch/scratch_iden.yaml", "top1"),
])
def test_distributed_evaluation_equals_single_process(script, cfg, key, fixtures_dir, tiny_corpus, tmp_path):
    overrides = small(tiny_corpus, tmp_path, "MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3",
                      "MODEL.NUM_CLASSES", "10")
    fixture = str(fixtures_dir / "genotype_net_C8_L3_K10.pth")
    run_script(script, "--cfg", cfg, "--load_path", fixture, *overrides)
    run_script(*TORCHRUN, script, "--cfg", cfg, "--load_path", fixture, *overrides)
    results = [json.loads(path.read_text()) for path in sorted((tmp_path / "logs_eval").glob("*/results.json"))]
    assert len(results) == 2
    assert results[0][key] == results[1][key]
    if key == "eer":
        assert results[0]["min_dcf_0.01"] == results[1]["min_dcf_0.01"]


@pytest.mark.parametrize("layers", ["2", "3"])
def test_search_runs_on_two_processes_with_or_without_a_normal_cell(layers, tiny_corpus, tmp_path):
    process = run_script(*TORCHRUN, "search.py", "--cfg", "exps/demo/search.yaml",
                         *small(tiny_corpus, tmp_path, *TINY_CELL, "MODEL.LAYERS", layers))
    results = json.loads((only_run(tmp_path / "logs_search") / "results.json").read_text())
    assert results["genotype"].startswith("Genotype(") and process.stdout.count(results["genotype"]) == 1


def _train_tiny_net(rank: int, world_size: int, port: int, root: str, batch: int) -> None:
    import os

    import torch

    from functions.distributed import init_distributed, shutdown_distributed
    from tests.test_trainer import make_trainer

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init_distributed("cpu")
    trainer = make_trainer(Path(root), epochs=2, ctx=ctx, batch=batch, dropout=0.0)
    trainer.fit()
    if rank == 0:
        torch.save(trainer.model.state_dict(), Path(root) / "final.pt")
    shutdown_distributed()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_gradients_and_metrics_are_averaged_exactly_across_processes(tmp_path):
    """Without batch norm, 2 processes x 2 samples give the weights and metrics of 1 process x 4 samples."""
    import torch
    import torch.multiprocessing as mp

    for world_size, batch in ((1, 4), (2, 2)):
        root = tmp_path / f"world{world_size}"
        mp.spawn(_train_tiny_net, args=(world_size, free_port(), str(root), batch), nprocs=world_size)
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
        import torch

        return torch.randn(16, 257) + index % 3, index % 3


def _search_tiny_net(rank: int, world_size: int, port: int, root: str) -> None:
    import os

    import torch

    from functions.data_loading import training_loader
    from functions.distributed import init_distributed, shutdown_distributed
    from functions.run_directory import RunDirectory
    from functions.trainer import ArchitectureStep, Selection, Trainer
    from models.search_network import SearchNetwork
    from utils.config import get_default_config
    from utils.run_logging import create_logger

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    cfg = get_default_config()
    cfg.TRAIN.END_EPOCH, cfg.VAL_FREQ, cfg.SEED = 1, 1, 5
    cfg.freeze()
    run = RunDirectory(Path(root))
    for folder in (run.model_dir, run.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = SearchNetwork(4, 3, 3)
    torch.save([a.detach().clone() for a in model.arch_parameters()], Path(root) / "initial_alphas.pt")
    optimizer = torch.optim.Adam(model.weight_parameters(), lr=0.01)
    arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=0.01, betas=(0.5, 0.999))
    loader = training_loader(_LabelledNoise(), 2, cfg.SEED, ctx, 0, max_batches=3)
    arch_loader = training_loader(_LabelledNoise(), 2, cfg.SEED + 1, ctx, 0)
    create_logger(None, ctx.is_main)
    trainer = Trainer(cfg, ctx, run, model, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1),
                      loader, lambda _epoch: {}, Selection("test_top1", True, "best_acc1"),
                      drop_path_prob=lambda _epoch: 0.0, architecture=ArchitectureStep(arch_loader, arch_optimizer))
    trainer.fit()
    torch.save([a.detach() for a in model.arch_parameters()], Path(root) / f"alphas_rank{rank}.pt")
    shutdown_distributed()


def test_architecture_step_is_averaged_across_processes(tmp_path):
    """Each process steps the alphas on its own `val` batches; averaged gradients keep them identical."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_search_tiny_net, args=(2, free_port(), str(tmp_path)), nprocs=2)
    initial = torch.load(tmp_path / "initial_alphas.pt")
    rank0, rank1 = (torch.load(tmp_path / f"alphas_rank{rank}.pt") for rank in (0, 1))
    for start, first, second in zip(initial, rank0, rank1):
        assert torch.equal(first, second)
        assert not torch.allclose(first, start)
