"""The engine's log-probabilities as OpenAI writes them: chat's entries, completions' columns.

A token's text is its bytes as UTF-8; bytes that are not whole characters (byte-level tokens
that split one) are written as \\xNN escapes, so no two tokens share a text.
"""

from __future__ import annotations

from collections.abc import Sequence

from headrace.engine.outputs import PositionLogprobs
from headrace.engine.outputs import TokenLogprob as EngineTokenLogprob
from headrace.serving.responses import CompletionLogprobs, TokenLogprob, TopLogprob
from headrace.serving.tokenizer import TokenizerLike

__all__ = ["LogprobWriter"]


class LogprobWriter:
    def __init__(self, tokenizer: TokenizerLike) -> None:
        self._tokenizer = tokenizer
        # Token id -> its text and bytes, as looked up so far.
        self._tokens: dict[int, tuple[str, bytes]] = {}

    def chat(self, positions: Sequence[PositionLogprobs]) -> list[TokenLogprob]:
        """Chat's entries: each token with its bytes and its top alternatives."""
        entries = []
        for position in positions:
            text, raw = self._token(position.chosen.token_id)
            top = [self._top(alternative) for alternative in position.top]
            entries.append(
                TokenLogprob(
                    token=text, logprob=position.chosen.logprob, bytes=list(raw), top_logprobs=top
                )
            )
        return entries

    def completion(
        self,
        token_ids: Sequence[int],
        positions: Sequence[PositionLogprobs | None],
        text_offset: int,
    ) -> CompletionLogprobs:
        """Completions' columns for these tokens, whose text begins at `text_offset`; a token
        without log-probabilities (an echoed prompt's first) gets null."""
        tokens, offsets = [], []
        for token_id in token_ids:
            text, raw = self._token(token_id)
            tokens.append(text)
            offsets.append(text_offset)
            text_offset += _characters_begun(raw)
        return CompletionLogprobs(
            tokens=tokens,
            token_logprobs=[None if p is None else p.chosen.logprob for p in positions],
            top_logprobs=[
                None if p is None else {self._token(t.token_id)[0]: t.logprob for t in p.top}
                for p in positions
            ],
            text_offset=offsets,
        )

    def text_length(self, token_ids: Sequence[int]) -> int:
        """Characters of text these tokens make, counting each character at the token that
        begins it."""
        return sum(_characters_begun(self._token(token_id)[1]) for token_id in token_ids)

    def _top(self, alternative: EngineTokenLogprob) -> TopLogprob:
        text, raw = self._token(alternative.token_id)
        return TopLogprob(token=text, logprob=alternative.logprob, bytes=list(raw))

    def _token(self, token_id: int) -> tuple[str, bytes]:
        found = self._tokens.get(token_id)
        if found is None:
            raw = self._tokenizer.token_bytes(token_id)
            found = self._tokens[token_id] = (raw.decode(errors="backslashreplace"), raw)
        return found


def _characters_begun(raw: bytes) -> int:
    # UTF-8 continuation bytes are 10xxxxxx; every other byte begins a character
    return sum(1 for byte in raw if byte & 0xC0 != 0x80)
