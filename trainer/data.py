"""SFT data: stream dataset Parquet, render rows with the model's chat template, mask the loss.

| function                 | what it gives                                                        |
|--------------------------|----------------------------------------------------------------------|
| `dataset_files`          | the `data/{split}-{shard:05d}.parquet` files of a dataset, in order  |
| `iter_dataset_rows`      | rows (`id`, `messages`, `tools`) streamed batch by batch             |
| `render_conversation`    | token ids + assistant-only loss mask of one conversation             |
| `render_conversation_turns` | the same, plus the message index of every target token (GRPO)     |
| `tokenize_dataset`       | every row of a split as `Document`s, ready for `pack_documents`      |

The loss mask comes from rendering the conversation prefix by prefix: the assistant turn `k` is
the text between `render(messages[:k], add_generation_prompt=True)` and `render(messages[:k+1])`.
That is only right when each rendering is a prefix of the next, so this is checked turn by turn
and a template that breaks it (Qwen3's own drops earlier reasoning, for example) is reported with
the row id instead of being silently mis-masked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

__all__ = [
    "Document",
    "dataset_files",
    "iter_dataset_rows",
    "render_conversation",
    "render_conversation_turns",
    "tokenize_dataset",
]

_ROLES = ("system", "user", "assistant", "tool")
_READ_COLUMNS = ("id", "messages", "tools")


@dataclass(frozen=True, slots=True)
class Document:
    """One tokenised conversation: `loss_mask[i]` is True where token `i` is a training target.

    >>> Document("row-1", np.array([5, 6, 7], np.int32), np.array([0, 1, 1], bool)).n_targets
    2
    """

    id: str
    input_ids: np.ndarray  # int32 [n]
    loss_mask: np.ndarray  # bool [n]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.loss_mask.sum())


def dataset_files(data_dir: str | Path, split: str = "train") -> list[Path]:
    """The Parquet shards of `split`, in shard order.

    >>> dataset_files("ds")  # doctest: +SKIP
    [PosixPath('ds/data/train-00000.parquet'), PosixPath('ds/data/train-00001.parquet')]
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"dataset directory {root} does not exist")
    files = sorted((root / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise ValueError(
            f"dataset {root} has no {split!r} shards: expected {root}/data/{split}-00000.parquet"
        )
    return files


def iter_dataset_rows(
    data_dir: str | Path, split: str = "train", *, batch_rows: int = 256
) -> Iterator[dict[str, Any]]:
    """Stream the rows of a split as dicts with `id`, `messages` and `tools` (parsed), `file`, `row`.

    Only these three columns are read, `batch_rows` rows at a time, so a large dataset never sits
    in memory as Arrow.
    """
    for path in dataset_files(data_dir, split):
        parquet = pq.ParquetFile(path)
        names = set(parquet.schema_arrow.names)
        missing = [c for c in ("messages",) if c not in names]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; an SFT dataset needs 'messages'"
            )
        columns = [c for c in _READ_COLUMNS if c in names]
        row_index = 0
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            for record in batch.to_pylist():
                row_id = str(record.get("id") or f"{path.name}:{row_index}")
                yield {
                    "id": row_id,
                    "messages": record["messages"],
                    "tools": _parse_tools(record.get("tools"), row_id=row_id, path=path),
                    "file": str(path),
                    "row": row_index,
                }
                row_index += 1


def _parse_tools(raw: Any, *, row_id: str, path: Path) -> list[dict[str, Any]] | None:
    if raw is None or raw == "":
        return None
    try:
        tools = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: row {row_id}: field 'tools' is not valid JSON ({exc})") from None
    if not isinstance(tools, list):
        raise ValueError(
            f"{path}: row {row_id}: field 'tools' must be a JSON list of function specs"
        )
    return tools or None


def _clean_message(message: dict[str, Any], *, row_id: str, index: int) -> dict[str, Any]:
    """Drop null fields so templates see a plain OpenAI message (Parquet structs carry every key)."""
    if not isinstance(message, dict):
        raise ValueError(f"row {row_id}: message {index} is not an object")
    role = message.get("role")
    if role not in _ROLES:
        raise ValueError(
            f"row {row_id}: message {index} has role {role!r}; expected one of {_ROLES}"
        )
    clean = {k: v for k, v in message.items() if v is not None}
    clean.setdefault("content", "")
    for call_index, call in enumerate(clean.get("tool_calls") or []):
        function = (call or {}).get("function") or {}
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise ValueError(
                f"row {row_id}: message {index} tool_calls[{call_index}] has no function.name"
            )
    if not clean.get("tool_calls"):
        clean.pop("tool_calls", None)
    return clean


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, *, prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=prompt
    )


def render_conversation(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    row_id: str = "?",
) -> Document:
    """Tokenise one conversation with the chat template; only assistant turns are targets.

    An assistant turn's targets run from just after its header (`<|im_start|>assistant\\n`) to its
    end-of-turn token; trailing whitespace the template adds after that token is not trained.

    >>> doc = render_conversation(tok, [{"role": "user", "content": "hi"},
    ...                                 {"role": "assistant", "content": "hello"}])  # doctest: +SKIP
    >>> tok.decode(doc.input_ids[doc.loss_mask])                                   # doctest: +SKIP
    'hello<|im_end|>'
    """
    return render_conversation_turns(tokenizer, messages, tools=tools, row_id=row_id)[0]


def render_conversation_turns(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    row_id: str = "?",
) -> tuple[Document, np.ndarray]:
    """`render_conversation`, plus `token_turns` (int32 `[n]`): the index in `messages` of the
    assistant message each target token belongs to, -1 for every untrained token.

    GRPO puts a step's process advantage on the tokens of the turn that made the call.

    >>> doc, turns = render_conversation_turns(tok, [{"role": "user", "content": "hi"},
    ...                                              {"role": "assistant", "content": "hello"}])  # doctest: +SKIP
    >>> sorted(set(turns.tolist()))                                                     # doctest: +SKIP
    [-1, 1]
    """
    msgs = [_clean_message(m, row_id=row_id, index=i) for i, m in enumerate(messages)]
    if not any(m["role"] == "assistant" for m in msgs):
        raise ValueError(f"row {row_id}: no assistant message, nothing to train on")
    if msgs[0]["role"] == "assistant":
        raise ValueError(f"row {row_id}: message 0 is an assistant turn; a prompt must come first")
    try:
        spans, text = _assistant_spans(tokenizer, msgs, tools, row_id=row_id)
    except ValueError:
        raise
    except Exception as exc:  # jinja2 TemplateError and friends, from user data
        raise ValueError(f"row {row_id}: the chat template failed to render: {exc}") from None

    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int32)
    starts = np.asarray([s for s, _ in encoded["offset_mapping"]], dtype=np.int64)
    ends = np.asarray([e for _, e in encoded["offset_mapping"]], dtype=np.int64)
    token_starts = set(starts.tolist()) | {len(text)}
    turns = np.full(ids.shape[0], -1, dtype=np.int32)
    for turn, (lo, hi) in spans:
        for boundary in (lo, hi):
            if boundary not in token_starts:
                raise ValueError(
                    f"row {row_id}: message {turn}: the assistant turn boundary at character "
                    f"{boundary} falls inside a token, so the loss mask cannot follow it; "
                    "the template must separate turns with special tokens"
                )
        turns[(starts >= lo) & (ends <= hi) & (ends > starts)] = turn
    return Document(row_id, ids, turns >= 0), turns


def _assistant_spans(
    tokenizer: Any, msgs: list[dict[str, Any]], tools: Any, *, row_id: str
) -> tuple[list[tuple[int, tuple[int, int]]], str]:
    """Character spans of the assistant turns, checking that every prefix renders consistently."""
    spans: list[tuple[int, tuple[int, int]]] = []
    previous = ""
    for k, message in enumerate(msgs):
        if message["role"] == "assistant":
            prompt = _render(tokenizer, msgs[:k], tools, prompt=True)
            if not prompt.startswith(previous):
                _raise_inconsistent(row_id, k, previous, prompt)
            previous = prompt
        current = _render(tokenizer, msgs[: k + 1], tools, prompt=False)
        if not current.startswith(previous):
            _raise_inconsistent(row_id, k, previous, current)
        if message["role"] == "assistant":
            end = len(current.rstrip())
            spans.append((k, (len(previous), end)))
        previous = current
    return spans, previous


def _raise_inconsistent(row_id: str, k: int, before: str, after: str) -> None:
    at = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), None)
    at = min(len(before), len(after)) if at is None else at
    raise ValueError(
        f"row {row_id}: the chat template is not prefix-consistent at message {k}: rendering "
        f"messages[:{k + 1}] changes text already rendered for the earlier turns (first difference "
        f"at character {at}: {before[at : at + 40]!r} became {after[at : at + 40]!r}); assistant-only "
        "loss masks would be wrong. Use a template that renders each turn independently "
        "(for example keeps earlier reasoning), such as trainer.models.CHAT_TEMPLATE"
    )


def tokenize_dataset(
    tokenizer: Any, data_dir: str | Path, split: str = "train"
) -> Iterator[Document]:
    """Every row of `split` rendered and masked, in file order (see `render_conversation`).

    Errors name the file, the row index and the row id.
    """
    for record in iter_dataset_rows(data_dir, split):
        try:
            yield render_conversation(
                tokenizer, record["messages"] or [], tools=record["tools"], row_id=record["id"]
            )
        except ValueError as exc:
            raise ValueError(f"{record['file']} (row {record['row']}): {exc}") from None
