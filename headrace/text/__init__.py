"""Text: the tokenizer, chat templates, and streaming detokenization with stop strings."""

from headrace.text.chat_template import ChatTemplateError
from headrace.text.detokenizer import IncrementalDetokenizer
from headrace.text.tokenizer import Tokenizer

__all__ = ["ChatTemplateError", "IncrementalDetokenizer", "Tokenizer"]
