"""Task files: user task sets read and checked row by row, and their entity mentions resolved.

| format    | rows                                                        | chosen by                    |
|-----------|-------------------------------------------------------------|------------------------------|
| `jsonl`   | one JSON object per line                                    | `.jsonl`, `.json`, `.ndjson` |
| `csv`     | a header naming the columns, then RFC 4180 rows             | `.csv`                       |
| `parquet` | one row per task                                            | `.parquet`, `.pq`            |
| `metaqa`  | MetaQA's `question<TAB>answer1|answer2`, topic in `[...]`   | `.txt` whose first line has a tab and a `[mention]` |
| `bfcl`    | BFCL function-calling rows (`kag.bfclfiles`)               | `.json`/`.jsonl` whose first line has `question` and `function` lists |

The columns (keys) of jsonl, csv and parquet rows are `TASK_COLUMNS`: `question` and `answers`
(a list of strings; in CSV a `|`-separated text or a JSON list) are required; `topic` or
`topic_entity` names the topic entity by id or name (default: the first `[bracketed]` mention of
the question, else the first entity of `path`); `id`, `path` (the gold path
`{"entities": [...], "relations": [...]}`, or its JSON text), `hops`, `family`, `domain` and
`constraints` (a JSON object or its text) are optional. Any other column is an error.

| function / class     | what it gives                                                            |
|----------------------|--------------------------------------------------------------------------|
| `read_task_files`    | every row of every file as a checked `TaskRow`, or `TaskFileError`       |
| `task_format`        | the format of a file (`format=` or its extension and first line)         |
| `is_bfcl_file`       | whether a JSON Lines file holds BFCL function-calling rows               |
| `hops_of_directory`  | the hop count of an `N-hop` directory above a file (MetaQA's layout)     |
| `quote_mentions`     | `[X]` -> `"X"` in a question, and the first mention                      |
| `resolve_entities`   | entity ids or names -> `EntityMatch` (exact id first, then exact name)   |

Nothing here writes to a graph; `selfplay.taskimport.import_tasks` turns the rows into Tasks.

>>> quote_mentions("what movies did [Temuera Morrison] act in")
('what movies did "Temuera Morrison" act in', 'Temuera Morrison')
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kag.importer import ImportFileError
from kag.schema import TASK_FAMILIES, Entity, SchemaError, check_id, check_relation_name
from kag.stores.base import GraphStore

__all__ = [
    "TASK_FORMATS",
    "TASK_COLUMNS",
    "EntityMatch",
    "TaskFileError",
    "TaskRow",
    "hops_of_directory",
    "is_bfcl_file",
    "quote_mentions",
    "read_task_files",
    "resolve_entities",
    "task_format",
]

TASK_FORMATS = ("jsonl", "csv", "parquet", "metaqa", "bfcl")
TASK_COLUMNS = (
    "id",
    "question",
    "answers",
    "topic",
    "topic_entity",
    "path",
    "hops",
    "family",
    "domain",
    "constraints",
)
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_MENTION = re.compile(r"\[([^\[\]]+)\]")
_HOP_DIR = re.compile(r"^(\d+)-hop$")
#: errors kept (and shown) of a file set with bad rows; the rest are only counted
MAX_ERRORS = 5


class TaskFileError(ValueError):
    """Rows of task files are bad; the message names file, line and field of the first few.

    `errors` holds those first `ImportFileError`s, `count` the number of bad rows in all.
    """

    def __init__(self, errors: Sequence[ImportFileError], count: int) -> None:
        self.errors, self.count = list(errors), count
        text = "; ".join(str(e) for e in self.errors)
        if count > len(self.errors):
            text += f"; and {count - len(self.errors)} more bad row(s)"
        super().__init__(text + "; nothing imported")


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRow:
    """One checked row of a task file, before its entities are resolved.

    `question` has its `[X]` mentions quoted (`"X"`); `topic` is the id or name the row gives
    (its `topic`/`topic_entity`, else its first mention, else None when only `path` names
    entities); `path` holds the gold path as the file gives it (entity ids or names).
    """

    file: str
    line: int
    question: str
    answers: tuple[str, ...]
    topic: str | None = None
    id: str | None = None
    path: Mapping[str, Any] | None = None
    hops: int = 0
    family: str = "search"
    domain: str = ""
    constraints: Mapping[str, Any] | None = None

    @property
    def source(self) -> dict[str, Any]:
        """Where the row came from: `{"file": ..., "line": ...}`."""
        return {"file": self.file, "line": self.line}


@dataclass(frozen=True, kw_only=True, slots=True)
class EntityMatch:
    """The entity an id or name resolved to; `candidates` counts the entities of that exact
    name (1 when it matched an id), so `candidates > 1` marks an ambiguous name."""

    id: str
    name: str
    domain: str
    candidates: int = 1

    @property
    def ambiguous(self) -> bool:
        return self.candidates > 1


def quote_mentions(question: str) -> tuple[str, str | None]:
    """The question with every `[X]` as `"X"` (the proposer quotes start names the same way),
    and the text of its first mention (None without one).

    >>> quote_mentions("[Joe Thomas] appears in which movies")
    ('"Joe Thomas" appears in which movies', 'Joe Thomas')
    >>> quote_mentions("no mention here")
    ('no mention here', None)
    """
    first = _MENTION.search(question)
    if first is None:
        return question, None
    return _MENTION.sub(lambda m: f'"{m.group(1)}"', question), first.group(1)


def task_format(path: str | Path, format: str | None = None) -> str:  # noqa: A002
    """The format of a task file: `format` when given, else by extension; a `.txt` file is
    `metaqa` when its first non-blank line holds a tab and a `[mention]`.

    >>> task_format("tasks.jsonl"), task_format("x.bin", "csv")
    ('jsonl', 'csv')
    """
    path = Path(path)
    if format is not None:
        if format not in TASK_FORMATS:
            raise ValueError(
                f"unknown task format {format!r}; choose from {', '.join(TASK_FORMATS)}"
            )
        return format
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt == "jsonl" and path.is_file() and is_bfcl_file(path):
        return "bfcl"
    if fmt is not None:
        return fmt
    if path.suffix.lower() == ".txt" and path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            first = next((line for line in f if line.strip()), "")
        if "\t" in first and _MENTION.search(first.partition("\t")[0]):
            return "metaqa"
    raise ValueError(
        f"cannot tell the task format of {path} from its name; pass format= (--format) "
        f"one of {', '.join(TASK_FORMATS)}"
    )


def is_bfcl_file(path: str | Path) -> bool:
    """Whether a file's first non-blank line is a BFCL row (read by `kag.bfclfiles`): an object
    with a `question` list and a `function` list (BFCL's multi-turn rows name `involved_classes`
    instead, and are refused there with a message that says so)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = next((line for line in f if line.strip()), "")
        data = json.loads(first)
    except (OSError, json.JSONDecodeError):
        return False
    return (
        isinstance(data, dict)
        and isinstance(data.get("question"), list)
        and (isinstance(data.get("function"), list) or "involved_classes" in data)
    )


def hops_of_directory(path: str | Path) -> int | None:
    """The hop count an `N-hop` directory above a file gives (MetaQA's layout), else None.

    >>> hops_of_directory("metaqa/2-hop/vanilla/qa_dev.txt")
    2
    """
    for part in reversed(Path(path).absolute().parent.parts):
        m = _HOP_DIR.match(part)
        if m:
            return int(m.group(1))
    return None


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, kw_only=True, slots=True)
class _Defaults:
    family: str | None
    hops: int | None
    dir_hops: int | None
    domain: str


class _Errors:
    """The first `MAX_ERRORS` bad rows and how many there are."""

    def __init__(self) -> None:
        self.kept: list[ImportFileError] = []
        self.count = 0

    def add(self, err: ImportFileError) -> None:
        self.count += 1
        if len(self.kept) < MAX_ERRORS:
            self.kept.append(err)

    def raise_any(self) -> None:
        if self.count:
            raise TaskFileError(self.kept, self.count)


class _RowError(Exception):
    """A field of one row is wrong (turned into an `ImportFileError` with the row's place)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def read_task_files(
    paths: str | Path | Sequence[str | Path],
    *,
    format: str | None = None,  # noqa: A002 - the user-facing name
    family: str | None = None,
    hops: int | None = None,
    domain: str = "",
) -> list[TaskRow]:
    """Every row of every file, checked; `TaskFileError` names the first bad rows, and nothing
    is returned unless every row of every file is good.

    `family`, `hops` and `domain` are the defaults of rows that do not give their own. A row's
    hop count is its `hops`, else the number of relations of its `path`, else `hops`, else the
    `N-hop` directory the file lies in (MetaQA's layout), else 0 (a MetaQA file must get one).
    Blank lines are skipped and not counted.

    >>> rows = read_task_files(["metaqa/1-hop/vanilla/qa_dev.txt"])  # doctest: +SKIP
    >>> rows[0].question, rows[0].answers[:1], rows[0].topic, rows[0].hops  # doctest: +SKIP
    ('what movies did "Temuera Morrison" act in', ('Once Were Warriors',), 'Temuera Morrison', 1)
    """
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not files:
        raise ValueError("no task files given")
    if family is not None and family not in TASK_FAMILIES:
        raise ValueError(f"unknown task family {family!r}; choose from {', '.join(TASK_FAMILIES)}")
    if hops is not None and (isinstance(hops, bool) or not isinstance(hops, int) or hops < 0):
        raise ValueError(f"hops must be an integer >= 0, got {hops!r}")
    formats = []
    for path in files:
        if path.is_dir():
            raise IsADirectoryError(f"task file {path} is a directory; name the files in it")
        if not path.is_file():
            raise FileNotFoundError(f"task file {path} does not exist")
        formats.append(task_format(path, format))
    if "bfcl" in formats:
        raise ValueError(
            f"{files[formats.index('bfcl')]} is a BFCL file: read it with "
            "kag.bfclfiles.read_bfcl_files (`kag import tasks` does)"
        )
    errors = _Errors()
    rows: list[TaskRow] = []
    for path, fmt in zip(files, formats, strict=True):
        defaults = _Defaults(
            family=family, hops=hops, dir_hops=hops_of_directory(path), domain=domain
        )
        before = len(rows)
        try:
            for line, data in _records(path, fmt):
                try:
                    rows.append(_row(path, line, data, fmt, defaults))
                except _RowError as err:
                    errors.add(ImportFileError(path, line, err.field, err.message))
        except ImportFileError as err:  # the file as a whole is unreadable
            errors.add(err)
            continue
        if len(rows) == before and not errors.count:
            errors.add(ImportFileError(path, None, None, "holds no tasks"))
    errors.raise_any()
    return rows


def _records(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """(line or row number, raw record) of a file: a dict (jsonl, csv, parquet) or a line."""
    if fmt == "parquet":
        yield from _parquet_records(path)
        return
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ImportFileError(path, None, None, f"is not valid UTF-8 ({err.reason})") from None
    if fmt == "csv":
        yield from _csv_records(path, text)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if fmt == "metaqa":
            yield number, line
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            yield number, _RowError(None, f"is not valid JSON: {err.msg}")
            continue
        yield number, data


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    # newline="": a quoted field may hold line breaks, and the reader counts lines itself
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    end = 0
    for fields in reader:
        # a row is named by its first line (`line_num` is its last when a field spans lines)
        number, end = end + 1, reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip() for f in fields]
            _check_columns(path, number, header)
            continue
        if len(fields) != len(header):
            yield (
                number,
                _RowError(None, f"has {len(fields)} fields, the header names {len(header)}"),
            )
            continue
        # an empty cell is a missing value; answers, path, hops and constraints are text here
        yield number, {k: v for k, v in zip(header, fields, strict=True) if v != ""}


def _parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise ImportFileError(path, None, None, f"is not a readable Parquet file: {err}") from None
    _check_columns(path, None, pf.schema_arrow.names)
    number = 0
    for batch in pf.iter_batches(batch_size=10_000):
        for data in batch.to_pylist():
            number += 1
            yield number, {k: v for k, v in data.items() if v is not None}


def _check_columns(path: Path, line: int | None, names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in TASK_COLUMNS]
    if unknown:
        raise ImportFileError(
            path,
            line,
            unknown[0],
            f"unknown column; task files have the columns {', '.join(TASK_COLUMNS)}",
        )
    for needed in ("question", "answers"):
        if needed not in names:
            raise ImportFileError(path, line, needed, "column is missing")


def _row(path: Path, line: int, data: Any, fmt: str, defaults: _Defaults) -> TaskRow:
    if isinstance(data, _RowError):
        raise data
    if fmt == "metaqa":
        return _metaqa_row(path, line, data, defaults)
    if not isinstance(data, dict):
        raise _RowError(None, f"must be a JSON object, got {type(data).__name__}")
    from_csv = fmt == "csv"
    unknown = [k for k in data if k not in TASK_COLUMNS]
    if unknown:
        raise _RowError(
            unknown[0], f"unknown key; task rows have the keys {', '.join(TASK_COLUMNS)}"
        )
    question = _text(data, "question", required=True)
    answers = _answers(data.get("answers"), from_csv)
    quoted, mention = quote_mentions(question)
    if "topic" in data and "topic_entity" in data:
        raise _RowError("topic_entity", "give one of topic and topic_entity, not both")
    topic_key = "topic" if "topic" in data else "topic_entity"
    topic = _text(data, topic_key) or mention
    path_value = _path(data.get("path"))
    if topic is None and path_value is None:
        raise _RowError(
            "topic",
            "is missing: give topic (an entity id or name), a [bracketed] mention in the "
            "question, or a path",
        )
    if topic is not None:
        _id_like(topic, topic_key)
    row_id = _text(data, "id")
    if row_id is not None:
        _id_like(row_id, "id")
    row_hops = _hops(data.get("hops"), from_csv)
    n_relations = len(path_value["relations"]) if path_value and "relations" in path_value else None
    if row_hops is not None and n_relations is not None and row_hops != n_relations:
        raise _RowError("hops", f"is {row_hops}, but the path has {n_relations} relation(s)")
    family = _text(data, "family") or defaults.family or "search"
    if family not in TASK_FAMILIES:
        raise _RowError("family", f"{family!r} is not one of {', '.join(TASK_FAMILIES)}")
    return TaskRow(
        file=str(path),
        line=line,
        question=quoted,
        answers=answers,
        topic=topic,
        id=row_id,
        path=path_value,
        hops=_first_not_none(row_hops, n_relations, defaults.hops, defaults.dir_hops, 0),
        family=family,
        domain=_text(data, "domain") or defaults.domain,
        constraints=_constraints(data.get("constraints")),
    )


def _metaqa_row(path: Path, line: int, text: str, defaults: _Defaults) -> TaskRow:
    question, tab, answers_text = text.partition("\t")
    if not tab:
        raise _RowError(None, "expected question<TAB>answer1|answer2, found no tab")
    if not question.strip():
        raise _RowError("question", "is empty")
    quoted, mention = quote_mentions(question)
    if mention is None:
        raise _RowError("question", "has no [bracketed] topic entity mention")
    _id_like(mention, "question")
    answers = _answer_list(answers_text.split("|"))
    hops = _first_not_none(defaults.hops, defaults.dir_hops)
    if hops is None:
        raise _RowError(
            "hops",
            "is unknown: put the file under an N-hop directory (MetaQA's layout) or pass "
            "hops= (--hops)",
        )
    return TaskRow(
        file=str(path),
        line=line,
        question=quoted,
        answers=answers,
        topic=mention,
        hops=hops,
        family=defaults.family or "search",
        domain=defaults.domain,
    )


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _text(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise _RowError(key, "is missing")
        return None
    if not isinstance(value, str):
        raise _RowError(key, f"must be a string, got {type(value).__name__} {value!r:.60}")
    if not value.strip():
        if required:
            raise _RowError(key, "is empty")
        return None
    return value


def _id_like(value: str, field: str) -> None:
    try:
        check_id(value, what=field)
    except SchemaError as err:
        raise _RowError(field, str(err)) from None


def _answers(value: Any, from_csv: bool) -> tuple[str, ...]:
    if value is None:
        raise _RowError("answers", "is missing")
    if from_csv and isinstance(value, str):
        listed = _json_or_none(value) if value.lstrip().startswith("[") else None
        if isinstance(listed, list) and all(isinstance(a, str) for a in listed):
            return _answer_list(listed)
        return _answer_list(value.split("|"))
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise _RowError("answers", f"must be a list of strings, got {value!r:.80}")
    return _answer_list(value)


def _answer_list(items: Iterable[str]) -> tuple[str, ...]:
    items = list(items)
    if not items:
        raise _RowError("answers", "is empty: a task needs at least one answer")
    for k, item in enumerate(items):
        if not item.strip():
            raise _RowError("answers", f"answer {k + 1} is empty")
    return tuple(dict.fromkeys(items))


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _json_field(value: Any, field: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise _RowError(field, f"is not valid JSON: {err.msg}") from None


def _path(value: Any) -> dict[str, list[str]] | None:
    if value is None:
        return None
    value = _json_field(value, "path")
    if not isinstance(value, dict):
        raise _RowError("path", 'must be an object {"entities": [...], "relations": [...]}')
    unknown = sorted(set(value) - {"entities", "relations"})
    if unknown:
        raise _RowError("path", f"has unknown key(s) {unknown}; it holds entities and relations")
    entities = value.get("entities")
    if not isinstance(entities, list) or not entities:
        raise _RowError("path", "entities must be a non-empty list of entity ids or names")
    for e in entities:
        if not isinstance(e, str):
            raise _RowError("path", f"entities must be strings, got {e!r:.60}")
        _id_like(e, "path")
    out = {"entities": list(entities)}
    relations = value.get("relations")
    if relations is not None:
        if not isinstance(relations, list) or len(relations) != len(entities) - 1:
            raise _RowError(
                "path",
                f"relations must be a list of {len(entities) - 1} relation name(s), one per "
                f"hop between its {len(entities)} entities",
            )
        for r in relations:
            try:
                check_relation_name(r)
            except SchemaError as err:
                raise _RowError("path", str(err)) from None
        out["relations"] = list(relations)
    return out


def _hops(value: Any, from_csv: bool) -> int | None:
    if value is None:
        return None
    if from_csv and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():  # parquet columns with nulls are float
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _RowError("hops", f"must be an integer >= 0, got {value!r:.40}")
    return value


def _constraints(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _json_field(value, "constraints")
    if not isinstance(value, dict):
        raise _RowError("constraints", f"must be a JSON object, got {value!r:.60}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise _RowError("constraints", f"must be JSON-serialisable: {err}") from None
    return value


# --------------------------------------------------------------------------- resolving


def resolve_entities(
    store: GraphStore, keys: Iterable[str], *, scan_above: int = 64
) -> dict[str, EntityMatch]:
    """The entity each key names: an entity of that exact id first, else one of that exact
    name; keys that name none are left out.

    A name several entities share resolves to the smallest of their ids (deterministic), with
    `candidates` saying how many there were. Ids are looked up in batches; names that are not
    ids with one `find_entities` query each, or, when more than `scan_above` are left, with one
    scan of all entity names (a 40k-row MetaQA file names thousands).

    >>> resolve_entities(store, ["Kismet", "/m/027rn", "nobody"])  # doctest: +SKIP
    {'Kismet': EntityMatch(id='Kismet', ...), '/m/027rn': EntityMatch(id='/m/027rn', ...)}
    """
    store = getattr(store, "store", store)
    wanted = sorted(set(keys))
    out: dict[str, EntityMatch] = {}
    for a in range(0, len(wanted), 5_000):
        for e in store.get_nodes("Entity", wanted[a : a + 5_000]):
            out[e.id] = _match(e)  # type: ignore[arg-type]
    names = [k for k in wanted if k not in out]
    by_name: dict[str, list[Entity]] = {}
    if len(names) > scan_above:
        wanted_names = set(names)
        for batch in store.iter_nodes("Entity"):
            for e in batch:
                if e.name in wanted_names:  # type: ignore[attr-defined]
                    by_name.setdefault(e.name, []).append(e)  # type: ignore[attr-defined, arg-type]
    else:
        for name in names:
            found = store.find_entities(name=name, match="exact", limit=None)
            if found:
                by_name[name] = list(found)
    for name, entities in by_name.items():
        first = min(entities, key=lambda e: e.id)
        out[name] = _match(first, candidates=len(entities))
    return out


def _match(entity: Entity, candidates: int = 1) -> EntityMatch:
    return EntityMatch(
        id=entity.id, name=entity.name or entity.id, domain=entity.domain, candidates=candidates
    )
