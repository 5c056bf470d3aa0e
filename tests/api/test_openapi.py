"""/openapi.json is the API as it behaves: schemathesis sends what the document allows, and
every answer must be no 5xx and fit the document (status, content type, body, headers).

Not every request the document allows is accepted: a model name, a prompt that fits the
context, a tool history that adds up are known only at run time. So the one check left out
is that schema-valid requests succeed.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.fakes import make_app

schema = schemathesis.openapi.from_asgi("/openapi.json", make_app())


@schema.parametrize()
@settings(
    max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_the_api_keeps_to_its_document(case: schemathesis.Case) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


def test_the_document_names_the_bodies_the_routes_use() -> None:
    document = make_app().openapi()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert body["examples"]["whole"]["value"]["model"] == "test-model"
    ok = chat["responses"]["200"]["content"]
    assert set(ok) == {"application/json", "text/event-stream"}
    errors = {"400", "401", "404", "413", "415", "503", "default"}
    assert set(chat["responses"]) == {"200", *errors}  # no 422: validation errors are 400s
    schemas = document["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk"} <= set(schemas)
    assert schemas["ErrorResponse"]["required"] == ["error"]
