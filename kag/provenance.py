"""Provenance queries over any graph store; every function takes keyword-only filters, returns plain data.

| function | question |
|---|---|
| `trajectories(store, touched_entity=, used_tool=, failed_verifier=, ...)` | which attempts did this |
| `datasets_with_run(store, run_id=)` | which datasets contain trajectories of run R |
| `models_touching(store, entity_id=)` | which models were trained on data that touched entity X |
| `single_policy_tasks(store)` | tasks whose accepted trajectories all came from one policy |

Unknown ids and misspelt verdicts raise `ValueError` naming the value and the close matches; a bare
tool or verifier name (`get_relations`) stands for its one version, and several versions are an error
listing them.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from typing import Any

from kag.schema import VERDICTS
from kag.stores.base import GraphStore, TrajectoryQuery


def _close(value: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(value, choices, n=5, cutoff=0.6)
    return f"; close matches: {', '.join(near)}" if near else ""


def resolve_id(store: GraphStore, *, kind: str, value: str) -> str:
    """The id of a node of `kind`; Tool and Verifier also by bare name when it has one version.

    `resolve_id(store, kind="Tool", value="get_relations")` -> `"get_relations@1"`.
    """
    if store.get_nodes(kind, [value]):
        return value
    if kind in ("Tool", "Verifier"):
        named = [n.id for b in store.iter_nodes(kind, where={"name": value}) for n in b]
        if len(named) == 1:
            return named[0]
        if named:
            raise ValueError(
                f"{kind.lower()} {value!r} has several versions: {', '.join(sorted(named))}; "
                "name one"
            )
        known = [n.id for b in store.iter_nodes(kind) for n in b]
    elif kind == "Entity":  # graphs hold millions: suggest the entities of that name only
        known = [n.id for b in store.iter_nodes(kind, where={"name": value}) for n in b]
    else:
        known = [n.id for b in store.iter_nodes(kind) for n in b]
    raise ValueError(f"unknown {kind.lower()} id {value!r}{_close(value, known)}")


def trajectories(
    store: GraphStore,
    *,
    touched_entity: str | None = None,
    used_tool: str | None = None,
    failed_verifier: str | None = None,
    passed_verifier: str | None = None,
    run_id: str | None = None,
    verdict: str | None = None,
    policy: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """Trajectory ids matching every filter (touched entity and tool on the same step).

    `trajectories(store, touched_entity="ada", used_tool="get_entity", failed_verifier=
    "answer_match")` -> `["t2"]`.
    """
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
    query = TrajectoryQuery(
        touched_entity=None
        if touched_entity is None
        else resolve_id(store, kind="Entity", value=touched_entity),
        used_tool=None if used_tool is None else resolve_id(store, kind="Tool", value=used_tool),
        failed_verifier=None
        if failed_verifier is None
        else resolve_id(store, kind="Verifier", value=failed_verifier),
        passed_verifier=None
        if passed_verifier is None
        else resolve_id(store, kind="Verifier", value=passed_verifier),
        run_id=None if run_id is None else resolve_id(store, kind="Run", value=run_id),
        verdict=verdict,
        policy=policy,
        limit=limit,
    )
    return store.find_trajectories(query)


def datasets_with_run(store: GraphStore, *, run_id: str) -> list[dict[str, Any]]:
    """Datasets holding trajectories of run R: `[{"id", "path", "kind", "trajectories": n}]`."""
    run_id = resolve_id(store, kind="Run", value=run_id)
    ids = store.find_trajectories(TrajectoryQuery(run_id=run_id))
    counts: dict[str, int] = defaultdict(int)
    for e in store.edges("CONTAINS", target=ids) if ids else []:
        counts[e.source] += 1
    return [
        {"id": d.id, "path": d.path, "kind": d.kind, "trajectories": counts[d.id]}
        for d in sorted(store.get_nodes("Dataset", sorted(counts)), key=lambda n: n.id)
    ]


def models_touching(store: GraphStore, *, entity_id: str) -> list[dict[str, Any]]:
    """Models trained on a dataset with a trajectory that touched entity X, with those datasets."""
    entity_id = resolve_id(store, kind="Entity", value=entity_id)
    ids = store.find_trajectories(TrajectoryQuery(touched_entity=entity_id))
    datasets = sorted({e.source for e in store.edges("CONTAINS", target=ids)}) if ids else []
    via: dict[str, set[str]] = defaultdict(set)
    for e in store.edges("TRAINED_ON", target=datasets) if datasets else []:
        via[e.source].add(e.target)
    return [
        {"id": m.id, "stage": m.stage, "path": m.path, "datasets": sorted(via[m.id])}
        for m in sorted(store.get_nodes("Model", sorted(via)), key=lambda n: n.id)
    ]


def single_policy_tasks(store: GraphStore) -> dict[str, str]:
    """Task id -> the one policy behind all its accepted trajectories (tasks with several: left out)."""
    policies: dict[str, set[str]] = defaultdict(set)
    for batch in store.iter_nodes("Trajectory", where={"verdict": "accepted"}):
        for t in batch:
            policies[t.task_id].add(t.policy)
    return {task: next(iter(p)) for task, p in sorted(policies.items()) if len(p) == 1}
