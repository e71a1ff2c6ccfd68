"""Write self-play results into the graph: tasks, trajectories, steps, verifications and their edges.

| function          | nodes                                 | edges                                       |
|-------------------|---------------------------------------|---------------------------------------------|
| `task_batch`      | Task                                  | SUPPORTS, CHECKED_BY, PRODUCED_BY (-> Run)  |
| `rollout_batch`   | Trajectory, Step (one per message),   | SOLVES, HAS_STEP, TRANSITIONS_TO, USED_TOOL,|
|                   | Verification                          | TOUCHED, VERIFIES, APPLIES, PRODUCED_BY     |
| `write_rollouts`  | many rollouts (+ the Run) in one transaction, TOUCHED filtered to entities   |
|                   | that exist                                                                   |

Every id is deterministic (`selfplay.rollout.trajectory_id`, `step_id`, the verification ids of
`selfplay.verifiers`) and every write an upsert, so writing the same rollout twice changes nothing.
USED_TOOL and TOUCHED go from the tool-result step (role "tool": one call and its observation) to
the Tool and Entity nodes, which is what `find_trajectories(touched_entity=, used_tool=)` joins on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kag.schema import Edge, Run, Step, Task, Trajectory, Verification
from kag.stores.base import GraphBatch, GraphStore
from selfplay.rollout import Rollout, step_id

__all__ = [
    "ScoredRollout",
    "merge_batch",
    "task_batch",
    "rollout_batch",
    "write_rollouts",
    "write_tasks",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class ScoredRollout:
    """A rollout with its verdict, reward and the verifications behind them."""

    rollout: Rollout
    verdict: str
    reward: float
    verifications: tuple[Verification, ...] = ()
    #: scoring facts stored in the Trajectory's props beside the rollout's counters (e.g.
    #: `n_invalid_calls`, which SFT exports filter on)
    props: Mapping[str, Any] = field(default_factory=dict)


def _edge(kind: str, source_kind: str, source: str, target_kind: str, target: str) -> Edge:
    return Edge(
        kind=kind, source_kind=source_kind, source=source, target_kind=target_kind, target=target
    )


def task_batch(tasks: Iterable[Task], *, run_id: str | None = None) -> GraphBatch:
    """Task nodes with SUPPORTS from every path entity, CHECKED_BY to the verifiers listed in
    `task.props["verifiers"]`, and PRODUCED_BY to the run that proposed them.

    >>> len(task_batch([task], run_id="r1").edges)  # 3 path entities, 2 verifiers, 1 run  # doctest: +SKIP
    6
    """
    batch = GraphBatch()
    for task in tasks:
        batch.add(task)
        for entity_id in dict.fromkeys(task.path.get("entities", [])):
            batch.add(_edge("SUPPORTS", "Entity", entity_id, "Task", task.id))
        for verifier_id in dict.fromkeys(task.props.get("verifiers", [])):
            batch.add(_edge("CHECKED_BY", "Task", task.id, "Verifier", verifier_id))
        if run_id:
            batch.add(_edge("PRODUCED_BY", "Task", task.id, "Run", run_id))
    return batch


def write_tasks(store: GraphStore, tasks: Sequence[Task], *, run_id: str | None = None) -> None:
    """Upsert tasks with their edges in one transaction."""
    if tasks:
        store.write(task_batch(tasks, run_id=run_id))


def rollout_batch(
    scored: ScoredRollout, *, existing_entities: set[str] | None = None
) -> GraphBatch:
    """Everything one rollout puts in the graph (see the module table).

    `existing_entities` limits TOUCHED edges to entities known to exist (a tool may echo an id
    the model made up); None trusts every touched id.
    """
    r = scored.rollout
    traj = Trajectory(
        id=r.id,
        task_id=r.task.id,
        run_id=r.run_id,
        policy=r.policy,
        status=r.status,
        verdict=scored.verdict,
        reward=float(scored.reward),
        n_turns=r.n_turns,
        n_tokens=r.n_generated,
        answer=r.answer,
        props={**r.counters(), **scored.props},
    )
    batch = GraphBatch().add(traj)
    batch.add(_edge("SOLVES", "Trajectory", r.id, "Task", r.task.id))
    if r.run_id:
        batch.add(_edge("PRODUCED_BY", "Trajectory", r.id, "Run", r.run_id))
    previous: str | None = None
    for idx, message in enumerate(r.messages):
        sid = step_id(r.id, idx)
        batch.add(
            Step.from_message(
                message,
                id=sid,
                trajectory_id=r.id,
                idx=idx,
                n_tokens=r.message_tokens[idx] if idx < len(r.message_tokens) else 0,
            )
        )
        batch.add(_edge("HAS_STEP", "Trajectory", r.id, "Step", sid))
        if previous is not None:
            batch.add(_edge("TRANSITIONS_TO", "Step", previous, "Step", sid))
        previous = sid
        result = r.tool_results.get(idx)
        if result is None:
            continue
        if result.tool_id:
            batch.add(_edge("USED_TOOL", "Step", sid, "Tool", result.tool_id))
        for entity_id in dict.fromkeys(result.touched_entity_ids):
            if existing_entities is None or entity_id in existing_entities:
                batch.add(_edge("TOUCHED", "Step", sid, "Entity", entity_id))
    for v in scored.verifications:
        batch.add(v)
        batch.add(_edge("VERIFIES", "Verification", v.id, v.subject_kind, v.subject_id))
        batch.add(_edge("APPLIES", "Verification", v.id, "Verifier", v.verifier_id))
    return batch


def write_rollouts(
    store: GraphStore,
    items: Sequence[ScoredRollout],
    *,
    run: Run | None = None,
    grow: Callable[[ScoredRollout], GraphBatch] | None = None,
) -> int:
    """Write rollouts (and the Run record, e.g. with updated counters) in one transaction.

    Returns the number of records written. Touched ids that are not entities of the graph are
    dropped from TOUCHED (one lookup for the whole batch). `grow` gives the new knowledge a
    scored rollout adds to the graph (a compute task's derived fact:
    `selfplay.families.grow_graph`), written in the same transaction.
    """
    touched = sorted({e for s in items for e in s.rollout.touched_entity_ids})
    existing: set[str] = set()
    for a in range(0, len(touched), 5_000):
        existing.update(n.id for n in store.get_nodes("Entity", touched[a : a + 5_000]))
    batch = GraphBatch()
    if run is not None:
        batch.add(run)
    for scored in items:
        merge_batch(batch, rollout_batch(scored, existing_entities=existing))
        if grow is not None:
            merge_batch(batch, grow(scored))
    if len(batch):
        store.write(batch)
    return len(batch)


def merge_batch(into: GraphBatch, part: GraphBatch) -> None:
    """Append every record of `part` to `into`."""
    for kind, nodes in part.nodes.items():
        into.nodes.setdefault(kind, []).extend(nodes)
    into.relations.extend(part.relations)
    into.edges.extend(part.edges)
    into.phrases.update(part.phrases)
