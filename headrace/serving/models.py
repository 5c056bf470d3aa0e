"""The served model names and their OpenAI model objects."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from headrace.errors import ModelNotFoundError
from headrace.serving.responses import ModelCard, ModelList

__all__ = ["ModelCatalog"]


class ModelCatalog:
    """Every name the one loaded model answers to, in the order given."""

    def __init__(self, names: Sequence[str], created: int | None = None) -> None:
        if not names:
            raise ValueError("at least one served model name is needed")
        # Names clients may use.
        self.names = tuple(names)
        # When serving began, in Unix seconds: every card's `created`.
        self._created = int(time.time()) if created is None else created

    def require(self, name: str) -> None:
        """Raises ModelNotFoundError unless `name` is served."""
        if name not in self.names:
            raise ModelNotFoundError(name)

    def card(self, name: str) -> ModelCard:
        self.require(name)
        return ModelCard(id=name, object="model", created=self._created, owned_by="headrace")

    def list(self, only: Collection[str] | None = None) -> ModelList:
        """The served models; with `only`, just those among them."""
        names = self.names if only is None else [name for name in self.names if name in only]
        return ModelList(object="list", data=[self.card(name) for name in names])
