"""Verifiers: checks of a trajectory against its task, each `name@version` with a Verifier record.

| verifier                | passes when                                                           | kind |
|-------------------------|-----------------------------------------------------------------------|------|
| `answer_match@2`        | the final `<answer>` lists every valid answer and nothing else        | rule |
|                         | (precision and recall, `selfplay.answers`; score: their F1)           |      |
| `evidence_coverage@2`   | the trajectory acted on every entity of the task's hop chain          | rule |
| `process@1`             | at least one tool call per hop                                        | rule |
| `tool_call_validity@1`  | no call is malformed or invalid for its tool's schema                 | rule |
| `no_shortcut@1`         | the question names no answer (`selfplay.answers.leaked_answer`)       | rule |
| `instruction_following@1` | the final reply meets every output constraint of the task           | rule |
|                         | (`selfplay.constraints`; score: the share met)                        |      |
| `tool_step@2`           | per tool Step: call valid, observation informative, still on a path   | rule |
|                         | that reaches an answer, a python call's data literals seen earlier    |      |
|                         | (Verifications with VERIFIES -> Step)                                 |      |
| `llm_judge@1`           | an engine, shown question, answers and reply, says CORRECT            | llm  |
| `bfcl_ast@1`            | the tool calls pass the task's BFCL answer key by BFCL's AST rules    | rule |
|                         | (`selfplay.bfcl`; tool_use tasks imported from BFCL)                   |      |
| `graph_state@1`         | the scratch graph the trajectory's edit calls leave differs from the  | rule |
|                         | task's start by exactly its expected edits, and the policy stopped    |      |
|                         | (`selfplay.edit_tools`; tool_use graph-edit tasks)                     |      |

Every verifier has `verify(task, trajectory, context) -> VerifierResult(passed, score, detail)`;
`trajectory` is a list of DESIGN section 4 messages, a list of `Step`s, or any object with
`.messages` (a solver `Rollout`). `passed` is None when the verifier cannot decide.
`selfplay.rewards.VerifierSuite` combines them into acceptance and a reward.

>>> AnswerMatch().verify(task, rollout).passed  # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kag.schema import Step, Task, Verifier
from kag.walks import parse_step, path_branches
from selfplay.answers import leaked_answer, normalize_answer, score_answer
from selfplay.bfcl import check_calls
from selfplay.constraints import check_reply, task_constraints
from selfplay.edit_tools import ScratchGraph, describe_edit, edit_key, edit_registry, state_diff
from selfplay.graph_tools import entity_ids_in
from selfplay.grounding import ungrounded_literals
from selfplay.parsing import extract_answer

__all__ = [
    "VerifierResult",
    "VerifyContext",
    "TrajectoryVerifier",
    "AnswerMatch",
    "EvidenceCoverage",
    "ProcessCheck",
    "ToolCallValidity",
    "NoShortcut",
    "InstructionFollowing",
    "LLMJudge",
    "BfclAst",
    "GraphState",
    "VERIFIERS",
    "build_verifier",
    "trajectory_messages",
    "ToolStep",
    "tool_steps",
    "ToolStepCheck",
    "answer_path_entities",
    "invalid_calls",
    "touched_entity_ids",
    "build_judge_prompt",
    "judge_verdict_regex",
    "parse_judge_verdict",
    "extract_answer",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifierResult:
    """One verifier's verdict: `passed` (None = cannot decide), a score in [0, 1], and why."""

    passed: bool | None
    score: float
    detail: str = ""
    #: named sub-checks behind the verdict (e.g. a tool step's `call_valid`, `observation`, `on_path`)
    checks: Mapping[str, bool | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyContext:
    """What verifiers may need beyond the task and the messages.

    `registry` (a `ToolRegistry`) lets `tool_call_validity` check arguments against schemas;
    `touched_entity_ids` are the entities the trajectory's tool calls touched, as the registry's
    observations reported them (recomputed from the messages when None, or taken from a
    `Rollout`); `n_malformed` counts tool calls the parser could not read (from a `Rollout` when
    None); `engine` serves `llm_judge`; `answer_path_entities` are the entities on some relation
    chain of the task that still reaches an answer (`answer_path_entities(store, task)`; None:
    the task's own path), which the `tool_step` check uses.
    """

    registry: Any = None
    touched_entity_ids: Sequence[str] | None = None
    n_malformed: int | None = None
    engine: Any = None
    answer_path_entities: frozenset[str] | None = None


# --------------------------------------------------------------------------- trajectory helpers


def trajectory_messages(trajectory: Any) -> list[dict[str, Any]]:
    """DESIGN section 4 messages of a trajectory given as messages, Steps or a `Rollout`."""
    items = getattr(trajectory, "messages", trajectory)
    if isinstance(items, Mapping) or not isinstance(items, Sequence):
        raise TypeError(
            f"a trajectory must be a list of messages or Steps, got {type(items).__name__}"
        )
    if items and all(isinstance(s, Step) for s in items):
        return [s.to_message() for s in sorted(items, key=lambda s: s.idx)]
    out = []
    for i, m in enumerate(items):
        if isinstance(m, Step):
            out.append(m.to_message())
        elif isinstance(m, Mapping) and "role" in m:
            out.append(dict(m))
        else:
            raise TypeError(
                f"trajectory item {i} is neither a message with a 'role' nor a Step: {m!r:.100}"
            )
    return out


def _tool_calls(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(call id, tool name, arguments JSON text) of every tool call, in order."""
    calls = []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        for c in m.get("tool_calls") or ():
            fn = c.get("function") or {}
            args = fn.get("arguments")
            if not isinstance(args, str):
                args = json.dumps(args) if args is not None else ""
            calls.append((str(c.get("id") or ""), str(fn.get("name") or ""), args))
    return calls


def _json_or_none(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None


def touched_entity_ids(trajectory: Any, context: VerifyContext | None = None) -> list[str]:
    """The entities a trajectory's tool calls touched.

    Taken from `context.touched_entity_ids`, else from the trajectory (a `Rollout` records the
    observations' ids), else recomputed from the messages: `*entity_id` arguments of each call
    and `id` values in the JSON of each tool result (what the graph tools return).
    """
    if context is not None and context.touched_entity_ids is not None:
        return list(context.touched_entity_ids)
    recorded = getattr(trajectory, "touched_entity_ids", None)
    if recorded is not None and not callable(recorded):
        return list(recorded)
    messages = trajectory_messages(trajectory)
    found: dict[str, None] = {}
    for _, _, args in _tool_calls(messages):
        for e in entity_ids_in(_json_or_none(args)):
            found.setdefault(e)
    for m in messages:
        if m.get("role") == "tool":
            for e in entity_ids_in(_json_or_none(m.get("content"))):
                found.setdefault(e)
    return list(found)


def _final_answer(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for m in reversed(messages):
        if m.get("role") == "assistant":
            return extract_answer(m.get("content") or "")
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolStep:
    """One tool-result message with the call behind it.

    `index` is the message index of the result; `name` and `arguments` are None for a call the
    parser could not read (`malformed`); `acted_on` are the entity ids the call's arguments name
    and `observed` the ids its observation names.
    """

    index: int
    name: str | None
    arguments: str | None
    observation: str
    malformed: bool
    acted_on: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()


def tool_steps(trajectory: Any) -> list[ToolStep]:
    """The tool steps of a trajectory, each result paired with its call by `tool_call_id`.

    A result whose id names no call (the solver's `malformed_*` ids) is a malformed call.

    >>> msgs = [{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
    ...     "function": {"name": "get_entity", "arguments": '{"entity_id": "e1"}'}}]},
    ...     {"role": "tool", "content": '{"id": "e1", "name": "Ada"}', "tool_call_id": "c1"}]
    >>> [(s.name, s.acted_on, s.observed) for s in tool_steps(msgs)]
    [('get_entity', ('e1',), ('e1',))]
    """
    messages = trajectory_messages(trajectory)
    calls: dict[str, tuple[str, str]] = {}
    unmatched: list[tuple[str, str]] = []
    out: list[ToolStep] = []
    for idx, m in enumerate(messages):
        role = m.get("role")
        if role == "assistant":
            unmatched = []
            for call_id, name, args in _tool_calls([m]):
                calls[call_id] = (name, args)
                unmatched.append((name, args))
        elif role == "tool":
            call_id = str(m.get("tool_call_id") or "")
            if call_id in calls:
                name, args = calls.pop(call_id)
                if (name, args) in unmatched:
                    unmatched.remove((name, args))
            elif unmatched and not call_id.startswith("malformed_"):
                name, args = unmatched.pop(0)  # results without ids come in call order
            else:
                name = args = None
            content = str(m.get("content") or "")
            out.append(
                ToolStep(
                    index=idx,
                    name=name,
                    arguments=args,
                    observation=content,
                    malformed=name is None,
                    acted_on=tuple(entity_ids_in(_json_or_none(args))) if args else (),
                    observed=tuple(entity_ids_in(_json_or_none(content))),
                )
            )
    return out


def _ungrounded_code(
    step: ToolStep, messages: Sequence[Mapping[str, Any]]
) -> list[int | float | str] | None:
    """The data literals of a python step's code that no earlier user or tool message holds
    (None: no code, or nothing to decide)."""
    args = _json_or_none(step.arguments or "")
    code = args.get("code") if isinstance(args, Mapping) else None
    if not isinstance(code, str):
        return None
    seen = "\n".join(
        str(m.get("content") or "")
        for m in messages[: step.index]
        if m.get("role") in ("user", "tool")
    )
    return ungrounded_literals(code, seen)


def _observation_problem(text: str) -> str | None:
    """Why an observation tells the policy nothing (an error, or an empty result), else None."""
    if not text.strip():
        return "the observation is empty"
    value = _json_or_none(text)
    if isinstance(value, Mapping):
        if "error" in value:
            return f"the tool returned an error: {str(value['error'])[:120]}"
        for key in ("results", "relations"):
            if key in value and not value[key]:
                return f"the tool returned no {key}"
    return None


# --------------------------------------------------------------------------- verifiers


class TrajectoryVerifier:
    """Base of verifiers: `name`, `version`, `kind` and `verify`; fields of a subclass are its config."""

    __slots__ = ()
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    kind: ClassVar[str] = "rule"

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def config(self) -> dict[str, Any]:
        """The verifier's settings, as stored in its Verifier record."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.metadata.get("config", True)
        }

    def record(self) -> Verifier:
        """The Verifier node of this verifier."""
        return Verifier.create(
            name=self.name, version=self.version, kind=self.kind, config=self.config()
        )

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        raise NotImplementedError


def _names(values: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


@dataclass(frozen=True, kw_only=True, slots=True)
class AnswerMatch(TrajectoryVerifier):
    """The final `<answer>` names the task's valid answers: scored by precision and recall.

    The answer is one item or a list (`selfplay.answers.answer_items`: `;`, new lines, `|` or
    `,`); `precision` is the share of listed items that are valid answers, `recall` the share of
    valid answers listed. It passes when both reach `min_precision` and `min_recall` (by default
    every answer and nothing else); the score is their F1, so a partial answer scores below a
    complete one and never passes by default.
    """

    name: ClassVar[str] = "answer_match"
    version: ClassVar[str] = "2"
    #: share of the valid answers the answer must list (1.0: all of them)
    min_recall: float = 1.0
    #: share of the listed items that must be valid answers (1.0: no wrong item)
    min_precision: float = 1.0
    #: read an answer of several items as a list (False: the whole answer is one item)
    allow_lists: bool = True

    def __post_init__(self) -> None:
        for name in ("min_recall", "min_precision"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"answer_match {name} must be in (0, 1], got {value!r}")

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        answer = _final_answer(trajectory_messages(trajectory))
        if answer is None:
            return VerifierResult(
                passed=False,
                score=0.0,
                detail="no <answer>...</answer> in the final assistant message",
            )
        if not task.answers:
            return VerifierResult(
                passed=None, score=0.0, detail=f"task {task.id!r} has no answers to compare with"
            )
        s = score_answer(answer, task.answers, as_list=self.allow_lists)
        passed = s.precision >= self.min_precision and s.recall >= self.min_recall
        n = len(set(map(normalize_answer, task.answers)))
        detail = (
            f"{s.matched}/{s.items} listed items valid, {round(s.recall * n)}/{n} answers named "
            f"(precision {s.precision:.2f}, recall {s.recall:.2f}) in {answer[:160]!r}"
        )
        if not passed and s.matched == 0:
            detail = f"answer {answer[:200]!r} matches none of {_names(list(task.answers))}"
        return VerifierResult(
            passed=passed,
            score=s.f1,
            detail=detail,
            checks={
                "precision": s.precision >= self.min_precision,
                "recall": s.recall >= self.min_recall,
            },
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class EvidenceCoverage(TrajectoryVerifier):
    """The trajectory walked the task's own hop chain: entities it acted on, not ones it saw.

    For a path `e0 -r1-> e1 ... -rH-> eH` every `e0 .. e(H-1)` must be named in a call's
    arguments (the policy expanded it), and `eH` must be acted on too or come back in the
    observation of a call on `e(H-1)` (the last hop reached it). A task without relations (an
    imported one with only its topic entity) needs each path entity acted on. An id that merely
    appears in a broad search result counts for nothing. Score: the share of path entities covered.
    A set or obfuscated task (`kag.walks.path_branches`) applies the rule to each of its chains:
    both constraints of a set question, an obfuscated start's description and the chain after it.
    """

    name: ClassVar[str] = "evidence_coverage"
    version: ClassVar[str] = "2"

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        entities = list(task.path.get("entities") or ())
        if not entities:
            return VerifierResult(
                passed=None, score=0.0, detail=f"task {task.id!r} has no evidence path"
            )
        steps = [s for s in tool_steps(trajectory) if not s.malformed]
        acted = {e for s in steps for e in s.acted_on}
        # one chain, or each chain of a set or obfuscated task: its last entity may be reached
        # by a call on the one before it instead of acted on
        branches = path_branches(task.path)
        chains = [list(b.entities) for b in branches] or [entities]
        required = list(dict.fromkeys([*entities, *(e for c in chains for e in c)]))
        reached_last: set[str] = set()
        for chain in chains:
            if branches and len(chain) > 1:
                before_last = chain[-2]
                reached = {e for s in steps if before_last in s.acted_on for e in s.observed}
                if chain[-1] in reached:
                    reached_last.add(chain[-1])
        missing = [e for e in required if e not in acted and e not in reached_last]
        score = (len(required) - len(missing)) / len(required)
        if missing:
            return VerifierResult(
                passed=False,
                score=score,
                detail=f"{len(required) - len(missing)}/{len(required)} entities of the hop "
                f"chain reached by acting on them; missing {_names(missing)}",
            )
        return VerifierResult(
            passed=True, score=1.0, detail=f"all {len(required)} entities of the hop chain reached"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessCheck(TrajectoryVerifier):
    """At least `min_calls_per_hop` tool calls per hop of the task; score = the fraction reached."""

    name: ClassVar[str] = "process"
    min_calls_per_hop: int = 1

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        needed = task.hops * self.min_calls_per_hop
        n = len(_tool_calls(trajectory_messages(trajectory)))
        if needed <= 0:
            return VerifierResult(
                passed=True, score=1.0, detail=f"{n} tool calls; the task has no hops"
            )
        score = min(1.0, n / needed)
        return VerifierResult(
            passed=n >= needed,
            score=score,
            detail=f"{n} tool calls for {task.hops} hops (at least {needed} needed)",
        )


def invalid_calls(
    trajectory: Any, context: VerifyContext | None = None
) -> tuple[int, int, str | None]:
    """`(invalid, total, first problem)` over a trajectory's tool calls.

    Invalid: a call the parser could not read, or one the registry rejects (unknown tool, bad
    JSON, arguments against the schema). Without a registry only unreadable calls count.
    """
    registry = context.registry if context is not None else None
    steps = tool_steps(trajectory)
    n_malformed = sum(s.malformed for s in steps)
    recorded = context.n_malformed if context is not None else None
    if recorded is None:
        recorded = getattr(trajectory, "n_malformed", None)
    if isinstance(recorded, int) and recorded > n_malformed:
        n_malformed = recorded
    problems = []
    calls = _tool_calls(trajectory_messages(trajectory))
    if registry is not None:
        problems = [p for _, name, args in calls if (p := registry.validate_call(name, args))]
    total = len(calls) + n_malformed
    first = problems[0] if problems else ("a call could not be parsed" if n_malformed else None)
    return len(problems) + n_malformed, total, first


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCallValidity(TrajectoryVerifier):
    """At most `max_invalid` tool calls are malformed or invalid for their tool's schema.

    Needs `context.registry`; calls the parser could not read (`n_malformed`) count as invalid.
    Score: the share of valid calls.
    """

    name: ClassVar[str] = "tool_call_validity"
    #: invalid calls a trajectory may make and still pass (0: none)
    max_invalid: int = 0

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        if context is None or context.registry is None:
            return VerifierResult(
                passed=None, score=0.0, detail="no tool registry given to check the calls against"
            )
        bad, total, first = invalid_calls(trajectory, context)
        if total == 0:
            return VerifierResult(passed=True, score=1.0, detail="no tool calls")
        detail = f"{total - bad}/{total} tool calls valid"
        if first:
            detail += f"; first problem: {first}"
        return VerifierResult(
            passed=bad <= self.max_invalid, score=(total - bad) / total, detail=detail
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class NoShortcut(TrajectoryVerifier):
    """The question does not contain any answer (as whole words, after normalisation)."""

    name: ClassVar[str] = "no_shortcut"

    def verify(
        self, task: Task, trajectory: Any = (), context: VerifyContext | None = None
    ) -> VerifierResult:
        leaked = leaked_answer(task.question, task.answers)
        if leaked:
            return VerifierResult(
                passed=False, score=0.0, detail=f"the question contains the answer {leaked!r}"
            )
        return VerifierResult(passed=True, score=1.0, detail="the question contains no answer")


@dataclass(frozen=True, kw_only=True, slots=True)
class InstructionFollowing(TrajectoryVerifier):
    """The final reply meets every output constraint of the task, as IFEval checks them.

    The constraints are the task's `props["constraints"]["instructions"]`
    (`selfplay.constraints.task_constraints`); each is checked on the reply, the final
    assistant message's content without reasoning and with the `<answer>` tags dropped
    (`selfplay.constraints.reply_text`). Passes when all pass; score: the share that pass;
    `checks`: one per constraint kind. A final message without `<answer>` fails; a task without
    constraints passes, unless its family is "instruction" (undecided: its constraints are
    missing); constraints that do not read are undecided, with the reason.
    """

    name: ClassVar[str] = "instruction_following"

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        try:
            constraints = task_constraints(task)
        except ValueError as err:
            return VerifierResult(passed=None, score=0.0, detail=str(err))
        if not constraints:
            if task.family == "instruction":
                return VerifierResult(
                    passed=None,
                    score=0.0,
                    detail=f"instruction task {task.id!r} carries no output constraints",
                )
            return VerifierResult(
                passed=True, score=1.0, detail="the task has no output constraints"
            )
        content = _final_content(trajectory_messages(trajectory))
        if content is None or extract_answer(content) is None:
            return VerifierResult(
                passed=False,
                score=0.0,
                detail="no <answer>...</answer> in the final assistant message",
            )
        results = check_reply(constraints, content)
        checks: dict[str, bool | None] = {}
        for r in results:
            key, k = r.constraint.kind, 2
            while key in checks:
                key, k = f"{r.constraint.kind}#{k}", k + 1
            checks[key] = r.passed
        good = sum(r.passed for r in results)
        failed = [f"{r.constraint.kind}: {r.detail}" for r in results if not r.passed]
        detail = f"{good}/{len(results)} output constraints met"
        if failed:
            detail += "; " + "; ".join(failed)
        return VerifierResult(
            passed=good == len(results), score=good / len(results), detail=detail, checks=checks
        )


def _final_content(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for m in reversed(messages):
        if m.get("role") == "assistant":
            return str(m.get("content") or "")
    return None


# --------------------------------------------------------------------------- step checks


def answer_path_entities(
    store: Any, task: Task, *, max_frontier: int = 5_000
) -> frozenset[str] | None:
    """The entities on some chain of the task's relations from its start that reaches an answer.

    Hop k's frontier is every entity the first k relations reach from the path's start; an entity
    stays when the remaining relations lead from it to one of `task.answer_ids`. None when the
    task has no relation path or answer ids, or a frontier grows past `max_frontier`. A set task
    gives the union over its chains; an obfuscated task's description chains count the entities
    that lead to the described start (`kag.walks.path_branches`).

    >>> sorted(answer_path_entities(store, task))  # doctest: +SKIP
    ['ada', 'london', 'uk']
    """
    branches = path_branches(task.path)
    answers = set(task.answer_ids)
    if not branches or not answers:
        return None
    # an obfuscated task's "start" chains lead to its answer chain's start, not to the answers
    starts = {b.entities[0] for b in branches if b.role == "answer"}
    on_path: set[str] = set()
    for branch in branches:
        targets = starts if branch.role == "start" else answers
        found = _chain_on_path(store, branch.entities[0], branch.relations, targets, max_frontier)
        if found is None:
            return None
        on_path |= found
    return frozenset(on_path)


def _chain_on_path(
    store: Any, start: str, relations: Sequence[str], targets: set[str], max_frontier: int
) -> set[str] | None:
    """The entities on some chain of `relations` from `start` that ends in `targets`."""
    frontiers: list[set[str]] = [{start}]
    edges: list[dict[str, set[str]]] = []
    for walk_step in relations:
        relation, direction = parse_step(walk_step)  # `~r`: follow r from target to source
        step: dict[str, set[str]] = {}
        for node in frontiers[-1]:
            found = {
                other.id
                for rel, other in store.neighbors(node, relation=relation, direction=direction)
                if (rel.source if direction == "out" else rel.target) == node
            }
            if found:
                step[node] = found
        edges.append(step)
        frontiers.append(set().union(*step.values()) if step else set())
        if len(frontiers[-1]) > max_frontier:
            return None
    live = frontiers[-1] & targets
    on_path = set(live)
    for k in range(len(relations) - 1, -1, -1):
        live = {node for node, found in edges[k].items() if found & live}
        on_path |= live
    return on_path


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolStepCheck(TrajectoryVerifier):
    """Step-level verification v_t of every tool step (one Verification per tool-result Step).

    | check         | passes when                                                            |
    |---------------|------------------------------------------------------------------------|
    | `call_valid`  | the call parsed and the registry accepts it (tool, JSON, schema)       |
    | `observation` | the observation is neither empty nor an error                          |
    | `on_path`     | an entity the call acts on lies on a chain that still reaches an answer |
    |               | (`context.answer_path_entities`, else the task's own path and answers); |
    |               | for a call on no entity (a search), an entity its observation names     |
    |               | does; undecided when it names none                                     |
    | `grounded`    | a `python` call only: every data literal of its code (numbers and      |
    |               | strings in lists, operands of constant arithmetic) appears in an       |
    |               | earlier user or tool message (`selfplay.grounding`): a value copied   |
    |               | wrong from an observation fails the step that used it                  |

    A step passes when every decided check passes; its score is the share that passed.
    `verify` gives the trajectory-level summary (the mean step score) used by the reward.
    Version 2 added `grounded` (only python steps carry it).
    """

    name: ClassVar[str] = "tool_step"
    version: ClassVar[str] = "2"

    def verify_steps(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> dict[int, VerifierResult]:
        """Message index of each tool-result step -> its verdict."""
        registry = context.registry if context is not None else None
        on_path_ids = context.answer_path_entities if context is not None else None
        if on_path_ids is None:
            on_path_ids = frozenset([*(task.path.get("entities") or ()), *task.answer_ids])
        messages = trajectory_messages(trajectory)
        out: dict[int, VerifierResult] = {}
        for step in tool_steps(messages):
            checks: dict[str, bool | None] = {}
            why: list[str] = []
            if step.malformed:
                checks["call_valid"] = False
                why.append("the call could not be parsed")
            elif registry is not None:
                problem = registry.validate_call(step.name, step.arguments)
                checks["call_valid"] = problem is None
                if problem:
                    why.append(problem)
            else:
                checks["call_valid"] = None
            problem = _observation_problem(step.observation)
            checks["observation"] = problem is None
            if problem:
                why.append(problem)
            if step.acted_on and not step.malformed:
                checks["on_path"] = any(e in on_path_ids for e in step.acted_on)
                if not checks["on_path"]:
                    why.append(f"{_names(list(step.acted_on), 3)} lead to no answer")
            elif step.observed and not step.malformed:
                # a call on no entity (a search) is on a path when what it found is: a search
                # for a misspelt name finds entities, but none a chain to an answer starts from
                checks["on_path"] = any(e in on_path_ids for e in step.observed)
                if not checks["on_path"]:
                    why.append(
                        f"found {_names(list(step.observed), 3)}, none on a path to an answer"
                    )
            else:
                checks["on_path"] = None
            if step.name == "python" and not step.malformed:
                missing = _ungrounded_code(step, messages)
                checks["grounded"] = None if missing is None else not missing
                if missing:
                    why.append(f"the code's {_names(missing, 3)} appear in no earlier message")
            decided = [v for v in checks.values() if v is not None]
            out[step.index] = VerifierResult(
                passed=all(decided),
                score=sum(decided) / len(decided) if decided else 1.0,
                detail="; ".join(why) or f"{step.name}: valid, informative, on a path to an answer",
                checks=checks,
            )
        return out

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        steps = self.verify_steps(task, trajectory, context)
        if not steps:
            return VerifierResult(passed=None, score=0.0, detail="no tool steps")
        good = sum(r.passed is True for r in steps.values())
        return VerifierResult(
            passed=good == len(steps),
            score=sum(r.score for r in steps.values()) / len(steps),
            detail=f"{good}/{len(steps)} tool steps pass every check",
        )


# --------------------------------------------------------------------------- LLM judge

_JUDGE_SYSTEM = (
    "You grade answers to questions about a knowledge graph. Compare the candidate answer with "
    "the reference answers: it is CORRECT if it names one of them (different wording, case or "
    "punctuation is fine) and INCORRECT otherwise. Reply with one short sentence of reasoning "
    "and then a last line that is exactly `VERDICT: CORRECT` or `VERDICT: INCORRECT`."
)
_VERDICT = re.compile(r"VERDICT\s*:\s*\**\s*(CORRECT|INCORRECT)\b", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def build_judge_prompt(task: Task, answer: str | None) -> list[dict[str, Any]]:
    """The judge's conversation (DESIGN section 4 messages) for one answer to `task`.

    >>> build_judge_prompt(Task(id="t", question="Who?", answers=("Ada",)), "ada")[1]["content"].splitlines()[0]
    'Question: Who?'
    """
    references = "; ".join(task.answers) if task.answers else "(none given)"
    candidate = answer if answer is not None else "(no answer given)"
    user = (
        f"Question: {task.question}\nReference answers: {references}\nCandidate answer: {candidate}"
    )
    return [
        {"role": "system", "content": _JUDGE_SYSTEM},
        {"role": "user", "content": user},
    ]


def parse_judge_verdict(text: str | None) -> tuple[bool | None, str]:
    """`(passed, reason)` from a judge reply; passed is None when it gave no verdict line.

    >>> parse_judge_verdict("Same city.\\nVERDICT: CORRECT")
    (True, 'Same city.')
    >>> parse_judge_verdict("I am not sure")[0] is None
    True
    """
    body = _THINK.sub("", text or "")
    verdicts = _VERDICT.findall(body)
    if not verdicts:
        return None, f"the judge gave no verdict: {body.strip()[:200]!r}"
    reason = _VERDICT.split(body)[0].strip() or "no reason given"
    return verdicts[-1].upper() == "CORRECT", " ".join(reason.split())[:500]


def judge_verdict_regex(max_tokens: int) -> str:
    """The reply a constrained judge may give: one line of printable ASCII reasoning, short
    enough to leave room for the verdict in `max_tokens` (a token is at least one character),
    then `VERDICT: CORRECT` or `VERDICT: INCORRECT`; `parse_judge_verdict` reads every such reply.

    >>> judge_verdict_regex(64)
    '[ -~]{0,40}\\\\nVERDICT: (CORRECT|INCORRECT)'
    """
    room = max(0, min(400, max_tokens - 24))
    return f"[ -~]{{0,{room}}}\\nVERDICT: (CORRECT|INCORRECT)"


@dataclass(frozen=True, kw_only=True, slots=True)
class LLMJudge(TrajectoryVerifier):
    """Asks an engine whether the final answer matches a reference answer (greedy by default).

    The engine is any object with `chat(conversations, tools=None, sampling=...)` returning one
    list of completions (with `.text`) per conversation, as `selfplay.engines` do; it is taken
    from `engine` or from `context.engine`.
    """

    name: ClassVar[str] = "llm_judge"
    kind: ClassVar[str] = "llm"
    max_tokens: int = 256
    temperature: float = 0.0
    #: constrain decoding (`SamplingConfig.regex`, vLLM's structured outputs) to one line of
    #: reasoning and the verdict line, so every reply parses (`judge_verdict_regex`); needs an
    #: engine that honours structured outputs (vLLM in process or a vLLM server)
    constrained: bool = False
    engine: Any = field(default=None, compare=False, repr=False, metadata={"config": False})

    def __post_init__(self) -> None:
        if self.constrained and self.max_tokens < 32:
            raise ValueError(
                f"a constrained LLMJudge needs max_tokens >= 32 (room for the verdict line), "
                f"got {self.max_tokens}"
            )

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        engine = self.engine if self.engine is not None else (context.engine if context else None)
        if engine is None:
            return VerifierResult(passed=None, score=0.0, detail="no engine given to the LLM judge")
        from selfplay.engines.base import SamplingConfig

        answer = _final_answer(trajectory_messages(trajectory))
        if answer is None:
            return VerifierResult(
                passed=False,
                score=0.0,
                detail="no <answer>...</answer> in the final assistant message",
            )
        sampling = SamplingConfig(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            n=1,
            regex=judge_verdict_regex(self.max_tokens) if self.constrained else None,
        )
        outputs = engine.chat([build_judge_prompt(task, answer)], tools=None, sampling=sampling)
        first = outputs[0]
        completion = first[0] if isinstance(first, Sequence) else first
        passed, reason = parse_judge_verdict(getattr(completion, "text", str(completion)))
        return VerifierResult(passed=passed, score=1.0 if passed else 0.0, detail=reason)


@dataclass(frozen=True, kw_only=True, slots=True)
class BfclAst(TrajectoryVerifier):
    """Every tool call of the trajectory, in order, passes the task's BFCL answer key.

    The calls are checked as BFCL checks one model response (`selfplay.bfcl.check_calls`)
    against `task.props`: `functions` (the BFCL definitions), `ground_truth` (the answer key) and
    `bfcl.category` (simple, multiple or parallel rules), as `kag import tasks` stores them. A
    call the parser could not read, or whose arguments are not a JSON object, fails the check;
    so does a wrong call followed by a right one (BFCL scores one response). Score: 1 or 0.
    Undecided for a task without an answer key.

    >>> BfclAst().verify(task, rollout).passed  # doctest: +SKIP
    True
    """

    name: ClassVar[str] = "bfcl_ast"
    #: compare function names with their dots written as "_", as BFCL does for models whose
    #: APIs forbid dots in names (the tools must then be offered under those names)
    underscore_to_dot: bool = False

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        functions = task.props.get("functions")
        answer_key = task.props.get("ground_truth")
        category = (task.props.get("bfcl") or {}).get("category")
        if not functions or not answer_key or not isinstance(category, str):
            return VerifierResult(
                passed=None,
                score=0.0,
                detail=f"task {task.id!r} has no BFCL answer key (props functions, "
                "ground_truth and bfcl.category)",
            )
        malformed = sum(s.malformed for s in tool_steps(trajectory))
        recorded = context.n_malformed if context is not None else None
        if recorded is None:
            recorded = getattr(trajectory, "n_malformed", None)
        if isinstance(recorded, int):
            malformed = max(malformed, recorded)
        if malformed:
            return VerifierResult(
                passed=False, score=0.0, detail=f"{malformed} tool call(s) could not be parsed"
            )
        calls = []
        for _, name, args in _tool_calls(trajectory_messages(trajectory)):
            value = _json_or_none(args) if args.strip() else {}
            if not isinstance(value, Mapping):
                return VerifierResult(
                    passed=False,
                    score=0.0,
                    detail=f"the arguments of {name!r} are not a JSON object: {args[:120]!r}",
                )
            calls.append({name: dict(value)})
        verdict = check_calls(
            functions,
            calls,
            answer_key,
            category=category,
            underscore_to_dot=self.underscore_to_dot,
        )
        if verdict.valid:
            return VerifierResult(
                passed=True, score=1.0, detail=f"{len(calls)} call(s) match the answer key"
            )
        return VerifierResult(
            passed=False,
            score=0.0,
            detail=f"{verdict.error_type}: {verdict.error}",
            checks={verdict.error_type: False},
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class GraphState(TrajectoryVerifier):
    """The graph a trajectory's edits leave is the task's start graph with exactly its expected
    edits, and the trajectory stopped by itself (the final answer's text is not checked).

    The final state is rebuilt, not trusted: a fresh `ScratchGraph` from
    `task.props["graph_edit"]["start"]` replays every tool step whose recorded observation is
    not an error (a refused edit changes nothing), through the same edit tools; a replayed
    observation that differs from the recorded one fails the check (the trajectory does not
    reproduce). Then `state_diff(start, final)` must equal `graph_edit["expected"]`: a missing
    edit and an unrequested one both reject. Sub-checks: `replayed`, `required_edits` (none
    missing), `no_extra_edits`, `stopped` (the last assistant message makes no tool call).
    Score: the share of expected and made edits that agree (Jaccard), 0 when the replay fails.
    Undecided for a task without `graph_edit` props.

    >>> GraphState().verify(task, rollout).passed  # doctest: +SKIP
    True
    """

    name: ClassVar[str] = "graph_state"
    #: the edits listed in a failure's detail, of each kind (missing, extra)
    max_listed: int = 3

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        spec = task.props.get("graph_edit")
        if not isinstance(spec, Mapping) or "start" not in spec or "expected" not in spec:
            return VerifierResult(
                passed=None,
                score=0.0,
                detail=f"task {task.id!r} has no graph edits to check (props graph_edit)",
            )
        start = ScratchGraph.from_snapshot(spec["start"])
        final = start.copy()
        registry = edit_registry(final)
        for step in tool_steps(trajectory):
            recorded = _json_or_none(step.observation)
            if step.malformed or (isinstance(recorded, Mapping) and "error" in recorded):
                continue
            replayed = registry.call(step.name or "", step.arguments)
            if replayed.content != step.observation:
                return VerifierResult(
                    passed=False,
                    score=0.0,
                    detail=f"message {step.index}: {step.name} gives {replayed.content[:120]!r} "
                    f"when replayed, not the recorded {step.observation[:120]!r}",
                    checks={"replayed": False},
                )
        names = {i: e["name"] for g in (final, start) for i, e in g.entities.items()}
        made = {edit_key(item): item for item in state_diff(start, final)}
        expected = {edit_key(item): item for item in spec["expected"]}
        missing = [expected[k] for k in sorted(expected.keys() - made.keys())]
        extra = [made[k] for k in sorted(made.keys() - expected.keys())]
        stopped = _stopped(trajectory_messages(trajectory))
        union = len(expected.keys() | made.keys())
        score = len(expected.keys() & made.keys()) / union if union else 1.0
        why = []
        if missing:
            why.append(f"{len(missing)} requested edit(s) not made: {self._list(missing, names)}")
        if extra:
            why.append(f"{len(extra)} edit(s) not requested: {self._list(extra, names)}")
        if not stopped:
            why.append("the trajectory ended on a tool call instead of a final reply")
        return VerifierResult(
            passed=not why,
            score=score,
            detail="; ".join(why) or f"all {len(expected)} requested edits made, no other",
            checks={
                "replayed": True,
                "required_edits": not missing,
                "no_extra_edits": not extra,
                "stopped": stopped,
            },
        )

    def _list(self, items: Sequence[Sequence[Any]], names: Mapping[str, str]) -> str:
        shown = "; ".join(describe_edit(i, names) for i in items[: self.max_listed])
        more = len(items) - self.max_listed
        return shown + (f" and {more} more" if more > 0 else "")


def _stopped(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the last assistant message makes no tool call (the policy stopped by itself)."""
    for m in reversed(messages):
        if m.get("role") == "assistant":
            return not m.get("tool_calls")
    return False


#: verifier name -> class, to rebuild verifiers from their records
VERIFIERS: dict[str, type[TrajectoryVerifier]] = {
    cls.name: cls
    for cls in (
        AnswerMatch,
        EvidenceCoverage,
        ProcessCheck,
        ToolCallValidity,
        NoShortcut,
        InstructionFollowing,
        ToolStepCheck,
        LLMJudge,
        BfclAst,
        GraphState,
    )
}


def build_verifier(spec: str | Verifier, **config: Any) -> TrajectoryVerifier:
    """A verifier from its name, its `name@version` id, or its Verifier record.

    >>> build_verifier("process@1", min_calls_per_hop=2).min_calls_per_hop
    2
    """
    if isinstance(spec, Verifier):
        name, version, config = spec.name, spec.version, {**dict(spec.config), **config}
    else:
        name, _, version = spec.partition("@")
    cls = VERIFIERS.get(name)
    if cls is None:
        raise ValueError(f"unknown verifier {name!r}; known: {', '.join(VERIFIERS)}")
    if version and version != cls.version:
        raise ValueError(f"verifier {name!r} has version {cls.version}, not {version!r}")
    try:
        return cls(**config)
    except TypeError as err:
        raise ValueError(f"verifier {name!r}: bad config {config!r}: {err}") from None
