"""The only code that knows HTTP: the app, its routes, SSE framing, auth and error envelopes."""

from headrace.api.app import Served, create_app

__all__ = ["Served", "create_app"]
