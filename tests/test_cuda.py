"""The CUDA paths: mixed precision, cuDNN, NCCL under torchrun, and checkpoints that move between GPU and CPU.

Skipped where no CUDA device is present (CI runs on the CPU); on a GPU machine: python -m pytest tests/test_cuda.py.
One GPU cannot hold two NCCL ranks, so the NCCL runs are torchrun with one process: the process group, the DDP
wrapper and every collective are the ones N processes use.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from functions.distributed import single_process
from functions.experiment import IDENTIFICATION_SELECTION
from functions.trainer import Trainer
from models.genotype_network import GenotypeNetwork
from models.genotypes import AUTOSPEECH, genotype_to_text
from tests.conftest import run_script
from tests.test_scripts import TINY_CELL, only_run, small
from utils.checkpoint import load_checkpoint
from utils.config import get_default_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TORCHRUN_ONE = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
ON_GPU = ["DEVICE", "cuda", "TRAIN.AMP", "True"]


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "Log" / "metrics.jsonl").read_text().splitlines()]


def test_torchrun_training_with_amp_on_nccl_then_resumed_on_the_cpu(tiny_corpus, tmp_path):
    run_script(*TORCHRUN_ONE, "train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", "--text_arch",
               genotype_to_text(AUTOSPEECH), *small(tiny_corpus, tmp_path, *TINY_CELL, *ON_GPU, "TRAIN.END_EPOCH", "2"))
    run = only_run(tmp_path / "logs_scratch")
    assert "device cuda:0; 1 process(es)" in (run / "Log" / "train.log").read_text()
    rows = history(run)
    assert [row["epoch"] for row in rows] == [0, 1]
    assert all(math.isfinite(row["train_loss"]) for row in rows)
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["test_last"]["top1"] <= 100.0

    state = load_checkpoint(run / "Model" / "checkpoint_last.pth", map_location="cpu")["state_dict"]
    floats = [value for value in state.values() if value.is_floating_point()]
    assert floats and all(value.dtype == torch.float32 for value in floats)  # AMP keeps float32 master weights

    run_script("train_identification.py", "--cfg", "exps/demo/scratch_iden.yaml", "--load_path", str(run),
               *small(tiny_corpus, tmp_path, *TINY_CELL, "DEVICE", "cpu", "TRAIN.END_EPOCH", "3"))
    assert [row["epoch"] for row in history(run)] == [0, 1, 2]


@pytest.mark.parametrize("single_path", ["True", "False"])
def test_search_with_amp_on_nccl(single_path, tiny_corpus, tmp_path):
    process = run_script(*TORCHRUN_ONE, "search.py", "--cfg", "exps/demo/search.yaml",
                         *small(tiny_corpus, tmp_path, *TINY_CELL, *ON_GPU, "MODEL.LAYERS", "3",
                                "MODEL.SINGLE_PATH", single_path))
    results = json.loads((only_run(tmp_path / "logs_search") / "results.json").read_text())
    assert results["genotype"].startswith("Genotype(") and results["genotype"] in process.stdout


def test_verification_on_cuda_scores_as_on_the_cpu(fixtures_dir, tiny_corpus, tmp_path):
    checkpoint = str(fixtures_dir / "genotype_net_C8_L3_K10.pth")
    scores = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        run_script("evaluate_verification.py", "--cfg", "exps/scratch/scratch_veri.yaml", "--load_path", checkpoint,
                   *small(tiny_corpus, out, "MODEL.INIT_CHANNELS", "8", "MODEL.LAYERS", "3", "MODEL.NUM_CLASSES",
                          "10", "DEVICE", device))
        lines = (only_run(out / "logs_eval") / "scores.txt").read_text().splitlines()
        scores[device] = [float(line.split()[0]) for line in lines]
    assert len(scores["cpu"]) == len(scores["cuda"]) > 0
    # cuDNN's algorithms (TF32 included) round differently from oneDNN's.
    assert max(abs(a - b) for a, b in zip(scores["cpu"], scores["cuda"])) < 5e-3


def test_float16_autocast_steps_through_the_grad_scaler(monkeypatch):
    """GPUs without bfloat16 get float16 autocast, whose gradients need the scaler; the network still learns."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    cfg = get_default_config()
    cfg.TRAIN.AMP = True
    cfg.freeze()
    cuda = single_process("cuda:0")
    torch.manual_seed(0)
    model = GenotypeNetwork(8, 4, 3, AUTOSPEECH).cuda().train()
    trainer = Trainer(cfg, cuda, None, model, torch.optim.Adam(model.parameters(), lr=1e-3), None, None,
                      lambda epoch: {}, IDENTIFICATION_SELECTION, drop_path_prob=lambda epoch: 0.0)
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    inputs = torch.randn(8, 100, 257, device="cuda")
    targets = torch.arange(8, device="cuda") % 4
    losses = [float(trainer._weight_step(inputs, targets)[0]) for _ in range(20)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.7 * losses[0]
    assert math.isfinite(trainer.scaler.get_scale())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_gpu_benchmark_rows(tmp_path):
    output = tmp_path / "gpu.md"
    run_script("benchmarks/run_all.py", "--quick", "--device", "cuda", "--output", str(output), timeout=300)
    table = output.read_text()
    assert "GPU rows: " + torch.cuda.get_device_name() in table
    assert sum(line.startswith("| Search step") for line in table.splitlines()) == 2
    assert sum(line.startswith("| Training step") for line in table.splitlines()) == 1
