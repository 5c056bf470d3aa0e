"""Rendering a conversation with the model's chat template.

Messages come in OpenAI's shape and are handed to the template in the shape templates expect:
- `content` that is a list of parts becomes the text of its `{"type": "text"}` parts joined with
  "\\n" (as vLLM does); other part types are refused; `content: None` becomes "".
- `tool_calls[*].function.arguments`, a JSON string in OpenAI's API, is decoded into an object,
  since templates render it with `tojson` (as vLLM does); a string that is not a JSON object stays.
- Every other key (`name`, `tool_call_id`, ...) is passed through unchanged.

A model without a chat template gets `CHATML_TEMPLATE`, plain ChatML:
`<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, then `<|im_start|>assistant\\n`.

Tools: a template that reads a `tools` variable gets `tools` and the history as they are (OpenAI's
shapes: assistant `tool_calls`, `tool` messages with `tool_call_id`), as transformers passes them.
A template that knows no tools (ChatML included) gets the conversation rewritten in headrace's
generic format instead: see `headrace.text.tool_prompt`.

A request may set more variables for the template (vLLM's `chat_template_kwargs`, such as
Qwen3's `enable_thinking`), any but `RESERVED_TEMPLATE_VARIABLES`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from transformers import PreTrainedTokenizerBase

from headrace.text.tool_call_format import detect_tool_call_format

__all__ = [
    "CHATML_TEMPLATE",
    "RESERVED_TEMPLATE_VARIABLES",
    "ChatTemplateError",
    "check_chat_template",
    "prepare_messages",
    "read_chat_template",
    "render_chat",
    "template_source",
]

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Names a request's own template variables cannot take: the arguments of transformers' renderer
# (`tokenize` would make it return ids) and the conversation it sets itself.
RESERVED_TEMPLATE_VARIABLES = frozenset(
    {*inspect.signature(PreTrainedTokenizerBase.apply_chat_template).parameters, "messages"}
    - {"self", "kwargs"}
)


class ChatTemplateError(ValueError):
    """The chat template refused the conversation, or could not be rendered at all."""


def read_chat_template(value: str) -> str:
    """A chat template given in place of the model's: the text of the file `value` names, or
    `value` itself when it is a Jinja template (as vLLM's --chat-template); ValueError else."""
    path = Path(value).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read the chat template {path}: {error}") from None
    if "{{" in value or "{%" in value:
        return value
    raise ValueError(f"the chat template {value!r} is neither a file nor a Jinja template")


def check_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """ValueError, saying why, unless the tokenizer's chat template renders a one-message chat."""
    try:
        render_chat(tokenizer, [{"role": "user", "content": "Hello"}])
    except ChatTemplateError as error:
        raise ValueError(f"the chat template does not render a one-message chat: {error}") from None


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """The prompt text for `messages`, ending with the header of the assistant's reply (unless
    not `add_generation_prompt`), or inside the final message if `continue_final_message`:
    the text ends where its content does, what the template writes after it left out.
    `variables`: more for the template to read, none of RESERVED_TEMPLATE_VARIABLES."""
    template = None if tokenizer.chat_template is not None else CHATML_TEMPLATE
    prepared = prepare_messages(messages)
    teach = detect_tool_call_format(template_source(tokenizer)).teach
    if teach is not None:  # the template knows no tools: headrace's format is taught instead
        prepared, tools = teach(prepared, tools), None
    try:
        rendered = tokenizer.apply_chat_template(
            prepared,
            tools=[dict(tool) for tool in tools] if tools else None,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tokenize=False,
            **(variables or {}),
        )
    except jinja2.TemplateError as error:
        if type(error) is jinja2.TemplateError:  # the template's own raise_exception(message)
            raise ChatTemplateError(str(error)) from error
        raise ChatTemplateError(f"chat template error: {error}") from error
    except (TypeError, ValueError) as error:  # bad values inside the template, an empty chat
        raise ChatTemplateError(f"chat template error: {error}") from error
    assert isinstance(rendered, str), type(rendered)
    return rendered


def template_source(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The chat template's text (named templates joined), or None when the model has none."""
    template = tokenizer.chat_template
    if isinstance(template, Mapping):
        return "\n".join(str(text) for text in template.values())
    return template if isinstance(template, str) else None


def prepare_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages in the shape chat templates expect (see the module docstring)."""
    prepared = []
    for message in messages:
        out = dict(message)
        out["content"] = _content_text(message.get("content"))
        if isinstance(message.get("tool_calls"), list):
            out["tool_calls"] = [_tool_call(call) for call in message["tool_calls"]]
        prepared.append(out)
    return prepared


def _content_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ChatTemplateError(
            f"message content must be a string or a list of parts, not {content!r}"
        )
    texts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise ChatTemplateError(f"content part type {kind!r} is not supported; only 'text'")
        text = part.get("text")
        if not isinstance(text, str):
            raise ChatTemplateError("a text content part needs a string 'text'")
        texts.append(text)
    return "\n".join(texts)


def _tool_call(call: object) -> object:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            function["arguments"] = decoded
    return {**call, "function": function}
