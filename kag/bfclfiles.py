"""BFCL task files: function-calling questions with their functions and possible answers, checked.

The Berkeley Function-Calling Leaderboard's single-turn sets (`BFCL_v4_simple_python.json`,
`..._multiple`, `..._parallel`, `..._parallel_multiple`, `..._live_simple`, `..._live_multiple`)
are JSON Lines despite their `.json` name:

| file                               | one line                                                     |
|------------------------------------|--------------------------------------------------------------|
| `BFCL_v4_<category>.json`          | `{"id", "question": [[{"role", "content"}, ...]], "function": [{name, description, parameters}, ...]}` |
| `possible_answer/<the same name>`  | `{"id", "ground_truth": [{function name: {param: [allowed values]}}, ...]}` |

| function / class  | what it gives                                                               |
|-------------------|-----------------------------------------------------------------------------|
| `read_bfcl_files` | every row of every file with its possible answer, as a checked `BfclRow`    |
| `answers_file_of` | where a task file's possible answers lie (`possible_answer/` beside it)     |

`kag.taskfiles.is_bfcl_file` tells these files by their first line (`kag import tasks` does).
Bad rows raise `kag.taskfiles.TaskFileError` (`FILE line N, field 'F': what is wrong`, the first
five), and nothing is returned unless every row is good. Nothing here writes to a graph:
`selfplay.taskimport.import_tasks` makes the Tasks and Tools.

>>> rows = read_bfcl_files(["bfcl/BFCL_v4_parallel.json"])  # doctest: +SKIP
>>> rows[0].id, rows[0].category, len(rows[0].ground_truth)  # doctest: +SKIP
('parallel_0', 'parallel', 2)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kag.importer import ImportFileError
from kag.schema import SchemaError, check_id
from kag.taskfiles import MAX_ERRORS, TaskFileError

__all__ = ["BfclRow", "answers_file_of", "read_bfcl_files"]

_FILE_NAME = re.compile(r"^BFCL_v\d+_(.+?)\.jsonl?$")
_ID = re.compile(r"^(.+?)_\d+(?:-\d+)*$")
_ROLES = ("system", "user", "assistant")
_ROW_KEYS = ("id", "question", "function")


@dataclass(frozen=True, kw_only=True, slots=True)
class BfclRow:
    """One BFCL question with its functions and possible answers.

    `messages` are the conversation of its one turn (system and user messages, DESIGN section
    4 dicts); `functions` the definitions as BFCL gives them (BFCL type names such as `dict`
    and `float`); `ground_truth` the answer key, one `{name: {param: [allowed values]}}` per
    expected call (an allowed `""`: the parameter may be left out); `category` comes from the
    file name (`BFCL_v4_<category>.json`), else from the id (`live_multiple_12-3-4`).
    """

    file: str
    line: int
    id: str
    category: str
    messages: tuple[Mapping[str, str], ...]
    functions: tuple[Mapping[str, Any], ...]
    ground_truth: tuple[Mapping[str, Mapping[str, list[Any]]], ...]
    answers_file: str
    answers_line: int

    @property
    def source(self) -> dict[str, Any]:
        """Where the row came from: `{"file", "line", "answers_file", "answers_line"}`."""
        return {
            "file": self.file,
            "line": self.line,
            "answers_file": self.answers_file,
            "answers_line": self.answers_line,
        }


def answers_file_of(path: str | Path) -> Path:
    """The possible-answer file of a BFCL task file: `possible_answer/` + its name, beside it.

    >>> answers_file_of("bfcl/BFCL_v4_simple_python.json").as_posix()
    'bfcl/possible_answer/BFCL_v4_simple_python.json'
    """
    path = Path(path)
    return path.parent / "possible_answer" / path.name


class _RowError(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def read_bfcl_files(
    paths: str | Path | Sequence[str | Path],
    *,
    answers: Sequence[str | Path] | None = None,
) -> list[BfclRow]:
    """Every row of every BFCL task file with its possible answer, checked.

    `answers` gives the possible-answer file of each task file, in order (default: the file of
    the same name in `possible_answer/` beside it, `answers_file_of`). Every row needs an answer
    of its id, whose calls name functions of the row; an answer file may hold answers of rows
    the task file lacks (a task file cut short). Blank lines are skipped and not counted.

    >>> [r.id for r in read_bfcl_files(["BFCL_v4_simple_python.json"])][:2]  # doctest: +SKIP
    ['simple_python_0', 'simple_python_1']
    """
    files = [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]
    if not files:
        raise ValueError("no task files given")
    if answers is not None and len(answers) != len(files):
        raise ValueError(
            f"{len(answers)} answer file(s) for {len(files)} task file(s); give one per task "
            "file, in the same order"
        )
    answer_files = [Path(a) for a in answers] if answers is not None else None
    for k, path in enumerate(files):
        if path.is_dir():
            raise IsADirectoryError(f"task file {path} is a directory; name the files in it")
        if not path.is_file():
            raise FileNotFoundError(f"task file {path} does not exist")
        key = answer_files[k] if answer_files is not None else answers_file_of(path)
        if not key.is_file():
            raise FileNotFoundError(
                f"possible-answer file {key} of {path} does not exist; BFCL keeps them in "
                "possible_answer/ beside the task files (or pass answers= / --answers FILE)"
            )
    errors: list[ImportFileError] = []
    count = 0

    def add(err: ImportFileError) -> None:
        nonlocal count
        count += 1
        if len(errors) < MAX_ERRORS:
            errors.append(err)

    rows: list[BfclRow] = []
    for k, path in enumerate(files):
        key_path = answer_files[k] if answer_files is not None else answers_file_of(path)
        try:
            keys = _answer_keys(key_path, add)
            lines = list(_lines(path))
        except ImportFileError as err:
            add(err)
            continue
        category = _category_of_file(path)
        for number, text in lines:
            try:
                rows.append(_row(path, number, text, category, keys, key_path))
            except _RowError as err:
                add(ImportFileError(path, number, err.field, err.message))
        if not lines:
            add(ImportFileError(path, None, None, "holds no tasks"))
    if count:
        raise TaskFileError(errors, count)
    return rows


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ImportFileError(path, None, None, f"is not valid UTF-8 ({err.reason})") from None
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _category_of_file(path: Path) -> str | None:
    m = _FILE_NAME.match(path.name)
    return m.group(1) if m else None


def _answer_keys(path: Path, add: Any) -> dict[str, tuple[int, tuple[Any, ...]]]:
    """Row id -> (line, ground truth) of a possible-answer file; bad lines are reported."""
    out: dict[str, tuple[int, tuple[Any, ...]]] = {}
    for number, text in _lines(path):
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise _RowError(None, f"must be a JSON object, got {type(data).__name__}")
            row_id = data.get("id")
            if not isinstance(row_id, str) or not row_id:
                raise _RowError("id", "must be a non-empty string")
            if row_id in out:
                raise _RowError("id", f"{row_id!r} is also the id of line {out[row_id][0]}")
            out[row_id] = (number, _ground_truth(data.get("ground_truth")))
        except json.JSONDecodeError as err:
            add(ImportFileError(path, number, None, f"is not valid JSON: {err.msg}"))
        except _RowError as err:
            add(ImportFileError(path, number, err.field, err.message))
    return out


def _ground_truth(value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list) or not value:
        raise _RowError("ground_truth", "must be a non-empty list of expected calls")
    for k, call in enumerate(value):
        if not isinstance(call, dict) or len(call) != 1:
            raise _RowError(
                "ground_truth", f"call {k} must be one {{function name: {{param: [values]}}}}"
            )
        ((name, params),) = call.items()
        if not isinstance(params, dict):
            raise _RowError("ground_truth", f"call {k} ({name!r}) must map parameters to lists")
        for param, allowed in params.items():
            if not isinstance(allowed, list):
                raise _RowError(
                    "ground_truth",
                    f"call {k} ({name!r}) parameter {param!r}: allowed values must be a list, "
                    f"got {allowed!r:.60}",
                )
    return tuple(value)


def _row(
    path: Path,
    number: int,
    text: str,
    category: str | None,
    keys: Mapping[str, tuple[int, tuple[Any, ...]]],
    key_path: Path,
) -> BfclRow:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise _RowError(None, f"is not valid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise _RowError(None, f"must be a JSON object, got {type(data).__name__}")
    if "involved_classes" in data:
        raise _RowError(
            "involved_classes",
            "is a BFCL multi-turn row (stateful API classes); only single-turn sets import",
        )
    unknown = [k for k in data if k not in _ROW_KEYS]
    if unknown:
        raise _RowError(unknown[0], f"unknown key; BFCL rows have the keys {', '.join(_ROW_KEYS)}")
    row_id = data.get("id")
    if not isinstance(row_id, str) or not row_id.strip():
        raise _RowError("id", "must be a non-empty string")
    try:
        check_id(row_id, what="id")
    except SchemaError as err:
        raise _RowError("id", str(err)) from None
    messages = _messages(data.get("question"))
    functions = data.get("function")
    if not isinstance(functions, list) or not functions:
        raise _RowError("function", "must be a non-empty list of function definitions")
    names = set()
    for k, f in enumerate(functions):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise _RowError("function", f"definition {k} must be an object with a 'name'")
        if not isinstance(f.get("parameters", {}), dict):
            raise _RowError("function", f"{f['name']!r}: 'parameters' must be an object")
        if f["name"] in names:
            raise _RowError("function", f"defines {f['name']!r} twice; a model calls by name")
        names.add(f["name"])
    if row_id not in keys:
        raise _RowError("id", f"{row_id!r} has no possible answer in {key_path}")
    answers_line, ground_truth = keys[row_id]
    for call in ground_truth:
        name = next(iter(call))
        if name not in names:
            raise _RowError(
                "function",
                f"the possible answer ({key_path} line {answers_line}) calls {name!r}, which "
                f"the row does not define (it defines {', '.join(sorted(names))})",
            )
    if category is None:
        m = _ID.match(row_id)
        if m is None:
            raise _RowError(
                "id",
                f"cannot tell the BFCL category of {row_id!r}: name the file "
                "BFCL_v4_<category>.json or give ids like <category>_<n>",
            )
        category = m.group(1)
    return BfclRow(
        file=str(path),
        line=number,
        id=row_id,
        category=category,
        messages=messages,
        functions=tuple(functions),
        ground_truth=ground_truth,
        answers_file=str(key_path),
        answers_line=answers_line,
    )


def _messages(value: Any) -> tuple[Mapping[str, str], ...]:
    if not isinstance(value, list) or not value or not all(isinstance(t, list) for t in value):
        raise _RowError("question", "must be a list of turns, each a list of messages")
    if len(value) != 1:
        raise _RowError("question", f"holds {len(value)} turns; only single-turn BFCL rows import")
    out = []
    for k, m in enumerate(value[0]):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise _RowError("question", f"message {k} must have a role of {', '.join(_ROLES)}")
        if not isinstance(m.get("content"), str):
            raise _RowError("question", f"message {k} must have a string content")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise _RowError("question", "has no user message with content")
    return tuple(out)
