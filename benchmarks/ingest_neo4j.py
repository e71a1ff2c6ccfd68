"""FB15k-237 (all splits, with entity names) into Neo4j: batched store writes vs per-row MERGE.

`bench_neo4j()` prints `RESULT` lines (DESIGN section 7):

| metric                    | value                                  | baseline                         |
|---------------------------|----------------------------------------|----------------------------------|
| `neo4j_relations_per_s`   | relations / s of `kag.importer.import_triples` (both passes, names) into a running server: the median of 3 renamed copies of FB15k-237 (their own entities and relation types) imported one after another after the first | one auto-commit `MERGE` per triple on a sample, renamed likewise: the median of as many runs on the same running server, after the imports |
| `neo4j_relations_per_s_first_import` | the same for the first import after the server started (its JIT compiler still cold), into an empty graph | the same per-row `MERGE` as the first work of another just-started server, into an empty graph (not measured with `--url`) |
| `neo4j_csr_projection_s`  | s to project the graph into the walk CSR | the same projection from SQLite  |

Runs a private Neo4j from `neo4j-launcher/` unless `--url` names a server (which it wipes).
`python benchmarks/ingest.py --backend neo4j` calls it; it also runs on its own:
`python benchmarks/ingest_neo4j.py [--data DIR] [--url URL]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: `$KAG_DATA_DIR/fb15k-237`, default `../shared/data` next to the repository
DATA_DIR = (
    Path(os.environ.get("KAG_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    / "fb15k-237"
)
SPLITS = ("train.tsv", "dev.tsv", "test.tsv")


def read_triples(data_dir: Path) -> list[tuple[str, str, str]]:
    """All triples of the three splits, `(head, relation, tail)`."""
    triples = []
    for name in SPLITS:
        with (data_dir / name).open(encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
                if len(row) != 3:
                    raise ValueError(f"{data_dir / name}:{lineno}: expected 3 tab-separated fields")
                triples.append((row[0], row[1], row[2]))
    return triples


def read_names(data_dir: Path) -> dict[str, str]:
    names = {}
    with (data_dir / "entity2text.txt").open(encoding="utf-8") as f:
        for line in f:
            mid, _, name = line.rstrip("\n").partition("\t")
            names[mid] = name
    return names


def _batches(triples, names, batch_size: int) -> Iterator:
    from kag.schema import Entity, Relation
    from kag.stores.base import GraphBatch

    ids = sorted({h for h, _, _ in triples} | {t for _, _, t in triples})
    for i in range(0, len(ids), batch_size):
        yield GraphBatch(
            nodes={"Entity": [Entity(id=e, name=names.get(e, e)) for e in ids[i : i + batch_size]]}
        )
    for i in range(0, len(triples), batch_size):
        yield GraphBatch(
            relations=[
                Relation(source=h, type=r, target=t) for h, r, t in triples[i : i + batch_size]
            ]
        )


def _renamed_copy(data_dir: Path, out: Path, prefix: str) -> Path:
    """FB15k-237 with `prefix` before every entity id and relation name: a second, disjoint graph."""
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        with (
            (data_dir / name).open(encoding="utf-8") as src,
            (out / name).open("w", encoding="utf-8") as dst,
        ):
            for line in src:
                dst.write("\t".join(prefix + field for field in line.split("\t")))
    with (data_dir / "entity2text.txt").open(encoding="utf-8") as src:
        (out / "entity2text.txt").write_text(
            "".join(prefix + line for line in src), encoding="utf-8"
        )
    return out


def _import(store, data_dir: Path) -> tuple[float, object]:
    from kag.importer import import_triples

    started = time.perf_counter()
    report = import_triples(
        store,
        [data_dir / s for s in SPLITS],
        entities_file=data_dir / "entity2text.txt",
        batch_size=50_000,
        progress=False,
    )
    return time.perf_counter() - started, report


def _driver(url: str):
    """A plain driver session factory on `url`: the baseline is a naive client, not the store."""
    import neo4j

    from kag.stores.neo4j_connection import parse_neo4j_url

    uri, user, password, database = parse_neo4j_url(url)
    driver = neo4j.GraphDatabase.driver(uri, auth=(user, password))
    return driver, database


def _wipe(url: str) -> None:
    """Delete everything but the migration records (before a store is opened on `url`)."""
    driver, database = _driver(url)
    with driver, driver.session(database=database) as session:
        session.run(
            "MATCH (n) WHERE NOT n:KagMigration CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"
        ).consume()


def _per_row_merge(url: str, triples) -> float:
    """Seconds to MERGE `triples` one auto-commit query each, the way a naive client does."""
    from kag.stores.neo4j_cypher import relationship_type

    driver, database = _driver(url)
    with driver, driver.session(database=database) as session:
        started = time.perf_counter()
        for h, r, t in triples:
            session.run(
                "MERGE (s:Entity {id: $h}) MERGE (t:Entity {id: $t}) "
                f"MERGE (s)-[x:`{relationship_type(r)}`]->(t) SET x.type = $r",
                h=h,
                t=t,
                r=r,
            ).consume()
        return time.perf_counter() - started


def result(
    metric: str,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float,
    ratio: float,
    **extra,
) -> dict:
    line = {
        "metric": metric,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        **extra,
    }
    print("RESULT " + json.dumps(line), flush=True)
    return line


def _renamed(triples, prefix: str) -> list[tuple[str, str, str]]:
    """`triples` with `prefix` before every field, as `_renamed_copy` writes them to disk."""
    return [(prefix + h, prefix + r, prefix + t) for h, r, t in triples]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def bench_neo4j(
    *,
    data_dir: Path = DATA_DIR,
    url: str | None = None,
    batch_size: int = 10_000,
    baseline_rows: int = 2_000,
    steady_imports: int = 3,
) -> list[dict]:
    """Run the Neo4j ingest benchmark; return (and print) its RESULT dicts.

    Each ingest figure is paired with a baseline measured in the same server state: on a running
    server, the median of `steady_imports` imports against the median of as many per-row MERGE
    runs, each into the graph that already holds the data; on a just-started server (cold JVM),
    the first import against per-row MERGE as the first work of another just-started server. With
    `url` no server can be started cold, so only the running-server pair is measured.
    """
    from kag.neo4j_server import LauncherConfig
    from kag.stores.neo4j import Neo4jConfig
    from kag.stores.sql import SQLStore
    from kag.walks import CSRGraph

    triples = read_triples(data_dir)
    names = read_names(data_dir)
    n_entities = len({h for h, _, _ in triples} | {t for _, _, t in triples})
    sample = triples[:baseline_rows]
    baseline = f"per-row auto-commit MERGE ({len(sample):,} triples)"
    launcher = LauncherConfig(heap="2g", pagecache="512m") if url is None else None
    where = "the server at --url"
    cold_base_rate = None
    if launcher is not None:
        where = (
            f"kag-neo4j-launcher (Neo4j 5.26 Community), heap {launcher.heap}, page cache "
            f"{launcher.pagecache}, default JVM options"
        )
        # the cold baseline gets a just-started server of its own: the schema, then per-row MERGE
        with launcher.start() as cold:
            schema = Neo4jConfig().build(cold.url)
            schema.upgrade()
            schema.close()
            cold_base_rate = len(sample) / _per_row_merge(cold.url, sample)
    server = launcher.start() if launcher is not None else None
    results = []
    try:
        if server is not None:
            url = server.url
        else:
            _wipe(url)
        store = Neo4jConfig(batch_size=batch_size).build(url)
        store.upgrade()

        def ingest_result(metric: str, seconds: float, report, base_rate: float, **extra) -> dict:
            rate = len(triples) / seconds
            return result(
                metric,
                round(rate, 1),
                "relations/s",
                baseline,
                round(base_rate, 1),
                round(rate / base_rate, 1),
                relations=len(triples),
                entities=n_entities,
                rows=report.rows,
                seconds=round(seconds, 2),
                batch_size=batch_size,
                neo4j=where,
                **extra,
            )

        first_seconds, first_report = _import(store, data_dir)
        stats = store.stats()
        assert stats["nodes"]["Entity"] == n_entities, stats["nodes"]
        assert stats["edges"]["RELATION"] == len(triples), stats["edges"]["RELATION"]

        started = time.perf_counter()
        csr = CSRGraph.from_store(store)
        neo_seconds = time.perf_counter() - started
        assert csr.n_edges == len(triples)

        with tempfile.TemporaryDirectory() as tmp:
            sql = SQLStore(f"sqlite:///{tmp}/kag.db")
            sql.upgrade()
            sql.write_many(_batches(triples, names, 50_000))
            started = time.perf_counter()
            CSRGraph.from_store(sql)
            sql_seconds = time.perf_counter() - started
            sql.close()
        projection = result(
            "neo4j_csr_projection_s",
            round(neo_seconds, 3),
            "s",
            "the same projection from SQLite",
            round(sql_seconds, 3),
            round(sql_seconds / neo_seconds, 3),
            relations=len(triples),
        )
        runs = []  # (seconds, report) of each renamed copy, imported one after another
        for copy_no in range(2, 2 + steady_imports):
            with tempfile.TemporaryDirectory() as tmp:
                copy = _renamed_copy(data_dir, Path(tmp), f"copy{copy_no}:")
                runs.append(_import(store, copy))
            assert store.relation_count() == copy_no * len(triples)
        store.close()
        # the warm baseline: as many runs on the same running server, into the same full graph
        base_rates = [
            len(sample) / _per_row_merge(url, _renamed(sample, f"merge{k}:"))
            for k in range(steady_imports)
        ]
        seconds, report = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        results.append(
            ingest_result(
                "neo4j_relations_per_s",
                seconds,
                report,
                _median(base_rates),
                server=(
                    f"running: the median of {len(runs)} imports of renamed copies, one after "
                    f"another, into the graph that already holds {len(triples):,}; the baseline the "
                    f"median of {len(base_rates)} runs after them on the same server"
                ),
                runs=[round(len(triples) / s) for s, _ in runs],
                baseline_runs=[round(r, 1) for r in base_rates],
            )
        )
        if cold_base_rate is not None:
            results.append(
                ingest_result(
                    "neo4j_relations_per_s_first_import",
                    first_seconds,
                    first_report,
                    cold_base_rate,
                    server=(
                        "just started: the first import into an empty graph; the baseline the "
                        "first work of another just-started server, into an empty graph"
                    ),
                )
            )
        results.append(projection)
    finally:
        if server is not None:
            server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="FB15k-237 directory")
    parser.add_argument(
        "--url", default=None, help="an existing Neo4j (it is wiped); default: a private one"
    )
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--baseline-rows", type=int, default=2_000)
    parser.add_argument(
        "--steady-imports", type=int, default=3, help="renamed copies for the running-server figure"
    )
    args = parser.parse_args(argv)
    if args.steady_imports < 1:
        parser.error("--steady-imports must be >= 1")
    bench_neo4j(
        data_dir=args.data,
        url=args.url,
        batch_size=args.batch_size,
        baseline_rows=args.baseline_rows,
        steady_imports=args.steady_imports,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
