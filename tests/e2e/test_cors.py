"""A web page on another origin calls the real server from headless chromium: it streams a
chat when its origin is allowed (--allowed-origins), and the browser blocks it otherwise."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import headless
from tests.e2e.conftest import API_KEY, MODEL_NAMES, running_server

pytestmark = pytest.mark.e2e

# Streams a chat from the page's script, as a browser app would; calls back with what it read.
STREAM_CHAT = """
const [url, key, model, done] = arguments;
fetch(url + "/v1/chat/completions", {
  method: "POST",
  headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
  body: JSON.stringify({model, messages: [{role: "user", content: "Say hi."}],
                        max_tokens: 8, stream: true}),
}).then(async (response) => {
  const text = await response.text();
  done({status: response.status, requestId: response.headers.get("x-request-id"),
        events: text.split("\\n\\n").filter((event) => event.startsWith("data: ")).length});
}).catch((error) => done({error: String(error)}));
"""


@contextmanager
def page_server(directory: Path) -> Iterator[str]:
    """Serves `directory` over HTTP on loopback; yields its origin."""
    (directory / "index.html").write_text("<!doctype html><title>an app</title><p>an app</p>")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_of_an_allowed_origin_streams_and_another_is_blocked(
    tmp_path: Path, chromium: tuple[str, str]
) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "other").mkdir()
    with (
        page_server(tmp_path / "allowed") as allowed,
        page_server(tmp_path / "other") as other,
        running_server(tmp_path, "--enforce-eager", "--allowed-origins", allowed) as server,
    ):
        driver = headless(chromium)
        try:
            driver.set_script_timeout(120)
            results: dict[str, Any] = {}
            for name, origin in (("allowed", allowed), ("other", other)):
                driver.get(origin)
                results[name] = driver.execute_async_script(
                    STREAM_CHAT, server.url, API_KEY, MODEL_NAMES[0]
                )
        finally:
            driver.quit()
        log = server.log.read_text()
    streamed = results["allowed"]
    assert streamed.get("status") == 200, streamed
    assert streamed["events"] >= 3  # a role chunk, content, [DONE]
    assert streamed["requestId"].startswith("req_") and streamed["requestId"] in log
    assert "Failed to fetch" in results["other"].get("error", ""), results["other"]
