"""First audio after 2 frames (14 tokens) with the fast start (the default), 3 without it; and
what the app sends, on the real SNAC architecture, against the whole-utterance decodes.

A backend that sends a few frames and then stalls shows what the app can send from them alone,
with no timing involved.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from runtime.codec.streaming import HEAD_BLEND, HEAD_SAMPLES
from tests.fixtures.fake_backend import Behavior
from tests.frontend.audio import pcm_samples

BODY = {"model": "orpheus", "input": "Hello.", "voice": "tara", "response_format": "pcm"}
CROSSFADE = 480  # the segment joiner's: a join mixes the last 20 ms of a segment


@pytest.mark.parametrize(
    ("fast_start", "frames", "first_samples"),
    # The whole head goes out: 2 frames make a segment of at least 4096 samples, so the joiner
    # holds back none of the head for a join.
    [("true", 2, HEAD_SAMPLES), ("false", 2, None), ("false", 3, None)],
    ids=["fast-2-frames", "exact-2-frames", "exact-3-frames"],
)
def test_what_the_first_frames_alone_give(
    frontend_factory, fake_backend, fast_start, frames, first_samples
):
    fake_backend.default = Behavior.stream(10, hang_after_frames=frames)
    app = frontend_factory(ORPHEUS_FAST_START=fast_start, ORPHEUS_API_TIMEOUT="1.5")
    with httpx.stream(
        "POST", f"{app.base_url}/v1/audio/speech", headers=app.headers(), json=BODY, timeout=30
    ) as response:
        if fast_start == "false" and frames == 2:
            # Exact audio needs 2.1 frames of look-ahead: nothing to send, so the deadline ends
            # the request before any byte.
            assert response.status_code == 504
            return
        assert response.status_code == 200
        first = pcm_samples(next(response.iter_bytes()))
    if first_samples is not None:
        assert first.size == first_samples
    else:
        assert 0 < first.size < 2048  # what 3 frames complete of the exact decode


def test_the_apps_audio_is_the_whole_decodes_joined_without_clicks(
    frontend_factory, fake_backend, real_snac_onnx
):
    """On the real SNAC architecture, through the whole app: two sentences (9 and 6 frames). The
    answer equals the whole-utterance decodes crossfaded, to one int16 step, except the fast
    start's head (held to its bound); the join makes no jump the audio does not make itself."""
    from runtime.codec import SnacOnnxDecoder, crossfade_join, to_int16
    from tests.fixtures.clicks import join_jumps
    from tests.fixtures.fake_backend import frame_code

    fake_backend.script(Behavior.stream(9), Behavior.stream(6))
    app = frontend_factory(SNAC_MODEL_PATH=str(real_snac_onnx), ORPHEUS_SEGMENT_CHARS="40")
    text = "This is the first sentence here. And this is the second one, also long."
    response = httpx.post(f"{app.base_url}/v1/audio/speech", headers=app.headers(),
                          json={**BODY, "input": text}, timeout=60)
    assert response.status_code == 200
    stream = pcm_samples(response.content).astype(np.float64)

    decoder = SnacOnnxDecoder(real_snac_onnx)
    wholes = [
        to_int16(decoder.decode([tuple(frame_code(f, p) for p in range(7)) for f in range(n)]))
        for n in (9, 6)
    ]
    reference = crossfade_join(wholes, CROSSFADE).astype(np.float64)
    assert stream.size == reference.size
    early = HEAD_SAMPLES + HEAD_BLEND
    assert np.max(np.abs(stream[early:] - reference[early:])) <= 1
    rms = np.sqrt(np.mean(reference**2))
    assert np.max(np.abs(stream[:early] - reference[:early])) <= 0.03 * rms
    join = join_jumps(stream, wholes[0], wholes[1], wholes[0].size - CROSSFADE, CROSSFADE)
    assert not join.click, join
