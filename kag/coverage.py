"""How much of the graph accepted self-play tasks cover: per start entity and per relation type.

Self-play's coverage-driven sampling favours what is least covered; `kag stats --coverage` prints
the summary. Reads only the store protocol, so it works on every backend.

>>> coverage_counts(store)  # doctest: +SKIP
Coverage(start_entities={'ada': 2}, entities={...}, relation_types={'born_in': 2})
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kag.stores.base import GraphStore
from kag.walks import parse_step, path_branches

__all__ = ["Coverage", "coverage_counts", "coverage_stats"]


@dataclass(frozen=True, slots=True)
class Coverage:
    """Accepted-task counts per start entity, per entity on a path and per relation type."""

    start_entities: Counter = field(default_factory=Counter)
    entities: Counter = field(default_factory=Counter)
    relation_types: Counter = field(default_factory=Counter)
    accepted_tasks: int = 0


def coverage_counts(store: GraphStore) -> Coverage:
    """Count, over tasks with at least one accepted trajectory, what their walks went through."""
    task_ids: set[str] = set()
    for batch in store.iter_nodes("Trajectory", where={"verdict": "accepted"}):
        task_ids.update(t.task_id for t in batch)  # type: ignore[attr-defined]
    cov = Coverage(accepted_tasks=len(task_ids))
    ids = sorted(task_ids)
    for i in range(0, len(ids), 5_000):
        for task in store.get_nodes("Task", ids[i : i + 5_000]):
            path = task.path or {}  # type: ignore[attr-defined]
            entities = list(path.get("entities", []))
            if entities:
                cov.start_entities[entities[0]] += 1
            cov.entities.update(set(entities))
            # an inverse step `~r` covers the relation type `r`; a set or obfuscated task's
            # relations are those of all its chains
            steps = (
                [r for b in path_branches(path) for r in b.relations]
                if "branches" in path
                else path.get("relations", [])
            )
            cov.relation_types.update(parse_step(r)[0] for r in steps)
    return cov


def coverage_stats(store: GraphStore) -> dict[str, Any]:
    """The summary `kag stats --coverage` prints."""
    cov = coverage_counts(store)
    stats = store.stats()
    n_entities = stats["nodes"]["Entity"]
    n_types = len(stats["relation_types"])
    return {
        "accepted_tasks": cov.accepted_tasks,
        "start_entities_covered": len(cov.start_entities),
        "entities_covered": len(cov.entities),
        "entity_coverage": round(len(cov.entities) / n_entities, 6) if n_entities else 0.0,
        "relation_types_covered": len(cov.relation_types),
        "relation_type_coverage": round(len(cov.relation_types) / n_types, 6) if n_types else 0.0,
    }
