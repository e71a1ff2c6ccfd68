"""The embedded graph backend: SQLAlchemy 2 Core over SQLite (the default), schema by Alembic.

>>> store = SQLStore("sqlite:///kag.db"); store.upgrade()  # doctest: +SKIP

Writes use `INSERT ... ON CONFLICT DO UPDATE` through the DB-API's `executemany`, one transaction
per `write` (or per `write_many` stream), so a failed batch writes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kag.schema import EDGE_KINDS, NODE_KINDS, Edge, Entity, Node, Relation, node_class
from kag.stores import sql_tables as T
from kag.stores.base import (
    Direction,
    GraphBatch,
    GraphNotFoundError,
    NameMatch,
    RelationArrays,
    StoreError,
    TrajectoryContent,
    TrajectoryQuery,
    check_direction,
    fill_contents,
    stored_step_message,
)

__all__ = ["SQLStore", "MIGRATIONS_DIR"]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations" / "sql"
_CHUNK = 900  # stays under SQLite's limit on bound variables for IN lists


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _table(kind: str) -> sa.Table:
    node_class(kind)  # raises a SchemaError naming the known kinds
    return T.metadata.tables[T.NODE_TABLES[kind]]


class SQLStore:
    """A `GraphStore` on a SQL database (SQLite by default; see `kag.stores.base.GraphStore`)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        #: the SQLite file, which only `upgrade()` creates: a read of a misspelt path must not
        #: leave an empty database behind
        self.path: Path | None = None
        engine_url = url
        if url.startswith("sqlite:///") and url not in ("sqlite:///", "sqlite:///:memory:"):
            self.path = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser().resolve()
            if not self.path.parent.is_dir():
                raise GraphNotFoundError(
                    f"cannot open {url}: directory {self.path.parent} does not exist"
                )
            if "?" not in url:  # open read-write, never create (SQLite's URI `mode=rw`)
                engine_url = f"sqlite:///file:{quote(str(self.path))}?mode=rw&uri=true"
        try:
            self.engine = sa.create_engine(engine_url, echo=echo)
        except Exception as err:  # bad URL or missing driver
            raise StoreError(f"cannot open graph {url!r}: {err}") from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            # pysqlite opens a transaction only before DML, so DDL and reads would run outside
            # it; emitting BEGIN ourselves makes every `begin()` block one real transaction
            sa.event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))

    # ------------------------------------------------------------------ lifecycle

    def upgrade(self) -> list[str]:
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        if self.path is not None and not self.path.exists():
            sqlite3.connect(self.path).close()  # the one place a graph file is created
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url)
        script = ScriptDirectory.from_config(cfg)
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        # newest first, down to (not including) the current revision
        pending = [rev.revision for rev in script.iterate_revisions("heads", current or "base")]
        pending.reverse()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return pending

    def check_schema(self) -> None:
        """Raise a `StoreError` telling the user to run `kag db upgrade` if the schema is missing."""
        with self._schema_errors():
            has_schema = sa.inspect(self.engine).has_table("relations")
        if not has_schema:
            raise StoreError(
                f"graph {self.url} has no schema: run `kag db upgrade --graph {self.url}`"
            )

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction; a missing schema becomes a `StoreError` saying what to run."""
        with self._schema_errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A read connection; a missing schema becomes a `StoreError` saying what to run."""
        with self._schema_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _schema_errors(self) -> Iterator[None]:
        if self.path is not None and not self.path.exists():
            raise GraphNotFoundError(
                f"graph file {self.path} does not exist: check the path in {self.url}, or create "
                f"the graph with `kag db upgrade --graph {self.url}`"
            )
        try:
            yield
        except sa.exc.OperationalError as err:
            if "no such table" in str(err):
                raise StoreError(
                    f"graph {self.url} has no schema: run `kag db upgrade --graph {self.url}`"
                ) from None
            raise

    # ------------------------------------------------------------------ writing

    def write(self, batch: GraphBatch) -> None:
        with self._begin() as conn:
            self._write(conn, batch, {})

    def write_many(self, batches: Iterable[GraphBatch]) -> int:
        written = 0
        with self._begin() as conn:
            # entity id -> key, valid while this transaction holds the write lock
            keys: dict[str, int] = {}
            # Filling an empty relations table: build its secondary index once at the end rather
            # than row by row (about half the insert cost). DDL is transactional in SQLite, so a
            # failed stream rolls the index back too.
            indexes = []
            if (
                self.engine.dialect.name == "sqlite"
                and not conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM relations)").scalar_one()
            ):
                indexes = conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = 'relations' AND sql IS NOT NULL"
                ).fetchall()
                for name, _ in indexes:
                    conn.exec_driver_sql(f'DROP INDEX "{name}"')
            for batch in batches:
                self._write(conn, batch, keys)
                written += len(batch)
            for _, sql in indexes:
                conn.exec_driver_sql(sql)
        return written

    def _write(self, conn: Connection, batch: GraphBatch, keys: dict[str, int]) -> None:
        for kind in NODE_KINDS:
            nodes = batch.nodes.get(kind)
            if nodes:
                self._upsert_nodes(conn, kind, nodes)
        if batch.ensure_entities:
            conn.exec_driver_sql(
                "INSERT INTO entities (id, name, type, domain, description, props) "
                "VALUES (?, ?, '', '', '', '{}') ON CONFLICT(id) DO NOTHING",
                [(i, i) for i in dict.fromkeys(batch.ensure_entities)],
            )
        if batch.relations or batch.triples:
            self._upsert_relations(conn, batch.relations, keys, batch.triples)
        if batch.edges:
            self._upsert_edges(conn, batch.edges)
        if batch.phrases:
            conn.exec_driver_sql(
                "INSERT INTO relation_types (name, phrase) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET phrase = excluded.phrase",
                list(batch.phrases.items()),
            )

    def _upsert_nodes(self, conn: Connection, kind: str, nodes: Sequence[Node]) -> None:
        table = T.NODE_TABLES[kind]
        cols = ["id", *T.NODE_FIELDS[kind]]
        # the last write of an id in one batch wins, as it would across batches
        rows = list({n.id: T.node_row(n) for n in nodes}.values())
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}"
        )
        conn.exec_driver_sql(sql, rows)

    def _relation_type_keys(self, conn: Connection, names: Iterable[str]) -> dict[str, int]:
        names = list(dict.fromkeys(names))
        conn.exec_driver_sql(
            "INSERT INTO relation_types (name) VALUES (?) ON CONFLICT(name) DO NOTHING",
            [(n,) for n in names],
        )
        out: dict[str, int] = {}
        for chunk in _chunks(names):
            q = f"SELECT name, key FROM relation_types WHERE name IN ({','.join('?' * len(chunk))})"
            out.update(conn.exec_driver_sql(q, tuple(chunk)).fetchall())
        return out

    def _entity_keys(
        self, conn: Connection, ids: Iterable[str], cache: dict[str, int]
    ) -> dict[str, int]:
        wanted = [i for i in dict.fromkeys(ids) if i not in cache]
        for chunk in _chunks(wanted):
            q = f"SELECT id, key FROM entities WHERE id IN ({','.join('?' * len(chunk))})"
            cache.update(conn.exec_driver_sql(q, tuple(chunk)).fetchall())
        missing = [i for i in wanted if i not in cache]
        if missing:
            raise StoreError(
                f"{len(missing)} relation endpoint(s) are not entities of the graph, e.g. "
                f"{missing[:5]}; upsert the entities first (or list them in ensure_entities)"
            )
        return cache

    def _upsert_relations(
        self,
        conn: Connection,
        rels: Sequence[Relation],
        keys: dict[str, int],
        triples: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        # sorted, so relation-type keys never depend on string hashing
        type_names = {r.type for r in rels}
        type_names.update([t for _, t, _ in triples])
        types = self._relation_type_keys(conn, sorted(type_names))
        ids = {r.source for r in rels}
        ids.update([r.target for r in rels])
        ids.update([s for s, _, _ in triples])
        ids.update([d for _, _, d in triples])
        missing = ids.difference(keys)
        if missing:
            self._entity_keys(conn, sorted(missing), keys)
        plain = [(keys[r.source], types[r.type], keys[r.target]) for r in rels if not r.props]
        plain += [(keys[s], types[t], keys[d]) for s, t, d in triples]
        # in key order the B-tree fills page by page instead of at random (~1.5x faster)
        plain.sort()
        if plain:
            conn.exec_driver_sql(
                "INSERT INTO relations (src, rel, dst) VALUES (?, ?, ?) "
                "ON CONFLICT(src, rel, dst) DO UPDATE SET props = NULL",
                plain,
            )
        with_props = [
            (keys[r.source], types[r.type], keys[r.target], T.dumps(r.props))
            for r in rels
            if r.props
        ]
        if with_props:
            conn.exec_driver_sql(
                "INSERT INTO relations (src, rel, dst, props) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(src, rel, dst) DO UPDATE SET props = excluded.props",
                with_props,
            )

    def _upsert_edges(self, conn: Connection, edges: Sequence[Edge]) -> None:
        by_kind: dict[str, set[str]] = {}
        for e in edges:
            by_kind.setdefault(e.source_kind, set()).add(e.source)
            by_kind.setdefault(e.target_kind, set()).add(e.target)
        for kind, ids in by_kind.items():
            missing = set(ids) - self._existing_ids(conn, kind, sorted(ids))
            if missing:
                raise StoreError(
                    f"edge endpoint(s) {sorted(missing)[:5]} are not {kind} nodes of the graph; "
                    "write the nodes first (in the same batch is fine)"
                )
        conn.exec_driver_sql(
            "INSERT INTO edges (kind, source, target, source_kind, target_kind, props) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(kind, source, target) DO UPDATE SET props = excluded.props",
            [
                (e.kind, e.source, e.target, e.source_kind, e.target_kind, T.dumps(e.props))
                for e in edges
            ],
        )

    def delete_nodes(self, kind: str, ids: Sequence[str]) -> int:
        table = _table(kind)
        deleted = 0
        with self._begin() as conn:
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                if kind == "Entity":
                    keys = [
                        k
                        for (k,) in conn.exec_driver_sql(
                            f"SELECT key FROM entities WHERE id IN ({marks})", tuple(chunk)
                        )
                    ]
                    for kchunk in _chunks(keys, _CHUNK // 2):
                        km = ",".join("?" * len(kchunk))
                        conn.exec_driver_sql(
                            f"DELETE FROM relations WHERE src IN ({km}) OR dst IN ({km})",
                            (*kchunk, *kchunk),
                        )
                conn.exec_driver_sql(
                    f"DELETE FROM edges WHERE (source_kind = ? AND source IN ({marks})) "
                    f"OR (target_kind = ? AND target IN ({marks}))",
                    (kind, *chunk, kind, *chunk),
                )
                deleted += conn.exec_driver_sql(
                    f"DELETE FROM {table.name} WHERE id IN ({marks})", tuple(chunk)
                ).rowcount
        return deleted

    def delete_relations(self, relations: Sequence[Relation]) -> int:
        deleted = 0
        with self._begin() as conn:
            for r in relations:
                deleted += conn.exec_driver_sql(
                    "DELETE FROM relations WHERE src = (SELECT key FROM entities WHERE id = ?) "
                    "AND rel = (SELECT key FROM relation_types WHERE name = ?) "
                    "AND dst = (SELECT key FROM entities WHERE id = ?)",
                    (r.source, r.type, r.target),
                ).rowcount
        return deleted

    # ------------------------------------------------------------------ reading nodes

    def _select(self, kind: str) -> sa.Select:
        table = _table(kind)
        return sa.select(*(table.c[c] for c in ("id", *T.NODE_FIELDS[kind])))

    def _existing_ids(self, conn: Connection, kind: str, ids: Sequence[str]) -> set[str]:
        table = _table(kind)
        found: set[str] = set()
        for chunk in _chunks(list(ids)):
            found.update(conn.execute(sa.select(table.c.id).where(table.c.id.in_(chunk))).scalars())
        return found

    def _get(self, conn: Connection, kind: str, ids: Sequence[str]) -> list[Node]:
        table = _table(kind)
        found: dict[str, Node] = {}
        for chunk in _chunks(list(ids)):
            for row in conn.execute(self._select(kind).where(table.c.id.in_(chunk))):
                found[row[0]] = T.row_node(kind, row)
        return [found[i] for i in ids if i in found]

    def get_nodes(self, kind: str, ids: Sequence[str]) -> list[Node]:
        with self._connect() as conn:
            return self._get(conn, kind, list(ids))

    def _where(self, kind: str, where: Mapping[str, Any] | None) -> list[Any]:
        table = _table(kind)
        clauses = []
        for name, value in (where or {}).items():
            if name not in table.c or name == "key":
                raise ValueError(
                    f"cannot filter {kind} by {name!r}; fields are {['id', *T.NODE_FIELDS[kind]]}"
                )
            if T.NODE_FIELDS[kind].get(name):
                raise ValueError(f"cannot filter {kind} by the JSON field {name!r}")
            col = table.c[name]
            if isinstance(value, (list, tuple, set, frozenset)):
                clauses.append(col.in_(list(value)))
            elif value is None:
                clauses.append(col.is_(None))
            else:
                clauses.append(col == value)
        return clauses

    def iter_nodes(
        self, kind: str, *, where: Mapping[str, Any] | None = None, batch_size: int = 10_000
    ) -> Iterator[list[Node]]:
        table = _table(kind)
        clauses = self._where(kind, where)
        last: str | None = None
        while True:
            q = self._select(kind).where(*clauses).order_by(table.c.id).limit(batch_size)
            if last is not None:
                q = q.where(table.c.id > last)
            with self._connect() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            yield [T.row_node(kind, r) for r in rows]
            last = rows[-1][0]
            if len(rows) < batch_size:
                return

    def count_nodes(self, kind: str, *, where: Mapping[str, Any] | None = None) -> int:
        table = _table(kind)
        with self._connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(table).where(*self._where(kind, where))
            ).scalar_one()

    def find_entities(
        self,
        *,
        name: str | None = None,
        match: NameMatch = "exact",
        type: str | None = None,
        domain: str | None = None,
        limit: int | None = 100,
    ) -> list[Entity]:
        table = _table("Entity")
        q = self._select("Entity")
        if name is not None:
            if match == "exact":
                q = q.where(table.c.name == name)
            elif match == "prefix":
                # fold both sides with the database's lower() so they fold alike
                folded = sa.func.lower(sa.literal(name))
                q = q.where(sa.func.substr(sa.func.lower(table.c.name), 1, len(name)) == folded)
            elif match == "contains":
                q = q.where(
                    sa.func.instr(sa.func.lower(table.c.name), sa.func.lower(sa.literal(name))) > 0
                )
            else:
                raise ValueError(f"match must be 'exact', 'prefix' or 'contains', not {match!r}")
        if type is not None:
            q = q.where(table.c.type == type)
        if domain is not None:
            q = q.where(table.c.domain == domain)
        q = q.order_by(table.c.name, table.c.id)
        if limit is not None:
            q = q.limit(limit)
        with self._connect() as conn:
            return [T.row_node("Entity", r) for r in conn.execute(q)]  # type: ignore[misc]

    # ------------------------------------------------------------------ reading relations

    def neighbors(
        self,
        entity_id: str,
        *,
        relation: str | Sequence[str] | None = None,
        direction: Direction = "out",
        limit: int | None = None,
    ) -> list[tuple[Relation, Entity]]:
        check_direction(direction)
        ent_cols = ", ".join(f"o.{c}" for c in ("id", *T.NODE_FIELDS["Entity"]))
        parts, params = [], []
        types = [relation] if isinstance(relation, str) else list(relation or [])
        type_clause = f" AND t.name IN ({','.join('?' * len(types))})" if types else ""
        for d, near, far in (("out", "src", "dst"), ("in", "dst", "src")):
            if direction in (d, "both"):
                parts.append(
                    f"SELECT '{d}', t.name, r.props, {ent_cols} FROM relations r "
                    f"JOIN relation_types t ON t.key = r.rel JOIN entities o ON o.key = r.{far} "
                    f"WHERE r.{near} = (SELECT key FROM entities WHERE id = ?){type_clause}"
                )
                params += [entity_id, *types]
        sql = " UNION ALL ".join(parts) + " ORDER BY 2, 4, 1"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        out = []
        with self._connect() as conn:
            for row in conn.exec_driver_sql(sql, tuple(params)):
                other = T.row_node("Entity", row[3:])
                src, dst = (entity_id, other.id) if row[0] == "out" else (other.id, entity_id)
                props = json.loads(row[2]) if row[2] else {}
                out.append((Relation(source=src, type=row[1], target=dst, props=props), other))
        return out  # type: ignore[return-value]

    def relation_types(self) -> dict[str, int]:
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT t.name, c.n FROM (SELECT rel, COUNT(*) AS n FROM relations GROUP BY rel) c "
                "JOIN relation_types t ON t.key = c.rel ORDER BY t.name"
            ).fetchall()
        return dict(rows)

    def relation_count(self) -> int:
        with self._connect() as conn:
            return conn.exec_driver_sql("SELECT COUNT(*) FROM relations").scalar_one()

    def iter_relations(self, *, batch_size: int = 50_000) -> Iterator[list[Relation]]:
        last = (-1, -1, -1)
        while True:
            with self._connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT r.src, r.rel, r.dst, s.id, t.name, d.id, r.props FROM relations r "
                    "JOIN entities s ON s.key = r.src JOIN entities d ON d.key = r.dst "
                    "JOIN relation_types t ON t.key = r.rel "
                    "WHERE (r.src, r.rel, r.dst) > (?, ?, ?) ORDER BY r.src, r.rel, r.dst LIMIT ?",
                    (*last, batch_size),
                ).fetchall()
            if not rows:
                return
            yield [
                Relation(
                    source=r[3], type=r[4], target=r[5], props=json.loads(r[6]) if r[6] else {}
                )
                for r in rows
            ]
            last = tuple(rows[-1][:3])
            if len(rows) < batch_size:
                return

    def set_relation_phrases(self, phrases: Mapping[str, str]) -> None:
        self.write(GraphBatch(phrases=dict(phrases)))

    def relation_phrases(self) -> dict[str, str]:
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, phrase FROM relation_types WHERE phrase IS NOT NULL ORDER BY name"
            ).fetchall()
        return dict(rows)

    def relation_arrays(
        self, *, relation_types: Sequence[str] | None = None, domain: str | None = None
    ) -> RelationArrays:
        with self._connect() as conn:
            raw = conn.connection.dbapi_connection  # the sqlite3 connection: no per-row overhead
            cur = raw.cursor()
            ent = cur.execute("SELECT key, id FROM entities ORDER BY key").fetchall()
            types = cur.execute("SELECT key, name FROM relation_types ORDER BY key").fetchall()
            sql, params = "SELECT r.src, r.rel, r.dst FROM relations r", []
            clauses = []
            if relation_types is not None:
                clauses.append(
                    f"r.rel IN (SELECT key FROM relation_types WHERE name IN ({','.join('?' * len(relation_types))}))"
                )
                params += list(relation_types)
            if domain is not None:
                sql += " JOIN entities s ON s.key = r.src JOIN entities d ON d.key = r.dst"
                clauses.append("s.domain = ? AND d.domain = ?")
                params += [domain, domain]
            if clauses:
                sql += " WHERE " + " AND ".join(clauses)
            rows = cur.execute(sql, params).fetchall()
            cur.close()
        ent_keys = np.fromiter((k for k, _ in ent), dtype=np.int64, count=len(ent))
        type_keys = np.fromiter((k for k, _ in types), dtype=np.int64, count=len(types))
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
        return RelationArrays(
            entity_ids=[i for _, i in ent],
            src=np.searchsorted(ent_keys, arr[:, 0]).astype(np.int32),
            rel=np.searchsorted(type_keys, arr[:, 1]).astype(np.int32),
            dst=np.searchsorted(ent_keys, arr[:, 2]).astype(np.int32),
            relation_types=[n for _, n in types],
        )

    # ------------------------------------------------------------------ reading edges

    def iter_edges(self, kind: str, *, batch_size: int = 50_000) -> Iterator[list[Edge]]:
        _check_edge_kind(kind)
        last = ("", "")
        while True:
            with self._connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT kind, source_kind, source, target_kind, target, props FROM edges "
                    "WHERE kind = ? AND (source, target) > (?, ?) ORDER BY source, target LIMIT ?",
                    (kind, *last, batch_size),
                ).fetchall()
            if not rows:
                return
            yield [_row_edge(r) for r in rows]
            last = (rows[-1][2], rows[-1][4])
            if len(rows) < batch_size:
                return

    def edges(
        self,
        kind: str,
        *,
        source: str | Sequence[str] | None = None,
        target: str | Sequence[str] | None = None,
    ) -> list[Edge]:
        _check_edge_kind(kind)
        e = T.edges
        q = sa.select(
            e.c.kind, e.c.source_kind, e.c.source, e.c.target_kind, e.c.target, e.c.props
        ).where(e.c.kind == kind)
        for col, value in ((e.c.source, source), (e.c.target, target)):
            if isinstance(value, str):
                q = q.where(col == value)
            elif value is not None:
                q = q.where(col.in_(list(value)))
        with self._connect() as conn:
            return [_row_edge(r) for r in conn.execute(q.order_by(e.c.source, e.c.target))]

    def find_trajectories(self, query: TrajectoryQuery) -> list[str]:
        sql = ["SELECT t.id FROM trajectories t WHERE 1 = 1"]
        params: list[Any] = []
        for name in ("run_id", "task_id", "verdict", "policy", "status"):
            value = getattr(query, name)
            if value is not None:
                sql.append(f"AND t.{name} = ?")
                params.append(value)
        if query.touched_entity is not None or query.used_tool is not None:
            step = ["SELECT 1 FROM steps s"]
            if query.touched_entity is not None:
                step.append(
                    "JOIN edges et ON et.kind = 'TOUCHED' AND et.source = s.id AND et.target = ?"
                )
                params.append(query.touched_entity)
            if query.used_tool is not None:
                step.append(
                    "JOIN edges eu ON eu.kind = 'USED_TOOL' AND eu.source = s.id AND eu.target = ?"
                )
                params.append(query.used_tool)
            sql.append(f"AND EXISTS ({' '.join(step)} WHERE s.trajectory_id = t.id)")
        for verifier, passed in ((query.failed_verifier, 0), (query.passed_verifier, 1)):
            if verifier is not None:
                sql.append(
                    "AND EXISTS (SELECT 1 FROM verifications v WHERE v.subject_id = t.id "
                    "AND v.verifier_id = ? AND v.passed = ?)"
                )
                params += [verifier, passed]
        sql.append("ORDER BY t.id")
        if query.limit is not None:
            sql.append(f"LIMIT {int(query.limit)}")
        with self._connect() as conn:
            return [r[0] for r in conn.exec_driver_sql(" ".join(sql), tuple(params))]

    def trajectory_contents(self, trajectory_ids: Sequence[str]) -> dict[str, TrajectoryContent]:
        ids = sorted(set(trajectory_ids))
        steps: list[tuple[str, int, dict[str, Any]]] = []
        owner: dict[str, str] = {}  # step id -> trajectory id
        with self._connect() as conn:

            def rows(sql: str, keys: Sequence[str], *head: Any) -> Iterator[Any]:
                for chunk in _chunks(keys):
                    marks = ",".join("?" * len(chunk))
                    yield from conn.exec_driver_sql(sql.format(marks=marks), (*head, *chunk))

            for tid, sid, idx, *message in rows(
                "SELECT trajectory_id, id, idx, role, content, reasoning, tool_calls, "
                "tool_call_id, name FROM steps WHERE trajectory_id IN ({marks})",
                ids,
            ):
                steps.append((tid, idx, stored_step_message(*message)))
                owner[sid] = tid
            step_ids = sorted(owner)
            edge_sql = "SELECT source, target FROM edges WHERE kind = ? AND source IN ({marks})"
            touched = [(owner[s], t) for s, t in rows(edge_sql, step_ids, "TOUCHED")]
            used = [(owner[s], t) for s, t in rows(edge_sql, step_ids, "USED_TOOL")]
            verified = [
                (owner.get(subject, subject), vid)
                for vid, subject in rows(
                    "SELECT id, subject_id FROM verifications WHERE subject_id IN ({marks})",
                    [*ids, *step_ids],
                )
            ]
        return fill_contents(ids, steps, touched=touched, used=used, verified=verified)

    # ------------------------------------------------------------------ summary

    def stats(self) -> dict[str, Any]:
        with self._connect() as conn:
            nodes = {
                kind: conn.exec_driver_sql(
                    f"SELECT COUNT(*) FROM {T.NODE_TABLES[kind]}"
                ).scalar_one()
                for kind in NODE_KINDS
            }
            edge_counts = dict(
                conn.exec_driver_sql("SELECT kind, COUNT(*) FROM edges GROUP BY kind").fetchall()
            )
            n_rel = conn.exec_driver_sql("SELECT COUNT(*) FROM relations").scalar_one()
        edges = {"RELATION": n_rel, **{k: edge_counts.get(k, 0) for k in EDGE_KINDS}}
        return {"nodes": nodes, "edges": edges, "relation_types": self.relation_types()}


def _check_edge_kind(kind: str) -> None:
    if kind not in EDGE_KINDS:
        raise ValueError(f"unknown edge kind {kind!r}; known kinds: {', '.join(EDGE_KINDS)}")


def _row_edge(r: Any) -> Edge:
    return Edge(
        kind=r[0],
        source_kind=r[1],
        source=r[2],
        target_kind=r[3],
        target=r[4],
        props=json.loads(r[5]) if r[5] else {},
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (exporters, stats) run beside a self-play writer; NORMAL sync is durable in WAL
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()
    dbapi_conn.isolation_level = None  # transactions are begun by the engine's "begin" event
