"""The oracle policy: follows a task's hidden path with the same tools, writing gold trajectories.

It is a `Policy` like a model engine, so its trajectories run through the same solver loop, tools,
verifiers and write-back, in the same message format (`policy="oracle"`). Its turns, for a task
`e0 -[r1]-> ... -[rH]-> eH`:

| turn   | the oracle writes                                                                  |
|--------|------------------------------------------------------------------------------------|
| 1      | `search_entities(query=<name of e0>)`                                              |
| 1 + k  | `get_relations(entity_id=e, relation=rk)` for each entity e reached after k-1 hops |
| H + 2  | `<answer>names of the entities reached after H hops</answer>` (joined by "; "; only |
|        | the path's end when a name holds a list separator such as a comma)                 |

It reads the entities reached from the tool observations (set semantics, as the proposer's
answers), path entity first, at most `max_calls_per_turn` calls per hop. `malformed_turns=n`
starts with n turns that write a malformed tool call, to exercise the error path.

>>> Solver(OraclePolicy(), registry).solve(tasks, run_id="gold")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from selfplay.rollout import Rollout
from selfplay.solver import Action, TurnRequest

__all__ = ["OraclePolicy", "ANSWER_SEPARATOR"]

#: how the oracle joins several answers inside one `<answer>` block
ANSWER_SEPARATOR = "; "
# characters answer_match reads as list separators
_LIST_SEPARATORS = re.compile(r"[;,|\n]")


class OraclePolicy:
    """Deterministic gold policy (see the module docstring)."""

    def __init__(
        self, *, name: str = "oracle", max_calls_per_turn: int = 8, malformed_turns: int = 0
    ) -> None:
        if max_calls_per_turn < 1 or malformed_turns < 0:
            raise ValueError("max_calls_per_turn must be >= 1 and malformed_turns >= 0")
        self.name = name
        self.max_calls_per_turn = max_calls_per_turn
        self.malformed_turns = malformed_turns

    def count_tokens(self, rollout: Rollout, *, tools: list[dict[str, Any]]) -> int:
        """A rough count (4 characters a token): the oracle has no tokenizer."""
        return sum(len(m.get("content") or "") for m in rollout.messages) // 4 + 1

    def act(self, requests: Sequence[TurnRequest], *, tools: list[dict[str, Any]]) -> list[Action]:
        return [Action(text=self._next(r), finish_reason="stop") for r in requests]

    # ------------------------------------------------------------------ the plan

    def _next(self, request: TurnRequest) -> str:
        r = request.rollout
        task = r.task
        entities = list(task.path.get("entities", []))
        relations = list(task.path.get("relations", []))
        if not entities or len(relations) != len(entities) - 1:
            return "<answer></answer>"
        turns = _turns(r.messages)
        n = len(turns)
        if n < self.malformed_turns and not request.final:
            return (
                "<think>Look up the start entity.</think>\n<tool_call>\n"
                '{"name": "search_entities", "arguments": {"query": </tool_call>'
            )
        step = n - self.malformed_turns
        # hop k's observations are those of the turn that followed relation k
        reached = [[entities[0]]]
        for k, relation in enumerate(relations, start=1):
            turn_index = self.malformed_turns + k
            if turn_index >= n:
                break
            found = _reached(turns[turn_index], relation)
            path_entity = entities[k]
            reached.append(_path_first(found, path_entity))
        if request.final or step > len(relations):
            return self._answer(turns, relations, reached)
        if step == 0:
            name = str(task.props.get("start_name") or entities[0])
            return _call_text(
                f'Find the start entity "{name}".',
                [("search_entities", {"query": name})],
            )
        relation = relations[step - 1]
        frontier = reached[step - 1][: self.max_calls_per_turn]
        return _call_text(
            f'Hop {step}: follow "{relation}" from {len(frontier)} entit'
            f"{'y' if len(frontier) == 1 else 'ies'}.",
            [("get_relations", {"entity_id": e, "relation": relation}) for e in frontier],
        )

    def _answer(
        self, turns: list[list[dict[str, Any]]], relations: list[str], reached: list[list[str]]
    ) -> str:
        if len(reached) <= len(relations):
            return "<think>Out of turns before the last hop.</think>\n<answer></answer>"
        last = self.malformed_turns + len(relations)
        names = _names(turns[last], reached[-1])
        if len(names) > 1 and any(_LIST_SEPARATORS.search(n) for n in names):
            # a name like "Salò, or the 120 Days of Sodom" would read as a list: answer with the
            # path's own end alone, which is one valid answer
            names = names[:1]
        return (
            f"<think>{len(names)} entit{'y' if len(names) == 1 else 'ies'} reached.</think>\n"
            f"<answer>{ANSWER_SEPARATOR.join(names)}</answer>"
        )


def _turns(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The tool observations after each assistant message, one list per assistant turn."""
    out: list[list[dict[str, Any]]] = []
    for m in messages:
        if m["role"] == "assistant":
            out.append([])
        elif m["role"] == "tool" and out:
            out[-1].append(m)
    return out


def _observations(tool_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    data = []
    for m in tool_messages:
        try:
            value = json.loads(m.get("content") or "")
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            data.append(value)
    return data


def _reached(tool_messages: list[dict[str, Any]], relation: str) -> list[str]:
    found: dict[str, None] = {}
    for obs in _observations(tool_messages):
        for rel in obs.get("relations", []):
            if rel.get("relation") == relation and rel.get("direction", "out") == "out":
                found.setdefault(rel["id"])
    return sorted(found)


def _names(tool_messages: list[dict[str, Any]], ids: list[str]) -> list[str]:
    names: dict[str, str] = {}
    for obs in _observations(tool_messages):
        for rel in obs.get("relations", []):
            names.setdefault(rel.get("id"), rel.get("name") or rel.get("id"))
    return list(dict.fromkeys(names.get(i, i) for i in ids))


def _path_first(found: list[str], path_entity: str) -> list[str]:
    if path_entity in found:
        return [path_entity, *(e for e in found if e != path_entity)]
    return [path_entity, *found]


def _call_text(thought: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    blocks = "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
        + "\n</tool_call>"
        for name, args in calls
    )
    return f"<think>{thought}</think>\n{blocks}"
