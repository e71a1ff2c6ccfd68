"""Both engines, for real, on the tiny model on CPU: in-process vLLM and an OpenAI-compatible vLLM server."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from selfplay.engines import CONTEXT_LENGTH, Engine, SamplingConfig
from selfplay.engines.vllm import render_chat

pytestmark = pytest.mark.vllm

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
    }
]


def question(text: str) -> list[dict]:
    return [
        {"role": "system", "content": "Answer with <answer>...</answer>."},
        {"role": "user", "content": text},
    ]


HISTORY = question("Who directed Solaris?") + [
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "I should look it up.",
        "tool_calls": [
            {
                "id": "c0",
                "type": "function",
                "function": {"name": "get_entity", "arguments": '{"entity_id": "/m/1"}'},
            }
        ],
    },
    {
        "role": "tool",
        "content": '{"directed_by": "Andrei Tarkovsky"}',
        "tool_call_id": "c0",
        "name": "get_entity",
    },
]


def check_completions(
    results, *, n: int, max_tokens: int, tokenizer, logprobs: bool = True
) -> None:
    for completions in results:
        assert len(completions) == n
        for c in completions:
            assert 1 <= len(c.token_ids) <= max_tokens
            assert c.finish_reason in ("stop", "length")
            decoded = tokenizer.decode(c.token_ids, skip_special_tokens=True)
            # vLLM leaves out a trailing partial UTF-8 character (see `Completion`)
            assert c.text == decoded or c.text == decoded.rstrip("\ufffd")
            if logprobs:
                assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
                assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)


# --------------------------------------------------------------------------- in-process vLLM


def test_vllm_engine_samples_n_completions_with_token_ids_and_logprobs(vllm_engine) -> None:
    assert isinstance(vllm_engine, Engine)
    conversations = [question("Who directed Solaris?"), question("Where was Alice born?"), HISTORY]
    sampling = SamplingConfig(n=3, max_tokens=12, seed=7, logprobs=True)
    results = vllm_engine.chat(conversations, tools=TOOLS, sampling=sampling)
    assert len(results) == 3
    check_completions(results, n=3, max_tokens=12, tokenizer=vllm_engine.tokenizer)
    for conversation, completions in zip(conversations, results, strict=True):
        assert completions[0].prompt_tokens == vllm_engine.count_tokens(conversation, TOOLS)
        assert completions[0].tool_calls is None  # raw text, for selfplay.parsing
        assert len({tuple(c.token_ids) for c in completions}) > 1, "n samples must not be copies"


def test_vllm_engine_same_seed_gives_the_same_samples(vllm_engine) -> None:
    conversations = [question("Who directed Solaris?"), HISTORY]

    def sample(seed: int) -> list[list[int]]:
        results = vllm_engine.chat(
            conversations, tools=TOOLS, sampling=SamplingConfig(n=2, max_tokens=10, seed=seed)
        )
        return [c.token_ids for completions in results for c in completions]

    first = sample(11)
    assert sample(11) == first
    assert sample(12) != first


def test_vllm_engine_logprobs_are_the_models_own(vllm_engine, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    conversation = question("Who directed Solaris?")
    [[completion]] = vllm_engine.chat(
        [conversation], tools=TOOLS, sampling=SamplingConfig(max_tokens=8, seed=3, logprobs=True)
    )
    prompt = render_chat(vllm_engine.tokenizer, conversation, TOOLS)
    ids = torch.tensor([prompt + completion.token_ids])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits, dim=-1).gather(
        1, torch.tensor(completion.token_ids)[:, None]
    )[:, 0]
    assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-2)


def test_vllm_engine_renders_history_reasoning_and_tool_results_into_the_prompt(
    vllm_engine,
) -> None:
    without_reasoning = [dict(m) for m in HISTORY]
    without_reasoning[2] = {**HISTORY[2], "reasoning_content": None}
    assert vllm_engine.count_tokens(HISTORY, TOOLS) > vllm_engine.count_tokens(
        without_reasoning, TOOLS
    )
    assert vllm_engine.count_tokens(HISTORY, TOOLS) > vllm_engine.count_tokens(HISTORY[:2], TOOLS)
    assert vllm_engine.count_tokens(HISTORY, TOOLS) > vllm_engine.count_tokens(HISTORY, None)


def test_vllm_engine_generates_from_raw_text_and_token_ids(vllm_engine) -> None:
    results = vllm_engine.generate(
        ["Alice directed the", [1, 85, 91]],
        sampling=SamplingConfig(n=2, max_tokens=6, logprobs=True, seed=1),
    )
    check_completions(results, n=2, max_tokens=6, tokenizer=vllm_engine.tokenizer)
    assert results[1][0].prompt_tokens == 3


def test_vllm_engine_over_long_prompt_ends_that_conversation_only(vllm_engine) -> None:
    huge = question("word " * 3000)
    results = vllm_engine.chat(
        [huge, question("short")], sampling=SamplingConfig(max_tokens=4, n=2)
    )
    assert [c.finish_reason for c in results[0]] == [CONTEXT_LENGTH, CONTEXT_LENGTH]
    assert results[0][0].token_ids == [] and results[0][0].prompt_tokens > 2048
    check_completions(
        results[1:], n=2, max_tokens=4, tokenizer=vllm_engine.tokenizer, logprobs=False
    )


def test_vllm_engine_serves_many_concurrent_async_callers(vllm_engine) -> None:
    async def run() -> list:
        calls = [
            vllm_engine.achat(
                [question(f"question {i}")],
                tools=TOOLS,
                sampling=SamplingConfig(max_tokens=5, seed=i),
            )
            for i in range(8)
        ]
        return await asyncio.gather(*calls)

    results = asyncio.run(run())
    assert len(results) == 8
    for result in results:
        check_completions(
            result, n=1, max_tokens=5, tokenizer=vllm_engine.tokenizer, logprobs=False
        )


def test_bad_conversations_are_rejected_naming_the_message(vllm_engine) -> None:
    with pytest.raises(ValueError, match="conversation 1 message 0: role must be one of"):
        vllm_engine.chat([question("ok"), [{"role": "robot", "content": "x"}]])
    with pytest.raises(ValueError, match="sampling must be one SamplingConfig or a list of 2"):
        vllm_engine.chat([question("a"), question("b")], sampling=[SamplingConfig()])
    with pytest.raises(ValueError, match="tool 0 must be"):
        vllm_engine.chat([question("a")], tools=[{"name": "no wrapper"}])
    with pytest.raises(ValueError, match="SamplingConfig.n must be a positive integer"):
        SamplingConfig(n=0)


def test_the_engine_runs_the_model_at_the_dtype_it_was_saved_in(vllm_engine) -> None:
    # vLLM's own "auto" would load the float32 tiny model as bfloat16 on CPU
    assert vllm_engine.model_dtype == "float32"


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    from selfplay.engines.vllm import VLLMEngine

    with pytest.raises(ValueError, match="has no config.json"):
        VLLMEngine(tmp_path / "nope")


# --------------------------------------------------------------------------- OpenAI-compatible server


@pytest.fixture(scope="module")
def openai_engine(vllm_server):
    from selfplay.engines.openai import OpenAIEngine, OpenAIEngineConfig

    with OpenAIEngine(
        vllm_server.base_url, vllm_server.model, config=OpenAIEngineConfig(concurrency=6)
    ) as engine:
        yield engine


def test_openai_engine_runs_many_requests_in_flight_against_a_vllm_server(openai_engine) -> None:
    create = openai_engine.client.chat.completions.create
    in_flight = peak = 0

    async def counting_create(**kwargs):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await create(**kwargs)
        finally:
            in_flight -= 1

    openai_engine.client.chat.completions.create = counting_create
    try:
        conversations = [question(f"question {i}") for i in range(11)] + [HISTORY]
        sampling = SamplingConfig(n=2, max_tokens=8, seed=5, logprobs=True)
        results = openai_engine.chat(conversations, tools=TOOLS, sampling=sampling)
    finally:
        openai_engine.client.chat.completions.create = create
    assert peak == 6, "requests must overlap, up to the configured concurrency"
    assert len(results) == 12
    check_completions(results, n=2, max_tokens=8, tokenizer=openai_engine.tokenizer)
    # the server renders tools and history (tool calls, reasoning, tool results) exactly as we do
    for conversation, completions in zip(conversations, results, strict=True):
        assert completions[0].prompt_tokens == openai_engine.count_tokens(conversation, TOOLS)


def test_openai_engine_is_reproducible_by_seed_and_matches_the_in_process_engine(
    openai_engine, vllm_engine
) -> None:
    sampling = SamplingConfig(n=2, max_tokens=8, seed=21)
    first = openai_engine.chat([HISTORY], tools=TOOLS, sampling=sampling)
    again = openai_engine.chat([HISTORY], tools=TOOLS, sampling=sampling)
    assert [c.token_ids for c in first[0]] == [c.token_ids for c in again[0]]
    greedy = SamplingConfig(temperature=0.0, max_tokens=8)
    served = openai_engine.chat([HISTORY], tools=TOOLS, sampling=greedy)[0][0]
    local = vllm_engine.chat([HISTORY], tools=TOOLS, sampling=greedy)[0][0]
    assert served.token_ids == local.token_ids


def test_openai_engine_async_raw_generation_and_context_overflow(openai_engine) -> None:
    async def run():
        raw = openai_engine.agenerate(
            ["Alice directed the", [1, 85, 91]],
            sampling=SamplingConfig(max_tokens=5, logprobs=True, seed=11),
        )
        huge = openai_engine.achat(
            [question("word " * 3000)], sampling=SamplingConfig(max_tokens=4)
        )
        return await asyncio.gather(raw, huge)

    raw, huge = asyncio.run(run())
    check_completions(raw, n=1, max_tokens=5, tokenizer=openai_engine.tokenizer)
    assert raw[1][0].prompt_tokens == 3
    assert huge[0][0].finish_reason == CONTEXT_LENGTH
