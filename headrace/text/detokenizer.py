"""Token ids in, final text out, one step at a time.

Decoding the whole sequence at every step costs O(n) per token. Instead, as in vLLM, only a
window of recent tokens is decoded: `ids[prefix:]`, where `ids[prefix:read]` are tokens whose text
is already out and serve as context (a decoder may render a token differently at the start of a
text, e.g. sentencepiece's leading space), and `ids[read:]` are new. The window slides forward
whenever its text ends cleanly, so it stays a few tokens long and each step costs O(1).

Byte-level tokens can split a multi-byte character; the decoder then renders the unfinished bytes
as U+FFFD. Text before a trailing run of U+FFFD is final and goes out; the run is held until later
tokens complete the character. At `flush()` a still-unfinished character is dropped: a
generation cut off by max_tokens inside a character ends on the characters before it, not on
U+FFFD. So, when no stop string matched, the streamed text is `decode(all tokens)` less any
trailing U+FFFD. (A real U+FFFD generated at the very end cannot be told from an unfinished
character by its text, and is dropped alike; one followed by more text comes out.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from headrace.text.stop_matcher import StopMatcher

__all__ = ["DecodeFn", "IncrementalDetokenizer"]

# Token ids to text, special tokens skipped: `Tokenizer.decode`.
DecodeFn = Callable[[Sequence[int]], str]

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turns a growing sequence of generated token ids into final text, honouring stop strings.

    Concatenating every `push()` result and the `flush()` result gives `decode(all tokens)`, cut
    just before the first stop string (see `StopMatcher` for which one is first), without a
    trailing unfinished character.
    """

    def __init__(
        self, decode: DecodeFn, stop: Sequence[str] = (), *, include_stop: bool = False
    ) -> None:
        # Decodes a window of token ids.
        self._decode = decode
        # Holds back text that could be the start of a stop string; include_stop: the text
        # ends with the stop string that matched, rather than just before it.
        self._matcher = StopMatcher(stop, include=include_stop)
        # Every token id pushed so far.
        self._ids: list[int] = []
        # Start of the decoding window.
        self._prefix = 0
        # Tokens before this one have all their text out (or held only by the matcher).
        self._read = 0
        # Characters of the window's text already sent on to the matcher (or context text).
        self._sent = 0

    @property
    def stopped(self) -> bool:
        """True once a stop string matched; later pushes return nothing."""
        return self._matcher.stopped

    def push(self, token_ids: Sequence[int]) -> str:
        """Adds generated tokens; returns the text that is now final."""
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        return self._matcher.feed(self._step())

    def flush(self) -> str:
        """At the end of generation: everything still held back (empty if a stop string matched),
        less the bytes of a character left unfinished."""
        if self.stopped:
            return ""
        text = self._decode(self._ids[self._prefix :])
        rest = text[self._sent :].rstrip(_REPLACEMENT)
        self._sent = max(self._sent, len(text))
        return self._matcher.feed(rest, final=True)

    def _step(self) -> str:
        """Decodes the window; returns its new final text and slides it forward when it can."""
        text = self._decode(self._ids[self._prefix :])
        stable = text.rstrip(_REPLACEMENT)
        new = stable[self._sent :]
        self._sent = max(self._sent, len(stable))
        if new and len(stable) == len(text):
            # Everything decoded is final: the tokens just read become the next window's context.
            self._prefix, self._read = self._read, len(self._ids)
            self._sent = len(self._decode(self._ids[self._prefix : self._read]))
        return new
