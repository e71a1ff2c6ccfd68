"""Lineage of an export in the graph: a Dataset node, CONTAINS to every exported trajectory, and
PRODUCED_BY to the export Run that made it.

The trajectory ids are streamed back from the finished Parquet files (the `trajectory_id` column),
so recording lineage holds one batch in memory, never the whole dataset.

>>> export_run_id("sft", "20250101T000000Z", "ab12")
'export:sft:20250101T000000Z:ab12'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq

from exporters.manifest import read_manifest
from kag.schema import Dataset, Edge, Run
from kag.stores.base import GraphBatch, GraphStore

__all__ = [
    "export_run_id",
    "dataset_id",
    "record_lineage",
    "remove_lineage",
    "replaced_dataset",
    "remove_replaced",
    "iter_column",
]

_EDGE_BATCH = 10_000


def export_run_id(kind: str, stamp: str, token: str) -> str:
    return f"export:{kind}:{stamp}:{token}"


def dataset_id(kind: str, stamp: str, token: str) -> str:
    return f"dataset:{kind}:{stamp}:{token}"


def iter_column(
    files: Sequence[Path], column: str, *, batch_size: int = _EDGE_BATCH
) -> Iterator[list[str]]:
    """Non-null values of one column of Parquet files, in batches."""
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=[column]):
            values = [v for v in batch.column(0).to_pylist() if v is not None]
            if values:
                yield values


def record_lineage(store: GraphStore, *, dataset: Dataset, run: Run, files: Sequence[Path]) -> int:
    """Write the Run, the Dataset, PRODUCED_BY and one CONTAINS per trajectory; return edges written.

    SQL stores write it in one transaction. On a store that commits per batch (Neo4j) a failure
    midway is undone by `remove_lineage`, which the exporter calls before re-raising.
    """
    counted = 0

    def batches() -> Iterator[GraphBatch]:
        nonlocal counted
        head = GraphBatch().add(run, dataset)
        head.add(
            Edge(
                kind="PRODUCED_BY",
                source_kind="Dataset",
                source=dataset.id,
                target_kind="Run",
                target=run.id,
            )
        )
        counted += 1
        yield head
        for ids in iter_column(files, "trajectory_id"):
            batch = GraphBatch()
            batch.edges = [
                Edge(
                    kind="CONTAINS",
                    source_kind="Dataset",
                    source=dataset.id,
                    target_kind="Trajectory",
                    target=t,
                )
                for t in ids
            ]
            counted += len(ids)
            yield batch

    store.write_many(batches())
    return counted


def remove_lineage(store: GraphStore, *, dataset_id: str, run_id: str) -> None:
    """Delete a Dataset and its export Run with every edge attached (used to undo a failed export)."""
    store.delete_nodes("Dataset", [dataset_id])
    store.delete_nodes("Run", [run_id])


def replaced_dataset(out_dir: Path) -> str | None:
    """The Dataset id of the earlier export in `out_dir` that an `--overwrite` replaces, if any
    (from its `manifest.json`; None when there is none or it cannot be read)."""
    try:
        dataset = read_manifest(out_dir).get("dataset_id")
    except (OSError, ValueError):
        return None
    return dataset if isinstance(dataset, str) and dataset else None


def remove_replaced(store: GraphStore, *, dataset_id: str, path: Path) -> bool:
    """Delete the Dataset node of an export whose files were replaced at `path`, with its
    CONTAINS and PRODUCED_BY edges; the export Run stays as the record that it ran.

    Only a Dataset recorded at that same path is removed; return whether one was.
    """
    found = store.get_nodes("Dataset", [dataset_id])
    if not found or found[0].path != str(path):
        return False
    store.delete_nodes("Dataset", [dataset_id])
    return True
