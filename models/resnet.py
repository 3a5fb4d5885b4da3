"""ResNet-18/34 baselines: torchvision's networks on a 1-channel spectrogram, with a `classifier` head.

`pretrained` selects the initialisation: '' keeps torchvision's own (Kaiming) initialisation; 'imagenet' takes
torchvision's ImageNet weights from the torch hub cache (never downloading them); any other value is a path to
such a weights file. Every ImageNet tensor whose name and shape match is copied; the 1-channel first conv and
the classifier have no ImageNet counterpart of their shape and keep their own initialisation (the classifier is
drawn from N(0, 0.01) with zero bias, as in the published baselines).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet, ResNet18_Weights, ResNet34_Weights

from models.speaker_head import HeadSpec, SpeakerHead, halved
from utils.config import ConfigError

IMAGENET_WEIGHTS = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
}
BLOCKS_PER_STAGE = {
    "resnet18": [2, 2, 2, 2],
    "resnet34": [3, 4, 6, 3],
}


class PretrainedWeightsError(ConfigError):
    """Pretrained weights were asked for and are not where they should be; the message names that path."""


class SpeakerResNet(SpeakerHead, ResNet):
    """train mode: `forward(x)` gives logits; eval mode: the embedding (512-d pooled by default; see
    `forward_classifier`).

    `x` is [B, T, F] (time, frequency; F = head.n_features).
    """

    def __init__(self, blocks_per_stage: list[int], num_classes: int, head: HeadSpec = HeadSpec()) -> None:
        super().__init__(BasicBlock, blocks_per_stage)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=2, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        # torchvision's average pooling and classifier give way to the configured head.
        del self.fc, self.avgpool
        self.attach_head(512 * BasicBlock.expansion, num_classes, head)
        if isinstance(self.classifier, nn.Linear):
            # The published baselines' classifier initialisation.
            nn.init.normal_(self.classifier.weight, mean=0.0, std=0.01)
            nn.init.zeros_(self.classifier.bias)

    def last_map_bins(self, n_features: int) -> int:
        """conv1 (kernel 7, stride 2, padding 2), then the max pooling and three stride-2 stages."""
        return halved((n_features - 3) // 2 + 1, 4)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x.unsqueeze(1)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def imagenet_cache_path(arch: str) -> Path:
    """Where torchvision's weights API keeps the ImageNet weights of `arch`: torch hub's checkpoints folder."""
    file_name = IMAGENET_WEIGHTS[arch].url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _read_imagenet_state_dict(arch: str, pretrained: str) -> Mapping[str, torch.Tensor]:
    if pretrained == "imagenet":
        path = imagenet_cache_path(arch)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"ImageNet weights for {arch} are not in the torch hub cache: put them at {path}"
            )
        # The file is in the cache, so the weights API reads it instead of downloading.
        return IMAGENET_WEIGHTS[arch].get_state_dict(progress=False, map_location="cpu")
    path = Path(pretrained).expanduser().absolute()
    if not path.is_file():
        raise PretrainedWeightsError(f"ImageNet weights for {arch} not found: put them at {path}")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{path} does not hold a state_dict (found {type(state_dict).__name__})")
    return state_dict


def load_imagenet_weights(model: SpeakerResNet, arch: str, pretrained: str) -> list[str]:
    """Copy every ImageNet tensor whose name and shape match the model's; return the copied names."""
    source = _read_imagenet_state_dict(arch, pretrained)
    copied = []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            candidate = source.get(name)
            if isinstance(candidate, torch.Tensor) and candidate.shape == tensor.shape:
                tensor.copy_(candidate)
                copied.append(name)
    return copied


def build_resnet(arch: str, num_classes: int, pretrained: str = "", head: HeadSpec = HeadSpec()) -> SpeakerResNet:
    """`arch` is 'resnet18' or 'resnet34'; `pretrained` is '', 'imagenet' or a path to the ImageNet weights."""
    if arch not in BLOCKS_PER_STAGE:
        raise ValueError(f"unknown ResNet {arch!r}; choose one of {', '.join(BLOCKS_PER_STAGE)}")
    model = SpeakerResNet(BLOCKS_PER_STAGE[arch], num_classes, head)
    if pretrained:
        load_imagenet_weights(model, arch, pretrained)
    return model


def resnet18(num_classes: int, pretrained: str = "") -> SpeakerResNet:
    return build_resnet("resnet18", num_classes, pretrained)


def resnet34(num_classes: int, pretrained: str = "") -> SpeakerResNet:
    return build_resnet("resnet34", num_classes, pretrained)
