"""``POST /v1/messages/count_tokens`` on the mock server: a deterministic estimate, not a tokenizer.

``input_tokens = 3 + 4 per message + ceil(characters / 4)``, where the characters are
those of every string value (not key) under ``system``, ``messages`` and ``tools``.
Tests can compute the expected count by hand; the real API's count differs.
"""

from __future__ import annotations

from typing import Any

from ._answers import Answer, ApiError, json_answer, parse_json_object

__all__ = ["count_tokens", "estimate_tokens"]


def _characters(value: Any) -> int:
    """Characters of the strings in a JSON value, walked without recursion (the body is untrusted)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def estimate_tokens(params: dict[str, Any]) -> int:
    """The mock's token count for Messages parameters (see the module docstring)."""
    messages = params.get("messages")
    n_messages = len(messages) if isinstance(messages, list) else 0
    characters = sum(_characters(params.get(key)) for key in ("system", "messages", "tools"))
    return 3 + 4 * n_messages + -(-characters // 4)


def count_tokens(body: bytes) -> Answer:
    params = parse_json_object(body)
    if not isinstance(params.get("model"), str):
        raise ApiError(400, "invalid_request_error", "model: Field required")
    if not isinstance(params.get("messages"), list):
        raise ApiError(400, "invalid_request_error", "messages: Field required")
    return json_answer({"input_tokens": estimate_tokens(params)})
