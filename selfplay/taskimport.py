"""User task sets as Tasks: `kag import tasks` (MetaQA, JSONL, CSV, Parquet, BFCL).

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

BFCL's function-calling sets take their own path (`import_bfcl_tasks`): tool_use tasks with
their functions as Tool nodes, checked by `bfcl_ast@1`; no entity is resolved there.

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

from kag.bfclfiles import BfclRow, answers_file_of, read_bfcl_files
from kag.importer import ImportFileError
from kag.schema import Edge, Run, Task, Tool, Verifier
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

__all__ = [
    "BFCL_TASK_PREFIX",
    "TaskImportReport",
    "import_bfcl_tasks",
    "import_tasks",
    "import_run_id",
    "imported_task_id",
]

RUN_ID_PREFIX = "import:"
#: the id of a task imported from BFCL: this prefix and the row's id (`bfcl:simple_python_0`)
BFCL_TASK_PREFIX = "bfcl:"
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
    #: BFCL rows whose answer key no call can pass, even by BFCL's own checker (not imported)
    unsatisfiable: int = 0
    #: BFCL rows whose every allowed call breaks its tools' JSON schemas (not imported)
    schema_conflicts: int = 0
    #: Tool nodes the functions of a BFCL import became (distinct ids, in the graph before or not)
    tools: int = 0
    #: examples of unsatisfiable and schema-conflicting rows, `FILE line N: why`
    unsolvable_examples: list[str] = field(default_factory=list)

    def counters(self) -> dict[str, Any]:
        """The numbers of the import, as the Run records them (no timing, nothing that changes
        when the same files are imported again); a BFCL import adds `unsatisfiable`,
        `schema_conflicts` and `tools`."""
        out = {
            "lines": self.lines,
            "imported": self.imported,
            "unresolved": self.unresolved,
            "shortcut": self.shortcut,
            "duplicates": self.duplicates,
            "ambiguous": self.ambiguous,
            "answers_unresolved": self.answers_unresolved,
            "per_file": self.per_file,
        }
        if self.tools:
            out.update(
                unsatisfiable=self.unsatisfiable,
                schema_conflicts=self.schema_conflicts,
                tools=self.tools,
            )
        return out

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
    answers: Sequence[str | Path] | None = None,
) -> TaskImportReport:
    """Import task files into a store or `KnowledgeActionGraph` (see the module docstring).

    BFCL files (`format="bfcl"`, or found by their first line) import as tool_use tasks with
    their functions as Tool nodes (see `import_bfcl_tasks`; `answers` names their
    possible-answer files, default `possible_answer/` beside them); all files must then be BFCL's.

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
    formats = [task_format(p, format) if p.is_file() else None for p in files]
    if "bfcl" in formats:
        if any(f != "bfcl" for f in formats):
            raise ValueError(
                "BFCL files import on their own: "
                f"{', '.join(str(p) for p, f in zip(files, formats, strict=True) if f != 'bfcl')} "
                "are not BFCL files"
            )
        if hops is not None:
            raise ValueError("hops= (--hops) does not apply to BFCL files: hops = expected calls")
        return import_bfcl_tasks(
            store,
            files,
            answers=answers,
            family=family,
            domain=domain,
            verifiers=verifiers,
            run_id=run_id,
            batch_size=batch_size,
        )
    if answers is not None:
        raise ValueError("answers= (--answers) is for BFCL files only")
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

    new, updated = _write(store, tasks, verifier_records, run, run_id, batch_size)
    return dataclasses.replace(
        report, new=new, updated=updated, seconds=time.perf_counter() - started
    )


def _write(
    store: GraphStore,
    tasks: dict[str, Task],
    verifier_records: Sequence[Verifier],
    run: Run | None,
    run_id: str,
    batch_size: int,
    tools: Sequence[Tool] = (),
) -> tuple[int, int]:
    """Write what the graph lacks of an import (tools and verifiers, new or changed tasks, their
    PRODUCED_BY edges, the Run); returns (new tasks, updated tasks)."""
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
        head = GraphBatch().extend(fresh_verifiers).extend(tools)
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
    return new, len(changed) - new


def import_bfcl_tasks(
    target: Any,
    paths: str | Path | Sequence[str | Path],
    *,
    answers: Sequence[str | Path] | None = None,
    family: str | None = None,
    domain: str = "",
    verifiers: Sequence[Verifier | str] | None = None,
    run_id: str | None = None,
    batch_size: int = 5_000,
) -> TaskImportReport:
    """Import BFCL function-calling sets (`kag.bfclfiles`) as tool_use tasks, all or nothing.

    | record      | what                                                                     |
    |-------------|--------------------------------------------------------------------------|
    | Tool        | every function of every imported row (`selfplay.tooldefs.plan_tools`:    |
    |             | the same definition is one tool, a name defined differently gets a       |
    |             | content-hash version)                                                    |
    | Task        | id `bfcl:<row id>`, family tool_use, question = the user message(s),     |
    |             | answers = the gold calls as text, hops = expected calls, domain `bfcl`;  |
    |             | props `tools`, `functions`, `ground_truth`, `messages`, `bfcl` (id,      |
    |             | category), `source`, `verifiers` (`selfplay.families.tool_use`)          |
    | CHECKED_BY  | Task -> `bfcl_ast@1`, `tool_call_validity@1` (default: the family suite) |
    | PRODUCED_BY | Task -> the import Run                                                   |

    Every row read is one of: imported, unsatisfiable (even the gold calls fail BFCL's own
    checker: its answer key contradicts its functions), schema_conflict (every call the key
    allows breaks a tool's JSON schema, which `tool_call_validity` rejects) or duplicate.

    >>> r = import_bfcl_tasks(graph, ["bfcl/BFCL_v4_live_simple.json"])  # doctest: +SKIP
    >>> (r.lines, r.imported, r.unsatisfiable, r.schema_conflicts)  # doctest: +SKIP
    (258, 255, 2, 1)
    """
    from selfplay.families import tool_use
    from selfplay.tooldefs import plan_tools

    started = time.perf_counter()
    store: GraphStore = getattr(target, "store", target)
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if family not in (None, tool_use.FAMILY):
        raise ValueError(f"BFCL rows are {tool_use.FAMILY} tasks, not {family!r}")
    rows = read_bfcl_files(files, answers=answers)
    if verifiers is None:
        verifiers = tool_use.suite().records()
    verifier_records, verifier_ids = _verifiers(store, verifiers)
    keys = ("lines", "imported", "unsatisfiable", "schema_conflict", "duplicates")
    counts = {str(p): dict.fromkeys(keys, 0) for p in files}
    kept: list[tuple[BfclRow, list[dict[str, Any]]]] = []
    examples: list[str] = []
    seen: dict[str, tuple[str, str]] = {}  # row id -> (content, where) of its first row
    errors: list[ImportFileError] = []
    n_errors = 0
    for row in rows:
        tally = counts[row.file]
        tally["lines"] += 1
        content = json.dumps(
            [row.messages, row.functions, row.ground_truth], sort_keys=True, default=str
        )
        if row.id in seen:
            first, where = seen[row.id]
            if first != content:
                n_errors += 1
                if len(errors) < MAX_ERRORS:
                    errors.append(
                        ImportFileError(
                            row.file,
                            row.line,
                            "id",
                            f"{row.id!r} is also the id of {where}, a different row",
                        )
                    )
                continue
            tally["duplicates"] += 1
            continue
        seen[row.id] = (content, f"{row.file} line {row.line}")
        problem = tool_use.answer_key_problem(row.functions, row.ground_truth, row.category)
        if problem is not None:
            tally["unsatisfiable" if problem[0] == "unsatisfiable" else "schema_conflict"] += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(
                    f"{row.file} line {row.line} ({row.id}): {problem[0]}: {problem[1]}"
                )
            continue
        kept.append((row, tool_use.expected_calls(row.functions, row.ground_truth)))
        tally["imported"] += 1
    if n_errors:
        raise TaskFileError(errors, n_errors)

    plan = plan_tools(
        store,
        [(f"{row.file}:{row.line}", f) for row, _ in kept for f in row.functions],
        domain=domain,
    )
    tasks: dict[str, Task] = {}
    at = 0
    for row, calls in kept:
        tool_ids = list(dict.fromkeys(plan.ids[at : at + len(row.functions)]))
        at += len(row.functions)
        question = "\n\n".join(
            m["content"] for m in row.messages if m["role"] == "user" and m["content"].strip()
        )
        task = Task(
            id=BFCL_TASK_PREFIX + row.id,
            family=tool_use.FAMILY,
            domain=domain or "bfcl",
            question=question,
            answers=tool_use.answers_of(calls),
            hops=len(row.ground_truth),
            status="active",
            props={
                "tools": tool_ids,
                "functions": list(row.functions),
                "ground_truth": list(row.ground_truth),
                "messages": [dict(m) for m in row.messages],
                "bfcl": {"id": row.id, "category": row.category},
                "source": row.source,
                "verifiers": list(verifier_ids),
            },
        )
        tasks[task.id] = task

    totals = {k: sum(c[k] for c in counts.values()) for k in keys}
    answer_paths = (
        [Path(a) for a in answers] if answers is not None else [answers_file_of(p) for p in files]
    )
    file_hashes = [_sha256(p) for p in files]
    options = {
        "formats": ["bfcl"] * len(files),
        "answers_sha256": [_sha256(p) for p in answer_paths],
        "family": tool_use.FAMILY,
        "domain": domain,
        "verifiers": verifier_ids,
    }
    run_id = run_id or import_run_id(file_hashes, options)
    report = TaskImportReport(
        files=[str(p) for p in files],
        lines=totals["lines"],
        imported=totals["imported"],
        unresolved=0,
        shortcut=0,
        duplicates=totals["duplicates"],
        new=0,
        updated=0,
        ambiguous=0,
        answers_unresolved=0,
        run_id=run_id,
        per_file=counts,
        task_ids=list(tasks),
        unsatisfiable=totals["unsatisfiable"],
        schema_conflicts=totals["schema_conflict"],
        tools=len(set(plan.ids)),
        unsolvable_examples=examples,
    )
    config = {
        "files": report.files,
        "file_sha256": file_hashes,
        "answers": [str(p) for p in answer_paths],
        **options,
    }
    run = _run_record(store, run_id, config, report.counters())
    new, updated = _write(store, tasks, verifier_records, run, run_id, batch_size, plan.records)
    return dataclasses.replace(
        report, new=new, updated=updated, seconds=time.perf_counter() - started
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
