"""--chat-template: the server renders chats with the template given in place of the model's,
and a request's chat_template_kwargs are its variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.text import Tokenizer
from tests.e2e.conftest import MODEL_NAMES, running_server

pytestmark = pytest.mark.e2e

# SmolLM2's special tokens around a preamble of its own, unlike the model's template.
TEMPLATE = (
    "<|im_start|>system\nAnswer as a {{ persona | default('pirate') }} would, in one short line."
    "<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_chat_is_rendered_with_the_template_given(
    tmp_path: Path, default_model_path: Path
) -> None:
    (tmp_path / "pirate.jinja").write_text(TEMPLATE)
    messages = [{"role": "user", "content": "Where is the treasure?"}]
    flags = ("--enforce-eager", "--chat-template", str(tmp_path / "pirate.jinja"))
    variables = {"persona": "very polite butler of an old house"}
    with running_server(tmp_path, *flags) as server:
        reply, butler = (
            server.sdk().chat.completions.create(
                model=MODEL_NAMES[0],
                messages=messages,  # type: ignore[arg-type]
                max_tokens=4,
                extra_body=extra,
            )
            for extra in ({}, {"chat_template_kwargs": variables})
        )
    assert reply.usage is not None and butler.usage is not None
    ours = Tokenizer.from_path(default_model_path, TEMPLATE)
    models = Tokenizer.from_path(default_model_path).apply_chat_template(messages)
    assert reply.usage.prompt_tokens == len(ours.apply_chat_template(messages)) != len(models)
    with_variables = ours.apply_chat_template(messages, variables=variables)
    assert butler.usage.prompt_tokens == len(with_variables) > reply.usage.prompt_tokens
