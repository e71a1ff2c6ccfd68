"""Sharded Parquet writing with an all-or-nothing publish.

`Staging(out_dir)` makes a hidden temp directory beside `out_dir` (same file system, so the final
`rename` is atomic); everything is written there and only `publish()` moves it into place. An error,
Ctrl-C or a killed process never leaves a partial dataset at `out_dir`.

`ShardedWriter` streams rows into `data/{split}-{shard:05d}.parquet` (zstd), holding at most one
row group per split in memory.

>>> WriterConfig().shard_rows
100000
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["WriterConfig", "ShardedWriter", "Staging", "ShardInfo", "check_out_dir"]


@dataclass(frozen=True, kw_only=True, slots=True)
class WriterConfig:
    """How rows become files.

    - `row_group_rows` (1024): rows per Parquet row group. Trajectory rows are a few KB, so a group
      is a few MB: small enough for streaming readers and random access, large enough for zstd.
    - `shard_rows` (100,000): rows per file before a new shard starts.
    - `compression` ("zstd") and `compression_level` (3, zstd's default speed/ratio point).
    """

    row_group_rows: int = 1024
    shard_rows: int = 100_000
    compression: str = "zstd"
    compression_level: int | None = 3

    def __post_init__(self) -> None:
        for name in ("row_group_rows", "shard_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class ShardInfo:
    path: str  # relative to the dataset root, e.g. "data/train-00000.parquet"
    split: str
    rows: int


def check_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty directory unless `overwrite` (and then
    only an earlier export, recognised by its `manifest.json`)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output {out_dir} exists and is not a directory")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"output directory {out_dir} is not empty; pass --overwrite (overwrite=True) to replace it"
        )
    # Overwriting deletes the directory, so only ever replace an earlier export.
    if not (out_dir / "manifest.json").is_file():
        raise ValueError(
            f"refusing to overwrite {out_dir}: it is not empty and has no manifest.json, "
            "so it is not an earlier export; choose another directory"
        )


class Staging:
    """A temp directory beside `out_dir` that becomes `out_dir` on `publish()`.

    Use as a context manager: leaving the block without `publish()` (an exception, Ctrl-C)
    deletes the temp directory. A process killed outright leaves only a hidden `.NAME.partial-*`
    directory, never a partial `out_dir`.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).absolute()
        self.overwrite = overwrite
        check_out_dir(self.out_dir, overwrite=overwrite)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir.parent / f".{self.out_dir.name}.partial-{uuid.uuid4().hex[:12]}"
        self.path.mkdir()
        self.published = False

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.published:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def publish(self) -> Path:
        """Move the finished directory into place (replacing `out_dir` when overwriting)."""
        check_out_dir(self.out_dir, overwrite=self.overwrite)  # it may have changed meanwhile
        old = None
        if self.out_dir.exists():
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(self.out_dir, old)
        try:
            os.rename(self.path, self.out_dir)
        except BaseException:
            if old is not None:
                os.rename(old, self.out_dir)
            raise
        self.published = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir


class ShardedWriter:
    """Streams row dicts into per-split Parquet shards under `root/data/`.

    >>> # w = ShardedWriter(root, schema); w.add("train", row); shards = w.close()
    """

    def __init__(
        self, root: Path, schema: pa.Schema, config: WriterConfig = WriterConfig()
    ) -> None:
        self.root = Path(root)
        self.schema = schema
        self.config = config
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self._buffers: dict[str, list[Mapping[str, Any]]] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._shard_index: dict[str, int] = {}
        self._shard_rows: dict[str, int] = {}
        self.shards: list[ShardInfo] = []

    def add(self, split: str, row: Mapping[str, Any]) -> None:
        buf = self._buffers.setdefault(split, [])
        buf.append(row)
        if len(buf) >= self.config.row_group_rows:
            self._flush(split)

    def _open(self, split: str) -> pq.ParquetWriter:
        index = self._shard_index.get(split, -1) + 1
        self._shard_index[split] = index
        self._shard_rows[split] = 0
        rel = f"data/{split}-{index:05d}.parquet"
        self.shards.append(ShardInfo(rel, split, 0))
        writer = pq.ParquetWriter(
            self.root / rel,
            self.schema,
            compression=self.config.compression,
            compression_level=self.config.compression_level,
        )
        self._writers[split] = writer
        return writer

    def _close_shard(self, split: str) -> None:
        writer = self._writers.pop(split)
        writer.close()
        i = max(i for i, s in enumerate(self.shards) if s.split == split)
        self.shards[i] = ShardInfo(self.shards[i].path, split, self._shard_rows[split])

    def _flush(self, split: str) -> None:
        rows = self._buffers.get(split)
        while rows:
            writer = self._writers.get(split) or self._open(split)
            room = self.config.shard_rows - self._shard_rows[split]
            part, rows = rows[:room], rows[room:]
            writer.write_table(
                pa.Table.from_pylist(part, schema=self.schema), row_group_size=len(part)
            )
            self._shard_rows[split] += len(part)
            if self._shard_rows[split] >= self.config.shard_rows:
                self._close_shard(split)
        self._buffers[split] = []

    def close(self) -> list[ShardInfo]:
        """Flush every split and close its file; returns the shards written, sorted by path."""
        for split in list(self._buffers):
            self._flush(split)
        for split in list(self._writers):
            self._close_shard(split)
        return sorted(self.shards, key=lambda s: s.path)

    def abort(self) -> None:
        """Close open files without flushing (the staging directory is discarded anyway)."""
        for writer in self._writers.values():
            with contextlib.suppress(Exception):  # already failing; the staging dir is deleted next
                writer.close()
        self._writers.clear()
