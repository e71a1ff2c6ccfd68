"""GRPO rollouts as tensors: trained on the sampled ids, advantages on the right tokens."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from trainer.data import render_conversation_turns
from trainer.grpo_data import build_batch, rollout_tokens

MESSAGES = [
    {"role": "user", "content": "Which film did Ada Lee direct?"},
    {"role": "assistant", "content": "Heat"},
    {"role": "user", "content": "Answer in tags."},
    {"role": "assistant", "content": "<answer>Heat</answer>"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _spelled_out(tokenizer, text: str) -> list[int]:
    """`text` one character per token: the same text as the canonical encoding, other ids."""
    return [tokenizer.convert_tokens_to_ids(c) for c in text]


def test_assistant_turns_are_trained_on_the_ids_the_engine_sampled(tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    first = _spelled_out(tokenizer, "Heat") + [end]
    assert first[:-1] != tokenizer.encode("Heat", add_special_tokens=False)
    r = rollout_tokens(
        tokenizer,
        MESSAGES,
        sampled_token_ids={1: first},
        sampled_logprobs={1: [-0.5, -1.0, -1.5, -2.0, -0.1]},
    )
    assert r.input_ids[r.token_turns == 1].tolist() == first
    assert r.loss_mask[r.token_turns == 1].all()
    assert r.rollout_logp[r.token_turns == 1].tolist() == pytest.approx([-0.5, -1, -1.5, -2, -0.1])
    # the other assistant turn keeps the template's tokens, trained, with unknown rollout logp
    doc, turns = render_conversation_turns(tokenizer, MESSAGES)
    assert r.input_ids[r.token_turns == 3].tolist() == doc.input_ids[turns == 3].tolist()
    assert np.isnan(r.rollout_logp[r.token_turns == 3]).all()
    # prompts and user turns are as rendered, untrained
    assert tokenizer.decode(r.input_ids) == tokenizer.decode(doc.input_ids)
    assert not r.loss_mask[r.token_turns == -1].any()


def test_a_turn_cut_by_max_tokens_gets_its_end_token_untrained(tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    cut = tokenizer.encode("Hea", add_special_tokens=False)
    r = rollout_tokens(tokenizer, MESSAGES, sampled_token_ids={1: cut})
    where = np.flatnonzero(r.token_turns == 1)
    assert r.input_ids[where].tolist() == cut
    after = where[-1] + 1
    assert r.input_ids[after] == end and not r.loss_mask[after] and r.token_turns[after] == -1


def test_sampled_ids_must_belong_to_assistant_messages(tokenizer):
    with pytest.raises(ValueError, match="message 0, not an assistant"):
        rollout_tokens(tokenizer, MESSAGES, sampled_token_ids={0: [1, 2]})
    with pytest.raises(ValueError, match="2 sampled ids but 1 log-probs"):
        rollout_tokens(
            tokenizer, MESSAGES, sampled_token_ids={1: [1, 2]}, sampled_logprobs={1: [0.0]}
        )


def test_batch_pads_right_and_gives_group_and_process_advantages(tokenizer):
    short = [MESSAGES[0], {"role": "assistant", "content": "Ran"}]
    rollouts = [rollout_tokens(tokenizer, short), rollout_tokens(tokenizer, MESSAGES)]
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # one group: rewards 1 and 0 -> outcome advantages +-1/sqrt(2) (sample std sqrt(1/2));
    # rollout 1 failed, its step made by message 1 scored 1 and the one by message 3 scored 0:
    # pooled mean 0.5, population std 0.5 -> process advantages 0.5 * (+1, -1)
    batch = build_batch(
        rollouts,
        [1.0, 0.0],
        ["q", "q"],
        pad_id=pad,
        accepted=[True, False],
        step_scores=[[], [1.0, 0.0]],
        step_turns=[[], [1, 3]],
        eps=0.0,
    )
    n0, n1 = len(rollouts[0]), len(rollouts[1])
    assert batch.input_ids.shape == (2, n1) and n0 < n1
    assert batch.input_ids[0, n0:].eq(pad).all() and not batch.attention_mask[0, n0:].any()
    assert not batch.loss_mask[0, n0:].any()
    a = 1 / math.sqrt(2)
    trained0 = batch.advantages[0][batch.loss_mask[0]]
    assert torch.allclose(trained0, torch.full_like(trained0, a))
    turns = torch.from_numpy(rollouts[1].token_turns)
    adv1 = batch.advantages[1, :n1]
    assert torch.allclose(adv1[turns == 1], torch.full_like(adv1[turns == 1], -a + 0.5))
    assert torch.allclose(adv1[turns == 3], torch.full_like(adv1[turns == 3], -a - 0.5))
    assert not batch.rollout_known.any()  # nothing was sampled here
