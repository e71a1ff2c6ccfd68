"""Bulk relation writes into Neo4j (`kag.stores.neo4j_bulk`): upserts even when they `CREATE`."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kag.schema import EDGE_ENDPOINTS, Entity, Relation
from kag.stores.base import GraphBatch, StoreError
from kag.stores.neo4j import Neo4jConfig
from kag.stores.neo4j_bulk import SeenKeys


def _store(url: str, **config):
    store = Neo4jConfig(**config).build(url)
    store.upgrade()
    return store


def _entities(n: int) -> GraphBatch:
    return GraphBatch(nodes={"Entity": [Entity(id=f"e{i}", name=f"E {i}") for i in range(n)]})


def _relationship_rows(store) -> list[tuple[str, str, str, str | None]]:
    """Every entity relationship as stored, duplicates included."""
    rows = store.read(
        "MATCH (a:Entity)-[r]->(b:Entity) RETURN a.id AS s, r.type AS type, b.id AS t, "
        "r.props AS props ORDER BY s, type, t"
    )
    return [(r["s"], r["type"], r["t"], r["props"]) for r in rows]


def test_no_edge_kind_joins_two_entities():
    # `Neo4jStore.relation_count` counts relationships leaving entities minus edges doing so;
    # an Entity -> Entity edge kind would need a different count
    assert all(ends != ("Entity", "Entity") for e in EDGE_ENDPOINTS.values() for ends in e)
    assert any(source == "Entity" for e in EDGE_ENDPOINTS.values() for source, _ in e)


def test_seen_keys_never_forgets_and_rarely_errs():
    seen = SeenKeys(capacity=1_000)  # grows past its first filter below
    keys = [(f"s{i}", "r", f"t{i}") for i in range(20_000)]
    # a Bloom filter over Python's (per-process salted) hash: a first sight may rarely be a false
    # positive, a second sight is never missed
    assert seen.add(keys[:10_000]).sum() < 20
    assert seen.add(keys[:10_000]).all()  # no false negatives, in the first filter or later ones
    false_positives = seen.add(keys[10_000:]).sum()
    assert false_positives < 20  # 0.2% of 10,000 new keys
    assert seen.add(keys[10_000:]).all()
    with pytest.raises(ValueError, match="capacity"):
        SeenKeys(capacity=0)


def test_repeats_across_and_within_batches_stay_one_relation_last_props_win(neo4j_url):
    store = _store(neo4j_url, batch_size=50)
    first = [
        Relation(source="e0", type="likes", target=f"e{i}", props={"v": 1}) for i in range(1, 120)
    ]
    again = [
        Relation(source="e0", type="likes", target=f"e{i}", props={"v": 2}) for i in range(1, 60)
    ]
    triples = [("e1", "knows", "e2"), ("e1", "knows", "e2"), ("e2", "knows", "e3")]
    store.write_many(
        [
            _entities(130),
            GraphBatch(relations=first, triples=triples),
            GraphBatch(relations=again, triples=[("e2", "knows", "e3")]),
        ]
    )
    rows = _relationship_rows(store)
    assert len(rows) == len(set((s, t, d) for s, t, d, _ in rows)) == 119 + 2
    likes = {d: p for s, t, d, p in rows if t == "likes"}
    assert all(likes[f"e{i}"] == '{"v":2}' for i in range(1, 60))
    assert all(likes[f"e{i}"] == '{"v":1}' for i in range(60, 120))
    assert store.relation_count() == 121 == sum(store.relation_types().values())


def test_types_already_in_the_graph_are_merged_not_duplicated(neo4j_url):
    store = _store(neo4j_url, batch_size=100)
    old = [(f"e{i}", "part_of", f"e{i + 1}") for i in range(150)]
    store.write_many([_entities(400), GraphBatch(triples=old[:100])])
    # a second bulk write repeats known relations of the now existing type and adds a new type
    store.write_many(
        [GraphBatch(triples=old + [(f"e{i}", "next_to", f"e{i + 2}") for i in range(300)])]
    )
    assert store.relation_types() == {"next_to": 300, "part_of": 150}
    assert len(_relationship_rows(store)) == 450


def test_a_missing_endpoint_names_the_ids_and_writes_nothing_of_its_batch(neo4j_url):
    store = _store(neo4j_url)
    store.write_many([_entities(10)])
    with pytest.raises(StoreError, match=r"not entities of the graph.*nowhere"):
        store.write_many([GraphBatch(triples=[("e1", "r", "e2"), ("e3", "r", "nowhere")])])
    assert store.relation_count() == 0
    assert "r" not in store.relation_types()


def test_a_concurrent_writer_of_the_same_new_type_leaves_no_duplicates(neo4j_url):
    store = _store(neo4j_url, batch_size=40, write_workers=2)
    other = _store(neo4j_url)
    triples = [(f"e{i}", "cites", f"e{(i * 7) % 200}") for i in range(200)]

    def batches():
        yield _entities(200)
        yield GraphBatch(triples=triples[:100])
        # another client writes part of the same, still fresh, relation type meanwhile
        other.write(
            GraphBatch(
                relations=[Relation(source=s, type=t, target=d) for s, t, d in triples[50:150]]
            )
        )
        yield GraphBatch(triples=triples[100:])

    store.write_many(batches())
    rows = _relationship_rows(store)
    assert sorted((s, t, d) for s, t, d, _ in rows) == sorted(set(triples))
    assert store.relation_count() == len(set(triples))


def test_bulk_import_matches_the_embedded_store(neo4j_url, sqlite_url):
    from kag.stores import open_store

    rng = random.Random(7)
    names = ["/film/film/genre", "2nd cousin", "located in", "SUPPORTS"]
    triples = [
        (f"e{rng.randrange(300)}", rng.choice(names), f"e{rng.randrange(300)}")
        for _ in range(3_000)
    ]
    batches = [_entities(300)] + [
        GraphBatch(triples=triples[i : i + 700]) for i in range(0, 3_000, 700)
    ]
    neo = _store(neo4j_url, batch_size=256, write_workers=3)
    sql = open_store(sqlite_url)
    sql.upgrade()
    for store in (neo, sql):
        store.write_many(batches)
    assert neo.relation_types() == sql.relation_types()
    assert neo.relation_count() == sql.relation_count() == len(set(triples))
    a, b = neo.relation_arrays(), sql.relation_arrays()

    def keyed(arr):
        return sorted(
            zip(
                np.asarray(arr.entity_ids)[arr.src],
                np.asarray(arr.relation_types)[arr.rel],
                np.asarray(arr.entity_ids)[arr.dst],
            )
        )

    assert keyed(a) == keyed(b)
