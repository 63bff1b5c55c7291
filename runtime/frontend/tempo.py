"""`speed` for OpenAI's speech API: tempo change without pitch change, via FFmpeg's `atempo`
filter (through PyAV, which the image already has for the compressed formats).

`atempo` is cleanest for factors in 0.5..2.0 (beyond that it skips or repeats whole windows), so
OpenAI's range 0.25..4.0 is applied as a chain of at most two such stages. The filter works on a
window of samples, so output lags input by a few tens of milliseconds and `finish` drains the rest.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction

import numpy as np

__all__ = ["TempoFilter", "tempo_stages"]

_EMPTY = np.zeros(0, dtype=np.int16)


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
        self._pts = 0
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

    def process(self, pcm: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(np.asarray(pcm, dtype=np.int16).reshape(1, -1))
        if samples.size == 0:
            return _EMPTY
        with self._lock:
            frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            self._graph.push(frame)
            return self._drain()

    def finish(self) -> np.ndarray:
        with self._lock:
            self._graph.push(None)
            return self._drain()
