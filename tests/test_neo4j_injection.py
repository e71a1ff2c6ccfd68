"""Cypher injection through names, properties, relation types, kinds and filters: data or refusal."""

from __future__ import annotations

import pytest

from kag.schema import Edge, Entity, Relation, SchemaError, Task, Trajectory
from kag.stores.base import GraphBatch, StoreError, TrajectoryQuery
from kag.stores.neo4j import Neo4jStore

HOSTILE = [
    "x'}) MATCH (n) DETACH DELETE n //",
    'x"}) MATCH (n) DETACH DELETE n //',
    "x`]->() MATCH (n) DETACH DELETE n //",
    "$param {id: 1} \\u0027 ; CALL dbms.security.createUser('evil', 'evil', false)",
    "ünï ✓ `backtick` 'single' \"double\" \\ back\\slash",
]


@pytest.fixture
def store(neo4j_url):
    s = Neo4jStore(neo4j_url)
    s.write(GraphBatch().add(Entity(id="keep", name="Keep me"), Entity(id="keep2", name="Me too")))
    yield s
    s.close()


def _total_nodes(store: Neo4jStore) -> int:
    with store.session() as session:
        return session.run("MATCH (n) WHERE NOT n:KagMigration RETURN count(n) AS n").single()["n"]


def test_hostile_ids_names_and_properties_are_stored_as_data(store):
    entities = [
        Entity(
            id=text,
            name=text,
            type=text,
            description=text,
            props={text: text, "nested": {"q": [text]}},
        )
        for text in HOSTILE
    ]
    store.write(GraphBatch(nodes={"Entity": entities}))
    assert store.get_nodes("Entity", HOSTILE) == entities
    assert _total_nodes(store) == 2 + len(HOSTILE)
    assert [e.id for e in store.find_entities(name=HOSTILE[0])] == [HOSTILE[0]]
    assert store.find_entities(name="' OR 1=1 //", match="contains") == []
    assert store.count_nodes("Entity", where={"type": HOSTILE[1]}) == 1


def test_hostile_relation_types_become_safe_relationship_types_and_keep_their_names(store):
    names = [f"r{i} {text}" for i, text in enumerate(HOSTILE)]
    relations = [
        Relation(source="keep", type=name, target="keep2", props={"why": name}) for name in names
    ]
    store.write(GraphBatch(relations=relations))
    assert store.relation_types() == {name: 1 for name in names}
    got = [r for r, _ in store.neighbors("keep", relation=names)]
    assert sorted(got, key=lambda r: r.type) == sorted(relations, key=lambda r: r.type)
    with store.session() as session:
        types = {r["t"] for r in session.run("MATCH ()-[r]->() RETURN DISTINCT type(r) AS t")}
    assert all(t.replace("_", "a").isalnum() for t in types)  # only [A-Za-z0-9_] reached the server
    assert _total_nodes(store) == 2 + len(HOSTILE)  # the two entities and one RelationType per name
    assert store.delete_relations([Relation(source="keep", type=names[2], target="keep2")]) == 1
    assert sum(store.relation_types().values()) == len(HOSTILE) - 1


def test_two_relation_names_that_map_to_one_type_are_an_error_and_write_nothing(store):
    # both become rel_x_MATCH_n_DETACH_DELETE_n; merging them would silently mix two relations
    batch = GraphBatch(
        relations=[
            Relation(source="keep", type=HOSTILE[0], target="keep2"),
            Relation(source="keep2", type=HOSTILE[1], target="keep"),
        ]
    )
    with pytest.raises(
        StoreError, match="both map to the Neo4j relationship type 'rel_x_MATCH_n_DETACH_DELETE_n'"
    ):
        store.write(batch)
    store.write(GraphBatch(relations=[batch.relations[0]]))
    with pytest.raises(StoreError, match="both map to"):
        Neo4jStore(store.url).write(
            GraphBatch(relations=[batch.relations[1]])
        )  # a fresh client too
    assert store.relation_types() == {HOSTILE[0]: 1}


def test_a_relation_named_like_an_edge_kind_stays_a_relation(store):
    store.write(
        GraphBatch()
        .add(Task(id="q1", question="?"), Trajectory(id="t1", task_id="q1"))
        .add(Relation(source="keep", type="SOLVES", target="keep2"))
        .add(
            Edge(
                kind="SOLVES",
                source_kind="Trajectory",
                source="t1",
                target_kind="Task",
                target="q1",
            )
        )
    )
    stats = store.stats()
    assert stats["edges"]["SOLVES"] == 1 and stats["edges"]["RELATION"] == 1
    assert stats["relation_types"] == {"SOLVES": 1}
    assert [(e.source, e.target) for e in store.edges("SOLVES")] == [("t1", "q1")]
    assert [r.type for b in store.iter_relations() for r in b] == ["SOLVES"]


def test_hostile_kinds_fields_and_edge_kinds_are_refused(store):
    with pytest.raises(SchemaError, match="unknown node kind"):
        store.get_nodes("Entity) DETACH DELETE n //", ["keep"])
    with pytest.raises(ValueError, match="cannot filter Entity by"):
        list(store.iter_nodes("Entity", where={"name) DETACH DELETE n //": "x"}))
    with pytest.raises(ValueError, match="unknown edge kind"):
        store.edges("SOLVES]->() DETACH DELETE r //")
    with pytest.raises(SchemaError):
        store.write(GraphBatch(relations=[Relation(source="keep", type="\x00", target="keep2")]))
    assert (
        store.find_trajectories(TrajectoryQuery(policy="x' OR true //", touched_entity="' OR 1=1"))
        == []
    )
    assert _total_nodes(store) == 2
