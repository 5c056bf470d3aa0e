"""ChatService: checks before any work, the whole answer, the chunks, and aborting the engine."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from headrace.engine.outputs import Priority
from headrace.errors import (
    ContextLengthExceededError,
    EngineOverloadedError,
    HeadraceError,
    InvalidRequestError,
    ModelNotFoundError,
    ServiceUnavailableError,
)
from headrace.serving import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatService,
    parse_chat_request,
)
from headrace.text import TOOL_CALL_FORMATS, Tokenizer
from headrace.text.grammar import GrammarCompiler
from tests.fakes import (
    EOS,
    MODEL_NAMES,
    REPLY,
    FakeEngine,
    chat_body,
    make_chat_service,
)
from tests.guide import WEATHER_TOOL
from tests.text.factories import make_tokenizer_dir


def make_service(engine: FakeEngine | None = None) -> tuple[ChatService, FakeEngine]:
    engine = engine or FakeEngine()
    return make_chat_service(engine), engine


def request(**overrides: Any) -> ChatCompletionRequest:
    return parse_chat_request(orjson.dumps(chat_body(**overrides)))


async def collect(service: ChatService, **overrides: Any) -> list[ChatCompletionChunk]:
    chat = service.prepare(request(stream=True, **overrides))
    return [chunk async for chunk in service.stream(chat)]


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_complete_returns_the_reply_and_usage() -> None:
    service, engine = make_service()
    completion = await service.complete(service.prepare(request()))
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL_NAMES[0]
    assert completion.id.startswith("chatcmpl-")
    usage = completion.usage
    assert usage.completion_tokens == len(REPLY) + 1  # the EOS counts, its text does not
    assert usage.prompt_tokens == len(b"<user>Hi\n<assistant>")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert engine.aborted == [] and engine.closed_early == []


async def test_ignore_eos_generates_through_end_of_sequence() -> None:
    service, _ = make_service()
    assert service.prepare(request()).generation.params.stop_token_ids == {EOS}
    assert service.prepare(request(ignore_eos=True)).generation.params.stop_token_ids == frozenset()


async def test_prepare_builds_sampling_params() -> None:
    service, _ = make_service()
    chat = service.prepare(request(temperature=0, top_p=0.5, seed=7, max_tokens=9))
    assert (
        chat.generation.params.temperature == 0
        and chat.generation.params.top_p == 0.5
        and chat.generation.params.seed == 7
    )
    assert chat.generation.params.max_tokens == 9 and chat.generation.params.stop_token_ids == {EOS}
    defaults = service.prepare(request()).generation.params
    assert defaults.temperature == 1.0 and defaults.top_p == 1.0 and defaults.seed is None
    assert not defaults.adjusts_logits


async def test_prepare_passes_penalties_and_logit_bias() -> None:
    service, _ = make_service()
    chat = service.prepare(
        request(
            presence_penalty=0.5,
            frequency_penalty=-1,
            repetition_penalty=1.3,
            logit_bias={"65": 100, "0": -2.5, "511": 1},
        )
    )
    params = chat.generation.params
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -1)
    assert params.repetition_penalty == 1.3
    assert params.logit_bias == ((65, 100), (0, -2.5), (511, 1))


async def test_stop_token_ids_join_the_end_of_sequence_tokens() -> None:
    service, _ = make_service()
    assert service.prepare(request(stop_token_ids=[7, 9])).generation.params.stop_token_ids == {
        EOS,
        7,
        9,
    }
    chat = service.prepare(request(stop_token_ids=[7], ignore_eos=True))
    assert chat.generation.params.stop_token_ids == {7}


async def test_prepare_passes_top_k_and_min_p() -> None:
    service, _ = make_service()
    params = service.prepare(request(top_k=5, min_p=0.05)).generation.params
    assert (params.top_k, params.min_p) == (5, 0.05)
    for off in (0, -1):  # vLLM's two spellings of "all tokens"
        assert service.prepare(request(top_k=off)).generation.params.top_k == 0


async def test_max_completion_tokens_wins_and_default_fills_the_context() -> None:
    service, engine = make_service()
    chat = service.prepare(request(max_tokens=5, max_completion_tokens=3))
    assert chat.generation.params.max_tokens == 3
    chat = service.prepare(request())
    assert chat.generation.params.max_tokens == engine.max_model_len - len(
        chat.generation.prompts[0]
    )


async def test_stream_shape() -> None:
    service, _ = make_service()
    chunks = await collect(service)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert {(c.id, c.created, c.model) for c in chunks} == {(chunks[0].id, chunks[0].created,
                                                            MODEL_NAMES[0])}  # fmt: skip
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].choices[0].delta.model_dump(exclude_unset=True) == {}
    assert text_of(chunks) == REPLY
    assert all("usage" not in c.model_fields_set for c in chunks)


async def test_stream_with_usage() -> None:
    service, _ = make_service()
    chunks = await collect(service, stream_options={"include_usage": True}, max_tokens=4)
    *choice_chunks, last = chunks
    assert all("usage" in c.model_fields_set and c.usage is None for c in choice_chunks)
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 4
    assert choice_chunks[-1].choices[0].finish_reason == "length"
    assert text_of(chunks) == REPLY[:4]


async def test_stop_string_ends_with_stop_and_aborts_the_engine() -> None:
    service, engine = make_service()
    chunks = await collect(service, stop=["world", "zzz"])
    assert text_of(chunks) == "Hello, "
    assert chunks[-1].choices[0].finish_reason == "stop"
    (request_id,) = engine.prompts
    assert engine.aborted == [request_id]
    assert engine.closed_early == [request_id]


async def test_stop_string_in_whole_completion() -> None:
    service, _ = make_service()
    completion = await service.complete(service.prepare(request(stop="!")))
    assert completion.choices[0].message.content == "Hello, world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == len("Hello, world!")


async def test_closing_the_stream_early_aborts_the_engine() -> None:
    service, engine = make_service()
    stream = service.stream(service.prepare(request(stream=True)))
    async for chunk in stream:
        if chunk.choices[0].delta.content == "H":
            break
    await stream.aclose()
    (request_id,) = engine.prompts
    assert engine.aborted == [request_id] and engine.closed_early == [request_id]
    assert engine.running == 0


async def test_engine_abort_is_service_unavailable() -> None:
    service, _ = make_service(FakeEngine(abort_after=2))
    with pytest.raises(ServiceUnavailableError):
        await service.complete(service.prepare(request()))


@pytest.mark.parametrize(
    ("overrides", "error", "param"),
    [
        ({"model": "nope"}, ModelNotFoundError, "model"),
        ({"top_logprobs": 2}, InvalidRequestError, "top_logprobs"),
        ({"max_tokens": 3, "min_tokens": 4}, InvalidRequestError, "min_tokens"),
        ({"stream_options": {"include_usage": True}}, InvalidRequestError, "stream_options"),
        ({"max_tokens": 250}, ContextLengthExceededError, "messages"),
        ({"messages": [{"role": "user", "content": "x" * 300}]}, ContextLengthExceededError,
         "messages"),
        ({"messages": [{"role": "user"}]}, InvalidRequestError, "messages.0.content"),
        ({"messages": [{"role": "tool", "content": "42"}]}, InvalidRequestError,
         "messages.0.tool_call_id"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, InvalidRequestError, "messages"),
        # The fake engine's vocabulary: ids 0 to 511.
        ({"logit_bias": {"512": 1}}, InvalidRequestError, "logit_bias"),
        ({"logit_bias": {"-1": 1}}, InvalidRequestError, "logit_bias"),
        ({"logit_bias": {"hello": 1}}, InvalidRequestError, "logit_bias"),
        ({"logit_bias": {"1.5": 1}}, InvalidRequestError, "logit_bias"),
        ({"logit_bias": {"5": 100.5}}, InvalidRequestError, "logit_bias"),
        ({"logit_bias": {"5": "high"}}, InvalidRequestError, "logit_bias"),
        ({"logit_bias": [5]}, InvalidRequestError, "logit_bias"),
        ({"presence_penalty": 2.5}, InvalidRequestError, "presence_penalty"),
        ({"frequency_penalty": -3}, InvalidRequestError, "frequency_penalty"),
        ({"repetition_penalty": 0}, InvalidRequestError, "repetition_penalty"),
        ({"repetition_penalty": -1.0}, InvalidRequestError, "repetition_penalty"),
        ({"stop_token_ids": [512]}, InvalidRequestError, "stop_token_ids"),
        ({"stop_token_ids": [-1]}, InvalidRequestError, "stop_token_ids"),
        ({"stop_token_ids": ["7"]}, InvalidRequestError, "stop_token_ids.0"),
        ({"stop_token_ids": 7}, InvalidRequestError, "stop_token_ids"),
        ({"top_k": -2}, InvalidRequestError, "top_k"),
        ({"top_k": 1.5}, InvalidRequestError, "top_k"),
        ({"min_p": 1.5}, InvalidRequestError, "min_p"),
        ({"min_p": -0.1}, InvalidRequestError, "min_p"),
    ],
)  # fmt: skip
async def test_prepare_refuses(
    overrides: dict[str, Any], error: type[HeadraceError], param: str
) -> None:
    service, engine = make_service()
    with pytest.raises(error) as caught:
        service.prepare(request(**overrides))
    assert caught.value.param == param
    assert engine.prompts == {}


async def test_context_length_message_states_both_numbers() -> None:
    service, _ = make_service()
    with pytest.raises(ContextLengthExceededError) as caught:
        service.prepare(request(max_tokens=250))
    prompt = len(b"<user>Hi\n<assistant>")
    assert caught.value.message == (
        "This model's maximum context length is 256 tokens. However, you requested "
        f"{prompt + 250} tokens ({prompt} in the messages, 250 in the completion). "
        "Please reduce the length of the messages or completion."
    )


async def test_content_parts_and_roles_render() -> None:
    service, _ = make_service()
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]  # fmt: skip
    chat = service.prepare(request(messages=messages))
    prompt = bytes(chat.generation.prompts[0]).decode()
    assert prompt == "<system>Be brief.\n<user>a\nb\n<assistant>\n<tool>42\n<assistant>"


@pytest.fixture(scope="module")
def grammars(tmp_path_factory: pytest.TempPathFactory) -> GrammarCompiler:
    """Real grammars, over a tiny real tokenizer (the fake engine ignores them anyway)."""
    tokenizer = Tokenizer.from_path(make_tokenizer_dir(tmp_path_factory.mktemp("tokenizer")))
    return GrammarCompiler(tokenizer)


@pytest.mark.parametrize(
    ("model_format", "forced_format"),
    [
        ("hermes", "hermes"),
        ("generic", "generic"),
        ("llama3_json", "hermes"),
        ("mistral", "hermes"),
    ],
)
async def test_forced_calls_are_written_and_read_in_a_format_a_grammar_writes(
    grammars: GrammarCompiler, model_format: str, forced_format: str
) -> None:
    service = make_chat_service(
        FakeEngine(max_model_len=4096),
        grammars=grammars,
        tool_call_format=TOOL_CALL_FORMATS[model_format],
    )
    free = service.prepare(request(tools=[WEATHER_TOOL]))
    assert free.tool_call_format is TOOL_CALL_FORMATS[model_format]
    assert free.generation.params.grammar is None
    forced = service.prepare(request(tools=[WEATHER_TOOL], tool_choice="required"))
    assert forced.tool_call_format is TOOL_CALL_FORMATS[forced_format]
    assert forced.generation.params.grammar is not None


async def test_a_request_runs_at_the_priority_it_was_prepared_at() -> None:
    engine = FakeEngine()
    engine.waiting = engine.batch_waiting = 0
    chat = make_chat_service(engine, max_waiting=1)
    request = parse_chat_request(orjson.dumps(chat_body(max_tokens=2)))
    online = await chat.complete(chat.prepare(request))
    engine.waiting = 5  # interactive requests wait: online is refused, batch is not
    with pytest.raises(EngineOverloadedError):
        chat.prepare(request)
    batch = await chat.complete(chat.prepare(request, Priority.BATCH))
    assert [engine.priorities[r.id] for r in (online, batch)] == [
        Priority.INTERACTIVE,
        Priority.BATCH,
    ]
