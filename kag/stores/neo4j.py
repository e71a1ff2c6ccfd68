"""The server graph backend: Neo4j 5.26 through the official `neo4j` driver (with `neo4j-rust-ext`).

>>> store = Neo4jStore("neo4j://neo4j:secret@localhost:7687"); store.upgrade()  # doctest: +SKIP

How the graph model of DESIGN section 3 maps onto Neo4j:

| record           | in Neo4j                                                                  |
|------------------|---------------------------------------------------------------------------|
| node of kind K   | `(:K {id, ...fields})`; JSON fields and `tool_calls` as JSON strings      |
| Relation         | `(:Entity)-[:TOKEN {type: name, props}]->(:Entity)`, TOKEN = `relationship_type(name)`, always `rel_...` |
| relation type    | `(:RelationType {token, name, phrase})`, which also catches token collisions |
| Edge of kind E   | `(:A)-[:E {props}]->(:B)`: E never starts with `rel_`, so lineage and knowledge never mix |

The backend by concern:

| module                           | holds                                                    |
|----------------------------------|----------------------------------------------------------|
| `kag.stores.neo4j`               | `Neo4jConfig`, `Neo4jStore` (the protocol's reads)       |
| `kag.stores.neo4j_connection`    | the URL, the driver, sessions, quiet connection errors   |
| `kag.stores.neo4j_cypher`        | names, property maps, records, driver error messages     |
| `kag.stores.neo4j_relation_types`| `:RelationType` nodes, tokens, count-store counts        |
| `kag.stores.neo4j_writes`        | one `GraphBatch` in one transaction                      |
| `kag.stores.neo4j_bulk`          | `write_many`'s `CREATE` path for fresh relation types    |
| `kag.stores.neo4j_projection`    | relations as integer arrays for the walk CSR             |
| `kag.stores.neo4j_migrations`    | `migrations/neo4j` files                                 |

Every write is a managed transaction (`execute_write`, retried on transient failures) of `UNWIND`
batches: nodes first, then relations and edges, after the uniqueness constraints of
`migrations/neo4j` are in place (`upgrade()`; writes refuse to run without them). User values only
ever travel as parameters. Relationship types of relations are parameters too (Neo4j 5.26's
dynamic types, `MERGE (s)-[r:$(row.token)]->(t)`), and the labels and types that do appear in
query text come from the schema or from `relationship_type`, checked against `[A-Za-z_][A-Za-z0-9_]*`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kag.schema import (
    EDGE_ENDPOINTS,
    EDGE_KINDS,
    NODE_KINDS,
    Edge,
    Entity,
    Node,
    Relation,
)
from kag.stores.base import (
    Direction,
    GraphBatch,
    NameMatch,
    RelationArrays,
    StoreError,
    TrajectoryContent,
    TrajectoryQuery,
    check_direction,
    fill_contents,
    stored_step_message,
)
from kag.stores.neo4j_bulk import RelationBulkWriter
from kag.stores.neo4j_connection import Neo4jConnection, parse_neo4j_url
from kag.stores.neo4j_cypher import (
    DRIVER_ERRORS,
    FIELDS,
    check_edge_kind,
    chunks,
    describe,
    label,
    props_node,
    quote_name,
    record_edge,
    relationship_type,
    trusted_relation,
)
from kag.stores.neo4j_migrations import MIGRATIONS_DIR, apply_migrations
from kag.stores.neo4j_projection import project_relations
from kag.stores.neo4j_relation_types import RelationTypes
from kag.stores.neo4j_writes import write_batch

__all__ = ["Neo4jConfig", "Neo4jStore", "parse_neo4j_url"]

_T = TypeVar("_T")

# The bulk read of exports (`trajectory_contents`): one record per trajectory holding lists, since
# the driver's cost is per record. `s.idx IS NOT NULL` lets the (trajectory_id, idx) index serve.
_READ_STEPS = (
    "UNWIND $ids AS tid MATCH (s:Step {trajectory_id: tid}) WHERE s.idx IS NOT NULL "
    "RETURN tid, collect([s.id, s.idx, s.role, s.content, s.reasoning, s.tool_calls, "
    "s.tool_call_id, s.name]) AS steps"
)
_READ_STEP_TARGETS = (
    "UNWIND $ids AS tid RETURN tid, "
    "COLLECT { MATCH (s:Step {trajectory_id: tid})-[:TOUCHED]->(e:Entity) WHERE s.idx IS NOT NULL "
    "RETURN e.id } AS entities, "
    "COLLECT { MATCH (s:Step {trajectory_id: tid})-[:USED_TOOL]->(t:Tool) WHERE s.idx IS NOT NULL "
    "RETURN t.id } AS tools"
)
_READ_VERIFICATIONS = (
    "UNWIND $ids AS tid MATCH (v:Verification {subject_id: tid}) RETURN tid, collect(v.id) AS ids "
    "UNION ALL UNWIND $steps AS sid MATCH (s:Step {id: sid}) "
    "MATCH (v:Verification {subject_id: sid}) RETURN s.trajectory_id AS tid, collect(v.id) AS ids"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Neo4jConfig:
    """How the store talks to the server; `Neo4jConfig(batch_size=5000).build(url)`.

    batch_size: rows per `UNWIND` query (default 10,000: large enough to amortise a round trip,
        small enough to keep the server's transaction state modest). A `write` of a larger batch
        still commits as one transaction, in several queries.
    connect_attempts: tries to reach the server when the store opens (default 3, 1 s apart, then
        doubling), so a server still starting is waited for, a wrong address is not waited on forever.
    connection_timeout: seconds per connection attempt (default 5).
    max_retry_time: seconds a managed transaction is retried after transient errors, such as a
        lost connection or a deadlock (default 15), before the error is raised.
    write_workers: transactions `write_many` keeps in flight at once when it creates relations
        of new types (default 2; see `kag.stores.neo4j_bulk`).
    database: the database to use (default: the user's home database); also `?database=` in the URL.
    migrations_dir: where the `V0001__name.cypher` files live (default `migrations/neo4j`).
    """

    batch_size: int = 10_000
    connect_attempts: int = 3
    connection_timeout: float = 5.0
    max_retry_time: float = 15.0
    write_workers: int = 2
    database: str | None = None
    migrations_dir: Path = MIGRATIONS_DIR

    def build(self, url: str) -> Neo4jStore:
        return Neo4jStore(url, config=self)


def _translated(method: Callable[..., _T]) -> Callable[..., _T]:
    """Turn a driver exception escaping `method` into a `StoreError` that names the server."""

    @functools.wraps(method)
    def wrapper(self: Neo4jStore, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except DRIVER_ERRORS as err:
            raise StoreError(
                f"Neo4j {self.address}: {method.__name__} failed: {describe(err)}"
            ) from err

    return wrapper


class Neo4jStore:
    """A `GraphStore` on a Neo4j server (see `kag.stores.base.GraphStore` for the contract).

    `session()` and `read()` are the way to run your own Cypher on the same graph.
    """

    def __init__(self, url: str, *, config: Neo4jConfig | None = None) -> None:
        self.url = url
        self.config = config or Neo4jConfig()
        if self.config.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.config.batch_size}")
        if self.config.write_workers < 1:
            raise ValueError(f"write_workers must be >= 1, got {self.config.write_workers}")
        self.connection = Neo4jConnection(
            url,
            database=self.config.database,
            connect_attempts=self.config.connect_attempts,
            connection_timeout=self.config.connection_timeout,
            max_retry_time=self.config.max_retry_time,
        )
        self.address = self.connection.address
        self.database = self.connection.database
        #: the recorded relation types and their tokens
        self.types = RelationTypes(self.connection)
        self._schema_checked = False

    def __repr__(self) -> str:
        return f"Neo4jStore({self.address!r})"

    def session(self, *, read: bool = False) -> Any:
        """A driver session on the graph's database, for Cypher of your own.

        >>> with store.session(read=True) as s:  # doctest: +SKIP
        ...     s.run("MATCH (n:Entity) RETURN count(n) AS n").single()["n"]
        4
        """
        return self.connection.session(read=read)

    def read(self, query: str, **params: Any) -> list[Any]:
        """Records of one read query (parameters as keywords), in a retried read transaction."""
        return self.connection.read(query, **params)

    # ------------------------------------------------------------------ lifecycle

    @_translated
    def upgrade(self) -> list[str]:
        with self.session() as session:
            applied = apply_migrations(session, self.config.migrations_dir)
        self._schema_checked = True
        return applied

    @_translated
    def check_schema(self) -> None:
        """Raise a `StoreError` telling the user to run `kag db upgrade` if the schema is missing."""
        if self._schema_checked:
            return
        rows = self.read("MATCH (m:KagMigration) RETURN count(m) AS n")
        if not rows[0]["n"]:
            raise StoreError(
                f"Neo4j graph {self.address} has no KAG schema: run `kag db upgrade --graph URL`"
            )
        self._schema_checked = True

    def close(self) -> None:
        self.connection.close()

    # ------------------------------------------------------------------ writing

    @_translated
    def write(self, batch: GraphBatch) -> None:
        self.check_schema()
        self._write(batch.with_relations(), replan=False)

    def _write(self, batch: GraphBatch, *, replan: bool) -> int:
        """Write `batch` in one transaction; return the number of relations it created."""
        new_tokens = self.types.new_tokens([*(r.type for r in batch.relations), *batch.phrases])
        with self.session() as session:
            created = session.execute_write(
                write_batch,
                batch,
                new_tokens=new_tokens,
                batch_size=self.config.batch_size,
                replan=replan,
            )
        self.types.remember(new_tokens)
        return created

    @_translated
    def write_many(self, batches: Iterable[GraphBatch]) -> int:
        """Write a stream of batches, committing every `config.batch_size` relations or edges.

        Relations of types the graph does not hold yet are created in bulk, in parallel
        transactions (`kag.stores.neo4j_bulk`); the others are merged here.

        Trap: Neo4j plans a relationship MERGE from committed statistics. On an empty graph it
        picks a scan of all relationships, which then also scans the relationships this very
        transaction created: quadratic in the transaction's size. So merges commit in chunks
        that start small (1,000) and grow with the committed count, each planned afresh.
        """
        self.check_schema()
        with self.session(read=True) as session:
            committed = session.run("MATCH ()-[r]->() RETURN count(r) AS n").single()["n"]
        written = 0
        committed_any = False  # by this call, so an interruption is not "nothing happened"
        bulk = RelationBulkWriter(
            self.connection,
            self.types,
            batch_size=self.config.batch_size,
            write_workers=self.config.write_workers,
            relations_before=self.types.relation_count(),
        )
        try:
            with bulk:
                for batch in batches:
                    if batch.nodes or batch.ensure_entities or batch.phrases:
                        self._write(
                            GraphBatch(
                                nodes=batch.nodes,
                                ensure_entities=batch.ensure_entities,
                                phrases=batch.phrases,
                            ),
                            replan=False,
                        )
                        committed_any = True
                    merged = bulk.add(batch.relations, batch.triples)
                    for field, items in (("relations", merged), ("edges", batch.edges)):
                        start = 0
                        while start < len(items):
                            size = min(self.config.batch_size, max(1_000, committed))
                            part = items[start : start + size]
                            bulk.merged += self._write(GraphBatch(**{field: part}), replan=True)
                            committed_any = True
                            committed += len(part)
                            start += size
                    written += len(batch)
        except (StoreError, *DRIVER_ERRORS) as err:
            if not isinstance(err, StoreError):
                err = StoreError(f"Neo4j {self.address}: write_many failed: {describe(err)}")
            raise StoreError(
                f"{err} (records of earlier batches, and {bulk.committed:,} new relations, were "
                "committed; writes are upserts, so rerunning the same import is safe)"
            ) from err
        except KeyboardInterrupt:
            if not (committed_any or bulk.submitted):
                raise  # nothing was sent: a plain interruption
            raise StoreError(
                f"Neo4j {self.address}: interrupted after batches were committed ({written:,} "
                f"records of whole batches, {bulk.committed:,} new relations confirmed); writes "
                "are upserts, so rerunning the same import completes it exactly"
            ) from None
        return written

    @_translated
    def delete_nodes(self, kind: str, ids: Sequence[str]) -> int:
        query = f"UNWIND $ids AS id MATCH (n:{label(kind)} {{id: id}}) DETACH DELETE n RETURN count(*) AS n"
        ids = list(dict.fromkeys(ids))

        def work(tx: Any) -> int:
            return sum(
                tx.run(query, ids=chunk).single()["n"]
                for chunk in chunks(ids, self.config.batch_size)
            )

        with self.session() as session:
            return session.execute_write(work)

    @_translated
    def delete_relations(self, relations: Sequence[Relation]) -> int:
        by_token: dict[str, list[dict[str, str]]] = {}
        for r in relations:
            by_token.setdefault(relationship_type(r.type), []).append(
                {"s": r.source, "t": r.target, "type": r.type}
            )

        def work(tx: Any) -> int:
            deleted = 0
            for token, rows in by_token.items():
                query = (
                    f"UNWIND $rows AS row MATCH (:Entity {{id: row.s}})-[r:{quote_name(token)}]->(:Entity {{id: row.t}}) "
                    "WHERE r.type = row.type DELETE r RETURN count(*) AS n"
                )
                for chunk in chunks(rows, self.config.batch_size):
                    deleted += tx.run(query, rows=chunk).single()["n"]
            return deleted

        with self.session() as session:
            return session.execute_write(work)

    # ------------------------------------------------------------------ reading nodes

    @_translated
    def get_nodes(self, kind: str, ids: Sequence[str]) -> list[Node]:
        ids = list(ids)
        query = f"UNWIND $ids AS id MATCH (n:{label(kind)} {{id: id}}) RETURN properties(n) AS p"
        found: dict[str, Node] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), self.config.batch_size):
            for record in self.read(query, ids=chunk):
                found[record["p"]["id"]] = props_node(kind, record["p"])
        return [found[i] for i in ids if i in found]

    def _where(self, kind: str, where: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """A Cypher condition on `n` and its parameters; field names are checked, values bound."""
        clauses, params = [], {}
        fields = FIELDS[kind]
        for i, (name, value) in enumerate((where or {}).items()):
            if name != "id" and name not in fields:
                raise ValueError(f"cannot filter {kind} by {name!r}; fields are {['id', *fields]}")
            if fields.get(name) in ("json", "list"):
                raise ValueError(f"cannot filter {kind} by the JSON field {name!r}")
            prop = f"n.{quote_name(name)}"
            if isinstance(value, (list, tuple, set, frozenset)):
                clauses.append(f"{prop} IN $w{i}")
                params[f"w{i}"] = list(value)
            elif value is None:
                clauses.append(f"{prop} IS NULL")
            else:
                clauses.append(f"{prop} = $w{i}")
                params[f"w{i}"] = value
        return " AND ".join(clauses) or "true", params

    def iter_nodes(
        self, kind: str, *, where: Mapping[str, Any] | None = None, batch_size: int = 10_000
    ) -> Iterator[list[Node]]:
        condition, params = self._where(kind, where)
        query = (
            f"MATCH (n:{label(kind)}) WHERE n.id > $after AND {condition} "
            "RETURN properties(n) AS p ORDER BY n.id LIMIT $limit"
        )
        after = ""
        while True:
            rows = self.connection.read_as(
                "iter_nodes", query, after=after, limit=batch_size, **params
            )
            if not rows:
                return
            yield [props_node(kind, r["p"]) for r in rows]
            after = rows[-1]["p"]["id"]
            if len(rows) < batch_size:
                return

    @_translated
    def count_nodes(self, kind: str, *, where: Mapping[str, Any] | None = None) -> int:
        condition, params = self._where(kind, where)
        return self.read(
            f"MATCH (n:{label(kind)}) WHERE {condition} RETURN count(n) AS n", **params
        )[0]["n"]

    @_translated
    def find_entities(
        self,
        *,
        name: str | None = None,
        match: NameMatch = "exact",
        type: str | None = None,
        domain: str | None = None,
        limit: int | None = 100,
    ) -> list[Entity]:
        clauses, params = [], {}
        if name is not None:
            # prefix and contains ignore case: both sides are folded by the server's toLower
            if match == "exact":
                clauses.append("n.name = $name")
            elif match == "prefix":
                clauses.append("toLower(n.name) STARTS WITH toLower($name)")
            elif match == "contains":
                clauses.append("toLower(n.name) CONTAINS toLower($name)")
            else:
                raise ValueError(f"match must be 'exact', 'prefix' or 'contains', not {match!r}")
            params["name"] = name
        if type is not None:
            clauses.append("n.type = $type")
            params["type"] = type
        if domain is not None:
            clauses.append("n.domain = $domain")
            params["domain"] = domain
        query = "MATCH (n:Entity)"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " RETURN properties(n) AS p ORDER BY n.name, n.id"
        if limit is not None:
            query += " LIMIT $limit"
            params["limit"] = int(limit)
        return [props_node("Entity", r["p"]) for r in self.read(query, **params)]  # type: ignore[misc]

    # ------------------------------------------------------------------ reading relations

    @_translated
    def neighbors(
        self,
        entity_id: str,
        *,
        relation: str | Sequence[str] | None = None,
        direction: Direction = "out",
        limit: int | None = None,
    ) -> list[tuple[Relation, Entity]]:
        check_direction(direction)
        names = [relation] if isinstance(relation, str) else list(relation or [])
        tokens = [relationship_type(n) for n in names]
        condition = "type(r) IN $tokens AND r.type IN $names" if names else "true"
        parts = []
        if direction in ("out", "both"):
            parts.append(
                f"MATCH (e:Entity {{id: $id}})-[r]->(o:Entity) WHERE {condition} "
                "RETURN 'out' AS d, r.type AS type, r.props AS props, properties(o) AS o"
            )
        if direction in ("in", "both"):
            parts.append(
                f"MATCH (e:Entity {{id: $id}})<-[r]-(o:Entity) WHERE {condition} "
                "RETURN 'in' AS d, r.type AS type, r.props AS props, properties(o) AS o"
            )
        query = (
            "CALL () { "
            + " UNION ALL ".join(parts)
            + " } RETURN d, type, props, o ORDER BY type, o.id, d"
        )
        params: dict[str, Any] = {"id": entity_id, "tokens": tokens, "names": names}
        if limit is not None:
            query += " LIMIT $limit"
            params["limit"] = int(limit)
        out = []
        for r in self.read(query, **params):
            other = props_node("Entity", r["o"])
            src, dst = (entity_id, other.id) if r["d"] == "out" else (other.id, entity_id)
            props = json.loads(r["props"]) if r["props"] else {}
            out.append((Relation(source=src, type=r["type"], target=dst, props=props), other))
        return out  # type: ignore[return-value]

    @_translated
    def relation_types(self) -> dict[str, int]:
        pairs = self.types.recorded()
        counts = self.types.counts([token for token, _ in pairs])
        return dict(sorted((name, n) for token, name in pairs if (n := counts.get(token, 0))))

    @_translated
    def relation_count(self) -> int:
        return self.types.relation_count()

    def iter_relations(self, *, batch_size: int = 50_000) -> Iterator[list[Relation]]:
        # paged by source entity in id order: bounded memory on the server and here
        page = "MATCH (s:Entity) WHERE s.id > $after RETURN s.id AS id ORDER BY id LIMIT $sources"
        query = (
            "UNWIND $ids AS id MATCH (s:Entity {id: id})-[r]->(t:Entity) "
            "RETURN s.id AS s, r.type AS type, t.id AS t, r.props AS props ORDER BY s, type, t"
        )
        sources = max(1, batch_size // 8)
        after = ""
        pending: list[Relation] = []
        while True:
            ids = [
                r["id"]
                for r in self.connection.read_as(
                    "iter_relations", page, after=after, sources=sources
                )
            ]
            if not ids:
                break
            for r in self.connection.read_as("iter_relations", query, ids=ids):
                pending.append(trusted_relation(r["s"], r["type"], r["t"], r["props"]))
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                pending = pending[batch_size:]
            after = ids[-1]
        if pending:
            yield pending

    def set_relation_phrases(self, phrases: Mapping[str, str]) -> None:
        self.write(GraphBatch(phrases=dict(phrases)))

    @_translated
    def relation_phrases(self) -> dict[str, str]:
        rows = self.read(
            "MATCH (k:RelationType) WHERE k.phrase IS NOT NULL RETURN k.name AS name, k.phrase AS phrase ORDER BY name"
        )
        return {r["name"]: r["phrase"] for r in rows}

    @_translated
    def relation_arrays(
        self, *, relation_types: Sequence[str] | None = None, domain: str | None = None
    ) -> RelationArrays:
        return project_relations(
            lambda: self.session(read=True),
            self.types.recorded(),
            relation_types=relation_types,
            domain=domain,
        )

    # ------------------------------------------------------------------ reading edges

    def _edge_query(self, kind: str, condition: str) -> str:
        parts = [
            f"MATCH (a:{label(sk)})-[r:{quote_name(kind)}]->(b:{label(tk)}) WHERE {condition} "
            f"RETURN '{sk}' AS sk, a.id AS s, '{tk}' AS tk, b.id AS t, r.props AS props"
            for sk, tk in EDGE_ENDPOINTS[kind]
        ]
        return "CALL () { " + " UNION ALL ".join(parts) + " } RETURN sk, s, tk, t, props"

    def iter_edges(self, kind: str, *, batch_size: int = 50_000) -> Iterator[list[Edge]]:
        check_edge_kind(kind)
        query = (
            self._edge_query(kind, "(a.id > $s OR (a.id = $s AND b.id > $t))")
            + " ORDER BY s, t LIMIT $limit"
        )
        last = ("", "")
        while True:
            rows = self.connection.read_as(
                "iter_edges", query, s=last[0], t=last[1], limit=batch_size
            )
            if not rows:
                return
            yield [record_edge(kind, r) for r in rows]
            last = (rows[-1]["s"], rows[-1]["t"])
            if len(rows) < batch_size:
                return

    @_translated
    def edges(
        self,
        kind: str,
        *,
        source: str | Sequence[str] | None = None,
        target: str | Sequence[str] | None = None,
    ) -> list[Edge]:
        check_edge_kind(kind)
        clauses, params = [], {}
        for name, var, value in (("source", "a", source), ("target", "b", target)):
            if isinstance(value, str):
                clauses.append(f"{var}.id = ${name}")
                params[name] = value
            elif value is not None:
                clauses.append(f"{var}.id IN ${name}")
                params[name] = list(value)
        query = self._edge_query(kind, " AND ".join(clauses) or "true") + " ORDER BY s, t"
        return [record_edge(kind, r) for r in self.read(query, **params)]

    @_translated
    def find_trajectories(self, query: TrajectoryQuery) -> list[str]:
        clauses, params = [], {}
        for name in ("run_id", "task_id", "verdict", "policy", "status"):
            value = getattr(query, name)
            if value is not None:
                clauses.append(f"t.{name} = ${name}")
                params[name] = value
        if query.touched_entity is not None or query.used_tool is not None:
            step = ["(s:Step {trajectory_id: t.id})"]
            if query.touched_entity is not None:
                step.append("(s)-[:TOUCHED]->(:Entity {id: $touched})")
                params["touched"] = query.touched_entity
            if query.used_tool is not None:
                step.append("(s)-[:USED_TOOL]->(:Tool {id: $tool})")
                params["tool"] = query.used_tool
            clauses.append(f"EXISTS {{ MATCH {', '.join(step)} }}")
        for key, verifier, passed in (
            ("failed", query.failed_verifier, False),
            ("passed", query.passed_verifier, True),
        ):
            if verifier is not None:
                clauses.append(
                    f"EXISTS {{ MATCH (v:Verification {{subject_id: t.id, verifier_id: ${key}}}) "
                    f"WHERE v.passed = {str(passed).lower()} }}"
                )
                params[key] = verifier
        cypher = "MATCH (t:Trajectory)"
        if clauses:
            cypher += " WHERE " + " AND ".join(clauses)
        cypher += " RETURN t.id AS id ORDER BY id"
        if query.limit is not None:
            cypher += " LIMIT $limit"
            params["limit"] = int(query.limit)
        return [r["id"] for r in self.read(cypher, **params)]

    @_translated
    def trajectory_contents(self, trajectory_ids: Sequence[str]) -> dict[str, TrajectoryContent]:
        ids = sorted(set(trajectory_ids))
        steps: list[tuple[str, int, dict[str, Any]]] = []
        touched: list[tuple[str, str]] = []
        used: list[tuple[str, str]] = []
        verified: list[tuple[str, str]] = []
        for chunk in chunks(ids, self.config.batch_size):
            step_ids: list[str] = []
            for r in self.read(_READ_STEPS, ids=chunk):
                for sid, idx, *message in r["steps"]:
                    steps.append((r["tid"], idx, stored_step_message(*message)))
                    step_ids.append(sid)
            for r in self.read(_READ_STEP_TARGETS, ids=chunk):
                touched.extend((r["tid"], e) for e in r["entities"])
                used.extend((r["tid"], t) for t in r["tools"])
            for r in self.read(_READ_VERIFICATIONS, ids=chunk, steps=step_ids):
                verified.extend((r["tid"], v) for v in r["ids"])
        return fill_contents(ids, steps, touched=touched, used=used, verified=verified)

    # ------------------------------------------------------------------ summary

    @_translated
    def stats(self) -> dict[str, Any]:
        types = self.relation_types()

        def work(tx: Any) -> dict[str, Any]:
            # relation types never share a name with an edge kind: the count store answers all
            nodes = {
                kind: tx.run(f"MATCH (n:{label(kind)}) RETURN count(n) AS n").single()["n"]
                for kind in NODE_KINDS
            }
            edges = {
                kind: tx.run(f"MATCH ()-[r:{quote_name(kind)}]->() RETURN count(r) AS n").single()[
                    "n"
                ]
                for kind in EDGE_KINDS
            }
            return {"nodes": nodes, "edges": edges}

        with self.session(read=True) as session:
            out = session.execute_read(work)
        return {
            "nodes": out["nodes"],
            "edges": {"RELATION": sum(types.values()), **out["edges"]},
            "relation_types": types,
        }
