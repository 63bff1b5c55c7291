"""The ONNX export tool: faithful to torch, dynamic length, deterministic, and a working CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.codec import SAMPLES_PER_FRAME, SnacOnnxDecoder
from runtime.codec.export_snac import _decoder_module, load_checkpoint, main, verify
from runtime.codec.snac_onnx import head_model_path, stream_model_path
from runtime.codec.streaming import HEAD_BLEND, HEAD_FRAMES, HEAD_SAMPLES
from tests.fixtures.snac import TINY_CONFIG, build_snac


def test_onnx_matches_torch_whole_and_streamed(tiny_snac_onnx: Path, capsys):
    # verify() also streams each utterance through the step graph in uneven steps, and checks
    # the head graph.
    error = verify(build_snac(seed=0), tiny_snac_onnx, frames=(1, 2, 5))
    assert error < 1e-4
    assert "max abs error ONNX vs torch: whole" in capsys.readouterr().out


def test_the_head_graph_is_the_start_of_a_whole_decode(tiny_snac_onnx: Path):
    decoder = SnacOnnxDecoder(tiny_snac_onnx)
    assert decoder.head_span == (HEAD_FRAMES, HEAD_SAMPLES + HEAD_BLEND)
    rng = np.random.default_rng(3)
    frames = [tuple(int(c) for c in row) for row in rng.integers(0, 4096, size=(HEAD_FRAMES, 7))]
    span = HEAD_SAMPLES + HEAD_BLEND
    # Streaming with both optional graphs never needed the whole-utterance graph so far.
    assert decoder.loaded_graphs == ("step", "head")
    head = decoder.decode_start(frames, span)
    assert decoder.loaded_graphs == ("step", "head")
    whole = decoder.decode(frames)  # made on first use
    assert decoder.loaded_graphs == ("whole", "step", "head")
    assert head.shape == (span,)
    assert np.max(np.abs(head - whole[:span])) < 1e-5
    assert np.array_equal(decoder.decode_start(frames, 100), head[:100])
    # What the head graph does not cover comes from a whole decode.
    assert np.array_equal(decoder.decode_start(frames, span + 1), whole[: span + 1])
    three = [*frames, frames[0]]
    assert np.array_equal(decoder.decode_start(three, 1000), decoder.decode(three)[:1000])

    without = SnacOnnxDecoder(tiny_snac_onnx, head_model=False)
    assert without.head_span == (0, 0)
    assert without.loaded_graphs == ("whole", "step")  # the fast start needs it from the start
    assert np.max(np.abs(without.decode_start(frames, span) - head)) < 1e-5


def test_a_missing_export_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"absent\.onnx"):
        SnacOnnxDecoder(tmp_path / "absent.onnx")


def test_decoding_is_deterministic_and_sized_by_frames(tiny_snac_decoder: SnacOnnxDecoder):
    frames = [(1, 2, 3, 4, 5, 6, 7), (4095, 0, 4095, 0, 4095, 0, 4095)] * 3
    first = tiny_snac_decoder.decode(frames)
    assert np.array_equal(first, tiny_snac_decoder.decode(frames))  # the noise block is gone
    assert first.shape == (len(frames) * SAMPLES_PER_FRAME,)
    assert np.all(np.abs(first) <= 1.0)  # tanh output


def test_cli_exports_a_local_checkpoint_and_leaves_the_model_usable(tmp_path: Path, capsys):
    import torch

    model = build_snac(seed=1)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(TINY_CONFIG))
    torch.save(model.state_dict(), checkpoint / "pytorch_model.bin")

    out = tmp_path / "out" / "snac.onnx"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["out"] == str(out) and report["max_abs_error"] < 1e-4
    # The step graph lands next to it, with what the runtime needs to start a stream.
    decoder = SnacOnnxDecoder(out)
    assert stream_model_path(out) == tmp_path / "out" / "snac.stream.onnx"
    assert decoder.can_stream
    session = decoder.open_stream()
    assert session is not None and session.first_frames == 3
    assert head_model_path(out) == tmp_path / "out" / "snac.head.onnx"
    assert decoder.head_span == (HEAD_FRAMES, HEAD_SAMPLES + HEAD_BLEND)

    # The same weights load from a bare weights file plus its config.
    again = load_checkpoint(str(checkpoint / "pytorch_model.bin"), str(checkpoint / "config.json"))
    for (name, a), (_, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # Export folds weight norm on a private copy only: the checkpoint model still decodes.
    codes = [torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long)]
    codes.append(torch.zeros(1, 4, dtype=torch.long))
    with torch.inference_mode():
        before = again.decoder(again.quantizer.from_codes(codes))
        _decoder_module(again, for_export=True)
        after = again.decoder(again.quantizer.from_codes(codes))
    assert after.shape == (1, 1, SAMPLES_PER_FRAME)
    assert before.shape == after.shape


def test_importing_the_codec_loads_no_torch_onnxruntime_ffmpeg_or_web_framework():
    code = (
        "import sys, runtime.codec, runtime.codec.export_snac;"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'av', 'fastapi', 'snac')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert result.stdout.strip() == "[]"


def test_both_graphs_take_only_same_padded_convolutions():
    """The step graph streams and the head graph crops a convolution only when output i is
    centred on input i (stride 1, padding as far as the kernel reaches); others are refused."""
    from torch import nn

    from runtime.codec.head_graph import _inputs_needed
    from runtime.codec.stream_graph import _convert

    same = nn.Conv1d(2, 2, kernel_size=7, dilation=3, padding=9)
    assert _inputs_needed(same, 10) == 19 and len(_convert(same)) == 1
    for other in (nn.Conv1d(2, 2, kernel_size=7, padding=2),
                  nn.Conv1d(2, 2, kernel_size=7, padding=3, stride=2)):
        with pytest.raises(ValueError, match="cannot stream"):
            _convert(other)
        with pytest.raises(ValueError, match="'same'-padded"):
            _inputs_needed(other, 10)
