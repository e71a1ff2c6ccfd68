"""The store protocol every graph backend implements, and the batch it writes.

| backend        | module               | URL                              |
|----------------|----------------------|----------------------------------|
| SQL (SQLite)   | `kag.stores.sql`     | `sqlite:///kag.db`               |
| Neo4j          | `kag.stores.neo4j`   | `neo4j://user:pw@host:7687`      |

A `GraphBatch` is the unit of writing: nodes of any kind, relations and edges, upserted by id in
one transaction, so a failed batch writes nothing. The contract tests in `tests/contract/` run
against every backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from kag.messages import chat_message, tool_call
from kag.schema import Edge, Entity, Node, Relation, check_relation_name

__all__ = [
    "GraphBatch",
    "GraphNotFoundError",
    "GraphStore",
    "RelationArrays",
    "StoreError",
    "Direction",
    "NameMatch",
    "TrajectoryContent",
    "TrajectoryQuery",
    "check_direction",
    "fill_contents",
    "stored_step_message",
]

Direction = Literal["out", "in", "both"]
NameMatch = Literal["exact", "prefix", "contains"]


def check_direction(direction: str) -> None:
    """Refuse a `neighbors` direction other than `out`, `in` or `both`.

    >>> check_direction("sideways")
    Traceback (most recent call last):
    ValueError: direction must be 'out', 'in' or 'both', not 'sideways'
    """
    if direction not in ("out", "in", "both"):
        raise ValueError(f"direction must be 'out', 'in' or 'both', not {direction!r}")


class StoreError(RuntimeError):
    """A backend could not do what was asked (unreachable server, schema missing, collision...)."""


class GraphNotFoundError(StoreError, ValueError):
    """The graph a URL names does not exist (a SQLite file or its directory): a user's typo,
    which only `upgrade()` (`kag db upgrade`) turns into a new graph."""


@dataclass(slots=True)
class GraphBatch:
    """Records to upsert together, atomically: nodes first, then relations, then edges.

    `ensure_entities` lists entity ids that must exist: missing ones are created with the id as
    their name, existing ones are left untouched (bulk import of bare triples uses this).
    `phrases` sets relation types' phrases (see `GraphStore.set_relation_phrases`).

    >>> len(GraphBatch().add(Entity(id="e1", name="Ada")))
    1
    """

    nodes: dict[str, list[Node]] = field(default_factory=dict)
    relations: list[Relation] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    ensure_entities: list[str] = field(default_factory=list)
    #: `(source, type, target)` relations without props whose ids and type the caller has
    #: already validated: bulk import's fast path, with no `Relation` object per row
    triples: list[tuple[str, str, str]] = field(default_factory=list)
    phrases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, phrase in self.phrases.items():
            check_relation_name(name)
            if not isinstance(phrase, str) or not phrase.strip():
                raise ValueError(f"phrase of relation {name!r} must be a non-empty string")

    def with_relations(self) -> GraphBatch:
        """This batch with `triples` turned into `relations`, for backends without a fast path."""
        if not self.triples:
            return self
        rels = [*self.relations, *(Relation.trusted(s, t, d) for s, t, d in self.triples)]
        return GraphBatch(
            nodes=self.nodes,
            relations=rels,
            edges=self.edges,
            ensure_entities=self.ensure_entities,
            phrases=self.phrases,
        )

    def add(self, *items: Node | Relation | Edge) -> GraphBatch:
        for item in items:
            if isinstance(item, Relation):
                self.relations.append(item)
            elif isinstance(item, Edge):
                self.edges.append(item)
            elif isinstance(item, Node):
                self.nodes.setdefault(item.KIND, []).append(item)
            else:
                raise TypeError(f"cannot add {type(item).__name__} to a GraphBatch")
        return self

    def extend(self, items: Iterable[Node | Relation | Edge]) -> GraphBatch:
        return self.add(*items)

    def __len__(self) -> int:
        return (
            sum(map(len, self.nodes.values()))
            + len(self.relations)
            + len(self.edges)
            + len(self.ensure_entities)
            + len(self.triples)
            + len(self.phrases)
        )


@dataclass(frozen=True, slots=True)
class RelationArrays:
    """Entity relations as integer arrays, the input of the walk CSR.

    `src[i] -[relation_types[rel[i]]]-> dst[i]`, where `src`/`dst` index into `entity_ids`.
    """

    entity_ids: list[str]
    src: np.ndarray  # int32
    dst: np.ndarray  # int32
    rel: np.ndarray  # int32
    relation_types: list[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class TrajectoryQuery:
    """Provenance filters over trajectories; every given filter must hold.

    "Trajectories that touched entity X through tool Y and failed verifier Z":
    `TrajectoryQuery(touched_entity="X", used_tool="Y@1", failed_verifier="Z@1")`. A touched
    entity and a used tool must be on the same step.
    """

    touched_entity: str | None = None
    used_tool: str | None = None
    failed_verifier: str | None = None
    passed_verifier: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    verdict: str | None = None
    policy: str | None = None
    status: str | None = None
    limit: int | None = None


@dataclass(slots=True)
class TrajectoryContent:
    """What a trajectory holds, as plain data: the bulk read of exports (`trajectory_contents`).

    `messages` are its steps as DESIGN section 4 messages in `idx` order; `tool_ids` the tools its
    steps called (USED_TOOL), `entity_ids` the entities they touched (TOUCHED) and
    `verification_ids` the verifications of the trajectory and of its steps, each sorted, distinct.

    >>> TrajectoryContent().messages
    []
    """

    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_ids: list[str] = field(default_factory=list)
    entity_ids: list[str] = field(default_factory=list)
    verification_ids: list[str] = field(default_factory=list)


def stored_step_message(
    role: str,
    content: str | None,
    reasoning: str | None,
    tool_calls: str | None,
    tool_call_id: str | None,
    name: str | None,
) -> dict[str, Any]:
    """The DESIGN section 4 message of a step as both backends store it (`tool_calls` as the JSON
    text of `[{"id", "name", "arguments"}]`), the same as `Step.to_message()`, without a `Step`.

    >>> stored_step_message("assistant", "", None, '[{"id": "c1", "name": "f", "arguments": "{}"}]',
    ...                     None, None)["tool_calls"][0]["function"]["name"]
    'f'
    """
    calls = json.loads(tool_calls) if tool_calls and tool_calls != "[]" else ()
    return chat_message(
        role,
        content,
        reasoning=reasoning,
        tool_calls=[tool_call(c["id"], c["name"], c["arguments"]) for c in calls],
        tool_call_id=tool_call_id,
        name=name,
    )


def fill_contents(
    trajectory_ids: Iterable[str],
    steps: Iterable[tuple[str, int, dict[str, Any]]],
    *,
    touched: Iterable[tuple[str, str]],
    used: Iterable[tuple[str, str]],
    verified: Iterable[tuple[str, str]],
) -> dict[str, TrajectoryContent]:
    """`trajectory_contents` from plain rows, keyed by trajectory id: steps as
    `(trajectory id, idx, message)`, the rest as `(trajectory id, other id)` pairs.

    >>> fill_contents(["t1"], [("t1", 1, "b"), ("t1", 0, "a")], touched=[("t1", "e")],
    ...               used=[], verified=[])["t1"].messages
    ['a', 'b']
    """
    out = {tid: TrajectoryContent() for tid in trajectory_ids}
    for tid, _, message in sorted(steps, key=lambda row: (row[0], row[1])):
        out[tid].messages.append(message)
    for name, pairs in (
        ("entity_ids", touched),
        ("tool_ids", used),
        ("verification_ids", verified),
    ):
        sets: dict[str, set[str]] = {}
        for tid, other in pairs:
            sets.setdefault(tid, set()).add(other)
        for tid, values in sets.items():
            setattr(out[tid], name, sorted(values))
    return out


@runtime_checkable
class GraphStore(Protocol):
    """What every backend offers. All writes are idempotent upserts by id; reads return records."""

    url: str

    # --- lifecycle
    def upgrade(self) -> list[str]:
        """Create or migrate the schema; return the names of the migrations applied now."""
        ...

    def close(self) -> None: ...

    # --- writing
    def write(self, batch: GraphBatch) -> None:
        """Upsert everything in `batch` in one transaction; on any error nothing is written.

        Relations and edges whose endpoints do not exist raise `StoreError` naming them.
        """
        ...

    def write_many(self, batches: Iterable[GraphBatch]) -> int:
        """Write a stream of batches; return the number of records written.

        SQL backends write the whole stream in one transaction (an exception raised by the
        iterator rolls everything back). Neo4j writes each batch in its own transaction with
        retries, so callers that need all-or-nothing validate the stream first (the importer does).
        """
        ...

    def delete_nodes(self, kind: str, ids: Sequence[str]) -> int:
        """Delete nodes and every relation or edge attached to them; return how many were deleted."""
        ...

    def delete_relations(self, relations: Sequence[Relation]) -> int: ...

    # --- reading nodes
    def get_nodes(self, kind: str, ids: Sequence[str]) -> list[Node]:
        """The nodes with these ids that exist, in the order of `ids`."""
        ...

    def iter_nodes(
        self,
        kind: str,
        *,
        where: Mapping[str, Any] | None = None,
        batch_size: int = 10_000,
    ) -> Iterator[list[Node]]:
        """Stream all nodes of a kind in id order, in batches. `where` maps a field to a value
        (equality) or to a list/tuple of values (membership)."""
        ...

    def count_nodes(self, kind: str, *, where: Mapping[str, Any] | None = None) -> int: ...

    def find_entities(
        self,
        *,
        name: str | None = None,
        match: NameMatch = "exact",
        type: str | None = None,
        domain: str | None = None,
        limit: int | None = 100,
    ) -> list[Entity]:
        """Entities by name (exact; or case-insensitive prefix or contains), type and domain."""
        ...

    # --- reading relations
    def neighbors(
        self,
        entity_id: str,
        *,
        relation: str | Sequence[str] | None = None,
        direction: Direction = "out",
        limit: int | None = None,
    ) -> list[tuple[Relation, Entity]]:
        """Relations at `entity_id` with the entity at the other end, ordered by (type, other id)."""
        ...

    def relation_types(self) -> dict[str, int]:
        """Relation type -> number of relations, for every type present."""
        ...

    def relation_count(self) -> int:
        """The number of relations, `sum(relation_types().values())`, answered cheaply."""
        ...

    def iter_relations(self, *, batch_size: int = 50_000) -> Iterator[list[Relation]]: ...

    def set_relation_phrases(self, phrases: Mapping[str, str]) -> None:
        """Store the natural-language phrase of relation types (`{"born_in": "was born in"}`).

        Phrases are metadata of the relation type, kept beside the relations (SQL: the
        `relation_types` table; Neo4j: `:RelationType {name, token, phrase}` nodes). Setting a
        phrase for a type that has no relations yet is allowed."""
        ...

    def relation_phrases(self) -> dict[str, str]:
        """Relation type -> phrase, for every type that has one."""
        ...

    def relation_arrays(
        self,
        *,
        relation_types: Sequence[str] | None = None,
        domain: str | None = None,
    ) -> RelationArrays:
        """Project entity relations into integer arrays (optionally only these types, or only
        relations whose two entities are in `domain`)."""
        ...

    # --- reading edges
    def iter_edges(self, kind: str, *, batch_size: int = 50_000) -> Iterator[list[Edge]]: ...

    def edges(
        self,
        kind: str,
        *,
        source: str | Sequence[str] | None = None,
        target: str | Sequence[str] | None = None,
    ) -> list[Edge]:
        """Edges of a kind from and/or to the given node ids."""
        ...

    def find_trajectories(self, query: TrajectoryQuery) -> list[str]:
        """Ids of trajectories matching a provenance query, sorted."""
        ...

    def trajectory_contents(self, trajectory_ids: Sequence[str]) -> dict[str, TrajectoryContent]:
        """Steps, used tools, touched entities and verifications of many trajectories at once.

        The exporters' bulk read: a handful of batched queries for any number of ids, no record
        object per step or edge. Every given id is a key (an unknown one maps to an empty
        `TrajectoryContent`).
        """
        ...

    # --- summary
    def stats(self) -> dict[str, Any]:
        """`{"nodes": {kind: n}, "edges": {kind: n, "RELATION": n}, "relation_types": {type: n}}`."""
        ...
