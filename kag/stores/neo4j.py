"""The server graph backend: Neo4j 5.26 through the official `neo4j` driver (with `neo4j-rust-ext`).

>>> store = Neo4jStore("neo4j://neo4j:secret@localhost:7687"); store.upgrade()  # doctest: +SKIP

How the graph model of DESIGN section 3 maps onto Neo4j:

| record           | in Neo4j                                                                  |
|------------------|---------------------------------------------------------------------------|
| node of kind K   | `(:K {id, ...fields})`; JSON fields and `tool_calls` as JSON strings      |
| Relation         | `(:Entity)-[:TOKEN {type: name, props}]->(:Entity)`, TOKEN = `relation_token(name)` |
| relation type    | `(:RelationType {token, name, phrase})`, which also catches token collisions |
| Edge of kind E   | `(:A)-[:E {props}]->(:B)`                                                  |

Every write is a managed transaction (`execute_write`, retried on transient failures) of `UNWIND`
batches: nodes first, then relations and edges, after the uniqueness constraints of
`migrations/neo4j` are in place (`upgrade()`; writes refuse to run without them). User values only
ever travel as parameters. Relationship types of relations are parameters too (Neo4j 5.26's
dynamic types, `MERGE (s)-[r:$(row.token)]->(t)`), and the labels and types that do appear in
query text come from the schema or from `relation_token`, checked against `[A-Za-z_][A-Za-z0-9_]*`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from kag.schema import (
    EDGE_ENDPOINTS,
    EDGE_KINDS,
    NODE_CLASSES,
    NODE_KINDS,
    Edge,
    Entity,
    Node,
    Relation,
    check_relation_name,
    node_class,
    relation_token,
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
from kag.stores.neo4j_migrations import MIGRATIONS_DIR, apply_migrations
from kag.stores.neo4j_projection import project_relations

__all__ = ["Neo4jConfig", "Neo4jStore", "parse_neo4j_url"]

#: edge kinds that can leave an Entity node: relationships, not relations. `relation_count`
#: relies on none of them also ending at one (tests/test_neo4j_bulk.py checks it).
_EDGE_KINDS_FROM_ENTITY = tuple(
    kind for kind, ends in EDGE_ENDPOINTS.items() if any(s == "Entity" for s, _ in ends)
)

_SCHEMES = ("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc")
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_T = TypeVar("_T")
# One query text for every relation type: Neo4j 5.26's dynamic types (`$(...)`) take the token as
# a parameter, so the plan is compiled once instead of once per type. Tokens come from
# `relation_token` only.
_MERGE_RELATIONS = (
    "UNWIND $rows AS row MATCH (s:Entity {id: row.s}) MATCH (t:Entity {id: row.t}) "
    "MERGE (s)-[r:$(row.token)]->(t) SET r.type = row.type, r.props = row.props RETURN count(*) AS n"
)

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


def parse_neo4j_url(url: str) -> tuple[str, str, str, str | None]:
    """Split a graph URL into (driver URI without credentials, user, password, database).

    Credentials missing from the URL come from `KAG_NEO4J_USER` (default `neo4j`) and
    `KAG_NEO4J_PASSWORD`; user and password may be percent-encoded.

    >>> parse_neo4j_url("neo4j://neo4j:p%40ss@127.0.0.1:7687?database=kag")
    ('neo4j://127.0.0.1:7687', 'neo4j', 'p@ss', 'kag')
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(
            f"not a Neo4j URL: {url.split('@')[-1]!r}; use neo4j://user:password@host:7687"
        )
    if not parts.hostname:
        raise ValueError(
            f"Neo4j URL {parts.scheme}://...@{parts.netloc.split('@')[-1]} names no host"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"Neo4j URL has a bad port: {parts.netloc.split('@')[-1]!r}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    uri = f"{parts.scheme}://{host}:{port or 7687}"
    user = unquote(parts.username) if parts.username else os.environ.get("KAG_NEO4J_USER", "neo4j")
    if parts.password is not None:
        password = unquote(parts.password)
    else:
        password = os.environ.get("KAG_NEO4J_PASSWORD", "")
    database = parse_qs(parts.query).get("database", [None])[0]
    return uri, user, password, database


# --------------------------------------------------------------------------- record <-> properties

#: kind -> field name -> how it is stored: "json" (JSON string), "list" (list of strings),
#: "float" (float, ints converted so both backends return the same type) or "plain".
_FIELDS: dict[str, dict[str, str]] = {}
for _kind, _cls in NODE_CLASSES.items():
    _FIELDS[_kind] = {}
    for _f in dataclasses.fields(_cls):
        if _f.name == "id":
            continue
        _type = str(_f.type)
        if _f.name in _cls.JSON_FIELDS or _f.name == "tool_calls":
            how = "json"
        elif _type.startswith("tuple"):
            how = "list"
        elif _type.split("|")[0].strip() == "float":
            how = "float"
        else:
            how = "plain"
        _FIELDS[_kind][_f.name] = how


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _node_props(node: Node) -> dict[str, Any]:
    """The property map of a record; None values are left out (Neo4j does not store nulls)."""
    props: dict[str, Any] = {"id": node.id}
    for name, how in _FIELDS[node.KIND].items():
        value = getattr(node, name)
        if value is None:
            continue
        if how == "json":
            if name == "tool_calls":
                value = [c.to_dict() for c in value]
            value = _dumps(value)
        elif how == "list":
            value = list(value)
        elif how == "float":
            value = float(value)
        props[name] = value
    return props


def _props_node(kind: str, props: Mapping[str, Any]) -> Node:
    data: dict[str, Any] = {"id": props["id"]}
    for name, how in _FIELDS[kind].items():
        if name not in props:
            continue
        value = props[name]
        if how == "json":
            value = json.loads(value)
        elif how == "list":
            value = tuple(value)
        data[name] = value
    return NODE_CLASSES[kind].from_trusted(data)


def _safe(name: str) -> str:
    """A label or relationship type for query text, quoted; refuses anything but `[A-Za-z_]\\w*`."""
    if not _SAFE_NAME.match(name):
        raise StoreError(f"refusing to use {name!r} as a Neo4j label or relationship type")
    return f"`{name}`"


def _label(kind: str) -> str:
    node_class(kind)  # raises a SchemaError naming the known kinds
    return _safe(kind)


def _check_edge_kind(kind: str) -> None:
    if kind not in EDGE_KINDS:
        raise ValueError(f"unknown edge kind {kind!r}; known kinds: {', '.join(EDGE_KINDS)}")


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- errors


def _driver_errors() -> tuple[type[BaseException], ...]:
    from neo4j import exceptions as ex

    return (ex.Neo4jError, ex.DriverError)


def _describe(err: BaseException) -> str:
    from neo4j import exceptions as ex

    if isinstance(err, ex.AuthError):
        return "authentication failed: check the user and password (URL or KAG_NEO4J_PASSWORD)"
    if isinstance(err, (ex.ServiceUnavailable, ex.SessionExpired, ex.IncompleteCommit)):
        return f"the server is unreachable or went away ({type(err).__name__}: {err})"
    message = getattr(err, "message", None) or str(err)
    code = getattr(err, "code", None)
    return f"{message} ({code})" if code else message


def _translated(method: Callable[..., _T]) -> Callable[..., _T]:
    """Turn a driver exception escaping `method` into a `StoreError` that names the server."""

    @functools.wraps(method)
    def wrapper(self: Neo4jStore, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except _driver_errors() as err:
            raise StoreError(
                f"Neo4j {self.address}: {method.__name__} failed: {_describe(err)}"
            ) from err

    return wrapper


# --------------------------------------------------------------------------- the store


class Neo4jStore:
    """A `GraphStore` on a Neo4j server (see `kag.stores.base.GraphStore` for the contract)."""

    def __init__(self, url: str, *, config: Neo4jConfig | None = None) -> None:
        import neo4j

        self.url = url
        self.config = config or Neo4jConfig()
        uri, user, password, database = parse_neo4j_url(url)
        self.address = uri
        self.database = self.config.database or database
        if self.config.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.config.batch_size}")
        if self.config.write_workers < 1:
            raise ValueError(f"write_workers must be >= 1, got {self.config.write_workers}")
        self._driver = neo4j.GraphDatabase.driver(
            uri,
            auth=(user, password),
            connection_timeout=self.config.connection_timeout,
            max_transaction_retry_time=self.config.max_retry_time,
            notifications_min_severity="OFF",
        )
        self._tokens: dict[str, str] = {}  # token -> relation name, as recorded in the graph
        self._schema_checked = False
        self._connect(user)

    def _connect(self, user: str) -> None:
        from neo4j import exceptions as ex

        delay = 1.0
        last: BaseException | None = None
        for attempt in range(max(1, self.config.connect_attempts)):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                self._driver.verify_connectivity()
                return
            except ex.AuthError:
                # never retried: Neo4j locks a user out after a few failed attempts
                self._driver.close()
                raise StoreError(
                    f"Neo4j {self.address}: authentication failed for user {user!r}; check the "
                    "password in the URL (neo4j://user:password@host:port) or KAG_NEO4J_PASSWORD"
                ) from None
            except (*_driver_errors(), OSError) as err:
                last = err
        self._driver.close()
        raise StoreError(
            f"cannot reach Neo4j at {self.address} after {self.config.connect_attempts} attempt(s): "
            f"{type(last).__name__}: {last}. Is the server running? `make neo4j` starts a local one."
        ) from None

    def __repr__(self) -> str:
        return f"Neo4jStore({self.address!r})"

    def _session(self, *, read: bool = False):
        import neo4j

        return self._driver.session(
            database=self.database,
            default_access_mode=neo4j.READ_ACCESS if read else neo4j.WRITE_ACCESS,
        )

    def _read(self, query: str, **params: Any) -> list[Any]:
        """Records of one read query, in a managed (retried) read transaction."""
        with self._session(read=True) as session:
            return session.execute_read(lambda tx: list(tx.run(query, params)))

    # ------------------------------------------------------------------ lifecycle

    @_translated
    def upgrade(self) -> list[str]:
        with self._session() as session:
            applied = apply_migrations(session, self.config.migrations_dir)
        self._schema_checked = True
        return applied

    @_translated
    def check_schema(self) -> None:
        """Raise a `StoreError` telling the user to run `kag db upgrade` if the schema is missing."""
        if self._schema_checked:
            return
        rows = self._read("MATCH (m:KagMigration) RETURN count(m) AS n")
        if not rows[0]["n"]:
            raise StoreError(
                f"Neo4j graph {self.address} has no KAG schema: run `kag db upgrade --graph URL`"
            )
        self._schema_checked = True

    def close(self) -> None:
        self._driver.close()

    # ------------------------------------------------------------------ writing

    @_translated
    def write(self, batch: GraphBatch) -> None:
        self.check_schema()
        self._write(batch.with_relations(), replan=False)

    def _write(self, batch: GraphBatch, *, replan: bool) -> int:
        """Write `batch` in one transaction; return the number of relations it created."""
        new_tokens = self._new_tokens(r.type for r in batch.relations)
        with self._session() as session:
            created = session.execute_write(self._write_tx, batch, new_tokens, replan)
        self._tokens.update(new_tokens)
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
        from kag.stores.neo4j_bulk import RelationBulkWriter

        self.check_schema()
        with self._session(read=True) as session:
            committed = session.run("MATCH ()-[r]->() RETURN count(r) AS n").single()["n"]
        written = 0
        bulk = RelationBulkWriter(self, relations_before=self.relation_count())
        try:
            with bulk:
                for batch in batches:
                    if batch.nodes or batch.ensure_entities:
                        self._write(
                            GraphBatch(nodes=batch.nodes, ensure_entities=batch.ensure_entities),
                            replan=False,
                        )
                    merged = bulk.add(batch.relations, batch.triples)
                    for field, items in (("relations", merged), ("edges", batch.edges)):
                        start = 0
                        while start < len(items):
                            size = min(self.config.batch_size, max(1_000, committed))
                            part = items[start : start + size]
                            bulk.merged += self._write(GraphBatch(**{field: part}), replan=True)
                            committed += len(part)
                            start += size
                    written += len(batch)
        except (StoreError, *_driver_errors()) as err:
            if not isinstance(err, StoreError):
                err = StoreError(f"Neo4j {self.address}: write_many failed: {_describe(err)}")
            raise StoreError(
                f"{err} (records of earlier batches, and {bulk.committed:,} new relations, were "
                "committed; writes are upserts, so rerunning the same import is safe)"
            ) from err
        return written

    def _register_relation_types(self, names: Iterable[str]) -> None:
        """Record relation types (their `:RelationType` nodes) before relations of them are written."""
        new_tokens = self._new_tokens(names)
        if new_tokens:
            with self._session() as session:
                session.execute_write(self._register_tokens, new_tokens)
            self._tokens.update(new_tokens)

    def _new_tokens(self, names: Iterable[str]) -> dict[str, str]:
        """Tokens of relation names not yet known to this store; a collision is an error."""
        new: dict[str, str] = {}
        for name in dict.fromkeys(names):
            token = relation_token(name)
            known = self._tokens.get(token) or new.get(token)
            if known is None:
                new[token] = name
            elif known != name:
                raise _collision(name, known, token)
        return new

    def _register_tokens(self, tx: Any, tokens: Mapping[str, str]) -> None:
        if not tokens:
            return
        rows = [{"token": t, "name": n} for t, n in tokens.items()]
        result = tx.run(
            "UNWIND $rows AS row MERGE (k:RelationType {token: row.token}) "
            "ON CREATE SET k.name = row.name RETURN k.token AS token, k.name AS name",
            rows=rows,
        )
        for record in result:
            if record["name"] != tokens[record["token"]]:
                raise _collision(tokens[record["token"]], record["name"], record["token"])

    def _write_tx(
        self, tx: Any, batch: GraphBatch, new_tokens: Mapping[str, str], replan: bool
    ) -> int:
        size = self.config.batch_size
        created = 0
        prefix = "CYPHER replan=force " if replan else ""
        self._register_tokens(tx, new_tokens)
        for kind in NODE_KINDS:
            nodes = batch.nodes.get(kind)
            if not nodes:
                continue
            # the last write of an id in one batch wins, as it would across batches
            rows = list({n.id: _node_props(n) for n in nodes}.values())
            query = f"UNWIND $rows AS row MERGE (n:{_label(kind)} {{id: row.id}}) SET n = row"
            for chunk in _chunks(rows, size):
                tx.run(query, rows=chunk).consume()
        if batch.ensure_entities:
            ids = list(dict.fromkeys(batch.ensure_entities))
            for chunk in _chunks(ids, size):
                tx.run(
                    "UNWIND $ids AS id MERGE (e:Entity {id: id}) ON CREATE SET e.name = id, "
                    "e.type = '', e.domain = '', e.description = '', e.props = '{}'",
                    ids=chunk,
                ).consume()
        if batch.relations:
            tokens: dict[str, str] = {}
            rows = []
            for r in batch.relations:
                token = tokens.get(r.type)
                if token is None:
                    token = tokens[r.type] = relation_token(r.type)
                props = _dumps(r.props) if r.props else None
                rows.append(
                    {"s": r.source, "t": r.target, "type": r.type, "token": token, "props": props}
                )
            for chunk in _chunks(rows, size):
                result = tx.run(prefix + _MERGE_RELATIONS, rows=chunk)
                n = result.single()["n"]
                created += result.consume().counters.relationships_created
                if n != len(chunk):
                    ids = {row["s"] for row in chunk} | {row["t"] for row in chunk}
                    raise _missing_entities(_missing(tx, "Entity", ids))
        if batch.edges:
            groups: dict[tuple[str, str, str], dict[tuple[str, str], dict[str, Any]]] = {}
            for e in batch.edges:
                group = groups.setdefault((e.kind, e.source_kind, e.target_kind), {})
                group[(e.source, e.target)] = {
                    "s": e.source,
                    "t": e.target,
                    "props": _dumps(e.props),
                }
            for (kind, source_kind, target_kind), by_key in groups.items():
                rows = list(by_key.values())
                query = prefix + (
                    f"UNWIND $rows AS row MATCH (a:{_label(source_kind)} {{id: row.s}}) "
                    f"MATCH (b:{_label(target_kind)} {{id: row.t}}) "
                    f"MERGE (a)-[r:{_safe(kind)}]->(b) SET r.props = row.props RETURN count(*) AS n"
                )
                for chunk in _chunks(rows, size):
                    if tx.run(query, rows=chunk).single()["n"] != len(chunk):
                        for end_kind, key in ((source_kind, "s"), (target_kind, "t")):
                            missing = _missing(tx, end_kind, {row[key] for row in chunk})
                            if missing:
                                raise StoreError(
                                    f"edge endpoint(s) {missing[:5]} are not {end_kind} nodes of the "
                                    "graph; write the nodes first (in the same batch is fine)"
                                )
        return created

    @_translated
    def delete_nodes(self, kind: str, ids: Sequence[str]) -> int:
        query = f"UNWIND $ids AS id MATCH (n:{_label(kind)} {{id: id}}) DETACH DELETE n RETURN count(*) AS n"
        ids = list(dict.fromkeys(ids))

        def work(tx: Any) -> int:
            return sum(
                tx.run(query, ids=chunk).single()["n"]
                for chunk in _chunks(ids, self.config.batch_size)
            )

        with self._session() as session:
            return session.execute_write(work)

    @_translated
    def delete_relations(self, relations: Sequence[Relation]) -> int:
        by_token: dict[str, list[dict[str, str]]] = {}
        for r in relations:
            by_token.setdefault(relation_token(r.type), []).append(
                {"s": r.source, "t": r.target, "type": r.type}
            )

        def work(tx: Any) -> int:
            deleted = 0
            for token, rows in by_token.items():
                query = (
                    f"UNWIND $rows AS row MATCH (:Entity {{id: row.s}})-[r:{_safe(token)}]->(:Entity {{id: row.t}}) "
                    "WHERE r.type = row.type DELETE r RETURN count(*) AS n"
                )
                for chunk in _chunks(rows, self.config.batch_size):
                    deleted += tx.run(query, rows=chunk).single()["n"]
            return deleted

        with self._session() as session:
            return session.execute_write(work)

    # ------------------------------------------------------------------ reading nodes

    @_translated
    def get_nodes(self, kind: str, ids: Sequence[str]) -> list[Node]:
        ids = list(ids)
        query = f"UNWIND $ids AS id MATCH (n:{_label(kind)} {{id: id}}) RETURN properties(n) AS p"
        found: dict[str, Node] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), self.config.batch_size):
            for record in self._read(query, ids=chunk):
                found[record["p"]["id"]] = _props_node(kind, record["p"])
        return [found[i] for i in ids if i in found]

    def _where(self, kind: str, where: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """A Cypher condition on `n` and its parameters; field names are checked, values bound."""
        clauses, params = [], {}
        fields = _FIELDS[kind]
        for i, (name, value) in enumerate((where or {}).items()):
            if name != "id" and name not in fields:
                raise ValueError(f"cannot filter {kind} by {name!r}; fields are {['id', *fields]}")
            if fields.get(name) in ("json", "list"):
                raise ValueError(f"cannot filter {kind} by the JSON field {name!r}")
            prop = f"n.{_safe(name)}"
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
            f"MATCH (n:{_label(kind)}) WHERE n.id > $after AND {condition} "
            "RETURN properties(n) AS p ORDER BY n.id LIMIT $limit"
        )
        after = ""
        while True:
            rows = self._read_translated(
                "iter_nodes", query, after=after, limit=batch_size, **params
            )
            if not rows:
                return
            yield [_props_node(kind, r["p"]) for r in rows]
            after = rows[-1]["p"]["id"]
            if len(rows) < batch_size:
                return

    def _read_translated(self, action: str, query: str, **params: Any) -> list[Any]:
        try:
            return self._read(query, **params)
        except _driver_errors() as err:
            raise StoreError(f"Neo4j {self.address}: {action} failed: {_describe(err)}") from err

    @_translated
    def count_nodes(self, kind: str, *, where: Mapping[str, Any] | None = None) -> int:
        condition, params = self._where(kind, where)
        return self._read(
            f"MATCH (n:{_label(kind)}) WHERE {condition} RETURN count(n) AS n", **params
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
        return [_props_node("Entity", r["p"]) for r in self._read(query, **params)]  # type: ignore[misc]

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
        tokens = [relation_token(n) for n in names]
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
        for r in self._read(query, **params):
            other = _props_node("Entity", r["o"])
            src, dst = (entity_id, other.id) if r["d"] == "out" else (other.id, entity_id)
            props = json.loads(r["props"]) if r["props"] else {}
            out.append((Relation(source=src, type=r["type"], target=dst, props=props), other))
        return out  # type: ignore[return-value]

    def _relation_type_nodes(self) -> list[tuple[str, str]]:
        """(token, name) of every recorded relation type; refreshes the collision cache."""
        rows = self._read("MATCH (k:RelationType) RETURN k.token AS token, k.name AS name")
        pairs = [(r["token"], r["name"]) for r in rows]
        self._tokens.update(pairs)
        return pairs

    @_translated
    def relation_types(self) -> dict[str, int]:
        pairs = self._relation_type_nodes()
        counts = self._type_counts([token for token, _ in pairs])
        return dict(sorted((name, n) for token, name in pairs if (n := counts.get(token, 0))))

    @_translated
    def relation_count(self) -> int:
        """Relations, from the count store: relationships leaving an entity, minus edges that do.

        One plan for any number of relation types, unlike `relation_types`.
        """
        branches = ["MATCH (:Entity)-[r]->() RETURN count(r) AS n"]
        tokens = self._relation_tokens()
        for kind in _EDGE_KINDS_FROM_ENTITY:
            branches.append(f"MATCH (:Entity)-[r:{_safe(kind)}]->() RETURN -count(r) AS n")
            if kind in tokens:  # a relation type with an edge kind's name
                branches.append(
                    f"MATCH (:Entity)-[r:{_safe(kind)}]->(:Entity) RETURN count(r) AS n"
                )
        return sum(r["n"] for r in self._read(" UNION ALL ".join(branches)))

    def _relation_tokens(self) -> set[str]:
        return {token for token, _ in self._relation_type_nodes()}

    def _type_counts(self, tokens: Sequence[str], *, per_query: int = 200) -> dict[str, int]:
        """Entity-to-entity relationships of each token, `per_query` tokens per UNION query.

        One query for many types, because every query text is planned once per server: 237
        single-type queries cost seconds on a server that has not seen them yet.
        """
        counts: dict[str, int] = {}
        for start in range(0, len(tokens), per_query):
            part = tokens[start : start + per_query]
            branches = []
            for i, token in enumerate(part):
                if token in EDGE_KINDS:  # shares a type with an edge kind: count entity pairs only
                    pattern = f"(:Entity)-[r:{_safe(token)}]->(:Entity)"
                else:  # answered from the count store, without touching relationships
                    pattern = f"()-[r:{_safe(token)}]->()"
                branches.append(f"MATCH {pattern} RETURN {i} AS i, count(r) AS n")
            for record in self._read(" UNION ALL ".join(branches)):
                counts[part[record["i"]]] = record["n"]
        return counts

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
                for r in self._read_translated("iter_relations", page, after=after, sources=sources)
            ]
            if not ids:
                break
            for r in self._read_translated("iter_relations", query, ids=ids):
                pending.append(_trusted_relation(r["s"], r["type"], r["t"], r["props"]))
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                pending = pending[batch_size:]
            after = ids[-1]
        if pending:
            yield pending

    @_translated
    def set_relation_phrases(self, phrases: Mapping[str, str]) -> None:
        rows = []
        for name, phrase in phrases.items():
            check_relation_name(name)
            if not isinstance(phrase, str) or not phrase.strip():
                raise ValueError(f"phrase of relation {name!r} must be a non-empty string")
            rows.append({"token": relation_token(name), "name": name, "phrase": phrase})
        self.check_schema()
        new_tokens = self._new_tokens(phrases)

        def work(tx: Any) -> None:
            self._register_tokens(tx, new_tokens)
            tx.run(
                "UNWIND $rows AS row MATCH (k:RelationType {token: row.token}) SET k.phrase = row.phrase",
                rows=rows,
            ).consume()

        with self._session() as session:
            session.execute_write(work)
        self._tokens.update(new_tokens)

    @_translated
    def relation_phrases(self) -> dict[str, str]:
        rows = self._read(
            "MATCH (k:RelationType) WHERE k.phrase IS NOT NULL RETURN k.name AS name, k.phrase AS phrase ORDER BY name"
        )
        return {r["name"]: r["phrase"] for r in rows}

    @_translated
    def relation_arrays(
        self, *, relation_types: Sequence[str] | None = None, domain: str | None = None
    ) -> RelationArrays:
        return project_relations(
            lambda: self._session(read=True),
            self._relation_type_nodes(),
            relation_types=relation_types,
            domain=domain,
        )

    # ------------------------------------------------------------------ reading edges

    def _edge_query(self, kind: str, condition: str) -> str:
        parts = [
            f"MATCH (a:{_label(sk)})-[r:{_safe(kind)}]->(b:{_label(tk)}) WHERE {condition} "
            f"RETURN '{sk}' AS sk, a.id AS s, '{tk}' AS tk, b.id AS t, r.props AS props"
            for sk, tk in EDGE_ENDPOINTS[kind]
        ]
        return "CALL () { " + " UNION ALL ".join(parts) + " } RETURN sk, s, tk, t, props"

    def iter_edges(self, kind: str, *, batch_size: int = 50_000) -> Iterator[list[Edge]]:
        _check_edge_kind(kind)
        query = (
            self._edge_query(kind, "(a.id > $s OR (a.id = $s AND b.id > $t))")
            + " ORDER BY s, t LIMIT $limit"
        )
        last = ("", "")
        while True:
            rows = self._read_translated(
                "iter_edges", query, s=last[0], t=last[1], limit=batch_size
            )
            if not rows:
                return
            yield [_record_edge(kind, r) for r in rows]
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
        _check_edge_kind(kind)
        clauses, params = [], {}
        for name, var, value in (("source", "a", source), ("target", "b", target)):
            if isinstance(value, str):
                clauses.append(f"{var}.id = ${name}")
                params[name] = value
            elif value is not None:
                clauses.append(f"{var}.id IN ${name}")
                params[name] = list(value)
        query = self._edge_query(kind, " AND ".join(clauses) or "true") + " ORDER BY s, t"
        return [_record_edge(kind, r) for r in self._read(query, **params)]

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
        return [r["id"] for r in self._read(cypher, **params)]

    @_translated
    def trajectory_contents(self, trajectory_ids: Sequence[str]) -> dict[str, TrajectoryContent]:
        ids = sorted(set(trajectory_ids))
        steps: list[tuple[str, int, dict[str, Any]]] = []
        touched: list[tuple[str, str]] = []
        used: list[tuple[str, str]] = []
        verified: list[tuple[str, str]] = []
        for chunk in _chunks(ids, self.config.batch_size):
            step_ids: list[str] = []
            for r in self._read(_READ_STEPS, ids=chunk):
                for sid, idx, *message in r["steps"]:
                    steps.append((r["tid"], idx, stored_step_message(*message)))
                    step_ids.append(sid)
            for r in self._read(_READ_STEP_TARGETS, ids=chunk):
                touched.extend((r["tid"], e) for e in r["entities"])
                used.extend((r["tid"], t) for t in r["tools"])
            for r in self._read(_READ_VERIFICATIONS, ids=chunk, steps=step_ids):
                verified.extend((r["tid"], v) for v in r["ids"])
        return fill_contents(ids, steps, touched=touched, used=used, verified=verified)

    # ------------------------------------------------------------------ summary

    @_translated
    def stats(self) -> dict[str, Any]:
        types = self.relation_types()  # also refreshes the token cache used below

        def work(tx: Any) -> dict[str, Any]:
            nodes = {
                kind: tx.run(f"MATCH (n:{_label(kind)}) RETURN count(n) AS n").single()["n"]
                for kind in NODE_KINDS
            }
            edges = {}
            for kind in EDGE_KINDS:
                if kind not in self._tokens:  # only edges have this type: the count store answers
                    edges[kind] = tx.run(
                        f"MATCH ()-[r:{_safe(kind)}]->() RETURN count(r) AS n"
                    ).single()["n"]
                    continue
                parts = [
                    f"MATCH (:{_label(sk)})-[r:{_safe(kind)}]->(:{_label(tk)}) RETURN count(r) AS n"
                    for sk, tk in EDGE_ENDPOINTS[kind]
                ]
                edges[kind] = sum(r["n"] for r in tx.run(" UNION ALL ".join(parts)))
            return {"nodes": nodes, "edges": edges}

        with self._session(read=True) as session:
            out = session.execute_read(work)
        return {
            "nodes": out["nodes"],
            "edges": {"RELATION": sum(types.values()), **out["edges"]},
            "relation_types": types,
        }


# --------------------------------------------------------------------------- helpers


def _collision(name: str, other: str, token: str) -> StoreError:
    return StoreError(
        f"relation types {name!r} and {other!r} both map to the Neo4j relationship type {token!r}; "
        "rename one of them (Neo4j types are made of letters, digits and '_')"
    )


def _missing_entities(missing: Sequence[str]) -> StoreError:
    return StoreError(
        f"{len(missing)} relation endpoint(s) are not entities of the graph, e.g. "
        f"{missing[:5]}; upsert the entities first (or list them in ensure_entities)"
    )


def _missing(tx: Any, kind: str, ids: Iterable[str]) -> list[str]:
    result = tx.run(
        f"UNWIND $ids AS id OPTIONAL MATCH (n:{_label(kind)} {{id: id}}) WITH id, n WHERE n IS NULL "
        "RETURN id ORDER BY id",
        ids=sorted(ids),
    )
    return [r["id"] for r in result]


def _trusted_relation(source: str, type_: str, target: str, props: str | None) -> Relation:
    # records read back were validated on write; skip the checks on the hot path
    rel = Relation.__new__(Relation)
    object.__setattr__(rel, "source", source)
    object.__setattr__(rel, "type", type_)
    object.__setattr__(rel, "target", target)
    object.__setattr__(rel, "props", json.loads(props) if props else {})
    return rel


def _record_edge(kind: str, r: Any) -> Edge:
    edge = Edge.__new__(Edge)
    for name, value in (
        ("kind", kind),
        ("source_kind", r["sk"]),
        ("source", r["s"]),
        ("target_kind", r["tk"]),
        ("target", r["t"]),
        ("props", json.loads(r["props"]) if r["props"] else {}),
    ):
        object.__setattr__(edge, name, value)
    return edge
