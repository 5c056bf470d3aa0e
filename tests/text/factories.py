"""A tiny real tokenizer on disk, for tests that need one (text, serving, api).

`make_tokenizer_dir(tmp_path)` writes a Hugging Face model directory holding a byte-level BPE
trained on a few sentences (small enough that emoji and CJK characters split across tokens), with
special tokens <|endoftext|> (0), <|im_start|> (1), <|im_end|> (2) and <s> (3, BOS), then any
`extra_special` ones (4, 5, ...), a ChatML chat template that starts with the BOS, and a
generation_config.json whose EOS ids are 2 and 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "BOS_ID",
    "CHATML_WITH_BOS",
    "ENDOFTEXT_ID",
    "IM_END_ID",
    "IM_START_ID",
    "make_tokenizer_dir",
]

ENDOFTEXT_ID = 0
IM_START_ID = 1
IM_END_ID = 2
BOS_ID = 3

CHATML_WITH_BOS = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Hello there, how are you today?",
    "Streaming text one token at a time is the heart of a chat server.",
    "Stop strings end the answer early; the rest is never sent.",
    "def add(a, b):\n    return a + b\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024.",
    "Emoji: 😀 🎉 👍🏽 and CJK: 你好\uff0c世界。日本語のテキスト。",
    "Ünïcödé àccénts, naïve café, Grüße.",
]


def make_tokenizer_dir(
    path: Path,
    *,
    chat_template: str | None = CHATML_WITH_BOS,
    template_file: bool = False,
    extra_special: Sequence[str] = (),
) -> Path:
    """Writes the tiny tokenizer into `path` (created if needed) and returns `path`.

    `chat_template=None` writes no template at all; `template_file` puts it in
    chat_template.jinja instead of tokenizer_config.json.
    """
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", *extra_special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer.save(str(path / "tokenizer.json"))

    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "<|im_end|>",
        "model_max_length": 2048,
    }
    if chat_template is not None and template_file:
        (path / "chat_template.jinja").write_text(chat_template)
    elif chat_template is not None:
        config["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    generation = {"bos_token_id": BOS_ID, "eos_token_id": [IM_END_ID, ENDOFTEXT_ID]}
    (path / "generation_config.json").write_text(json.dumps(generation))
    return path
