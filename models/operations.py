"""The candidate operations of a cell and the building blocks they share.

Tensors are [B, C, time, frequency]. Every operation keeps the channel count C; with stride 2 it halves both
spatial sizes (rounding up), so that all operations on one edge produce tensors of the same shape. No
convolution has a bias: a BatchNorm follows each one. `affine` is False in the search network and True in the
network trained from a genotype.

The attribute names (`op`, `conv_1`, `conv_2`, `bn`) and the order of the layers inside each `op` sequence fix
the `state_dict` keys, which must equal those of the published checkpoints.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

KernelSize = int | tuple[int, int]


def _pair(value: KernelSize) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def _same_padding(kernel_size: KernelSize, dilation: KernelSize = 1) -> tuple[int, int]:
    (kernel_h, kernel_w), (dilation_h, dilation_w) = _pair(kernel_size), _pair(dilation)
    return dilation_h * (kernel_h - 1) // 2, dilation_w * (kernel_w - 1) // 2


class ReLUConvBN(nn.Module):
    def __init__(
        self, C_in: int, C_out: int, kernel_size: KernelSize, stride: int, padding: KernelSize, affine: bool = True
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, depthwise dilated convolution, pointwise convolution, BN."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: KernelSize,
        stride: int,
        padding: KernelSize,
        dilation: KernelSize,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in, bias=False
            ),
            nn.Conv2d(C_in, C_out, kernel_size=1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two rounds of ReLU, depthwise convolution, pointwise convolution, BN; the stride is on the first round."""

    def __init__(
        self, C_in: int, C_out: int, kernel_size: KernelSize, stride: int, padding: KernelSize, affine: bool = True
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Conv7x1Then1x7(nn.Module):
    """ReLU, a (1, 7) convolution striding the frequency axis, a (7, 1) one striding the time axis, BN."""

    def __init__(self, C: int, stride: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """Zeros of the output shape; networks skip this operation instead of running it where they can."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convolutions of C_out/2 channels each, concatenated.

    Both convolutions read the same pixels: the published AutoSpeech code dropped DARTS' one-pixel shift of the
    second one, and its checkpoints were trained that way.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, kernel_size=1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, kernel_size=1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x)], dim=1))


def _sep_conv(kernel_size: KernelSize) -> Callable[[int, int, bool], nn.Module]:
    return lambda C, stride, affine: SepConv(C, C, kernel_size, stride, _same_padding(kernel_size), affine)


def _dil_conv(kernel_size: KernelSize, dilation: KernelSize) -> Callable[[int, int, bool], nn.Module]:
    padding = _same_padding(kernel_size, dilation)
    return lambda C, stride, affine: DilConv(C, C, kernel_size, stride, padding, dilation, affine)


def _skip_connect(C: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine)


# name -> constructor(C, stride, affine). The names are part of the genotype format.
OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": _skip_connect,
    "sep_conv_3x3": _sep_conv(3),
    "sep_conv_5x5": _sep_conv(5),
    "sep_conv_7x7": _sep_conv(7),
    # (3, 1) spans time only, (1, 3) frequency only; dilation applies on the spanned axis alone.
    "sep_conv_3x1": _sep_conv((3, 1)),
    "sep_conv_1x3": _sep_conv((1, 3)),
    "dil_conv_3x3": _dil_conv(3, 2),
    "dil_conv_5x5": _dil_conv(5, 2),
    "dil_conv_3x1": _dil_conv((3, 1), (2, 1)),
    "dil_conv_1x3": _dil_conv((1, 3), (1, 2)),
    "conv_7x1_1x7": lambda C, stride, affine: Conv7x1Then1x7(C, stride, affine),
}


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of `x` with probability `drop_prob`, scaling the kept ones by 1 / (1 - drop_prob)."""
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x * mask / keep_prob
