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
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.e2e.conftest import API_KEY, Server, running_server

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("openapi"), "--max-model-len", "64") as server:
        yield server


@pytest.fixture(scope="module")
def live_schema(small_server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{small_server.url}/openapi.json", headers=AUTH)


schema = schemathesis.pytest.from_fixture("live_schema")


@schema.parametrize()
@settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_live_server_keeps_to_its_document(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])
