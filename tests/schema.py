"""Validation against the official OpenAI OpenAPI schema (a copy of the subset for our routes)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).parent / "spec" / "openai-openapi-subset.json"


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    spec = Resource.from_contents(json.loads(SPEC.read_text()), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("openai.json", spec)
    return jsonschema.Draft202012Validator(
        {"$ref": f"openai.json#/components/schemas/{name}"}, registry=registry
    )


def validate(instance: object, name: str) -> None:
    """Raise jsonschema.ValidationError unless `instance` fits components/schemas/`name`."""
    _validator(name).validate(instance)
