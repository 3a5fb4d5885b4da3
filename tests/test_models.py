"""Operations, the search network, the genotype network, the ResNets and build_model."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from models import MODEL_NAMES, build_model, genotype_network, search_network
from models.genotype_network import GenotypeNetwork
from models.genotypes import AUTOSPEECH, Genotype, GenotypeError
from models.operations import OPS, Zero
from models.resnet import PretrainedWeightsError, imagenet_cache_path, resnet18, resnet34
from models.search_network import SearchNetwork
from models.search_spaces import KNOWN_OPS, NUM_EDGES, SEARCH_SPACES
from utils.checkpoint import load_checkpoint, load_state_dict_strict
from utils.config import get_default_config

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
FREQUENCY_BINS = 257


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Run these CPU-heavy tests on one thread: when other processes oversubscribe the cores, OpenMP threads
    spinning at barriers make multi-threaded convolutions tens of times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _json_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(tensor.shape) for key, tensor in model.state_dict().items()}


def _trainable_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def _spectrograms(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, FREQUENCY_BINS, generator=torch.Generator().manual_seed(seed))


# Operations ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
def test_operation_keeps_channels_and_halves_resolution_with_stride_2(name: str, stride: int, affine: bool) -> None:
    torch.manual_seed(0)
    op = OPS[name](6, stride, affine)
    x = torch.randn(2, 6, 13, 17, requires_grad=True)
    out = op(x)
    expected = (2, 6, 13, 17) if stride == 1 else (2, 6, 7, 9)
    assert tuple(out.shape) == expected
    out.square().sum().backward()
    if name != "none":
        assert x.grad is not None and x.grad.abs().sum() > 0
    for parameter in op.parameters():
        assert parameter.grad is not None


def test_no_convolution_has_a_bias() -> None:
    for name in OPS:
        for module in OPS[name](4, 2, True).modules():
            if isinstance(module, torch.nn.Conv2d):
                assert module.bias is None, name


def test_factorized_reduce_applies_both_convolutions_to_the_same_pixels() -> None:
    reduce = OPS["skip_connect"](4, 2, False)
    with torch.no_grad():
        reduce.conv_2.weight.copy_(reduce.conv_1.weight)
    out = reduce(torch.randn(2, 4, 8, 10))
    assert torch.equal(out[:, :2], out[:, 2:])


def test_known_ops_cover_every_search_space() -> None:
    for space in SEARCH_SPACES.values():
        for edge in space.normal + space.reduce:
            assert set(edge) <= KNOWN_OPS <= set(OPS)


# The network of a genotype ------------------------------------------------------------------------------------


def test_published_checkpoint_loads_and_reproduces_embeddings_and_logits() -> None:
    checkpoint = load_checkpoint(FIXTURES / "genotype_net_C8_L3_K10.pth")
    assert checkpoint["genotype"] == AUTOSPEECH
    model = GenotypeNetwork(8, 10, 3, checkpoint["genotype"])
    load_state_dict_strict(model, checkpoint["state_dict"])
    model.drop_path_prob = 0.0
    model.eval()
    io = np.load(FIXTURES / "genotype_net_C8_L3_K10_io.npz")
    with torch.no_grad():
        embedding = model(torch.from_numpy(io["input"]))
        logits = model.forward_classifier(embedding)
    assert (embedding - torch.from_numpy(io["embedding"])).abs().max() <= 1e-5
    assert (logits - torch.from_numpy(io["logits"])).abs().max() <= 1e-5


@pytest.mark.parametrize("classes", [1251, 1211])
def test_full_size_genotype_network_matches_published_keys_shapes_and_size(classes: int) -> None:
    with torch.device("meta"):
        model = GenotypeNetwork(128, classes, 8, AUTOSPEECH)
    name = f"proposed_C128_L8_K{classes}"
    assert _shapes(model) == _json_fixture("state_dict_shapes.json")[name]
    assert list(model.state_dict()) == list(_json_fixture("state_dict_shapes.json")[name])
    assert _trainable_parameters(model) == _json_fixture("parameter_counts.json")[name]
    assert model.embedding_size == 2048


@pytest.mark.parametrize("frames", [200, 300, 317])
def test_genotype_network_train_gives_logits_eval_gives_embedding(frames: int) -> None:
    torch.manual_seed(0)
    model = GenotypeNetwork(8, 7, 3, AUTOSPEECH)
    model.drop_path_prob = 0.2
    x = _spectrograms(3, frames)
    logits = model.train()(x)
    assert logits.shape == (3, 7)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    with torch.no_grad():
        embedding = model.eval()(x)
    assert embedding.shape == (3, 128)
    assert torch.allclose(model.forward_classifier(embedding), model.classifier(embedding))


def test_genotype_network_rejects_an_invalid_genotype() -> None:
    broken = AUTOSPEECH._replace(normal=AUTOSPEECH.normal[:7])
    with pytest.raises(GenotypeError, match="normal has 7"):
        GenotypeNetwork(8, 10, 3, broken)


def test_drop_path_only_in_training() -> None:
    torch.manual_seed(0)
    model = GenotypeNetwork(8, 5, 3, AUTOSPEECH).eval()
    model.drop_path_prob = 0.9
    x = _spectrograms(2, 200)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


class DropPathCounter:
    """Stands in for `drop_path` where a network calls it: calls it, and counts over every call the sample-paths
    whose input was not zero and whose output is (dropped), checking that the kept ones are scaled by 1 / keep."""

    def __init__(self, drop_path) -> None:
        self.drop_path, self.dropped, self.paths = drop_path, 0, 0

    def __call__(self, x: torch.Tensor, drop_prob: float) -> torch.Tensor:
        out = self.drop_path(x, drop_prob)
        live = x.detach().flatten(1).abs().amax(1) > 0
        zeroed = out.detach().flatten(1).abs().amax(1) == 0
        kept = live & ~zeroed
        assert torch.allclose(out[kept], x[kept] / (1.0 - drop_prob), rtol=1e-5, atol=1e-6)
        self.dropped += int((live & zeroed).sum())
        self.paths += int(live.sum())
        return out


DROP_PROB = 0.3


@pytest.mark.parametrize("module", [genotype_network, search_network], ids=["genotype network", "search network"])
def test_drop_path_while_training_drops_that_fraction_of_paths(module, monkeypatch) -> None:
    counter = DropPathCounter(module.drop_path)
    monkeypatch.setattr(module, "drop_path", counter)
    torch.manual_seed(0)
    if module is genotype_network:
        network = GenotypeNetwork(4, 5, 3, AUTOSPEECH)
    else:  # single path: only the sampled operation of each edge runs, the cheaper way to draw many paths
        network = SearchNetwork(4, 5, 3, single_path=True)
    network.train()
    x = _spectrograms(8, 40)
    outputs = {}
    for prob in (0.0, 0.0, DROP_PROB):
        network.drop_path_prob = prob
        torch.manual_seed(1)  # the same Gumbel sample for the search network: only drop-path may differ
        with torch.no_grad():
            outputs.setdefault(prob, []).append(network(x))
    assert torch.equal(*outputs[0.0])
    assert not torch.allclose(outputs[DROP_PROB][0], outputs[0.0][0], atol=1e-3)
    with torch.no_grad():
        for _ in range(5):
            network(x)
    # Each path of each sample is dropped independently with probability DROP_PROB: the count is binomial.
    # Over at least 1,000 paths its standard deviation is under 1.5 % of them.
    assert counter.paths >= 1000
    spread = math.sqrt(DROP_PROB * (1 - DROP_PROB) / counter.paths)
    assert abs(counter.dropped / counter.paths - DROP_PROB) < 4 * spread


# The search network -------------------------------------------------------------------------------------------


def _search_network(space: str = "s2", single_path: bool = False, seed: int = 0) -> SearchNetwork:
    torch.manual_seed(seed)
    return SearchNetwork(4, 5, 3, space=space, single_path=single_path)


@pytest.mark.parametrize("space", ["s1", "s2", "s3"])
def test_search_network_alphas_have_one_column_per_operation(space: str) -> None:
    network = _search_network(space)
    ops_per_edge = 2 if space == "s1" else len(SEARCH_SPACES[space].normal[0])
    assert network.alphas_normal.shape == (NUM_EDGES, ops_per_edge)
    assert network.alphas_reduce.shape == (NUM_EDGES, ops_per_edge)
    assert network.alphas_normal.abs().max() < 0.01


def test_arch_and_weight_parameters_partition_the_parameters() -> None:
    network = _search_network()
    arch = {id(parameter) for parameter in network.arch_parameters()}
    weights = {id(parameter) for parameter in network.weight_parameters()}
    assert arch == {id(network.alphas_normal), id(network.alphas_reduce)}
    assert not arch & weights
    assert arch | weights == {id(parameter) for parameter in network.parameters()}


@pytest.mark.parametrize("space", ["s1", "s2", "s3"])
@pytest.mark.parametrize("frames", [200, 300, 317])
def test_single_path_search_network_shapes_and_gradients(space: str, frames: int) -> None:
    network = _search_network(space, single_path=True).train()
    logits = network(_spectrograms(2, frames))
    assert logits.shape == (2, 5)
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    assert network.alphas_normal.grad.abs().sum() > 0
    assert network.alphas_reduce.grad.abs().sum() > 0
    with torch.no_grad():
        assert network.eval()(_spectrograms(2, frames)).shape == (2, 4 * 16)


@pytest.mark.parametrize("space", ["s1", "s2", "s3"])
def test_full_search_network_shapes_and_gradients(space: str) -> None:
    network = _search_network(space).train()
    logits = network(_spectrograms(2, 300))
    assert logits.shape == (2, 5)
    F.cross_entropy(logits, torch.tensor([1, 4])).backward()
    assert network.alphas_normal.grad.abs().sum() > 0
    assert network.alphas_reduce.grad.abs().sum() > 0
    assert all(parameter.grad is not None for parameter in network.stem.parameters())


def test_sampled_edge_weights_are_one_hot_and_fresh_per_cell() -> None:
    network = _search_network("s3")
    weights = network.sample_cell_weights(torch.Generator().manual_seed(3))
    assert weights.shape == (3, NUM_EDGES, 10)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(3, NUM_EDGES))
    assert torch.allclose(weights.max(dim=-1).values, torch.ones(3, NUM_EDGES))
    assert ((weights.abs() < 1e-6) | ((weights - 1).abs() < 1e-6)).all()
    assert not torch.equal(weights[1], weights[2]), "two reduction cells drew the same sample"


def test_straight_through_sample_is_hard_forward_and_soft_backward() -> None:
    network = _search_network("s2")  # 3 cells: normal, reduction, reduction
    coefficients = torch.randn(3, NUM_EDGES, 8)
    weights = network.sample_cell_weights(torch.Generator().manual_seed(5))
    (weights * coefficients).sum().backward()

    alphas_normal = network.alphas_normal.detach().clone().requires_grad_()
    alphas_reduce = network.alphas_reduce.detach().clone().requires_grad_()
    gumbels = -torch.empty(3, NUM_EDGES, 8).exponential_(generator=torch.Generator().manual_seed(5)).log()
    log_probs = torch.stack(
        [F.log_softmax(alphas_normal, -1), F.log_softmax(alphas_reduce, -1), F.log_softmax(alphas_reduce, -1)]
    )
    soft = (log_probs + gumbels).softmax(dim=-1)
    (soft * coefficients).sum().backward()

    assert torch.equal(weights.detach().round(), F.one_hot(soft.argmax(-1), 8).float())
    assert torch.allclose(network.alphas_normal.grad, alphas_normal.grad, atol=1e-6)
    assert torch.allclose(network.alphas_reduce.grad, alphas_reduce.grad, atol=1e-6)


def test_single_path_and_full_mode_agree_on_a_fixed_sample() -> None:
    network = _search_network("s2").train()
    x = _spectrograms(2, 200)
    results = {}
    for single_path in (False, True):
        network.single_path = single_path
        network.zero_grad()
        weights = network.sample_cell_weights(torch.Generator().manual_seed(11))
        weights.retain_grad()
        logits = network(x, weights)
        F.cross_entropy(logits, torch.tensor([0, 2])).backward()
        results[single_path] = (logits.detach(), weights.grad.clone(), weights.detach())
    (full_logits, full_grad, sample), (single_logits, single_grad, _) = results[False], results[True]
    assert torch.allclose(full_logits, single_logits, atol=1e-6)
    # Both modes give the sampled operations the same gradient; single-path gives no other operation one.
    chosen = sample > 0.5
    assert torch.allclose(full_grad[chosen], single_grad[chosen], atol=1e-6)
    assert (single_grad[~chosen] == 0).all()
    assert full_grad[~chosen].abs().sum() > 0


def test_none_operation_is_never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Zero, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the none operation ran")

    monkeypatch.setattr(Zero, "forward", refuse)
    for single_path in (False, True):
        network = _search_network("s2", single_path=single_path).train()
        assert network(_spectrograms(2, 200)).shape == (2, 5)


def test_single_path_node_whose_edges_all_sampled_none_is_zero() -> None:
    network = _search_network("s2", single_path=True).eval()
    weights = torch.zeros(3, NUM_EDGES, 8)
    weights[..., 0] = 1.0  # every edge of every cell samples `none`
    with torch.no_grad():
        embedding = network(_spectrograms(2, 200), weights)
    assert embedding.shape == (2, 64)
    assert (embedding == 0).all()


def test_drop_path_changes_the_search_output_only_in_training() -> None:
    network = _search_network("s1", single_path=True).train()
    x = _spectrograms(4, 200)
    weights = network.sample_cell_weights(torch.Generator().manual_seed(1)).detach()
    network.drop_path_prob = 0.0
    assert torch.equal(network(x, weights), network(x, weights))
    network.drop_path_prob = 0.5
    assert not torch.equal(network(x, weights), network(x, weights))


def test_single_path_is_not_slower_than_full_mode() -> None:
    def seconds_per_step(network: SearchNetwork) -> float:
        x = _spectrograms(2, 100)
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            network(x).sum().backward()
            timings.append(time.perf_counter() - start)
        return min(timings)

    full = seconds_per_step(_search_network("s2").train())
    single = seconds_per_step(_search_network("s2", single_path=True).train())
    assert single < full


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_full_mode_search_step_never_waits_for_the_device() -> None:
    network = _search_network("s2").cuda().train()
    network.drop_path_prob = 0.1
    x = _spectrograms(2, 200).cuda()
    labels = torch.tensor([0, 1], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        F.cross_entropy(network(x), labels).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_search_network_genotype_and_arch_weights() -> None:
    network = _search_network("s2")
    with torch.no_grad():
        network.alphas_normal.zero_()
        network.alphas_normal[:, 4] = 5.0  # sep_conv_3x3 everywhere
    genotype = network.genotype()
    assert isinstance(genotype, Genotype)
    assert {op for op, _ in genotype.normal} == {"sep_conv_3x3"}
    assert list(genotype.normal_concat) == [2, 3, 4, 5]
    normal, reduce = network.arch_weights()
    assert torch.allclose(normal.sum(dim=-1), torch.ones(NUM_EDGES))
    assert torch.allclose(reduce.sum(dim=-1), torch.ones(NUM_EDGES))
    assert not normal.requires_grad


# ResNets ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
@pytest.mark.parametrize("classes", [1251, 1211])
def test_resnet_matches_published_keys_shapes_and_size(arch: str, classes: int) -> None:
    with torch.device("meta"):
        model = resnet18(classes) if arch == "resnet18" else resnet34(classes)
    name = f"{arch}_K{classes}"
    assert _shapes(model) == _json_fixture("state_dict_shapes.json")[name]
    assert _trainable_parameters(model) == _json_fixture("parameter_counts.json")[name]


@pytest.mark.parametrize("frames", [200, 300, 317])
def test_resnet18_train_gives_logits_eval_gives_embedding(frames: int) -> None:
    torch.manual_seed(0)
    model = resnet18(6)
    x = _spectrograms(2, frames)
    logits = model.train()(x)
    assert logits.shape == (2, 6)
    logits.sum().backward()
    assert model.conv1.weight.grad is not None
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 512)


@pytest.fixture(scope="module")
def imagenet_like_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file in the format of torchvision's ImageNet weights (a torchvision resnet18 state_dict)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_resnet_copies_every_imagenet_tensor_of_matching_shape(imagenet_like_weights: Path) -> None:
    source = torch.load(imagenet_like_weights, weights_only=True)
    torch.manual_seed(1)
    model = resnet18(10, pretrained=str(imagenet_like_weights))
    own = model.state_dict()
    assert torch.equal(own["layer3.1.conv2.weight"], source["layer3.1.conv2.weight"])
    assert torch.equal(own["bn1.running_var"], source["bn1.running_var"])
    assert own["conv1.weight"].shape == (64, 1, 7, 7)
    copied = [key for key in source if key in own and torch.equal(own[key], source[key])]
    assert len(copied) == len(own) - 3  # all but conv1.weight, classifier.weight, classifier.bias


def test_resnet_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "resnet34.pth"
    with pytest.raises(PretrainedWeightsError, match=str(missing)):
        resnet34(10, pretrained=str(missing))


def test_resnet_imagenet_weights_come_only_from_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imagenet_like_weights: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert Path(torch.hub.get_dir()).is_relative_to(tmp_path)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_cache_path("resnet18") == expected
    with pytest.raises(PretrainedWeightsError, match=str(expected)) as error:
        resnet18(10, pretrained="imagenet")
    assert "\n" not in str(error.value)
    expected.parent.mkdir(parents=True)
    expected.write_bytes(imagenet_like_weights.read_bytes())
    model = resnet18(10, pretrained="imagenet")
    source = torch.load(imagenet_like_weights, weights_only=True)
    assert torch.equal(model.state_dict()["layer4.0.downsample.0.weight"], source["layer4.0.downsample.0.weight"])


# build_model --------------------------------------------------------------------------------------------------


def _config(name: str, **model_options: object):
    cfg = get_default_config()
    cfg.MODEL.NAME = name
    cfg.MODEL.INIT_CHANNELS = 8
    cfg.MODEL.LAYERS = 3
    for key, value in model_options.items():
        setattr(cfg.MODEL, key, value)
    return cfg


def test_build_model_dispatches_on_the_name() -> None:
    search = build_model(_config("model_search", SEARCH_SPACE="s1", SINGLE_PATH=True), 7)
    assert isinstance(search, SearchNetwork) and search.single_path and search.space.name == "s1"
    assert search.classifier.out_features == 7
    network = build_model(_config("model"), 9, AUTOSPEECH)
    assert isinstance(network, GenotypeNetwork) and network.classifier.out_features == 9
    for arch in ("resnet18", "resnet34"):
        assert build_model(_config(arch), 3).classifier.out_features == 3


def test_build_model_errors_are_one_clear_line() -> None:
    with pytest.raises(ValueError, match="needs a genotype"):
        build_model(_config("model"), 9)
    with pytest.raises(ValueError) as error:
        build_model(_config("vgg"), 9)
    message = str(error.value)
    assert "\n" not in message and "'vgg'" in message
    assert all(name in message for name in MODEL_NAMES)
