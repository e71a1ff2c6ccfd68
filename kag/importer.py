"""Bulk import of triple files into any graph store: `kag import triples`.

| format    | rows                                                   | chosen by                 |
|-----------|--------------------------------------------------------|---------------------------|
| `tsv`     | delimited text, no quoting (any delimiter: tab, `|`...) | `.tsv`, `.txt`, other      |
| `csv`     | RFC 4180 text with quoting (`csv` module)               | `.csv`                    |
| `jsonl`   | one JSON object (or `[s, r, o]` list) per line          | `.jsonl`, `.ndjson`       |
| `parquet` | string columns, read one record batch at a time         | `.parquet`                |

`import_triples(graph, ["train.tsv"], entities_file="names.tsv")` runs in two streaming passes:
the first validates every file (a malformed row, a missing column, bad UTF-8, an empty relation
name or a bad id raises `ImportFileError` naming file, line and field, before anything is
written); the second writes entities, relations and phrases through one `store.write_many`
stream. Memory grows with the number of distinct entity ids, never with the file size.

What an import guarantees when it fails or is interrupted (Ctrl-C) in the second pass:

| backend | guarantee                                                                          |
|---------|------------------------------------------------------------------------------------|
| SQL     | all or nothing: the stream is one transaction, rolled back on any error            |
| Neo4j   | batches commit one by one; the error says so, and rerunning the same import gives exactly the graph one uninterrupted run gives (writes are upserts) |
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kag.schema import Entity, SchemaError, check_id, check_relation_name
from kag.stores.base import GraphBatch, GraphStore

__all__ = [
    "ImportFileError",
    "ImportReport",
    "TripleFormat",
    "import_triples",
]

FORMATS = ("tsv", "csv", "jsonl", "parquet")
_EXTENSIONS = {
    ".tsv": "tsv",
    ".txt": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: field names tried, in order, when a jsonl/parquet/headed file does not say which columns to use
COLUMN_ALIASES: tuple[tuple[str, str, str], ...] = (
    ("subject", "relation", "object"),
    ("source", "type", "target"),
    ("head", "relation", "tail"),
    ("h", "r", "t"),
)
_FIELDS = ("subject", "relation", "object")
_ENTITY_FIELDS = ("id", "name", "type", "description")
_PROGRESS_EVERY = 1 << 16


class ImportFileError(ValueError):
    """A triple, entity or relation file is malformed; the message names file, line and field.

    >>> str(ImportFileError("kb.txt", 3, "relation", "must not be empty"))
    "kb.txt line 3, field 'relation': must not be empty"
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = str(path)
        if line is not None:
            where += f" line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TripleFormat:
    """How to read a triple file.

    `format`: one of `FORMATS`, or None to choose by extension. `delimiter`: for tsv/csv (None:
    a tab for tsv, a comma for csv; a `.txt`/`.tsv` file whose first row has no tab but splits
    into the expected fields on `|`, `,` or `;` uses that). `columns`: the subject, relation and
    object columns as names or 0-based positions (default: positions 0, 1, 2 for delimited text
    without a header, else the first of `COLUMN_ALIASES` present). `header`: the first row of a
    delimited file names its columns (implied when `columns` holds names).

    >>> TripleFormat(delimiter="|").resolve(Path("kb.txt")).format
    'tsv'
    """

    format: str | None = None
    delimiter: str | None = None
    columns: tuple[str | int, str | int, str | int] | None = None
    header: bool = False

    def resolve(self, path: Path) -> TripleFormat:
        """The format with `format` filled in from the file's extension."""
        fmt = self.format or _EXTENSIONS.get(path.suffix.lower(), "tsv")
        if fmt not in FORMATS:
            raise ValueError(f"unknown triple format {fmt!r}; choose from {', '.join(FORMATS)}")
        columns = self.columns
        if columns is not None and len(columns) != 3:
            raise ValueError(f"columns must name subject, relation and object, got {columns!r}")
        header = self.header or (
            fmt in ("tsv", "csv")
            and columns is not None
            and any(isinstance(c, str) for c in columns)
        )
        return TripleFormat(format=fmt, delimiter=self.delimiter, columns=columns, header=header)


@dataclass(frozen=True, kw_only=True, slots=True)
class ImportReport:
    """What an import did. `duplicates` counts rows that added no new relation (repeated in
    the files or already in the graph); `relations_new` those that did. `phrases` counts the
    relation phrases applied (naming a relation type of the files or the graph);
    `phrases_unmatched` names the phrase keys that matched none and were not stored."""

    files: list[str]
    rows: int
    entities_new: int
    relations_new: int
    duplicates: int
    relation_types: int
    phrases: int
    seconds: float
    entity_rows: int = 0
    phrases_unmatched: list[str] = field(default_factory=list)

    @property
    def relations_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["relations_per_s"] = round(self.relations_per_s, 1)
        return out


# --------------------------------------------------------------------------- reading files


class _Progress:
    """A tqdm bar over bytes (or rows for parquet), updated every few thousand rows."""

    def __init__(self, enabled: bool, total: int, desc: str, unit: str = "B") -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=desc, unit=unit, unit_scale=True, leave=False, file=sys.stderr
            )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_BLOCK_BYTES = 1 << 22

#: a block of rows as columns: the line (or row) number of each row, its subjects, relations
#: and objects
_Block = tuple[Sequence[int], Sequence[str], Sequence[str], Sequence[str]]


def _text_blocks(path: Path, progress: _Progress) -> Iterator[tuple[int, list[str]]]:
    """(number of the first line, lines without line ends) per ~4 MiB of a UTF-8 file.

    Decoding and splitting a whole block at a time is several times faster than a line at a
    time; bad UTF-8 still names its line."""
    first = 1
    rest = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_BLOCK_BYTES)
            progress.update(len(chunk))
            data = rest + chunk
            if chunk:
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            elif not data:
                return
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                line = first + data.count(b"\n", 0, err.start)
                column = err.start - data.rfind(b"\n", 0, err.start)
                raise ImportFileError(
                    path,
                    line,
                    None,
                    f"is not valid UTF-8 ({err.reason} at byte {column} of the line)",
                ) from None
            if first == 1 and text.startswith("\ufeff"):
                text = text[1:]
            lines = text.split("\n")
            if chunk:
                lines.pop()  # the block ends with a line end: the last piece is empty
            if "\r" in text:
                lines = [line.removesuffix("\r") for line in lines]
            yield first, lines
            first += len(lines)
            if not chunk:
                return


def _json_objects(
    path: Path, progress: _Progress, *, required: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line of a JSON Lines file; a line that is not
    a JSON object, or lacks the `required` key, is an `ImportFileError` naming it."""
    for number, text in _lines(path, progress):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise ImportFileError(path, number, None, f"is not valid JSON: {err.msg}") from None
        if not isinstance(row, dict):
            raise ImportFileError(path, number, None, "must be a JSON object")
        if required not in row:
            raise ImportFileError(path, number, required, "key is missing")
        yield number, row


def _string_fields(
    path: Path, number: int, row: dict[str, Any], fields: Sequence[str]
) -> list[str]:
    """The values of `fields` in a JSON row ("" when absent); a non-string is an error."""
    values = []
    for name in fields:
        value = row.get(name, "")
        if not isinstance(value, str):
            raise ImportFileError(path, number, name, f"must be a string, got {value!r:.80}")
        values.append(value)
    return values


def _lines(path: Path, progress: _Progress) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a UTF-8 file."""
    for first, lines in _text_blocks(path, progress):
        yield from enumerate(lines, first)


def _sniff_delimiter(path: Path, width: int) -> str:
    """Tab, unless the first non-blank row has no tab and splits into `width` fields on `|`,
    `,` or `;` (MetaQA's kb.txt is `subject|relation|object`)."""
    with open(path, "rb") as f:
        for raw in f:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not text.strip():
                continue
            if "\t" in text:
                return "\t"
            for candidate in ("|", ",", ";"):
                if len(text.split(candidate)) == width:
                    return candidate
            return "\t"
    return "\t"


def _positions(
    path: Path, columns: Sequence[str | int], names: Sequence[str] | None, what: str
) -> tuple[int, ...]:
    """Resolve column names/positions against a header (or schema) to positions."""
    out = []
    for role, col in zip(_FIELDS, columns, strict=True):
        if isinstance(col, int):
            if col < 0 or (names is not None and col >= len(names)):
                raise ImportFileError(path, None, role, f"column position {col} is out of range")
            out.append(col)
        elif names is None:
            raise ImportFileError(
                path, None, role, f"column {col!r} is a name, but the file has no header ({what})"
            )
        elif col not in names:
            raise ImportFileError(
                path, 1, role, f"column {col!r} is missing; the {what} has {list(names)}"
            )
        else:
            out.append(list(names).index(col))
    return tuple(out)


def _alias_columns(path: Path, names: Sequence[str], what: str) -> tuple[str, str, str]:
    for aliases in COLUMN_ALIASES:
        if all(a in names for a in aliases):
            return aliases
    raise ImportFileError(
        path,
        1 if what != "schema" else None,
        None,
        f"cannot tell which columns hold subject, relation and object: the {what} has "
        f"{list(names)[:10]}; name them with columns=/--columns (e.g. {', '.join(COLUMN_ALIASES[0])})",
    )


def _read_delimited(path: Path, spec: TripleFormat, progress: _Progress) -> Iterator[_Block]:
    columns = spec.columns
    ints = [c for c in columns or (0, 1, 2) if isinstance(c, int)]
    delimiter = spec.delimiter or (
        _sniff_delimiter(path, max(ints, default=2) + 1) if spec.format == "tsv" else ","
    )
    if spec.format == "csv":
        yield from _read_csv(path, spec, delimiter, progress)
        return
    width: int | None = None
    positions: tuple[int, ...] = ()
    for first, lines in _text_blocks(path, progress):
        if width is None:
            start = next((k for k, line in enumerate(lines) if line.strip()), None)
            if start is None:
                continue
            width, positions = _layout(
                path, first + start, lines[start].split(delimiter), spec, delimiter
            )
            # what comes before the first row is blank; the header is not a triple
            skip = start + 1 if spec.header else start
            lines, first = lines[skip:], first + skip
        i, j, k = positions
        if set(map(str.count, lines, itertools.repeat(delimiter))) == {width - 1}:
            # every line has its fields: split the whole block in one call, slice out columns
            flat = delimiter.join(lines).split(delimiter)
            yield range(first, first + len(lines)), flat[i::width], flat[j::width], flat[k::width]
            continue
        rows = []
        for number, line in enumerate(lines, first):
            parts = line.split(delimiter)
            if len(parts) == width:
                rows.append((number, (parts[i], parts[j], parts[k])))
            elif line.strip():
                raise ImportFileError(
                    path,
                    number,
                    None,
                    f"expected {width} fields separated by {delimiter!r} (as on the first row), "
                    f"found {len(parts)}",
                )
        yield from _grouped(iter(rows), size=len(rows) + 1)


def _layout(
    path: Path, number: int, parts: list[str], spec: TripleFormat, delimiter: str
) -> tuple[int, tuple[int, ...]]:
    """(fields per row, positions of subject/relation/object) from the first row."""
    if spec.header:
        names = [p.strip() for p in parts]
        return len(parts), _positions(
            path, spec.columns or _alias_columns(path, names, "header"), names, "header"
        )
    positions = _positions(path, spec.columns or (0, 1, 2), None, "no header")
    if len(parts) <= max(positions):
        raise ImportFileError(
            path,
            number,
            _FIELDS[positions.index(max(positions))],
            f"expected at least {max(positions) + 1} fields separated by {delimiter!r}, found {len(parts)}",
        )
    return len(parts), positions


def _grouped(rows: Iterator[tuple[int, Sequence[str]]], size: int = 1 << 16) -> Iterator[_Block]:
    """Blocks of columns from (number, triple) rows."""
    while chunk := list(itertools.islice(rows, size)):
        numbers, triples = zip(*chunk, strict=True)
        subjects, relations, objects = zip(*triples, strict=True)
        yield numbers, subjects, relations, objects


def _read_csv(
    path: Path, spec: TripleFormat, delimiter: str, progress: _Progress
) -> Iterator[_Block]:
    def rows() -> Iterator[tuple[int, Sequence[str]]]:
        reader = csv.reader(
            (text + "\n" for _, text in _lines(path, progress)), delimiter=delimiter, strict=True
        )
        width, positions = None, (0, 1, 2)
        try:
            for parts in reader:
                if not any(p.strip() for p in parts):
                    continue
                if width is None:
                    width, positions = _layout(path, reader.line_num, parts, spec, delimiter)
                    if spec.header:
                        continue
                if len(parts) != width:
                    raise ImportFileError(
                        path,
                        reader.line_num,
                        None,
                        f"expected {width} fields (as on the first row), found {len(parts)}",
                    )
                yield (
                    reader.line_num,
                    (parts[positions[0]], parts[positions[1]], parts[positions[2]]),
                )
        except csv.Error as err:
            raise ImportFileError(path, reader.line_num, None, f"malformed CSV: {err}") from None

    return _grouped(rows())


def _read_jsonl(path: Path, spec: TripleFormat, progress: _Progress) -> Iterator[_Block]:
    def rows() -> Iterator[tuple[int, Sequence[str]]]:
        keys: tuple[Any, ...] | None = spec.columns
        for number, text in _lines(path, progress):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise ImportFileError(
                    path, number, None, f"is not valid JSON: {err.msg} (column {err.colno})"
                ) from None
            if isinstance(row, list):
                cols = keys if keys is not None else (0, 1, 2)
                values = []
                for role, k in zip(_FIELDS, cols, strict=True):
                    if not isinstance(k, int) or k >= len(row):
                        raise ImportFileError(path, number, role, f"has no element {k!r}")
                    values.append(row[k])
            elif isinstance(row, dict):
                if keys is None:
                    keys = _alias_columns(path, list(row), "first object")
                values = []
                for role, k in zip(_FIELDS, keys, strict=True):
                    if k not in row:
                        raise ImportFileError(path, number, role, f"key {k!r} is missing")
                    values.append(row[k])
            else:
                raise ImportFileError(
                    path, number, None, f"must be a JSON object or list, got {type(row).__name__}"
                )
            for role, value in zip(_FIELDS, values, strict=True):
                if not isinstance(value, str):
                    raise ImportFileError(
                        path, number, role, f"must be a string, got {value!r:.80}"
                    )
            yield number, values

    return _grouped(rows())


def _read_parquet(path: Path, spec: TripleFormat, progress: _Progress) -> Iterator[_Block]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise ImportFileError(path, None, None, f"is not a readable Parquet file: {err}") from None
    names = pf.schema_arrow.names
    columns = spec.columns or _alias_columns(path, names, "schema")
    wanted = [names[p] for p in _positions(path, columns, names, "schema")]
    number = 0
    for batch in pf.iter_batches(batch_size=1 << 16, columns=list(dict.fromkeys(wanted))):
        arrays = []
        for role, name in zip(_FIELDS, wanted, strict=True):
            array = batch.column(name)
            if array.null_count:
                first = array.is_null().to_pylist().index(True)
                raise ImportFileError(path, number + first + 1, role, f"column {name!r} is null")
            if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
                try:
                    array = array.cast(pa.string())
                except pa.ArrowException:
                    raise ImportFileError(
                        path, None, role, f"column {name!r} has type {array.type}, not text"
                    ) from None
            arrays.append(array.to_pylist())
        yield range(number + 1, number + 1 + batch.num_rows), arrays[0], arrays[1], arrays[2]
        number += batch.num_rows
        progress.update(batch.num_rows)


def _read_triples(path: Path, spec: TripleFormat, progress: _Progress) -> Iterator[_Block]:
    """Blocks of (row numbers, triples) of a file, its structure checked row by row."""
    if spec.format == "parquet":
        return _read_parquet(path, spec, progress)
    if spec.format == "jsonl":
        return _read_jsonl(path, spec, progress)
    return _read_delimited(path, spec, progress)


def _validate_block(
    path: Path, block: _Block, referenced: dict[str, None], types: dict[str, None]
) -> int:
    """Check every id and relation name not seen before; record them; return the row count.

    Each distinct id is checked once, in bulk; only on failure are the rows scanned in order
    to name the first bad line and field."""
    numbers, subjects, relations, objects = block
    block_ids = set(subjects)
    block_ids.update(objects)
    # sorted: the order entities are created in (and so their keys) must not depend on hashing
    new_ids = sorted(e for e in block_ids if e not in referenced)
    new_types = sorted(r for r in set(relations) if r not in types)
    if not (all(map(_id_ok, new_ids)) and all(map(_relation_ok, new_types))):
        for number, s, r, o in zip(numbers, subjects, relations, objects, strict=True):
            _check(check_id, s, path, number, "subject")
            _check(check_relation_name, r, path, number, "relation")
            _check(check_id, o, path, number, "object")
    referenced.update(dict.fromkeys(new_ids))
    types.update(dict.fromkeys(new_types))
    return len(subjects)


def _id_ok(value: str) -> bool:
    try:
        check_id(value)
    except SchemaError:
        return False
    return True


def _relation_ok(value: str) -> bool:
    try:
        check_relation_name(value)
    except SchemaError:
        return False
    return True


def _size(path: Path, spec: TripleFormat) -> tuple[int, str]:
    if spec.format == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows, "rows"
        except Exception:
            return 0, "rows"
    return path.stat().st_size, "B"


# --------------------------------------------------------------------------- entity and relation files


def _side_file_rows(
    path: Path,
    width: int,
    fields: Sequence[str],
    delimiter: str | None,
    progress: _Progress,
    *,
    raw: bool = False,
) -> Iterator[tuple[int, list[str]]]:
    """Rows of an entity or relation file: delimited text (any delimiter, the last field
    keeps any further delimiters) or jsonl objects keyed by `fields`. A first row that
    spells the field names is a header. `raw`: delimited lines come whole (`[line]`), header
    included, for the caller to split."""
    fmt = _EXTENSIONS.get(path.suffix.lower(), "tsv")
    if fmt == "jsonl":
        for number, row in _json_objects(path, progress, required=fields[0]):
            yield number, _string_fields(path, number, row, fields)
        return
    if fmt == "parquet":
        raise ImportFileError(
            path, None, None, "entity and relation files must be delimited text or jsonl"
        )
    if raw:
        for number, text in _lines(path, progress):
            if text.strip():
                yield number, [text]
        return
    sep = delimiter or _sniff_delimiter(path, 2)
    for number, text in _lines(path, progress):
        if not text.strip():
            continue
        parts = text.split(sep, width - 1)
        if number == 1 and [p.strip().lower() for p in parts] == list(fields[: len(parts)]):
            continue
        yield number, parts + [""] * (width - len(parts))


def _cell_value(text: str) -> Any:
    """A props cell of a delimited entity file: integers and decimals load as numbers.

    >>> _cell_value("1999"), _cell_value("-12.5"), _cell_value("1e3"), _cell_value("12 km")
    (1999, -12.5, 1000.0, '12 km')
    """
    text = text.strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    return text


_INTEGER = re.compile(r"[-+]?\d+")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _entity_rows(
    path: Path, delimiter: str | None, progress: _Progress
) -> Iterator[tuple[int, list[str], dict[str, Any]]]:
    """`(line, [id, name, type, description], props)` of every row of an entity file.

    jsonl: keys other than the four fields are props (JSON values as they are, so numbers stay
    numbers), and a `props` object is merged in. Delimited text: a first row that starts with
    `id` and names further columns is a header; the columns that are not one of the four fields
    are props, their cells loaded as numbers where they spell one (`_cell_value`), empty cells
    left out. Without such a header a row is `id, name, type, description`, the description
    keeping any further delimiters (as before props existed)."""
    if _EXTENSIONS.get(path.suffix.lower(), "tsv") == "jsonl":
        for number, row in _json_objects(path, progress, required="id"):
            values = _string_fields(path, number, row, _ENTITY_FIELDS)
            extra = row.get("props", {})
            if not isinstance(extra, dict):
                raise ImportFileError(
                    path, number, "props", f"must be an object, got {extra!r:.80}"
                )
            props = {k: v for k, v in row.items() if k not in (*_ENTITY_FIELDS, "props")}
            props.update(extra)
            yield number, values, props
        return
    header: list[str] | None = None
    sep = delimiter
    first = True
    for number, parts in _side_file_rows(path, 4, _ENTITY_FIELDS, delimiter, progress, raw=True):
        if first:
            first = False
            sep = delimiter or _sniff_delimiter(path, 2)
            cells = [c.strip() for c in parts[0].split(sep)]
            if cells[0].lower() == "id" and any(c.lower() not in _ENTITY_FIELDS for c in cells):
                if len(set(cells)) < len(cells) or not all(cells):
                    raise ImportFileError(
                        path,
                        number,
                        None,
                        f"header names a column twice or leaves one empty: {cells}",
                    )
                header = cells
                continue
            if [c.lower() for c in cells[:4]] == list(_ENTITY_FIELDS[: len(cells[:4])]):
                continue  # the plain header
        if header is None:
            fields = parts[0].split(sep, 3)
            yield number, fields + [""] * (4 - len(fields)), {}
            continue
        cells = parts[0].split(sep)
        if len(cells) != len(header):
            raise ImportFileError(
                path, number, None, f"has {len(cells)} fields; the header names {len(header)}"
            )
        known = {
            h.lower(): c for h, c in zip(header, cells, strict=True) if h.lower() in _ENTITY_FIELDS
        }
        values = [known.get(name, "") for name in _ENTITY_FIELDS]
        props = {
            h: _cell_value(c)
            for h, c in zip(header, cells, strict=True)
            if h.lower() not in _ENTITY_FIELDS and c.strip()
        }
        yield number, values, props


def _read_entities(
    path: Path, delimiter: str | None, progress: bool
) -> dict[str, tuple[str, str, str, dict[str, Any]]]:
    """id -> (name, type, description, props) of an entity file; a later row of an id wins."""
    out: dict[str, tuple[str, str, str, dict[str, Any]]] = {}
    bar = _Progress(progress, path.stat().st_size, f"validate {path.name}")
    try:
        for number, (entity_id, name, type_, description), props in _entity_rows(
            path, delimiter, bar
        ):
            try:
                check_id(entity_id, what="entity id")
            except SchemaError as err:
                raise ImportFileError(path, number, "id", str(err)) from None
            try:
                json.dumps(props, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise ImportFileError(path, number, "props", f"must be JSON data: {err}") from None
            out[entity_id] = (name or entity_id, type_, description, props)
    finally:
        bar.close()
    return out


def _read_phrases(path: Path, delimiter: str | None, progress: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    bar = _Progress(progress, path.stat().st_size, f"validate {path.name}")
    try:
        for number, (name, phrase) in _side_file_rows(path, 2, ("name", "phrase"), delimiter, bar):
            try:
                check_relation_name(name)
            except SchemaError as err:
                raise ImportFileError(path, number, "name", str(err)) from None
            if not phrase.strip():
                raise ImportFileError(path, number, "phrase", f"relation {name!r} has no phrase")
            out[name] = phrase.strip()
    finally:
        bar.close()
    return out


# --------------------------------------------------------------------------- import


def _store_of(target: Any) -> GraphStore:
    return getattr(target, "store", target)


def _relation_count(store: GraphStore) -> int:
    return store.relation_count()


def import_triples(
    target: Any,
    paths: str | Path | Sequence[str | Path],
    *,
    format: str | None = None,  # noqa: A002 - the user-facing name
    delimiter: str | None = None,
    columns: Sequence[str | int] | None = None,
    header: bool = False,
    domain: str = "",
    entities_file: str | Path | None = None,
    entities_delimiter: str | None = None,
    relations_file: str | Path | None = None,
    all_entities: bool = False,
    batch_size: int = 50_000,
    progress: bool = True,
) -> ImportReport:
    """Import triple files into a store or `KnowledgeActionGraph`: nothing is written unless
    every file is valid; then all or nothing on SQL, and on Neo4j committed in batches, where a
    rerun after a failure completes the import exactly (see the module docstring).

    Entities named by triples get their name, type and description from `entities_file` (rows
    `id, name, type, description`; later fields optional) when it lists them, else they are
    created with their id as name; entities already in the graph and not in the entity file are
    left as they are. Entity-file rows no triple refers to are skipped unless `all_entities`
    (FB15k-237's `entity2text.txt` names 14,951 mids, of which 14,541 are used). New entities
    get `domain`. `relations_file` rows `name, phrase` set relation phrases (question text); a file none
    of whose names is a relation type of the files or the graph is an error.

    >>> import_triples(graph, ["kb.txt"], delimiter="|")  # doctest: +SKIP
    ImportReport(files=['kb.txt'], rows=129235, entities_new=42778, ...)
    """
    started = time.perf_counter()
    store = _store_of(target)
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not files:
        raise ValueError("no triple files given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    base = TripleFormat(
        format=format,
        delimiter=_unescape(delimiter),
        columns=tuple(columns) if columns is not None else None,  # type: ignore[arg-type]
        header=header,
    )
    specs = []
    for path in files:
        _check_file(path, "triple file")
        specs.append(base.resolve(path))
    for side, what in ((entities_file, "entity file"), (relations_file, "relation file")):
        if side is not None:
            _check_file(Path(side), what)

    # ---- pass 1: validate everything, collect the ids and types
    entity_info = (
        _read_entities(Path(entities_file), _unescape(entities_delimiter), progress)
        if entities_file
        else {}
    )
    phrases = _read_phrases(Path(relations_file), None, progress) if relations_file else {}
    referenced: dict[str, None] = {}
    types: dict[str, None] = {}
    rows = 0
    for path, spec in zip(files, specs, strict=True):
        total, unit = _size(path, spec)
        bar = _Progress(progress, total, f"validate {path.name}", unit)
        file_rows = 0
        try:
            for block in _read_triples(path, spec, bar):
                file_rows += _validate_block(path, block, referenced, types)
        finally:
            bar.close()
        if not file_rows:
            why = "the file is empty" if not path.stat().st_size else "only a header or blank lines"
            raise ImportFileError(path, None, None, f"holds no triples ({why}); nothing imported")
        rows += file_rows
    # a phrase names a relation type of these files or of the graph, else it applies to nothing
    known = set(types) | set(store.relation_types()) if phrases else set()
    unmatched = [name for name in phrases if name not in known]
    if phrases and len(unmatched) == len(phrases):
        raise ImportFileError(
            relations_file,  # type: ignore[arg-type]
            None,
            "name",
            f"none of its {len(phrases)} relation names is a relation type of the triple files "
            f"or the graph (e.g. {unmatched[:3]}, while the files have {sorted(types)[:3]})",
        )
    phrases = {name: phrase for name, phrase in phrases.items() if name in known}

    # ---- which entities to write: named ones from the file, bare ones only if new
    named = (
        entity_info if all_entities else {e: entity_info[e] for e in referenced if e in entity_info}
    )
    bare = [e for e in referenced if e not in entity_info]
    existing: set[str] = set()
    for a in range(0, len(bare), 10_000):
        existing.update(n.id for n in store.get_nodes("Entity", bare[a : a + 10_000]))
    bare = [e for e in bare if e not in existing]
    entities_before = store.count_nodes("Entity")
    relations_before = _relation_count(store)

    # ---- pass 2: write
    def batches() -> Iterator[GraphBatch]:
        for chunk in _chunked(_entities(named, bare, domain), batch_size):
            yield GraphBatch(nodes={"Entity": chunk})
        for path, spec in zip(files, specs, strict=True):
            total, unit = _size(path, spec)
            bar = _Progress(progress, total, f"import {path.name}", unit)
            try:
                pending: list[tuple[str, str, str]] = []
                for _, subjects, relations, objects in _read_triples(path, spec, bar):
                    # validated in pass 1: plain triples skip a Relation object per row
                    pending.extend(zip(subjects, relations, objects))
                    while len(pending) >= batch_size:
                        yield GraphBatch(triples=pending[:batch_size])
                        del pending[:batch_size]
                if pending:
                    yield GraphBatch(triples=pending)
            finally:
                bar.close()
        if phrases:  # in the same stream: on SQL, in the same transaction
            yield GraphBatch(phrases=phrases)

    store.write_many(batches())
    relations_new = _relation_count(store) - relations_before
    return ImportReport(
        files=[str(p) for p in files],
        rows=rows,
        entities_new=store.count_nodes("Entity") - entities_before,
        relations_new=relations_new,
        duplicates=rows - relations_new,
        relation_types=len(types),
        phrases=len(phrases),
        phrases_unmatched=unmatched,
        seconds=time.perf_counter() - started,
        entity_rows=len(entity_info),
    )


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory; name the files in it")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")


def _check(check: Any, value: str, path: Path, number: int, field_name: str) -> None:
    try:
        check(value) if check is check_relation_name else check(value, what=field_name)
    except SchemaError as err:
        raise ImportFileError(path, number, field_name, str(err)) from None


def _entities(
    named: Mapping[str, tuple[str, str, str, dict[str, Any]]], bare: Iterable[str], domain: str
) -> Iterator[Entity]:
    for entity_id, (name, type_, description, props) in named.items():
        yield _trusted_entity(entity_id, name, type_, description, domain, props)
    for entity_id in bare:
        yield _trusted_entity(entity_id, entity_id, "", "", domain, {})


def _trusted_entity(
    entity_id: str, name: str, type_: str, description: str, domain: str, props: dict[str, Any]
) -> Entity:
    """An `Entity` whose fields were validated in the first pass."""
    return Entity.from_trusted(
        {
            "id": entity_id,
            "name": name,
            "type": type_,
            "description": description,
            "domain": domain,
            "props": props,
        }
    )  # type: ignore[return-value]


def _chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _unescape(delimiter: str | None) -> str | None:
    """`\\t` and `tab` typed on a command line mean a tab."""
    if delimiter is None:
        return None
    named = {"\\t": "\t", "tab": "\t", "\\|": "|", "pipe": "|", "comma": ",", "semicolon": ";"}
    delimiter = named.get(delimiter, delimiter)
    if not delimiter or "\n" in delimiter or "\r" in delimiter:
        raise ValueError(f"delimiter {delimiter!r} cannot split rows")
    return delimiter
