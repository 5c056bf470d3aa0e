"""The progress bar of an offline batch, on stderr: requests done of the total, the completion
tokens a second so far, failed requests, and the time left at the rate so far.

While it shows, log records go through it, so they do not break the bar.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from types import TracebackType

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from headrace.batch.offline import LineDone

__all__ = ["ProgressBar"]


class ProgressBar:
    """A context manager; `update` is an `OnDone` for run_offline."""

    def __init__(self, total: int) -> None:
        # Requests in the batch.
        self._total = total
        # Tokens generated so far, and requests failed so far.
        self._completion_tokens = 0
        self._failed = 0
        # What closes the bar and ends the log redirection.
        self._exit = ExitStack()
        # The bar, while it shows.
        self._bar: tqdm[None] | None = None

    def __enter__(self) -> ProgressBar:
        self._exit.enter_context(logging_redirect_tqdm())
        self._bar = self._exit.enter_context(
            tqdm(total=self._total, desc="batch", unit="req", file=sys.stderr, dynamic_ncols=True)
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._exit.close()
        self._bar = None

    def update(self, done: LineDone) -> None:
        """One more request done."""
        assert self._bar is not None, "the bar shows only inside its with block"
        self._completion_tokens += done.completion_tokens
        self._failed += done.failed
        elapsed = self._bar.format_dict["elapsed"]
        rate = self._completion_tokens / elapsed if elapsed > 0 else 0.0
        failed = f", {self._failed} failed" if self._failed else ""
        self._bar.set_postfix_str(f"{rate:.1f} tok/s{failed}", refresh=False)
        self._bar.update()
