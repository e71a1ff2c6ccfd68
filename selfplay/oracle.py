"""The oracle policy: follows a task's hidden path with the same tools, writing gold trajectories.

It is a `Policy` like a model engine, so its trajectories run through the same solver loop, tools,
verifiers and write-back, in the same message format (`policy="oracle"`). Its turns, for a task
`e0 -[r1]-> ... -[rH]-> eH`:

| turn   | the oracle writes                                                                  |
|--------|------------------------------------------------------------------------------------|
| 1      | `search_entities(query=<name of e0>)`                                              |
| 1 + k  | `get_relations(entity_id=e, relation=rk)` for each entity e reached after k-1 hops |
|        | (path entity first; more turns when a hop has more than `max_calls_per_turn`);    |
|        | an inverse step `~rk` calls it with `direction="in"` and reads the sources        |
| last   | `<answer>names of every entity reached after H hops</answer>`, joined by "; " (or  |
|        | another separator when a name holds ";"); a task with output constraints gets the  |
|        | reply `selfplay.constraints.render_reply` writes to meet them                      |

A set task (`Task.path["branches"]`, `kag.walks.path_branches`) gets every chain expanded in
turn, its anchors looked up in the first turn, and the answer is what all chains reach; an
obfuscated task gets its "start" chains expanded first, then the answer chain from the one entity
they all reach.

A `tool_use` task (no path: an answer key) gets `selfplay.families.tool_use.oracle_turn`: every
gold call in one turn, then an answer naming them.

It reads the entities reached from the tool observations (set semantics, as the proposer's
answers), so it names every answer, as `answer_match@2` requires. `malformed_turns=n`
starts with n turns that write a malformed tool call, to exercise the error path.

>>> Solver(OraclePolicy(), registry).solve(tasks, run_id="gold")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kag.walks import inverse_step, parse_step, path_branches
from selfplay.constraints import render_reply, task_constraints
from selfplay.rollout import Rollout
from selfplay.solver import Action, TurnRequest

__all__ = ["OraclePolicy", "ANSWER_SEPARATOR"]

#: how the oracle joins several answers inside one `<answer>` block
ANSWER_SEPARATOR = "; "
#: the separators it falls back on when a name holds the first (answer_match reads each)
ANSWER_SEPARATORS = ("; ", " | ", "\n", ", ")


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
        if task.family == "tool_use":  # function calls from an answer key, no graph path
            from selfplay.families.tool_use import oracle_turn

            return oracle_turn(task, r.messages, final=request.final)
        branches = path_branches(task.path)
        if not branches:
            return "<answer></answer>"
        n = sum(m["role"] == "assistant" for m in r.messages)
        if n < self.malformed_turns and not request.final:
            return (
                "<think>Look up the start entity.</think>\n<tool_call>\n"
                '{"name": "search_entities", "arguments": {"query": </tool_call>'
            )
        if n == self.malformed_turns and not request.final:
            # a set or obfuscated task names several entities: look each one up
            names = [str(x) for x in task.props.get("start_names") or ()] or [
                str(task.props.get("start_name") or branches[0].entities[0])
            ]
            quoted = ", ".join(f'"{x}"' for x in names)
            return _call_text(
                f"Find the start entit{'y' if len(names) == 1 else 'ies'} {quoted}.",
                [("search_entities", {"query": x}) for x in names],
            )
        expanded = _expansions(r.messages)
        # an obfuscated start is what every "start" chain reaches; the answers are what every
        # answer chain reaches (one chain: all it reaches)
        start_sets: list[list[str]] = []
        answer_sets: list[list[str]] = []
        for branch in branches:
            if branch.role == "answer" and start_sets:
                met = [e for e in start_sets[0] if all(e in other for other in start_sets[1:])]
                frontier = _path_first(met, branch.entities[0]) if met else []
            else:
                frontier = [branch.entities[0]]
            for k, relation in enumerate(branch.relations, start=1):
                if not frontier:
                    break
                pending = [e for e in frontier if (e, relation) not in expanded]
                if pending:
                    if request.final:
                        return "<think>Out of turns before the last hop.</think>\n<answer></answer>"
                    batch = pending[: self.max_calls_per_turn]
                    base, direction = parse_step(relation)
                    args = {"relation": base, **({"direction": "in"} if direction == "in" else {})}
                    return _call_text(
                        f'Hop {k}: follow "{base}"{" backwards" if direction == "in" else ""} '
                        f"from {len(batch)} entit{'y' if len(batch) == 1 else 'ies'}.",
                        [("get_relations", {"entity_id": e, **args}) for e in batch],
                    )
                found = sorted({t for e in frontier for t in expanded[(e, relation)]})
                frontier = _path_first(found, branch.entities[k]) if found else []
            (start_sets if branch.role == "start" else answer_sets).append(frontier)
        reached = [e for e in answer_sets[0] if all(e in other for other in answer_sets[1:])]
        return self._answer(reached, _names(r.messages), task)

    def _answer(self, reached: list[str], names: dict[str, str], task: Any) -> str:
        answers = list(dict.fromkeys(names.get(i, i) for i in reached))
        try:
            constraints = task_constraints(task)
        except ValueError:  # unreadable constraints: instruction_following says so, undecided
            constraints = []
        if constraints:  # an instruction task: the reply must meet its output constraints
            return (
                f"<think>{len(answers)} entit{'y' if len(answers) == 1 else 'ies'} reached; "
                f"{len(constraints)} output constraints to meet.</think>\n"
                + render_reply(answers, constraints)
            )
        # join with a separator no name holds, so answer_match reads the list item by item
        sep = next(
            (s for s in ANSWER_SEPARATORS if not any((s.strip() or s) in a for a in answers)),
            ANSWER_SEPARATOR,
        )
        return (
            f"<think>{len(answers)} entit{'y' if len(answers) == 1 else 'ies'} reached.</think>\n"
            f"<answer>{sep.join(answers)}</answer>"
        )


def _expansions(messages: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(entity id, walk step) -> ids that `get_relations` returned, over every call so far; an
    `"in"` result of relation `r` counts for the inverse step `~r`."""
    calls: dict[str, tuple[str, str, str]] = {}
    out: dict[tuple[str, str], list[str]] = {}
    for m in messages:
        if m["role"] == "assistant":
            for c in m.get("tool_calls") or ():
                fn = c.get("function") or {}
                if fn.get("name") != "get_relations":
                    continue
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError:
                    continue
                calls[str(c.get("id"))] = (
                    args.get("entity_id"),
                    args.get("relation"),
                    args.get("direction") or "out",
                )
        elif m["role"] == "tool" and str(m.get("tool_call_id")) in calls:
            entity, relation, direction = calls[str(m.get("tool_call_id"))]
            wanted = ("out", "in") if direction == "both" else (direction,)
            for d in wanted:
                out.setdefault((entity, relation if d == "out" else inverse_step(relation)), [])
            for obs in _observations([m]):
                for rel in obs.get("relations", []):
                    d = rel.get("direction", "out")
                    if rel.get("relation") == relation and d in wanted:
                        step = relation if d == "out" else inverse_step(relation)
                        out[(entity, step)].append(rel["id"])
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


def _names(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Entity id -> name, as the relations in the observations name them."""
    names: dict[str, str] = {}
    for obs in _observations([m for m in messages if m["role"] == "tool"]):
        for rel in obs.get("relations", []):
            names.setdefault(rel.get("id"), rel.get("name") or rel.get("id"))
    return names


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
