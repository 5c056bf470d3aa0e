"""Against the real SmolLM2-135M-Instruct GGUF; skipped when the file is not here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from headrace.text import Tokenizer
from headrace.text.tokenizer import _gguf_metadata

# What transformers renders for [{"role": "user", "content": "Hi 😀"}] with SmolLM2's template.
HI_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nHi 😀<|im_end|>\n<|im_start|>assistant\n"
)


def test_loads_tokenizer_metadata(smollm_tokenizer: Tokenizer) -> None:
    assert smollm_tokenizer.eos_token_ids == frozenset({2})
    assert smollm_tokenizer.vocab_size == 49152


def test_chat_template_comes_from_the_file(smollm_tokenizer: Tokenizer) -> None:
    ids = smollm_tokenizer.apply_chat_template([{"role": "user", "content": "Hi 😀"}])
    assert ids == smollm_tokenizer.encode(HI_PROMPT)
    assert ids[:2] == [1, 9690]  # <|im_start|> system: no BOS in front of it
    assert ids[-4:] == [1, 520, 9531, 198]  # <|im_start|> assistant \n


def test_streams_emoji_and_cjk(smollm_tokenizer: Tokenizer) -> None:
    text = "Sure! 😀👍🏽 你好\uff0c世界。 Grüße, naïve café.\n```python\nprint(42)\n```"
    ids = smollm_tokenizer.encode(text)
    det = smollm_tokenizer.detokenizer(stop=["print(4"])
    out = [det.push([token]) for token in ids]
    out.append(det.flush())
    assert "\ufffd" not in "".join(out)
    assert "".join(out) == text[: text.index("print(4")]
    assert det.stopped


def test_metadata_reader_fallback_agrees(
    monkeypatch: pytest.MonkeyPatch, default_model_path: Path
) -> None:
    fast = _gguf_metadata(default_model_path)
    monkeypatch.setitem(sys.modules, "transformers.integrations.gguf.reader", None)
    slow = _gguf_metadata(default_model_path)
    for key in (
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.chat_template",
    ):
        assert slow[key] == fast[key]


@pytest.mark.parametrize("text", ["Héllo wörld ✓ 日本 😀", " leading space\nnew line"])
def test_token_bytes_join_into_the_text_even_through_split_characters(
    smollm_tokenizer: Tokenizer, text: str
) -> None:
    ids = smollm_tokenizer.encode(text)
    pieces = [smollm_tokenizer.token_bytes(token) for token in ids]
    assert b"".join(pieces).decode() == text
    assert any(_is_partial(piece) for piece in pieces) == ("😀" in text)


def test_special_tokens_are_their_text(smollm_tokenizer: Tokenizer) -> None:
    [token] = smollm_tokenizer.encode("<|im_start|>")
    assert smollm_tokenizer.token_bytes(token) == b"<|im_start|>"


def _is_partial(piece: bytes) -> bool:
    try:
        piece.decode()
    except UnicodeDecodeError:
        return True
    return False
