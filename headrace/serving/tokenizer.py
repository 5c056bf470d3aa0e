"""What serving needs from a tokenizer: `headrace.text.Tokenizer` fits, and so do test fakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from headrace.text import ToolCallFormat

__all__ = ["DetokenizerLike", "TokenizerLike"]


class DetokenizerLike(Protocol):
    """Streams one generated sequence's text; stop strings end it."""

    @property
    def stopped(self) -> bool:
        """A stop string matched: nothing more will come out."""
        ...

    def push(self, token_ids: list[int]) -> str:
        """Text made final by these tokens: whole characters, no part of a stop string."""
        ...

    def flush(self) -> str:
        """Whatever text is still held back, once generation has ended."""
        ...


class TokenizerLike(Protocol):
    """Renders conversations to prompt tokens and hands out detokenizers."""

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Tokens that end generation."""
        ...

    @property
    def tool_call_format(self) -> ToolCallFormat:
        """How the model writes tool calls, as its chat template suggests."""
        ...

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Prompt token ids, ending with the assistant's header (unless not
        `add_generation_prompt`), or inside the final message, its end-of-turn left out (if
        `continue_final_message`); `variables`: more for the template to read. ValueError if
        it cannot."""
        ...

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of a text prompt, framed as the model's tokenizer frames one (BOS first,
        where it adds one), unless not `add_special_tokens`."""
        ...

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """The text of `token_ids`, special tokens skipped (unless not `skip_special_tokens`)."""
        ...

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """Each token's string in the vocabulary."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for, even part of a character."""
        ...

    def detokenizer(
        self,
        stop: Sequence[str] = (),
        *,
        keep_special: Sequence[str] = (),
        include_stop: bool = False,
    ) -> DetokenizerLike:
        """A fresh detokenizer for one sequence, cutting at the first of `stop`.

        keep_special: special tokens whose text is kept (tool-call markers).
        include_stop: the text ends with the stop string that matched, not before it.
        """
        ...
