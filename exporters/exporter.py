"""`export(kind, out_dir, ...)`: graph -> selection -> dedup -> split -> Parquet + card + manifest + lineage.

Rows stream from the store through the writer one batch at a time; the dataset appears at
`out_dir` only when every file, the manifest and the lineage are written (see `writer.Staging`).

>>> result = export("sft", "out/sft", graph="sqlite:///kag.db")  # doctest: +SKIP
>>> result.rows, result.counts["split"]  # doctest: +SKIP
(9120, {'test': 460, 'train': 8208, 'validation': 452})
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporters.card import LengthStats, write_card
from exporters.dedup import DedupConfig
from exporters.lineage import (
    dataset_id,
    export_run_id,
    record_lineage,
    remove_lineage,
    remove_replaced,
    replaced_dataset,
)
from exporters.manifest import write_manifest
from exporters.rows import OPDConfig, sft_row, task_row
from exporters.schema import SCHEMA_VERSION, check_kind, dataset_schema
from exporters.select import Selection, iter_tasks, iter_trajectories
from exporters.splits import SplitConfig
from exporters.writer import ShardedWriter, Staging, WriterConfig
from kag.schema import Dataset, Run
from kag.stores import GraphStore, open_store, redact_url

__all__ = ["export", "ExportResult", "EmptySelectionError", "open_graph_store"]

#: progress(rows_written, records_read) is called after every batch
Progress = Callable[[int, int], None]


class EmptySelectionError(ValueError):
    """The filters and dedup left no rows; nothing was written."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportResult:
    """What an export wrote: where, how many rows, and its lineage ids."""

    path: Path
    kind: str
    rows: int
    dataset_id: str
    run_id: str
    manifest_sha256: str
    counts: dict[str, Any]
    files: list[str]


def open_graph_store(graph: Any) -> tuple[GraphStore, bool]:
    """(store, opened_here) from a URL (or None: `$KAG_GRAPH`), a `KnowledgeActionGraph` or a store."""
    if graph is None or isinstance(graph, str):
        return open_store(graph), True
    store = getattr(graph, "store", graph)
    if not isinstance(store, GraphStore):
        raise ValueError(
            f"graph must be a URL, a KnowledgeActionGraph or a GraphStore, got {type(graph).__name__}"
        )
    return store, False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def export(
    kind: str,
    out_dir: str | os.PathLike[str],
    *,
    graph: Any = None,
    selection: Selection | None = None,
    dedup: DedupConfig | None = None,
    splits: SplitConfig | None = None,
    writer: WriterConfig | None = None,
    opd: OPDConfig | None = None,
    overwrite: bool = False,
    lineage: bool = True,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a `sft`, `rl` or `opd` dataset from the graph into `out_dir`.

    `None` for a config means its defaults (sft: accepted trajectories, exact dedup, 90/5/5 splits).
    Raises `EmptySelectionError` (a `ValueError`) when no row survives the filters and dedup, and
    `ValueError` when `out_dir` is not empty and `overwrite` is false; in both cases nothing is
    written, in the directory or the graph.
    """
    check_kind(kind)
    selection = (selection or Selection()).with_default_verdict(kind)
    dedup, splits = dedup or DedupConfig(), splits or SplitConfig()
    writer, opd = writer or WriterConfig(), opd or OPDConfig()
    out = Path(out_dir).absolute()
    store, owned = open_graph_store(graph)
    try:
        with Staging(out, overwrite=overwrite) as staging:
            replaced = replaced_dataset(out) if overwrite else None
            result = _export(
                kind, out, staging, store, selection, dedup, splits, writer, opd, lineage, progress
            )
        # the files of the earlier export are gone: so goes its lineage, not to point at nothing
        if replaced is not None and replaced != result.dataset_id:
            remove_replaced(store, dataset_id=replaced, path=out)
        return result
    finally:
        if owned:
            store.close()


def _export(
    kind: str,
    out: Path,
    staging: Staging,
    store: GraphStore,
    selection: Selection,
    dedup_config: DedupConfig,
    split_config: SplitConfig,
    writer_config: WriterConfig,
    opd: OPDConfig,
    lineage: bool,
    progress: Progress | None,
) -> ExportResult:
    created_at = _now()
    t0 = time.perf_counter()
    stamp = created_at.replace("-", "").replace(":", "")
    token = uuid.uuid4().hex[:8]
    ds_id, run_id = dataset_id(kind, stamp, token), export_run_id(kind, stamp, token)
    dedup, splitter = dedup_config.build(), split_config.build()
    writer = ShardedWriter(staging.path, dataset_schema(kind), writer_config)
    read: dict[str, int] = {}
    per: dict[str, Counter[str]] = {"split": Counter(), "domain": Counter(), "verdict": Counter()}
    lengths = LengthStats()
    rows = 0
    try:
        if kind == "sft":
            for batch in iter_trajectories(store, selection, counters=read):
                for sel in batch:
                    task = sel.task
                    if dedup.check(
                        messages=sel.messages,
                        task_id=task.id,
                        walk_signature=task.walk_signature,
                        domain=task.domain,
                    ):
                        continue
                    row = sft_row(sel)
                    rows += _add(writer, splitter.split_of(task.id), row, per, lengths)
                if progress:
                    progress(rows, read["read"])
        else:
            for batch in iter_tasks(store, selection, counters=read):
                for sel in batch:
                    task = sel.task
                    if dedup.check(
                        messages=sel.source.messages,
                        task_id=task.id,
                        walk_signature=task.walk_signature,
                        domain=task.domain,
                    ):
                        continue
                    row = task_row(sel, kind=kind, opd=opd)
                    rows += _add(writer, splitter.split_of(task.id), row, per, lengths)
                if progress:
                    progress(rows, read["read"])
        shards = writer.close()
    except BaseException:
        writer.abort()
        raise

    dropped = {"filtered": read.get("filtered", 0), **dict(dedup.dropped)}
    for reason in ("invalid_calls", "eval"):
        if read.get(reason):
            dropped[reason] = read[reason]
    if rows == 0:
        raise EmptySelectionError(
            f"no {kind} rows selected from {redact_url(store.url)} with filters "
            f"{ {k: v for k, v in selection.to_dict().items() if v not in (None, [])} } "
            f"(read {read.get('read', 0)} {'trajectories' if kind == 'sft' else 'tasks'}, dropped {dropped}); "
            "nothing was written"
        )
    counts = {
        "rows": rows,
        "read": read.get("read", 0),
        "dropped": dropped,
        **{key: dict(sorted(c.items())) for key, c in per.items()},
    }
    manifest: dict[str, Any] = {
        "format": "kag-dataset",
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "dataset_id": ds_id,
        "run_id": run_id,
        "created_at": created_at,
        "source": {"graph": redact_url(store.url)},
        "filters": selection.to_dict(),
        "dedup": dedup_config.to_dict(),
        "splits": split_config.to_dict(),
        "columns": dataset_schema(kind).names,
        "counts": counts,
        "shards": [{"path": s.path, "split": s.split, "rows": s.rows} for s in shards],
        "lengths": lengths.summary(),
    }
    if kind == "opd":
        manifest["opd"] = opd.to_dict()
    write_card(staging.path, manifest=manifest, lengths=lengths)
    manifest_sha = write_manifest(staging.path, manifest)

    if lineage:
        dataset = Dataset(
            id=ds_id, path=str(out), kind=kind, manifest_sha256=manifest_sha, rows=rows
        )
        run = Run(
            id=run_id,
            kind="export",
            config={
                "dataset_kind": kind,
                "out_dir": str(out),
                **{k: manifest[k] for k in ("filters", "dedup", "splits")},
            },
            started_at=created_at,
            finished_at=_now(),
            status="completed",
            counters={**counts, "seconds": round(time.perf_counter() - t0, 3)},
        )
        try:
            record_lineage(
                store, dataset=dataset, run=run, files=[staging.path / s.path for s in shards]
            )
            staging.publish()
        except BaseException:
            # Undo what was written; a failure here must not hide the error that got us here.
            with contextlib.suppress(Exception):
                remove_lineage(store, dataset_id=ds_id, run_id=run_id)
            raise
    else:
        staging.publish()
    return ExportResult(
        path=out,
        kind=kind,
        rows=rows,
        dataset_id=ds_id,
        run_id=run_id,
        manifest_sha256=manifest_sha,
        counts=counts,
        files=[s.path for s in shards],
    )


def _add(
    writer: ShardedWriter,
    split: str,
    row: dict[str, Any],
    per: dict[str, Counter[str]],
    lengths: LengthStats,
) -> int:
    writer.add(split, row)
    per["split"][split] += 1
    per["domain"][row["domain"]] += 1
    per["verdict"][row["verdict"]] += 1
    lengths.add(n_turns=row["n_turns"], n_tokens=row["n_tokens"])
    return 1
