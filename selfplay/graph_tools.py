"""The graph tools of self-play and the default tool registry of a run.

| function                  | what it gives                                                       |
|---------------------------|---------------------------------------------------------------------|
| `graph_tools(store)`      | `search_entities`, `get_relations`, `get_entity` bound to a graph   |
| `default_registry(store)` | the graph tools plus, unless `sandbox=None`, the sandboxed `python` |
| `entity_ids_in(value)`    | the entity ids a graph tool's output or arguments name              |

>>> reg = default_registry(kag.open("sqlite:///kag.db"), sandbox=None)  # doctest: +SKIP
>>> reg.names  # doctest: +SKIP
['search_entities', 'get_relations', 'get_entity']
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from kag.schema import Entity
from kag.stores.base import GraphStore
from selfplay.sandbox import SandboxConfig, python_tool
from selfplay.tools import FunctionTool, Observation, ToolError, ToolRegistry, compact_json, tool

__all__ = ["default_registry", "entity_ids_in", "graph_tools"]

_DEFAULT_SANDBOX = SandboxConfig()


def default_registry(
    store: Any,
    *,
    sandbox: SandboxConfig | None = _DEFAULT_SANDBOX,
    max_observation_chars: int = 8000,
) -> ToolRegistry:
    """The graph tools bound to `store` plus, unless `sandbox=None`, the `python` tool."""
    items: list[FunctionTool] = list(graph_tools(store))
    if sandbox is not None:
        items.append(python_tool(sandbox))
    return ToolRegistry(items, max_observation_chars=max_observation_chars)


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
    store: GraphStore = getattr(store, "store", store)

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
        content = compact_json({"query": text, "results": results})
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
        return Observation(
            content=compact_json(out), touched_entity_ids=list(dict.fromkeys(touched))
        )

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
        return Observation(content=compact_json(out), touched_entity_ids=[e.id])

    return [search_entities, get_relations, get_entity]
