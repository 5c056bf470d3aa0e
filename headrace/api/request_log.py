"""Every HTTP request: its id on its response, its count in the metrics, its one log line.

`RequestLog` wraps the whole app. Each request gets an id (the client's X-Request-Id when
usable, else a new one) that its response carries as `x-request-id`, errors and streams
included, and that 5xx error messages end with. Once the response has ended, the response is
counted (`headrace:http_responses_total`, by route template and status) and one line is logged
at INFO on the `headrace.requests` logger, in logfmt, its fields also attached to the record
(the JSON log format writes them as keys): the request id, the key's id (never the key), method
and route, and for a completion its model, token counts, time to first token and finish
reasons; with `log_text`, the prompts and output text too.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headrace.api.errors import error_response, every_route
from headrace.api.request_context import (
    REQUEST_ID_HEADER,
    RequestContext,
    remember,
    request_id_of,
    serving,
)
from headrace.auth import Grant
from headrace.errors import InternalError
from headrace.metrics import Metrics
from headrace.serving import Observer, RequestRecord

__all__ = ["RequestLine", "RequestLog", "observer"]

logger = logging.getLogger("headrace.requests")

# The route of a request no route matched.
_NO_ROUTE = "other"


@dataclass(frozen=True)
class RequestLine:
    # The request's id, as its response's x-request-id.
    request_id: str
    # The stored id of the key it came with; None without one, or with a static key.
    key_id: str | None
    # Its HTTP method.
    method: str
    # Its route's template (/v1/files/{file_id}); "other" when none matched.
    route: str
    # Its response's status: 500 for an exception, 499 for a whole response whose client left.
    status: int
    # Seconds from its arrival to the end of its response.
    duration_s: float
    # The record of the completion it ran; None for other routes.
    record: RequestRecord | None
    # Whether the line carries the prompts' and the output's text.
    with_text: bool

    def fields(self) -> dict[str, object]:
        """The line's fields, by name, in order; those of a completion only for one."""
        fields: dict[str, object] = {
            "request_id": self.request_id,
            "key_id": self.key_id or "-",
            "method": self.method,
            "route": self.route,
            "status": self.status,
        }
        record = self.record
        if record is not None:
            fields |= {
                "model": record.model,
                "prompt_tokens": record.prompt_tokens,
                "cached_tokens": record.cached_tokens,
                "completion_tokens": record.completion_tokens,
                "ttft_ms": None if record.ttft_s is None else round(record.ttft_s * 1000, 1),
            }
        fields["duration_ms"] = round(self.duration_s * 1000, 1)
        if record is not None:
            fields["finish_reason"] = ",".join(record.finish_reasons)
            if self.with_text:
                fields |= {"prompt": record.prompts, "output": record.outputs}
        return fields

    def message(self) -> str:
        """The fields as logfmt: name=value, a value quoted when it needs to be."""
        return " ".join(f"{name}={_logfmt(value)}" for name, value in self.fields().items())


class RequestLog:
    """ASGI middleware, outermost: ids, counts and logs every HTTP request (see the module)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_text: bool = False) -> None:
        self._app = app
        # Where responses are counted.
        self._metrics = metrics
        # Whether log lines carry the prompts' and the output's text (--log-requests).
        self._log_text = log_text

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        context = RequestContext(request_id_of(Headers(scope=scope)))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, context.request_id)
            await send(message)

        with serving(context):
            try:
                await self._app(scope, receive, send_with_id)
            except Exception:
                # Unexpected: answered here, if nothing was yet, with a 500 that tells nothing
                # of its cause; raised on for the server to log the traceback.
                if status is None:
                    await error_response(InternalError())(scope, receive, send_with_id)
                raise
            finally:
                self._end(scope, context, status or 500, time.perf_counter() - started)

    def _end(self, scope: Scope, context: RequestContext, status: int, seconds: float) -> None:
        route = _route(scope)
        self._metrics.count_response(route, status)
        grant = scope.get("state", {}).get("grant")
        line = RequestLine(
            request_id=context.request_id,
            key_id=grant.key_id if isinstance(grant, Grant) else None,
            method=scope["method"],
            route=route,
            status=status,
            duration_s=seconds,
            record=context.record,
            with_text=self._log_text,
        )
        if logger.isEnabledFor(logging.INFO):
            logger.info(line.message(), extra=line.fields())


def observer(metrics: Metrics) -> Observer:
    """What takes each completion's record as it ends: the metrics count it, and the request
    that ran it (none for a batch request) keeps it for its log line."""

    def observe(record: RequestRecord) -> None:
        metrics.observe(record)
        remember(record)

    return observe


def _route(scope: Scope) -> str:
    """The template of the route the request went to, or would have gone to had a middleware
    not answered it first (a missing key, a limit, a drain); "other" when none matches."""
    route = scope.get("route")
    if route is None:
        path = scope["path"]
        route = next(
            (r for r in every_route(scope["app"].routes) if r.path_regex.fullmatch(path)), None
        )
    return getattr(route, "path_format", _NO_ROUTE)


def _logfmt(value: object) -> str:
    """A value as logfmt writes it: None as -, a string bare when it can be, else quoted as
    JSON; a number as itself; texts as a JSON list."""
    if value is None:
        return "-"
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value and value.isprintable() and not any(c in value for c in ' "='):
        return value
    return json.dumps(value, ensure_ascii=False)
