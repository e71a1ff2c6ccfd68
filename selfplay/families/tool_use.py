"""The `tool_use` family: function-calling tasks (BFCL's), their verifiers, tools and gold calls.

A tool_use task asks for function calls, not for an answer looked up in the graph. Its tasks come
from two sources, each with its own tools and checks (`family_suite()` picks by task):

| source       | tasks                                  | tools                 | checked by          |
|--------------|----------------------------------------|-----------------------|---------------------|
| BFCL         | imported (`kag import tasks`)          | the task's functions  | `bfcl_ast@1`        |
| `graph_edit` | proposed by a run                      | edit tools on a       | `graph_state@1`     |
|              | (`selfplay.families.graph_edit`)       | scratch copy          |                     |

An imported task offers its own functions (Tool nodes, ids in `task.props["tools"]`) and passes
when its calls match its answer key by BFCL's AST rules (`bfcl_ast@1`); a graph-edit task passes
when the scratch copy it edits ends in the expected state (`graph_state@1`). Both need calls
valid for the tools' JSON schemas (`tool_call_validity@1`).

| name                 | what it gives                                                             |
|----------------------|---------------------------------------------------------------------------|
| `FAMILY`             | `"tool_use"`                                                              |
| `SYSTEM_PROMPT`      | the family's system prompt                                                |
| `suite()`            | the BFCL `VerifierSuite`: required `bfcl_ast@1`, `tool_call_validity@1`   |
| `family_suite()`     | `ToolUseSuite`: each task scored by its source's suite                   |
| `registry(store, task)` | a `ToolRegistry` of the task's tools; a call is recorded, not executed |
|                      | (a graph-edit task: the edit tools on a fresh scratch copy)              |
| `system_prompt(task)`| `SYSTEM_PROMPT` and the task's own system message, if it has one          |
| `oracle_calls(task)` | the gold calls `(name, arguments)`: the answer key's first allowed values |
| `oracle_turn(task, messages)` | the oracle's next message: every gold call, then a final answer  |
|                      | (a graph-edit task: `selfplay.families.graph_edit.oracle_turn`)           |
| `expected_calls(functions, ground_truth)` | the gold calls in BFCL's `{name: arguments}` shape |
| `answer_key_problem(functions, ground_truth, category)` | why no call can pass, or None |
| `answers_of(calls)`  | the gold calls as text, `task.answers` of an imported task                |

Task props of a tool_use task (`kag import tasks --format bfcl` writes them): `tools` (tool ids,
one per function), `functions` (the definitions as BFCL gives them, which `bfcl_ast` reads),
`ground_truth` (the answer key), `messages` (the row's conversation), `bfcl` (`{"id",
"category"}`), `source`, `verifiers`. `task.answers` are the gold calls as text, `task.hops`
the number of expected calls.

>>> suite().ids
['bfcl_ast@1', 'tool_call_validity@1']
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import jsonschema

from kag.schema import Task
from selfplay.bfcl import call_text, check_calls, gold_calls
from selfplay.families import graph_edit
from selfplay.rewards import RewardConfig, SuiteResult, VerifierSuite
from selfplay.tooldefs import to_json_schema
from selfplay.tools import Observation, ToolRegistry
from selfplay.toolschema import schema_validator_class
from selfplay.verifiers import BfclAst, GraphState, ToolCallValidity, VerifyContext

__all__ = [
    "FAMILY",
    "SYSTEM_PROMPT",
    "ToolUseSuite",
    "family_suite",
    "answer_key_problem",
    "answers_of",
    "expected_calls",
    "oracle_calls",
    "oracle_turn",
    "registry",
    "suite",
    "system_prompt",
]

FAMILY = "tool_use"
SYSTEM_PROMPT = (
    "You have functions you can call. Do what the user asks by calling the functions that are "
    "needed, with the arguments the request gives, all in one turn (several calls when the "
    "request asks for several). The calls are recorded, not executed. Then reply with a short "
    "summary of the calls inside <answer>...</answer>."
)
#: what a recorded call gives back: the calls are checked, never executed
RECORDED = "recorded; this function is not executed here"


def suite() -> VerifierSuite:
    """Required: `bfcl_ast@1` (the outcome, weight 0.8 of the reward) and
    `tool_call_validity@1` (the process score). No step check: the calls touch no entities.

    >>> suite().reward.outcome
    'bfcl_ast'
    """
    return VerifierSuite(
        required=[BfclAst(), ToolCallValidity()],
        steps=None,
        reward=RewardConfig(outcome="bfcl_ast", process=("tool_call_validity",)),
    )


class ToolUseSuite(VerifierSuite):
    """The tool_use family's suite: a graph-edit task is scored by `graph_edit.suite()`, every
    other (BFCL) task by `suite()`. Its ids and Verifier records are those of both.

    >>> family_suite().ids
    ['bfcl_ast@1', 'graph_state@1', 'tool_call_validity@1']
    """

    def __init__(self) -> None:
        self.bfcl = suite()
        self.graph_edit = graph_edit.suite()
        super().__init__(
            required=[BfclAst(), GraphState(), ToolCallValidity()],
            steps=None,
            reward=self.bfcl.reward,
        )

    def suite_for(self, task: Task) -> VerifierSuite:
        """The suite that scores `task`."""
        return self.graph_edit if graph_edit.is_graph_edit(task) else self.bfcl

    def evaluate(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> SuiteResult:
        return self.suite_for(task).evaluate(task, trajectory, context)


def family_suite() -> ToolUseSuite:
    """The suite of every tool_use task (`ToolUseSuite`)."""
    return ToolUseSuite()


def registry(store: Any, task: Task) -> ToolRegistry:
    """The task's tools (`task.props["tools"]`, read from the graph), each answering a valid
    call with `{"status": "recorded; ..."}`: an error observation would tell the policy that a
    right call failed. A call the schema rejects still gets an error observation. A graph-edit
    task gets the edit tools on a fresh scratch copy of its subgraph (`graph_edit.registry`).

    >>> registry(graph, task).names  # doctest: +SKIP
    ['calculate_triangle_area']
    """
    if graph_edit.is_graph_edit(task):
        return graph_edit.registry(task)
    store = getattr(store, "store", store)
    ids = list(task.props.get("tools") or ())
    if not ids:
        raise ValueError(f"task {task.id!r} lists no tools (props['tools'])")
    records = {t.id: t for t in store.get_nodes("Tool", ids)}
    missing = [i for i in ids if i not in records]
    if missing:
        raise ValueError(f"task {task.id!r} names tools the graph lacks: {missing}")
    out = ToolRegistry()
    for tool_id in ids:
        out.register(records[tool_id], _recorder(records[tool_id].name))
    return out


def _recorder(name: str) -> Callable[..., Observation]:
    def record(**arguments: Any) -> Observation:
        return Observation(content=json.dumps({"status": RECORDED, "function": name}))

    return record


def system_prompt(task: Task) -> str:
    """`SYSTEM_PROMPT`, then the task's own system message(s) (some BFCL rows have one); a
    graph-edit task's is `graph_edit.SYSTEM_PROMPT`.

    >>> system_prompt(Task(id="t", question="q", family="tool_use")) == SYSTEM_PROMPT
    True
    """
    if graph_edit.is_graph_edit(task):
        return graph_edit.SYSTEM_PROMPT
    own = [
        m["content"]
        for m in task.props.get("messages") or ()
        if m.get("role") == "system" and m.get("content")
    ]
    return "\n\n".join([SYSTEM_PROMPT, *own])


# --------------------------------------------------------------------------- gold calls


@lru_cache(maxsize=4096)
def _property_validators(definition_json: str) -> dict[str, Any]:
    definition = json.loads(definition_json)
    schema = to_json_schema(definition.get("parameters") or {"type": "dict"}, definition["name"])
    cls = schema_validator_class(schema)
    return {p: cls(s) for p, s in (schema.get("properties") or {}).items()}


def _schema_accepts(functions: Sequence[Mapping[str, Any]]) -> Callable[[str, str, Any], bool]:
    """Whether a value is valid for a parameter's JSON schema (as the Tool node holds it)."""
    validators = {
        f["name"]: _property_validators(json.dumps(f, sort_keys=True, default=str))
        for f in functions
    }

    def accepts(function: str, param: str, value: Any) -> bool:
        checks = validators.get(function, {})
        return param in checks and checks[param].is_valid(value)

    return accepts


def expected_calls(
    functions: Sequence[Mapping[str, Any]], ground_truth: Sequence[Mapping[str, Any]]
) -> list[dict[str, dict[str, Any]]]:
    """The gold calls (BFCL's `{name: arguments}` shape): first allowed values, passing over
    values the tool's JSON schema rejects when the answer key allows another or leaving out."""
    return gold_calls(functions, ground_truth, accepts=_schema_accepts(functions))


def answer_key_problem(
    functions: Sequence[Mapping[str, Any]], ground_truth: Sequence[Mapping[str, Any]], category: str
) -> tuple[str, str] | None:
    """Why a BFCL row can never be solved, or None: `("unsatisfiable", why)` when even the gold
    calls fail BFCL's own checker (its answer key contradicts its functions), `("schema_conflict",
    why)` when every call the key allows breaks the tools' JSON schemas (an enum or type the key
    ignores), which `tool_call_validity` rejects.

    >>> f = [{"name": "f", "parameters": {"type": "dict", "required": ["x"],
    ...     "properties": {"x": {"type": "integer"}}}}]
    >>> answer_key_problem(f, [{"f": {"x": [1]}}], "simple") is None
    True
    >>> answer_key_problem(f, [{"f": {"x": [1], "y": [2]}}], "simple")[0]
    'unsatisfiable'
    """
    calls = expected_calls(functions, ground_truth)
    verdict = check_calls(functions, calls, ground_truth, category=category)
    if not verdict.valid:
        return "unsatisfiable", f"{verdict.error_type}: {verdict.error}"
    validators = {
        f["name"]: _property_validators(json.dumps(f, sort_keys=True, default=str))
        for f in functions
    }
    for call in calls:
        ((name, arguments),) = call.items()
        for param, value in arguments.items():
            check = validators.get(name, {}).get(param)
            if check is not None and not check.is_valid(value):
                error = jsonschema.exceptions.best_match(check.iter_errors(value))
                return "schema_conflict", f"{name}({param}={value!r}): {error.message}"
    return None


def oracle_calls(task: Task) -> list[tuple[str, dict[str, Any]]]:
    """The gold calls of a tool_use task as `(function name, arguments)`, in the answer key's
    order.

    >>> oracle_calls(task)  # doctest: +SKIP
    [('calculate_triangle_area', {'base': 10, 'height': 5, 'unit': 'units'})]
    """
    calls = expected_calls(task.props.get("functions") or (), task.props.get("ground_truth") or ())
    return [next(iter(c.items())) for c in calls]


def oracle_turn(task: Task, messages: Sequence[Mapping[str, Any]], *, final: bool = False) -> str:
    """The oracle's next assistant message: every gold call in one turn (as `<tool_call>`
    blocks), then, once they ran (or on the final turn), the answer naming them.

    >>> oracle_turn(task, [system, user]).count("<tool_call>")  # doctest: +SKIP
    2
    """
    if graph_edit.is_graph_edit(task):
        return graph_edit.oracle_turn(task, messages, final=final)
    called = any(m.get("role") == "assistant" for m in messages)
    if called or final:
        listed = "; ".join(task.answers) or "no call"
        return f"<answer>{listed}</answer>"
    calls = oracle_calls(task)
    blocks = "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        + "\n</tool_call>"
        for name, arguments in calls
    )
    return f"<think>{len(calls)} call(s) do what is asked.</think>\n{blocks}"


def answers_of(calls: Sequence[Mapping[str, Mapping[str, Any]]]) -> tuple[str, ...]:
    """The readable answers of a task: each gold call as Python text (`f(x=1)`)."""
    return tuple(call_text(c) for c in calls)
