"""The SNAC decoder as a stateful step function, for exact streaming without recomputation.

Used only by `export_snac` (imports torch). SNAC's decoder is a chain of non-causal convolutions
(no attention in the 24 kHz model), so it can run incrementally: every convolution keeps the last
``2p`` inputs it has seen (``p`` = its one-sided padding) and, given new inputs, computes only the
outputs whose whole kernel is now known. Each step therefore costs what its new frames cost, with
no context frames decoded again, and the concatenated output equals a whole-utterance decode.

State conventions (all states are ordinary tensors passed in and out of the ONNX graph):

* convolution: the unconsumed tail of its input; ``p`` zeros at the start (the left zero padding
  of a whole decode), ``2p`` samples after every step.
* residual unit: the skip-path samples waiting for the delayed convolution branch (empty at start).
* transposed convolution: its last ``s`` (stride) outputs, still missing the next input's
  overlap (zeros at the start), and a ``crop`` tensor whose *length* is the number of leading
  outputs to drop: the layer's own padding ``P`` at the first step, then 0. Lengths as state keep
  the graph free of control flow.
* ``final`` is a tensor of length 1 on the last step (0 otherwise): every convolution then appends
  ``p`` zeros (the right zero padding of a whole decode) and the transposed convolutions release
  the first ``P`` carried outputs, so the stream ends exactly where a whole decode ends.

The first non-final step needs enough frames for every layer to emit something (3 frames for the
24 kHz geometry; `min_first_frames` computes it); later steps take any number >= 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def snake(x: torch.Tensor, alpha: torch.Tensor, inverse_alpha: torch.Tensor) -> torch.Tensor:
    """SNAC's activation x + sin(alpha x)^2 / alpha, written without its reshape (the graph stays
    shape-agnostic) and with a product instead of `pow` (one cheap op per element in ONNX)."""
    wave = torch.sin(alpha * x)
    return x + inverse_alpha * (wave * wave)


class Snake(nn.Module):
    """Drop-in for `snac.layers.Snake1d` in exported graphs (same function)."""

    def __init__(self, snake_module: nn.Module) -> None:
        super().__init__()
        alpha = snake_module.alpha.detach().clone()
        self.alpha = nn.Parameter(alpha, requires_grad=False)
        self.inverse_alpha = nn.Parameter((alpha + 1e-9).reciprocal(), requires_grad=False)

    def initial_states(self) -> list[tuple[int, ...]]:
        return []

    def forward(self, x: torch.Tensor, *_: Any) -> Any:
        return snake(x, self.alpha, self.inverse_alpha)


class _Conv(nn.Module):
    """A stride-1 (possibly dilated, grouped) convolution with "same" padding, streamed."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.dilation = conv.dilation[0]
        self.groups = conv.groups
        self.pad = conv.padding[0]
        self.channels = conv.in_channels

    def initial_states(self) -> list[tuple[int, ...]]:
        return [(1, self.channels, self.pad)] if self.pad else []

    def forward(self, x: torch.Tensor, final: torch.Tensor, states: list[torch.Tensor]) -> Any:
        if not self.pad:
            return F.conv1d(x, self.weight, self.bias, groups=self.groups), []
        (state,) = states
        tail = x.new_zeros(1, x.shape[1], final.shape[0] * self.pad)
        buffer = torch.cat([state, x, tail], dim=-1)
        y = F.conv1d(buffer, self.weight, self.bias, dilation=self.dilation, groups=self.groups)
        return y, [buffer[..., buffer.shape[-1] - 2 * self.pad :]]


class _ConvTranspose(nn.Module):
    """SNAC's upsampling transposed convolution (kernel 2s, stride s, padding s/2), streamed by
    overlap-add: each input spreads over 2s outputs, so the last s outputs of a step still await
    the next input's contribution and are carried as state."""

    def __init__(self, conv: nn.ConvTranspose1d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride = conv.stride[0]
        self.pad = conv.padding[0]
        self.channels = conv.out_channels
        if conv.kernel_size[0] != 2 * self.stride or conv.output_padding[0] != 0:
            raise ValueError("streaming supports SNAC's even-stride upsampling layers only")

    def initial_states(self) -> list[tuple[int, ...]]:
        return [(1, self.channels, self.stride), (1, 1, self.pad)]

    def forward(self, x: torch.Tensor, final: torch.Tensor, states: list[torch.Tensor]) -> Any:
        carry, crop = states
        # (n + 1) s outputs, bias included; the carried tail has its bias taken out again so
        # that the overlap gets it once.
        full = F.conv_transpose1d(x, self.weight, self.bias, stride=self.stride)
        done = full.shape[-1] - self.stride
        head = full[..., : self.stride] + carry
        # Complete outputs: those no later input reaches; at the end, also the padding's worth
        # of the carried tail that a whole decode keeps.
        y = torch.cat([head, full[..., self.stride :]], dim=-1)
        y = y[..., crop.shape[-1] : done + final.shape[0] * self.pad]
        return y, [full[..., done:] - self.bias[:, None], crop[..., :0]]


class _StreamSnake(Snake):
    def forward(self, x: torch.Tensor, *_: Any) -> Any:
        return snake(x, self.alpha, self.inverse_alpha), []


class _Chain(nn.Module):
    """Layers in sequence, each taking its own slice of the state list."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def initial_states(self) -> list[tuple[int, ...]]:
        return [shape for layer in self.layers for shape in layer.initial_states()]

    def forward(self, x: torch.Tensor, final: torch.Tensor, states: list[torch.Tensor]) -> Any:
        out_states: list[torch.Tensor] = []
        index = 0
        for layer in self.layers:
            count = len(layer.initial_states())
            x, new = layer(x, final, states[index : index + count])
            out_states += new
            index += count
        return x, out_states


class _Residual(nn.Module):
    """x + branch(x), with the skip path delayed to meet the branch's output."""

    def __init__(self, unit: nn.Module) -> None:
        super().__init__()
        self.branch = _convert_sequence(list(unit.block))
        self.channels = unit.block[0].alpha.shape[1]

    def initial_states(self) -> list[tuple[int, ...]]:
        return [(1, self.channels, 0), *self.branch.initial_states()]

    def forward(self, x: torch.Tensor, final: torch.Tensor, states: list[torch.Tensor]) -> Any:
        skip_state, *branch_states = states
        y, new = self.branch(x, final, branch_states)
        skip = torch.cat([skip_state, x], dim=-1)
        return skip[..., : y.shape[-1]] + y, [skip[..., y.shape[-1] :], *new]


class _Tanh(nn.Module):
    def initial_states(self) -> list[tuple[int, ...]]:
        return []

    def forward(self, x: torch.Tensor, final: torch.Tensor, states: list[torch.Tensor]) -> Any:
        return torch.tanh(x), []


def same_padded(conv: nn.Conv1d) -> bool:
    """Stride 1, and on each side as much zero padding as the kernel reaches (``2 p = dilation
    (kernel - 1)``): output i is centred on input i. The one kind of convolution that this graph
    and the head graph (`runtime.codec.head_graph`) handle."""
    return conv.stride[0] == 1 and 2 * conv.padding[0] == conv.dilation[0] * (
        conv.kernel_size[0] - 1
    )


def _convert(layer: nn.Module) -> list[nn.Module]:
    from snac.layers import DecoderBlock, ResidualUnit, Snake1d

    if isinstance(layer, nn.Conv1d):
        if not same_padded(layer):
            raise ValueError(f"cannot stream {layer}")
        return [_Conv(layer)]
    if isinstance(layer, nn.ConvTranspose1d):
        return [_ConvTranspose(layer)]
    if isinstance(layer, Snake1d | Snake):
        return [_StreamSnake(layer)]
    if isinstance(layer, ResidualUnit):
        return [_Residual(layer)]
    if isinstance(layer, DecoderBlock):
        return [m for sub in layer.block for m in _convert(sub)]
    if isinstance(layer, nn.Tanh):
        return [_Tanh()]
    if isinstance(layer, nn.Identity):
        return []
    raise ValueError(f"cannot stream layer {type(layer).__name__} (attention needs a window)")


def _convert_sequence(layers: list[nn.Module]) -> _Chain:
    return _Chain([m for layer in layers for m in _convert(layer)])


def codes_to_latent(quantizer: nn.Module, codes: list[torch.Tensor]) -> torch.Tensor:
    """The decoder's input from the three code levels, as SNAC's `quantizer.from_codes`, written
    so that it exports with any length (also the head graph's, `runtime.codec.head_graph`)."""
    total: torch.Tensor | int = 0
    for level_quantizer, level in zip(quantizer.quantizers, codes, strict=True):
        # The 1x1 projection as a matmul: ONNX Runtime's Conv rejects the empty input of a
        # final step that brings no new frames, MatMul accepts it.
        proj = level_quantizer.out_proj
        z = torch.matmul(proj.weight[:, :, 0], level_quantizer.decode_code(level))
        z = z + proj.bias[:, None]
        if level_quantizer.stride > 1:
            z = z.unsqueeze(-1).expand(-1, -1, -1, level_quantizer.stride).flatten(2)
        total = total + z
    assert isinstance(total, torch.Tensor)
    return total


class SnacStreamStep(nn.Module):
    """(new frames' codes, final, states) -> (audio, states); see the module docstring."""

    def __init__(self, decoder_module: nn.Module) -> None:
        super().__init__()
        self.quantizer = decoder_module.quantizer
        self.chain = _convert_sequence(list(decoder_module.decoder.model))

    def initial_states(self) -> list[tuple[int, ...]]:
        return self.chain.initial_states()

    def forward(
        self,
        codes_0: torch.Tensor,
        codes_1: torch.Tensor,
        codes_2: torch.Tensor,
        final: torch.Tensor,
        *states: torch.Tensor,
    ) -> Any:
        audio, new_states = self.chain(
            codes_to_latent(self.quantizer, [codes_0, codes_1, codes_2]), final, list(states)
        )
        return (audio, *new_states)


def min_first_frames(step: SnacStreamStep, limit: int = 16) -> int:
    """Smallest first (non-final) step for which every layer has enough input."""
    states = [torch.zeros(shape) for shape in step.initial_states()]
    final = torch.zeros(0)
    for frames in range(1, limit + 1):
        codes = [torch.zeros(1, frames * k, dtype=torch.long) for k in (1, 2, 4)]
        try:
            with torch.inference_mode():
                audio, *_ = step(*codes, final, *states)
        except RuntimeError:
            continue
        if audio.shape[-1] > 0:
            return frames
    raise ValueError("no first step size works")
