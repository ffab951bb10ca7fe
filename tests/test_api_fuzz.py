"""The API fuzzed from its own OpenAPI spec: whatever schemathesis sends, never a 5xx.

Runs in-process on the app's ASGI transport against the test's real Redis, with a valid token
(so requests get past auth into the producer and store) and a few real jobs to aim at.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from speedq.api import create_app
from tests.conftest import Speedq
from tests.teams_helpers import add_team

MAX_EXAMPLES = 40  # per operation; keeps the whole fuzz to a few seconds


@pytest.fixture
def fuzz_token(speedq: Speedq) -> str:
    token = add_team(speedq, "fuzz", "--max-queued", "1000")
    other = add_team(speedq, "other")
    assert other
    # Jobs for sq-1 .. sq-3, so generated ids sometimes name real jobs of both teams.
    speedq.submit("--team", "fuzz", "--run-name", "mine")
    speedq.submit("--team", "other", "--run-name", "theirs")
    speedq.submit("--team", "fuzz", "--run-name", "cancelled")
    return token


def test_no_request_makes_a_server_error(redis_server, fuzz_token: str, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SPEEDQ_OFFLINE", "1")  # previews report a ref to resolve on GitHub instead of asking it
    monkeypatch.setenv("SPEEDQ_HOME", str(tmp_path / "api"))  # where a sim preview makes its nanochat repo
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(redis_server.client()))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 14  # 10 under /v1, 4 the dashboard reads

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same cases every run: a failure here is reproducible
            database=None,
        )
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(headers={"Authorization": f"Bearer {fuzz_token}"})
            # No 5xx, and every answer is one the spec declares, in the shape it declares.
            case.validate_response(
                response, checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
            )
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)

        fuzz()
