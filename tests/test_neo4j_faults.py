"""Neo4j faults a user meets: a server that dies mid-import, a wrong password, no server at all.

These tests start a private server (the shared one must not be killed or locked out).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from kag.cli import main as kag_main
from kag.importer import import_triples
from kag.neo4j_server import LauncherConfig
from kag.stores.base import StoreError
from kag.stores.neo4j import Neo4jConfig, Neo4jStore
from tests.data import DATA_DIR

FB15K = DATA_DIR / "fb15k-237"


@pytest.fixture(scope="module")
def private_server(tmp_path_factory):
    """A second server whose data lives in a directory the test can restart it on."""
    data = tmp_path_factory.mktemp("neo4j-data")
    state = {
        "server": LauncherConfig(data_dir=data, heap="512m", pagecache="64m").start(),
        "data": data,
    }
    yield state
    state["server"].stop()  # the test may have replaced the server by a restarted one


def _triples_file(tmp_path: Path, n: int) -> tuple[Path, set[tuple[str, str, str]]]:
    lines = []
    with (FB15K / "train.tsv").open(encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            if len(lines) == n:
                break
    path = tmp_path / "triples.tsv"
    path.write_text("".join(lines), encoding="utf-8")
    return path, {tuple(line.rstrip("\n").split("\t")) for line in lines}


class _DiesAfter:
    """The real store, whose server is killed once `n` batches of an import were written."""

    def __init__(self, store: Neo4jStore, server, n: int) -> None:
        # not named `store`: the importer would unwrap it like a KnowledgeActionGraph
        self._inner, self._server, self._n = store, server, n

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def write_many(self, batches):
        def killing():
            for i, batch in enumerate(batches):
                if i == self._n:
                    self._server.kill()
                yield batch

        return self._inner.write_many(killing())


def test_server_killed_mid_import_gives_a_clear_error_and_a_rerun_completes_exactly(
    private_server, tmp_path, capsys
):
    server = private_server["server"]
    path, triples = _triples_file(tmp_path, 12_000)
    entities = {t[0] for t in triples} | {t[2] for t in triples}
    store = Neo4jConfig(max_retry_time=2.0).build(server.url)
    store.upgrade()
    with pytest.raises(StoreError) as info:
        # entity batches come first; the server dies after two batches of relations
        after = -(-len(entities) // 2_000) + 2
        import_triples(_DiesAfter(store, server, after), [path], batch_size=2_000, progress=False)
    message = str(info.value)
    assert "unreachable or went away" in message and "rerunning the same import is safe" in message
    assert "Traceback" not in message
    store.close()

    # the same data directory, after a crash: Neo4j recovers what was committed
    restarted = LauncherConfig(
        data_dir=private_server["data"], password=server.password, heap="512m", pagecache="64m"
    ).start()
    private_server["server"] = restarted
    partial = Neo4jStore(restarted.url)
    # relations of new types are written in transactions kept in flight while the import reads
    # on, so the crash may find the two earlier batches committed or not, but never in part
    committed = partial.stats()["edges"]["RELATION"]
    assert committed in (0, 2_000, 4_000)
    partial.close()

    assert (
        kag_main(["import", "triples", str(path), "--graph", restarted.url, "--no-progress"]) == 0
    )
    store = Neo4jStore(restarted.url)
    stats = store.stats()
    assert stats["nodes"]["Entity"] == len(entities)
    assert stats["edges"]["RELATION"] == len(triples)
    with store._session() as session:
        pairs = session.run(
            "MATCH (s:Entity)-[r]->(t:Entity) WITH s, r.type AS type, t, count(*) AS n WHERE n > 1 RETURN count(*) AS dupes"
        ).single()["dupes"]
        ids = session.run("MATCH (e:Entity) RETURN count(DISTINCT e.id) AS n").single()["n"]
    assert pairs == 0 and ids == len(entities)
    assert {(r.source, r.type, r.target) for b in store.iter_relations() for r in b} == triples
    store.close()


def test_a_wrong_password_is_one_clear_message(private_server, capsys):
    server = private_server["server"]
    wrong = f"neo4j://neo4j:not-the-password@127.0.0.1:{server.port}"
    with pytest.raises(
        StoreError, match=r"authentication failed for user 'neo4j'.*KAG_NEO4J_PASSWORD"
    ):
        Neo4jStore(wrong)
    assert kag_main(["stats", "--graph", wrong]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kag stats: error: Neo4j ") and "authentication failed" in err
    assert "Traceback" not in err and "not-the-password" not in err
    # the right password still works afterwards (one failed attempt each, no lock-out)
    Neo4jStore(server.url).close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_a_clear_message_after_bounded_retries(capsys):
    url = f"neo4j://neo4j:secret-pw@127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(
        StoreError, match=r"cannot reach Neo4j at neo4j://127.0.0.1:\d+ after 2 attempt\(s\)"
    ):
        Neo4jConfig(connect_attempts=2, connection_timeout=2.0).build(url)
    assert time.monotonic() - started < 20
    assert kag_main(["stats", "--graph", url]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Neo4j" in err and "make neo4j" in err
    assert "Traceback" not in err and "secret-pw" not in err
