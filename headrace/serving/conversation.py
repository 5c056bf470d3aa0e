"""Request messages to the OpenAI-shaped dicts the tokenizer's chat template takes."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from headrace.errors import InvalidRequestError, invalid_value, missing_parameter
from headrace.serving.protocol import ChatMessage
from headrace.text import RESERVED_TEMPLATE_VARIABLES

__all__ = ["PromptEnding", "prompt_ending", "template_messages", "template_variables"]


class PromptEnding(NamedTuple):
    """How a conversation's prompt ends (vLLM's extensions of chat requests)."""

    # With the header of the assistant's reply: the model answers in a turn of its own.
    add_generation_prompt: bool
    # Inside the final message, its end-of-turn left out: the model goes on writing it
    # (an assistant's reply begun by the client).
    continue_final_message: bool


def prompt_ending(
    add_generation_prompt: bool | None, continue_final_message: bool | None
) -> PromptEnding:
    """The request's ending: by default a new assistant turn; continuing the final message
    leaves out that turn's header unless asked for too, which is InvalidRequestError."""
    if continue_final_message:
        if add_generation_prompt:
            raise InvalidRequestError(
                "'continue_final_message' and 'add_generation_prompt' cannot both be true: the "
                "prompt either goes on with the final message or opens a new turn.",
                param="continue_final_message",
            )
        return PromptEnding(add_generation_prompt=False, continue_final_message=True)
    return PromptEnding(add_generation_prompt is not False, continue_final_message=False)


def template_variables(chat_template_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """vLLM's `chat_template_kwargs`: variables the chat template may read, as given; a name the
    renderer keeps for itself is InvalidRequestError."""
    for name in chat_template_kwargs or ():
        if name in RESERVED_TEMPLATE_VARIABLES:
            raise invalid_value(
                f"chat_template_kwargs.{name}",
                f"'{name}' is set by the server, not by a template variable"
                + (", and has a request parameter of its own" if name in _PARAMETERS else ""),
            )
    return chat_template_kwargs


# Reserved names that requests set as parameters of their own.
_PARAMETERS = frozenset({"messages", "tools", "add_generation_prompt", "continue_final_message"})


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as plain dicts, unset fields left out; the tokenizer turns parts into text.

    "developer" becomes "system", which is what chat templates know it as. Raises
    InvalidRequestError for a message without content (only an assistant turn that called tools
    may have none), for `tool_calls` on anything but an assistant turn or with arguments that are
    not JSON, and for a tool answer without the id of its call or whose id answers no tool call
    of an earlier assistant turn.
    """
    call_ids: set[str] = set()
    rendered = []
    for index, message in enumerate(messages):
        _check_message(index, message, call_ids)
        call_ids.update(call.id for call in message.tool_calls or ())
        rendered.append(_template_message(message))
    return rendered


def _check_message(index: int, message: ChatMessage, call_ids: set[str]) -> None:
    """Raises InvalidRequestError unless `message` is well formed after the ids in `call_ids`."""
    if message.content is None and not (message.role == "assistant" and message.tool_calls):
        raise missing_parameter(f"messages.{index}.content")
    if message.tool_calls is not None and message.role != "assistant":
        raise invalid_value(
            f"messages.{index}.tool_calls",
            f"only assistant messages may have tool calls, not '{message.role}' messages",
        )
    for number, call in enumerate(message.tool_calls or ()):
        try:
            json.loads(call.function.arguments)
        except ValueError:
            raise invalid_value(
                f"messages.{index}.tool_calls.{number}.function.arguments",
                "the arguments of a tool call must be a JSON document",
            ) from None
    if message.role != "tool":
        return
    if message.tool_call_id is None:
        raise missing_parameter(f"messages.{index}.tool_call_id")
    if message.tool_call_id not in call_ids:
        raise InvalidRequestError(
            f"Invalid parameter: messages.{index} has role 'tool', but its tool_call_id "
            f"'{message.tool_call_id}' answers no tool call of an earlier assistant message.",
            param="messages",
        )


def _template_message(message: ChatMessage) -> dict[str, Any]:
    rendered = message.model_dump(exclude_none=True)
    if message.role == "developer":
        rendered["role"] = "system"
    return rendered
