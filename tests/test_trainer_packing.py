"""Packing: best-fit-decreasing rows, restarting positions, boundary labels, overflow counts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from trainer.data import Document
from trainer.packing import (
    IGNORE_INDEX,
    best_fit_decreasing,
    collate_rows,
    pack_documents,
)


def _doc(doc_id: str, tokens: list[int], targets: list[int] | None = None) -> Document:
    mask = np.ones(len(tokens), bool) if targets is None else np.array(targets, bool)
    return Document(doc_id, np.array(tokens, np.int32), mask)


def test_best_fit_decreasing_puts_each_item_into_the_tightest_bin_that_fits():
    bins = best_fit_decreasing([6, 5, 4, 3, 2], capacity=10)
    assert sorted(sorted(b) for b in bins) == [[0, 2], [1, 3, 4]]
    with pytest.raises(ValueError, match="capacity"):
        best_fit_decreasing([11], capacity=10)


def test_packed_rows_restart_positions_and_ignore_the_first_label_of_every_document():
    docs = [_doc("a", [11, 12, 13]), _doc("b", [21, 22]), _doc("c", [31, 32, 33, 34])]
    rows, report = pack_documents(docs, max_seq_len=9)
    assert report.n_rows == 1
    row = rows[0]
    # longest first: c, a, b
    assert row.input_ids.tolist() == [31, 32, 33, 34, 11, 12, 13, 21, 22]
    assert row.position_ids.tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1]
    assert row.document_ids.tolist() == [2, 2, 2, 2, 0, 0, 0, 1, 1]
    # the first token of a document is never predicted from the previous document's last token
    assert row.labels.tolist() == [IGNORE_INDEX, 32, 33, 34, IGNORE_INDEX, 12, 13, IGNORE_INDEX, 22]


def test_labels_keep_only_the_loss_mask_targets():
    rows, report = pack_documents([_doc("a", [1, 2, 3, 4], [0, 0, 1, 1])], max_seq_len=8)
    assert rows[0].labels.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 3, 4]
    assert report.n_targets == 2


def test_overlong_documents_are_truncated_or_dropped_and_counted():
    docs = [_doc("long", list(range(1, 13))), _doc("short", [1, 2, 3])]
    rows, report = pack_documents(docs, max_seq_len=8, overflow="truncate")
    assert report.n_truncated == 1 and report.n_dropped == 0
    assert sorted(len(r) for r in rows) == [3, 8]
    assert rows[0].input_ids.tolist() == list(range(1, 9))
    rows, report = pack_documents(docs, max_seq_len=8, overflow="drop")
    assert report.n_dropped == 1 and report.n_truncated == 0
    assert [r.input_ids.tolist() for r in rows] == [[1, 2, 3]]
    with pytest.raises(ValueError, match="overflow"):
        pack_documents(docs, max_seq_len=8, overflow="wrap")


def test_padding_is_its_own_attention_block_and_never_a_target():
    rows, _ = pack_documents([_doc("a", [5, 6, 7])], max_seq_len=8)
    batch = collate_rows(rows, pad_token_id=0, length=6)
    assert batch.input_ids.tolist() == [[5, 6, 7, 0, 0, 0]]
    assert batch.labels[0, 3:].tolist() == [IGNORE_INDEX] * 3
    assert batch.document_ids[0, 3:].tolist() == [-1, -1, -1]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1, 2]]
    assert batch.real_tokens.sum().item() == 3


def test_best_fit_decreasing_fills_rows_almost_completely_on_varied_lengths():
    rng = random.Random(0)
    docs = [_doc(str(i), [1] * rng.randint(50, 900)) for i in range(400)]
    rows, report = pack_documents(docs, max_seq_len=2048)
    assert report.n_tokens == sum(len(d) for d in docs)
    assert all(len(r) <= 2048 for r in rows)
    assert report.fill_fraction > 0.97


def test_a_packed_batch_gives_its_tensors_in_the_order_the_model_takes_them():
    rows, _ = pack_documents([_doc("a", [5, 6, 7]), _doc("b", [8, 9])], max_seq_len=8)
    batch = collate_rows(rows, pad_token_id=0)
    input_ids, labels, position_ids, document_ids = batch.tensors()
    assert input_ids is batch.input_ids and labels is batch.labels
    assert position_ids is batch.position_ids and document_ids is batch.document_ids
