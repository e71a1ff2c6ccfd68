"""The Cypher vocabulary of the Neo4j backend, in one home: names, property maps, driver errors.

| helper                                 | what it gives                                         |
|----------------------------------------|-------------------------------------------------------|
| `relationship_type(name)`              | the Neo4j type of a knowledge relation: `rel_` + token |
| `quote_name`, `label`                  | a checked, back-quoted label or type for query text   |
| `node_props`, `props_node`             | a record <-> its property map (JSON fields as strings) |
| `trusted_relation`, `record_edge`      | records read back, without re-validation              |
| `describe`, `DRIVER_ERRORS`            | a driver exception as one line for users              |
| `missing_entities`, `collision`        | the `StoreError`s writes raise                        |

Knowledge relations and lineage edges are two namespaces: every relation's relationship type
starts with `rel_` (`born_in` -> `rel_born_in`), and no edge kind (`CONTAINS`, `HAS_STEP`, ...)
does, so `MATCH ()-[:CONTAINS]->()` only ever finds lineage.

>>> relationship_type("/film/film/directed_by")
'rel_film_film_directed_by'
>>> quote_name("HAS_STEP")
'`HAS_STEP`'
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from neo4j import exceptions as ex

from kag.schema import EDGE_KINDS, NODE_CLASSES, Edge, Node, Relation, node_class, relation_token
from kag.stores.base import StoreError

__all__ = [
    "DRIVER_ERRORS",
    "KNOWLEDGE_PREFIX",
    "FIELDS",
    "check_edge_kind",
    "chunks",
    "collision",
    "describe",
    "dumps",
    "label",
    "missing_entities",
    "missing_ids",
    "node_props",
    "props_node",
    "quote_name",
    "record_edge",
    "relationship_type",
    "trusted_relation",
]

#: prefix of the relationship type of every knowledge relation; no edge kind starts with it
KNOWLEDGE_PREFIX = "rel_"
#: the exceptions the driver raises for server and connection problems
DRIVER_ERRORS: tuple[type[BaseException], ...] = (ex.Neo4jError, ex.DriverError)

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_T = TypeVar("_T")


def relationship_type(name: str) -> str:
    """The Neo4j relationship type of relations named `name`: `rel_` + `relation_token(name)`.

    >>> relationship_type("CONTAINS")
    'rel_CONTAINS'
    """
    return KNOWLEDGE_PREFIX + relation_token(name)


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON: how JSON fields and props are stored."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def quote_name(name: str) -> str:
    """A label or relationship type for query text, quoted; refuses anything but `[A-Za-z_]\\w*`."""
    if not _SAFE_NAME.match(name):
        raise StoreError(f"refusing to use {name!r} as a Neo4j label or relationship type")
    return f"`{name}`"


def label(kind: str) -> str:
    """The quoted label of a node kind; an unknown kind raises a `SchemaError` naming the known."""
    node_class(kind)
    return quote_name(kind)


def check_edge_kind(kind: str) -> None:
    if kind not in EDGE_KINDS:
        raise ValueError(f"unknown edge kind {kind!r}; known kinds: {', '.join(EDGE_KINDS)}")


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- records <-> properties

#: kind -> field name -> how it is stored: "json" (JSON string), "list" (list of strings),
#: "float" (float, ints converted so both backends return the same type) or "plain".
FIELDS: dict[str, dict[str, str]] = {}
for _kind, _cls in NODE_CLASSES.items():
    FIELDS[_kind] = {}
    for _f in dataclasses.fields(_cls):
        if _f.name == "id":
            continue
        _type = str(_f.type)
        if _f.name in _cls.JSON_FIELDS or _f.name == "tool_calls":
            _how = "json"
        elif _type.startswith("tuple"):
            _how = "list"
        elif _type.split("|")[0].strip() == "float":
            _how = "float"
        else:
            _how = "plain"
        FIELDS[_kind][_f.name] = _how


def node_props(node: Node) -> dict[str, Any]:
    """The property map of a record; None values are left out (Neo4j does not store nulls)."""
    props: dict[str, Any] = {"id": node.id}
    for name, how in FIELDS[node.KIND].items():
        value = getattr(node, name)
        if value is None:
            continue
        if how == "json":
            if name == "tool_calls":
                value = [c.to_dict() for c in value]
            value = dumps(value)
        elif how == "list":
            value = list(value)
        elif how == "float":
            value = float(value)
        props[name] = value
    return props


def props_node(kind: str, props: Mapping[str, Any]) -> Node:
    """The record of a property map written by `node_props`."""
    data: dict[str, Any] = {"id": props["id"]}
    for name, how in FIELDS[kind].items():
        if name not in props:
            continue
        value = props[name]
        if how == "json":
            value = json.loads(value)
        elif how == "list":
            value = tuple(value)
        data[name] = value
    return NODE_CLASSES[kind].from_trusted(data)


def trusted_relation(source: str, type_: str, target: str, props: str | None) -> Relation:
    # records read back were validated on write; skip the checks on the hot path
    rel = Relation.__new__(Relation)
    object.__setattr__(rel, "source", source)
    object.__setattr__(rel, "type", type_)
    object.__setattr__(rel, "target", target)
    object.__setattr__(rel, "props", json.loads(props) if props else {})
    return rel


def record_edge(kind: str, r: Any) -> Edge:
    """An `Edge` from a record with `sk`, `s`, `tk`, `t` and `props`."""
    edge = Edge.__new__(Edge)
    for name, value in (
        ("kind", kind),
        ("source_kind", r["sk"]),
        ("source", r["s"]),
        ("target_kind", r["tk"]),
        ("target", r["t"]),
        ("props", json.loads(r["props"]) if r["props"] else {}),
    ):
        object.__setattr__(edge, name, value)
    return edge


# --------------------------------------------------------------------------- errors


def describe(err: BaseException) -> str:
    """One line for users about a driver exception."""
    if isinstance(err, ex.AuthError):
        return "authentication failed: check the user and password (URL or KAG_NEO4J_PASSWORD)"
    if isinstance(err, (ex.ServiceUnavailable, ex.SessionExpired, ex.IncompleteCommit)):
        return f"the server is unreachable or went away ({type(err).__name__}: {err})"
    message = getattr(err, "message", None) or str(err)
    code = getattr(err, "code", None)
    return f"{message} ({code})" if code else message


def collision(name: str, other: str, token: str) -> StoreError:
    return StoreError(
        f"relation types {name!r} and {other!r} both map to the Neo4j relationship type {token!r}; "
        "rename one of them (Neo4j types are made of letters, digits and '_')"
    )


def missing_entities(missing: Sequence[str]) -> StoreError:
    return StoreError(
        f"{len(missing)} relation endpoint(s) are not entities of the graph, e.g. "
        f"{missing[:5]}; upsert the entities first (or list them in ensure_entities)"
    )


def missing_ids(tx: Any, kind: str, ids: Iterable[str]) -> list[str]:
    """The ids among `ids` that are not `kind` nodes of the graph, sorted."""
    result = tx.run(
        f"UNWIND $ids AS id OPTIONAL MATCH (n:{label(kind)} {{id: id}}) WITH id, n WHERE n IS NULL "
        "RETURN id ORDER BY id",
        ids=sorted(ids),
    )
    return [r["id"] for r in result]
