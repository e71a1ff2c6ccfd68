"""SFT data: Parquet streaming, chat-template rendering and assistant-only loss masks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from trainer.data import iter_dataset_rows, render_conversation, tokenize_dataset
from trainer.synthetic import metaqa_rows, simple_rows, tool_trajectory_row, write_sft_dataset


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _trajectory() -> dict:
    return tool_trajectory_row(
        "traj-42",
        "When were the films directed by Ada Lee released?",
        "Ada Lee",
        ["director_to_movie", "movie_to_year"],
        [{"Ada Lee": ["Heat", "Ran"]}, {"Heat": ["1995"], "Ran": ["1985"]}],
        ["1995", "1985"],
    )


def _segments(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


def test_loss_mask_trains_every_assistant_turn_of_a_multi_turn_tool_trajectory_and_nothing_else(
    tokenizer,
):
    row = _trajectory()
    doc = render_conversation(tokenizer, row["messages"], tools=row["tools"], row_id=row["id"])
    assistants = [m for m in row["messages"] if m["role"] == "assistant"]
    segments = _segments(doc.loss_mask)
    assert len(segments) == len(assistants) == 3
    for (lo, hi), message in zip(segments, assistants, strict=True):
        text = tokenizer.decode(doc.input_ids[lo:hi])
        assert text.startswith("<think>\n" + message["reasoning_content"])
        assert text.endswith("<|im_end|>")  # the model learns to stop its turn
        for call in message.get("tool_calls") or []:
            assert call["function"]["arguments"] in text
        assert "<tool_response>" not in text and "<|im_start|>" not in text
    # the header before each assistant turn is a prompt, not a target
    for lo, _ in segments:
        assert tokenizer.decode(doc.input_ids[:lo]).endswith("<|im_start|>assistant\n")
    untrained = tokenizer.decode(doc.input_ids[~doc.loss_mask])
    assert "When were the films directed by Ada Lee released?" in untrained
    assert (
        '["1995"]' in untrained and "get_neighbors(entity: string" in untrained
    )  # tools + results
    # the whole sequence is exactly the template's rendering
    full = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
    assert tokenizer.decode(doc.input_ids) == full


def test_template_that_rewrites_earlier_turns_is_reported_with_the_row_id(tokenizer):
    broken = copy.deepcopy(tokenizer)
    # like Qwen3's own template: reasoning is shown for the last assistant turn only
    broken.chat_template = (
        "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
        "{%- if m.role == 'assistant' and loop.last and m.reasoning_content %}"
        "<think>{{ m.reasoning_content }}</think>{%- endif %}"
        "{{ m.content }}<|im_end|>\n{%- endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
    )
    row = _trajectory()
    with pytest.raises(ValueError, match=r"row traj-42: .*not prefix-consistent at message 3"):
        render_conversation(broken, row["messages"], tools=row["tools"], row_id=row["id"])


def test_dataset_streams_every_shard_in_order(tmp_path, tokenizer):
    rows = simple_rows(7)
    write_sft_dataset(tmp_path / "ds", rows, rows_per_shard=3)
    assert len(list((tmp_path / "ds" / "data").glob("train-*.parquet"))) == 3
    streamed = list(iter_dataset_rows(tmp_path / "ds", batch_rows=2))
    assert [r["id"] for r in streamed] == [r["id"] for r in rows]
    assert streamed[0]["tools"][0]["function"]["name"] == "get_neighbors"
    docs = list(tokenize_dataset(tokenizer, tmp_path / "ds"))
    assert [d.id for d in docs] == [r["id"] for r in rows]
    assert all(0 < d.n_targets < len(d) for d in docs)


def test_bad_input_names_the_file_row_and_field(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="does not exist"):
        list(iter_dataset_rows(tmp_path / "missing"))
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no 'train' shards.*train-00000\.parquet"):
        list(iter_dataset_rows(tmp_path / "empty"))

    row = simple_rows(1)[0]
    row["tools"] = "{not json"
    write_sft_dataset(tmp_path / "badtools", [row])
    with pytest.raises(ValueError, match=r"train-00000\.parquet: row row-0000: field 'tools'"):
        list(iter_dataset_rows(tmp_path / "badtools"))

    row = simple_rows(1)[0]
    row["messages"][2]["role"] = "robot"
    write_sft_dataset(tmp_path / "badrole", [row])
    with pytest.raises(ValueError, match=r"\(row 0\): row row-0000: message 2 has role 'robot'"):
        list(tokenize_dataset(tokenizer, tmp_path / "badrole"))

    row = simple_rows(1)[0]
    row["messages"] = [m for m in row["messages"] if m["role"] != "assistant"]
    with pytest.raises(ValueError, match="row-0000: no assistant message"):
        render_conversation(tokenizer, row["messages"], row_id="row-0000")


def test_tools_column_is_rendered_into_the_prompt(tokenizer):
    row = simple_rows(1)[0]
    with_tools = render_conversation(tokenizer, row["messages"], tools=row["tools"])
    without = render_conversation(tokenizer, row["messages"], tools=None)
    assert row["tools"][0]["function"]["description"] in tokenizer.decode(with_tools.input_ids)
    assert len(with_tools) > len(without)
    assert with_tools.n_targets == without.n_targets


def test_metaqa_trajectories_call_the_kb_hop_by_hop_and_name_a_wrong_directory(
    tmp_path, data_dir: Path
):
    rows = metaqa_rows(4, metaqa_dir=data_dir / "metaqa", hops=2)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    for row in rows:
        calls = [m for m in row["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
        assert len(calls) == 2  # one assistant turn per hop
        assert row["messages"][-1]["content"] == f"<answer>{'|'.join(row['answers'])}</answer>"
    with pytest.raises(FileNotFoundError, match=r"missing.*kb_subset_named\.txt: no MetaQA KB"):
        metaqa_rows(1, metaqa_dir=tmp_path / "missing")
