"""`kag copy SRC DST`: a whole graph from one backend to another (SQLite <-> Neo4j), streaming.

Nodes of every kind go first, then relation phrases and relations, then edges, each read in
batches from the source and upserted into the destination, so memory stays flat and a rerun
after an interruption completes the copy without duplicates. The copy ends by comparing
`stats()` of both graphs.

>>> copy_graph(open_store("sqlite:///kag.db"), open_store("neo4j://neo4j:pw@localhost:7687"))  # doctest: +SKIP
{'Entity': 14541, ..., 'RELATION': 310116, ...}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from kag.schema import EDGE_KINDS, NODE_KINDS
from kag.stores import GraphStore
from kag.stores.base import GraphBatch, StoreError

__all__ = ["copy_graph"]


def copy_graph(
    source: GraphStore,
    destination: GraphStore,
    *,
    batch_size: int = 10_000,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Upsert every node, relation phrase, relation and edge of `source` into `destination`.

    Returns the number of records copied per node kind, `RELATION` and edge kind. Raises
    `StoreError` when the destination's stats differ from the source's afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    counts: dict[str, int] = {}

    def batches() -> Iterator[GraphBatch]:
        for kind in NODE_KINDS:
            for nodes in source.iter_nodes(kind, batch_size=batch_size):
                counts[kind] = counts.get(kind, 0) + len(nodes)
                if progress:
                    progress(kind, counts[kind])
                yield GraphBatch(nodes={kind: list(nodes)})
        for relations in source.iter_relations(batch_size=batch_size):
            counts["RELATION"] = counts.get("RELATION", 0) + len(relations)
            if progress:
                progress("RELATION", counts["RELATION"])
            yield GraphBatch(relations=list(relations))
        for kind in EDGE_KINDS:
            for edges in source.iter_edges(kind, batch_size=batch_size):
                counts[kind] = counts.get(kind, 0) + len(edges)
                if progress:
                    progress(kind, counts[kind])
                yield GraphBatch(edges=list(edges))

    phrases = source.relation_phrases()
    if phrases:
        destination.set_relation_phrases(phrases)
    destination.write_many(batches())
    want, got = source.stats(), destination.stats()
    for section in ("nodes", "edges", "relation_types"):
        if want[section] != got[section]:
            diff = {
                k: (want[section].get(k, 0), got[section].get(k, 0))
                for k in set(want[section]) | set(got[section])
                if want[section].get(k, 0) != got[section].get(k, 0)
            }
            raise StoreError(
                f"copy finished but the {section} counts differ (source, destination): "
                f"{dict(sorted(diff.items())[:10])}"
            )
    return counts
