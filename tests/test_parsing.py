"""Reading model output: reasoning, tool calls and answers; malformed output is counted, never raised."""

from __future__ import annotations

import json

from selfplay.parsing import extract_answer, parse_assistant


def test_well_formed_turn_splits_into_reasoning_content_and_calls() -> None:
    text = (
        "<think>\nI should search.\n</think>\n\nLet me look.\n"
        '<tool_call>\n{"name": "search_entities", "arguments": {"query": "Solaris", "limit": 3}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_entity", "arguments": {"entity_id": "/m/1"}}\n</tool_call>'
    )
    turn = parse_assistant(text, call_id_prefix="t0-")
    assert turn.errors == []
    assert turn.reasoning == "I should search."
    assert turn.content == "Let me look."
    assert turn.tool_calls == [
        {
            "id": "t0-0",
            "type": "function",
            "function": {
                "name": "search_entities",
                "arguments": '{"query": "Solaris", "limit": 3}',
            },
        },
        {
            "id": "t0-1",
            "type": "function",
            "function": {"name": "get_entity", "arguments": '{"entity_id": "/m/1"}'},
        },
    ]


def test_message_round_trips_through_the_chat_template_rendering() -> None:
    turn = parse_assistant(
        '<think>a</think>\n\n<tool_call>\n{"name": "f", "arguments": {"x": "é"}}\n</tool_call>'
    )
    message = turn.to_message()
    assert message["role"] == "assistant" and message["reasoning_content"] == "a"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"x": "é"}


def test_generated_call_ids_are_unique_without_a_prefix() -> None:
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call>' * 3
    ids = [c["id"] for c in parse_assistant(text).tool_calls]
    assert len(set(ids)) == 3 and all(i.startswith("call_") for i in ids)


def test_plain_answer_has_no_calls_and_no_errors() -> None:
    turn = parse_assistant("The answer is <answer>Andrei Tarkovsky</answer><|im_end|>")
    assert turn.tool_calls == [] and turn.errors == [] and turn.reasoning is None
    assert turn.content == "The answer is <answer>Andrei Tarkovsky</answer>"


def test_malformed_json_is_an_error_and_good_calls_still_count() -> None:
    text = (
        '<tool_call>\n{"name": "f", "arguments": {"x": 1}\n</tool_call>'
        '<tool_call>{"name": "g", "arguments": {}}</tool_call>'
    )
    turn = parse_assistant(text)
    assert [c["function"]["name"] for c in turn.tool_calls] == ["g"]
    assert len(turn.errors) == 1 and turn.errors[0].startswith("tool call 1: invalid JSON")


def test_missing_name_and_non_object_arguments_are_errors() -> None:
    text = (
        '<tool_call>{"arguments": {"x": 1}}</tool_call>'
        '<tool_call>{"name": "", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>'
        '<tool_call>{"name": "f", "arguments": "not json"}</tool_call>'
        "<tool_call>[1, 2]</tool_call>"
    )
    turn = parse_assistant(text)
    assert turn.tool_calls == []
    assert len(turn.errors) == 5
    assert (
        "missing or empty 'name'" in turn.errors[0] and "missing or empty 'name'" in turn.errors[1]
    )
    assert "'arguments' must be a JSON object" in turn.errors[2]
    assert "not JSON" in turn.errors[3] and "expected a JSON object" in turn.errors[4]


def test_arguments_as_json_string_or_missing_are_accepted() -> None:
    text = (
        '<tool_call>{"name": "f", "arguments": "{\\"x\\": 2}"}</tool_call>'
        '<tool_call>{"name": "g"}</tool_call>'
    )
    turn = parse_assistant(text, call_id_prefix="c")
    assert turn.errors == []
    assert [c["function"]["arguments"] for c in turn.tool_calls] == ['{"x": 2}', "{}"]


def test_unterminated_blocks_are_errors_not_exceptions() -> None:
    turn = parse_assistant('<tool_call>{"name": "f", "arguments": {}}')
    assert turn.tool_calls == [] and "unterminated <tool_call>" in turn.errors[0]

    turn = parse_assistant(
        '<tool_call>{"name": "f"<tool_call>{"name": "g", "arguments": {}}</tool_call>'
    )
    assert [c["function"]["name"] for c in turn.tool_calls] == ["g"]
    assert len(turn.errors) == 1 and "unterminated" in turn.errors[0]

    turn = parse_assistant("<think>still thinking when the budget ran out")
    assert turn.reasoning == "still thinking when the budget ran out"
    assert "unterminated <think>" in turn.errors[0] and turn.content == ""


def test_stray_closing_tag_and_prompt_opened_reasoning() -> None:
    turn = parse_assistant("hello</tool_call>")
    assert turn.content == "hello" and "stray </tool_call>" in turn.errors[0]
    turn = parse_assistant("reasoning opened by the prompt</think>\n\nvisible")
    assert turn.reasoning == "reasoning opened by the prompt" and turn.content == "visible"
    assert turn.errors == []


def test_random_garbage_never_raises() -> None:
    import random

    rng = random.Random(0)
    pieces = [
        "<tool_call>",
        "</tool_call>",
        "<think>",
        "</think>",
        "{",
        "}",
        '"name"',
        ":",
        "x",
        "\n",
        "[",
        "]",
    ]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(30)))
        turn = parse_assistant(text)
        assert isinstance(turn.errors, list) and isinstance(turn.content, str)
    assert parse_assistant(None).errors  # type: ignore[arg-type]


def test_extract_answer_takes_the_last_complete_answer_outside_reasoning() -> None:
    assert extract_answer("<answer> Paris </answer>") == "Paris"
    assert extract_answer("<answer>a</answer> then <answer>b</answer>") == "b"
    assert (
        extract_answer("<think><answer>draft</answer></think>final <answer>kept</answer>") == "kept"
    )
    assert extract_answer("<think><answer>draft</answer></think>no final") is None
    assert extract_answer("<answer>unterminated") is None
    assert extract_answer("") is None and extract_answer(None) is None
