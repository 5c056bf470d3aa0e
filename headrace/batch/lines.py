"""A batch's lines: its input file read as OpenAI reads it, and the result of each.

The input is JSON lines, each one request to the batch's endpoint.

Each line is an object with a `custom_id` string unique in the file, `method` "POST", `url`
the batch's endpoint and a `body` object; blank lines are skipped; at most MAX_REQUESTS. What
the body asks is checked only when the request runs (a bad body fails alone, as online).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from headrace.batch.objects import BatchError

__all__ = [
    "MAX_ERRORS",
    "MAX_REQUESTS",
    "BatchLine",
    "LineResult",
    "LineUsage",
    "ResultKind",
    "read_lines",
]

# Most requests one batch may hold (OpenAI's limit).
MAX_REQUESTS = 50_000
# Most errors a failed batch lists.
MAX_ERRORS = 100
# completed: a response (output file); failed: an error response; expired: never run in the
# window (both error file).
ResultKind = Literal["completed", "failed", "expired"]


@dataclass(frozen=True)
class BatchLine:
    """A request of a batch; its body stays in the file until it runs."""

    # Its line in the file, from 1.
    line: int
    # The client's id for it, unique in the batch.
    custom_id: str
    # The file it is in.
    source: Path
    # Where its line starts in the file, in bytes.
    offset: int
    # Its line's length in bytes.
    size: int

    def read_body(self) -> bytes:
        """The request's body, as JSON bytes, read from its file."""
        with self.source.open("rb") as source:
            source.seek(self.offset)
            raw = source.read(self.size)
        return orjson.dumps(orjson.loads(raw)["body"])


@dataclass(frozen=True)
class LineUsage:
    """What a completed request used: its model, as it named it, and its tokens."""

    model: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class LineResult:
    # Which file its line goes to.
    kind: ResultKind
    # The output line, without its newline: {"id", "custom_id", "response", "error"}.
    output: str
    # A completed request's model and tokens; None for the others.
    usage: LineUsage | None = None


def read_lines(path: Path, endpoint: str) -> tuple[list[BatchLine], list[BatchError]]:
    """The requests of the file at `path`, and what is wrong with it (nothing: a good file).

    The file is read a line at a time; what is kept of each request is where it is."""
    lines: list[BatchLine] = []
    errors: list[BatchError] = []
    seen: set[str] = set()
    offset = 0
    with path.open("rb") as source:
        for number, raw in enumerate(source, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            if len(lines) >= MAX_REQUESTS:
                errors.append(
                    BatchError(
                        code="too_many_requests",
                        message=f"The batch input file has more than the {MAX_REQUESTS} "
                        "requests a batch may hold.",
                    )
                )
                return [], errors
            found = _line(path, number, start, raw, endpoint, seen)
            if isinstance(found, BatchError):
                errors.append(found)
                if len(errors) >= MAX_ERRORS:
                    break
            else:
                lines.append(found)
    if not lines and not errors:
        errors.append(
            BatchError(
                code="empty_file",
                message="The batch input file is empty. Please ensure that the batch contains "
                "at least one request.",
            )
        )
    return (lines if not errors else []), errors


def _line(
    path: Path, number: int, offset: int, raw: bytes, endpoint: str, seen: set[str]
) -> BatchLine | BatchError:
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return BatchError(
            code="invalid_json_line",
            message="This line is not parseable as valid JSON.",
            line=number,
        )
    if not isinstance(request, dict):
        return BatchError(
            code="invalid_json_line", message="This line is not a JSON object.", line=number
        )
    for field in ("custom_id", "method", "url", "body"):
        if field not in request:
            return BatchError(
                code="missing_required_parameter",
                message=f"Missing required parameter: '{field}'.",
                param=field,
                line=number,
            )
    custom_id, body = request["custom_id"], request["body"]
    if not isinstance(custom_id, str):
        return _invalid(number, "custom_id", "The custom_id must be a string.")
    if custom_id in seen:
        return BatchError(
            code="duplicate_custom_id",
            message="The custom_id for this request is a duplicate of another request. The "
            "custom_id parameter must be unique for each request in a batch.",
            param="custom_id",
            line=number,
        )
    if request["method"] != "POST":
        return _invalid(number, "method", "The method must be 'POST'.")
    if request["url"] != endpoint:
        return _invalid(
            number,
            "url",
            f"The url '{request['url']}' does not match the batch's endpoint '{endpoint}'.",
        )
    if not isinstance(body, dict):
        return _invalid(number, "body", "The body must be a JSON object.")
    seen.add(custom_id)
    return BatchLine(number, custom_id, path, offset, len(raw))


def _invalid(number: int, param: str, message: str) -> BatchError:
    return BatchError(code="invalid_request", message=message, param=param, line=number)
