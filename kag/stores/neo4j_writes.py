"""Writing a `GraphBatch` into Neo4j in one transaction: `UNWIND` batches, nodes first.

Nodes are merged by id (`SET n = row`, so the last write of an id wins), then relations and
edges, whose missing endpoints are named in the `StoreError`. User values only ever travel as
parameters; relationship types of relations are parameters too (Neo4j 5.26's dynamic types).

>>> session.execute_write(write_batch, batch, new_tokens={}, batch_size=10_000, replan=False)  # doctest: +SKIP
0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kag.schema import NODE_KINDS
from kag.stores.base import GraphBatch, StoreError
from kag.stores.neo4j_cypher import (
    chunks,
    dumps,
    label,
    missing_entities,
    missing_ids,
    node_props,
    quote_name,
    relationship_type,
)
from kag.stores.neo4j_relation_types import RelationTypes

__all__ = ["write_batch"]

# One query text for every relation type: Neo4j 5.26's dynamic types (`$(...)`) take the token as
# a parameter, so the plan is compiled once instead of once per type. Tokens come from
# `relationship_type` only.
_MERGE_RELATIONS = (
    "UNWIND $rows AS row MATCH (s:Entity {id: row.s}) MATCH (t:Entity {id: row.t}) "
    "MERGE (s)-[r:$(row.token)]->(t) SET r.type = row.type, r.props = row.props RETURN count(*) AS n"
)


def write_batch(
    tx: Any, batch: GraphBatch, *, new_tokens: Mapping[str, str], batch_size: int, replan: bool
) -> int:
    """Write `batch` inside transaction `tx`, `batch_size` rows per query, after registering
    `new_tokens` (from `RelationTypes.new_tokens`, covering the relations' and the phrases'
    types); return the number of relations it created.

    `replan` forces a fresh plan for relationship merges (see `Neo4jStore.write_many`).
    """
    size = batch_size
    created = 0
    prefix = "CYPHER replan=force " if replan else ""
    RelationTypes.register_in(tx, new_tokens)
    for kind in NODE_KINDS:
        nodes = batch.nodes.get(kind)
        if not nodes:
            continue
        # the last write of an id in one batch wins, as it would across batches
        rows = list({n.id: node_props(n) for n in nodes}.values())
        query = f"UNWIND $rows AS row MERGE (n:{label(kind)} {{id: row.id}}) SET n = row"
        for chunk in chunks(rows, size):
            tx.run(query, rows=chunk).consume()
    if batch.ensure_entities:
        ids = list(dict.fromkeys(batch.ensure_entities))
        for chunk in chunks(ids, size):
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
                token = tokens[r.type] = relationship_type(r.type)
            props = dumps(r.props) if r.props else None
            rows.append(
                {"s": r.source, "t": r.target, "type": r.type, "token": token, "props": props}
            )
        for chunk in chunks(rows, size):
            result = tx.run(prefix + _MERGE_RELATIONS, rows=chunk)
            n = result.single()["n"]
            created += result.consume().counters.relationships_created
            if n != len(chunk):
                ids = {row["s"] for row in chunk} | {row["t"] for row in chunk}
                raise missing_entities(missing_ids(tx, "Entity", ids))
    if batch.edges:
        groups: dict[tuple[str, str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        for e in batch.edges:
            group = groups.setdefault((e.kind, e.source_kind, e.target_kind), {})
            group[(e.source, e.target)] = {
                "s": e.source,
                "t": e.target,
                "props": dumps(e.props),
            }
        for (kind, source_kind, target_kind), by_key in groups.items():
            rows = list(by_key.values())
            query = prefix + (
                f"UNWIND $rows AS row MATCH (a:{label(source_kind)} {{id: row.s}}) "
                f"MATCH (b:{label(target_kind)} {{id: row.t}}) "
                f"MERGE (a)-[r:{quote_name(kind)}]->(b) SET r.props = row.props RETURN count(*) AS n"
            )
            for chunk in chunks(rows, size):
                if tx.run(query, rows=chunk).single()["n"] != len(chunk):
                    for end_kind, key in ((source_kind, "s"), (target_kind, "t")):
                        missing = missing_ids(tx, end_kind, {row[key] for row in chunk})
                        if missing:
                            raise StoreError(
                                f"edge endpoint(s) {missing[:5]} are not {end_kind} nodes of the "
                                "graph; write the nodes first (in the same batch is fine)"
                            )
    if batch.phrases:
        rows = [{"token": relationship_type(n), "phrase": p} for n, p in batch.phrases.items()]
        tx.run(
            "UNWIND $rows AS row MATCH (k:RelationType {token: row.token}) SET k.phrase = row.phrase",
            rows=rows,
        ).consume()
    return created
