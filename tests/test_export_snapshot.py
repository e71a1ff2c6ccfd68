"""`kag export graph` / `kag import graph`: a lossless Parquet snapshot of the whole graph."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kag
from exporters import export
from exporters.snapshot import export_graph, import_graph
from exporters.synthetic import SyntheticConfig, write_synthetic
from kag.cli import main as kag_main
from kag.schema import EDGE_KINDS, NODE_KINDS

CFG = SyntheticConfig(n_tasks=4, trajectories_per_task=2, n_entities=20)


def _everything(graph) -> dict:
    """Every record of the graph as plain data, in a canonical order."""
    out = {kind: [n.to_dict() for n in graph.iter_nodes(kind)] for kind in NODE_KINDS}
    out["relations"] = sorted(
        (r.to_dict() for batch in graph.store.iter_relations() for r in batch),
        key=lambda r: (r["source"], r["type"], r["target"]),
    )
    out["edges"] = {
        k: [e.to_dict() for batch in graph.store.iter_edges(k) for e in batch] for k in EDGE_KINDS
    }
    out["phrases"] = graph.relation_phrases()
    return out


def _stats(graph) -> dict:
    stats = graph.stats()
    stats.pop("url")
    return stats


def test_snapshot_round_trip_is_lossless(graph, tmp_path):
    write_synthetic(graph.store, CFG)
    graph.upsert(
        kag.Entity(
            id="odd", name='Zoë \u2028 "quoted"', props={"nested": {"x": [1, 2.5, None, True]}}
        )
    )
    graph.set_relation_phrases({"unused_type": "is unused by"})  # a phrase without relations
    export("sft", tmp_path / "ds", graph=graph)  # a Dataset node with lineage edges too
    result = export_graph(graph.store, tmp_path / "snap")
    assert result.counts["nodes"]["Trajectory"] == CFG.n_tasks * CFG.trajectories_per_task

    with kag.open(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        import_graph(copy.store, tmp_path / "snap")
        assert _stats(copy) == _stats(graph)
        assert _everything(copy) == _everything(graph)
        import_graph(copy.store, tmp_path / "snap")  # importing again changes nothing
        assert _stats(copy) == _stats(graph)


def test_snapshot_cli_round_trip_and_a_damaged_snapshot_writes_nothing(
    sqlite_url, tmp_path, capsys
):
    with kag.open(sqlite_url) as graph:
        write_synthetic(graph.store, CFG)
        expected = _stats(graph)
    snap = tmp_path / "snap"
    assert kag_main(["export", "graph", str(snap), "--graph", sqlite_url]) == 0
    target = f"sqlite:///{tmp_path / 'target.db'}"
    assert kag_main(["import", "graph", str(snap), "--graph", target]) == 0
    assert "imported" in capsys.readouterr().out
    with kag.open(target) as copy:
        assert _stats(copy) == expected

    # a record that breaks the schema, with the checksum updated so only validation can catch it
    path = snap / "nodes" / "Trajectory.parquet"
    table = pq.read_table(path)
    verdicts = table.column("verdict").to_pylist()
    verdicts[3] = "maybe"
    table = table.set_column(table.schema.get_field_index("verdict"), "verdict", pa.array(verdicts))
    pq.write_table(table, path)
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert kag_main(["import", "graph", str(snap), "--graph", empty]) == 2
    assert "Trajectory.parquet: sha256 differs" in capsys.readouterr().err

    from exporters.manifest import read_manifest, write_manifest

    manifest = read_manifest(snap)
    manifest.pop("files")
    write_manifest(snap, manifest)
    assert kag_main(["import", "graph", str(snap), "--graph", empty]) == 2
    err = capsys.readouterr().err
    assert "Trajectory.parquet: row 3" in err and "verdict" in err and "maybe" in err
    with kag.open(empty) as g:
        assert sum(g.stats()["nodes"].values()) == 0  # nothing written


def test_import_refuses_a_directory_that_is_not_a_snapshot(sqlite_url, tmp_path):
    (tmp_path / "nope").mkdir()
    with (
        kag.open(sqlite_url) as graph,
        pytest.raises(ValueError, match="manifest.json does not exist"),
    ):
        import_graph(graph.store, tmp_path / "nope")
