"""The streaming guide's function-calling tool, shared by the tests that use it."""

from __future__ import annotations

from typing import Any

# get_weather's parameters, as the guide writes them.
WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "City name"}},
    "required": ["location"],
}
# The guide's tool, as `tools` carries it.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather for a location",
        "parameters": WEATHER_PARAMETERS,
    },
}
