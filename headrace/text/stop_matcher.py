"""Stop strings over streamed text: hold back what could still become one, cut at the first match.

The first stop string is the one that is complete earliest while reading the text character by
character (the moment generation would stop); of several complete at the same character, the
longest. Defined this way, the result does not depend on how the text was split into chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher", "partial_match_length"]


class StopMatcher:
    """Feeds text through, never letting out any part of a stop string."""

    def __init__(self, stop: Sequence[str], *, include: bool = False) -> None:
        # The stop strings; empty ones can never match and are dropped.
        self._stop: tuple[str, ...] = tuple(dict.fromkeys(s for s in stop if s))
        # Whether the text let out ends with the stop string that matched (vLLM's
        # include_stop_str_in_output) rather than just before it.
        self._include = include
        # Text received but not let out yet: it ends with the start of some stop string.
        self._held = ""
        # Set once a stop string matched; nothing is let out after that.
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """True once a stop string has matched."""
        return self._stopped

    def feed(self, text: str, *, final: bool = False) -> str:
        """The part of `text` (after what was held back before) that is now safe to let out.

        With `final`, no more text follows: what was held back goes out unless it completes a stop
        string here.
        """
        if self._stopped:
            return ""
        buffer = self._held + text
        if not self._stop:
            return buffer
        match = self._first_match(buffer)
        if match is not None:
            self._stopped = True
            self._held = ""
            start, end = match
            return buffer[: end if self._include else start]
        keep = 0 if final else partial_match_length(buffer, self._stop)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def _first_match(self, buffer: str) -> tuple[int, int] | None:
        """Where the first stop string in `buffer` begins and ends, or None."""
        best: tuple[int, int] | None = None  # (end, start) of the best match so far
        for stop in self._stop:
            start = buffer.find(stop)
            if start >= 0 and (best is None or (start + len(stop), start) < best):
                best = (start + len(stop), start)
        return None if best is None else (best[1], best[0])


def partial_match_length(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that some marker starts with (a whole marker excluded).

    That much of `text` must be held back: the next text may complete the marker.
    """
    longest = 0
    for marker in markers:
        for length in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:length]):
                longest = length
                break
    return longest
