"""Property test of the REST API against its own OpenAPI document (schemathesis).

Every operation gets generated inputs (valid and not) with the write token; no
answer may be a 5xx. The examples per operation are bounded so the run stays short.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.admin.embedded import WRITE, Embedded, http, threaded

EXAMPLES = 12


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    with threaded(tmp_path_factory.mktemp("schemathesis")) as sipmesh:
        yield sipmesh


def test_no_server_error_for_any_generated_input(running: Embedded) -> None:
    status, document = http("GET", running.base + "/api/v1/openapi.json", token=None)
    assert status == 200
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 45
    session = requests.Session()
    headers = {"Authorization": f"Bearer {WRITE}"}
    seen: dict[str, set[int]] = {}

    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy() | st.nothing())
        def check(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=running.base, session=session, headers=headers, timeout=10
            )
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        check()

    assert len(seen) == len(operations)
    statuses = {code for codes in seen.values() for code in codes}
    assert statuses & {200, 201}, "some generated input was accepted"
    assert 400 in statuses, "some generated input was refused as bad input"
    assert all(code < 500 for code in statuses)
