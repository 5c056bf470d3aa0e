"""Reading an SSE body back, checking its framing on the way."""

from __future__ import annotations

from typing import Any

import httpx
import orjson


def events(response: httpx.Response, *, done: bool = True) -> list[dict[str, Any]]:
    """The JSON events of a whole SSE body; with `done`, it must end with [DONE]."""
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    body = response.text
    assert body.endswith("\n\n")
    frames = body.removesuffix("\n\n").split("\n\n")
    assert all(frame.startswith("data: ") for frame in frames)
    payloads = [frame.removeprefix("data: ") for frame in frames]
    assert (payloads[-1] == "[DONE]") is done
    assert "[DONE]" not in payloads[:-1]
    return [orjson.loads(p) for p in (payloads[:-1] if done else payloads)]
