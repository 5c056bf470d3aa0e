"""vLLM's /tokenize and /detokenize: the tokens a prompt or a conversation becomes, exactly as
the completion routes would make them, and token ids back to text."""

from __future__ import annotations

from headrace.errors import InvalidRequestError
from headrace.serving.conversation import prompt_ending, template_messages, template_variables
from headrace.serving.models import ModelCatalog
from headrace.serving.protocol import DetokenizeRequest, TokenizeRequest
from headrace.serving.responses import DetokenizeResponse, TokenizeResponse
from headrace.serving.sampling import Sampling
from headrace.serving.tokenizer import TokenizerLike
from headrace.serving.tools import function_tools, template_tools

__all__ = ["TokenizeService"]


class TokenizeService:
    def __init__(
        self,
        tokenizer: TokenizerLike,
        models: ModelCatalog,
        sampling: Sampling,
        max_model_len: int,
    ) -> None:
        self._tokenizer = tokenizer
        self._models = models
        self._sampling = sampling
        self._max_model_len = max_model_len

    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        """The tokens of the request's prompt, or of its conversation; raises HeadraceError."""
        if request.model is not None:
            self._models.require(request.model)
        if (request.prompt is None) == (request.messages is None):
            raise InvalidRequestError("Give either 'prompt' or 'messages'.", param="messages")
        if request.prompt is not None:
            for param in (
                "add_generation_prompt",
                "continue_final_message",
                "chat_template_kwargs",
                "tools",
            ):
                if getattr(request, param) is not None:
                    raise _only_with(param, "messages")
            framed = request.add_special_tokens is not False
            tokens = self._tokenizer.encode_prompt(request.prompt, add_special_tokens=framed)
        else:
            assert request.messages is not None
            if request.add_special_tokens is not None:
                raise _only_with("add_special_tokens", "prompt")
            tools = function_tools(request.tools) if request.tools else None
            ending = prompt_ending(request.add_generation_prompt, request.continue_final_message)
            variables = template_variables(request.chat_template_kwargs)
            try:
                tokens = self._tokenizer.apply_chat_template(
                    template_messages(request.messages),
                    tools=template_tools(tools) if tools else None,
                    add_generation_prompt=ending.add_generation_prompt,
                    continue_final_message=ending.continue_final_message,
                    variables=variables,
                )
            except ValueError as error:  # the template refused the conversation
                raise InvalidRequestError(str(error), param="messages") from error
        strings = self._tokenizer.token_strings(tokens) if request.return_token_strs else None
        return TokenizeResponse(
            count=len(tokens), max_model_len=self._max_model_len, tokens=tokens, token_strs=strings
        )

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        """The text of the request's tokens; raises HeadraceError for an id outside the
        vocabulary."""
        if request.model is not None:
            self._models.require(request.model)
        tokens = [
            self._sampling.token_id(token, f"tokens.{index}", token)
            for index, token in enumerate(request.tokens)
        ]
        return DetokenizeResponse(prompt=self._tokenizer.decode(tokens, skip_special_tokens=False))


def _only_with(param: str, other: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{param}' applies only with '{other}'.", param=param)
