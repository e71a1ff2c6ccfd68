"""GRPO rollouts as training tensors: the tokens the engine sampled, masked, with advantages.

| name             | what it gives                                                              |
|------------------|----------------------------------------------------------------------------|
| `RolloutTokens`  | one rollout: input ids, loss mask, turn of each token, the engine's logps   |
| `rollout_tokens` | a rollout's messages (+ the sampled ids and logps per assistant message)    |
| `GRPOBatch`      | right-padded `[batch, tokens]` tensors: ids, masks, advantages, rollout logp |
| `build_batch`    | rollouts + rewards + groups (+ step scores) -> a `GRPOBatch`                |

A rollout is plain data here (DESIGN section 4 messages and dicts keyed by message index), so the
trainer needs nothing from `selfplay`. The conversation is rendered with the SFT tokenisation
(`trainer.data.render_conversation_turns`); every assistant turn whose sampled token ids are known
is then replaced by exactly those ids, since decoding and re-encoding a sampled turn need not give
the same ids back (BPE has many spellings of one text) and the policy gradient must be taken on
what was sampled. That is also the token stream the engine saw turn after turn
(`selfplay.solver.EnginePolicy` continues from the sampled ids).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.data import render_conversation_turns
from trainer.grpo_loss import group_advantages, process_advantages, token_advantages

__all__ = ["RolloutTokens", "rollout_tokens", "GRPOBatch", "build_batch"]


@dataclass(frozen=True, slots=True)
class RolloutTokens:
    """One rollout's tokens. `loss_mask` marks the model's own tokens; `token_turns[t]` is the
    message index of the assistant turn token `t` belongs to (-1 elsewhere); `rollout_logp[t]`
    is the engine's log-probability of token `t` where it sampled it, NaN elsewhere."""

    id: str
    input_ids: np.ndarray  # int64 [n]
    loss_mask: np.ndarray  # bool [n]
    token_turns: np.ndarray  # int32 [n]
    rollout_logp: np.ndarray  # float32 [n]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(values)) + 1
    bounds = [0, *edges.tolist(), len(values)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def rollout_tokens(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    sampled_token_ids: Mapping[int, Sequence[int]] | None = None,
    sampled_logprobs: Mapping[int, Sequence[float]] | None = None,
    row_id: str = "?",
) -> RolloutTokens:
    """The training tokens of one rollout (see the module docstring).

    An assistant turn with sampled ids is trained on exactly those ids; when they do not end with
    the template's end-of-turn token (the turn hit `max_tokens`), that token follows untrained:
    the model never chose it, but the next turn's context holds it. A turn without sampled ids
    keeps the template's tokens and NaN rollout log-probs.

    >>> r = rollout_tokens(tok, msgs, sampled_token_ids={2: [88, 9, 4]})  # doctest: +SKIP
    >>> r.input_ids[r.token_turns == 2].tolist()                          # doctest: +SKIP
    [88, 9, 4]
    """
    sampled_token_ids = sampled_token_ids or {}
    sampled_logprobs = sampled_logprobs or {}
    doc, turns = render_conversation_turns(tokenizer, messages, tools=tools, row_id=row_id)
    for k in sampled_token_ids:
        if not 0 <= k < len(messages) or messages[k].get("role") != "assistant":
            raise ValueError(
                f"row {row_id}: sampled ids given for message {k}, not an assistant one"
            )
    ids: list[int] = []
    mask: list[bool] = []
    owner: list[int] = []
    logp: list[float] = []
    for lo, hi in _runs(turns):
        turn = int(turns[lo])
        span = doc.input_ids[lo:hi].tolist()
        if turn < 0 or turn not in sampled_token_ids:
            ids += span
            mask += [turn >= 0] * len(span)
            owner += [turn] * len(span)
            logp += [math.nan] * len(span)
            continue
        sampled = [int(t) for t in sampled_token_ids[turn]]
        lps = [float(x) for x in sampled_logprobs.get(turn, [math.nan] * len(sampled))]
        if len(lps) != len(sampled):
            raise ValueError(
                f"row {row_id}: message {turn} has {len(sampled)} sampled ids but "
                f"{len(lps)} log-probs"
            )
        ids += sampled
        mask += [True] * len(sampled)
        owner += [turn] * len(sampled)
        logp += lps
        end = span[-1]  # the template closes every assistant turn with its end-of-turn token
        if not sampled or sampled[-1] != end:
            ids.append(end)
            mask.append(False)
            owner.append(-1)
            logp.append(math.nan)
    return RolloutTokens(
        row_id,
        np.asarray(ids, dtype=np.int64),
        np.asarray(mask, dtype=bool),
        np.asarray(owner, dtype=np.int32),
        np.asarray(logp, dtype=np.float32),
    )


@dataclass(frozen=True, slots=True)
class GRPOBatch:
    """Right-padded `[batch, tokens]` tensors of a GRPO step.

    `loss_mask` marks trained tokens, `attention_mask` real ones; `advantages` is per token;
    `rollout_logp` is the engine's log-prob where known (`rollout_known`), else 0.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    advantages: torch.Tensor
    rollout_logp: torch.Tensor
    rollout_known: torch.Tensor
    rewards: torch.Tensor

    @property
    def n_rollouts(self) -> int:
        return int(self.input_ids.shape[0])


def build_batch(
    rollouts: Sequence[RolloutTokens],
    rewards: Sequence[float],
    group_ids: Sequence[Hashable],
    *,
    pad_id: int,
    accepted: Sequence[bool] | None = None,
    step_scores: Sequence[Sequence[float]] | None = None,
    step_turns: Sequence[Sequence[int]] | None = None,
    process_weight: float = 0.5,
    papo: bool = False,
    eps: float = 1e-6,
) -> GRPOBatch:
    """Advantages for every token of every rollout, padded into one batch.

    Outcome advantages are normalised per group (`group_advantages`); with `step_scores` (one
    score per tool step) and `step_turns` (the assistant message that made each step) the failed
    rollouts' steps add their process advantage to their turn's tokens (`process_advantages`,
    `papo` for the correct-only variant).

    >>> batch = build_batch([r0, r1], [1.0, 0.0], ["q", "q"], pad_id=0)  # doctest: +SKIP
    >>> batch.advantages.shape                                           # doctest: +SKIP
    torch.Size([2, 57])
    """
    n = len(rollouts)
    if not n:
        raise ValueError("no rollouts to build a batch from")
    if len(rewards) != n:
        raise ValueError(f"{len(rewards)} rewards for {n} rollouts")
    outcome = group_advantages(rewards, group_ids, eps=eps)
    process = [[] for _ in range(n)]
    turns_of_steps: Sequence[Sequence[int]] = [[] for _ in range(n)]
    if step_scores is not None:
        if accepted is None or step_turns is None:
            raise ValueError("step_scores need accepted and step_turns too")
        if len(step_scores) != n or len(step_turns) != n:
            raise ValueError("give step scores and step turns for every rollout")
        process = process_advantages(
            step_scores, accepted, group_ids, weight=process_weight, papo=papo, eps=eps
        )
        turns_of_steps = step_turns
    length = max(len(r) for r in rollouts)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.bool)
    loss_mask = torch.zeros((n, length), dtype=torch.bool)
    advantages = torch.zeros((n, length), dtype=torch.float32)
    rollout_logp = torch.zeros((n, length), dtype=torch.float32)
    known = torch.zeros((n, length), dtype=torch.bool)
    for i, r in enumerate(rollouts):
        m = len(r)
        ids[i, :m] = torch.from_numpy(r.input_ids)
        attention[i, :m] = True
        loss_mask[i, :m] = torch.from_numpy(r.loss_mask)
        advantages[i, :m] = token_advantages(
            r.token_turns,
            float(outcome[i]),
            step_turns=list(turns_of_steps[i]),
            step_advantages=process[i],
        )
        lp = torch.from_numpy(r.rollout_logp)
        ok = ~torch.isnan(lp)
        rollout_logp[i, :m] = torch.where(ok, lp, torch.zeros_like(lp))
        known[i, :m] = ok
    loss_mask[:, 0] = False  # the first token has no context to be predicted from
    return GRPOBatch(
        ids,
        attention,
        loss_mask,
        advantages,
        rollout_logp,
        known & loss_mask,
        torch.as_tensor(list(rewards), dtype=torch.float32),
    )
