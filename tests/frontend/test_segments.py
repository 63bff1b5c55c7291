"""Long input: each segment asks the backend for the tokens its text needs, text is split so that
every budget fits ORPHEUS_MAX_TOKENS, and a segment cut by its limit ends cleanly and is logged."""

from __future__ import annotations

import logging
import re

import httpx
import numpy as np

from runtime.codec.token_budget import token_budget
from tests.fixtures.fake_backend import Behavior
from tests.frontend.audio import SAMPLES_PER_FRAME, pcm_samples
from tests.frontend.logs import access_records

PARAGRAPH = (
    "The first sentence is short. The second one goes on a little longer, with a clause. "
    "Then a third, with a number: 1,234,567. <laugh> And a fourth to end the paragraph."
)


def speak(app, text: str) -> httpx.Response:
    body = {"model": "orpheus", "input": text, "voice": "tara", "response_format": "pcm"}
    return httpx.post(
        f"{app.base_url}/v1/audio/speech", headers=app.headers(), json=body, timeout=60
    )


def segment_text(prompt: str) -> str:
    match = re.fullmatch(r"<\|audio\|>tara: (.*)<\|eot_id\|>", prompt)
    assert match, prompt
    return match.group(1)


def test_each_segment_asks_for_its_own_budget(frontend_factory, fake_backend):
    app = frontend_factory(ORPHEUS_SEGMENT_CHARS="90")
    assert speak(app, PARAGRAPH).status_code == 200
    requests = fake_backend.completions
    assert len(requests) > 1
    for request in requests:
        text = segment_text(request.body["prompt"])
        assert request.body["max_tokens"] == token_budget(text)
    # Not one fixed number: a longer segment may take longer.
    assert len({r.body["max_tokens"] for r in requests}) > 1


def test_a_low_token_limit_splits_the_text_finer_instead_of_cutting_it(
    frontend_factory, fake_backend
):
    # 900 tokens are 11 s of audio: the 90-character segments would not fit at a slow rate, so
    # they are split further; every request fits the limit and no text is left out.
    app = frontend_factory(ORPHEUS_SEGMENT_CHARS="90", ORPHEUS_MAX_TOKENS="900")
    assert speak(app, PARAGRAPH).status_code == 200
    texts = [segment_text(r.body["prompt"]) for r in fake_backend.completions]
    assert all(r.body["max_tokens"] <= 900 for r in fake_backend.completions)
    assert all(token_budget(t) <= 900 for t in texts)
    assert "".join("".join(t.split()) for t in texts) == "".join(PARAGRAPH.split())
    roomy = frontend_factory(ORPHEUS_SEGMENT_CHARS="90")
    fake_backend.requests.clear()
    assert speak(roomy, PARAGRAPH).status_code == 200
    assert len(texts) > len(fake_backend.completions)


def test_a_segment_cut_by_its_limit_ends_cleanly_and_is_logged(
    frontend_factory, fake_backend, caplog
):
    # A model that does not stop: the backend ends the request at max_tokens ("length").
    caplog.set_level(logging.INFO)
    fake_backend.default = Behavior.stream(2000, obey_max_tokens=True)
    app = frontend_factory(ORPHEUS_MAX_TOKENS="140")
    response = speak(app, "It never stops.")  # short: not split below 20 characters
    assert response.status_code == 200  # complete: the text was sent, its audio ended
    (request,) = fake_backend.completions
    assert request.body["max_tokens"] == 140
    pcm = pcm_samples(response.content)
    assert pcm.size == 140 // 7 * SAMPLES_PER_FRAME
    # Ended cleanly: faded out over the last 20 ms instead of stopping mid-waveform.
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    assert abs(int(pcm[-1])) < 0.01 * rms
    assert np.sqrt(np.mean(pcm[-48:].astype(np.float64) ** 2)) < 0.15 * rms
    access = access_records(caplog)[-1]
    assert access.__dict__["truncated_segments"] == 1
    assert access.__dict__["outcome"] == "complete"
    warning = [r for r in caplog.records if "reached its limit" in r.getMessage()]
    assert warning and "ORPHEUS_MAX_TOKENS" in warning[0].getMessage()


def test_segments_that_end_by_themselves_are_not_reported(frontend_factory, fake_backend, caplog):
    caplog.set_level(logging.INFO)
    fake_backend.default = Behavior.stream(10, obey_max_tokens=True)
    app = frontend_factory(ORPHEUS_SEGMENT_CHARS="90")
    assert speak(app, PARAGRAPH).status_code == 200
    access = access_records(caplog)[-1]
    assert access.__dict__["truncated_segments"] == 0
    assert not [r for r in caplog.records if "reached its limit" in r.getMessage()]
