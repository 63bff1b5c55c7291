"""Schemathesis generates requests from the app's own OpenAPI schema, valid and invalid, and sends
them to the real app (fake backend behind it). Whatever arrives: no 5xx, every error in OpenAI's
shape, and a 200 on speech always carries audio."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings


def test_any_request_gets_a_well_formed_answer(frontend):
    # schemathesis' pytest plugin does not load under this pytest; its strategies work directly.
    # The document is behind the key, like every route but /health.
    schema = schemathesis.openapi.from_url(f"{frontend.base_url}/openapi.json",
                                           headers=frontend.headers())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/audio/speech", "/v1/models", "/health"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def answer_is_well_formed(case) -> None:
            response = case.call(base_url=frontend.base_url, headers=frontend.headers(), timeout=30)
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert error["message"]
            elif case.path == "/v1/audio/speech":
                assert len(response.content) > 0

        answer_is_well_formed()


def test_openapi_documents_the_error_shape(frontend):
    spec = httpx.get(f"{frontend.base_url}/openapi.json", headers=frontend.headers()).json()
    speech = spec["paths"]["/v1/audio/speech"]["post"]["responses"]
    assert {"200", "400", "401", "502", "503", "504"} <= set(speech)
