"""The services a served model answers with, built once from what is served."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from headrace.config import ServerConfig
from headrace.engine.client import EngineClient
from headrace.serving.chat import ChatService
from headrace.serving.completions import CompletionService
from headrace.serving.models import ModelCatalog
from headrace.serving.sampling import ModelLimits, Sampling
from headrace.serving.sampling_defaults import SamplingDefaults
from headrace.serving.tally import Observer
from headrace.serving.tokenize import TokenizeService
from headrace.serving.tokenizer import TokenizerLike
from headrace.text import ToolCallFormat
from headrace.text.grammar import GrammarCompiler

__all__ = ["Served", "Services"]


class Served(Protocol):
    """What is served; `headrace.serving.runtime.Runtime` is one."""

    @property
    def engine(self) -> EngineClient: ...

    @property
    def tokenizer(self) -> TokenizerLike: ...

    @property
    def model_names(self) -> Sequence[str]:
        """Names clients may use for the model, in listing order."""
        ...

    @property
    def grammars(self) -> GrammarCompiler | None:
        """Compiles grammars for constrained decoding; None turns it off."""
        ...

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """What requests get for the sampling parameters they leave out."""
        ...


@dataclass(frozen=True)
class Services:
    # The names clients may ask for.
    models: ModelCatalog
    # /v1/chat/completions.
    chat: ChatService
    # /v1/completions.
    completions: CompletionService
    # /tokenize and /detokenize.
    tokens: TokenizeService

    @classmethod
    def of(
        cls,
        served: Served,
        *,
        tool_call_format: ToolCallFormat | None = None,
        max_waiting: int = ServerConfig.max_waiting,
        observe: Observer | None = None,
        keep_text: bool = False,
    ) -> Services:
        """The services of `served`; tool_call_format: how replies are read for tool calls
        (None lets the chat template tell); max_waiting: interactive requests that may wait
        for the engine before more are refused; observe: takes the record of every request
        as it ends, batch ones too (None: nobody); keep_text: records carry the prompts' and
        the outputs' text."""
        models = ModelCatalog(served.model_names)
        engine, tokenizer = served.engine, served.tokenizer
        limits = ModelLimits(engine.max_model_len, engine.vocab_size, tokenizer.eos_token_ids)
        sampling = Sampling(limits, served.sampling_defaults)
        chat = ChatService(
            engine,
            tokenizer,
            models,
            sampling,
            grammars=served.grammars,
            tool_call_format=tool_call_format,
            max_waiting=max_waiting,
            observe=observe,
            keep_text=keep_text,
        )
        completions = CompletionService(
            engine,
            tokenizer,
            models,
            sampling,
            max_waiting=max_waiting,
            observe=observe,
            keep_text=keep_text,
        )
        tokens = TokenizeService(tokenizer, models, sampling, engine.max_model_len)
        return cls(models=models, chat=chat, completions=completions, tokens=tokens)
