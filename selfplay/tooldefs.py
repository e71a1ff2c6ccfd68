"""Load function definitions (OpenAI or BFCL style) as Tool records and import them into a graph.

| input shape (JSON, or JSON Lines with one per line)                  | example source              |
|----------------------------------------------------------------------|-----------------------------|
| `{"name", "description", "parameters"}`                              | BFCL `multi_turn_func_doc/` |
| `{"type": "function", "function": {...}}`                            | OpenAI tool specs           |
| `{"id", "question", "function": [{...}, ...]}`                       | BFCL `BFCL_v4_*.json`       |
| a list of any of these, or `{"tools": [...]}`                        |                             |

BFCL's type names are mapped to JSON Schema: `dict` -> `object`, `float` -> `number`, `tuple` ->
`array`, `any` -> no constraint (and `int`, `str`, `bool`, `list`, `double`, `long`, ...). A schema that
is still invalid is rejected with the tool and the file line named, and nothing is written.

>>> report = import_tools(store, ["tools.jsonl"])  # doctest: +SKIP
>>> report.tools  # doctest: +SKIP
1395
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import jsonschema.exceptions

from kag.schema import SchemaError, Tool
from kag.stores.base import GraphBatch
from selfplay.toolschema import schema_validator_class

__all__ = [
    "ToolImportReport",
    "ToolPlan",
    "plan_tools",
    "tool_from_definition",
    "read_tool_definitions",
    "import_tools",
    "to_json_schema",
]

OnConflict = Literal["version", "first", "error"]

# BFCL (and Python/Java-ish) type names -> JSON Schema types; None means "no type constraint".
_TYPE_NAMES: dict[str, str | None] = {
    "object": "object",
    "dict": "object",
    "hashmap": "object",
    "map": "object",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "arraylist": "array",
    "set": "array",
    "string": "string",
    "str": "string",
    "char": "string",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "number": "number",
    "float": "number",
    "double": "number",
    "boolean": "boolean",
    "bool": "boolean",
    "null": "null",
    "any": None,
}
_SUBSCHEMA_KEYS = ("items", "additionalItems", "additionalProperties", "not", "contains")
_SUBSCHEMA_LISTS = ("items", "anyOf", "oneOf", "allOf", "prefixItems")


def to_json_schema(schema: Any, where: str) -> dict[str, Any]:
    """A JSON Schema from a BFCL-style one (a new dict; the input is untouched).

    >>> to_json_schema({"type": "dict", "properties": {"x": {"type": "float"}}}, "f")
    {'type': 'object', 'properties': {'x': {'type': 'number'}}}
    """
    if not isinstance(schema, Mapping):
        raise ValueError(f"{where}: a schema must be a JSON object, got {type(schema).__name__}")
    out = dict(schema)
    if "type" in out:
        out.pop("type")
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        mapped: list[str] = []
        for name in names:
            if not isinstance(name, str) or name.lower() not in _TYPE_NAMES:
                raise ValueError(
                    f"{where}: unknown type {name!r}; known: {', '.join(sorted(_TYPE_NAMES))}"
                )
            target = _TYPE_NAMES[name.lower()]
            if target is None:  # `any` lifts the type constraint altogether
                mapped = []
                break
            if target not in mapped:
                mapped.append(target)
        if len(mapped) == 1:
            out["type"] = mapped[0]
        elif mapped:
            out["type"] = mapped
    if isinstance(out.get("properties"), Mapping):
        out["properties"] = {
            k: to_json_schema(v, f"{where}.{k}") for k, v in out["properties"].items()
        }
    for key in _SUBSCHEMA_KEYS:
        if isinstance(out.get(key), Mapping):
            out[key] = to_json_schema(out[key], f"{where}[{key}]")
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [to_json_schema(s, f"{where}[{key}][{i}]") for i, s in enumerate(out[key])]
    return out


def tool_from_definition(
    definition: Mapping[str, Any],
    *,
    version: str = "1",
    domain: str = "",
    where: str = "",
) -> Tool:
    """A Tool record from one OpenAI- or BFCL-style function definition.

    >>> tool_from_definition({"name": "add", "parameters": {"type": "dict", "properties": {}}}).id
    'add@1'
    """
    if not isinstance(definition, Mapping):
        raise ValueError(
            f"{where}: a function definition must be an object, got {type(definition).__name__}"
        )
    if definition.get("type") == "function" and isinstance(definition.get("function"), Mapping):
        definition = definition["function"]
    name = definition.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: function definition has no 'name'")
    label = f"{where}: tool {name!r}" if where else f"tool {name!r}"
    description = definition.get("description", "") or ""
    if not isinstance(description, str):
        raise ValueError(f"{label}: 'description' must be a string")
    raw = definition.get("parameters", {"type": "object", "properties": {}})
    parameters = to_json_schema(raw, f"{label} parameters")
    if parameters.get("type") != "object":
        raise ValueError(
            f"{label}: parameters must have type 'object' (or BFCL's 'dict'), got {raw.get('type')!r}"
        )
    try:
        schema_validator_class(parameters).check_schema(parameters)
    except jsonschema.exceptions.SchemaError as err:
        at = "/".join(str(p) for p in err.absolute_path)
        raise ValueError(
            f"{label}: invalid parameters schema at {at or 'top level'!r}: {err.message}"
        ) from None
    props: dict[str, Any] = {}
    if "response" in definition:
        props["response"] = definition["response"]
    try:
        return Tool.create(
            name=name,
            version=str(definition.get("version", version)),
            description=description,
            parameters=parameters,
            domain=domain,
            props=props,
        )
    except SchemaError as err:
        raise ValueError(f"{label}: {err}") from None


def _definitions_in(item: Any, where: str) -> list[Any]:
    """Function definitions inside one JSON value (BFCL entry, OpenAI spec, list, {"tools": [...]})."""
    if isinstance(item, list):
        return [d for x in item for d in _definitions_in(x, where)]
    if isinstance(item, Mapping):
        if isinstance(item.get("function"), list):  # a BFCL test entry
            return list(item["function"])
        if isinstance(item.get("tools"), list):
            return [d for x in item["tools"] for d in _definitions_in(x, where)]
        if "name" in item or item.get("type") == "function":
            return [item]
    raise ValueError(
        f"{where}: no function definition found (expected {{name, description, parameters}}, "
        '{"type": "function", "function": {...}}, a BFCL entry with "function": [...], or a list)'
    )


def read_tool_definitions(path: str | Path) -> list[tuple[str, Mapping[str, Any]]]:
    """`(where, definition)` pairs of a JSON or JSON Lines file; `where` is `file:line`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tool definitions file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if whole is not None:
        return [(f"{path}", d) for d in _definitions_in(whole, str(path))]
    pairs: list[tuple[str, Mapping[str, Any]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where}: not valid JSON (nor is the whole file): {err.msg}"
            ) from None
        if isinstance(item, Mapping) and "involved_classes" in item and "function" not in item:
            raise ValueError(
                f"{where}: a BFCL multi-turn entry names API classes, not function definitions; "
                "import the files in multi_turn_func_doc/ instead"
            )
        pairs.extend((where, d) for d in _definitions_in(item, where))
    if not pairs:
        raise ValueError(f"{path}: no function definitions found")
    return pairs


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolImportReport:
    """What `import_tools` did: definitions read, unique tools written, duplicates and conflicts."""

    files: int
    definitions: int
    tools: int
    duplicates: int
    conflicts: int
    tool_ids: list[str] = field(default_factory=list)


def _fingerprint(t: Tool) -> str:
    body = json.dumps({"d": t.description, "p": t.parameters}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _content_versioned(t: Tool) -> Tool:
    """The same tool under version `{version}+{first 8 hex of its content hash}`."""
    return Tool.create(
        name=t.name,
        version=f"{t.version}+{_fingerprint(t)[:8]}",
        description=t.description,
        parameters=t.parameters,
        domain=t.domain,
        props=t.props,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolPlan:
    """What importing some definitions writes: `records` (new or changed Tool nodes), `ids` (the
    tool id each definition became, in order) and the counts of `ToolImportReport`."""

    records: list[Tool]
    ids: list[str]
    definitions: int
    duplicates: int
    conflicts: int


def plan_tools(
    store: Any,
    definitions: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    version: str = "1",
    domain: str = "",
    on_conflict: OnConflict = "version",
) -> ToolPlan:
    """The Tool records `(where, definition)` pairs make against a graph, and the tool id each
    definition became; nothing is written (`import_tools` writes, and so does the BFCL task
    import, in one batch with its tasks). Conflicts are settled as `import_tools` says.

    >>> plan = plan_tools(store, [("f:1", {"name": "add"}), ("f:2", {"name": "add"})])  # doctest: +SKIP
    >>> plan.ids, plan.duplicates  # doctest: +SKIP
    (['add@1', 'add@1'], 1)
    """
    if on_conflict not in ("version", "first", "error"):
        raise ValueError(f"on_conflict must be 'version', 'first' or 'error', got {on_conflict!r}")
    store = getattr(store, "store", store)
    # tool id -> (record, where, the (declared id, fingerprint) it stands for)
    chosen: dict[str, tuple[Tool, str, tuple[str, str]]] = {}
    # declared id -> (fingerprint, where) of its first definition
    first: dict[str, tuple[str, str]] = {}
    # (declared id, fingerprint) already settled -> the tool id it became
    settled: dict[tuple[str, str], str] = {}
    converted: dict[str, tuple[Tool, str]] = {}  # BFCL repeats definitions verbatim: convert once
    keys: list[tuple[str, str]] = []  # (declared id, fingerprint) of each definition
    duplicates = conflicts = 0
    for where, definition in definitions:
        key = json.dumps(definition, sort_keys=True, ensure_ascii=False, default=str)
        if key not in converted:
            record = tool_from_definition(definition, version=version, domain=domain, where=where)
            converted[key] = (record, _fingerprint(record))
        record, fp = converted[key]
        keys.append((record.id, fp))
        if record.id not in first:
            first[record.id] = (fp, where)
            settled[(record.id, fp)] = record.id
            chosen[record.id] = (record, where, (record.id, fp))
            continue
        if (record.id, fp) in settled:
            duplicates += 1
            continue
        conflicts += 1
        if on_conflict == "error":
            raise ValueError(
                f"{where}: tool {record.id!r} is defined differently at {first[record.id][1]}; "
                "use on_conflict='version' (--on-conflict version) or 'first'"
            )
        settled[(record.id, fp)] = record.id
        if on_conflict == "version":
            versioned = _content_versioned(record)
            chosen[versioned.id] = (versioned, where, (record.id, fp))
            settled[(record.id, fp)] = versioned.id
    # Definitions already in the graph under the same id count as the first ones.
    existing = {t.id: t for t in store.get_nodes("Tool", list(chosen))}
    for tool_id, (record, where, key) in list(chosen.items()):
        old = existing.get(tool_id)
        if old is None or _fingerprint(old) == _fingerprint(record):  # type: ignore[arg-type]
            continue
        conflicts += 1
        if on_conflict == "error":
            raise ValueError(
                f"{where}: tool {tool_id!r} already exists in the graph with a different definition; "
                "use on_conflict='version' (--on-conflict version) or 'first', or a new --version"
            )
        del chosen[tool_id]
        if on_conflict == "version":
            versioned = _content_versioned(record)
            chosen[versioned.id] = (versioned, where, key)
            settled[key] = versioned.id
    return ToolPlan(
        records=[t for t, _, _ in chosen.values()],
        ids=[settled[k] for k in keys],
        definitions=len(keys),
        duplicates=duplicates,
        conflicts=conflicts,
    )


def import_tools(
    store: Any,
    paths: str | Path | Sequence[str | Path],
    *,
    version: str = "1",
    domain: str = "",
    on_conflict: OnConflict = "version",
) -> ToolImportReport:
    """Read function definitions from files and upsert them as Tool nodes, all or nothing.

    The same name with the same description and schema is one tool (BFCL repeats its tools
    across questions). The same name with a different definition is a conflict, settled by
    `on_conflict`: `"version"` (the default: each later definition becomes its own tool, versioned
    `{version}+{first 8 hex of its content hash}`, so nothing is lost and re-imports are idempotent),
    `"first"` (keep the first definition, including one already in the graph) or `"error"`
    (raise, naming both places).
    """
    if on_conflict not in ("version", "first", "error"):
        raise ValueError(f"on_conflict must be 'version', 'first' or 'error', got {on_conflict!r}")
    store = getattr(store, "store", store)
    files = [paths] if isinstance(paths, str | Path) else list(paths)
    if not files:
        raise ValueError("no tool definition files given")
    definitions = [pair for file in files for pair in read_tool_definitions(file)]
    plan = plan_tools(store, definitions, version=version, domain=domain, on_conflict=on_conflict)
    store.write(GraphBatch().extend(plan.records))
    return ToolImportReport(
        files=len(files),
        definitions=plan.definitions,
        tools=len(plan.records),
        duplicates=plan.duplicates,
        conflicts=plan.conflicts,
        tool_ids=sorted(t.id for t in plan.records),
    )
