"""Sample packing: best-fit-decreasing documents into rows of `max_seq_len` tokens.

| function               | what it gives                                                        |
|------------------------|----------------------------------------------------------------------|
| `best_fit_decreasing`  | bins of document indices, longest first, each into the fullest bin it fits |
| `pack_documents`       | `PackedRow`s (ids, labels, position ids, document ids) + a `PackingReport` |
| `collate_rows`         | a `PackedBatch` of tensors, padded to the longest row                |

Labels use the Hugging Face convention (`labels[t]` is the token at `t`, predicted from position
`t - 1`), so the first label of every document is ignored: otherwise the last token of one document
would learn to predict the first token of the next. Position ids restart at 0 for every document.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from trainer.data import Document

__all__ = [
    "IGNORE_INDEX",
    "PackedRow",
    "PackedBatch",
    "PackingReport",
    "best_fit_decreasing",
    "pack_documents",
    "collate_rows",
]

IGNORE_INDEX = -100
Overflow = Literal["truncate", "drop"]


@dataclass(frozen=True, slots=True)
class PackedRow:
    """One row of packed documents; `document_ids` index the documents given to `pack_documents`."""

    input_ids: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n], IGNORE_INDEX where not a target
    position_ids: np.ndarray  # int64 [n], restart at 0 per document
    document_ids: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True, kw_only=True, slots=True)
class PackingReport:
    """What packing did: counts users check when a dataset packs badly."""

    n_documents: int
    n_rows: int
    n_truncated: int  # documents cut to max_seq_len (overflow="truncate")
    n_dropped: int  # documents left out (overflow="drop")
    n_tokens: int  # real tokens in all rows
    n_targets: int  # tokens with a label
    fill_fraction: float  # n_tokens / (n_rows * max_seq_len)


@dataclass(frozen=True, slots=True)
class PackedBatch:
    """Tensors of a micro-batch, `[rows, length]`; padding has `document_ids == -1`."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    document_ids: torch.Tensor

    @property
    def real_tokens(self) -> torch.Tensor:
        """Bool mask of tokens that belong to a document (not padding)."""
        return self.document_ids >= 0

    @property
    def n_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(*(t.to(device, non_blocking=True) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """`(input_ids, labels, position_ids, document_ids)`: the arguments of `PackedCausalLM`.

        >>> loss = PackedCausalLM(model, attention="sdpa_block_mask")(*batch.tensors())["ce_sum"]
        """
        return self.input_ids, self.labels, self.position_ids, self.document_ids


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of indices whose lengths sum to at most `capacity`, longest item first, each into the
    bin with the least room that still fits it. Every length must be at most `capacity`.

    >>> best_fit_decreasing([3, 5, 2, 4], capacity=7)
    [[1, 2], [3, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # (room left, bin index), kept sorted so bisect finds the tightest bin that fits in O(log n)
    rooms: list[tuple[int, int]] = []
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"item {i} has length {size} > capacity {capacity}")
        at = bisect.bisect_left(rooms, (size, -1))
        if at == len(rooms):
            bins.append([i])
            room, index = capacity - size, len(bins) - 1
        else:
            room, index = rooms.pop(at)
            bins[index].append(i)
            room -= size
        if room > 0:
            bisect.insort(rooms, (room, index))
    return bins


def pack_documents(
    documents: Sequence[Document], *, max_seq_len: int, overflow: Overflow = "truncate"
) -> tuple[list[PackedRow], PackingReport]:
    """Pack documents into rows of at most `max_seq_len` tokens (best fit decreasing).

    >>> docs = [Document("a", np.array([1, 2, 3], np.int32), np.array([0, 1, 1], bool)),
    ...         Document("b", np.array([4, 5], np.int32), np.array([1, 1], bool))]
    >>> rows, report = pack_documents(docs, max_seq_len=8)
    >>> rows[0].input_ids.tolist(), rows[0].labels.tolist(), rows[0].position_ids.tolist()
    ([1, 2, 3, 4, 5], [-100, 2, 3, -100, 5], [0, 1, 2, 0, 1])
    """
    if max_seq_len < 2:
        raise ValueError(f"max_seq_len must be at least 2, got {max_seq_len}")
    if overflow not in ("truncate", "drop"):
        raise ValueError(f"overflow must be 'truncate' or 'drop', got {overflow!r}")
    kept: list[int] = []
    lengths: list[int] = []
    n_truncated = n_dropped = 0
    for i, doc in enumerate(documents):
        n = len(doc)
        if n == 0:
            continue
        if n > max_seq_len:
            if overflow == "drop":
                n_dropped += 1
                continue
            n_truncated += 1
            n = max_seq_len
        kept.append(i)
        lengths.append(n)

    rows = []
    n_tokens = n_targets = 0
    for bin_ in best_fit_decreasing(lengths, max_seq_len):
        row = _build_row([(kept[j], documents[kept[j]], lengths[j]) for j in bin_])
        n_tokens += len(row)
        n_targets += int((row.labels != IGNORE_INDEX).sum())
        rows.append(row)
    report = PackingReport(
        n_documents=len(documents),
        n_rows=len(rows),
        n_truncated=n_truncated,
        n_dropped=n_dropped,
        n_tokens=n_tokens,
        n_targets=n_targets,
        fill_fraction=n_tokens / (len(rows) * max_seq_len) if rows else 0.0,
    )
    return rows, report


def _build_row(parts: list[tuple[int, Document, int]]) -> PackedRow:
    ids, labels, positions, doc_ids = [], [], [], []
    for index, doc, n in parts:
        tokens = doc.input_ids[:n].astype(np.int64)
        label = np.where(doc.loss_mask[:n], tokens, IGNORE_INDEX)
        label[0] = IGNORE_INDEX
        ids.append(tokens)
        labels.append(label)
        positions.append(np.arange(n, dtype=np.int64))
        doc_ids.append(np.full(n, index, dtype=np.int64))
    return PackedRow(
        np.concatenate(ids),
        np.concatenate(labels),
        np.concatenate(positions),
        np.concatenate(doc_ids),
    )


def collate_rows(
    rows: Sequence[PackedRow], *, pad_token_id: int, length: int | None = None
) -> PackedBatch:
    """Stack rows into tensors padded to `length` (default: the longest row).

    Padding gets `IGNORE_INDEX` labels, `document_ids == -1` and positions counting from 0, so it
    forms its own attention block and never touches a document.

    >>> row = pack_documents([Document("a", np.array([1, 2], np.int32), np.array([0, 1], bool))],
    ...                      max_seq_len=4)[0][0]
    >>> collate_rows([row], pad_token_id=0, length=4).input_ids.tolist()
    [[1, 2, 0, 0]]
    """
    if not rows:
        raise ValueError("collate_rows needs at least one row")
    width = max(len(r) for r in rows) if length is None else length
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    document_ids = torch.full(shape, -1, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        if n > width:
            raise ValueError(f"row {i} has {n} tokens, more than the batch length {width}")
        input_ids[i, :n] = torch.from_numpy(row.input_ids)
        labels[i, :n] = torch.from_numpy(row.labels)
        position_ids[i, :n] = torch.from_numpy(row.position_ids)
        position_ids[i, n:] = torch.arange(width - n)
        document_ids[i, :n] = torch.from_numpy(row.document_ids)
    return PackedBatch(input_ids, labels, position_ids, document_ids)
