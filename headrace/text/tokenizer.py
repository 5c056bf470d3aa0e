"""The model's tokenizer: text to token ids and back, chat prompts, and streaming detokenizers.

Loaded from a local Hugging Face model directory (tokenizer.json, tokenizer_config.json, maybe
chat_template.jinja and generation_config.json) or from a local .gguf file, whose metadata holds
the vocabulary, merges, special token ids and chat template. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from headrace.model.gguf_reader import read_gguf
from headrace.text.chat_template import check_chat_template, render_chat, template_source
from headrace.text.detokenizer import IncrementalDetokenizer
from headrace.text.tool_call_format import (
    ToolCallFormat,
    detect_tool_call_format,
    template_knows_tools,
)

__all__ = ["Tokenizer"]

# GPT-2's byte-level alphabet, character to byte: the printable bytes stand for themselves, the
# others for characters from U+0100 on (transformers' bytes_to_unicode).
_PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
_BYTE_OF_CHAR = {chr(b): b for b in _PRINTABLE} | {
    chr(256 + n): b for n, b in enumerate(b for b in range(256) if b not in _PRINTABLE)
}
# SentencePiece's byte fallback tokens: <0x0A>.
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")

# GGUF metadata keys of tokens that end generation (llama.cpp's "end of generation" set).
_GGUF_EOS_KEYS = (
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
)


@dataclass(frozen=True)
class Tokenizer:
    # The transformers tokenizer, fast (backed by `tokenizers`): chat template, special tokens.
    hf: PreTrainedTokenizerBase
    # Every token id that ends generation: the tokenizer's EOS and the model's.
    eos_token_ids: frozenset[int]

    @classmethod
    def from_path(cls, path: str | Path, chat_template: str | None = None) -> Tokenizer:
        """Loads from a local model directory or .gguf file; with `chat_template` (a Jinja
        template) in place of the model's, ValueError unless it renders a one-message chat."""
        path = Path(path)
        if path.is_file() and path.suffix == ".gguf":
            tokenizer = _from_gguf(path)
        elif path.is_dir():
            tokenizer = _from_hf_dir(path)
        else:
            raise FileNotFoundError(f"no model directory or .gguf file at {path}")
        if chat_template is not None:
            tokenizer.hf.chat_template = chat_template
            check_chat_template(tokenizer.hf)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        """How many token ids the tokenizer knows, added tokens included."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS; special-token text maps to its special token."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of a text prompt as the tokenizer frames one: with the special tokens its
        post-processor adds (Llama 3's BOS, none for SmolLM2's), as vLLM's completions do;
        without them if not `add_special_tokens`."""
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """The text of `token_ids`, special tokens (and EOS tokens) skipped, unless not
        `skip_special_tokens`."""
        if not skip_special_tokens:
            return self._backend.decode(list(token_ids), skip_special_tokens=False)
        ids = [token for token in token_ids if token not in self.eos_token_ids]
        return self._backend.decode(ids, skip_special_tokens=True)

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """Each token's string in the vocabulary, as stored (byte-level BPE's "Ġ" for a
        space): Hugging Face's convert_ids_to_tokens. ValueError for an id outside it."""
        strings = []
        for token in token_ids:
            string = self._backend.id_to_token(token)
            if string is None:
                raise ValueError(f"no token {token} in the vocabulary")
            strings.append(string)
        return strings

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Prompt token ids for a conversation, ending with the assistant's header (unless not
        `add_generation_prompt`), or inside the final message (if `continue_final_message`);
        `variables`: more for the template to read (chat_template.render_chat).

        The template adds BOS itself if the model wants one; encoding adds nothing more.
        Raises ChatTemplateError when the template refuses the conversation.
        """
        rendered = render_chat(
            self.hf,
            messages,
            tools,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            variables=variables,
        )
        return self.encode(rendered)

    @property
    def supports_tools(self) -> bool:
        """Whether the chat template renders tools itself (else headrace's generic format does)."""
        return template_knows_tools(template_source(self.hf))

    @property
    def tool_call_format(self) -> ToolCallFormat:
        """The tool-call format the model writes, told from its chat template (see
        `headrace.text.tool_call_format`); `generic` when the template knows no tools."""
        specials = [token.content for token in self.hf.added_tokens_decoder.values()]
        return detect_tool_call_format(template_source(self.hf), specials)

    def detokenizer(
        self,
        stop: Sequence[str] = (),
        *,
        keep_special: Collection[str] = (),
        include_stop: bool = False,
    ) -> IncrementalDetokenizer:
        """A fresh streaming detokenizer for one generated sequence.

        Special tokens are skipped, except those whose text is in `keep_special` (a tool-call
        parser's `markers`, such as Mistral's `[TOOL_CALLS]`): their text comes out. The text
        ends before the first of `stop` that matches, or with it given `include_stop`.
        """
        kept = {
            token_id: token.content
            for token_id, token in self.hf.added_tokens_decoder.items()
            if token.special
            and token.content in keep_special
            and token_id not in self.eos_token_ids
        }
        decode = partial(self._decode_keeping, kept) if kept else self.decode
        return IncrementalDetokenizer(decode, stop, include_stop=include_stop)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for, even part of a character (GPT-2's byte-level tokens,
        SentencePiece's byte fallback); a special token's text."""
        piece = self._backend.id_to_token(token_id)
        if piece is None:
            return b""
        if token_id in self.hf.added_tokens_decoder:
            return piece.encode()
        if self._byte_level:
            return bytes(_BYTE_OF_CHAR.get(char, 0) for char in piece)
        if (byte := _BYTE_FALLBACK.fullmatch(piece)) is not None:
            return bytes([int(byte[1], 16)])
        return piece.replace("\u2581", " ").encode()  # SentencePiece writes spaces as U+2581

    @cached_property
    def _byte_level(self) -> bool:
        """Whether tokens are written as GPT-2's byte-level characters (one per byte)."""
        return isinstance(self._backend.decoder, tokenizers.decoders.ByteLevel)

    def _decode_keeping(self, kept: Mapping[int, str], token_ids: Sequence[int]) -> str:
        """`decode`, but the tokens in `kept` come out as their text."""
        parts: list[str] = []
        run: list[int] = []
        for token in token_ids:
            if token in kept:
                parts += [self.decode(run), kept[token]]
                run = []
            else:
                run.append(token)
        parts.append(self.decode(run))
        return "".join(parts)

    @property
    def _backend(self) -> tokenizers.Tokenizer:
        backend: tokenizers.Tokenizer = self.hf.backend_tokenizer
        return backend


def _from_hf_dir(path: Path) -> Tokenizer:
    hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not isinstance(getattr(hf, "backend_tokenizer", None), tokenizers.Tokenizer):
        raise ValueError(f"{path} has no fast (tokenizers) tokenizer")
    eos = _ids(hf.eos_token_id)
    generation_config = path / "generation_config.json"
    model_config = generation_config if generation_config.is_file() else path / "config.json"
    if model_config.is_file():
        eos |= _ids(json.loads(model_config.read_text()).get("eos_token_id"))
    return Tokenizer(hf, frozenset(eos))


def _from_gguf(path: Path) -> Tokenizer:
    # PreTrainedTokenizerFast rather than AutoTokenizer: the latter also rebuilds the model config
    # from the file with the slow `gguf` reader, which more than doubles the load time.
    hf = PreTrainedTokenizerFast.from_pretrained(
        str(path.parent), gguf_file=path.name, local_files_only=True
    )
    metadata = _gguf_metadata(path)
    eos = _ids(hf.eos_token_id)
    for key in _GGUF_EOS_KEYS:
        eos |= _ids(metadata.get(key))
    if hf.chat_template is None and isinstance(metadata.get("tokenizer.chat_template"), str):
        hf.chat_template = metadata["tokenizer.chat_template"]
    return Tokenizer(hf, frozenset(eos))


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """The file's tokenizer.* metadata, but for its arrays (the vocabulary and merges)."""
    metadata = read_gguf(path).metadata
    return {
        key: value
        for key, value in metadata.items()
        if key.startswith("tokenizer.") and not isinstance(value, list)
    }


def _ids(value: object) -> set[int]:
    """Token ids from a config value: an int, a list of ints, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, int) and not isinstance(item, bool)}
    return set()
