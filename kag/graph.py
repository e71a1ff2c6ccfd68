"""The curation API: `kag.open(url)` returns a `KnowledgeActionGraph` over any backend.

>>> with kag.open("sqlite:///kag.db") as g:  # doctest: +SKIP
...     g.upsert_entities([{"id": "ada", "name": "Ada Lovelace", "type": "person"}])
...     g.upsert_relations([("ada", "born_in", "london")])
...     g.neighbors("ada")

Inputs may be records (`kag.schema.Entity`, ...) or plain dicts; relations may also be
`(source, type, target)` tuples. Writes are batched idempotent upserts; a bad record raises a
`SchemaError` naming it before anything of its batch is written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import networkx as nx

from kag.schema import (
    Edge,
    Entity,
    Node,
    Relation,
    SchemaError,
    Tool,
    Verifier,
)
from kag.stores import GraphBatch, GraphStore, TrajectoryQuery, open_store, redact_url, resolve_url
from kag.stores.base import Direction, NameMatch, RelationArrays, TrajectoryContent

__all__ = ["KnowledgeActionGraph", "open"]


def open(url: str | None = None, *, upgrade: bool = True) -> KnowledgeActionGraph:  # noqa: A001
    """Open the graph at `url` (default `$KAG_GRAPH`, then `sqlite:///kag.db`).

    With `upgrade=True` (the default) the schema is created or migrated first, so a new SQLite
    file or an empty Neo4j database is ready to use.
    """
    store = open_store(resolve_url(url))
    try:
        if upgrade:
            store.upgrade()
    except BaseException:
        store.close()
        raise
    return KnowledgeActionGraph(store)


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class KnowledgeActionGraph:
    """Curate and query a knowledge-action graph; usable as a context manager."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store

    @property
    def url(self) -> str:
        """The graph URL without its password."""
        return redact_url(self.store.url)

    def __enter__(self) -> KnowledgeActionGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"KnowledgeActionGraph({self.url!r})"

    # ------------------------------------------------------------------ writing

    def write(self, batch: GraphBatch) -> None:
        """Upsert a mixed batch of nodes, relations and edges in one transaction."""
        self.store.write(batch)

    def upsert(self, *records: Node | Relation | Edge) -> None:
        """Upsert a few records of any kind together."""
        self.store.write(GraphBatch().extend(records))

    def _upsert_nodes(
        self, cls: type[Node], items: Iterable[Node | Mapping[str, Any]], batch_size: int
    ) -> int:
        n = 0
        for chunk in _batched(items, batch_size):
            records = [_as_node(cls, item, i + n) for i, item in enumerate(chunk)]
            self.store.write(GraphBatch(nodes={cls.KIND: records}))
            n += len(records)
        return n

    def upsert_entities(
        self, items: Iterable[Entity | Mapping[str, Any]], *, batch_size: int = 10_000
    ) -> int:
        """Upsert entities (records or dicts with id, name, type, domain, description, props)."""
        return self._upsert_nodes(Entity, items, batch_size)

    def upsert_tools(
        self, items: Iterable[Tool | Mapping[str, Any]], *, batch_size: int = 1_000
    ) -> int:
        """Upsert tools; a dict without `id` gets `name@version` (version defaults to "1")."""
        return self._upsert_nodes(Tool, (_with_versioned_id(t) for t in items), batch_size)

    def upsert_verifiers(
        self, items: Iterable[Verifier | Mapping[str, Any]], *, batch_size: int = 1_000
    ) -> int:
        """Upsert verifiers; a dict without `id` gets `name@version`."""
        return self._upsert_nodes(Verifier, (_with_versioned_id(v) for v in items), batch_size)

    def upsert_relations(
        self,
        items: Iterable[Relation | Mapping[str, Any] | tuple[str, str, str]],
        *,
        create_entities: bool = False,
        batch_size: int = 50_000,
    ) -> int:
        """Upsert relations between existing entities.

        With `create_entities=True`, endpoints that do not exist yet are created with their id as
        name (existing entities are left as they are).
        """
        n = 0
        for chunk in _batched(items, batch_size):
            rels = []
            for i, item in enumerate(chunk):
                try:
                    rels.append(Relation.from_dict(item))
                except (SchemaError, TypeError) as err:
                    raise SchemaError(f"relation #{n + i}: {err}") from None
            ensure = [x for r in rels for x in (r.source, r.target)] if create_entities else []
            self.store.write(GraphBatch(relations=rels, ensure_entities=ensure))
            n += len(rels)
        return n

    def set_relation_phrases(self, phrases: Mapping[str, str]) -> None:
        """Set the natural-language phrase of relation types, used to render task questions."""
        self.store.set_relation_phrases(phrases)

    def relation_phrases(self) -> dict[str, str]:
        return self.store.relation_phrases()

    def delete(self, kind: str, ids: str | Sequence[str]) -> int:
        """Delete nodes of `kind` with everything attached to them; return how many existed."""
        return self.store.delete_nodes(kind, [ids] if isinstance(ids, str) else list(ids))

    def delete_relations(
        self, items: Iterable[Relation | Mapping[str, Any] | tuple[str, str, str]]
    ) -> int:
        return self.store.delete_relations([Relation.from_dict(r) for r in items])

    # ------------------------------------------------------------------ reading

    def get(self, kind: str, id: str) -> Node | None:  # noqa: A002
        """The node of `kind` with this id, or None."""
        found = self.store.get_nodes(kind, [id])
        return found[0] if found else None

    def get_entity(self, id: str) -> Entity | None:  # noqa: A002
        return self.get("Entity", id)  # type: ignore[return-value]

    def get_many(self, kind: str, ids: Sequence[str]) -> list[Node]:
        return self.store.get_nodes(kind, list(ids))

    def iter_nodes(
        self, kind: str, *, where: Mapping[str, Any] | None = None, batch_size: int = 10_000
    ) -> Iterator[Node]:
        """Every node of a kind in id order, streamed."""
        for batch in self.store.iter_nodes(kind, where=where, batch_size=batch_size):
            yield from batch

    def count(self, kind: str, *, where: Mapping[str, Any] | None = None) -> int:
        return self.store.count_nodes(kind, where=where)

    def find_entities(
        self,
        name: str | None = None,
        *,
        match: NameMatch = "exact",
        type: str | None = None,  # noqa: A002
        domain: str | None = None,
        limit: int | None = 100,
    ) -> list[Entity]:
        """Entities by name (exact; or case-insensitive prefix or contains), type and domain."""
        return self.store.find_entities(
            name=name, match=match, type=type, domain=domain, limit=limit
        )

    def neighbors(
        self,
        entity_id: str,
        *,
        relation: str | Sequence[str] | None = None,
        direction: Direction = "out",
        limit: int | None = None,
    ) -> list[tuple[Relation, Entity]]:
        """(relation, entity at the other end) pairs around an entity."""
        return self.store.neighbors(entity_id, relation=relation, direction=direction, limit=limit)

    def relation_count(self) -> int:
        """The number of relations in the graph.

        >>> kag.open("sqlite:///:memory:").relation_count()  # doctest: +SKIP
        0
        """
        return self.store.relation_count()

    def relation_types(self) -> dict[str, int]:
        """Relation type -> count."""
        return self.store.relation_types()

    def relation_arrays(
        self, *, relation_types: Sequence[str] | None = None, domain: str | None = None
    ) -> RelationArrays:
        return self.store.relation_arrays(relation_types=relation_types, domain=domain)

    def edges(self, kind: str, *, source: Any = None, target: Any = None) -> list[Edge]:
        return self.store.edges(kind, source=source, target=target)

    def find_trajectories(self, **filters: Any) -> list[str]:
        """Trajectory ids by provenance, e.g. `find_trajectories(touched_entity="X",
        used_tool="get_relations@1", failed_verifier="answer_match@1")` (see `TrajectoryQuery`)."""
        return self.store.find_trajectories(TrajectoryQuery(**filters))

    def trajectory_contents(self, trajectory_ids: Sequence[str]) -> dict[str, TrajectoryContent]:
        """Messages, used tools, touched entities and verifications of many trajectories, read
        in bulk: `graph.trajectory_contents(["t1"])["t1"].messages[0]["role"]` -> `"system"`."""
        return self.store.trajectory_contents(trajectory_ids)

    def stats(self, *, coverage: bool = False) -> dict[str, Any]:
        """Counts per node and edge kind, relation types, datasets (and coverage on request)."""
        stats = {"url": self.url, **self.store.stats()}
        stats["datasets"] = [
            {"id": d.id, "kind": d.kind, "rows": d.rows, "path": d.path}
            for d in self.iter_nodes("Dataset")
        ]
        if coverage:
            from kag.coverage import coverage_stats

            stats["coverage"] = coverage_stats(self.store)
        return stats

    # ------------------------------------------------------------------ networkx

    def subgraph(
        self,
        ids: str | Sequence[str],
        *,
        hops: int = 1,
        relation: str | Sequence[str] | None = None,
        direction: Direction = "both",
    ) -> nx.MultiDiGraph:
        """The entities within `hops` relations of `ids`, with the relations among them."""
        if hops < 0:
            raise ValueError(f"hops must be >= 0, got {hops}")
        seeds = [ids] if isinstance(ids, str) else list(ids)
        found = {e.id: e for e in self.store.get_nodes("Entity", seeds)}  # type: ignore[misc]
        missing = [i for i in seeds if i not in found]
        if missing:
            raise KeyError(f"no entity with id(s) {missing[:5]}")
        graph = nx.MultiDiGraph()
        frontier = list(found)
        rels: dict[tuple[str, str, str], Relation] = {}
        for _ in range(hops):
            nxt = []
            for node in frontier:
                for rel, other in self.neighbors(node, relation=relation, direction=direction):
                    rels[rel.key] = rel
                    if other.id not in found:
                        found[other.id] = other
                        nxt.append(other.id)
            frontier = nxt
        for e in found.values():
            graph.add_node(e.id, **_entity_attrs(e))
        for (s, t, d), rel in rels.items():
            if s in found and d in found:
                graph.add_edge(s, d, key=t, type=t, **rel.props)
        return graph

    def to_networkx(self) -> nx.MultiDiGraph:
        """All entities and relations as a `networkx.MultiDiGraph` (edge key = relation type)."""
        graph = nx.MultiDiGraph()
        for e in self.iter_nodes("Entity"):
            graph.add_node(e.id, **_entity_attrs(e))  # type: ignore[arg-type]
        for batch in self.store.iter_relations():
            for r in batch:
                graph.add_edge(r.source, r.target, key=r.type, type=r.type, **r.props)
        return graph


def _entity_attrs(e: Entity) -> dict[str, Any]:
    return {
        "name": e.name,
        "type": e.type,
        "domain": e.domain,
        "description": e.description,
        **e.props,
    }


def _as_node(cls: type[Node], item: Node | Mapping[str, Any], position: int) -> Node:
    if isinstance(item, cls):
        return item
    if isinstance(item, Node):
        raise SchemaError(f"record #{position} is a {item.KIND}, expected {cls.KIND}")
    try:
        return cls.from_dict(item)
    except SchemaError as err:
        raise SchemaError(f"record #{position}: {err}") from None


def _with_versioned_id(item: Any) -> Any:
    if isinstance(item, Mapping) and "id" not in item and "name" in item:
        item = dict(item)
        item.setdefault("version", "1")
        item["id"] = f"{item['name']}@{item['version']}"
    return item
