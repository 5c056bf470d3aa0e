"""`--log-format json`: each record one JSON object, a request line's fields as its keys;
`--log-requests` reaches the app."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from headrace.cli.log_format import JsonFormatter


def record(**attributes: Any) -> logging.LogRecord:
    fields = {"name": "headrace.requests", "levelname": "INFO", "created": 0.0, **attributes}
    return logging.makeLogRecord(fields)


def test_a_record_is_one_json_object_with_its_fields() -> None:
    line = JsonFormatter().format(
        record(msg="request_id=%s", args=("r-1",), request_id="r-1", status=200, prompt=("a",))
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "1970-01-01T00:00:00.000+00:00",
        "level": "INFO",
        "logger": "headrace.requests",
        "message": "request_id=r-1",
        "request_id": "r-1",
        "status": 200,
        "prompt": ["a"],
    }


def test_a_traceback_goes_in_one_field() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record(msg="failed", exc_info=sys.exc_info(), color_message="\x1b[31mfailed")
    entry = json.loads(JsonFormatter().format(failed))
    assert "RuntimeError: boom" in entry["exception"]
    assert "color_message" not in entry
