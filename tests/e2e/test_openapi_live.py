"""schemathesis against a live `headrace serve`: what /openapi.json allows, the real server
answers without a 5xx and within the document (status, content type, body, headers).

The server runs the default model with a 64-token context, so the requests schemathesis makes
up stay quick. As in tests/api/test_openapi.py, the one check left out is that schema-valid
requests succeed: model names and context lengths are known only at run time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.e2e.conftest import API_KEY, Server, running_server

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("openapi"), "--max-model-len", "64") as server:
        yield server


def test_the_live_server_keeps_to_its_document(small_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{small_server.url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/health"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def keeps_to_the_document(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers=AUTH, excluded_checks=[positive_data_acceptance], timeout=120
            )

        keeps_to_the_document()
