"""A ResNet that keeps time resolution, as WeSpeaker's and voxceleb_trainer's speaker ResNets are built (our code):
a 3x3 stride-1 stem of `width` channels, no max pooling, four stages of basic blocks at width x 1, 2, 4, 8 with
strides 1, 2, 2, 2. A 200-frame x 80-bin crop reaches the pooling as 25 frames x 10 bins (torchvision's
ResNet-34, stem stride 2 and a max pooling, leaves 7 x 3), so statistics pooling has frames to take statistics
over. MODEL.NAME 'wespeaker_resnet34' has 3, 4, 6, 3 blocks (WeSpeaker's ResNet34: width 32, 6.6 M parameters with its
256-d statistics-pooled embedding); MODEL.RESNET_WIDTH sets the width.

`x` is [B, T, F]; the last map is [B, 8 * width, T / 8, F / 8] (each stride-2 stage takes ceil(n / 2)).
"""
from __future__ import annotations

import torch
from torch import nn

from models.speaker_head import HeadSpec, SpeakerHead, halved

BLOCKS_PER_STAGE = {"wespeaker_resnet34": (3, 4, 6, 3)}
STAGE_STRIDES = (1, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, and a 1x1 projection on the shortcut where the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TimeKeepingResNet(SpeakerHead, nn.Module):
    """train mode: `forward(x)` gives the classifier's outputs; eval mode: the embedding."""

    # oneDNN (torch 2.14, CPU) crashes with a segmentation fault in this network's backward pass on channels-last
    # 100-frame x 80-bin batches; the trainer leaves its layout alone (functions/trainer.py).
    channels_last = False

    def __init__(self, blocks_per_stage: tuple[int, ...], num_classes: int, width: int = 32,
                 head: HeadSpec = HeadSpec()) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        stages, in_channels = [], width
        for stage, (blocks, stride) in enumerate(zip(blocks_per_stage, STAGE_STRIDES)):
            channels = width * 2**stage
            stages.append(nn.Sequential(*(BasicBlock(in_channels if block == 0 else channels, channels,
                                                     stride if block == 0 else 1) for block in range(blocks))))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.attach_head(in_channels, num_classes, head)

    def last_map_bins(self, n_features: int) -> int:
        """Three stride-2 stages."""
        return halved(n_features, 3)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x.unsqueeze(1)))


def build_time_keeping_resnet(name: str, num_classes: int, width: int, head: HeadSpec) -> TimeKeepingResNet:
    return TimeKeepingResNet(BLOCKS_PER_STAGE[name], num_classes, width, head)
