"""The graph model of DESIGN.md section 3: node kinds, edge kinds and the rules on ids and names.

Every other part of the project imports its records from here, so the rules live in one place:

| rule                | function                    |
|---------------------|-----------------------------|
| node ids            | `check_id`                  |
| `name@version` ids  | `versioned_id`              |
| relation names      | `check_relation_name`       |
| Neo4j rel. types    | `relation_token`            |

Records are frozen dataclasses. `Entity.from_dict({...})` validates a user's dict and names the
field at fault; `record.to_dict()` gives plain, JSON-ready data back.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from kag.messages import ROLES, chat_message, tool_call

__all__ = [
    "NODE_KINDS",
    "EDGE_KINDS",
    "EDGE_ENDPOINTS",
    "Node",
    "Entity",
    "Tool",
    "Verifier",
    "Task",
    "Trajectory",
    "Step",
    "ToolCall",
    "Verification",
    "Run",
    "Dataset",
    "Relation",
    "Edge",
    "SchemaError",
    "check_id",
    "check_relation_name",
    "relation_token",
    "versioned_id",
    "node_class",
    "TASK_FAMILIES",
]

MAX_ID_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_BAD = re.compile(r"[^A-Za-z0-9_]+")


class SchemaError(ValueError):
    """A record breaks a rule of the graph model; the message names the kind, id and field."""


def check_id(value: Any, *, what: str = "id") -> str:
    """Return `value` if it is a valid node id, else raise `SchemaError`.

    Ids are non-empty strings of at most 1024 characters without control characters
    (a tab or newline in an id would corrupt every line-based export).

    >>> check_id("/m/027rn")
    '/m/027rn'
    """
    if not isinstance(value, str):
        raise SchemaError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if not value or not value.strip():
        raise SchemaError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise SchemaError(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if _CONTROL.search(value):
        raise SchemaError(f"{what} {value!r} contains a control character")
    return value


def check_relation_name(value: Any) -> str:
    """Return `value` if it is a valid relation name (free text, not empty, no control chars).

    >>> check_relation_name("/film/film/directed_by")
    '/film/film/directed_by'
    """
    if not isinstance(value, str):
        raise SchemaError(f"relation type must be a string, got {type(value).__name__}")
    if not value.strip():
        raise SchemaError("relation type must not be empty")
    if _CONTROL.search(value):
        raise SchemaError(f"relation type {value!r} contains a control character")
    if len(value) > MAX_ID_LENGTH:
        raise SchemaError(f"relation type is longer than {MAX_ID_LENGTH} characters")
    return value


def relation_token(name: str) -> str:
    """Map a relation name to a Neo4j relationship type `[A-Za-z_][A-Za-z0-9_]*`, deterministically.

    Runs of other characters become one `_`, leading/trailing `_` are dropped, and a `R_` prefix is
    added when the result would start with a digit or be empty. Two names that map to the same token
    are a collision, which stores report as an error (the original name is kept as a property).

    >>> relation_token("/film/film/directed_by")
    'film_film_directed_by'
    >>> relation_token("2nd cousin")
    'R_2nd_cousin'
    """
    check_relation_name(name)
    token = _TOKEN_BAD.sub("_", name).strip("_")
    if not token or token[0].isdigit():
        token = "R_" + token
    return token


def versioned_id(name: str, version: str) -> str:
    """The `name@version` id of tools and verifiers.

    >>> versioned_id("get_entity", "1")
    'get_entity@1'
    """
    if not isinstance(name, str) or not name or "@" in name or _CONTROL.search(name):
        raise SchemaError(
            f"name {name!r} must be a non-empty string without '@' or control characters"
        )
    if not isinstance(version, str) or not version or "@" in version or _CONTROL.search(version):
        raise SchemaError(f"version {version!r} of {name!r} must be a non-empty string without '@'")
    return f"{name}@{version}"


def _json_ready(value: Any, where: str) -> Any:
    """Check that `value` survives a JSON round trip (props are stored as JSON everywhere)."""
    if isinstance(value, dict) and not value:
        return {}  # the common case, and relations are written by the hundred thousand
    try:
        text = json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise SchemaError(f"{where} must be JSON-serialisable: {err}") from None
    return json.loads(text)


# --------------------------------------------------------------------------- nodes


@functools.cache
def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(cls)


@dataclass(frozen=True, kw_only=True, slots=True)
class Node:
    """Base of all node kinds: a stable string `id` and free-form JSON `props`."""

    KIND: ClassVar[str] = "Node"
    #: fields stored as JSON text in SQL and as JSON strings in Neo4j
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("props",)

    id: str
    props: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id(self.id, what=f"{self.KIND} id")
        for name in self.JSON_FIELDS:
            value = getattr(self, name)
            object.__setattr__(
                self, name, _json_ready(value, f"{self.KIND} {self.id!r} field {name!r}")
            )
        self._validate()

    def _validate(self) -> None:
        """Kind-specific rules; raise `SchemaError` naming the id and field."""

    def _fail(self, field_name: str, message: str) -> SchemaError:
        return SchemaError(f"{self.KIND} {self.id!r}: field {field_name!r} {message}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, str, numbers, None), ready for JSON or Parquet."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [v.to_dict() if hasattr(v, "to_dict") else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        """Build and validate from a mapping; unknown keys are an error naming them."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise SchemaError(
                f"{cls.KIND} must be a mapping or {cls.__name__}, got {type(data).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SchemaError(
                f"{cls.KIND} {data.get('id')!r}: unknown field(s) {sorted(unknown)}; "
                f"known fields are {sorted(names)} (put extra data under 'props')"
            )
        if "id" not in data:
            raise SchemaError(f"{cls.KIND} record has no 'id': {dict(data)!r:.200}")
        try:
            return cls(**cls._coerce(dict(data)))
        except TypeError as err:
            raise SchemaError(f"{cls.KIND} {data.get('id')!r}: {err}") from None

    @classmethod
    def _coerce(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Turn JSON-shaped values (lists) into the record's field types."""
        return data

    @classmethod
    def from_trusted(cls, data: Mapping[str, Any]) -> Node:
        """Rebuild a record read back from a store, skipping validation (it was validated on write).

        Stores call this on every row they return, so reads of millions of rows stay cheap.
        """
        obj = object.__new__(cls)
        values = cls._coerce(dict(data))
        for f in _fields(cls):
            if f.name in values:
                value = values[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()  # type: ignore[misc]
            object.__setattr__(obj, f.name, value)
        return obj


def _check_str(node: Node, name: str, *, empty_ok: bool = True) -> None:
    value = getattr(node, name)
    if not isinstance(value, str):
        raise node._fail(name, f"must be a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise node._fail(name, "must not be empty")


def _check_choice(node: Node, name: str, choices: tuple[Any, ...]) -> None:
    if getattr(node, name) not in choices:
        raise node._fail(name, f"must be one of {list(choices)}, got {getattr(node, name)!r}")


def _check_number(
    node: Node, name: str, *, integer: bool = False, minimum: float | None = None
) -> None:
    value = getattr(node, name)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise node._fail(name, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise node._fail(name, f"must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise node._fail(name, f"must be >= {minimum}, got {value!r}")


def _str_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise SchemaError(f"expected a list of strings, got the string {value!r}")
    return tuple(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class Entity(Node):
    """A corpus item C: an entity, fact, document chunk or constraint.

    >>> Entity(id="/m/027rn", name="Dominican Republic", type="country").name
    'Dominican Republic'
    """

    KIND: ClassVar[str] = "Entity"
    name: str = ""
    type: str = ""
    domain: str = ""
    description: str = ""

    def _validate(self) -> None:
        for name in ("name", "type", "domain", "description"):
            _check_str(self, name)


@dataclass(frozen=True, kw_only=True, slots=True)
class Tool(Node):
    """An action type A: a callable tool with an OpenAI-style JSON schema; id is `name@version`.

    >>> Tool.create(name="get_entity", description="Look up an entity", parameters={"type": "object", "properties": {}}).id
    'get_entity@1'
    """

    KIND: ClassVar[str] = "Tool"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("props", "parameters")
    name: str
    version: str = "1"
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    kind: str = "function"
    domain: str = ""

    @classmethod
    def create(cls, *, name: str, version: str = "1", **fields: Any) -> Tool:
        """Build a tool whose id is derived from its name and version."""
        return cls(id=versioned_id(name, version), name=name, version=version, **fields)

    def _validate(self) -> None:
        expected = versioned_id(self.name, self.version)
        if self.id != expected:
            raise self._fail("id", f"must be name@version, i.e. {expected!r}")
        params = self.parameters
        if not isinstance(params, Mapping) or params.get("type") != "object":
            raise self._fail("parameters", 'must be a JSON schema object with "type": "object"')
        if not isinstance(params.get("properties", {}), Mapping):
            raise self._fail("parameters", "has 'properties' that is not an object")
        required = params.get("required", [])
        if not isinstance(required, list) or not set(required) <= set(params.get("properties", {})):
            raise self._fail(
                "parameters", f"lists required names {required!r} not all in 'properties'"
            )
        for name in ("description", "kind", "domain"):
            _check_str(self, name)

    def spec(self) -> dict[str, Any]:
        """The OpenAI function spec of DESIGN section 4."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Verifier(Node):
    """A check definition V; id is `name@version`."""

    KIND: ClassVar[str] = "Verifier"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("props", "config")
    name: str
    kind: str = "rule"
    version: str = "1"
    config: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, *, name: str, version: str = "1", **fields: Any) -> Verifier:
        return cls(id=versioned_id(name, version), name=name, version=version, **fields)

    def _validate(self) -> None:
        expected = versioned_id(self.name, self.version)
        if self.id != expected:
            raise self._fail("id", f"must be name@version, i.e. {expected!r}")
        _check_str(self, "kind", empty_ok=False)


TASK_STATUSES = ("proposed", "active", "retired", "rejected")
#: the task families of the four teacher domains (DESIGN section 3)
TASK_FAMILIES = ("search", "compute", "tool_use", "instruction")


@dataclass(frozen=True, kw_only=True, slots=True)
class Task(Node):
    """A verifiable task x = (q, d, y*, E_q, V_q).

    `path` is the walk behind the task: entity ids and the relation type of each hop, as
    ``{"entities": [e0, e1, ...], "relations": [r1, ...]}`` (a set or obfuscated search task
    holds several chains under ``"branches"``: `kag.walks.path_branches`); `answers` are answer
    entity names;
    `family` is one of `TASK_FAMILIES` (the teacher domain whose verifiers and tools apply).
    """

    KIND: ClassVar[str] = "Task"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("props", "path")
    domain: str = ""
    question: str
    answers: tuple[str, ...] = ()
    answer_ids: tuple[str, ...] = ()
    hops: int = 0
    walk_signature: str = ""
    status: str = "active"
    path: Mapping[str, Any] = field(default_factory=dict)
    family: str = "search"

    @classmethod
    def _coerce(cls, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("family") is None:  # a record written before families existed
            data.pop("family", None)
        for name in ("answers", "answer_ids"):
            if name in data:
                data[name] = _str_tuple(data[name])
        return data

    def _validate(self) -> None:
        _check_str(self, "question", empty_ok=False)
        _check_number(self, "hops", integer=True, minimum=0)
        _check_choice(self, "status", TASK_STATUSES)
        _check_choice(self, "family", TASK_FAMILIES)
        if not isinstance(self.answers, tuple) or not all(isinstance(a, str) for a in self.answers):
            raise self._fail("answers", "must be a list of strings")
        if not isinstance(self.answer_ids, tuple) or not all(
            isinstance(a, str) for a in self.answer_ids
        ):
            raise self._fail("answer_ids", "must be a list of strings")


TRAJECTORY_STATUSES = ("completed", "truncated", "aborted")
VERDICTS = ("accepted", "rejected")


@dataclass(frozen=True, kw_only=True, slots=True)
class Trajectory(Node):
    """One attempt at a task by one policy."""

    KIND: ClassVar[str] = "Trajectory"
    task_id: str
    run_id: str = ""
    policy: str = ""
    status: str = "completed"
    verdict: str = "rejected"
    reward: float = 0.0
    n_turns: int = 0
    n_tokens: int = 0
    answer: str | None = None

    def _validate(self) -> None:
        check_id(self.task_id, what=f"Trajectory {self.id!r} task_id")
        _check_choice(self, "status", TRAJECTORY_STATUSES)
        _check_choice(self, "verdict", VERDICTS)
        _check_number(self, "reward")
        _check_number(self, "n_turns", integer=True, minimum=0)
        _check_number(self, "n_tokens", integer=True, minimum=0)


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCall:
    """One function call of an assistant message: `arguments` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    def to_message(self) -> dict[str, Any]:
        """DESIGN section 4 shape: `{"id", "type": "function", "function": {name, arguments}}`."""
        return tool_call(self.id, self.name, self.arguments)


@dataclass(frozen=True, kw_only=True, slots=True)
class Step(Node):
    """One message of a trajectory (s_t, a_t, o_t): `idx` orders the steps.

    Assistant steps carry `reasoning` and `tool_calls`; tool steps carry the observation as
    `content` with `tool_call_id` and `name`. `to_message()` gives the DESIGN section 4 message.
    """

    KIND: ClassVar[str] = "Step"
    trajectory_id: str
    idx: int
    role: str
    content: str = ""
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    n_tokens: int = 0

    @classmethod
    def _coerce(cls, data: dict[str, Any]) -> dict[str, Any]:
        calls = data.get("tool_calls") or ()
        if isinstance(calls, str):
            calls = json.loads(calls)
        data["tool_calls"] = tuple(c if isinstance(c, ToolCall) else ToolCall(**c) for c in calls)
        return data

    def _validate(self) -> None:
        check_id(self.trajectory_id, what=f"Step {self.id!r} trajectory_id")
        _check_number(self, "idx", integer=True, minimum=0)
        _check_choice(self, "role", ROLES)
        _check_str(self, "content")
        if not all(isinstance(c, ToolCall) for c in self.tool_calls):
            raise self._fail("tool_calls", "must be a list of ToolCall")
        if self.tool_calls and self.role != "assistant":
            raise self._fail(
                "tool_calls", f"only assistant steps carry tool calls, not {self.role!r}"
            )

    @classmethod
    def from_message(
        cls, message: Mapping[str, Any], *, id: str, trajectory_id: str, idx: int, n_tokens: int = 0
    ) -> Step:
        """Build a step from a DESIGN section 4 message."""
        calls = tuple(
            ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
            for c in (message.get("tool_calls") or ())
        )
        return cls(
            id=id,
            trajectory_id=trajectory_id,
            idx=idx,
            role=message["role"],
            content=message.get("content") or "",
            reasoning=message.get("reasoning_content"),
            tool_calls=calls,
            tool_call_id=message.get("tool_call_id"),
            name=message.get("name"),
            n_tokens=n_tokens,
        )

    def to_message(self) -> dict[str, Any]:
        """The DESIGN section 4 message for this step."""
        return chat_message(
            self.role,
            self.content,
            reasoning=self.reasoning,
            tool_calls=[c.to_message() for c in self.tool_calls],
            tool_call_id=self.tool_call_id,
            name=self.name,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Verification(Node):
    """One run of a Verifier on a Trajectory or Step; `passed` is None when it could not decide."""

    KIND: ClassVar[str] = "Verification"
    verifier_id: str
    subject_id: str
    subject_kind: Literal["Trajectory", "Step"] = "Trajectory"
    passed: bool | None = None
    score: float = 0.0
    detail: str = ""

    def _validate(self) -> None:
        check_id(self.verifier_id, what=f"Verification {self.id!r} verifier_id")
        check_id(self.subject_id, what=f"Verification {self.id!r} subject_id")
        _check_choice(self, "subject_kind", ("Trajectory", "Step"))
        _check_choice(self, "passed", (True, False, None))
        _check_number(self, "score")
        _check_str(self, "detail")


RUN_STATUSES = ("running", "completed", "failed", "interrupted")


@dataclass(frozen=True, kw_only=True, slots=True)
class Run(Node):
    """One self-play, export or training run; `counters` hold its running totals."""

    KIND: ClassVar[str] = "Run"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("props", "config", "counters")
    kind: str
    config: Mapping[str, Any] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str | None = None
    status: str = "running"
    counters: Mapping[str, Any] = field(default_factory=dict)

    def _validate(self) -> None:
        _check_str(self, "kind", empty_ok=False)
        _check_choice(self, "status", RUN_STATUSES)


@dataclass(frozen=True, kw_only=True, slots=True)
class Dataset(Node):
    """One exported dataset, for lineage from data to training."""

    KIND: ClassVar[str] = "Dataset"
    path: str
    kind: str = "sft"
    manifest_sha256: str = ""
    rows: int = 0

    def _validate(self) -> None:
        _check_str(self, "path", empty_ok=False)
        _check_number(self, "rows", integer=True, minimum=0)


#: the training stage a Model checkpoint came from (DESIGN section 3)
MODEL_STAGES: tuple[str, ...] = ("base", "sft", "grpo", "opd")


@dataclass(frozen=True, kw_only=True, slots=True)
class Model(Node):
    """One checkpoint (a start model or a trained one), for lineage from data to weights.

    >>> Model(id="model:ab12", path="runs/sft/final", stage="sft", weights_sha256="ab12").stage
    'sft'
    """

    KIND: ClassVar[str] = "Model"
    path: str
    stage: str = "base"
    weights_sha256: str = ""

    def _validate(self) -> None:
        _check_str(self, "path", empty_ok=False)
        _check_choice(self, "stage", MODEL_STAGES)


NODE_CLASSES: dict[str, type[Node]] = {
    cls.KIND: cls
    for cls in (Entity, Tool, Verifier, Task, Trajectory, Step, Verification, Run, Dataset, Model)
}
NODE_KINDS: tuple[str, ...] = tuple(NODE_CLASSES)


def node_class(kind: str) -> type[Node]:
    """The record class of a node kind name; raises naming the known kinds."""
    try:
        return NODE_CLASSES[kind]
    except KeyError:
        raise SchemaError(
            f"unknown node kind {kind!r}; known kinds: {', '.join(NODE_KINDS)}"
        ) from None


# --------------------------------------------------------------------------- edges


@dataclass(frozen=True, kw_only=True, slots=True)
class Relation:
    """Domain knowledge: `source -[type]-> target` between entities; unique by (source, type, target).

    >>> Relation(source="/m/a", type="/film/film/directed_by", target="/m/b").token
    'film_film_directed_by'
    """

    source: str
    type: str
    target: str
    props: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id(self.source, what="relation source")
        check_id(self.target, what="relation target")
        check_relation_name(self.type)
        object.__setattr__(self, "props", _json_ready(self.props, f"relation {self.key} props"))

    @classmethod
    def trusted(cls, source: str, type: str, target: str) -> Relation:  # noqa: A002
        """A relation without props whose ids and type were already validated (bulk paths)."""
        rel = object.__new__(cls)
        object.__setattr__(rel, "source", source)
        object.__setattr__(rel, "type", type)
        object.__setattr__(rel, "target", target)
        object.__setattr__(rel, "props", {})
        return rel

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.type, self.target)

    @property
    def token(self) -> str:
        return relation_token(self.type)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "type": self.type,
            "target": self.target,
            "props": self.props,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Relation) -> Relation:
        if isinstance(data, Relation):
            return data
        if isinstance(data, (tuple, list)) and len(data) == 3:
            return cls(source=data[0], type=data[1], target=data[2])
        if not isinstance(data, Mapping):
            raise SchemaError(
                f"a relation must be a mapping or (source, type, target), got {data!r:.100}"
            )
        missing = {"source", "type", "target"} - set(data)
        if missing:
            raise SchemaError(f"relation {dict(data)!r:.200} is missing {sorted(missing)}")
        unknown = set(data) - {"source", "type", "target", "props"}
        if unknown:
            raise SchemaError(f"relation has unknown field(s) {sorted(unknown)}")
        return cls(**data)


#: edge kind -> allowed (source kind, target kind) pairs (DESIGN section 3).
EDGE_ENDPOINTS: dict[str, tuple[tuple[str, str], ...]] = {
    "SUPPORTS": (("Entity", "Task"),),
    "CHECKED_BY": (("Task", "Verifier"),),
    "SOLVES": (("Trajectory", "Task"),),
    "HAS_STEP": (("Trajectory", "Step"),),
    "TRANSITIONS_TO": (("Step", "Step"),),
    "USED_TOOL": (("Step", "Tool"),),
    "TOUCHED": (("Step", "Entity"),),
    "DEPENDS_ON": (("Tool", "Tool"), ("Step", "Step")),
    "PRODUCES": (("Step", "Entity"),),
    "VERIFIES": (("Verification", "Trajectory"), ("Verification", "Step")),
    "APPLIES": (("Verification", "Verifier"),),
    "PRODUCED_BY": (("Trajectory", "Run"), ("Dataset", "Run"), ("Task", "Run"), ("Model", "Run")),
    "CONTAINS": (("Dataset", "Trajectory"),),
    "TRAINED_ON": (("Model", "Dataset"),),
    "DERIVED_FROM": (("Model", "Model"),),
    "USED_MODEL": (("Run", "Model"),),
}
EDGE_KINDS: tuple[str, ...] = tuple(EDGE_ENDPOINTS)


@dataclass(frozen=True, kw_only=True, slots=True)
class Edge:
    """A typed link between two nodes (every edge kind but RELATION); unique by (kind, source, target).

    >>> Edge(kind="SOLVES", source_kind="Trajectory", source="t1", target_kind="Task", target="q1").kind
    'SOLVES'
    """

    kind: str
    source_kind: str
    source: str
    target_kind: str
    target: str
    props: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in EDGE_ENDPOINTS:
            raise SchemaError(
                f"unknown edge kind {self.kind!r}; known kinds: {', '.join(EDGE_KINDS)}"
            )
        if (self.source_kind, self.target_kind) not in EDGE_ENDPOINTS[self.kind]:
            allowed = ", ".join(f"{a}->{b}" for a, b in EDGE_ENDPOINTS[self.kind])
            raise SchemaError(
                f"edge {self.kind} cannot go {self.source_kind}->{self.target_kind}; allowed: {allowed}"
            )
        check_id(self.source, what=f"{self.kind} source")
        check_id(self.target, what=f"{self.kind} target")
        object.__setattr__(self, "props", _json_ready(self.props, f"{self.kind} edge props"))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.source, self.target)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source_kind": self.source_kind,
            "source": self.source,
            "target_kind": self.target_kind,
            "target": self.target,
            "props": self.props,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Edge) -> Edge:
        if isinstance(data, Edge):
            return data
        try:
            return cls(**data)
        except TypeError as err:
            raise SchemaError(f"edge {dict(data)!r:.200}: {err}") from None
