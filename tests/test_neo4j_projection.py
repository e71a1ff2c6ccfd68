"""`kag.stores.neo4j_projection.project_relations` against SQLite and the test graph itself."""

from __future__ import annotations

import numpy as np
import pytest

import kag
from kag.schema import Edge, Entity, Relation, Task
from kag.stores.base import GraphBatch, RelationArrays, StoreError
from kag.stores.neo4j_projection import degree_chunks, position_lookup, project_relations

pytestmark = pytest.mark.neo4j

# ids whose order differs between byte, code point and case-insensitive sorting
ENTITIES = [
    Entity(id="ada", name="Ada", domain="science"),
    Entity(id="Ada", name="Ada (upper)", domain="science"),
    Entity(id="charles", name="Charles", domain="science"),
    Entity(id="byron", name="Byron", domain="arts"),
    Entity(id="élan", name="Elan", domain="arts"),
    Entity(id="ｚ", name="Fullwidth z", domain="science"),
    Entity(id="𝔘", name="Fraktur U", domain="science"),
    Entity(id="london", name="London"),
    Entity(id="lonely", name="No relations", domain="science"),
]
TRIPLES = [
    ("ada", "born_in", "london"),
    ("byron", "born_in", "london"),
    ("ada", "child_of", "byron"),
    ("ada", "worked_with", "charles"),
    ("charles", "worked_with", "ada"),
    ("Ada", "worked_with", "ada"),
    ("ada", "knows", "ｚ"),
    ("ｚ", "knows", "𝔘"),
    ("𝔘", "knows", "ada"),
    ("𝔘", "/people/person/born_in", "élan"),
    ("élan", "child_of", "byron"),
    ("charles", "knows", "charles"),
    ("ada", "SUPPORTS", "charles"),  # a type whose token is an edge kind's name
    ("byron", "SUPPORTS", "élan"),
]
FILTERS = [
    {},
    {"relation_types": ["knows", "SUPPORTS"]},
    {"relation_types": []},
    {"domain": "science"},
    {"domain": "arts"},
    {"domain": ""},
    {"domain": "nowhere"},
    {"relation_types": ["knows", "worked_with"], "domain": "science"},
]
# (chunk_rows, page_size): one query each; chunks of a few sources, pages of a few entities;
# one source and one entity per query
SIZES = [(1_000_000, 500_000), (4, 3), (1, 1)]


def _batch() -> GraphBatch:
    return GraphBatch(
        nodes={
            "Entity": list(ENTITIES),
            "Task": [Task(id="q1", question="Who?")],
        },
        relations=[Relation(source=s, type=r, target=t) for s, r, t in TRIPLES],
        edges=[
            Edge(kind="SUPPORTS", source_kind="Entity", source=s, target_kind="Task", target="q1")
            for s in ("ada", "byron")
        ],
    )


@pytest.fixture
def neo4j_graph(neo4j_url: str):
    with kag.open(neo4j_url) as g:
        g.write(_batch())
        yield g


@pytest.fixture
def sqlite_graph(sqlite_url: str):
    with kag.open(sqlite_url) as g:
        g.write(_batch())
        yield g


def _project(graph, **kwargs) -> RelationArrays:
    store = graph.store
    return project_relations(lambda: store.session(read=True), store.types.recorded(), **kwargs)


def _triples(arrays: RelationArrays) -> list[tuple[str, str, str]]:
    return sorted(
        (arrays.entity_ids[s], arrays.relation_types[r], arrays.entity_ids[d])
        for s, r, d in zip(arrays.src, arrays.rel, arrays.dst, strict=True)
    )


def _expected(**kwargs) -> list[tuple[str, str, str]]:
    domains = {e.id: e.domain for e in ENTITIES}
    types = kwargs.get("relation_types")
    domain = kwargs.get("domain")
    return sorted(
        (s, r, t)
        for s, r, t in TRIPLES
        if (types is None or r in types) and (domain is None or domains[s] == domains[t] == domain)
    )


@pytest.mark.parametrize("sizes", SIZES, ids=["one-query", "chunked", "one-by-one"])
@pytest.mark.parametrize("kwargs", FILTERS, ids=repr)
def test_same_relations_as_sqlite_in_the_documented_orders(
    neo4j_graph, sqlite_graph, kwargs, sizes
):
    chunk_rows, page_size = sizes
    got = _project(neo4j_graph, chunk_rows=chunk_rows, page_size=page_size, **kwargs)
    for name in ("src", "dst", "rel"):
        assert getattr(got, name).dtype == np.int32
    # entities in the server's id order, types by name, rows sorted by source
    ordered = neo4j_graph.store.read("MATCH (e:Entity) RETURN e.id AS id ORDER BY id")
    assert got.entity_ids == [r["id"] for r in ordered]
    assert got.relation_types == sorted(got.relation_types)
    assert (np.diff(got.src) >= 0).all()
    # and the same graph as SQLite's projection, whose entity and type orders are its own
    lite = sqlite_graph.relation_arrays(**kwargs)
    assert sorted(got.entity_ids) == sorted(lite.entity_ids)
    assert sorted(got.relation_types) == sorted(lite.relation_types)
    assert _triples(got) == _triples(lite) == _expected(**kwargs)


def test_an_edge_kind_sharing_a_relation_name_is_not_a_relation(neo4j_graph):
    only = _project(neo4j_graph, relation_types=["SUPPORTS"])
    assert _triples(only) == [("ada", "SUPPORTS", "charles"), ("byron", "SUPPORTS", "élan")]
    everything = _project(neo4j_graph)
    assert len(everything.src) == len(TRIPLES)
    assert "q1" not in everything.entity_ids
    assert neo4j_graph.edges("SUPPORTS", source="ada")  # the edge is there all the same


def test_an_empty_graph(neo4j_url):
    with kag.open(neo4j_url) as g:
        for sizes in SIZES:
            got = _project(g, chunk_rows=sizes[0], page_size=sizes[1])
            assert got.entity_ids == [] and got.relation_types == []
            for name in ("src", "dst", "rel"):
                column = getattr(got, name)
                assert column.dtype == np.int32 and column.shape == (0,)
        # entities and a recorded type, but no relations
        g.upsert_entities([Entity(id="a", name="A"), Entity(id="b", name="B")])
        g.set_relation_phrases({"likes": "likes"})
        got = _project(g, chunk_rows=1)
        assert got.entity_ids == ["a", "b"] and got.relation_types == ["likes"]
        assert len(got.src) == len(got.dst) == len(got.rel) == 0


def test_sizes_must_be_positive(neo4j_graph):
    with pytest.raises(ValueError, match="chunk_rows"):
        _project(neo4j_graph, chunk_rows=0)


def test_chunks_cut_on_out_degrees():
    ids = np.arange(10, 16, dtype=np.int64)
    degrees = np.array([3, 0, 2, 9, 1, 1], dtype=np.int64)
    cuts = [c.tolist() for c in degree_chunks(ids, degrees, 4)]
    # sources without relationships are left out; a source above the budget is alone
    assert cuts == [[10], [12], [13], [14, 15]]
    assert [c.tolist() for c in degree_chunks(ids, degrees, 100)] == [[10, 12, 13, 14, 15]]
    assert degree_chunks(ids, np.zeros(6, dtype=np.int64), 4) == []


def test_an_unrecorded_relationship_type_is_an_error(neo4j_graph):
    with neo4j_graph.store.session() as session:
        session.run(
            "MATCH (a:Entity {id: 'ada'}), (b:Entity {id: 'byron'}) CREATE (a)-[:NOT_RECORDED]->(b)"
        ).consume()
    with pytest.raises(StoreError, match="unrecorded relationship type"):
        _project(neo4j_graph)
    # a filter on recorded types, or on a domain it leaves, never reaches it (as before)
    assert len(_project(neo4j_graph, relation_types=["knows"]).src) == 4
    for chunk_rows in (1_000_000, 1):
        got = _project(neo4j_graph, domain="science", chunk_rows=chunk_rows)
        assert _triples(got) == _expected(domain="science")


@pytest.mark.parametrize("ids", [[7, 3, 5, 0], [7, 3, 5, 10**12]], ids=["table", "search"])
def test_positions_of_internal_ids(ids):
    position = position_lookup(np.asarray(ids, dtype=np.int64))
    values = np.asarray([5, 5, 7, 3, ids[-1]], dtype=np.int64)
    assert position(values).tolist() == [2, 2, 0, 1, 3]
    assert position(values).dtype == np.int32
    for missing in (4, 8, -1, 10**13):
        with pytest.raises(StoreError, match="entities changed"):
            position(np.asarray([3, missing], dtype=np.int64))


def test_entities_written_without_a_domain_property(neo4j_graph):
    with neo4j_graph.store.session() as session:
        session.run(
            "MATCH (a:Entity {id: 'ada'}), (z:Entity {id: 'ｚ'}) "
            "CREATE (b:Entity {id: 'bare', name: 'Bare'}) "
            "CREATE (b)-[:rel_knows {type: 'knows'}]->(a), (z)-[:rel_knows {type: 'knows'}]->(b)"
        ).consume()
    bare = [("bare", "knows", "ada"), ("ｚ", "knows", "bare")]
    for kwargs in FILTERS:
        types = kwargs.get("relation_types")
        # no domain property: in no domain, so only unfiltered projections reach it
        reached = "domain" not in kwargs and (types is None or "knows" in types)
        expected = sorted(_expected(**kwargs) + (bare if reached else []))
        for chunk_rows, page_size in SIZES[:2]:
            got = _project(neo4j_graph, chunk_rows=chunk_rows, page_size=page_size, **kwargs)
            assert "bare" in got.entity_ids
            assert _triples(got) == expected, kwargs
