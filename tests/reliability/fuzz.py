"""Fuzzing the frontend from its own OpenAPI schema (schemathesis + hypothesis).

For every operation the schema lists, generated requests, both valid by the schema (positive) and
invalid (negative: wrong types, missing fields, out-of-range values), are sent with a valid key.
A request passes when the answer is not a 5xx, when every error answer is a JSON body of OpenAI's
shape ``{"error": {"message", "type", "param", "code"}}``, and when the answer's media type is one
the schema lists for its status. The schema must be exact: a request it calls valid must succeed.
Shared by the CI test (few examples) and bench/reliability.py (many).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def error_shape_problem(response: Any) -> str:
    """Empty when an error response has OpenAI's error shape."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}: not JSON: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"{response.status_code}: not OpenAI's error shape: {body!r}"[:300]
    if not isinstance(error["message"], str) or not error["message"]:
        return f"{response.status_code}: empty error message"
    return ""


def fuzz(base_url: str, key: str, *, examples: int) -> FuzzReport:
    import schemathesis
    from schemathesis import GenerationMode

    # The document is behind the key, like every route but /health.
    raw = httpx.get(f"{base_url}/openapi.json", headers={"X-API-Key": key}, timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    report = FuzzReport()

    def check(case: Any, mode: Any) -> None:
        response = case.call(base_url=base_url, headers={"X-API-Key": key}, timeout=60)
        report.requests += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        label = f"{case.method} {case.path}"
        if response.status_code >= 500:
            report.problems.append(f"{label}: {response.status_code} {response.text[:200]!r}")
        elif response.status_code >= 400 and case.path != "/health":
            problem = error_shape_problem(response)
            if problem:
                report.problems.append(f"{label}: {problem}")
        if mode == GenerationMode.POSITIVE and not 200 <= response.status_code < 300:
            report.problems.append(f"{label}: a request valid by the schema got "
                                   f"{response.status_code}: {response.text[:200]!r}")
        documented = raw["paths"][case.path][case.method.lower()]["responses"]
        listed = documented.get(str(response.status_code), {}).get("content", {})
        kind = response.headers.get("content-type") or ""
        kind = kind[0] if isinstance(kind, list) else kind  # schemathesis keeps header lists
        if kind not in listed:
            report.problems.append(f"{label}: {response.status_code} {kind!r} is not in the "
                                   f"schema ({sorted(listed)})")

    def runner(operation: Any, mode: Any) -> Any:
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            check(case, mode)

        return run

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                runner(operation, mode)()
            except Unsatisfiable:
                continue  # e.g. no negative form of an operation without parameters
    return report
