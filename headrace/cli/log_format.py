"""How log records are written: `--log-format text` (a line of prose each) or `json` (a JSON
object each, one a line, for log collectors)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

__all__ = ["TEXT_FORMAT", "JsonFormatter"]

# A record's time, level and logger, then its message.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: the rest were given as `extra` (a request line's fields).
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# Extras left out: uvicorn's copy of its message in terminal colours.
_NOISE = frozenset({"color_message"})


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (ISO 8601, UTC), level, logger, message, the fields
    given as `extra`, and the traceback, if any, as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in _NOISE:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
