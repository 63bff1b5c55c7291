"""Short fuzzing profile (CI): the frontend's OpenAPI schema drives generated requests, valid and
invalid, with a valid key, against the real app (scripted fake backend, so that every valid
request really produces audio). No 5xx; every error OpenAI-shaped (tests/reliability/fuzz.py)."""

from __future__ import annotations

import pytest

from tests.reliability.fuzz import fuzz

pytestmark = pytest.mark.reliability

EXAMPLES = 25  # per operation and mode; bench/reliability.py runs many more


def test_generated_requests_never_get_5xx_and_errors_are_openai_shaped(frontend) -> None:
    report = fuzz(frontend.base_url, frontend.api_key, examples=EXAMPLES)
    print("fuzz:", report.requests, "requests, statuses", report.statuses)
    assert report.problems == []
    # It reached the speech route with valid input (200) and with invalid input (4xx).
    assert report.statuses.get(200, 0) > 0
    assert any(400 <= status < 500 for status in report.statuses)
