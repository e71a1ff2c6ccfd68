"""Document-masked attention: a packed row computes exactly what its documents compute alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.attention import (
    attention_kwargs,
    block_diagonal_causal_mask,
    prepare_model_attention,
    resolve_attention_backend,
)
from trainer.data import Document
from trainer.packing import collate_rows, pack_documents
from trainer.sft import PackedCausalLM, load_causal_lm

CPU_BACKENDS = ["sdpa_block_mask", "position_ids"]


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path):
    torch.manual_seed(0)
    model = load_causal_lm(tiny_model_dir)
    # random routers barely differ between experts; sharpen them so routing really varies
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "gate" in name and param.ndim == 2 and param.shape[0] == model.config.num_experts:
                param.normal_(0, 0.5)
    return model


def _documents(seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    docs = []
    for i, n in enumerate([37, 64, 23, 50]):
        # ids every tokenizer the tiny builder makes has (its vocabulary is smaller than the target)
        ids = rng.integers(5, 1000, n).astype(np.int32)
        mask = rng.random(n) < 0.6
        docs.append(Document(f"d{i}", ids, mask))
    return docs


def _packed(model, backend: str, docs: list[Document]):
    prepare_model_attention(model, backend)
    rows, _ = pack_documents(docs, max_seq_len=256)
    assert len(rows) == 1
    batch = collate_rows(rows, pad_token_id=0, length=192)  # includes trailing padding
    out = model.get_decoder()(input_ids=batch.input_ids, **attention_kwargs(batch, backend))
    logits = model.get_output_embeddings()(out.last_hidden_state)
    return rows[0], batch, logits


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_packed_forward_matches_unpacked_logits_loss_and_gradients(tiny_model, backend):
    model = tiny_model
    docs = _documents()
    row, batch, logits = _packed(model, backend, docs)
    wrapper = PackedCausalLM(model, attention=backend)
    # unpacked reference: each document alone, no mask at all
    model.zero_grad()
    ref_loss, ref_targets = torch.zeros(()), 0
    for index, doc in enumerate(docs):
        ids = torch.from_numpy(doc.input_ids.astype(np.int64))[None]
        alone = model(input_ids=ids, use_cache=False).logits[0]
        where = torch.from_numpy(row.document_ids == index)
        torch.testing.assert_close(logits[0, : len(row)][where], alone, rtol=1e-5, atol=1e-5)
        single = collate_rows(pack_documents([doc], max_seq_len=256)[0], pad_token_id=0)
        out = wrapper(single.input_ids, single.labels, single.position_ids, single.document_ids)
        out["ce_sum"].backward()
        ref_loss, ref_targets = (
            ref_loss + out["ce_sum"].detach(),
            ref_targets + int(out["n_targets"]),
        )
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    out = wrapper(batch.input_ids, batch.labels, batch.position_ids, batch.document_ids)
    out["ce_sum"].backward()
    assert int(out["n_targets"]) == ref_targets
    torch.testing.assert_close(out["ce_sum"].detach(), ref_loss, rtol=1e-5, atol=1e-5)
    for name, param in model.named_parameters():
        if name in ref_grads:
            torch.testing.assert_close(param.grad, ref_grads[name], rtol=1e-4, atol=1e-5)
    model.zero_grad()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_changing_one_document_leaves_every_other_documents_logits_bit_identical(
    tiny_model, backend
):
    docs = _documents()
    with torch.no_grad():
        row, _, before = _packed(tiny_model, backend, docs)
        changed = list(docs)
        victim = changed[1]
        changed[1] = Document(victim.id, (victim.input_ids * 7 + 3) % 1000, victim.loss_mask)
        row_after, _, after = _packed(tiny_model, backend, changed)
    assert np.array_equal(row.document_ids, row_after.document_ids)
    others = torch.from_numpy(row.document_ids != 1)
    n = len(row)
    assert not torch.equal(before[0, :n][~others], after[0, :n][~others])
    assert torch.equal(before[0, :n][others], after[0, :n][others])


def test_block_mask_never_attends_across_documents_or_into_padding():
    document_ids = torch.tensor([[0, 0, 1, 1, 1, -1]])
    mask = block_diagonal_causal_mask(document_ids)[0, 0]
    for q in range(6):
        for k in range(6):
            expected = k <= q and document_ids[0, q] == document_ids[0, k]
            assert bool(mask[q, k]) == bool(expected)


def test_backend_is_chosen_automatically_and_bad_choices_are_explained():
    assert resolve_attention_backend("auto", "cpu") == "sdpa_block_mask"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_attention_backend("flex", "cpu")
    with pytest.raises(ValueError, match="not one of"):
        resolve_attention_backend("magic", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_gpu_kernels_give_the_cpu_block_mask_loss(tiny_model_dir: Path):
    docs = _documents()
    rows, _ = pack_documents(docs, max_seq_len=256)
    batch = collate_rows(rows, pad_token_id=0, length=192)
    model = load_causal_lm(tiny_model_dir)
    prepare_model_attention(model, "sdpa_block_mask")
    with torch.no_grad():
        expected = PackedCausalLM(model, attention="sdpa_block_mask")(*batch.tensors())["ce_sum"]
    backend = resolve_attention_backend("auto", "cuda")
    model = model.cuda()
    prepare_model_attention(model, backend)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        got = PackedCausalLM(model, attention=backend)(*batch.to("cuda").tensors())["ce_sum"]
    torch.testing.assert_close(got.cpu(), expected, rtol=3e-2, atol=0.0)
