"""A small VGG-style convolutional encoder for image worlds.

f(x) = clip_R(W · GAP(block_B(… block_1(x)))), where each block is a 3×3 convolution with same padding,
a ReLU and a 2×2 max-pool (halving height and width), GAP is the global average over the remaining
positions and W a linear layer to d = ``out_dim``. Parameters are drawn from an explicit generator with
PyTorch's default ranges, as in ``preadapt.encoders.base``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from preadapt.encoders.base import LinearEncoderConfig, clip_norm, init_linear

if TYPE_CHECKING:
    from preadapt.worlds.base import InputSpec


def init_conv(layer: nn.Conv2d, generator: torch.Generator) -> None:
    """PyTorch's default ranges for a convolution, U(−b, b) with b = 1/√fan_in, drawn from ``generator``.

    fan_in = in_channels/groups · kernel height · kernel width.

    >>> conv = nn.Conv2d(1, 2, 3)
    >>> init_conv(conv, torch.Generator().manual_seed(0))
    >>> bool(conv.weight.abs().max() <= 1 / 3)
    True
    """
    fan_in = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        layer.weight.copy_((2 * torch.rand(layer.weight.shape, generator=generator) - 1) * bound)
        if layer.bias is not None:
            layer.bias.copy_((2 * torch.rand(layer.bias.shape, generator=generator) - 1) * bound)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``; where no gradient is needed, the same maxima from four strided slices.

    torch's CPU max-pool over (n, C, H, W) is unvectorised: on 8192 × 16 × 8 × 8 activations it took
    46.5 ms where the slices' elementwise maxima take 5.2 ms (one thread), and a max is exact, so the
    outputs are the same bits (NaN propagates either way). With autograd the module's own pooling runs:
    its backward sends a window's gradient to one maximum where ``torch.maximum``'s splits it between
    tied ones, and tied positive maxima occur (a flat image region gives equal convolutions).

    >>> x = torch.rand(3, 2, 7, 6)
    >>> pool = MaxPool2x2()
    >>> with torch.no_grad():
    ...     fast = pool(x)
    >>> torch.equal(fast, nn.MaxPool2d(2)(x)), tuple(fast.shape)  # odd sizes floor, as nn.MaxPool2d
    (True, (3, 2, 3, 3))
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        x = x[..., :x.shape[-2] // 2 * 2, :x.shape[-1] // 2 * 2]
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


class CNNEncoder(nn.Module):
    """f(x) = clip_R(linear(GAP(conv blocks(x)))) for images ``x: (n, C, H, W)``, or ``(n, H, W)`` when
    ``input_shape`` is (H, W) (one channel).

    >>> encoder = CNNEncoder((8, 8), [4, 8], out_dim=3, norm_bound=1.0, generator=torch.Generator().manual_seed(0))
    >>> encoder(torch.rand(5, 8, 8)).shape
    torch.Size([5, 3])
    """

    def __init__(self, input_shape: tuple[int, ...], widths: list[int], out_dim: int, norm_bound: float | None,
                 generator: torch.Generator) -> None:
        super().__init__()
        channels, height, width = _image_shape(input_shape)
        stages, allowed = len(widths), min(height, width).bit_length() - 1  # allowed = ⌊log2 min(H, W)⌋
        if stages > allowed:
            raise ValueError(
                f"encoder.widths: got {stages} conv blocks, but a {height}×{width} image allows at most {allowed} "
                f"(each block halves height and width with a 2×2 max-pool); use at most {allowed} widths")
        with torch.device("meta"):  # built without drawing from torch's global RNG; drawn below
            layers: list[nn.Module] = []
            for c_in, c_out in zip([channels, *widths[:-1]], widths):
                layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(), MaxPool2x2()]
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(widths[-1], out_dim)
        self.to_empty(device="cpu")
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                init_conv(layer, generator)
        init_linear(self.head, generator)
        self.input_shape = tuple(input_shape)
        self.norm_bound = norm_bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, *input_shape) -> (n, d)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"cnn: expected inputs of shape (n, {', '.join(map(str, self.input_shape))}); "
                             f"got {tuple(x.shape)}")
        if len(self.input_shape) == 2:
            x = x.unsqueeze(1)  # (n, 1, H, W)
        h = self.features(x)  # (n, widths[-1], H / 2^B, W / 2^B)
        h = h.mean(dim=(2, 3))  # (n, widths[-1])
        return clip_norm(self.head(h), self.norm_bound)


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) == 2:
        return (1, *input_shape)
    if len(input_shape) == 3:
        return tuple(input_shape)
    raise ValueError(f"encoder.kind: cnn needs image inputs of shape (C, H, W) or (H, W); "
                     f"the world's input_shape is {tuple(input_shape)}")


class CNNEncoderConfig(LinearEncoderConfig):
    kind: Literal["cnn"] = "cnn"
    widths: list[int] = Field([16, 32], min_length=1,
                              description="channels of the conv blocks (3×3 conv, ReLU, 2×2 max-pool each); "
                                          "an H×W image allows at most log2(min(H, W)) blocks")

    @field_validator("widths")
    @classmethod
    def _widths_positive(cls, widths):
        if any(w < 1 for w in widths):
            raise ValueError("widths must be ≥ 1")
        return widths

    def check_input(self, spec: InputSpec) -> None:
        """Real-valued images (C, H, W) or (H, W), with room for a 2×2 max-pool per block."""
        if not spec.real or len(spec.shape) not in (2, 3):
            raise ValueError(f"kind: got 'cnn', which needs real-valued images of shape (C, H, W) or (H, W); "
                             f"the world gives {spec}")
        height, width = spec.shape[-2:]
        allowed = min(height, width).bit_length() - 1  # ⌊log2 min(H, W)⌋
        if len(self.widths) > allowed:
            raise ValueError(f"widths: got {self.widths}, {len(self.widths)} conv blocks; allowed: at most {allowed} "
                             f"for {height}×{width} images (each block halves height and width with a 2×2 max-pool)")


def build_cnn(config: CNNEncoderConfig, input_shape, generator) -> CNNEncoder:
    return CNNEncoder(tuple(input_shape), config.widths, config.out_dim, config.norm_bound, generator)
