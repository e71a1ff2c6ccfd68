"""The action space of self-play: a registry of tools the model may call, persisted as Tool nodes.

| piece          | what it gives                                                           |
|----------------|-------------------------------------------------------------------------|
| `ToolRegistry` | Tool records + callables; `call(name, arguments_json) -> Observation`   |
| `@tool`        | a typed Python function -> a tool (schema by `selfplay.toolschema`)     |
| `Observation`  | what a call gives back to the model                                     |

The tools themselves live beside it: `selfplay.graph_tools` (the graph tools and the default
registry of a run) and `selfplay.sandbox.python_tool`.

`ToolRegistry.call` never raises for anything the model got wrong (unknown tool, arguments that are
not JSON or break the schema, an exception inside the tool): it returns an error `Observation`
whose `content` is `{"error": "..."}`, so the run goes on and the model sees what went wrong.

>>> reg = ToolRegistry([add])  # doctest: +SKIP
>>> reg.call("add", '{"a": 2, "b": 3}').content  # doctest: +SKIP
'5'
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions

from kag.schema import Tool
from kag.stores.base import GraphBatch
from selfplay.toolschema import function_schema, schema_validator_class

__all__ = [
    "Observation",
    "ToolError",
    "FunctionTool",
    "ToolRegistry",
    "tool",
    "compact_json",
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
        return cls(content=compact_json({"error": message}), ok=False, error=message)


class ToolError(Exception):
    """Raise inside a tool for an expected failure: the model sees only the message, no type name."""


def compact_json(value: Any) -> str:
    """JSON without spaces, as tools answer: `compact_json({"a": [1, 2]}) == '{"a":[1,2]}'`."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


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
    def from_store(cls, store: Any, *, ids: Sequence[str] | None = None) -> ToolRegistry:
        """A registry of the Tool nodes in a graph (all, or these ids), without callables."""
        store = getattr(store, "store", store)
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
        store = getattr(store, "store", store)
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
            obs = Observation(content=result if isinstance(result, str) else compact_json(result))
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
