"""The chat message of DESIGN section 4, built in one place.

Every part of the platform that writes a message (the solver, the assistant-turn parser, a stored
`Step`, the exporters) builds it with `chat_message`, so the keys and the role rules never drift:

| role        | keeps                                   | always None                       |
|-------------|-----------------------------------------|-----------------------------------|
| `assistant` | content, reasoning_content, tool_calls  | tool_call_id, name                |
| `tool`      | content, tool_call_id, name             | reasoning_content, tool_calls     |
| `system`    | content                                 | the rest                          |
| `user`      | content                                 | the rest                          |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MESSAGE_KEYS", "ROLES", "chat_message", "tool_call"]

#: the roles a message may have, in DESIGN section 4
ROLES = ("system", "user", "assistant", "tool")
#: the keys of every message, in order
MESSAGE_KEYS = ("role", "content", "reasoning_content", "tool_calls", "tool_call_id", "name")


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One entry of an assistant message's `tool_calls` (arguments as JSON text).

    >>> tool_call("call_1", "get_entity", '{"entity_id": "e1"}')["function"]["name"]
    'get_entity'
    """
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_message(
    role: str,
    content: str | None = "",
    *,
    reasoning: str | None = None,
    tool_calls: Sequence[dict[str, Any]] | None = None,
    tool_call_id: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A DESIGN section 4 message; fields that do not belong to `role` are dropped to None.

    >>> chat_message("user", "Who?")
    {'role': 'user', 'content': 'Who?', 'reasoning_content': None, 'tool_calls': None, 'tool_call_id': None, 'name': None}
    >>> chat_message("tool", '{"id": "e1"}', tool_call_id="call_1", name="get_entity")["name"]
    'get_entity'
    >>> chat_message("robot", "hi")
    Traceback (most recent call last):
    ValueError: message role 'robot' is not one of system, user, assistant, tool
    """
    if role not in ROLES:
        raise ValueError(f"message role {role!r} is not one of {', '.join(ROLES)}")
    assistant, tool = role == "assistant", role == "tool"
    return {
        "role": role,
        "content": content or "",
        "reasoning_content": reasoning if assistant else None,
        "tool_calls": (list(tool_calls) or None) if assistant and tool_calls else None,
        "tool_call_id": tool_call_id if tool else None,
        "name": name if tool else None,
    }
