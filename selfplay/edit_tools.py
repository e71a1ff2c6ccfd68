"""Graph-editing tools of tool_use tasks, and the scratch subgraph they edit (never the real graph).

A graph-edit task carries a snapshot of a small subgraph (`ScratchGraph.snapshot()`); every
trajectory edits its own `ScratchGraph` built from it, so nothing a policy does reaches the store.

| tool              | what it does on the scratch copy                                        |
|-------------------|-------------------------------------------------------------------------|
| `find_entities`   | ids of entities whose name contains the query (exact matches first);    |
|                   | none found is an error observation ("add it with add_entity")           |
| `read_entity`     | name, type, description and props of an entity                          |
| `read_relations`  | an entity's relations (one type or all; out, in or both directions)     |
| `add_entity`      | a new entity (name, type, props); its id is `new:<name as a slug>`       |
| `update_entity`   | a new name and/or props (a null prop value removes the prop)            |
| `remove_entity`   | removes an entity; refused while it still has relations                  |
| `add_relation`    | `source -[relation]-> target`; refused when it exists or an end is unknown |
| `remove_relation` | removes `source -[relation]-> target`; refused when it does not exist     |

Every refusal leaves the copy as it was and comes back as `{"error": ...}` saying what to do, so a
policy can recover. `state_diff(start, end)` lists the edits between two states as canonical
items (what `graph_state@1` compares with a task's expected edits):

| item                                            | edit                                  |
|-------------------------------------------------|---------------------------------------|
| `["add_entity", id, name, type, props]`         | an entity was added                   |
| `["remove_entity", id]`                         | an entity was removed                 |
| `["set_name", id, name]`                        | an entity was renamed                 |
| `["set_prop", id, key, value]`                  | a prop was set (value None: removed)  |
| `["add_relation", source, relation, target]`    | a relation was added                  |
| `["remove_relation", source, relation, target]` | a relation was removed                |

>>> g = ScratchGraph.from_snapshot({"entities": [{"id": "a", "name": "Ada"}], "relations": []})
>>> reg = edit_registry(g)
>>> reg.call("add_entity", {"name": "Bo", "type": "person"}).content
'{"added":{"id":"new:bo","name":"Bo","type":"person","props":{}}}'
>>> reg.call("add_relation", {"source_id": "a", "relation": "knows", "target_id": "new:bo"}).ok
True
>>> state_diff(ScratchGraph.from_snapshot({"entities": [{"id": "a", "name": "Ada"}]}), g)
[['add_entity', 'new:bo', 'Bo', 'person', {}], ['add_relation', 'a', 'knows', 'new:bo']]
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from kag.schema import Tool
from selfplay.tools import FunctionTool, Observation, ToolError, ToolRegistry, compact_json, tool

__all__ = [
    "EDIT_TOOL_NAMES",
    "NEW_ID_PREFIX",
    "PropValue",
    "ScratchGraph",
    "describe_edit",
    "edit_key",
    "edit_registry",
    "edit_tool_records",
    "edit_tools",
    "state_diff",
]

#: the prefix of the ids `add_entity` gives (`new:` + the name as a slug)
NEW_ID_PREFIX = "new:"
#: the tools of a graph-edit task, in the order its prompt lists them
EDIT_TOOL_NAMES = (
    "find_entities",
    "read_entity",
    "read_relations",
    "add_entity",
    "update_entity",
    "remove_entity",
    "add_relation",
    "remove_relation",
)
#: a prop value the edit tools accept
PropValue = str | int | float | bool | None
_DOMAIN = "graph_edit"
_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(name: str) -> str:
    return _SLUG.sub("_", name.lower()).strip("_") or "entity"


def _check_props(props: Any, where: str) -> dict[str, Any]:
    if not isinstance(props, Mapping):
        raise ValueError(f"{where}: props must be an object, got {type(props).__name__}")
    out = {}
    for key, value in props.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: prop names must be non-empty strings, got {key!r}")
        if not (value is None or isinstance(value, str | int | float | bool)):
            raise ValueError(f"{where}: prop {key!r} must be a string, number or boolean")
        out[key] = value
    return out


class ScratchGraph:
    """An in-memory copy of a subgraph: entities by id (name, type, description, props) and a set
    of `(source, relation, target)` triples. Edits check everything first, so a refused edit
    (`ToolError`) changes nothing.

    >>> g = ScratchGraph.from_snapshot({"entities": [{"id": "a", "name": "Ada", "type": "person"}]})
    >>> g.update_entity("a", name="Ada Lovelace")["name"], g.name_of("a")
    ('Ada Lovelace', 'Ada Lovelace')
    """

    __slots__ = ("entities", "relations")

    def __init__(self) -> None:
        #: id -> {"name", "type", "description", "props"}
        self.entities: dict[str, dict[str, Any]] = {}
        self.relations: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------ snapshots

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> ScratchGraph:
        """A scratch graph from `snapshot()`'s JSON form; a bad snapshot is a `ValueError`."""
        g = cls()
        for i, e in enumerate(snapshot.get("entities") or ()):
            where = f"snapshot entity {i}"
            if not isinstance(e, Mapping) or not isinstance(e.get("id"), str) or not e["id"]:
                raise ValueError(f"{where}: needs a non-empty string 'id'")
            if e["id"] in g.entities:
                raise ValueError(f"{where}: id {e['id']!r} appears twice")
            g.entities[e["id"]] = {
                "name": str(e.get("name") or ""),
                "type": str(e.get("type") or ""),
                "description": str(e.get("description") or ""),
                "props": _check_props(e.get("props") or {}, where),
            }
        for i, triple in enumerate(snapshot.get("relations") or ()):
            if not isinstance(triple, Sequence) or isinstance(triple, str) or len(triple) != 3:
                raise ValueError(f"snapshot relation {i}: expected [source, relation, target]")
            s, r, t = (str(x) for x in triple)
            if s not in g.entities or t not in g.entities:
                raise ValueError(f"snapshot relation {i}: {s!r} or {t!r} is not an entity of it")
            g.relations.add((s, r, t))
        return g

    def snapshot(self) -> dict[str, Any]:
        """The JSON form (entities by id, relations sorted), as a task stores it."""
        return {
            "entities": [
                {"id": i, **{k: v for k, v in e.items() if k != "props"}, "props": dict(e["props"])}
                for i, e in sorted(self.entities.items())
            ],
            "relations": [list(t) for t in sorted(self.relations)],
        }

    def copy(self) -> ScratchGraph:
        g = ScratchGraph()
        g.entities = {i: {**e, "props": dict(e["props"])} for i, e in self.entities.items()}
        g.relations = set(self.relations)
        return g

    # ------------------------------------------------------------------ reading

    def name_of(self, entity_id: str) -> str:
        return self.entities[entity_id]["name"]

    def brief(self, entity_id: str) -> dict[str, Any]:
        e = self.entities[entity_id]
        out: dict[str, Any] = {"id": entity_id, "name": e["name"]}
        if e["type"]:
            out["type"] = e["type"]
        return out

    def require(self, entity_id: str) -> dict[str, Any]:
        """The entity, or a `ToolError` saying how to find ids."""
        if entity_id not in self.entities:
            raise ToolError(
                f"no entity with id {entity_id!r} in this graph; find_entities gives the ids of "
                "named entities, and add_entity creates a new one"
            )
        return self.entities[entity_id]

    def find(self, query: str, *, limit: int = 10) -> list[dict[str, Any]]:
        """Entities whose name contains `query` (case-insensitive), exact matches first."""
        q = query.strip().lower()
        hits = [(e["name"].lower() != q, e["name"], i) for i, e in self.entities.items()]
        return [self.brief(i) for _, _, i in sorted(h for h in hits if q in h[1].lower())][:limit]

    def relations_of(
        self, entity_id: str, *, relation: str | None = None, direction: str = "out"
    ) -> list[dict[str, Any]]:
        """`{"relation", "direction", "id", "name"}` of an entity's relations, sorted."""
        out = []
        for s, r, t in sorted(self.relations):
            if relation is not None and r != relation:
                continue
            if s == entity_id and direction in ("out", "both"):
                out.append({"relation": r, "direction": "out", **self.brief(t)})
            if t == entity_id and direction in ("in", "both") and s != t:
                out.append({"relation": r, "direction": "in", **self.brief(s)})
        return out

    def _same_name(self, name: str, *, other_than: str | None = None) -> str | None:
        key = name.strip().lower()
        for i, e in self.entities.items():
            if i != other_than and e["name"].strip().lower() == key:
                return i
        return None

    def new_id(self, name: str) -> str:
        """The id `add_entity(name)` would give now: `new:<slug>`, `-2`, `-3`... when taken.

        >>> ScratchGraph().new_id("Silent Orchard")
        'new:silent_orchard'
        """
        base = NEW_ID_PREFIX + _slug(name)
        candidate, k = base, 1
        while candidate in self.entities:
            k += 1
            candidate = f"{base}-{k}"
        return candidate

    # ------------------------------------------------------------------ editing

    def add_entity(
        self, name: str, *, type: str = "", props: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        text = name.strip()
        if not text:
            raise ToolError("name must not be empty")
        same = self._same_name(text)
        if same is not None:
            raise ToolError(
                f"an entity named {text!r} exists already (id {same!r}); use that id, or "
                "update_entity to change it"
            )
        try:
            values = _check_props(props or {}, "add_entity")
        except ValueError as err:
            raise ToolError(str(err)) from None
        entity_id = self.new_id(text)
        self.entities[entity_id] = {
            "name": text,
            "type": type.strip(),
            "description": "",
            "props": {k: v for k, v in values.items() if v is not None},
        }
        e = self.entities[entity_id]
        return {"id": entity_id, "name": e["name"], "type": e["type"], "props": dict(e["props"])}

    def update_entity(
        self,
        entity_id: str,
        *,
        name: str | None = None,
        props: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        e = self.require(entity_id)
        if name is None and not props:
            raise ToolError("give a new name, props to set, or both")
        if name is not None:
            name = name.strip()
            if not name:
                raise ToolError("name must not be empty")
            same = self._same_name(name, other_than=entity_id)
            if same is not None:
                raise ToolError(f"another entity is named {name!r} already (id {same!r})")
        try:
            values = _check_props(props or {}, "update_entity")
        except ValueError as err:
            raise ToolError(str(err)) from None
        if name is not None:
            e["name"] = name
        for key, value in values.items():
            if value is None:
                e["props"].pop(key, None)
            else:
                e["props"][key] = value
        return {"id": entity_id, "name": e["name"], "type": e["type"], "props": dict(e["props"])}

    def remove_entity(self, entity_id: str) -> dict[str, Any]:
        self.require(entity_id)
        attached = self.relations_of(entity_id, direction="both")
        if attached:
            shown = ", ".join(
                f"{r['direction']} {r['relation']} {r['id']}" for r in attached[:3]
            ) + (f" and {len(attached) - 3} more" if len(attached) > 3 else "")
            raise ToolError(
                f"{self.name_of(entity_id)!r} ({entity_id}) still has {len(attached)} "
                f"relation(s) ({shown}); list them with read_relations(direction='both') and "
                "remove each with remove_relation first"
            )
        brief = self.brief(entity_id)
        del self.entities[entity_id]
        return brief

    def _triple(self, source_id: str, relation: str, target_id: str) -> tuple[str, str, str]:
        if not relation.strip():
            raise ToolError("relation must not be empty")
        self.require(source_id)
        self.require(target_id)
        return source_id, relation.strip(), target_id

    def add_relation(self, source_id: str, relation: str, target_id: str) -> dict[str, Any]:
        triple = self._triple(source_id, relation, target_id)
        if triple[0] == triple[2]:
            raise ToolError("a relation needs two different entities")
        if triple in self.relations:
            raise ToolError(f"the relation {source_id} -[{triple[1]}]-> {target_id} exists already")
        self.relations.add(triple)
        return self._relation_out(triple)

    def remove_relation(self, source_id: str, relation: str, target_id: str) -> dict[str, Any]:
        triple = self._triple(source_id, relation, target_id)
        if triple not in self.relations:
            raise ToolError(
                f"there is no relation {source_id} -[{triple[1]}]-> {target_id}; read_relations "
                "lists the relations an entity has"
            )
        self.relations.discard(triple)
        return self._relation_out(triple)

    def _relation_out(self, triple: tuple[str, str, str]) -> dict[str, Any]:
        s, r, t = triple
        return {"source": self.brief(s), "relation": r, "target": self.brief(t)}


# --------------------------------------------------------------------------- diffs


def state_diff(start: ScratchGraph, end: ScratchGraph) -> list[list[Any]]:
    """The edits that turn `start` into `end`, as sorted canonical items (module table).

    >>> a = ScratchGraph.from_snapshot({"entities": [{"id": "x", "name": "X", "props": {"n": 1}}]})
    >>> b = a.copy(); _ = b.update_entity("x", name="Y", props={"n": None, "m": "k"})
    >>> state_diff(a, b)
    [['set_name', 'x', 'Y'], ['set_prop', 'x', 'm', 'k'], ['set_prop', 'x', 'n', None]]
    """
    items: list[list[Any]] = []
    for entity_id, e in end.entities.items():
        before = start.entities.get(entity_id)
        if before is None:
            items.append(["add_entity", entity_id, e["name"], e["type"], dict(e["props"])])
            continue
        if e["name"] != before["name"]:
            items.append(["set_name", entity_id, e["name"]])
        for key in sorted(set(e["props"]) | set(before["props"])):
            new, old = e["props"].get(key), before["props"].get(key)
            if new != old or type(new) is not type(old):
                items.append(["set_prop", entity_id, key, new])
    items += [["remove_entity", i] for i in start.entities if i not in end.entities]
    items += [["add_relation", *t] for t in end.relations - start.relations]
    items += [["remove_relation", *t] for t in start.relations - end.relations]
    return sorted(items, key=edit_key)


def edit_key(item: Sequence[Any]) -> str:
    """A canonical text of one diff item, to compare and sort them.

    >>> edit_key(["set_prop", "x", "n", 1])
    '["set_prop","x","n",1]'
    """
    return json.dumps(list(item), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def describe_edit(item: Sequence[Any], names: Mapping[str, str] | None = None) -> str:
    """One diff item in words, entities by name where `names` knows them.

    >>> describe_edit(["add_relation", "a", "knows", "b"], {"a": "Ada", "b": "Bo"})
    'add relation "Ada" -[knows]-> "Bo"'
    """
    names = names or {}

    def n(entity_id: str) -> str:
        return json.dumps(names.get(entity_id, entity_id), ensure_ascii=False)

    op, *rest = item
    if op == "add_entity":
        entity_id, name, type_, props = rest
        extra = f" with props {compact_json(props)}" if props else ""
        return f'add entity "{name}" ({entity_id}) of type "{type_}"{extra}'
    if op == "remove_entity":
        return f"remove entity {n(rest[0])}"
    if op == "set_name":
        return f"rename {n(rest[0])} to {json.dumps(rest[1], ensure_ascii=False)}"
    if op == "set_prop":
        entity_id, key, value = rest
        if value is None:
            return f'remove prop "{key}" of {n(entity_id)}'
        return f'set prop "{key}" of {n(entity_id)} to {json.dumps(value, ensure_ascii=False)}'
    if op in ("add_relation", "remove_relation"):
        s, r, t = rest
        return f"{op.replace('_', ' ')} {n(s)} -[{r}]-> {n(t)}"
    return edit_key(item)


# --------------------------------------------------------------------------- tools


def edit_tools(graph: ScratchGraph, *, max_results: int = 50) -> list[FunctionTool]:
    """The graph-editing tools bound to one scratch graph (module table), in `EDIT_TOOL_NAMES`
    order. Outputs are compact JSON with entity ids; refusals are `ToolError`s."""

    def observe(value: Any, *ids: str) -> Observation:
        return Observation(content=compact_json(value), touched_entity_ids=list(dict.fromkeys(ids)))

    @tool(domain=_DOMAIN)
    def find_entities(query: str, limit: int = 10) -> Observation:
        """Find entities of the graph being edited whose name contains the query
        (case-insensitive), exact matches first.

        Args:
            query: part of the entity's name.
            limit: the most entities to return (1 to 50).
        """
        text = query.strip()
        if not text:
            raise ToolError("query must not be empty")
        results = graph.find(text, limit=max(1, min(limit, max_results)))
        if not results:
            raise ToolError(
                f"no entity named like {text!r} in this graph; if the request needs it, add it "
                "with add_entity"
            )
        return observe({"query": text, "results": results}, *(r["id"] for r in results))

    @tool(domain=_DOMAIN)
    def read_entity(entity_id: str) -> Observation:
        """Read an entity's name, type, description and props.

        Args:
            entity_id: the id of the entity.
        """
        e = graph.require(entity_id)
        out = {"id": entity_id, "name": e["name"], "type": e["type"]}
        if e["description"]:
            out["description"] = e["description"]
        out["props"] = dict(e["props"])
        return observe(out, entity_id)

    @tool(domain=_DOMAIN)
    def read_relations(
        entity_id: str,
        relation: str | None = None,
        direction: typing.Literal["out", "in", "both"] = "out",
    ) -> Observation:
        """List an entity's relations with the id and name of the entity at the other end.

        Args:
            entity_id: the id of the entity.
            relation: only relations of this type; all types when omitted.
            direction: "out" for relations from the entity, "in" for relations to it, or "both".
        """
        graph.require(entity_id)
        found = graph.relations_of(entity_id, relation=relation, direction=direction)
        out = {"entity": graph.brief(entity_id), "relations": found[:max_results]}
        if len(found) > max_results:
            out["truncated"] = True
        return observe(out, entity_id, *(r["id"] for r in out["relations"]))

    @tool(domain=_DOMAIN)
    def add_entity(name: str, type: str, props: dict[str, PropValue] | None = None) -> Observation:
        """Add a new entity; the reply gives its id (use it to link the entity).

        Args:
            name: the new entity's name (no other entity may have it).
            type: the new entity's type, e.g. "film".
            props: attributes of the new entity, e.g. {"release_year": 1999}.
        """
        added = graph.add_entity(name, type=type, props=props)
        return observe({"added": added}, added["id"])

    @tool(domain=_DOMAIN)
    def update_entity(
        entity_id: str, name: str | None = None, props: dict[str, PropValue] | None = None
    ) -> Observation:
        """Rename an entity and/or set its props (a prop set to null is removed).

        Args:
            entity_id: the id of the entity.
            name: its new name.
            props: the props to set, e.g. {"population": 120000}; others stay as they are.
        """
        return observe(
            {"updated": graph.update_entity(entity_id, name=name, props=props)}, entity_id
        )

    @tool(domain=_DOMAIN)
    def remove_entity(entity_id: str) -> Observation:
        """Remove an entity; it must have no relations left (remove them first).

        Args:
            entity_id: the id of the entity.
        """
        return observe({"removed": graph.remove_entity(entity_id)}, entity_id)

    @tool(domain=_DOMAIN)
    def add_relation(source_id: str, relation: str, target_id: str) -> Observation:
        """Add the relation source -[relation]-> target between two existing entities.

        Args:
            source_id: the id of the entity the relation goes from.
            relation: the relation type, e.g. "directed_by".
            target_id: the id of the entity the relation goes to.
        """
        return observe(
            {"added": graph.add_relation(source_id, relation, target_id)}, source_id, target_id
        )

    @tool(domain=_DOMAIN)
    def remove_relation(source_id: str, relation: str, target_id: str) -> Observation:
        """Remove the relation source -[relation]-> target.

        Args:
            source_id: the id of the entity the relation goes from.
            relation: the relation type.
            target_id: the id of the entity the relation goes to.
        """
        return observe(
            {"removed": graph.remove_relation(source_id, relation, target_id)},
            source_id,
            target_id,
        )

    return [
        find_entities,
        read_entity,
        read_relations,
        add_entity,
        update_entity,
        remove_entity,
        add_relation,
        remove_relation,
    ]


def edit_registry(graph: ScratchGraph, *, max_observation_chars: int = 8000) -> ToolRegistry:
    """A `ToolRegistry` of `edit_tools(graph)`: what one graph-edit trajectory is offered."""
    return ToolRegistry(edit_tools(graph), max_observation_chars=max_observation_chars)


def edit_tool_records() -> list[Tool]:
    """The Tool nodes of the edit tools (a run writes them, so Steps can point at them).

    >>> [t.id for t in edit_tool_records()][:3]
    ['find_entities@1', 'read_entity@1', 'read_relations@1']
    """
    return [t.tool for t in edit_tools(ScratchGraph())]
