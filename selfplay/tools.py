"""The action space of self-play: a registry of tools the model may call, persisted as Tool nodes.

| piece                   | what it gives                                                         |
|-------------------------|-----------------------------------------------------------------------|
| `ToolRegistry`          | Tool records + callables; `call(name, arguments_json) -> Observation` |
| `@tool`                 | a typed Python function -> a tool (schema from signature + docstring) |
| `graph_tools(store)`    | `search_entities`, `get_relations`, `get_entity` bound to a graph     |
| `python_tool(config)`   | `python`: code run in a `selfplay.sandbox` child process              |

`ToolRegistry.call` never raises for anything the model got wrong (unknown tool, arguments that are
not JSON or break the schema, an exception inside the tool): it returns an error `Observation`
whose `content` is `{"error": "..."}`, so the run goes on and the model sees what went wrong.

>>> reg = ToolRegistry([add])  # doctest: +SKIP
>>> reg.call("add", '{"a": 2, "b": 3}').content  # doctest: +SKIP
'5'
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions

from kag.schema import Entity, Tool
from kag.stores.base import GraphBatch, GraphStore
from selfplay.sandbox import PythonSandbox, SandboxConfig

__all__ = [
    "Observation",
    "ToolError",
    "FunctionTool",
    "ToolRegistry",
    "tool",
    "function_schema",
    "graph_tools",
    "python_tool",
    "entity_ids_in",
    "schema_validator_class",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Observation:
    """What a tool call gave back to the model.

    `content` is the text the model sees; `ok` is False for every error (then `error` says what
    went wrong and `content` is `{"error": ...}`); `touched_entity_ids` are the graph entities the
    call named or returned (the TOUCHED edges of its step).
    """

    content: str
    ok: bool = True
    error: str | None = None
    touched_entity_ids: list[str] = field(default_factory=list)

    @classmethod
    def failure(cls, message: str) -> Observation:
        """An error observation: `Observation.failure("no entity 'x'").content == '{"error":"no entity \\'x\\'"}'`."""
        return cls(content=_compact({"error": message}), ok=False, error=message)


class ToolError(Exception):
    """Raise inside a tool for an expected failure: the model sees only the message, no type name."""


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def schema_validator_class(schema: Mapping[str, Any]) -> Any:
    """The jsonschema validator class for a tool's parameters: its `$schema`, else Draft 7.

    Draft 7 is the dialect of OpenAI-style function schemas, and checking a schema against its
    metaschema is about 4x faster than under Draft 2020-12 (it matters when importing BFCL).
    """
    if "$schema" in schema:
        return jsonschema.validators.validator_for(schema)
    return jsonschema.Draft7Validator


# --------------------------------------------------------------------------- @tool


_BASIC: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    list: {"type": "array"},
    tuple: {"type": "array"},
    dict: {"type": "object"},
    Any: {},
}


def _annotation_schema(annotation: Any, where: str) -> dict[str, Any]:
    """JSON schema of a type annotation: `list[int]` -> `{"type": "array", "items": {"type": "integer"}}`."""
    if annotation in _BASIC:
        return dict(_BASIC[annotation])
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        schema = _annotation_schema(args[0], where)
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if origin is typing.Literal:
        schema: dict[str, Any] = {"enum": list(args)}
        kinds = {type(a) for a in args}
        if len(kinds) == 1 and next(iter(kinds)) in _BASIC:
            schema.update(_BASIC[next(iter(kinds))])
        return schema
    if origin in (typing.Union, types.UnionType):
        options = [_annotation_schema(a, where) for a in args]
        simple = [o.get("type") for o in options]
        if all(isinstance(t, str) and len(o) == 1 for t, o in zip(simple, options, strict=True)):
            return {"type": simple}
        return {"anyOf": options}
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return {"enum": [m.value for m in annotation]}
    if origin in (list, tuple, set, frozenset, Sequence, Iterable, typing.Sequence):
        schema = {"type": "array"}
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            items = [_annotation_schema(a, where) for a in args]
            # Draft 7 tuple form (`items` as a list), the dialect tool schemas are checked against
            schema.update(items=items, minItems=len(items), maxItems=len(items))
        elif args:
            schema["items"] = _annotation_schema(args[0], where)
        return schema
    if origin in (dict, Mapping, typing.Mapping):
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = _annotation_schema(args[1], where)
        return schema
    raise ValueError(
        f"{where}: type {annotation!r} has no JSON schema; use str, int, float, bool, list[...], "
        "dict[str, ...], Literal[...], an Enum, Optional[...] or Any"
    )


_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?)\s*:\s*$"
)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Summary and per-argument descriptions of a Google- or Sphinx-style docstring.

    >>> _parse_docstring("Add.\\n\\nArgs:\\n    a: first.\\n    b: second.")
    ('Add.', {'a': 'first.', 'b': 'second.'})
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for raw in lines:
        line = raw.strip()
        header = _SECTION.match(line)
        sphinx = _SPHINX_PARAM.match(line)
        if header:
            section, current = header.group(1).lower(), None
        elif sphinx:
            section, current = "args", sphinx.group(1)
            params[current] = sphinx.group(2).strip()
        elif line.startswith(":"):
            section, current = "other", None
        elif section is None:
            if line or summary:
                summary.append(line)
        elif section in ("args", "arguments", "parameters", "params") and line:
            match = _ARG_LINE.match(line)
            if match and raw.startswith((" ", "\t")) and len(raw) - len(raw.lstrip()) <= 4:
                current = match.group(1).lstrip("*")
                params[current] = match.group(2).strip()
            elif current:
                params[current] = f"{params[current]} {line}".strip()
    text = "\n".join(summary).strip()
    return " ".join(text.split("\n\n")[0].split()), params


def function_schema(
    fn: Callable[..., Any], *, name: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The description and JSON-schema `parameters` of a typed function.

    >>> def add(a: int, b: int = 0) -> int:
    ...     '''Add two numbers.
    ...
    ...     Args:
    ...         a: the first number.
    ...     '''
    >>> function_schema(add)[1]["properties"]["a"]
    {'type': 'integer', 'description': 'the first number.'}
    """
    where = f"tool {name or fn.__name__!r}"
    description, notes = _parse_docstring(fn.__doc__)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as err:
        raise ValueError(f"{where}: cannot resolve its type annotations: {err}") from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ValueError(
                f"{where}: *args/**kwargs parameter {param.name!r} cannot be described by a schema"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise ValueError(
                f"{where}: positional-only parameter {param.name!r}; tools are called by keyword"
            )
        if param.name not in hints:
            raise ValueError(f"{where}: parameter {param.name!r} has no type annotation")
        schema = _annotation_schema(hints[param.name], f"{where} parameter {param.name!r}")
        if param.name in notes and "description" not in schema:
            schema["description"] = notes[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif param.default is None or isinstance(param.default, str | int | float | bool):
            schema["default"] = param.default
        properties[param.name] = schema
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        parameters["required"] = required
    return description, parameters


class FunctionTool:
    """A Python function with its Tool record; calling it calls the function.

    >>> @tool
    ... def echo(text: str) -> str:
    ...     '''Say it back.'''
    ...     return text
    >>> echo.tool.id, echo("hi")
    ('echo@1', 'hi')
    """

    def __init__(self, tool_record: Tool, fn: Callable[..., Any]) -> None:
        self.tool = tool_record
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = tool_record.name
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self.tool.id!r})"


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    version: str = "1",
    description: str | None = None,
    domain: str = "",
    kind: str = "function",
) -> Any:
    """Make a tool of a typed function; use as `@tool` or `@tool(version="2", domain="math")`.

    The JSON schema comes from the signature (parameters without a default are required) and
    the argument descriptions from the docstring's `Args:` section (or `:param x:` lines).
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        tool_name = name or f.__name__
        summary, parameters = function_schema(f, name=tool_name)
        record = Tool.create(
            name=tool_name,
            version=version,
            description=description if description is not None else summary,
            parameters=parameters,
            kind=kind,
            domain=domain,
        )
        return FunctionTool(record, f)

    return wrap(fn) if fn is not None else wrap


# --------------------------------------------------------------------------- registry


_DEFAULT_SANDBOX = SandboxConfig()


@dataclass(frozen=True, slots=True)
class _Entry:
    tool: Tool
    fn: Callable[..., Any] | None
    validator: Any


class ToolRegistry:
    """The tools of a self-play run: records (persisted as Tool nodes) and their callables.

    Models call tools by name, so names are unique in a registry. A tool registered without a
    callable (an imported definition) can be offered and validated but calling it gives an error
    observation.

    >>> reg = ToolRegistry(graph_tools(store))  # doctest: +SKIP
    >>> reg.specs()  # OpenAI function specs for the engine  # doctest: +SKIP
    """

    def __init__(
        self,
        tools: Iterable[FunctionTool | Tool] = (),
        *,
        max_observation_chars: int = 8000,
    ) -> None:
        if max_observation_chars < 1:
            raise ValueError(f"max_observation_chars must be >= 1, got {max_observation_chars}")
        self.max_observation_chars = max_observation_chars
        self._entries: dict[str, _Entry] = {}
        for item in tools:
            self.register(item)

    @classmethod
    def default(
        cls,
        store: Any,
        *,
        sandbox: SandboxConfig | None = _DEFAULT_SANDBOX,
        max_observation_chars: int = 8000,
    ) -> ToolRegistry:
        """The graph tools bound to `store` plus, unless `sandbox=None`, the `python` tool."""
        items: list[FunctionTool] = list(graph_tools(store))
        if sandbox is not None:
            items.append(python_tool(sandbox))
        return cls(items, max_observation_chars=max_observation_chars)

    @classmethod
    def from_store(cls, store: Any, *, ids: Sequence[str] | None = None) -> ToolRegistry:
        """A registry of the Tool nodes in a graph (all, or these ids), without callables."""
        store = _as_store(store)
        if ids is not None:
            records = store.get_nodes("Tool", list(ids))
            missing = sorted(set(ids) - {r.id for r in records})
            if missing:
                raise ValueError(f"no Tool node with id {', '.join(map(repr, missing))}")
        else:
            records = [r for batch in store.iter_nodes("Tool") for r in batch]
        return cls(records)

    # --- building

    def register(
        self,
        item: FunctionTool | Tool | Callable[..., Any],
        fn: Callable[..., Any] | None = None,
        *,
        replace: bool = False,
    ) -> Tool:
        """Add a `@tool` function, a plain typed function, or a Tool record (with an optional callable)."""
        if isinstance(item, FunctionTool):
            record, fn = item.tool, fn or item.fn
        elif isinstance(item, Tool):
            record = item
        elif callable(item):
            decorated = tool(item)
            record, fn = decorated.tool, decorated.fn
        else:
            raise TypeError(
                f"cannot register {type(item).__name__}; give a Tool, a @tool function or a function"
            )
        if record.name in self._entries and not replace:
            raise ValueError(
                f"a tool named {record.name!r} is already registered "
                f"({self._entries[record.name].tool.id}); pass replace=True to replace it"
            )
        parameters = dict(record.parameters)
        cls = schema_validator_class(parameters)
        try:
            cls.check_schema(parameters)
        except jsonschema.exceptions.SchemaError as err:
            raise ValueError(
                f"tool {record.id!r}: invalid parameters schema: {err.message}"
            ) from None
        self._entries[record.name] = _Entry(record, fn, cls(parameters))
        return record

    # --- reading

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Tool]:
        return (e.tool for e in self._entries.values())

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Tool:
        """The Tool record by name or `name@version` id; `KeyError` naming the known tools."""
        entry = self._lookup(name)
        if entry is None:
            raise KeyError(
                f"unknown tool {name!r}; known tools: {', '.join(self._entries) or 'none'}"
            )
        return entry.tool

    def specs(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """OpenAI function specs (DESIGN section 4) of all tools or of the named ones."""
        chosen = list(self._entries) if names is None else list(names)
        return [self.get(n).spec() for n in chosen]

    def persist(self, store: Any) -> int:
        """Upsert every tool as a Tool node (idempotent); returns how many were written."""
        store = _as_store(store)
        batch = GraphBatch().extend(e.tool for e in self._entries.values())
        store.write(batch)
        return len(batch)

    def _lookup(self, name: str) -> _Entry | None:
        entry = self._entries.get(name)
        if entry is None and "@" in name:
            entry = self._entries.get(name.split("@", 1)[0])
            if entry is not None and entry.tool.id != name:
                return None
        return entry

    # --- calling

    def validate_call(self, name: str, arguments: str | Mapping[str, Any] | None) -> str | None:
        """Why a call is invalid (unknown tool, bad JSON, schema violation), or None if it is valid.

        >>> reg.validate_call("get_entity", '{"entity_id": 3}')  # doctest: +SKIP
        "invalid arguments for get_entity: at 'entity_id': 3 is not of type 'string'"
        """
        _, _, problem = self._check(name, arguments)
        return problem

    def _check(
        self, name: str, arguments: str | Mapping[str, Any] | None
    ) -> tuple[_Entry | None, dict[str, Any], str | None]:
        entry = self._lookup(name) if isinstance(name, str) else None
        if entry is None:
            known = ", ".join(self._entries) or "none"
            return None, {}, f"unknown tool {name!r}; available tools: {known}"
        if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            args: Any = {}
        elif isinstance(arguments, str):
            try:
                args = json.loads(arguments)
            except json.JSONDecodeError as err:
                return entry, {}, f"arguments of {entry.tool.name} are not valid JSON: {err}"
        else:
            args = arguments
        if not isinstance(args, Mapping):
            return (
                entry,
                {},
                f"arguments of {entry.tool.name} must be a JSON object, got {type(args).__name__}",
            )
        args = dict(args)
        error = jsonschema.exceptions.best_match(entry.validator.iter_errors(args))
        if error is not None:
            at = "/".join(str(p) for p in error.absolute_path)
            where = f" at {at!r}" if at else ""
            return entry, args, f"invalid arguments for {entry.tool.name}{where}: {error.message}"
        return entry, args, None

    def call(self, name: str, arguments: str | Mapping[str, Any] | None = None) -> Observation:
        """Run one tool call; every failure comes back as an error `Observation`, never raised.

        `arguments` is the JSON text the model wrote (an empty string means `{}`) or a mapping.
        """
        entry, args, problem = self._check(name, arguments)
        if problem is not None:
            return Observation.failure(problem)
        assert entry is not None
        if entry.fn is None:
            return Observation.failure(
                f"tool {entry.tool.id} has no implementation here (definition only)"
            )
        try:
            result = entry.fn(**args)
        except ToolError as err:
            return Observation.failure(str(err))
        except Exception as err:  # a broken tool must not end the run; the model sees the error
            return Observation.failure(f"{entry.tool.name} failed: {type(err).__name__}: {err}")
        if isinstance(result, Observation):
            obs = result
        else:
            obs = Observation(content=result if isinstance(result, str) else _compact(result))
        if len(obs.content) > self.max_observation_chars:
            cut = len(obs.content) - self.max_observation_chars
            obs = Observation(
                content=obs.content[: self.max_observation_chars]
                + f"... [truncated {cut} characters]",
                ok=obs.ok,
                error=obs.error,
                touched_entity_ids=obs.touched_entity_ids,
            )
        return obs

    async def acall(
        self, name: str, arguments: str | Mapping[str, Any] | None = None
    ) -> Observation:
        """`call` in a worker thread, for event loops that keep many trajectories in flight."""
        return await asyncio.to_thread(self.call, name, arguments)


# --------------------------------------------------------------------------- graph tools


def _as_store(graph: Any) -> GraphStore:
    """A `GraphStore` from a store or a `KnowledgeActionGraph` (which has `.store`)."""
    return getattr(graph, "store", graph)


def _entity_brief(e: Entity) -> dict[str, Any]:
    out: dict[str, Any] = {"id": e.id, "name": e.name}
    if e.type:
        out["type"] = e.type
    return out


def entity_ids_in(value: Any) -> list[str]:
    """Ids named in a graph tool's JSON output or arguments: values of `id` and `*entity_id` keys.

    >>> entity_ids_in({"entity": {"id": "a"}, "relations": [{"id": "b"}], "entity_id": "a"})
    ['a', 'b']
    """
    found: dict[str, None] = {}

    def visit(v: Any) -> None:
        if isinstance(v, Mapping):
            for k, x in v.items():
                if isinstance(x, str) and (k == "id" or k.endswith("entity_id")):
                    found.setdefault(x)
                else:
                    visit(x)
        elif isinstance(v, list | tuple):
            for x in v:
                visit(x)

    visit(value)
    return list(found)


def graph_tools(store: Any, *, max_results: int = 50) -> list[FunctionTool]:
    """`search_entities`, `get_relations` and `get_entity` bound to a graph (store or `kag.open(...)`).

    Outputs are compact JSON with entity ids, so a solver can chain hops:
    `get_relations("e1")` -> `{"entity":{"id":"e1","name":"Ada"},"relations":[{"relation":"born_in",
    "direction":"out","id":"e2","name":"London"}],"total":1}`.
    """
    store = _as_store(store)

    def load(entity_id: str) -> Entity:
        found = store.get_nodes("Entity", [entity_id])
        if not found:
            raise ToolError(f"no entity with id {entity_id!r}; use search_entities to find ids")
        return found[0]  # type: ignore[return-value]

    @tool
    def search_entities(query: str, limit: int = 10) -> Observation:
        """Find entities whose name contains the query (case-insensitive); exact matches first.

        Args:
            query: part of the entity's name.
            limit: the most entities to return (1 to 50).
        """
        text = query.strip()
        if not text:
            raise ToolError("query must not be empty")
        limit = max(1, min(limit, max_results))
        seen: dict[str, Entity] = {}
        for match in ("exact", "contains"):
            for e in store.find_entities(name=text, match=match, limit=limit):
                seen.setdefault(e.id, e)
            if len(seen) >= limit:
                break
        results = [_entity_brief(e) for e in list(seen.values())[:limit]]
        content = _compact({"query": text, "results": results})
        return Observation(content=content, touched_entity_ids=[r["id"] for r in results])

    @tool
    def get_relations(
        entity_id: str,
        relation: str | None = None,
        direction: typing.Literal["out", "in", "both"] = "out",
    ) -> Observation:
        """List the relations of an entity with the id and name of the entity at the other end.

        Args:
            entity_id: the id of the entity (from search_entities or an earlier result).
            relation: only relations of this type; all types when omitted.
            direction: "out" for relations from the entity, "in" for relations to it, or "both".
        """
        entity = load(entity_id)
        rows = store.neighbors(
            entity_id, relation=relation, direction=direction, limit=max_results + 1
        )
        relations = []
        for rel, other in rows[:max_results]:
            relations.append(
                {
                    "relation": rel.type,
                    "direction": "out" if rel.source == entity_id else "in",
                    **_entity_brief(other),
                }
            )
        out: dict[str, Any] = {"entity": _entity_brief(entity), "relations": relations}
        if len(rows) > max_results:
            out["truncated"] = True
            out["hint"] = "more relations exist; pass relation= to narrow the list"
        touched = [entity_id, *(r["id"] for r in relations)]
        return Observation(content=_compact(out), touched_entity_ids=list(dict.fromkeys(touched)))

    @tool
    def get_entity(entity_id: str) -> Observation:
        """Get an entity's name, type, domain and description by its id.

        Args:
            entity_id: the id of the entity.
        """
        e = load(entity_id)
        out = {
            "id": e.id,
            "name": e.name,
            "type": e.type,
            "domain": e.domain,
            "description": e.description,
        }
        if e.props:
            out["props"] = dict(e.props)
        return Observation(content=_compact(out), touched_entity_ids=[e.id])

    return [search_entities, get_relations, get_entity]


# --------------------------------------------------------------------------- python tool


def python_tool(config: SandboxConfig | None = None) -> FunctionTool:
    """The `python` tool: runs code in a fresh sandboxed process and returns its output as JSON.

    >>> python_tool()("print(1 + 1)")  # doctest: +SKIP
    Observation(content='{"stdout":"2\\n","stderr":"","exit_code":0}', ok=True, ...)
    """
    sandbox = PythonSandbox(config or SandboxConfig())
    limits = sandbox.config

    def python(code: str) -> Observation:
        result = sandbox.run(code)
        out: dict[str, Any] = {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exit_code": result.exit_code,
        }
        if result.error:
            out["error"] = result.error
        return Observation(content=_compact(out), ok=result.ok, error=result.error)

    description = (
        "Run Python 3 code in a fresh sandbox and return its stdout and stderr; print what you "
        f"need to see. Limits: {limits.timeout_s:g}s wall clock, {limits.cpu_s}s CPU, "
        f"{limits.memory_mb} MiB memory, no network, files only in the working directory."
    )
    record = Tool.create(
        name="python",
        version="1",
        description=description,
        kind="sandbox",
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string", "description": "the Python source to run"}},
            "required": ["code"],
            "additionalProperties": False,
        },
    )
    return FunctionTool(record, python)
