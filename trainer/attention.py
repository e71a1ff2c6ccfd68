"""Document-masked attention for packed rows: no token ever attends across a document boundary.

| backend          | where        | how                                                               |
|------------------|--------------|-------------------------------------------------------------------|
| `sdpa_block_mask`| CPU default  | SDPA with a block-diagonal causal boolean mask `[rows, 1, L, L]`   |
| `position_ids`   | any          | no mask; transformers derives the blocks from restarting positions |
| `flash_varlen`   | GPU, if `flash_attn` is installed | FlashAttention-2 varlen kernels, `cu_seq_lens` |
| `flex`           | GPU default otherwise | FlexAttention with a document `BlockMask`                 |

`resolve_attention_backend("auto", device)` picks the first that applies; `attention_kwargs`
turns a `PackedBatch` into the keyword arguments the Hugging Face model's forward takes.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch

from trainer.packing import PackedBatch

__all__ = [
    "AttentionBackend",
    "BACKENDS",
    "resolve_attention_backend",
    "prepare_model_attention",
    "attention_kwargs",
    "block_diagonal_causal_mask",
    "flatten_rows",
]

AttentionBackend = Literal["auto", "sdpa_block_mask", "position_ids", "flash_varlen", "flex"]
BACKENDS: tuple[str, ...] = ("auto", "sdpa_block_mask", "position_ids", "flash_varlen", "flex")
# backend -> the transformers `attn_implementation` it runs on
_IMPLEMENTATION = {
    "sdpa_block_mask": "sdpa",
    "position_ids": "sdpa",
    "flash_varlen": "flash_attention_2",
    "flex": "flex_attention",
}


def resolve_attention_backend(requested: str, device: torch.device | str) -> str:
    """The backend to use: `requested`, or for `"auto"` the fastest one the device supports.

    >>> resolve_attention_backend("auto", "cpu")
    'sdpa_block_mask'
    """
    if requested not in BACKENDS:
        raise ValueError(f"attention backend {requested!r} is not one of {BACKENDS}")
    device_type = torch.device(device).type
    if requested == "auto":
        if device_type != "cuda":
            return "sdpa_block_mask"
        return "flash_varlen" if importlib.util.find_spec("flash_attn") else "flex"
    if requested in ("flash_varlen", "flex") and device_type != "cuda":
        raise ValueError(f"attention backend {requested!r} needs a CUDA device, not {device_type}")
    if requested == "flash_varlen" and not importlib.util.find_spec("flash_attn"):
        raise ValueError("attention backend 'flash_varlen' needs the flash_attn package")
    return requested


def prepare_model_attention(model: Any, backend: str) -> None:
    """Switch a Hugging Face model to the attention implementation `backend` runs on."""
    implementation = _IMPLEMENTATION[backend]
    if getattr(model.config, "_attn_implementation", None) != implementation:
        model.set_attn_implementation(implementation)


def block_diagonal_causal_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Boolean `[rows, 1, L, L]` mask: query `q` sees key `k <= q` of the same document only.

    >>> block_diagonal_causal_mask(torch.tensor([[0, 0, 1]]))[0, 0].int().tolist()
    [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    length = document_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=document_ids.device).tril_()
    same_document = document_ids[:, :, None] == document_ids[:, None, :]
    return (same_document & causal)[:, None]


def attention_kwargs(batch: PackedBatch, backend: str) -> dict[str, Any]:
    """Forward keyword arguments that keep the documents of `batch` apart under `backend`.

    Every backend also gets the restarting `position_ids` (rotary positions count per document)
    and `use_cache=False` (a cache would disable transformers' packed-sequence detection).
    """
    kwargs: dict[str, Any] = {"position_ids": batch.position_ids, "use_cache": False}
    if backend == "sdpa_block_mask":
        kwargs["attention_mask"] = block_diagonal_causal_mask(batch.document_ids)
    elif backend == "flash_varlen":
        kwargs.update(_varlen_kwargs(batch))
    elif backend == "flex":
        kwargs["attention_mask"] = _flex_block_mask(batch.document_ids)
    elif backend != "position_ids":
        raise ValueError(
            f"attention backend {backend!r} is not resolved; call resolve_attention_backend"
        )
    return kwargs


def flatten_rows(batch: PackedBatch) -> PackedBatch:
    """Lay the rows of `batch` end to end as one row, as varlen kernels want them."""
    return PackedBatch(*(t.reshape(1, -1) for t in batch.tensors()))


def _varlen_kwargs(batch: PackedBatch) -> dict[str, Any]:
    if batch.position_ids.shape[0] != 1:
        raise ValueError("flash_varlen takes one flat row; call flatten_rows(batch) first")
    flat = batch.position_ids
    starts = (flat[0] == 0).nonzero().flatten()
    cu = torch.cat([starts, starts.new_tensor([flat.shape[1]])]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return {
        "position_ids": flat,
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def _flex_block_mask(document_ids: torch.Tensor) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    # padding (-1) is one more document, so every query row keeps at least its own key
    def document_causal(b: Any, h: Any, q: Any, k: Any) -> Any:
        return (document_ids[b, q] == document_ids[b, k]) & (k <= q)

    rows, length = document_ids.shape
    return create_block_mask(
        document_causal, rows, None, length, length, device=document_ids.device
    )
