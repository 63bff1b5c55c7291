"""`speed` for OpenAI's speech API: tempo change without pitch change, via FFmpeg's `atempo`
filter (through PyAV, which the image already has for the compressed formats).

`atempo` is cleanest for factors in 0.5..2.0 (beyond that it skips or repeats whole windows), so
OpenAI's range 0.25..4.0 is applied as a chain of at most two such stages. The filter works on a
window of samples, so output lags input by a few tens of milliseconds and `finish` drains the rest.

FFmpeg's end-of-stream flush of `atempo` does not process the last partial window: it dropped
about 1,660 samples of the tail at speed 0.25 and 580 at 0.5. So `finish` first feeds a stretch of
silence (more than a window per stage), which pushes every real sample through, and then cuts the
output at exactly ``round(input samples / speed)``: the duration OpenAI's `speed` promises, with
the tail of the silence removed.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction

import numpy as np

__all__ = ["TempoFilter", "tempo_stages"]

_EMPTY = np.zeros(0, dtype=np.int16)
# Silence fed before the end of stream: atempo's window is about 2048 samples at 24 kHz, and a
# two-stage chain needs one per stage; twice that leaves room (it costs microseconds).
_FLUSH_PADDING_S = 0.35


def tempo_stages(speed: float) -> list[float]:
    """Factors in [0.5, 2.0] whose product is `speed`, as few as possible."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    count = max(1, math.ceil(abs(math.log2(speed)) - 1e-9))
    return [speed ** (1.0 / count)] * count


class TempoFilter:
    """int16 mono PCM in, tempo-changed int16 PCM out; one instance per response."""

    def __init__(self, speed: float, sample_rate: int = 24000) -> None:
        import av  # imported on use: requests at speed 1.0 never build a filter graph

        self._av = av
        self._rate = sample_rate
        self._speed = speed
        self._pts = 0  # input samples pushed
        self._emitted = 0  # output samples returned
        self._lock = threading.Lock()
        self._graph = av.filter.Graph()
        source = self._graph.add_abuffer(
            format="s16", sample_rate=sample_rate, layout="mono", time_base=Fraction(1, sample_rate)
        )
        node = source
        for factor in tempo_stages(speed):
            stage = self._graph.add("atempo", f"{factor:.6f}")
            node.link_to(stage)
            node = stage
        # atempo may hand back planar or float samples; convert once, in FFmpeg.
        convert = self._graph.add(
            "aformat", f"sample_fmts=s16:channel_layouts=mono:sample_rates={sample_rate}"
        )
        node.link_to(convert)
        convert.link_to(self._graph.add("abuffersink"))
        self._graph.configure()

    def _drain(self) -> np.ndarray:
        pieces = []
        while True:
            try:
                frame = self._graph.pull()
            except (BlockingIOError, self._av.error.EOFError):
                break
            pieces.append(frame.to_ndarray().reshape(-1).astype(np.int16, copy=False))
        return np.concatenate(pieces) if pieces else _EMPTY

    def _push(self, pcm: np.ndarray) -> None:
        samples = np.ascontiguousarray(np.asarray(pcm, dtype=np.int16).reshape(1, -1))
        frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += samples.shape[1]
        self._graph.push(frame)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        if np.asarray(pcm).size == 0:
            return _EMPTY
        with self._lock:
            self._push(pcm)
            out = self._drain()
            self._emitted += out.size
            return out

    def finish(self) -> np.ndarray:
        """The rest of the audio: in all, exactly ``round(samples in / speed)`` samples."""
        with self._lock:
            expected = round(self._pts / self._speed)
            if self._pts:
                self._push(np.zeros(round(_FLUSH_PADDING_S * self._rate), dtype=np.int16))
            self._graph.push(None)
            out = self._drain()[: max(0, expected - self._emitted)]
            self._emitted += out.size
            return out
