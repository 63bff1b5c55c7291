"""The fast start's head as a graph of its own: the first samples of a short decode, and no more.

Used only by `export_snac` (imports torch). The fast start (`runtime.codec.streaming`) decodes
the first 2 frames as if the utterance ended there and keeps only their first samples (768 of
4096). The whole-utterance graph computes every sample of every layer; this graph computes, at
each layer, only the outputs that those first samples depend on (each layer's reach to the right,
walked back from the output), with the same zero padding at the right end of every layer as a
whole decode, so its samples equal the whole decode's first ones to float rounding. The frame
count and the sample count are fixed at export (static shapes).

SNAC's upsampling layers (transposed convolutions) are computed as one MatMul and an overlap-add
(`_Upsample`), which ONNX Runtime runs faster here. Measured on the real 24 kHz architecture, one
thread, 2 frames: the whole decode 33 ms; this graph for 1280 samples 17.3 ms with ONNX Runtime's
ConvTranspose, 16.1 ms with the MatMul (its first upsampling layer, whose 33 MB of weights are
read for only 8 input steps, went from 3.8 to 2.7 ms); for the 768 samples the fast start uses
now, 12.6 ms (`bench.decode`'s head_decode_ms_1t).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from runtime.codec.stream_graph import Snake, codes_to_latent, same_padded


class _Upsample(nn.Module):
    """SNAC's transposed convolution (kernel 2s, stride s, padding s/2) as a MatMul: input step i
    adds ``W[..., r] x[i]`` to output s i + r and ``W[..., s + r] x[i]`` to output s (i + 1) + r;
    the padding then drops s/2 outputs at each end."""

    def __init__(self, conv: nn.ConvTranspose1d) -> None:
        super().__init__()
        self.stride = conv.stride[0]
        self.pad = conv.padding[0]
        if conv.kernel_size[0] != 2 * self.stride or conv.output_padding[0] or conv.groups != 1:
            raise ValueError(f"the head graph supports SNAC's upsampling layers only, not {conv}")
        weight = conv.weight.detach()  # [in, out, 2s]
        self.channels = weight.shape[1]
        # [in, 2 * out * s], ordered (which half of the kernel, output channel, phase).
        packed = weight.reshape(weight.shape[0], self.channels, 2, self.stride).permute(0, 2, 1, 3)
        self.weight = nn.Parameter(
            packed.reshape(weight.shape[0], -1).contiguous(), requires_grad=False
        )
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[-1]
        y = torch.matmul(x[0].transpose(0, 1), self.weight)
        y = y.reshape(steps, 2, self.channels, self.stride)
        now = F.pad(y[:, 0], (0, 0, 0, 0, 0, 1))  # each step's first half, in its own step
        later = F.pad(y[:, 1], (0, 0, 0, 0, 1, 0))  # its second half, in the next step
        full = (now + later).permute(1, 0, 2).reshape(1, self.channels, (steps + 1) * self.stride)
        return full[..., self.pad : steps * self.stride + self.pad] + self.bias[:, None]


def _layers(modules: list[nn.Module]) -> list[nn.Module]:
    """The decoder as a flat list of layers that each map [1, C, n] to [1, C', m]."""
    from snac.layers import DecoderBlock

    out: list[nn.Module] = []
    for module in modules:
        if isinstance(module, DecoderBlock):
            out += _layers(list(module.block))
        elif isinstance(module, nn.ConvTranspose1d):
            out.append(_Upsample(module))
        elif not isinstance(module, nn.Identity):
            out.append(module)
    return out


def _inputs_needed(layer: nn.Module, outputs: int) -> int:
    """How many leading inputs the first `outputs` outputs of `layer` depend on."""
    from snac.layers import ResidualUnit, Snake1d

    if isinstance(layer, _Upsample):
        # Output o (after the padding) is reached by inputs up to (o + pad) // stride.
        return -(-(outputs + layer.pad) // layer.stride)
    if isinstance(layer, nn.Conv1d):
        if not same_padded(layer):
            raise ValueError(f"the head graph needs 'same'-padded convolutions, not {layer}")
        return outputs + layer.padding[0]
    if isinstance(layer, ResidualUnit):
        for inner in layer.block:
            outputs = _inputs_needed(inner, outputs)
        return outputs
    if isinstance(layer, Snake | Snake1d | nn.Tanh):
        return outputs  # pointwise
    raise ValueError(f"the head graph cannot crop layer {type(layer).__name__}")


def _length_after(layer: nn.Module, inputs: int) -> int:
    return inputs * layer.stride if isinstance(layer, _Upsample) else inputs


class SnacHead(nn.Module):
    """(codes of `frames` frames) -> the first `samples` samples of their whole decode."""

    def __init__(self, decoder_module: nn.Module, frames: int, samples: int) -> None:
        super().__init__()
        self.quantizer = decoder_module.quantizer
        self.layers = nn.ModuleList(_layers(list(decoder_module.decoder.model)))
        full = [4 * frames]  # each layer's input length in a whole decode, then the output's
        for layer in self.layers:
            full.append(_length_after(layer, full[-1]))
        if not 0 < samples <= full[-1]:
            raise ValueError(f"{frames} frames decode to {full[-1]} samples, not {samples}")
        needed = [samples]
        for layer in reversed(self.layers):
            needed.append(_inputs_needed(layer, needed[-1]))
        needed.reverse()
        # How much of the latent, then of each layer's output, to keep (None: all of it).
        self.keep = [n if n < f else None for n, f in zip(needed, full, strict=True)]

    def forward(self, codes_0: torch.Tensor, codes_1: torch.Tensor, codes_2: torch.Tensor) -> Any:
        x = self._cut(codes_to_latent(self.quantizer, [codes_0, codes_1, codes_2]), 0)
        for index, layer in enumerate(self.layers, start=1):
            x = self._cut(layer(x), index)
        return x

    def _cut(self, x: torch.Tensor, index: int) -> torch.Tensor:
        keep = self.keep[index]
        return x if keep is None else x[..., :keep]
