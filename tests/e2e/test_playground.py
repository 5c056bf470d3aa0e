"""The playground page in headless chromium against the real server: it lists the models,
streams replies with their TTFT and tokens/s, shows tool calls as such, and its Stop button ends
a long reply in the engine.

HEADRACE_SCREENSHOT=docs/playground.png keeps a screenshot of the page (docs/ shows it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.e2e.browser import headless
from tests.e2e.conftest import MODEL_NAMES, Server, running_server

pytestmark = pytest.mark.e2e

# How long a reply of a few dozen tokens may take on a busy 2-core machine.
REPLY_TIMEOUT_S = 120
# A tool the model is made to call (tool_choice "required").
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# Records the length of the last assistant turn's text each time the page changes the log.
WATCH_REPLIES = """
window.replyLengths = [];
new MutationObserver(() => {
  const turns = document.querySelectorAll(".turn.assistant .content");
  if (turns.length) window.replyLengths.push(turns[turns.length - 1].textContent.length);
}).observe(document.getElementById("log"), {childList: true, subtree: true});
"""


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without keys: a browser loads GET / with no Authorization header.
    Eager, as it starts in seconds and the page needs no speed."""
    with running_server(
        tmp_path_factory.mktemp("playground"), "--enforce-eager", keys=False
    ) as server:
        yield server


@pytest.fixture
def browser(open_server: Server, chromium: tuple[str, str]) -> Iterator[Chrome]:
    """Headless chromium on the playground, its models listed."""
    driver = headless(chromium)
    try:
        driver.get(open_server.url)
        wait(driver, 30).until(lambda d: len(Select(element(d, "model")).options) > 0)
        yield driver
    finally:
        driver.quit()


def wait(driver: Chrome, seconds: float) -> WebDriverWait[Chrome]:
    return WebDriverWait(driver, seconds, poll_frequency=0.05)


def element(driver: Chrome, id_: str) -> WebElement:
    return driver.find_element(By.ID, id_)


def fill(driver: Chrome, id_: str, value: str) -> None:
    field = element(driver, id_)
    field.clear()
    field.send_keys(value)


def send(driver: Chrome, message: str, *, max_tokens: int, temperature: float) -> WebElement:
    """Sends `message` with the settings; the assistant turn its reply streams into."""
    fill(driver, "max-tokens", str(max_tokens))
    fill(driver, "temperature", str(temperature))
    fill(driver, "message", message)
    element(driver, "send").click()
    return driver.find_elements(By.CSS_SELECTOR, ".turn.assistant")[-1]


def shown(driver: Chrome, turn: WebElement, class_name: str, seconds: float) -> WebElement:
    """The turn's element of `class_name`, once it shows."""

    def found(_: Chrome) -> list[WebElement]:
        return turn.find_elements(By.CLASS_NAME, class_name)

    return wait(driver, seconds).until(found)[0]


def reply_text(turn: WebElement) -> str:
    return str(turn.find_element(By.CLASS_NAME, "content").text)


def test_the_page_lists_the_models(browser: Chrome) -> None:
    options = Select(element(browser, "model")).options
    assert [option.text for option in options] == list(MODEL_NAMES)
    assert browser.title == "headrace playground"


def test_messages_stream_replies_with_their_speed(browser: Chrome) -> None:
    fill(browser, "system", "You are a helpful assistant.")
    browser.execute_script(WATCH_REPLIES)
    for question in ("What is the capital of France?", "What is it famous for?"):
        browser.execute_script("window.replyLengths = []")
        turn = send(browser, question, max_tokens=40, temperature=0)
        stats = shown(browser, turn, "stats", REPLY_TIMEOUT_S)
        assert reply_text(turn)
        lengths = browser.execute_script("return window.replyLengths")
        assert len(set(lengths) - {0}) >= 2, f"the reply came at once, not streamed: {lengths}"
        assert lengths == sorted(lengths)
        assert "TTFT" in stats.text and "tokens/s" in stats.text
        assert not turn.find_elements(By.CLASS_NAME, "error")
    # The second question went with the first and its answer.
    roles = browser.execute_script("return conversation.map((message) => message.role)")
    assert roles == ["user", "assistant", "user", "assistant"]
    if screenshot := os.environ.get("HEADRACE_SCREENSHOT"):
        browser.save_screenshot(screenshot)


def test_tool_calls_show_as_such(browser: Chrome) -> None:
    fill(browser, "tools", json.dumps([WEATHER_TOOL]))
    Select(element(browser, "tool-choice")).select_by_visible_text("required")
    turn = send(browser, "What is the weather in Paris?", max_tokens=60, temperature=0)
    shown(browser, turn, "stats", REPLY_TIMEOUT_S)
    (call,) = turn.find_elements(By.CLASS_NAME, "tool-call")
    assert call.find_element(By.CLASS_NAME, "name").text == "tool call: get_weather"
    assert "city" in json.loads(call.find_element(By.TAG_NAME, "pre").text)


def test_stop_ends_the_reply_in_the_engine(browser: Chrome, open_server: Server) -> None:
    turn = send(
        browser,
        "Write a very long story about a lighthouse keeper and a storm.",
        max_tokens=400,
        temperature=0.7,
    )
    wait(browser, REPLY_TIMEOUT_S).until(lambda _: len(reply_text(turn)) > 40)
    assert open_server.health()["running"] == 1
    element(browser, "stop").click()
    assert shown(browser, turn, "notice", 5).text == "Stopped."
    stopped_at = reply_text(turn)
    deadline = time.monotonic() + 5
    while open_server.health()["running"] != 0:
        assert time.monotonic() < deadline, "the engine still runs the stopped request"
        time.sleep(0.1)
    time.sleep(1)
    assert reply_text(turn) == stopped_at
    assert element(browser, "send").is_enabled()
