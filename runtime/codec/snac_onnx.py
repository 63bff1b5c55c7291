"""SNAC 24 kHz decoding with ONNX Runtime on CPU (no torch at run time).

The ONNX model (made by `runtime.codec.export_snac`) takes the three code levels as int64 tensors
``codes_0 [1, n]``, ``codes_1 [1, 2n]``, ``codes_2 [1, 4n]`` and returns ``audio [1, 1, 2048 n]``
float32 in [-1, 1], for any number of frames n.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.codec.protocol import SAMPLES_PER_FRAME, Frame

INPUT_NAMES = ("codes_0", "codes_1", "codes_2")
OUTPUT_NAME = "audio"


def frames_to_codes(frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split frames into SNAC's levels: [f0], [f1, f4], [f2, f3, f5, f6] per frame (design 4)."""
    grid = np.asarray(frames, dtype=np.int64).reshape(-1, 7)
    level0 = grid[:, 0].reshape(1, -1)
    level1 = grid[:, [1, 4]].reshape(1, -1)
    level2 = grid[:, [2, 3, 5, 6]].reshape(1, -1)
    return level0, level1, level2


class SnacOnnxDecoder:
    """One ONNX Runtime session; `decode` may be called from many threads at once (ORT's `run` is
    thread-safe and releases the GIL), so one instance serves every concurrent stream."""

    def __init__(self, model_path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort  # imported on use: importing the codec must stay cheap

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads spin by default; on a shared vCPU that burns the CPU other streams need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.model_path = Path(model_path)
        self.threads = threads
        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in self._session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise ValueError(f"{self.model_path} is not a SNAC decoder export (inputs {names})")

    def decode(self, frames: Sequence[Frame]) -> np.ndarray:
        """Decode whole frames to float32 mono audio, exactly 2048 samples per frame."""
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        feeds = dict(zip(INPUT_NAMES, frames_to_codes(frames), strict=True))
        (audio,) = self._session.run([OUTPUT_NAME], feeds)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.shape[0] != SAMPLES_PER_FRAME * len(frames):
            raise ValueError(
                f"decoder returned {audio.shape[0]} samples for {len(frames)} frames; "
                f"expected {SAMPLES_PER_FRAME} per frame"
            )
        return audio
