"""Lossless Parquet snapshot of a whole graph: `kag export graph DIR` / `kag import graph DIR`.

| file                          | holds                                                    |
|-------------------------------|----------------------------------------------------------|
| `nodes/{Kind}.parquet`        | every node of a kind, one column per record field        |
| `relations.parquet`           | entity relations (source, type, target, props)           |
| `edges.parquet`               | every other edge (kind, endpoints and their kinds, props)|
| `relation_phrases.parquet`    | the natural-language phrase of each relation type        |
| `manifest.json`               | counts, source graph, sha256 of every file               |

Scalars keep their Arrow types (string, int64, float64, bool); mappings and tool calls are JSON
text, so every record reads back equal to what was written. Both directions stream in batches.
Importing validates the files (checksums and every record) before writing anything, and writes
nodes, then relations, then edges.

>>> node_columns("Trajectory")["n_turns"]
DataType(int64)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from exporters.manifest import read_manifest, verify_dataset, write_manifest
from exporters.select import dumps
from exporters.writer import Staging
from kag.schema import EDGE_KINDS, NODE_KINDS, Edge, Relation, node_class
from kag.stores.base import GraphBatch, GraphStore

__all__ = ["SNAPSHOT_VERSION", "export_graph", "import_graph", "node_columns", "SnapshotResult"]

SNAPSHOT_VERSION = 1
_BATCH = 10_000

_SCALARS = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}

RELATION_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("type", pa.string()),
        ("target", pa.string()),
        ("props", pa.string()),
    ]
)
EDGE_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("source_kind", pa.string()),
        ("source", pa.string()),
        ("target_kind", pa.string()),
        ("target", pa.string()),
        ("props", pa.string()),
    ]
)
PHRASE_SCHEMA = pa.schema([("type", pa.string()), ("phrase", pa.string())])


def _json_fields(kind: str) -> set[str]:
    cls = node_class(kind)
    return set(cls.JSON_FIELDS) | {"tool_calls"}


def node_columns(kind: str) -> dict[str, pa.DataType]:
    """Field name -> Arrow type of a node kind's snapshot table (JSON fields are strings)."""
    cls = node_class(kind)
    out: dict[str, pa.DataType] = {}
    for f in dataclasses.fields(cls):
        annotation = str(f.type)
        if f.name in _json_fields(kind):
            out[f.name] = pa.string()
        elif annotation.startswith("tuple[str"):
            out[f.name] = pa.list_(pa.string())
        elif annotation.startswith("Literal"):
            out[f.name] = pa.string()
        else:
            base = annotation.split("|")[0].strip()
            if base not in _SCALARS:
                raise TypeError(f"{kind}.{f.name}: no snapshot column type for {annotation!r}")
            out[f.name] = _SCALARS[base]
    return out


def _node_schema(kind: str) -> pa.Schema:
    return pa.schema([pa.field(name, t) for name, t in node_columns(kind).items()])


def _node_row(node: Any, json_fields: set[str]) -> dict[str, Any]:
    row = node.to_dict()
    for name in json_fields & row.keys():
        row[name] = dumps(row[name])
    return row


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SnapshotResult:
    path: Path
    counts: dict[str, Any]


def _write_table(path: Path, schema: pa.Schema, batches: Iterator[list[dict[str, Any]]]) -> int:
    n = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for rows in batches:
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                n += len(rows)
        if n == 0:
            writer.write_table(schema.empty_table())
    return n


def export_graph(
    store: GraphStore, out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> SnapshotResult:
    """Write a snapshot of every node, relation, edge and relation phrase of `store` to `out_dir`."""
    from kag.stores import redact_url

    counts: dict[str, Any] = {"nodes": {}, "edges": {}, "relations": 0, "relation_phrases": 0}
    with Staging(out_dir, overwrite=overwrite) as staging:
        root = staging.path
        (root / "nodes").mkdir()
        for kind in NODE_KINDS:
            json_fields = _json_fields(kind)
            rows = (
                [_node_row(n, json_fields) for n in batch]
                for batch in store.iter_nodes(kind, batch_size=_BATCH)
            )
            counts["nodes"][kind] = _write_table(
                root / "nodes" / f"{kind}.parquet", _node_schema(kind), rows
            )
        counts["relations"] = _write_table(
            root / "relations.parquet",
            RELATION_SCHEMA,
            (
                [
                    {
                        "source": r.source,
                        "type": r.type,
                        "target": r.target,
                        "props": dumps(r.props),
                    }
                    for r in batch
                ]
                for batch in store.iter_relations(batch_size=_BATCH)
            ),
        )

        def edge_rows() -> Iterator[list[dict[str, Any]]]:
            for kind in EDGE_KINDS:
                for batch in store.iter_edges(kind, batch_size=_BATCH):
                    counts["edges"][kind] = counts["edges"].get(kind, 0) + len(batch)
                    yield [{**e.to_dict(), "props": dumps(e.props)} for e in batch]

        _write_table(root / "edges.parquet", EDGE_SCHEMA, edge_rows())
        phrases = store.relation_phrases()
        counts["relation_phrases"] = _write_table(
            root / "relation_phrases.parquet",
            PHRASE_SCHEMA,
            iter([[{"type": t, "phrase": p} for t, p in sorted(phrases.items())]]),
        )
        write_manifest(
            root,
            {
                "format": "kag-graph-snapshot",
                "schema_version": SNAPSHOT_VERSION,
                "created_at": datetime.now(UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                "source": {"graph": redact_url(store.url)},
                "counts": counts,
            },
        )
        path = staging.publish()
    return SnapshotResult(path=path, counts=counts)


def _read_rows(path: Path) -> Iterator[list[dict[str, Any]]]:
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=_BATCH):
        yield batch.to_pylist()


def _node_batches(root: Path, kind: str) -> Iterator[list[Any]]:
    cls = node_class(kind)
    json_fields = _json_fields(kind)
    path = root / "nodes" / f"{kind}.parquet"
    for rows in _read_rows(path):
        nodes = []
        for i, row in enumerate(rows):
            for name in json_fields & row.keys():
                if row[name] is not None:
                    row[name] = json.loads(row[name])
            try:
                nodes.append(cls.from_dict(row))
            except ValueError as err:
                raise ValueError(f"{path}: row {i}: {err}") from None
        yield nodes


def _relation_batches(root: Path) -> Iterator[list[Relation]]:
    for rows in _read_rows(root / "relations.parquet"):
        yield [
            Relation(
                source=r["source"], type=r["type"], target=r["target"], props=json.loads(r["props"])
            )
            for r in rows
        ]


def _edge_batches(root: Path) -> Iterator[list[Edge]]:
    for rows in _read_rows(root / "edges.parquet"):
        yield [Edge(**{**r, "props": json.loads(r["props"])}) for r in rows]


def _batches(root: Path) -> Iterator[GraphBatch]:
    for kind in NODE_KINDS:
        for nodes in _node_batches(root, kind):
            yield GraphBatch(nodes={kind: nodes})
    for rels in _relation_batches(root):
        yield GraphBatch(relations=rels)
    for edges in _edge_batches(root):
        yield GraphBatch(edges=edges)


def import_graph(store: GraphStore, snapshot_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a snapshot into `store` (upserts by id); returns the snapshot's counts.

    Raises `ValueError` naming the file and row at fault when the snapshot is damaged, before
    anything is written.
    """
    root = Path(snapshot_dir)
    if not root.is_dir():
        raise ValueError(f"snapshot directory {root} does not exist")
    manifest = read_manifest(root)
    if manifest.get("format") != "kag-graph-snapshot":
        raise ValueError(
            f"{root} is not a graph snapshot (manifest format {manifest.get('format')!r})"
        )
    if manifest.get("schema_version") != SNAPSHOT_VERSION:
        raise ValueError(
            f"{root}: snapshot version {manifest.get('schema_version')!r} is not supported (expected {SNAPSHOT_VERSION})"
        )
    verify_dataset(root)
    for _ in _batches(root):  # validation pass: a damaged record stops the import before any write
        pass
    store.write_many(_batches(root))
    phrases = {
        r["type"]: r["phrase"]
        for rows in _read_rows(root / "relation_phrases.parquet")
        for r in rows
    }
    if phrases:
        store.set_relation_phrases(phrases)
    return manifest["counts"]
