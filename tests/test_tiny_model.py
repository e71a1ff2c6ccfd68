"""The tiny test model: loads in transformers, renders tool-use chats, prefix-consistent, seeded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kag.cli import main as kag_main
from trainer.models import MARKUP_TOKENS, TinyModelConfig, build_tiny_model

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_entity",
            "description": "Look up an entity by id.",
            "parameters": {
                "type": "object",
                "properties": {"entity_id": {"type": "string"}},
                "required": ["entity_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_entities",
            "description": "Search entities by name.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["query"],
            },
        },
    },
]

CONVERSATION = [
    {"role": "system", "content": "Answer with <answer>...</answer>."},
    {"role": "user", "content": "Who directed Solaris?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "Search first.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "search_entities", "arguments": '{"query": "Solaris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_entity", "arguments": '{"entity_id": "/m/1"}'},
            },
        ],
    },
    {
        "role": "tool",
        "content": '[{"id": "/m/1", "name": "Solaris"}]',
        "tool_call_id": "call_1",
        "name": "search_entities",
    },
    {
        "role": "tool",
        "content": '{"directed_by": "Andrei Tarkovsky"}',
        "tool_call_id": "call_2",
        "name": "get_entity",
    },
    {
        "role": "assistant",
        "content": "<answer>Andrei Tarkovsky</answer>",
        "reasoning_content": "Found it.",
    },
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_tiny_model_loads_in_transformers_as_a_small_qwen3_moe(
    tiny_model_dir: Path, tokenizer
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert type(model).__name__ == "Qwen3MoeForCausalLM"
    assert cfg.head_dim == 64 and cfg.num_experts == 8 and cfg.num_experts_per_tok == 2
    assert 500_000 < model.num_parameters() < 10_000_000
    assert cfg.vocab_size == len(tokenizer), "every logit must decode to a real token"
    ids = tokenizer("Alice directed the old film in Lisbon.", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids)
    assert out.logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(out.logits).all()
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5 or generated[0, -1].item() in (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )


def test_markup_tokens_are_single_ids_that_survive_skip_special_tokens(tokenizer) -> None:
    for token in MARKUP_TOKENS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    text = '<think>\nplan\n</think>\n\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    ids = tokenizer.encode(text + "<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_byte_level_tokenizer_round_trips_any_text(tokenizer) -> None:
    text = 'Zoë 東京 🚀 tab\tand newline\n{"k": [1, 2.5e-3]}'
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_renders_tools_reasoning_tool_calls_and_responses(tokenizer) -> None:
    text = tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nAnswer with <answer>...</answer>.\n\n# Tools")
    tool_lines = system.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    # one compact line per tool: name, parameters (optional ones marked ?) and description
    assert tool_lines == [
        "get_entity(entity_id: string): Look up an entity by id.",
        "search_entities(limit?: integer, query: string): Search entities by name.",
    ]
    assert (
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        in system
    )
    assert (
        "<|im_start|>assistant\n<think>\nSearch first.\n</think>\n\n"
        '<tool_call>\n{"name": "search_entities", "arguments": {"query": "Solaris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_entity", "arguments": {"entity_id": "/m/1"}}\n</tool_call><|im_end|>\n'
    ) in text
    assert (
        '<|im_start|>user\n<tool_response>\n[{"id": "/m/1", "name": "Solaris"}]\n</tool_response><|im_end|>\n'
    ) in text
    # earlier and last turns both keep their reasoning (unlike Qwen3's template)
    assert text.endswith(
        "<|im_start|>assistant\n<think>\nFound it.\n</think>\n\n<answer>Andrei Tarkovsky</answer><|im_end|>\n"
    )


def test_chat_template_accepts_arguments_as_objects_and_works_without_tools(tokenizer) -> None:
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "get_entity", "arguments": {"entity_id": "x"}},
    }
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok", "tool_calls": [call]},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nok\n"
        '<tool_call>\n{"name": "get_entity", "arguments": {"entity_id": "x"}}\n</tool_call><|im_end|>\n'
    )


def test_chat_template_is_prefix_consistent_turn_by_turn(tokenizer) -> None:
    renders = [
        tokenizer.apply_chat_template(CONVERSATION[:k], tools=TOOLS, tokenize=False)
        for k in range(1, len(CONVERSATION) + 1)
    ]
    for shorter, longer in zip(renders, renders[1:], strict=False):
        assert longer.startswith(shorter)
    # the generation prompt is the start of the assistant turn the model then writes
    for k, message in enumerate(CONVERSATION):
        if message["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(
                CONVERSATION[:k], tools=TOOLS, tokenize=False, add_generation_prompt=True
            )
            assert renders[k].startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")


def test_assistant_tokens_mask_covers_exactly_the_assistant_turns(tokenizer) -> None:
    out = tokenizer.apply_chat_template(
        CONVERSATION,
        tools=TOOLS,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    learned = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert learned.startswith("<think>\nSearch first.\n</think>\n\n<tool_call>")
    assert learned.endswith("<answer>Andrei Tarkovsky</answer><|im_end|>")
    assert "Who directed" not in learned and "<tool_response>" not in learned
    assert learned.count("<|im_end|>") == 2


def test_chat_template_rejects_a_late_system_message(tokenizer) -> None:
    with pytest.raises(Exception, match="system message is only allowed as the first"):
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], tokenize=False
        )


def test_same_seed_builds_identical_files_and_another_seed_differs(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    again = build_tiny_model(tmp_path / "again", config=TinyModelConfig(seed=0))
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    other = build_tiny_model(tmp_path / "other", config=TinyModelConfig(seed=1))
    assert (other / "model.safetensors").read_bytes() != (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()


def test_kag_model_tiny_cli_builds_a_model_and_rejects_bad_shapes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli-model"
    assert (
        kag_main(["model", "tiny", str(out), "--seed", "3", "--vocab-size", "512", "--layers", "1"])
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["vocab_size"] <= 512
    assert kag_main(["model", "tiny", str(tmp_path / "bad"), "--heads", "4"]) == 2
    assert "head_dim 32" in capsys.readouterr().err


def test_digit_groups_make_a_long_number_a_few_tokens_that_decode_back(
    tmp_path: Path, tokenizer
) -> None:
    from transformers import AutoTokenizer

    out = tmp_path / "groups"
    assert kag_main(["model", "tiny", str(out), "--vocab-size", "512", "--digit-group", "3"]) == 0
    grouped = AutoTokenizer.from_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == len(grouped), "every group token has an embedding row"

    def pieces(tok, text: str) -> list[str]:
        return [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]

    # left to right in groups of three, the leftover digits a group of their own
    assert pieces(grouped, "24430058") == ["244", "300", "58"]
    assert pieces(grouped, "x 7")[-1] == "7"
    # an id's digits stay one token each, as every id shares them: copied digit by digit
    assert pieces(grouped, "film/000037")[-7:] == ["/", "0", "0", "0", "0", "3", "7"]
    observed = pieces(grouped, '{"id":"country/000012","population":24430058}')
    assert observed[observed.index("/") + 1 :][:6] == list("000012")
    assert observed[-4:] == ["244", "300", "58", "}"]
    # the default tokenizer spells a number digit by digit
    assert pieces(tokenizer, "24430058") == list("24430058")
    for text in ['{"stdout":"1390.67\\n"}', "print(sum([161, 75]))", "film/000037 -3 1e5"]:
        ids = grouped.encode(text, add_special_tokens=False)
        assert grouped.decode(ids) == text
    assert len(grouped.encode("24430058 1390.67", add_special_tokens=False)) < len(
        tokenizer.encode("24430058 1390.67", add_special_tokens=False)
    )
    with pytest.raises(ValueError, match="digit_group 4 must be one of 1, 2, 3"):
        TinyModelConfig(digit_group=4)
