"""The Arrow schema of exported datasets (DESIGN section 5), defined once and versioned.

| kind | one row per                     | columns                                   |
|------|---------------------------------|-------------------------------------------|
| sft  | accepted trajectory             | `COMMON_FIELDS`                           |
| rl   | task (prompt = system + user)   | `COMMON_FIELDS` + `verifiers`, `hops`     |
| opd  | task with domain routing        | rl columns + `teacher`, `protocol`        |

`messages` holds DESIGN section 4 messages as `list<struct>`; `tools` is the JSON text of the
OpenAI function specs, so `json.loads(row["tools"])` goes straight into `apply_chat_template`.
Bump `SCHEMA_VERSION` whenever a column is added, removed or changes type.

>>> dataset_schema("rl").field("hops").type
DataType(int32)
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "DATASET_KINDS",
    "DatasetKind",
    "MESSAGE_TYPE",
    "TOOL_CALL_TYPE",
    "COMMON_FIELDS",
    "dataset_schema",
    "check_kind",
]

#: version of the dataset layout; readers compare it with `manifest.json["schema_version"]`
SCHEMA_VERSION = 2

DatasetKind = Literal["sft", "rl", "opd"]
DATASET_KINDS: tuple[str, ...] = ("sft", "rl", "opd")

TOOL_CALL_TYPE = pa.struct(
    [
        pa.field("id", pa.string()),
        pa.field("type", pa.string()),
        pa.field(
            "function",
            pa.struct([pa.field("name", pa.string()), pa.field("arguments", pa.string())]),
        ),
    ]
)

#: one chat message of DESIGN section 4; absent optional parts are nulls
MESSAGE_TYPE = pa.struct(
    [
        pa.field("role", pa.string()),
        pa.field("content", pa.string()),
        pa.field("reasoning_content", pa.string()),
        pa.field("tool_calls", pa.list_(TOOL_CALL_TYPE)),
        pa.field("tool_call_id", pa.string()),
        pa.field("name", pa.string()),
    ]
)

_STRINGS = pa.list_(pa.string())

COMMON_FIELDS: tuple[pa.Field, ...] = (
    pa.field("id", pa.string(), nullable=False),
    pa.field("task_id", pa.string(), nullable=False),
    pa.field("trajectory_id", pa.string()),
    pa.field("family", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("messages", pa.list_(MESSAGE_TYPE)),
    pa.field("tools", pa.string()),
    pa.field("answers", _STRINGS),
    pa.field("verdict", pa.string()),
    pa.field("reward", pa.float64()),
    pa.field("n_turns", pa.int32()),
    # beyond DESIGN section 5: the trajectory's token count, for length filters and the card
    pa.field("n_tokens", pa.int64()),
    pa.field("policy", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("entity_ids", _STRINGS),
    pa.field("tool_ids", _STRINGS),
    pa.field("verification_ids", _STRINGS),
)

_RL_FIELDS = (pa.field("verifiers", pa.string()), pa.field("hops", pa.int32()))
_OPD_FIELDS = (pa.field("teacher", pa.string()), pa.field("protocol", pa.string()))


def check_kind(kind: str) -> str:
    """Return `kind` if it is a dataset kind, else raise `ValueError` naming the choices.

    >>> check_kind("sft")
    'sft'
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose from {', '.join(DATASET_KINDS)}")
    return kind


def dataset_schema(kind: str) -> pa.Schema:
    """The Arrow schema of a dataset kind, with the schema version in its metadata."""
    fields = list(COMMON_FIELDS)
    if check_kind(kind) in ("rl", "opd"):
        fields += _RL_FIELDS
    if kind == "opd":
        fields += _OPD_FIELDS
    return pa.schema(
        fields,
        metadata={b"kag.schema_version": str(SCHEMA_VERSION).encode(), b"kag.kind": kind.encode()},
    )
