"""A long step of a server's start says every few seconds how long it has taken so far."""

from __future__ import annotations

import threading
import time

from headrace.model.progress import every_while


def test_it_says_while_the_block_runs_and_stops_with_it() -> None:
    said: list[float] = []
    enough = threading.Event()

    def say(seconds: float) -> None:
        said.append(seconds)
        if len(said) == 3:
            enough.set()

    with every_while(say, seconds=0.001):
        assert enough.wait(30)
    count = len(said)
    assert said == sorted(said) and said[0] > 0
    time.sleep(0.05)  # 50 ticks' time
    assert len(said) == count


def test_a_short_block_says_nothing() -> None:
    said: list[float] = []
    with every_while(said.append, seconds=60):
        pass
    assert said == []
