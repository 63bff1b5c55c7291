"""SNAC 24 kHz decoding with ONNX Runtime on CPU (no torch at run time).

Three graphs, all made by `runtime.codec.export_snac`:

* ``snac_decoder.onnx`` decodes whole frames: int64 ``codes_0 [1, n]``, ``codes_1 [1, 2n]``,
  ``codes_2 [1, 4n]`` -> ``audio [1, 1, 2048 n]`` float32 in [-1, 1], for any n.
* ``snac_decoder.stream.onnx`` (optional, next to it) is the same decoder as a step function with
  explicit state (`runtime.codec.stream_graph`): new frames in, the audio they complete out, no
  frame decoded twice. `open_stream()` wraps one utterance's state around the shared session.
* ``snac_decoder.head.onnx`` (optional, next to it): the first samples of a whole decode of a
  fixed number of frames, computing only what they depend on (`runtime.codec.head_graph`), for
  the fast start's head at half the cost. `decode_start()` uses it where it fits.

With both optional graphs present, streaming never needs the whole-utterance graph, so its
session is made on the first `decode()` only: the weights are not held in memory three times.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.codec.protocol import SAMPLES_PER_FRAME, Frame

INPUT_NAMES = ("codes_0", "codes_1", "codes_2")
OUTPUT_NAME = "audio"
FINAL_NAME = "final"
STATE_PREFIX = "state_"
STATE_OUT_PREFIX = "state_out_"
META_INITIAL_STATES = "orpheus.stream.initial_states"
META_FIRST_FRAMES = "orpheus.stream.first_frames"
META_HEAD_FRAMES = "orpheus.head.frames"
META_HEAD_SAMPLES = "orpheus.head.samples"


def stream_model_path(model_path: str | Path) -> Path:
    """Where the step graph of a decoder export lives."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.stream{path.suffix}")


def head_model_path(model_path: str | Path) -> Path:
    """Where the head graph of a decoder export lives."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.head{path.suffix}")


def companion_paths(model_path: str | Path) -> tuple[Path, Path]:
    """The optional graphs an export writes next to the decoder: step graph, head graph."""
    return stream_model_path(model_path), head_model_path(model_path)


def _optional_graph(option: str | Path | bool | None, default: Path) -> Path | None:
    """An optional graph's path: None looks next to the model, False declines it."""
    if option is None:
        return default if default.exists() else None
    return None if option is False else Path(option)  # type: ignore[arg-type]


def frames_to_codes(frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split frames into SNAC's levels: [f0], [f1, f4], [f2, f3, f5, f6] per frame (design 4)."""
    grid = np.asarray(frames, dtype=np.int64).reshape(-1, 7)
    level0 = grid[:, 0].reshape(1, -1)
    level1 = grid[:, [1, 4]].reshape(1, -1)
    level2 = grid[:, [2, 3, 5, 6]].reshape(1, -1)
    return level0, level1, level2


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort  # imported on use: importing the codec must stay cheap

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads spin by default; on a shared vCPU that burns the CPU other streams need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _checked_session(path: Path, threads: int) -> Any:
    """A session on one of an export's graphs, which all take the three code levels first."""
    session = _session(path, threads)
    names = [i.name for i in session.get_inputs()][: len(INPUT_NAMES)]
    if names != list(INPUT_NAMES):
        raise ValueError(f"{path} is not a SNAC decoder export (inputs {names})")
    return session


class SnacStream:
    """One utterance on the step graph. Not thread-safe (its caller, `StreamingDecoder`, locks);
    the session it uses is shared and thread-safe."""

    def __init__(self, session: Any, initial_states: list[list[int]], first_frames: int) -> None:
        self._session = session
        self._states = [np.zeros(shape, dtype=np.float32) for shape in initial_states]
        self._state_names = [f"{STATE_PREFIX}{i}" for i in range(len(initial_states))]
        self._output_names = [OUTPUT_NAME] + [
            f"{STATE_OUT_PREFIX}{i}" for i in range(len(initial_states))
        ]
        self.first_frames = first_frames
        self._started = False
        self._finished = False

    def step(self, frames: Sequence[Frame], *, final: bool = False) -> np.ndarray:
        """Feed new frames; return the float32 samples they complete. Over a whole utterance the
        steps return exactly 2048 samples per frame, the last step (`final=True`) the remainder.
        The first non-final step needs at least `first_frames` frames; later ones at least 1."""
        if self._finished:
            raise RuntimeError("step() after the final step")
        if not final and len(frames) < (1 if self._started else self.first_frames):
            raise ValueError(
                f"a {'later' if self._started else 'first'} step needs at least "
                f"{1 if self._started else self.first_frames} frames, got {len(frames)}"
            )
        self._finished = final
        if not frames and not self._started:
            return np.zeros(0, dtype=np.float32)  # an empty utterance
        feeds = dict(zip(INPUT_NAMES, frames_to_codes(frames), strict=True))
        feeds[FINAL_NAME] = np.zeros(1 if final else 0, dtype=np.float32)
        feeds.update(zip(self._state_names, self._states, strict=True))
        audio, *self._states = self._session.run(self._output_names, feeds)
        self._started = True
        return np.asarray(audio, dtype=np.float32).reshape(-1)


class SnacOnnxDecoder:
    """ONNX Runtime sessions for one SNAC export; `decode`, `decode_start` and `open_stream` may
    be used from many threads at once (ORT's `run` is thread-safe and releases the GIL), so one
    instance serves every concurrent stream.

    `stream_model` and `head_model` default to the step graph and the head graph next to
    `model_path` when they exist; pass False to do without (the whole-utterance graph then does
    their work, more slowly).
    """

    def __init__(
        self,
        model_path: str | Path,
        threads: int = 1,
        *,
        stream_model: str | Path | bool | None = None,
        head_model: str | Path | bool | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.threads = threads
        if not self.model_path.is_file():
            raise FileNotFoundError(f"SNAC decoder export not found: {self.model_path}")
        self._stream_session: Any = None
        stream_path = _optional_graph(stream_model, stream_model_path(self.model_path))
        if stream_path is not None:
            self._stream_session = _checked_session(stream_path, threads)
            meta = self._stream_session.get_modelmeta().custom_metadata_map
            self._initial_states = json.loads(meta[META_INITIAL_STATES])
            self._first_frames = int(meta[META_FIRST_FRAMES])
        self._head_session: Any = None
        self._head_frames = self._head_samples = 0
        head_path = _optional_graph(head_model, head_model_path(self.model_path))
        if head_path is not None:
            self._head_session = _checked_session(head_path, threads)
            meta = self._head_session.get_modelmeta().custom_metadata_map
            self._head_frames = int(meta[META_HEAD_FRAMES])
            self._head_samples = int(meta[META_HEAD_SAMPLES])
        self._session_lock = threading.Lock()
        self._whole_session: Any = None
        if self._stream_session is None or self._head_session is None:
            self._whole()  # streaming needs it: load it now, not in the first request

    def _whole(self) -> Any:
        """The whole-utterance graph's session, made on first use."""
        if self._whole_session is not None:
            return self._whole_session
        with self._session_lock:
            if self._whole_session is None:
                self._whole_session = _checked_session(self.model_path, self.threads)
            return self._whole_session

    @property
    def can_stream(self) -> bool:
        return self._stream_session is not None

    def open_stream(self) -> SnacStream | None:
        """Fresh state for one utterance on the step graph, or None without one."""
        if self._stream_session is None:
            return None
        return SnacStream(self._stream_session, self._initial_states, self._first_frames)

    @property
    def loaded_graphs(self) -> tuple[str, ...]:
        """The export's graphs that have a session now, of "whole", "step" and "head"."""
        sessions = {
            "whole": self._whole_session,
            "step": self._stream_session,
            "head": self._head_session,
        }
        return tuple(name for name, session in sessions.items() if session is not None)

    @property
    def head_span(self) -> tuple[int, int]:
        """(frames, samples) the head graph decodes; (0, 0) without one."""
        return self._head_frames, self._head_samples

    def decode_start(self, frames: Sequence[Frame], samples: int) -> np.ndarray:
        """The first `samples` samples of ``decode(frames)``: from the head graph when it was
        made for this many frames and at least this many samples (a fraction of the cost),
        else from a whole decode."""
        if self._head_session is None or not (
            len(frames) == self._head_frames and 0 < samples <= self._head_samples
        ):
            return self.decode(frames)[:samples]
        feeds = dict(zip(INPUT_NAMES, frames_to_codes(frames), strict=True))
        (audio,) = self._head_session.run([OUTPUT_NAME], feeds)
        return np.asarray(audio, dtype=np.float32).reshape(-1)[:samples]

    def decode(self, frames: Sequence[Frame]) -> np.ndarray:
        """Decode whole frames to float32 mono audio, exactly 2048 samples per frame."""
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        feeds = dict(zip(INPUT_NAMES, frames_to_codes(frames), strict=True))
        (audio,) = self._whole().run([OUTPUT_NAME], feeds)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.shape[0] != SAMPLES_PER_FRAME * len(frames):
            raise ValueError(
                f"decoder returned {audio.shape[0]} samples for {len(frames)} frames; "
                f"expected {SAMPLES_PER_FRAME} per frame"
            )
        return audio
