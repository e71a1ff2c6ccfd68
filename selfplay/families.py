"""Task families: what each teacher domain brings to a self-play run (proposer, verifiers, protocol).

| family        | tasks come from                                       | suite (`family_suite`)               |
|---------------|-------------------------------------------------------|--------------------------------------|
| `search`      | graph walks (`selfplay.proposer.Proposer`)            | `VerifierSuite.default()`            |
| `instruction` | search tasks with output constraints composed on them | default + `instruction_following@1`  |
|               | (`selfplay.instruction.compose_tasks`)                | (required, in the reward)            |

`compute` and `tool_use` tasks are not proposed by a run yet (see `PROPOSED_FAMILIES`); a run
asked for them says so. Every family shares the graph tools and the solver loop; a run that mixes
families scores each task with its own family's suite (`Scorer(suites=...)`).

>>> "instruction_following@1" in [v.id for v in family_suite("instruction").required]
True
>>> split_request(5, ("search", "instruction"))
{'search': 3, 'instruction': 2}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from kag.schema import TASK_FAMILIES
from kag.stores.base import GraphStore
from selfplay.proposer import Proposal, Proposer
from selfplay.rewards import VerifierSuite

__all__ = [
    "PROPOSED_FAMILIES",
    "check_families",
    "family_suite",
    "family_suites",
    "propose_family",
    "split_request",
]

#: families a self-play run proposes from the graph
PROPOSED_FAMILIES: tuple[str, ...] = ("search", "instruction")


def check_families(families: Sequence[str]) -> tuple[str, ...]:
    """The families of a run, checked: known, proposed by a run, none twice.

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
        if family not in PROPOSED_FAMILIES:
            raise ValueError(
                f"self-play does not propose {family!r} tasks yet (it proposes "
                f"{', '.join(PROPOSED_FAMILIES)}); import such tasks with `kag import tasks` "
                "and measure a model on them with `kag eval --tasks FILE`"
            )
    if len(set(out)) != len(out):
        raise ValueError(f"a task family is named twice: {list(out)}")
    return out


def family_suite(family: str, *, judge: Any = None) -> VerifierSuite:
    """The verifier suite that scores tasks of `family` (with an LLM judge, when given)."""
    if family == "instruction":
        from selfplay.instruction import suite

        return suite(judge=judge)
    return VerifierSuite.default(judge=judge)


def family_suites(families: Sequence[str], *, judge: Any = None) -> dict[str, VerifierSuite]:
    """Family -> suite for every family of a run but search (the default suite scores it)."""
    return {f: family_suite(f, judge=judge) for f in families if f != "search"}


def split_request(n: int, families: Sequence[str]) -> dict[str, int]:
    """`n` new tasks shared out over the families, the first ones getting the remainder."""
    base, extra = divmod(n, len(families))
    return {f: base + (i < extra) for i, f in enumerate(families)}


def propose_family(
    family: str,
    proposer: Proposer,
    n: int,
    *,
    hops: int,
    seed: int,
    coverage: Any = None,
    exclude: Iterable[str] = (),
    store: GraphStore,
) -> Proposal:
    """Up to `n` new tasks of `family` from the graph; `exclude` holds task ids to treat as known.

    Instruction tasks compose constraints onto fresh search tasks of walks no instruction task
    of the graph is built on yet (their `base_task_id`s are excluded), so each walk gives one.
    """
    if family == "search":
        return proposer.propose(n, hops=hops, seed=seed, coverage=coverage, exclude=exclude)
    if family == "instruction":
        from selfplay.instruction import compose_tasks

        composed_on = {
            str(t.props.get("base_task_id"))
            for batch in store.iter_nodes("Task", where={"family": "instruction"})
            for t in batch
        }
        base = proposer.propose(
            n, hops=hops, seed=seed, coverage=coverage, exclude={*composed_on, *exclude}
        )
        tasks = compose_tasks(base.tasks, seed=seed)
        dropped = Counter(base.dropped)
        if len(tasks) < len(base.tasks):
            dropped["no_constraint_fits"] += len(base.tasks) - len(tasks)
        return Proposal(tasks=tasks, dropped=dropped, walks=base.walks, rewrites=base.rewrites)
    raise ValueError(f"self-play does not propose {family!r} tasks (see check_families)")
