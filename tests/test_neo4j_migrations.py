"""Neo4j migrations: `migrations/neo4j/V####__name.cypher` applied in order, recorded, never edited."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest

from kag.cli import main as kag_main
from kag.schema import Entity, Model, Relation
from kag.stores.base import GraphBatch, StoreError
from kag.stores.neo4j import Neo4jConfig, Neo4jStore
from kag.stores.neo4j_migrations import MIGRATIONS_DIR

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _reset(url: str) -> None:
    """An empty database without constraints, indexes or migration records."""
    store = Neo4jStore(url)
    try:
        with store.session() as session:
            session.run(
                "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"
            ).consume()
            for record in list(session.run("SHOW CONSTRAINTS YIELD name")):
                assert _NAME.match(record["name"])
                session.run(f"DROP CONSTRAINT `{record['name']}`").consume()
            for record in list(session.run("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP'")):
                assert _NAME.match(record["name"])
                session.run(f"DROP INDEX `{record['name']}`").consume()
    finally:
        store.close()


@pytest.fixture
def bare_url(neo4j_server):
    """A Neo4j database with no KAG schema at all; the standard schema is restored afterwards."""
    _reset(neo4j_server.url)
    yield neo4j_server.url
    _reset(neo4j_server.url)
    store = Neo4jStore(neo4j_server.url)
    store.upgrade()
    store.close()


def _schema(store: Neo4jStore) -> tuple[set[str], set[str]]:
    with store.session() as session:
        constraints = {r["name"] for r in session.run("SHOW CONSTRAINTS YIELD name")}
        indexes = {
            r["name"] for r in session.run("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP'")
        }
    return constraints, indexes


def _recorded(store: Neo4jStore) -> list[tuple[int, str, str]]:
    with store.session() as session:
        rows = session.run(
            "MATCH (m:KagMigration) RETURN m.version AS v, m.name AS n, m.checksum AS c ORDER BY v"
        )
        return [(r["v"], r["n"], r["c"]) for r in rows]


def test_upgrade_applies_files_in_order_and_records_their_checksums(bare_url):
    store = Neo4jStore(bare_url)
    assert store.upgrade() == [
        "V0001__constraints",
        "V0002__indexes",
        "V0003__relation_namespace",
        "V0004__task_family",
        "V0005__models",
    ]
    constraints, indexes = _schema(store)
    assert {"entity_id", "step_id", "relation_type_token", "kag_migration_version"} <= constraints
    assert {"entity_name", "trajectory_task", "step_trajectory"} <= indexes
    names = [
        "V0001__constraints",
        "V0002__indexes",
        "V0003__relation_namespace",
        "V0004__task_family",
        "V0005__models",
    ]
    assert _recorded(store) == [
        (i, name, hashlib.sha256((MIGRATIONS_DIR / f"{name}.cypher").read_bytes()).hexdigest())
        for i, name in enumerate(names, start=1)
    ]
    store.close()


def test_upgrade_twice_applies_nothing_the_second_time(bare_url):
    store = Neo4jStore(bare_url)
    store.upgrade()
    before = _schema(store), _recorded(store)
    assert store.upgrade() == []
    assert (_schema(store), _recorded(store)) == before
    store.close()


def test_id_uniqueness_is_enforced_by_the_database_itself(neo4j_url):
    store = Neo4jStore(neo4j_url)
    store.write(GraphBatch().add(Entity(id="e1", name="one")))
    from neo4j.exceptions import ConstraintError

    with store.session() as session, pytest.raises(ConstraintError):
        session.run("CREATE (:Entity {id: 'e1'})").consume()
    assert store.count_nodes("Entity") == 1
    store.close()


def test_a_new_migration_file_is_applied_after_the_recorded_ones(bare_url, tmp_path):
    shutil.copytree(MIGRATIONS_DIR, tmp_path / "m")
    store = Neo4jConfig(migrations_dir=tmp_path / "m").build(bare_url)
    assert store.upgrade() == [
        "V0001__constraints",
        "V0002__indexes",
        "V0003__relation_namespace",
        "V0004__task_family",
        "V0005__models",
    ]
    (tmp_path / "m" / "V0006__run_status.cypher").write_text(
        "// runs by status\nCREATE INDEX run_status IF NOT EXISTS FOR (n:Run) ON (n.status);\n"
    )
    assert store.upgrade() == ["V0006__run_status"]
    assert "run_status" in _schema(store)[1]
    assert [v for v, _, _ in _recorded(store)] == [1, 2, 3, 4, 5, 6]
    store.close()


def test_an_applied_file_that_changed_stops_the_upgrade_before_anything_runs(bare_url, tmp_path):
    shutil.copytree(MIGRATIONS_DIR, tmp_path / "m")
    store = Neo4jConfig(migrations_dir=tmp_path / "m").build(bare_url)
    store.upgrade()
    edited = tmp_path / "m" / "V0002__indexes.cypher"
    edited.write_text(
        edited.read_text() + "CREATE INDEX sneaky IF NOT EXISTS FOR (n:Task) ON (n.hops);\n"
    )
    (tmp_path / "m" / "V0006__later.cypher").write_text(
        "CREATE INDEX later IF NOT EXISTS FOR (n:Run) ON (n.kind);\n"
    )
    with pytest.raises(StoreError, match=r"V0002__indexes.cypher changed after it was applied"):
        store.upgrade()
    assert not {"sneaky", "later"} & _schema(store)[1]
    assert [v for v, _, _ in _recorded(store)] == [1, 2, 3, 4, 5]
    store.close()


def test_a_graph_migrated_by_a_newer_kag_is_refused(bare_url, tmp_path):
    shutil.copytree(MIGRATIONS_DIR, tmp_path / "new")
    (tmp_path / "new" / "V0006__future.cypher").write_text(
        "CREATE INDEX future IF NOT EXISTS FOR (n:Run) ON (n.kind);\n"
    )
    Neo4jConfig(migrations_dir=tmp_path / "new").build(bare_url).upgrade()
    with pytest.raises(StoreError, match=r"V0006__future applied, which is not in"):
        Neo4jStore(bare_url).upgrade()


def test_misnamed_migration_files_are_refused(bare_url, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "0001-constraints.cypher").write_text(
        "CREATE INDEX x IF NOT EXISTS FOR (n:A) ON (n.x);"
    )
    with pytest.raises(
        StoreError, match=r"0001-constraints.cypher: migration files must be named V0001__"
    ):
        Neo4jConfig(migrations_dir=tmp_path / "m").build(bare_url).upgrade()


def test_writing_before_the_schema_exists_says_to_run_db_upgrade(bare_url):
    store = Neo4jStore(bare_url)
    with pytest.raises(StoreError, match=r"kag db upgrade"):
        store.write(GraphBatch().add(Entity(id="e1")))
    store.close()


def test_kag_db_upgrade_migrates_a_neo4j_url(bare_url, capsys):
    assert kag_main(["db", "upgrade", "--graph", bare_url]) == 0
    out = capsys.readouterr().out
    assert "applied V0001__constraints, V0002__indexes, V0003__relation_namespace" in out
    assert "***" in out and bare_url.split(":")[2].split("@")[0] not in out  # no password printed
    assert kag_main(["db", "upgrade", "--graph", bare_url]) == 0
    assert "schema up to date" in capsys.readouterr().out


def test_relation_namespace_migration_moves_relations_off_the_lineage_types(bare_url, tmp_path):
    # a graph written by the former mapping: relationship type = relation_token(name), so the
    # relation named CONTAINS shared its type with the lineage edge Dataset -CONTAINS-> Trajectory
    (tmp_path / "old").mkdir()
    for name in ("V0001__constraints.cypher", "V0002__indexes.cypher"):
        shutil.copy(MIGRATIONS_DIR / name, tmp_path / "old" / name)
    Neo4jConfig(migrations_dir=tmp_path / "old").build(bare_url).upgrade()
    store = Neo4jStore(bare_url)
    with store.session() as session:
        session.run(
            "CREATE (a:Entity {id: 'a', name: 'A'}), (b:Entity {id: 'b', name: 'B'}), "
            "(d:Dataset {id: 'd'}), (t:Trajectory {id: 't'}), "
            "(:RelationType {token: 'CONTAINS', name: 'CONTAINS'}), "
            "(:RelationType {token: 'film_genre', name: '/film/genre', phrase: 'has genre'}), "
            "(a)-[:CONTAINS {type: 'CONTAINS'}]->(b), "
            "(a)-[:film_genre {type: '/film/genre', props: '{\"w\":1}'}]->(b), "
            "(d)-[:CONTAINS {props: '{}'}]->(t)"
        ).consume()
    assert store.upgrade() == [
        "V0003__relation_namespace",
        "V0004__task_family",
        "V0005__models",
    ]
    types = {r["t"] for r in store.read("MATCH ()-[r]->() RETURN DISTINCT type(r) AS t")}
    assert types == {"rel_CONTAINS", "rel_film_genre", "CONTAINS"}
    lineage = store.read("MATCH (x)-[:CONTAINS]->(y) RETURN x.id AS x, y.id AS y")
    assert [(r["x"], r["y"]) for r in lineage] == [("d", "t")]
    assert store.relation_types() == {"/film/genre": 1, "CONTAINS": 1}
    assert store.relation_phrases() == {"/film/genre": "has genre"}
    genre = store.neighbors("a", relation="/film/genre")
    assert [(r.target, r.props) for r, _ in genre] == [("b", {"w": 1})]
    assert store.edges("CONTAINS", source="d")[0].target == "t"
    # and relations written from now on land in the same namespace
    store.write(GraphBatch(relations=[Relation(source="b", type="CONTAINS", target="a")]))
    assert store.relation_types() == {"/film/genre": 1, "CONTAINS": 2}
    store.close()


def test_a_relation_named_like_a_lineage_edge_never_matches_it(neo4j_url):
    store = Neo4jStore(neo4j_url)
    store.write(
        GraphBatch(
            nodes={"Entity": [Entity(id="box", name="Box"), Entity(id="toy", name="Toy")]},
            relations=[Relation(source="box", type=name, target="toy") for name in LINEAGE_NAMES],
        )
    )
    for name in LINEAGE_NAMES:
        assert not store.read(f"MATCH ()-[r:{name}]->() RETURN r")
        assert store.edges(name, source="box") == []
    assert store.relation_types() == dict.fromkeys(LINEAGE_NAMES, 1)
    assert store.stats()["edges"]["CONTAINS"] == 0
    store.close()


LINEAGE_NAMES = ("CONTAINS", "HAS_STEP", "SOLVES")


def test_task_family_migration_makes_earlier_tasks_search_tasks(bare_url, tmp_path):
    (tmp_path / "old").mkdir()
    for name in sorted(p.name for p in MIGRATIONS_DIR.glob("V000[123]__*.cypher")):
        shutil.copy(MIGRATIONS_DIR / name, tmp_path / "old" / name)
    Neo4jConfig(migrations_dir=tmp_path / "old").build(bare_url).upgrade()
    store = Neo4jStore(bare_url)
    with store.session() as session:  # a task written before tasks had a family
        session.run(
            "CREATE (:Task {id: 'task:old', question: 'Who?', answers: ['Ada'], hops: 1, "
            "status: 'active', props: '{}', path: '{}'})"
        ).consume()
    assert store.upgrade() == ["V0004__task_family", "V0005__models"]
    (task,) = store.get_nodes("Task", ["task:old"])
    assert task.family == "search"
    assert "task_family" in _schema(store)[1]
    store.close()


def test_models_migration_keeps_earlier_data_and_enforces_model_ids(bare_url, tmp_path):
    (tmp_path / "old").mkdir()
    for name in sorted(p.name for p in MIGRATIONS_DIR.glob("V000[1234]__*.cypher")):
        shutil.copy(MIGRATIONS_DIR / name, tmp_path / "old" / name)
    Neo4jConfig(migrations_dir=tmp_path / "old").build(bare_url).upgrade()
    store = Neo4jStore(bare_url)
    store.write(GraphBatch().add(Entity(id="e1", name="one")))
    assert store.upgrade() == ["V0005__models"]
    assert [e.name for e in store.get_nodes("Entity", ["e1"])] == ["one"]
    constraints, indexes = _schema(store)
    assert "model_id" in constraints and "model_weights_sha256" in indexes
    from neo4j.exceptions import ConstraintError

    store.write(GraphBatch().add(Model(id="m1", path="ckpt", stage="sft")))
    with store.session() as session, pytest.raises(ConstraintError):
        session.run("CREATE (:Model {id: 'm1'})").consume()
    store.close()
