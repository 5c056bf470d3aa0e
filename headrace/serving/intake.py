"""The checks every completion request passes before any work is done for it."""

from __future__ import annotations

from headrace.engine.client import EngineClient
from headrace.engine.outputs import Priority
from headrace.errors import EngineOverloadedError, InvalidRequestError
from headrace.serving.models import ModelCatalog
from headrace.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    check_known_fields,
)

__all__ = ["Intake"]


# Seconds an overloaded server asks its clients to wait before they retry.
_RETRY_AFTER_SECONDS = 1.0


class Intake:
    def __init__(self, engine: EngineClient, models: ModelCatalog, *, max_waiting: int) -> None:
        self._engine = engine
        self._models = models
        # Requests that may wait for the engine before new ones are refused.
        self._max_waiting = max_waiting

    def admit(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        priority: Priority = Priority.INTERACTIVE,
    ) -> None:
        """Raises HeadraceError for a server too busy, an unknown model, or options that do not
        go together; logs the names of fields it does not know.

        Only interactive requests waiting count against `max_waiting`, and only interactive
        requests are refused for it: a batch backlog waits behind them by design, so it never
        turns a chat user away, and a batch request is never refused for being one of many.
        """
        # Refuse at once rather than queue behind more requests than the server allows.
        if priority is Priority.INTERACTIVE:
            stats = self._engine.stats()
            if stats.waiting - stats.batch_waiting >= self._max_waiting:
                raise EngineOverloadedError(_RETRY_AFTER_SECONDS)
        self._models.require(request.model)
        if request.stream_options is not None and not request.stream:
            raise InvalidRequestError(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        check_known_fields(request.model_extra, request.UNSUPPORTED)
