"""GRPO token masks: a rollout conversation becomes input ids with only the model's tokens trained.

The expected ids are tokenised by hand: the chat template's text written out piece by piece
(prompt, assistant turn, tool result, assistant turn), each piece encoded on its own, so the
test would catch a mask that drifts by a token or trains a tool response.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from trainer.data import render_conversation, render_conversation_turns
from trainer.grpo_loss import token_advantages

CALL = '{"name": "director_to_movie", "arguments": {"entity": "Ada Lee"}}'
MESSAGES = [
    {"role": "system", "content": "Answer with tools."},
    {"role": "user", "content": "Which film did Ada Lee direct?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "Look up her films.",
        "tool_calls": [
            {
                "id": "call-0",
                "type": "function",
                "function": {"name": "director_to_movie", "arguments": '{"entity": "Ada Lee"}'},
            }
        ],
    },
    {"role": "tool", "content": '["Heat"]', "tool_call_id": "call-0", "name": "director_to_movie"},
    {"role": "assistant", "content": "<answer>Heat</answer>"},
]

# (text, trained, message index) written from the template by hand
PIECES = [
    (
        "<|im_start|>system\nAnswer with tools.<|im_end|>\n"
        "<|im_start|>user\nWhich film did Ada Lee direct?<|im_end|>\n<|im_start|>assistant\n",
        False,
        -1,
    ),
    (
        "<think>\nLook up her films.\n</think>\n\n<tool_call>\n"
        + CALL
        + "\n</tool_call><|im_end|>",
        True,
        2,
    ),
    (
        "\n<|im_start|>user\n<tool_response>\n"
        '["Heat"]\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
        False,
        -1,
    ),
    ("<answer>Heat</answer><|im_end|>", True, 4),
    ("\n", False, -1),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _by_hand(tokenizer):
    ids, mask, turns = [], [], []
    for text, trained, turn in PIECES:
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids += piece
        mask += [trained] * len(piece)
        turns += [turn] * len(piece)
    return np.array(ids), np.array(mask), np.array(turns)


def test_rollout_masks_match_a_hand_tokenised_conversation(tokenizer):
    ids, mask, turns = _by_hand(tokenizer)
    doc, token_turns = render_conversation_turns(tokenizer, MESSAGES, row_id="rollout-1")
    assert doc.input_ids.tolist() == ids.tolist()
    assert doc.loss_mask.tolist() == mask.tolist()
    assert token_turns.tolist() == turns.tolist()
    # the SFT function is the same rendering (one tokenisation for SFT and GRPO)
    sft = render_conversation(tokenizer, MESSAGES, row_id="rollout-1")
    assert sft.input_ids.tolist() == doc.input_ids.tolist()
    assert sft.loss_mask.tolist() == doc.loss_mask.tolist()
    # nothing the model did not write is trained
    trained = tokenizer.decode(doc.input_ids[doc.loss_mask])
    assert "tool_response" not in trained and "Which film" not in trained
    assert "Answer with tools" not in trained


def test_process_advantage_lands_on_the_tokens_of_the_turn_that_made_the_call(tokenizer):
    doc, token_turns = render_conversation_turns(tokenizer, MESSAGES, row_id="rollout-1")
    adv = token_advantages(token_turns, -0.3, step_turns=[2], step_advantages=[0.2]).numpy()
    first_turn = token_turns == 2
    assert np.allclose(adv[first_turn], -0.1)
    assert np.allclose(adv[~first_turn], -0.3)
    # the advantages that reach the loss are those of trained tokens only
    assert sorted(set(adv[doc.loss_mask].tolist())) == pytest.approx([-0.3, -0.1])
