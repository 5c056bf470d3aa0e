"""A line every few seconds while a long step of a server's start runs: loading the weights,
building the C++ kernels, compiling the decode step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["PROGRESS_EVERY_S", "every_while"]

# Seconds between two lines saying a step goes on.
PROGRESS_EVERY_S = 10.0


@contextmanager
def every_while(say: Callable[[float], None], seconds: float = PROGRESS_EVERY_S) -> Iterator[None]:
    """Calls say(seconds so far) every `seconds` until the block ends, from a thread of its own;
    a block shorter than `seconds` says nothing."""
    started = time.perf_counter()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(seconds):
            say(time.perf_counter() - started)

    thread = threading.Thread(target=tick, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
