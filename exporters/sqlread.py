"""Batched raw reads for SQL stores: steps as messages, edges and verifications as id pairs.

The store protocol returns validated records, which costs tens of microseconds per step or edge;
an export reads millions of them. On a `SQLStore` the exporter reads the same tables with plain
SQL (tables and columns from `kag.stores.sql_tables`) and builds messages directly. Every other
read (trajectories, tasks, tools, verifiers) still goes through the store protocol, and the tests
check that both readers give identical rows.

>>> is_sql_store(object())
False
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from exporters.select import _CHUNK, _chunks, _Reader
from kag.messages import chat_message
from kag.schema import ToolCall
from kag.stores.base import GraphStore

__all__ = ["SQLReader", "is_sql_store", "step_message"]


def is_sql_store(store: Any) -> bool:
    try:
        from kag.stores.sql import SQLStore
    except ImportError:  # pragma: no cover - the SQL backend ships with kag
        return False
    return isinstance(store, SQLStore)


def step_message(
    role: str,
    content: str | None,
    reasoning: str | None,
    tool_calls: str | None,
    tool_call_id: str | None,
    name: str | None,
) -> dict[str, Any]:
    """The DESIGN section 4 message of a raw `steps` row (the same as `Step.to_message()`)."""
    calls = json.loads(tool_calls) if tool_calls and tool_calls != "[]" else None
    return chat_message(
        role,
        content,
        reasoning=reasoning,
        tool_calls=[ToolCall(**c).to_message() for c in calls or ()],
        tool_call_id=tool_call_id,
        name=name,
    )


class SQLReader(_Reader):
    """`_Reader` whose bulk reads are raw SQL on the store's engine."""

    def __init__(self, store: GraphStore) -> None:
        super().__init__(store)
        self.engine = store.engine  # type: ignore[attr-defined]

    def _rows(self, sql: str, ids: Sequence[str], *head: Any) -> Iterator[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(ids)), _CHUNK):
                marks = ",".join("?" * len(chunk))
                yield from conn.exec_driver_sql(sql.format(marks=marks), (*head, *chunk)).fetchall()

    def steps(self, traj_ids: Sequence[str]) -> dict[str, list[tuple[str, int, dict[str, Any]]]]:
        out: dict[str, list[tuple[str, int, dict[str, Any]]]] = defaultdict(list)
        sql = (
            "SELECT trajectory_id, id, idx, role, content, reasoning, tool_calls, tool_call_id, name "
            "FROM steps WHERE trajectory_id IN ({marks})"
        )
        for tid, sid, idx, *message in self._rows(sql, traj_ids):
            out[tid].append((sid, idx, step_message(*message)))
        return out

    def subjects(self, subject_ids: Sequence[str]) -> Iterator[tuple[str, str]]:
        yield from self._rows(
            "SELECT id, subject_id FROM verifications WHERE subject_id IN ({marks})", subject_ids
        )

    def edge_map(
        self, kind: str, *, source: Sequence[str] = (), target: Sequence[str] = ()
    ) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        if target:
            sql = "SELECT target, source FROM edges WHERE kind = ? AND target IN ({marks})"
            ids = target
        else:
            sql = "SELECT source, target FROM edges WHERE kind = ? AND source IN ({marks})"
            ids = source
        for key, value in self._rows(sql, ids, kind):
            out[key].append(value)
        return out
