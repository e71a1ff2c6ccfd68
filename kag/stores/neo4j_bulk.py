"""Bulk relation writes into Neo4j: `CREATE` for relation types the graph does not hold yet.

`Neo4jStore.write_many` hands its relations to a `RelationBulkWriter`. A relation is an upsert
keyed by `(source, type, target)`, which Neo4j spells `MERGE`; but `MERGE` must look for the
relationship before creating it and locks both endpoints to do so, and on this 2-core machine it
loads FB15k-237 at about 11,000 relationships/s against about 35,000/s for `CREATE`. A `CREATE`
is only an upsert when the relationship cannot exist yet, so the writer uses it exactly then:

1. *Fresh types.* A relation type is fresh when the graph holds no relationship of its token as
   the write begins (the count store answers without reading relationships). Relations of other
   types go through the store's `MERGE` path, as any single `write` does.
2. *Keys seen.* Within the write, a Bloom filter (`SeenKeys`) remembers the keys already sent.
   A key it has certainly not seen is created; one it may have seen (a true repeat, or a rare
   false positive) is merged, after every `CREATE` in flight has committed, so the `MERGE` finds
   its twin. Memory stays at about 2 bytes per relation, so an import of any size fits.
3. *Concurrent writers.* At the end, the graph's relations are counted again (count store). If
   there are more than before plus what this write created, another client wrote relations
   meanwhile, perhaps of the same fresh types, so the duplicate `(source, type, target)`
   relationships of those types are removed, keeping one of each.

`CREATE` chunks of `batch_size` rows run in `write_workers` threads, one transaction each, so
the server works on one while the client sends the next. Every query binds its values as
parameters; the relationship type is a Neo4j 5.26 dynamic type, `$(...)`.

>>> with RelationBulkWriter(store) as bulk:  # doctest: +SKIP
...     others = bulk.add(triples=[("/m/0a", "/film/film/genre", "/m/0b")])
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from kag.schema import Relation
from kag.stores.base import StoreError
from kag.stores.neo4j_connection import Neo4jConnection
from kag.stores.neo4j_cypher import dumps, missing_entities, quote_name, relationship_type
from kag.stores.neo4j_relation_types import RelationTypes

__all__ = ["RelationBulkWriter", "SeenKeys"]

#: `(source, type name, target, props as JSON or None)`
Row = tuple[str, str, str, str | None]

# endpoints by internal node id (resolved once per write, see `_node_ids`): 40% faster here
# than two index seeks per row. `id()` is deprecated in Neo4j 5 but has no faster successor.
_MATCH_ENDS = (
    "UNWIND range(0, size($s) - 1) AS i "
    "MATCH (a:Entity) WHERE id(a) = $s[i] MATCH (b:Entity) WHERE id(b) = $t[i] "
)
# one record of two aligned lists: a record per entity took 3x longer to stream here
_RESOLVE = (
    "UNWIND $ids AS key MATCH (e:Entity {id: key}) "
    "RETURN collect(key) AS keys, collect(id(e)) AS nodes"
)
#: entity ids whose node ids a writer keeps; beyond this it starts over
_MAX_NODE_IDS = 4_000_000
_CREATE = (
    _MATCH_ENDS + "CREATE (a)-[r:$($tokens[$k[i]])]->(b) "
    "SET r.type = $names[$k[i]], r.props = $p[i] RETURN count(*) AS n"
)
# `replan=force`: the plan of a relationship MERGE depends on how many relationships the graph
# has, which a bulk write changes from one chunk to the next (see `Neo4jStore.write_many`)
_MERGE = (
    "CYPHER replan=force "
    + _MATCH_ENDS
    + "MERGE (a)-[r:$($tokens[$k[i]])]->(b) SET r.type = $names[$k[i]], r.props = $p[i] "
    "RETURN count(*) AS n"
)


def _props(relation: Relation) -> str | None:
    return dumps(relation.props) if relation.props else None


class SeenKeys:
    """A Bloom filter over hashable keys: `add` says which keys it may have seen before.

    No false negatives: a key added once is always reported as maybe-seen afterwards. False
    positives stay below about 0.1%: each filter holds `capacity` keys at 16 bits per key, and
    a new filter four times larger starts when one is full.

    >>> seen = SeenKeys(capacity=1000)
    >>> seen.add([("a", "r", "b"), ("a", "r", "c")]).tolist()
    [False, False]
    >>> seen.add([("a", "r", "b")]).tolist()
    [True]
    """

    _HASHES = 7

    def __init__(self, capacity: int = 1 << 20) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._filters: list[tuple[np.ndarray, int]] = []  # (bits, mask)
        self._count = 0  # keys added to the newest filter
        self._grow()

    def _grow(self) -> None:
        bits = 1 << max(10, int(self._capacity * 16 - 1).bit_length())
        self._filters.append((np.zeros(bits // 8, dtype=np.uint8), bits - 1))
        self._count = 0

    def _positions(self, hashes: np.ndarray, mask: int) -> np.ndarray:
        """(keys, hashes) bit positions by double hashing of one 64-bit hash per key."""
        h1 = hashes & np.uint64(0xFFFFFFFF)
        h2 = (hashes >> np.uint64(32)) | np.uint64(1)
        steps = np.arange(self._HASHES, dtype=np.uint64)
        return (h1[:, None] + steps[None, :] * h2[:, None]) & np.uint64(mask)

    def add(self, keys: Sequence[Any]) -> np.ndarray:
        """Add distinct `keys`; return a bool array, True where a key may have been added before."""
        hashes = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)).view(np.uint64)
        seen = np.zeros(len(keys), dtype=bool)
        for bits, mask in self._filters:
            pos = self._positions(hashes, mask)
            present = (bits[pos >> np.uint64(3)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1
            seen |= present.all(axis=1).astype(bool)
        new = hashes[~seen]
        while len(new):
            room = self._capacity - self._count
            if room <= 0:
                self._capacity *= 4
                self._grow()
                continue
            part, new = new[:room], new[room:]
            bits, mask = self._filters[-1]
            pos = self._positions(part, mask).ravel()
            np.bitwise_or.at(
                bits, pos >> np.uint64(3), (1 << (pos & np.uint64(7))).astype(np.uint8)
            )
            self._count += len(part)
        return seen


class RelationBulkWriter:
    """Writes relations for `Neo4jStore.write_many`; see the module docstring for how.

    `add(rows)` returns the `Relation`s of types that were not fresh, which the caller merges
    itself. Use it as a context manager: leaving the block waits for every transaction, merges
    the repeats and checks the counts; leaving it on an exception waits and adds nothing more.
    """

    def __init__(
        self,
        connection: Neo4jConnection,
        types: RelationTypes,
        *,
        batch_size: int,
        write_workers: int,
        relations_before: int,
    ) -> None:
        self._conn = connection
        self._types = types
        self._size = batch_size
        self._workers = write_workers
        self._pool = cf.ThreadPoolExecutor(self._workers, thread_name_prefix="kag-neo4j-write")
        self._inflight: deque[tuple[cf.Future[int], int]] = deque()
        self._seen = SeenKeys()
        self._fresh_names: dict[str, bool] = {}  # name -> fresh when first seen by this write
        self._existing_types: set[str] | None = None
        self._node_ids: dict[str, int] = {}  # entity id -> internal node id
        self._repeats: dict[tuple[str, str, str], Row] = {}
        self._before = relations_before
        self._created = 0  # relations created here
        #: relations the caller's own merges created, for the final count check
        self.merged = 0
        #: relations this writer has committed so far
        self.committed = 0
        #: relations this writer has sent to the server (committed or in flight)
        self.submitted = 0

    # ------------------------------------------------------------------ public

    def add(
        self, relations: Sequence[Relation] = (), triples: Sequence[tuple[str, str, str]] = ()
    ) -> list[Relation]:
        """Queue relations of fresh types; return the others for the caller to merge itself."""
        names = {r.type for r in relations}
        names.update(name for _, name, _ in triples)
        self._classify([name for name in names if name not in self._fresh_names])
        fresh_names = self._fresh_names
        fresh: dict[tuple[str, str, str], Row] = {}  # the last write of a key wins
        others: list[Relation] = []
        for r in relations:
            if fresh_names[r.type]:
                fresh[(r.source, r.type, r.target)] = (r.source, r.type, r.target, _props(r))
            else:
                others.append(r)
        for key in triples:
            if fresh_names[key[1]]:
                fresh[key] = (*key, None)
            else:
                others.append(Relation.trusted(*key))
        if fresh:
            keys = list(fresh)
            new: list[Row] = []
            for key, maybe_seen in zip(keys, self._seen.add(keys).tolist()):
                if maybe_seen:
                    self._repeats[key] = fresh[key]
                else:
                    new.append(fresh[key])
            for start in range(0, len(new), self._size):
                self._submit(new[start : start + self._size])
            if len(self._repeats) >= self._size:
                self._merge_repeats()
        return others

    def finish(self) -> None:
        """Wait for all `CREATE`s, merge the repeats, and repair what a concurrent writer did."""
        self._drain()
        self._merge_repeats()
        fresh = [
            relationship_type(name) for name, is_fresh in self._fresh_names.items() if is_fresh
        ]
        if fresh and self._types.relation_count() > self._before + self._created + self.merged:
            self._remove_duplicates(fresh)

    def __enter__(self) -> RelationBulkWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                self.finish()
            else:
                for future, _ in self._inflight:
                    future.cancel()
                cf.wait([future for future, _ in self._inflight])
        finally:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ fresh types

    def _classify(self, names: Sequence[str]) -> None:
        """Record `names` as relation types of the graph and note which of them are fresh."""
        if not names:
            return
        self._types.register(names)
        if self._existing_types is None:  # types ever used in this database, even if now empty
            rows = self._conn.read("CALL db.relationshipTypes() YIELD relationshipType AS t")
            self._existing_types = {r["t"] for r in rows}
        tokens = {name: relationship_type(name) for name in names}
        used = self._types.counts([t for t in tokens.values() if t in self._existing_types])
        for name, token in tokens.items():
            self._fresh_names[name] = not used.get(token)

    # ------------------------------------------------------------------ writing

    def _resolve(self, rows: Sequence[Row]) -> dict[str, int]:
        """Internal node ids of the rows' endpoints; a missing entity is an error."""
        node_ids = self._node_ids
        unknown = {s for s, _, _, _ in rows if s not in node_ids}
        unknown.update(t for _, _, t, _ in rows if t not in node_ids)
        if not unknown:
            return node_ids
        if len(node_ids) + len(unknown) > _MAX_NODE_IDS:
            node_ids.clear()
            return self._resolve(rows)
        keys = sorted(unknown)
        for start in range(0, len(keys), 50_000):
            for record in self._conn.read(_RESOLVE, ids=keys[start : start + 50_000]):
                node_ids.update(zip(record["keys"], record["nodes"], strict=True))
        missing = [key for key in keys if key not in node_ids]
        if missing:
            raise missing_entities(missing)
        return node_ids

    def _params(self, rows: Sequence[Row]) -> dict[str, Any]:
        node_ids = self._resolve(rows)
        names = list(dict.fromkeys(name for _, name, _, _ in rows))
        index = {name: i for i, name in enumerate(names)}
        props = [p for *_, p in rows]
        return {
            "s": [node_ids[s] for s, _, _, _ in rows],
            "t": [node_ids[t] for _, _, t, _ in rows],
            "k": [index[name] for _, name, _, _ in rows],
            "names": names,
            "tokens": [relationship_type(name) for name in names],
            "p": props if any(p is not None for p in props) else None,
        }

    def _run(self, query: str, params: dict[str, Any]) -> int:
        """One transaction of `query`; the number of relationships it created."""

        def work(tx: Any) -> int:
            result = tx.run(query, params)
            if result.single()["n"] != len(params["s"]):
                raise StoreError(
                    "relation endpoint(s) were deleted by another client during this write; "
                    "nothing of this chunk was written: rerun the write"
                )
            return result.consume().counters.relationships_created

        with self._conn.session() as session:
            return session.execute_write(work)

    def _submit(self, rows: Sequence[Row]) -> None:
        while len(self._inflight) >= 2 * self._workers:
            self._collect(self._inflight.popleft())
        params = self._params(rows)
        self.submitted += len(rows)
        self._inflight.append((self._pool.submit(self._run, _CREATE, params), len(rows)))

    def _collect(self, job: tuple[cf.Future[int], int]) -> None:
        future, rows = job
        self._created += future.result()
        self.committed += rows

    def _drain(self) -> None:
        while self._inflight:
            self._collect(self._inflight.popleft())

    def _merge_repeats(self) -> None:
        """Merge keys that may repeat earlier ones, once those have committed."""
        if not self._repeats:
            return
        self._drain()
        rows = list(self._repeats.values())
        self._repeats.clear()
        for start in range(0, len(rows), self._size):
            part = rows[start : start + self._size]
            self.submitted += len(part)
            self._created += self._run(_MERGE, self._params(part))
            self.committed += len(part)

    def _remove_duplicates(self, tokens: Sequence[str]) -> None:
        """Keep one relationship per (source, token, target) of `tokens`; delete the rest."""
        for token in tokens:
            query = (
                f"MATCH (a:Entity)-[r:{quote_name(token)}]->(b:Entity) "
                "WITH a, b, collect(r) AS rs WHERE size(rs) > 1 "
                "UNWIND tail(rs) AS extra DELETE extra"
            )
            with self._conn.session() as session:
                session.execute_write(lambda tx, q=query: tx.run(q).consume())
