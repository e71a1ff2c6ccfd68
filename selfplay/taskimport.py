"""User task sets as Tasks: `kag import tasks` (MetaQA, JSONL, CSV, Parquet).

`import_tasks(graph, ["metaqa/2-hop/vanilla/qa_dev.txt"])` reads and checks every row of every
file (`kag.taskfiles.read_task_files`), resolves topic, path and answer entities against the graph
(`kag.taskfiles.resolve_entities`: exact id, then exact name), and writes, only when all of it is
good, the tasks as proposed ones are written (`selfplay.writeback.task_batch`):

| record                 | what                                                                    |
|------------------------|-------------------------------------------------------------------------|
| Task                   | question with `[X]` as `"X"`, answers, answer_ids, hops, family, domain; |
|                        | path `{"entities": [topic, ...gold path]}`; props `start_name`, `topic`  |
|                        | (as the row names it), `source` (file and line), `verifiers`,            |
|                        | `constraints` when given (their `instructions`, output constraints of    |
|                        | `selfplay.constraints`, must read, else the row is an error)             |
| SUPPORTS               | topic entity and every gold-path entity -> Task                          |
| CHECKED_BY             | Task -> every verifier (default: `VerifierSuite.default()`, persisted)   |
| PRODUCED_BY            | Task -> the import Run (kind "import", config and counters of the import)|

Every line read is one of: imported, unresolved (its topic or a path entity names no entity),
shortcut (the question names an answer, `selfplay.answers.leaked_answer`: the `no_shortcut`
verifier could never accept it, so it is counted and not imported) or duplicate (the same task as
an earlier line). Task ids are the row's own `id`, else `task:` + a hash of family, question,
topic id and answers; the Run id is `import:` + a hash of the files' contents and the options,
so importing the same files again writes nothing.

>>> report = import_tasks(graph, ["metaqa/1-hop/vanilla/qa_dev.txt"])  # doctest: +SKIP
>>> report.lines == report.imported + report.unresolved + report.shortcut + report.duplicates  # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kag.importer import ImportFileError
from kag.schema import Edge, Run, Task, Verifier
from kag.stores.base import GraphBatch, GraphStore
from kag.taskfiles import (
    MAX_ERRORS,
    EntityMatch,
    TaskFileError,
    TaskRow,
    read_task_files,
    resolve_entities,
    task_format,
)
from selfplay.answers import leaked_answer
from selfplay.constraints import parse_constraints
from selfplay.proposer import TASK_ID_PREFIX
from selfplay.writeback import task_batch

__all__ = ["TaskImportReport", "import_tasks", "import_run_id", "imported_task_id"]

RUN_ID_PREFIX = "import:"
#: examples of unresolved mentions and shortcuts kept in the report
MAX_EXAMPLES = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskImportReport:
    """What an import did. `lines = imported + unresolved + shortcut + duplicates`, over all
    files and in each entry of `per_file`.

    `imported` counts the tasks of this import (in `task_ids`, in file order), `new` those the
    graph did not hold before and `updated` those it held differently; `ambiguous` counts the
    imported tasks whose topic name several entities share (the smallest id was taken);
    `answers_unresolved` the answers of imported tasks that name no entity (they stay answers,
    without an `answer_ids` entry). `run_id` is the import Run every task is PRODUCED_BY.
    """

    files: list[str]
    lines: int
    imported: int
    unresolved: int
    shortcut: int
    duplicates: int
    new: int
    updated: int
    ambiguous: int
    answers_unresolved: int
    run_id: str
    per_file: dict[str, dict[str, int]]
    unresolved_examples: list[str] = field(default_factory=list)
    shortcut_examples: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counters(self) -> dict[str, Any]:
        """The numbers of the import, as the Run records them (no timing, nothing that changes
        when the same files are imported again)."""
        return {
            "lines": self.lines,
            "imported": self.imported,
            "unresolved": self.unresolved,
            "shortcut": self.shortcut,
            "duplicates": self.duplicates,
            "ambiguous": self.ambiguous,
            "answers_unresolved": self.answers_unresolved,
            "per_file": self.per_file,
        }

    def to_dict(self, *, task_ids: bool = True) -> dict[str, Any]:
        out = asdict(self)
        if not task_ids:
            del out["task_ids"]
        return out


def imported_task_id(family: str, question: str, topic_id: str, answers: Sequence[str]) -> str:
    """The id of an imported task that has none of its own: `task:` + 32 hex digits of a hash
    of what makes it the same task (answer order does not matter).

    >>> imported_task_id("search", 'what does "Tom Cullen" act in', "Tom Cullen", ["Weekend"])
    'task:1c82b5e4757c79fd218e3fd337c3f9b1'
    """
    key = json.dumps([family, question, topic_id, sorted(set(answers))], ensure_ascii=False)
    return TASK_ID_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def import_run_id(file_hashes: Sequence[str], options: dict[str, Any]) -> str:
    """The id of an import Run: `import:` + 24 hex digits of a hash of the files' contents (in
    order) and the import options, so the same import gets the same Run.

    >>> import_run_id(["ab" * 32], {"family": None})
    'import:0ad77ca1e6aa731241828ec9'
    """
    key = json.dumps({"files": list(file_hashes), **options}, sort_keys=True)
    return RUN_ID_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _edge(kind: str, source_kind: str, source: str, target_kind: str, target: str) -> Edge:
    return Edge(
        kind=kind, source_kind=source_kind, source=source, target_kind=target_kind, target=target
    )


def import_tasks(
    target: Any,
    paths: str | Path | Sequence[str | Path],
    *,
    family: str | None = None,
    format: str | None = None,  # noqa: A002 - the user-facing name
    hops: int | None = None,
    domain: str = "",
    verifiers: Sequence[Verifier | str] | None = None,
    run_id: str | None = None,
    batch_size: int = 5_000,
) -> TaskImportReport:
    """Import task files into a store or `KnowledgeActionGraph` (see the module docstring).

    `family`, `hops` and `domain` are the defaults of rows that do not give their own; a task's
    domain is its row's, else `domain`, else its topic entity's. `verifiers`: the Verifier records
    (written too) or ids (which must be in the graph) every task is CHECKED_BY; None takes
    `VerifierSuite.default()`. `run_id` names the import Run (default: `import_run_id`); a Run of
    that id with other settings is an error. Bad rows raise `TaskFileError`
    (`FILE line N, field 'F': what is wrong`, the first few), a missing file `FileNotFoundError`,
    and nothing is written. On SQL the write is one transaction; on Neo4j batches of
    `batch_size` tasks commit one by one, and rerunning the same import completes it exactly.

    >>> r = import_tasks(graph, ["tasks.jsonl"], family="search")  # doctest: +SKIP
    >>> (r.lines, r.imported, r.unresolved, r.run_id)  # doctest: +SKIP
    (3, 3, 0, 'import:...')
    """
    started = time.perf_counter()
    store: GraphStore = getattr(target, "store", target)
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = read_task_files(files, format=format, family=family, hops=hops, domain=domain)
    verifier_records, verifier_ids = _verifiers(store, verifiers)

    keys = {r.topic for r in rows if r.topic is not None}
    for r in rows:
        keys.update(r.answers)
        if r.path is not None:
            keys.update(r.path["entities"])
    found = resolve_entities(store, keys)

    counts = {
        str(p): dict.fromkeys(("lines", "imported", "unresolved", "shortcut", "duplicates"), 0)
        for p in files
    }
    tasks: dict[str, Task] = {}
    unresolved_examples: dict[str, None] = {}
    shortcut_examples: list[str] = []
    errors: list[ImportFileError] = []
    n_errors = ambiguous = answers_unresolved = 0
    for row in rows:
        tally = counts[row.file]
        tally["lines"] += 1
        try:  # output constraints must read before a task holds them
            parse_constraints(row.constraints)
        except ValueError as err:
            n_errors += 1
            if len(errors) < MAX_ERRORS:
                errors.append(ImportFileError(row.file, row.line, "constraints", str(err)))
            continue
        try:
            task, missing = _task(row, found, verifier_ids)
        except _PathMismatch as err:
            n_errors += 1
            if len(errors) < MAX_ERRORS:
                errors.append(ImportFileError(row.file, row.line, "path", str(err)))
            continue
        if task is None:
            tally["unresolved"] += 1
            if len(unresolved_examples) < MAX_EXAMPLES:
                unresolved_examples[missing] = None
            continue
        leaked = leaked_answer(task.question, task.answers)
        if leaked is not None:
            tally["shortcut"] += 1
            if len(shortcut_examples) < MAX_EXAMPLES:
                shortcut_examples.append(f"{row.file} line {row.line}: answer {leaked!r}")
            continue
        if task.id in tasks:
            first = tasks[task.id]
            if row.id is not None and _content(first) != _content(task):
                # two rows that give one id to different tasks: the file is wrong, not repeated
                n_errors += 1
                if len(errors) < MAX_ERRORS:
                    where = f"{first.props['source']['file']} line {first.props['source']['line']}"
                    errors.append(
                        ImportFileError(
                            row.file,
                            row.line,
                            "id",
                            f"{row.id!r} is also the id of {where}, a different task",
                        )
                    )
                continue
            tally["duplicates"] += 1
            continue
        tasks[task.id] = task
        tally["imported"] += 1
        ambiguous += found[task.props["topic"]].ambiguous
        answers_unresolved += sum(a not in found for a in task.answers)
    if n_errors:
        raise TaskFileError(errors, n_errors)

    totals = {
        k: sum(c[k] for c in counts.values())
        for k in ("lines", "imported", "unresolved", "shortcut", "duplicates")
    }
    file_hashes = [_sha256(p) for p in files]
    options = {
        "formats": [task_format(p, format) for p in files],
        "family": family,
        "hops": hops,
        "domain": domain,
        "verifiers": verifier_ids,
    }
    run_id = run_id or import_run_id(file_hashes, options)
    report = TaskImportReport(
        files=[str(p) for p in files],
        lines=totals["lines"],
        imported=totals["imported"],
        unresolved=totals["unresolved"],
        shortcut=totals["shortcut"],
        duplicates=totals["duplicates"],
        new=0,
        updated=0,
        ambiguous=ambiguous,
        answers_unresolved=answers_unresolved,
        run_id=run_id,
        per_file=counts,
        unresolved_examples=list(unresolved_examples),
        shortcut_examples=shortcut_examples,
        task_ids=list(tasks),
    )
    config = {"files": report.files, "file_sha256": file_hashes, **options}
    run = _run_record(store, run_id, config, report.counters())

    # ---- what the graph lacks: new or changed tasks, missing PRODUCED_BY edges, the Run
    ids = list(tasks)
    existing: dict[str, Task] = {}
    for a in range(0, len(ids), 5_000):
        for t in store.get_nodes("Task", ids[a : a + 5_000]):
            existing[t.id] = t  # type: ignore[assignment]
    changed = [t for t in tasks.values() if t.id not in existing or _differs(existing[t.id], t)]
    linked = {e.source for e in store.edges("PRODUCED_BY", target=run_id)} if existing else set()
    done = linked | {t.id for t in changed}
    unlinked = [tid for tid in ids if tid in existing and tid not in done]
    stored_verifiers = {
        v.id: v for v in store.get_nodes("Verifier", [v.id for v in verifier_records])
    }
    fresh_verifiers = [
        v
        for v in verifier_records
        if v.id not in stored_verifiers or stored_verifiers[v.id].to_dict() != v.to_dict()
    ]

    def batches() -> Iterator[GraphBatch]:
        # the Run comes first (PRODUCED_BY needs it) as "running", and is completed last: on
        # Neo4j, where batches commit one by one, an import cut short says so
        head = GraphBatch().extend(fresh_verifiers)
        if run is not None:
            head.add(dataclasses.replace(run, status="running", finished_at=None))
        if len(head):
            yield head
        for a in range(0, len(changed), batch_size):
            yield task_batch(changed[a : a + batch_size], run_id=run_id)
        for a in range(0, len(unlinked), batch_size * 4):
            yield GraphBatch(
                edges=[
                    _edge("PRODUCED_BY", "Task", tid, "Run", run_id)
                    for tid in unlinked[a : a + batch_size * 4]
                ]
            )
        if run is not None:
            yield GraphBatch().add(run)

    store.write_many(batches())
    new = sum(t.id not in existing for t in changed)
    return dataclasses.replace(
        report, new=new, updated=len(changed) - new, seconds=time.perf_counter() - started
    )


class _PathMismatch(ValueError):
    """A row's gold path does not start at its topic entity."""


def _task(
    row: TaskRow, found: dict[str, EntityMatch], verifier_ids: list[str]
) -> tuple[Task | None, str]:
    """The Task of a row, or (None, the first name that resolved to no entity)."""
    path_ids: list[str] = []
    if row.path is not None:
        for name in row.path["entities"]:
            if name not in found:
                return None, name
            path_ids.append(found[name].id)
    topic_key = row.topic if row.topic is not None else row.path["entities"][0]  # type: ignore[index]
    topic = found.get(topic_key)
    if topic is None:
        return None, topic_key
    if path_ids and path_ids[0] != topic.id:
        raise _PathMismatch(
            f"starts at {row.path['entities'][0]!r} ({path_ids[0]}), not at the topic entity "  # type: ignore[index]
            f"{topic_key!r} ({topic.id}); a gold path starts at the topic"
        )
    path: dict[str, Any] = {"entities": path_ids or [topic.id]}
    if row.path is not None and "relations" in row.path:
        path["relations"] = list(row.path["relations"])
    answer_ids = tuple(dict.fromkeys(found[a].id for a in row.answers if a in found))
    props: dict[str, Any] = {
        "start_name": topic.name,
        "topic": topic_key,
        "source": row.source,
        "verifiers": list(verifier_ids),
    }
    if row.constraints is not None:
        props["constraints"] = dict(row.constraints)
    task_id = row.id or imported_task_id(row.family, row.question, topic.id, row.answers)
    # every field was checked when the row was read (`read_task_files`): a 40k-line MetaQA set
    # skips the JSON round trip a validated Task makes of its path and props
    task = Task.from_trusted(
        {
            "id": task_id,
            "family": row.family,
            "domain": row.domain or topic.domain,
            "question": row.question,
            "answers": row.answers,
            "answer_ids": answer_ids,
            "hops": row.hops,
            "status": "active",
            "path": path,
            "props": props,
        }
    )
    return task, ""  # type: ignore[return-value]


def _content(task: Task) -> tuple[Any, ...]:
    """What makes two rows the same task: question, answers and evidence path."""
    return (task.family, task.question, sorted(task.answers), task.path)


_TASK_FIELDS = tuple(f.name for f in dataclasses.fields(Task))


def _differs(stored: Task, task: Task) -> bool:
    """Whether the graph holds `task` differently (field by field: cheaper than `to_dict`)."""
    return any(getattr(stored, f) != getattr(task, f) for f in _TASK_FIELDS)


def _verifiers(
    store: GraphStore, verifiers: Sequence[Verifier | str] | None
) -> tuple[list[Verifier], list[str]]:
    """(records to write, ids every task is CHECKED_BY); given ids must be in the graph."""
    if verifiers is None:
        from selfplay.rewards import VerifierSuite

        records = VerifierSuite.default().records()
        return records, [v.id for v in records]
    records = [v for v in verifiers if isinstance(v, Verifier)]
    ids = list(dict.fromkeys(v.id if isinstance(v, Verifier) else v for v in verifiers))
    named = [v for v in ids if v not in {r.id for r in records}]
    known = {n.id for n in store.get_nodes("Verifier", named)}
    missing = [v for v in named if v not in known]
    if missing:
        raise ValueError(
            f"verifier(s) {missing} are not in the graph {store.url}; persist them first "
            "(VerifierSuite.persist) or pass Verifier records"
        )
    return records, ids


def _run_record(
    store: GraphStore, run_id: str, config: dict[str, Any], counters: dict[str, Any]
) -> Run | None:
    """The import Run to write, or None when the graph holds it as it is."""
    stored = store.get_nodes("Run", [run_id])
    if stored:
        old: Run = stored[0]  # type: ignore[assignment]
        if old.kind != "import":
            raise ValueError(f"run {run_id!r} exists and is a {old.kind!r} run, not an import")
        # the files' contents and the options make the import; the same files may move
        same = {k: v for k, v in json.loads(json.dumps(config)).items() if k != "files"}
        if {k: v for k, v in old.config.items() if k != "files"} != same:
            raise ValueError(
                f"run {run_id!r} exists with other files or settings; pick another run id"
            )
        if dict(old.counters) == json.loads(json.dumps(counters)) and old.status == "completed":
            return None
    now = _now()
    return Run(
        id=run_id,
        kind="import",
        config=config,
        started_at=now,
        finished_at=now,
        status="completed",
        counters=counters,
    )
