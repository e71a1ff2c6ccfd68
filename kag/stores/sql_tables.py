"""The SQL tables of the graph, as SQLAlchemy Core metadata, and how records map onto rows.

One table per node kind (columns = the record's fields; JSON fields as text), `relations` keyed by
integer entity and relation-type keys (compact, and the walk CSR reads it without joins), and one
`edges` table for every other edge kind. Migrations in `migrations/sql` create exactly these.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import sqlalchemy as sa

from kag.schema import NODE_CLASSES, Node, Step

metadata = sa.MetaData()

#: node kind -> table name
NODE_TABLES: dict[str, str] = {
    "Entity": "entities",
    "Tool": "tools",
    "Verifier": "verifiers",
    "Task": "tasks",
    "Trajectory": "trajectories",
    "Step": "steps",
    "Verification": "verifications",
    "Run": "runs",
    "Dataset": "datasets",
    "Model": "models",
}

_SQL_TYPES = {"str": sa.Text, "int": sa.Integer, "float": sa.Float, "bool": sa.Boolean}


def _column_type(cls: type[Node], f: dataclasses.Field) -> tuple[Any, bool]:
    """(SQL type, is_json) of a record field, read from its annotation."""
    if f.name in cls.JSON_FIELDS or f.name == "tool_calls" or str(f.type).startswith("tuple"):
        return sa.Text, True
    base = str(f.type).split("|")[0].strip()
    if base.startswith("Literal"):
        return sa.Text, False
    return _SQL_TYPES[base], False


#: node kind -> (field name -> is_json), in column order
NODE_FIELDS: dict[str, dict[str, bool]] = {}

for _kind, _cls in NODE_CLASSES.items():
    _columns: list[sa.Column] = []
    NODE_FIELDS[_kind] = {}
    if _kind == "Entity":
        _columns.append(sa.Column("key", sa.Integer, primary_key=True, autoincrement=True))
        _columns.append(sa.Column("id", sa.Text, nullable=False, unique=True))
    else:
        _columns.append(sa.Column("id", sa.Text, primary_key=True))
    for _f in dataclasses.fields(_cls):
        if _f.name == "id":
            continue
        _type, _is_json = _column_type(_cls, _f)
        NODE_FIELDS[_kind][_f.name] = _is_json
        _columns.append(sa.Column(_f.name, _type))
    sa.Table(NODE_TABLES[_kind], metadata, *_columns, sqlite_autoincrement=_kind == "Entity")

relation_types = sa.Table(
    "relation_types",
    metadata,
    sa.Column("key", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("phrase", sa.Text),
    sqlite_autoincrement=True,
)

relations = sa.Table(
    "relations",
    metadata,
    sa.Column("src", sa.Integer, primary_key=True),
    sa.Column("rel", sa.Integer, primary_key=True),
    sa.Column("dst", sa.Integer, primary_key=True),
    sa.Column("props", sa.Text),
    sqlite_with_rowid=False,
)

edges = sa.Table(
    "edges",
    metadata,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("target", sa.Text, primary_key=True),
    sa.Column("source_kind", sa.Text, nullable=False),
    sa.Column("target_kind", sa.Text, nullable=False),
    sa.Column("props", sa.Text),
    sqlite_with_rowid=False,
)

INDEXES = [
    sa.Index("ix_entities_name", metadata.tables["entities"].c.name),
    sa.Index("ix_entities_type", metadata.tables["entities"].c.type),
    sa.Index("ix_entities_domain", metadata.tables["entities"].c.domain),
    sa.Index("ix_relations_dst", relations.c.dst, relations.c.rel),
    sa.Index("ix_edges_target", edges.c.kind, edges.c.target),
    sa.Index("ix_tasks_signature", metadata.tables["tasks"].c.walk_signature),
    sa.Index("ix_tasks_family", metadata.tables["tasks"].c.family),
    sa.Index("ix_trajectories_task", metadata.tables["trajectories"].c.task_id),
    sa.Index("ix_trajectories_run", metadata.tables["trajectories"].c.run_id),
    sa.Index(
        "ix_steps_trajectory",
        metadata.tables["steps"].c.trajectory_id,
        metadata.tables["steps"].c.idx,
    ),
    sa.Index("ix_verifications_subject", metadata.tables["verifications"].c.subject_id),
    sa.Index("ix_models_weights_sha256", metadata.tables["models"].c.weights_sha256),
]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def node_row(node: Node) -> tuple:
    """The row tuple of a record, in `("id", *NODE_FIELDS[kind])` order."""
    out: list[Any] = [node.id]
    for name, is_json in NODE_FIELDS[node.KIND].items():
        value = getattr(node, name)
        if is_json:
            if name == "tool_calls":
                value = [c.to_dict() for c in value]
            elif isinstance(value, tuple):
                value = list(value)
            value = dumps(value)
        out.append(value)
    return tuple(out)


def row_node(kind: str, row: Any) -> Node:
    """Rebuild a record from a row of `("id", *NODE_FIELDS[kind])` values."""
    fields = NODE_FIELDS[kind]
    data: dict[str, Any] = {"id": row[0]}
    for (name, is_json), value in zip(fields.items(), row[1:], strict=True):
        if is_json and value is not None:
            value = json.loads(value)
            if isinstance(value, list) and name != "tool_calls":
                value = tuple(value)
        data[name] = value
    if kind == "Step":
        return Step.from_trusted(data)
    return NODE_CLASSES[kind].from_trusted(data)
