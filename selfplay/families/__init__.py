"""Task families: what each teacher domain brings to a self-play run (proposer, verifiers, growth).

| family        | tasks come from                                       | suite (`family_suite`)               |
|---------------|-------------------------------------------------------|--------------------------------------|
| `search`      | graph walks (`selfplay.proposer.Proposer`)            | `VerifierSuite.default()`            |
| `instruction` | search tasks with output constraints composed on them | default + `instruction_following@1`  |
|               | (`selfplay.instruction.compose_tasks`)                | (required, in the reward)            |
| `compute`     | numeric facts of the graph: sums, means, counts,      | `numeric_match@1` + evidence,        |
|               | argmax, comparisons, differences                      | shortcut and call checks             |
|               | (`selfplay.families.compute.ComputeProposer`)         | (`selfplay.families.compute.suite`)  |
| `tool_use`    | BFCL function-calling sets, imported (`kag import     | `bfcl_ast@1`, `tool_call_validity@1` |
|               | tasks`; `selfplay.taskimport.import_bfcl_tasks`)      | (`selfplay.families.tool_use.suite`) |
|               | and multi-turn edits of a scratch copy of a subgraph  | `graph_state@1` (the final state),   |
|               | (rename, move or remove relations, add linked         | `tool_call_validity@1`               |
|               | entities...), proposed by a run                       | (`selfplay.families.graph_edit`)     |
|               | (`selfplay.families.graph_edit.GraphEditProposer`)    |                                      |

Every family but tool_use shares the graph tools and the solver loop (a run with compute tasks
also offers the sandboxed `python` tool); a tool_use task brings its own tools and system prompt
(`task_setup`): an imported one its functions, a graph-edit one the edit tools on a fresh scratch
copy of its subgraph per trajectory (`selfplay.edit_tools`), so the graph itself is never edited.
A run that mixes families scores each task with its own family's suite (`Scorer(suites=...)`;
tool_use picks BFCL's or graph-edit's by task), and accepted compute trajectories grow the graph
(`grow_graph`: a derived fact with PRODUCES and DEPENDS_ON).

| module                         | what it holds                                                |
|--------------------------------|--------------------------------------------------------------|
| `selfplay.families.compute`    | the compute proposer, `numeric_match@1`, its oracle, growth  |
| `selfplay.families.tool_use`   | the tool_use suite, per-task tools and prompt, gold calls    |
| `selfplay.families.graph_edit` | the graph-edit proposer, its suite, prompt and oracle        |

>>> "instruction_following@1" in [v.id for v in family_suite("instruction").required]
True
>>> split_request(5, ("search", "instruction"))
{'search': 3, 'instruction': 2}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kag.schema import TASK_FAMILIES, Task, Tool
from kag.stores.base import GraphBatch, GraphStore
from selfplay.proposer import Proposal, Proposer
from selfplay.rewards import VerifierSuite
from selfplay.solver import TaskSetup, TurnBudget
from selfplay.writeback import ScoredRollout

__all__ = [
    "FAMILY_PROTOCOLS",
    "PROPOSED_FAMILIES",
    "check_families",
    "family_suite",
    "family_tools",
    "grow_graph",
    "FamilyProposer",
    "split_request",
    "task_setup",
]

#: each family's protocol (`SolverConfig.budgets`), applied by `kag selfplay run` and `kag eval`
#: unless `--max-turns` or `--max-new-tokens` is given (which then holds for every task):
#: search chains: the 8 turns and 256 tokens of the solver's defaults; set and obfuscated search
#: tasks: 16 turns (a hop may reach 50 entities, expanded 8 calls a turn); compute: room for a
#: python program (384 tokens); instruction: room for a formatted answer (384); tool_use:
#: 12 turns (several edits, a read before some, a recovery after a refused call)
FAMILY_PROTOCOLS: dict[str, TurnBudget] = {
    "search": TurnBudget(max_turns=8, max_new_tokens=256),
    "search/set": TurnBudget(max_turns=16, max_new_tokens=256),
    "search/obfuscated": TurnBudget(max_turns=16, max_new_tokens=256),
    "compute": TurnBudget(max_turns=8, max_new_tokens=384),
    "instruction": TurnBudget(max_turns=8, max_new_tokens=384),
    "tool_use": TurnBudget(max_turns=12, max_new_tokens=256),
}

#: families a self-play run proposes from the graph
PROPOSED_FAMILIES: tuple[str, ...] = ("search", "instruction", "compute", "tool_use")


def check_families(families: Sequence[str]) -> tuple[str, ...]:
    """The families of a run, checked: known, none twice.

    >>> check_families(["search"])
    ('search',)
    """
    out = tuple(families)
    if not out:
        raise ValueError("a run needs at least one task family, e.g. ('search',)")
    for family in out:
        if family not in TASK_FAMILIES:
            raise ValueError(
                f"unknown task family {family!r}; choose from {', '.join(TASK_FAMILIES)}"
            )
    if len(set(out)) != len(out):
        raise ValueError(f"a task family is named twice: {list(out)}")
    return out


def family_suite(family: str, *, judge: Any = None) -> VerifierSuite:
    """The verifier suite that scores tasks of `family` (with an LLM judge, when given)."""
    if family == "instruction":
        from selfplay.instruction import suite

        return suite(judge=judge)
    if family == "compute":
        from selfplay.families.compute import suite

        return suite(judge=judge)
    if family == "tool_use":  # calls against an answer key or a final state: no judge applies
        from selfplay.families.tool_use import family_suite as tool_use_suite

        return tool_use_suite()
    return VerifierSuite.default(judge=judge)


def family_tools(families: Sequence[str]) -> list[Tool]:
    """Tool nodes a run of these families must hold before its trajectories are written (the
    Steps of graph-edit trajectories point at the edit tools).

    >>> [t.name for t in family_tools(["tool_use"])][:2]
    ['find_entities', 'read_entity']
    """
    if "tool_use" not in families:
        return []
    from selfplay.edit_tools import edit_tool_records

    return edit_tool_records()


def split_request(n: int, families: Sequence[str]) -> dict[str, int]:
    """`n` new tasks shared out over the families, the first ones getting the remainder."""
    base, extra = divmod(n, len(families))
    return {f: base + (i < extra) for i, f in enumerate(families)}


class FamilyProposer:
    """New tasks of every family of a run: the search `Proposer` given, and the other families'
    proposers built on first use (a compute proposer reads the graph's numbers once).

    >>> FamilyProposer(store, Proposer(store)).propose("search", 4, hops=2, seed=0).tasks  # doctest: +SKIP
    """

    def __init__(self, store: GraphStore, search: Proposer) -> None:
        self.store = store
        self.search = search
        self._compute: Any = None
        self._graph_edit: Any = None

    def propose(
        self,
        family: str,
        n: int,
        *,
        hops: int,
        seed: int,
        coverage: Any = None,
        exclude: Iterable[str] = (),
    ) -> Proposal:
        """Up to `n` new tasks of `family`; `exclude` holds task ids to treat as known.

        Instruction tasks compose constraints onto fresh search tasks of walks no instruction
        task of the graph is built on yet (their `base_task_id`s are excluded), so each walk
        gives one. tool_use tasks are graph-edit tasks of `hops` edits (at least two).
        """
        if family == "search":
            return self.search.propose(n, hops=hops, seed=seed, coverage=coverage, exclude=exclude)
        if family == "instruction":
            from selfplay.instruction import compose_tasks

            composed_on = {
                str(t.props.get("base_task_id"))
                for batch in self.store.iter_nodes("Task", where={"family": "instruction"})
                for t in batch
            }
            base = self.search.propose(
                n, hops=hops, seed=seed, coverage=coverage, exclude={*composed_on, *exclude}
            )
            tasks = compose_tasks(base.tasks, seed=seed)
            dropped = Counter(base.dropped)
            if len(tasks) < len(base.tasks):
                dropped["no_constraint_fits"] += len(base.tasks) - len(tasks)
            return Proposal(tasks=tasks, dropped=dropped, walks=base.walks, rewrites=base.rewrites)
        if family == "compute":
            if self._compute is None:
                from selfplay.families.compute import ComputeProposer

                self._compute = ComputeProposer(self.store)
            return self._compute.propose(n, seed=seed, exclude=exclude)
        if family == "tool_use":
            if self._graph_edit is None:
                from selfplay.families.graph_edit import GraphEditProposer

                self._graph_edit = GraphEditProposer(self.store)
            return self._graph_edit.propose(n, edits=hops, seed=seed, exclude=exclude)
        raise ValueError(f"self-play does not propose {family!r} tasks (see check_families)")


def task_setup(store: GraphStore) -> Callable[[Task], TaskSetup | None]:
    """`Solver(setup=...)` for a graph: a tool_use task is offered its own functions (the Tool
    nodes it lists) with its system prompt, a graph-edit one the edit tools on a fresh scratch
    copy (one per call, so one per trajectory); every other task the run's tools.

    >>> setup = task_setup(store); setup(bfcl_task).tools.names  # doctest: +SKIP
    ['calculate_triangle_area']
    """

    def setup(task: Task) -> TaskSetup | None:
        if task.family != "tool_use":
            return None
        from selfplay.families import tool_use

        return TaskSetup(
            tools=tool_use.registry(store, task), system_prompt=tool_use.system_prompt(task)
        )

    return setup


def grow_graph(scored: ScoredRollout) -> GraphBatch:
    """The new knowledge one scored rollout adds to the graph: a compute trajectory's derived
    fact when it was accepted (`selfplay.families.compute.growth_batch`), else nothing."""
    if scored.rollout.task.family == "compute":
        from selfplay.families.compute import growth_batch

        return growth_batch(scored)
    return GraphBatch()
