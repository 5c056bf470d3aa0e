"""The generic tool-call format: how headrace teaches tools to a model whose template knows none.

A chat template that reads no `tools` variable (SmolLM2's, plain ChatML) cannot show the model
its tools, nor render a past call or its result. For such a template headrace rewrites the
conversation before rendering it:

1. The tools and the call format are described in a system message, added to the conversation's
   own system (or developer) message if it starts with one, else put in front of it:

       # Tools

       You may call one or more functions to help with the user's request. The functions,
       as JSON schemas, one a line:
       <tools>
       {"name": "get_weather", "description": "...", "parameters": {...}}
       </tools>

       To call a function, reply with:
       <tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>
       Write one <tool_call> block per call; for several calls, write the blocks one after
       another. Each result comes back to you in a <tool_response></tool_response> block, in
       the order of the calls.

2. An assistant message with `tool_calls` gets its calls written in that same syntax, one
   `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` line per call, after its content.
3. Each `tool` message becomes `<tool_response>\\n{content}\\n</tool_response>`, in a `user`
   message (templates that know no tools often refuse other roles); the results of consecutive
   tool messages share one user message, a line apart.

The model's reply is parsed with the `generic` format, whose syntax is hermes':
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["generic_tool_messages", "tool_call_text", "tools_prompt"]

_INSTRUCTIONS = (
    "To call a function, reply with:\n"
    '<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>\n'
    "Write one <tool_call> block per call; for several calls, write the blocks one after "
    "another. Each result comes back to you in a <tool_response></tool_response> block, in the "
    "order of the calls."
)


def tools_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system text that lists `tools` (OpenAI's shape) and teaches the call format."""
    lines = [_dumps(tool.get("function", tool)) for tool in tools]
    return (
        "# Tools\n\n"
        "You may call one or more functions to help with the user's request. The functions, "
        "as JSON schemas, one a line:\n"
        "<tools>\n" + "\n".join(lines) + "\n</tools>\n\n" + _INSTRUCTIONS
    )


def tool_call_text(name: str, arguments: object) -> str:
    """One call in the generic syntax; `arguments` is the decoded object (or text that was not)."""
    return "<tool_call>" + _dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def generic_tool_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """Prepared messages (string content, decoded arguments) rewritten for a template that knows
    no tools: see the module docstring."""
    out: list[dict[str, Any]] = []
    after_tool = False  # the last message out holds tool results
    for message in messages:
        role = message.get("role")
        if role == "tool":
            response = f"<tool_response>\n{message.get('content', '')}\n</tool_response>"
            if after_tool:
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response})
        elif role == "assistant" and message.get("tool_calls"):
            out.append(_with_calls(message))
        else:
            out.append(dict(message))
        after_tool = role == "tool"
    if tools:
        _add_system_text(out, tools_prompt(tools))
    return out


def _with_calls(message: Mapping[str, Any]) -> dict[str, Any]:
    calls = []
    for call in message["tool_calls"]:
        function = call.get("function", {}) if isinstance(call, Mapping) else {}
        calls.append(tool_call_text(str(function.get("name", "")), function.get("arguments", {})))
    content = message.get("content") or ""
    out = {key: value for key, value in message.items() if key != "tool_calls"}
    out["content"] = "\n".join([content, *calls] if content else calls)
    return out


def _add_system_text(messages: list[dict[str, Any]], text: str) -> None:
    if messages and messages[0].get("role") in ("system", "developer"):
        first = messages[0]
        first["content"] = f"{first['content']}\n\n{text}" if first.get("content") else text
    else:
        messages.insert(0, {"role": "system", "content": text})


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
