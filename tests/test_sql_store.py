"""SQLite-specific guarantees of the embedded store (the shared ones are in tests/contract)."""

from __future__ import annotations

import sqlite3

import pytest

import kag
from kag.schema import Entity
from kag.stores import GraphBatch


def _relation_indexes(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'relations' "
            "AND sql IS NOT NULL"
        ).fetchall()
    return sorted(r[0] for r in rows)


def test_a_failing_stream_into_an_empty_graph_writes_nothing_and_keeps_the_indexes(tmp_path):
    path = tmp_path / "kag.db"
    with kag.open(f"sqlite:///{path}") as graph:
        indexes = _relation_indexes(path)
        assert indexes, "the migration creates a secondary index on relations"

        def batches():
            yield GraphBatch(
                nodes={"Entity": [Entity(id="a", name="A")]},
                triples=[("a", "r", "b")],
                ensure_entities=["b"],
            )
            raise ValueError("row 2 is malformed")

        with pytest.raises(ValueError, match="row 2"):
            graph.store.write_many(batches())
        assert graph.stats()["nodes"]["Entity"] == 0
        assert graph.relation_types() == {}
        assert _relation_indexes(path) == indexes

        graph.store.write_many(
            [GraphBatch(triples=[("a", "r", "b"), ("b", "r", "a")], ensure_entities=["a", "b"])]
        )
        assert _relation_indexes(path) == indexes
        assert [e.id for _, e in graph.neighbors("a", direction="in")] == ["b"]


def test_upgrade_reports_the_migrations_it_applied_once(tmp_path):
    from kag.stores.sql import SQLStore

    store = SQLStore(f"sqlite:///{tmp_path / 'kag.db'}")
    try:
        assert store.upgrade() == ["0001", "0002", "0003"]
        assert store.upgrade() == []
    finally:
        store.close()


def test_reading_a_graph_without_schema_says_to_run_db_upgrade(tmp_path):
    from kag.stores import StoreError
    from kag.stores.sql import SQLStore

    sqlite3.connect(tmp_path / "kag.db").close()  # a database file, but no KAG schema
    store = SQLStore(f"sqlite:///{tmp_path / 'kag.db'}")
    try:
        with pytest.raises(StoreError, match="kag db upgrade"):
            list(store.iter_nodes("Trajectory"))
        with pytest.raises(StoreError, match="kag db upgrade"):
            store.stats()
    finally:
        store.close()


def test_a_misspelt_sqlite_path_is_a_user_error_and_leaves_no_file(tmp_path, capsys):
    from kag.cli import main as kag_main
    from kag.stores import GraphNotFoundError, open_store

    typo = tmp_path / "kgg.db"
    assert kag_main(["stats", "--graph", f"sqlite:///{typo}"]) == 2
    err = capsys.readouterr().err
    assert f"graph file {typo} does not exist" in err and "kag db upgrade" in err
    store = open_store(f"sqlite:///{typo}")
    with pytest.raises(GraphNotFoundError, match="does not exist"):
        store.count_nodes("Entity")
    store.close()
    assert kag_main(["stats", "--graph", f"sqlite:///{tmp_path / 'nodir' / 'kag.db'}"]) == 2
    assert "directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    # creating a graph stays one command away
    assert kag_main(["db", "upgrade", "--graph", f"sqlite:///{typo}"]) == 0
    assert kag_main(["stats", "--graph", f"sqlite:///{typo}"]) == 0


def test_a_graph_made_before_task_families_migrates_its_tasks_to_search(tmp_path):
    from alembic import command
    from alembic.config import Config

    from kag.stores.sql import MIGRATIONS_DIR, SQLStore

    url = f"sqlite:///{tmp_path / 'kag.db'}"
    sqlite3.connect(tmp_path / "kag.db").close()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0001")  # the schema as it was: tasks have no family column
    with sqlite3.connect(tmp_path / "kag.db") as conn:
        conn.execute(
            "INSERT INTO tasks (id, props, question, answers, answer_ids, hops, status, path)"
            " VALUES ('task:old', '{}', 'Who?', '[\"Ada\"]', '[]', 1, 'active', '{}')"
        )
    store = SQLStore(url)
    try:
        assert store.upgrade() == ["0002", "0003"]
        (task,) = store.get_nodes("Task", ["task:old"])
        assert (task.family, task.answers) == ("search", ("Ada",))
    finally:
        store.close()


def test_a_graph_at_0002_upgrades_to_models_and_keeps_its_data(tmp_path):
    from alembic import command
    from alembic.config import Config

    from kag.schema import Edge, Model, Run
    from kag.stores.sql import MIGRATIONS_DIR, SQLStore

    url = f"sqlite:///{tmp_path / 'kag.db'}"
    sqlite3.connect(tmp_path / "kag.db").close()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0002")  # the schema before models
    with sqlite3.connect(tmp_path / "kag.db") as conn:
        conn.execute(
            "INSERT INTO runs (id, props, kind, config, started_at, status, counters)"
            " VALUES ('run:old', '{}', 'sft', '{}', '', 'finished', '{}')"
        )
    store = SQLStore(url)
    try:
        assert store.upgrade() == ["0003"]
        assert store.get_nodes("Run", ["run:old"])[0].kind == "sft"
        store.write(
            GraphBatch().add(
                Model(id="m1", path="ckpt", stage="sft", weights_sha256="ab"),
                Edge(
                    kind="PRODUCED_BY",
                    source_kind="Model",
                    source="m1",
                    target_kind="Run",
                    target="run:old",
                ),
            )
        )
        assert store.get_nodes("Model", ["m1"])[0].weights_sha256 == "ab"
        assert [e.target for e in store.edges("PRODUCED_BY", source="m1")] == ["run:old"]
        assert isinstance(store.get_nodes("Run", ["run:old"])[0], Run)
    finally:
        store.close()
