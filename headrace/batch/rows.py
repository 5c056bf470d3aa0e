"""A batch as its row keeps it: the columns, which statuses are unfinished, when each status
began, and a row read back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from headrace.batch.objects import Batch, BatchStatus
from headrace.batch.store import stored_owner

__all__ = ["COLUMNS", "TIME_COLUMNS", "UNFINISHED", "BatchJob", "job_of"]

# The statuses of a batch the runner has yet to end.
UNFINISHED: tuple[BatchStatus, ...] = ("validating", "in_progress", "finalizing", "cancelling")
# The columns a batch is read from, in job_of's order.
COLUMNS = (
    "id, owner, models, endpoint, input_file_id, completion_window, status, metadata, errors, "
    "output_file_id, error_file_id, created_at, expires_at, in_progress_at, finalizing_at, "
    "completed_at, failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed, "
    "model, input_tokens, cached_tokens, output_tokens, output_expires_after"
)
_NAMES = tuple(name.strip() for name in COLUMNS.split(","))
# The column each status's time is kept in.
TIME_COLUMNS: Mapping[BatchStatus, str] = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}


@dataclass(frozen=True)
class BatchJob:
    # Whose it is: an API key id, None for the shared owner.
    owner: str | None
    # The models its requests may name: those of its owner's key when it was made; None: any.
    models: frozenset[str] | None
    # Seconds its output and error files live from their creation; None: until deleted.
    output_expires_after: int | None
    # The batch as it was read.
    batch: Batch


def job_of(row: tuple[object, ...]) -> BatchJob:
    """The batch of a row of COLUMNS, with whose it is and what its requests may name."""
    values = dict(zip(_NAMES, row, strict=True))
    metadata, errors = values.pop("metadata"), values.pop("errors")
    counts = {name: values.pop(name) for name in ("total", "completed", "failed")}
    input_tokens, cached_tokens, output_tokens = (
        _integer(values.pop(name)) for name in ("input_tokens", "cached_tokens", "output_tokens")
    )
    owner, models = values.pop("owner"), values.pop("models")
    expiry = values.pop("output_expires_after")
    batch = Batch.model_validate(
        {
            **values,
            "metadata": None if metadata is None else orjson.loads(str(metadata)),
            "errors": None if errors is None else {"data": orjson.loads(str(errors))},
            "request_counts": counts,
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": cached_tokens},
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }
    )
    return BatchJob(
        owner=None if owner == stored_owner(None) else str(owner),
        models=None if models is None else frozenset(orjson.loads(str(models))),
        output_expires_after=None if expiry is None else _integer(expiry),
        batch=batch,
    )


def _integer(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an integer column, got {value!r}")
    return value
