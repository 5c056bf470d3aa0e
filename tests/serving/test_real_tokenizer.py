"""ChatService with the real headrace.text.Tokenizer: the two contracts fit together."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from tokenizers.processors import TemplateProcessing

from headrace.serving import (
    ChatService,
    CompletionService,
    ModelCatalog,
    parse_chat_request,
    parse_completion_request,
)
from headrace.text import Tokenizer
from tests.fakes import MODEL_NAMES, FakeEngine, chat_body, make_chat_service, make_sampling
from tests.text.factories import BOS_ID, IM_END_ID, make_tokenizer_dir

REPLY = "Hello world! Hello there, how are you today?"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.from_path(make_tokenizer_dir(Path(tmp_path_factory.mktemp("tokenizer"))))


def make_service(tokenizer: Tokenizer) -> tuple[ChatService, FakeEngine]:
    engine = FakeEngine([*tokenizer.encode(REPLY), IM_END_ID])
    return make_chat_service(engine, tokenizer), engine


async def test_stream_through_the_real_detokenizer(tokenizer: Tokenizer) -> None:
    service, engine = make_service(tokenizer)
    chat = service.prepare(parse_chat_request(orjson.dumps(chat_body(stream=True))))
    assert chat.generation.prompts[0][0] == BOS_ID
    assert IM_END_ID in chat.generation.params.stop_token_ids
    chunks = [chunk async for chunk in service.stream(chat)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert engine.aborted == []


async def test_stop_string_through_the_real_detokenizer(tokenizer: Tokenizer) -> None:
    service, engine = make_service(tokenizer)
    request = parse_chat_request(orjson.dumps(chat_body(stop=["there"])))
    completion = await service.complete(service.prepare(request))
    assert completion.choices[0].message.content == "Hello world! Hello "
    assert completion.choices[0].finish_reason == "stop"
    assert len(engine.aborted) == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_max_tokens_inside_a_character_drops_its_bytes(
    tokenizer: Tokenizer, stream: bool
) -> None:
    ids = tokenizer.encode("ok 😀")
    cut = next(k for k in range(len(ids)) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    engine = FakeEngine(ids)  # no end of sequence: max_tokens ends it inside the emoji
    service = make_chat_service(engine, tokenizer)
    chat = service.prepare(
        parse_chat_request(orjson.dumps(chat_body(stream=stream, max_tokens=cut)))
    )
    if stream:
        chunks = [chunk async for chunk in service.stream(chat)]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = chunks[-1].choices[0].finish_reason
    else:
        completion = await service.complete(chat)
        text = completion.choices[0].message.content or ""
        finish = completion.choices[0].finish_reason
    assert text == "ok " and finish == "length"


async def test_messages_render_in_openai_shape(tokenizer: Tokenizer) -> None:
    service, _ = make_service(tokenizer)
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    chat = service.prepare(parse_chat_request(orjson.dumps(chat_body(messages=messages))))
    prompt = tokenizer.hf.decode(chat.generation.prompts[0])  # special tokens shown
    assert isinstance(prompt, str)
    assert prompt.endswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\na\nb<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


async def test_a_text_prompt_is_framed_as_the_tokenizer_frames_one(tmp_path: Path) -> None:
    """A tokenizer whose post-processor puts BOS first (Llama 3's) gets it on a text prompt,
    as vLLM's completions do; the echoed text is the prompt as given."""
    bos_first = Tokenizer.from_path(make_tokenizer_dir(tmp_path))
    bos_first.hf.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", BOS_ID)]
    )
    engine = FakeEngine([*bos_first.encode(" there"), IM_END_ID])
    service = CompletionService(
        engine, bos_first, ModelCatalog(MODEL_NAMES), make_sampling(engine, bos_first)
    )
    request = parse_completion_request(
        orjson.dumps({"model": MODEL_NAMES[0], "prompt": "Hello", "echo": True})
    )
    prepared = service.prepare(request)
    assert prepared.generation.prompts[0] == [BOS_ID, *bos_first.encode("Hello")]
    completion = await service.complete(prepared)
    assert completion.choices[0].text == "Hello there"
    # Token ids are the prompt as given: nothing is added to them.
    ids = parse_completion_request(
        orjson.dumps({"model": MODEL_NAMES[0], "prompt": bos_first.encode("Hello")})
    )
    assert service.prepare(ids).generation.prompts[0] == bos_first.encode("Hello")
