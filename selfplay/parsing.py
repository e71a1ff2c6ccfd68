"""Read what a model wrote: reasoning, tool calls and the final answer, never raising on bad output.

| function           | reads                                                         |
|--------------------|---------------------------------------------------------------|
| `parse_assistant`  | `<think>...</think>` and `<tool_call>{json}</tool_call>` blocks |
| `extract_answer`   | the last `<answer>...</answer>` block                          |

Every malformed piece (bad JSON, a call without a name, non-object arguments, an unterminated
block) becomes one string in `ParsedTurn.errors`, so the solver can count it and show it to the model
as an observation.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from kag.messages import chat_message

__all__ = ["ParsedTurn", "parse_assistant", "extract_answer"]

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_CALL_OPEN, _CALL_CLOSE = "<tool_call>", "</tool_call>"
# end-of-turn markers that appear when a caller decodes without skipping special tokens
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")
_SNIPPET = 80


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedTurn:
    """One assistant turn, split into its parts.

    `tool_calls` are DESIGN section 4 dicts (`{"id", "type": "function", "function": {"name",
    "arguments": JSON text}}`); `errors` has one message per malformed piece.
    """

    content: str
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_message(self) -> dict[str, Any]:
        """The assistant message of DESIGN section 4.

        >>> parse_assistant("<think>hm</think>Hi").to_message()["reasoning_content"]
        'hm'
        """
        return chat_message(
            "assistant", self.content, reasoning=self.reasoning, tool_calls=self.tool_calls
        )


def _snippet(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...")


def _split_reasoning(text: str, errors: list[str]) -> tuple[str, str | None]:
    parts = [m.group(1).strip() for m in _THINK.finditer(text)]
    rest = _THINK.sub("", text)
    if "<think>" in rest:
        head, _, tail = rest.partition("<think>")
        errors.append(f"unterminated <think> block: {_snippet(tail)}")
        parts.append(tail.strip())
        rest = head
    elif "</think>" in rest:
        # the prompt may have opened the block (Qwen3 style): everything before the close is reasoning
        head, _, rest = rest.rpartition("</think>")
        parts.insert(0, head.replace("</think>", "").strip())
    reasoning = "\n".join(p for p in parts if p) or None
    return rest, reasoning


def _read_call(body: str, index: int, errors: list[str]) -> tuple[str, str] | None:
    where = f"tool call {index + 1}"
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        errors.append(f"{where}: invalid JSON ({err.msg} at char {err.pos}): {_snippet(body)}")
        return None
    if not isinstance(data, dict):
        errors.append(
            f"{where}: expected a JSON object with 'name' and 'arguments', got {_snippet(body)}"
        )
        return None
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(f"{where}: missing or empty 'name': {_snippet(body)}")
        return None
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):
        # some models write the arguments as a JSON string, as the OpenAI wire format does
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            errors.append(
                f"{where} ({name}): 'arguments' is a string that is not JSON: {_snippet(arguments)}"
            )
            return None
    if not isinstance(arguments, dict):
        errors.append(
            f"{where} ({name}): 'arguments' must be a JSON object, got {_snippet(json.dumps(arguments))}"
        )
        return None
    return name.strip(), json.dumps(arguments, ensure_ascii=False)


def parse_assistant(text: str, *, call_id_prefix: str | None = None) -> ParsedTurn:
    """Split an assistant completion into content, reasoning and tool calls; never raises.

    Call ids are `f"{call_id_prefix}{i}"` when a prefix is given (deterministic), else random
    `call_<hex>` ids.

    >>> turn = parse_assistant('<think>look</think>\\n<tool_call>\\n{"name": "f", "arguments": {"x": 1}}\\n</tool_call>')
    >>> turn.reasoning, turn.tool_calls[0]["function"], turn.errors
    ('look', {'name': 'f', 'arguments': '{"x": 1}'}, [])
    >>> parse_assistant("<tool_call>{oops</tool_call>").errors[0][:32]
    'tool call 1: invalid JSON (Expec'
    """
    if not isinstance(text, str):
        return ParsedTurn(content="", errors=[f"expected text, got {type(text).__name__}"])
    errors: list[str] = []
    for marker in _END_MARKERS:
        text = text.replace(marker, "")
    rest, reasoning = _split_reasoning(text, errors)

    content_parts: list[str] = []
    calls: list[dict[str, Any]] = []
    index = 0
    pos = 0
    while True:
        start = rest.find(_CALL_OPEN, pos)
        if start < 0:
            content_parts.append(rest[pos:])
            break
        content_parts.append(rest[pos:start])
        end = rest.find(_CALL_CLOSE, start + len(_CALL_OPEN))
        nested = rest.find(_CALL_OPEN, start + len(_CALL_OPEN))
        if end < 0 or 0 <= nested < end:
            stop = nested if nested >= 0 else len(rest)
            errors.append(
                f"tool call {index + 1}: unterminated <tool_call> block: "
                f"{_snippet(rest[start + len(_CALL_OPEN) : stop])}"
            )
            index += 1
            pos = stop
            if nested < 0:
                break
            continue
        read = _read_call(rest[start + len(_CALL_OPEN) : end].strip(), index, errors)
        if read is not None:
            call_id = (
                f"{call_id_prefix}{len(calls)}"
                if call_id_prefix is not None
                else f"call_{uuid.uuid4().hex[:16]}"
            )
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": read[0], "arguments": read[1]},
                }
            )
        index += 1
        pos = end + len(_CALL_CLOSE)

    content = "".join(content_parts)
    if _CALL_CLOSE in content:
        errors.append(f"stray </tool_call> without an opening <tool_call>: {_snippet(content)}")
        content = content.replace(_CALL_CLOSE, "")
    return ParsedTurn(content=content.strip(), reasoning=reasoning, tool_calls=calls, errors=errors)


def extract_answer(text: str | None) -> str | None:
    """The stripped text of the last complete `<answer>...</answer>` outside reasoning, else None.

    >>> extract_answer("<think><answer>draft</answer></think>So: <answer> Paris </answer>")
    'Paris'
    >>> extract_answer("no answer here") is None
    True
    """
    if not text:
        return None
    answers = _ANSWER.findall(_THINK.sub("", text))
    return answers[-1].strip() if answers else None
