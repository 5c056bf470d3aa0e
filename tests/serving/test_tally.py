"""Each request the services run hands one record to the observer as it ends, however it ends."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import orjson
import pytest

from headrace.engine.outputs import Priority
from headrace.errors import HeadraceError
from headrace.serving import RequestRecord, Services, parse_chat_request, parse_completion_request
from tests.fakes import EOS, MODEL_NAMES, REPLY, FakeEngine, FakeServed, chat_body
from tests.guide import WEATHER_TOOL


def make_services(
    engine: FakeEngine | None = None, keep_text: bool = False
) -> tuple[Services, list[RequestRecord]]:
    records: list[RequestRecord] = []
    served = FakeServed(engine=engine or FakeEngine())
    return Services.of(served, observe=records.append, keep_text=keep_text), records


def chat(services: Services, priority: Priority = Priority.INTERACTIVE, **body: Any) -> Any:
    return services.chat.prepare(parse_chat_request(orjson.dumps(chat_body(**body))), priority)


@pytest.mark.parametrize("priority", list(Priority))
async def test_a_whole_chat(priority: Priority) -> None:
    services, records = make_services()
    completion = await services.chat.complete(chat(services, priority))
    (record,) = records
    assert record.request_id == completion.id
    assert (record.model, record.endpoint, record.priority) == (MODEL_NAMES[0], "chat", priority)
    assert record.prompt_tokens == completion.usage.prompt_tokens
    assert record.completion_tokens == completion.usage.completion_tokens == len(REPLY) + 1
    assert record.cached_tokens == 0
    assert record.finish_reasons == ("stop",)
    assert record.queue_s == 0.0  # the fake engine's
    assert record.ttft_s is not None and record.prefill_s is not None
    assert record.decode_s is not None and record.e2e_s >= record.ttft_s + record.decode_s
    assert len(record.inter_token_s) == len(REPLY) and min(record.inter_token_s) >= 0
    assert record.prompts is None and record.outputs is None


async def test_n_choices_each_with_its_finish_and_intervals() -> None:
    services, records = make_services()
    await services.chat.complete(chat(services, n=3, max_tokens=4))
    (record,) = records
    assert record.finish_reasons == ("length",) * 3
    assert len(record.inter_token_s) == 3 * 3  # each sequence: 4 outputs, 3 intervals
    assert record.completion_tokens == 12


async def test_a_stream_closed_early_ends_in_abort() -> None:
    services, records = make_services(FakeEngine(step_delay=0.001))
    async with aclosing(services.chat.stream(chat(services, n=2, stream=True))) as chunks:
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        assert not records  # the request goes on until the stream is closed
    (record,) = records
    assert record.finish_reasons == ("abort", "abort")
    assert 0 < record.completion_tokens < 2 * len(REPLY)


async def test_an_engine_failure_ends_in_error() -> None:
    services, records = make_services(FakeEngine(raise_after=2))
    with pytest.raises(RuntimeError):
        await services.chat.complete(chat(services))
    (record,) = records
    assert record.finish_reasons == ("error",)
    assert record.completion_tokens == 2


async def test_an_engine_abort_ends_in_error() -> None:
    services, records = make_services(FakeEngine(abort_after=2))
    with pytest.raises(HeadraceError):
        await services.chat.complete(chat(services))
    assert records[0].finish_reasons == ("error",)


async def test_completions_and_their_text() -> None:
    services, records = make_services(keep_text=True)
    body = {"model": MODEL_NAMES[1], "prompt": ["one", "two"], "max_tokens": 5}
    await services.completions.complete(
        services.completions.prepare(parse_completion_request(orjson.dumps(body)))
    )
    (record,) = records
    assert (record.model, record.endpoint) == (MODEL_NAMES[1], "completions")
    assert record.finish_reasons == ("length", "length")
    assert record.prompts == ("one", "two")
    assert record.outputs == (REPLY[:5], REPLY[:5])


async def test_a_chat_reply_that_calls_tools_ends_in_tool_calls() -> None:
    call = b'<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    services, records = make_services(FakeEngine([*call, EOS], max_model_len=4096))
    await services.chat.complete(chat(services, tools=[WEATHER_TOOL]))
    assert records[0].finish_reasons == ("tool_calls",)
