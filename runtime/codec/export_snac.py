"""Export the SNAC decoder to ONNX (run at frontend image build time; the only torch user).

    python -m runtime.codec.export_snac \
        --checkpoint hubertsiuzdak/snac_24khz --out snac_decoder.onnx

`--checkpoint` is a Hugging Face repo id (downloaded with huggingface_hub), a local directory
holding ``config.json`` and ``pytorch_model.bin``, or a weights file
(``.pt``/``.bin``) with ``--config``.

The exported graph maps the three code levels (int64 ``codes_0 [1, n]``, ``codes_1 [1, 2n]``,
``codes_2 [1, 4n]``) to ``audio [1, 1, hop * 4n]`` with n dynamic. Three changes make it a
faithful, fast inference graph:

* SNAC's decoder adds random noise scaled by a learned projection (a training-time regulariser that
  makes every decode of the same codes different). It is left out, so that decoding is deterministic
  and a chunk decoded with context matches the same frames decoded whole.
* Weight normalisation is folded into plain convolution weights (identical function, fewer nodes).
* The Snake activation is written as ``x + sin(a x)^2 / a`` with a product for the square and
  without SNAC's reshapes (same function; cheaper ONNX ops, and no shape specialisation).

Next to it go ``<name>.stream.onnx``: the same decoder as a stateful step function
(`runtime.codec.stream_graph`), which streams exactly (no context frames decoded twice), and
``<name>.head.onnx``: only the first samples of a 2-frame decode, which the fast start sends
before the exact decode can begin (`runtime.codec.head_graph`).

`verify` decodes random codes with torch (noise likewise off; SNAC's own layers otherwise) and with
ONNX Runtime (whole, streamed in uneven steps, and the head) and returns the largest absolute
difference.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from runtime.codec.protocol import Frame
from runtime.codec.snac_onnx import (
    FINAL_NAME,
    INPUT_NAMES,
    META_FIRST_FRAMES,
    META_HEAD_FRAMES,
    META_HEAD_SAMPLES,
    META_INITIAL_STATES,
    OUTPUT_NAME,
    STATE_OUT_PREFIX,
    STATE_PREFIX,
    head_model_path,
    stream_model_path,
)

DEFAULT_OPSET = 17
REAL_24KHZ_CONFIG: dict[str, Any] = {
    "sampling_rate": 24000,
    "encoder_dim": 48,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 1024,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": 4096,
    "codebook_dim": 8,
    "vq_strides": [4, 2, 1],
    "noise": True,
    "depthwise": True,
}


def load_checkpoint(checkpoint: str, config: str | None = None) -> Any:
    """A SNAC model in eval mode from a repo id, a directory, or a weights file plus config."""
    import torch
    from snac import SNAC

    path = Path(checkpoint)
    if path.is_dir():
        model = SNAC.from_config(str(path / "config.json"))
        weights = path / "pytorch_model.bin"
    elif path.is_file():
        if config is None:
            raise SystemExit(f"{path} is a weights file: pass --config with its config.json")
        model = SNAC.from_config(config)
        weights = path
    else:
        return SNAC.from_pretrained(checkpoint).eval()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def _decoder_module(model: Any, *, for_export: bool) -> Any:
    """codes -> audio as one torch module, noise removed (see module docstring)."""
    import torch
    from snac.layers import NoiseBlock, Snake1d
    from torch.nn.utils import parametrize

    from runtime.codec.stream_graph import Snake

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, NoiseBlock):
                setattr(module, name, torch.nn.Identity())
            elif isinstance(child, Snake1d) and for_export:
                # The same function in cheaper ONNX ops; `verify`'s reference keeps SNAC's own.
                setattr(module, name, Snake(child))
    if for_export:
        for module in model.modules():
            if parametrize.is_parametrized(module, "weight"):
                # A deep copy shares the generated Parametrized* class with the original, and
                # removing a parametrization edits that class: give the copy a class of its own.
                cls = type(module)
                module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    class SnacDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quantizer = model.quantizer
            self.decoder = model.decoder

        def forward(self, codes_0: Any, codes_1: Any, codes_2: Any) -> Any:
            # As `quantizer.from_codes`, but upsampling each level with expand + flatten: traced
            # `repeat_interleave` freezes the example's length into the graph.
            latent = 0
            for quantizer, codes in zip(
                self.quantizer.quantizers, (codes_0, codes_1, codes_2), strict=True
            ):
                level = quantizer.out_proj(quantizer.decode_code(codes))
                if quantizer.stride > 1:
                    level = level.unsqueeze(-1).expand(-1, -1, -1, quantizer.stride).flatten(2)
                latent = latent + level
            return self.decoder(latent)

    return SnacDecoder().eval()


def _example_codes(frames: int, codebook_size: int, seed: int) -> list[Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, codebook_size, (1, frames * k), generator=generator) for k in (1, 2, 4)
    ]


def _onnx_export(module: Any, args: tuple[Any, ...], path: Path, opset: int, **kwargs: Any) -> None:
    import torch

    # The tracer warns about SNAC's `if pad > 0` (always 0 there) and its own deprecation: noise
    # in an image build log that hides real problems.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles SNAC fully
            **kwargs,
        )


def _set_metadata(path: Path, props: dict[str, str]) -> None:
    """Store `props` in the ONNX file's metadata, where `SnacOnnxDecoder` reads them."""
    import onnx

    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(path))


def export_decoder(
    model: Any, out_path: str | Path, opset: int = DEFAULT_OPSET, *, stream: bool = True
) -> Path:
    """Write the whole-utterance decoder graph to `out_path` (dynamic frame count) and, with
    `stream`, the step graph and the head graph next to it (`stream_model_path(out_path)`,
    `head_model_path(out_path)`); return `out_path`."""
    if list(model.vq_strides) != [4, 2, 1]:
        raise ValueError(f"Orpheus frames need vq_strides [4, 2, 1], got {model.vq_strides}")
    module = _decoder_module(model, for_export=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {1: f"len_{k}"} for name, k in zip(INPUT_NAMES, (1, 2, 4), strict=True)}
    _onnx_export(
        module,
        tuple(_example_codes(4, model.codebook_size, seed=0)),
        out_path,
        opset,
        input_names=list(INPUT_NAMES),
        output_names=[OUTPUT_NAME],
        dynamic_axes={**axes, OUTPUT_NAME: {2: "samples"}},
    )
    if stream:
        export_stream_decoder(model, stream_model_path(out_path), opset)
        export_head_decoder(model, head_model_path(out_path), opset)
    return out_path


def export_stream_decoder(model: Any, out_path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write the stateful step graph (see `runtime.codec.stream_graph`) with its initial state
    shapes and minimum first step in the model's metadata, so the runtime needs no torch."""
    import torch

    from runtime.codec.stream_graph import SnacStreamStep, min_first_frames

    step = SnacStreamStep(_decoder_module(model, for_export=True)).eval()
    shapes = step.initial_states()
    first = min_first_frames(step)
    # Trace a steady-state step (after a first step), so no state is specialised to its start.
    with torch.inference_mode():
        states = [torch.zeros(shape) for shape in shapes]
        _, *states = step(*_example_codes(first, model.codebook_size, 0), torch.zeros(0), *states)
    example = (*_example_codes(2, model.codebook_size, 1), torch.zeros(0), *states)
    state_in = [f"{STATE_PREFIX}{i}" for i in range(len(shapes))]
    state_out = [f"{STATE_OUT_PREFIX}{i}" for i in range(len(shapes))]
    axes: dict[str, dict[int, str]] = {
        name: {1: f"len_{k}"} for name, k in zip(INPUT_NAMES, (1, 2, 4), strict=True)
    }
    axes[FINAL_NAME] = {0: "final"}
    axes[OUTPUT_NAME] = {2: "samples"}
    for i, (a, b) in enumerate(zip(state_in, state_out, strict=True)):
        axes[a] = {2: f"state_{i}"}
        axes[b] = {2: f"state_out_{i}"}
    out_path = Path(out_path)
    _onnx_export(
        step,
        example,
        out_path,
        opset,
        input_names=[*INPUT_NAMES, FINAL_NAME, *state_in],
        output_names=[OUTPUT_NAME, *state_out],
        dynamic_axes=axes,
    )
    _set_metadata(
        out_path,
        {
            META_INITIAL_STATES: json.dumps([list(shape) for shape in shapes]),
            META_FIRST_FRAMES: str(first),
        },
    )
    return out_path


def export_head_decoder(
    model: Any,
    out_path: str | Path,
    opset: int = DEFAULT_OPSET,
    *,
    frames: int | None = None,
    samples: int | None = None,
) -> Path:
    """Write the head graph (`runtime.codec.head_graph`): the first `samples` samples of the whole
    decode of `frames` frames (by default what the fast start uses), with both numbers in the
    model's metadata."""
    from runtime.codec.head_graph import SnacHead
    from runtime.codec.streaming import HEAD_BLEND, HEAD_FRAMES, HEAD_SAMPLES

    frames = HEAD_FRAMES if frames is None else frames
    samples = HEAD_SAMPLES + HEAD_BLEND if samples is None else samples
    head = SnacHead(_decoder_module(model, for_export=True), frames, samples).eval()
    out_path = Path(out_path)
    _onnx_export(
        head,
        tuple(_example_codes(frames, model.codebook_size, seed=0)),
        out_path,
        opset,
        input_names=list(INPUT_NAMES),
        output_names=[OUTPUT_NAME],
    )
    _set_metadata(out_path, {META_HEAD_FRAMES: str(frames), META_HEAD_SAMPLES: str(samples)})
    return out_path


def _frames_of(codes: list[Any]) -> list[Frame]:
    count = codes[0].shape[1]
    grid = np.zeros((count, 7), dtype=np.int64)
    grid[:, 0] = codes[0].numpy().reshape(-1)
    grid[:, [1, 4]] = codes[1].numpy().reshape(count, 2)
    grid[:, [2, 3, 5, 6]] = codes[2].numpy().reshape(count, 4)
    return [(a, b, c, d, e, f, g) for a, b, c, d, e, f, g in grid.tolist()]


def verify(model: Any, onnx_path: str | Path, frames: tuple[int, ...] = (1, 3, 8)) -> float:
    """Largest |ONNX - torch| over random codes for several frame counts, for the whole-utterance
    graph and (when exported) for the step graph streamed in uneven steps and for the head graph;
    printed and returned."""
    import torch

    from runtime.codec.snac_onnx import SnacOnnxDecoder

    reference = _decoder_module(model, for_export=False)
    decoder = SnacOnnxDecoder(onnx_path)
    whole_error = stream_error = 0.0
    for seed, count in enumerate((*frames, 11)):
        codes = _example_codes(count, model.codebook_size, seed=seed + 1)
        with torch.inference_mode():
            expected = reference(*codes).numpy().reshape(-1)
        frames_ = _frames_of(codes)
        got = decoder.decode(frames_)
        if got.shape != expected.shape:
            raise ValueError(f"ONNX gave {got.shape} samples, torch {expected.shape}")
        whole_error = max(whole_error, float(np.max(np.abs(got - expected))))
        stream = decoder.open_stream()
        if stream is not None:
            first = min(stream.first_frames, count)
            pieces = [stream.step(frames_[:first], final=first == count)]
            for start in range(first, count, 2):
                chunk = frames_[start : start + 2]
                pieces.append(stream.step(chunk, final=start + 2 >= count))
            streamed = np.concatenate(pieces)
            if streamed.shape != expected.shape:
                raise ValueError(f"stream gave {streamed.shape} samples, torch {expected.shape}")
            stream_error = max(stream_error, float(np.max(np.abs(streamed - expected))))
    head_error = 0.0
    head_frames, head_samples = decoder.head_span
    for seed in range(2 if head_frames else 0):
        codes = _example_codes(head_frames, model.codebook_size, seed=seed + 20)
        with torch.inference_mode():
            expected = reference(*codes).numpy().reshape(-1)[:head_samples]
        got = decoder.decode_start(_frames_of(codes), head_samples)
        if got.shape != expected.shape:
            raise ValueError(f"the head gave {got.shape} samples, torch {expected.shape}")
        head_error = max(head_error, float(np.max(np.abs(got - expected))))
    print(
        f"max abs error ONNX vs torch: whole {whole_error:.3g}, streamed {stream_error:.3g}, "
        f"head {head_error:.3g}"
    )
    return max(whole_error, stream_error, head_error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="hubertsiuzdak/snac_24khz")
    parser.add_argument("--config", help="config.json when --checkpoint is a weights file")
    parser.add_argument("--out", default="snac_decoder.onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument(
        "--tolerance", type=float, default=1e-3, help="fail when ONNX differs more than this"
    )
    args = parser.parse_args(argv)
    model = load_checkpoint(args.checkpoint, args.config)
    path = export_decoder(model, args.out, opset=args.opset)
    error = verify(model, path)
    print(json.dumps({"out": str(path), "max_abs_error": error}))
    return 0 if error <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
