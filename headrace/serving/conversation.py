"""Request messages to the OpenAI-shaped dicts the tokenizer's chat template takes."""

from __future__ import annotations

from typing import Any

from headrace.serving.errors import InvalidRequestError
from headrace.serving.protocol import ChatMessage

__all__ = ["template_messages"]


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as plain dicts, unset fields left out; the tokenizer turns parts into text.

    "developer" becomes "system", which is what chat templates know it as. Raises
    InvalidRequestError for a message without content (only an assistant turn that called tools
    may have none) and for a tool answer without the id of its call.
    """
    return [_template_message(index, message) for index, message in enumerate(messages)]


def _template_message(index: int, message: ChatMessage) -> dict[str, Any]:
    if message.content is None and not (message.role == "assistant" and message.tool_calls):
        param = f"messages.{index}.content"
        raise InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    if message.role == "tool" and message.tool_call_id is None:
        param = f"messages.{index}.tool_call_id"
        raise InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    rendered = message.model_dump(exclude_none=True)
    if message.role == "developer":
        rendered["role"] = "system"
    return rendered
