"""Scripted tool-use conversations and the SFT dataset files that hold them, without a graph.

For trying `kag train sft`, its tests and its benchmark on data of a known shape (the dataset format
of DESIGN section 5; the exporters write the same format from a graph).

| function                | what it gives                                                      |
|-------------------------|--------------------------------------------------------------------|
| `write_sft_dataset`     | `DIR/data/{split}-{shard:05d}.parquet` (+ manifest) from row dicts  |
| `tool_trajectory_row`   | one multi-turn tool-use trajectory row (reasoning, calls, results) |
| `simple_rows`           | small random trajectories about a handful of films (no data files) |
| `metaqa_rows`           | trajectories built from real MetaQA questions and the KB subset    |
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["write_sft_dataset", "tool_trajectory_row", "simple_rows", "metaqa_rows"]

TOOL_CALL = pa.struct(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
    ]
)
MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("reasoning_content", pa.string()),
        ("tool_calls", pa.list_(TOOL_CALL)),
        ("tool_call_id", pa.string()),
        ("name", pa.string()),
    ]
)
SFT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task_id", pa.string()),
        ("trajectory_id", pa.string()),
        ("domain", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("tools", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("verdict", pa.string()),
        ("reward", pa.float64()),
        ("n_turns", pa.int64()),
        ("policy", pa.string()),
        ("run_id", pa.string()),
        ("entity_ids", pa.list_(pa.string())),
        ("tool_ids", pa.list_(pa.string())),
        ("verification_ids", pa.list_(pa.string())),
    ]
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_neighbors",
            "description": "Entities linked to an entity by a relation of the movie graph.",
            "parameters": {
                "type": "object",
                "properties": {
                    "entity": {"type": "string", "description": "entity name"},
                    "relation": {"type": "string", "description": "e.g. actor_to_movie"},
                },
                "required": ["entity", "relation"],
            },
        },
    }
]


def _full_message(message: dict[str, Any]) -> dict[str, Any]:
    full = dict.fromkeys(MESSAGE.names)
    full.update(message)
    return full


def write_sft_dataset(
    dataset_dir: str | Path,
    rows: list[dict[str, Any]],
    *,
    split: str = "train",
    rows_per_shard: int | None = None,
) -> Path:
    """Write `rows` (dicts with at least `id` and `messages`) as an SFT dataset; return its dir.

    Missing columns get neutral values; `tools` may be a list (it is stored as a JSON string).

    >>> root = write_sft_dataset("/tmp/ds", simple_rows(3))
    >>> sorted(p.name for p in (root / "data").iterdir())
    ['train-00000.parquet']
    """
    root = Path(dataset_dir)
    (root / "data").mkdir(parents=True, exist_ok=True)
    records = []
    for row in rows:
        tools = row.get("tools")
        messages = [_full_message(m) for m in row["messages"]]
        records.append(
            {
                "id": row["id"],
                "task_id": row.get("task_id", f"task-{row['id']}"),
                "trajectory_id": row.get("trajectory_id", f"traj-{row['id']}"),
                "domain": row.get("domain", "movies"),
                "messages": messages,
                "tools": tools if isinstance(tools, str) or tools is None else json.dumps(tools),
                "answers": row.get("answers", []),
                "verdict": "accepted",
                "reward": 1.0,
                "n_turns": sum(m["role"] == "assistant" for m in messages),
                "policy": "test",
                "run_id": "run-test",
                "entity_ids": [],
                "tool_ids": ["get_neighbors@1"],
                "verification_ids": [],
            }
        )
    per_shard = rows_per_shard or max(1, len(records))
    for shard, start in enumerate(range(0, len(records), per_shard)):
        table = pa.Table.from_pylist(records[start : start + per_shard], schema=SFT_SCHEMA)
        pq.write_table(table, root / "data" / f"{split}-{shard:05d}.parquet", compression="zstd")
    manifest = {"schema_version": 1, "kind": "sft", "rows": {split: len(records)}}
    (root / "manifest.json").write_text(json.dumps(manifest) + "\n")
    return root


def _call(call_id: str, entity: str, relation: str) -> dict[str, Any]:
    arguments = json.dumps({"entity": entity, "relation": relation})
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_neighbors", "arguments": arguments},
    }


def tool_trajectory_row(
    row_id: str,
    question: str,
    topic: str,
    hops: list[str],
    hop_results: list[dict[str, list[str]]],
    answers: list[str],
) -> dict[str, Any]:
    """A trajectory: question, one assistant turn per hop (parallel calls), results, answer.

    `hop_results[h]` maps each entity queried at hop `h` to what the tool returned for it.

    >>> row = tool_trajectory_row("r1", "Who directed Heat?", "Heat", ["movie_to_director"],
    ...                           [{"Heat": ["Michael Mann"]}], ["Michael Mann"])
    >>> [m["role"] for m in row["messages"]]
    ['system', 'user', 'assistant', 'tool', 'assistant']
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Answer questions about movies. Use the tools."},
        {"role": "user", "content": question},
    ]
    frontier = [topic]
    for h, (relation, results) in enumerate(zip(hops, hop_results, strict=True)):
        calls = [_call(f"call-{h}-{i}", entity, relation) for i, entity in enumerate(frontier)]
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": f"Step {h + 1}: follow {relation} from {', '.join(frontier)}.",
                "tool_calls": calls,
            }
        )
        for call, entity in zip(calls, frontier, strict=True):
            messages.append(
                {
                    "role": "tool",
                    "content": json.dumps(results.get(entity, [])),
                    "tool_call_id": call["id"],
                    "name": "get_neighbors",
                }
            )
        frontier = [x for entity in frontier for x in results.get(entity, [])][:3] or frontier
    messages.append(
        {
            "role": "assistant",
            "content": f"<answer>{'|'.join(answers)}</answer>",
            "reasoning_content": "The last results answer the question.",
        }
    )
    return {"id": row_id, "messages": messages, "tools": TOOLS, "answers": answers}


def simple_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` small random two-hop trajectories (no data files needed), the same for the same `seed`.

    >>> simple_rows(2)[0]["answers"]  # a release year
    ['1955']
    """
    rng = random.Random(seed)
    names = ["Heat", "Alien", "Ran", "Brazil", "Jaws", "Up", "Rocky", "Fargo"]
    people = ["Michael Mann", "Ridley Scott", "Akira Kurosawa", "Terry Gilliam", "Ada Lee"]
    rows = []
    for i in range(n):
        film, person = rng.choice(names), rng.choice(people)
        year = str(rng.randrange(1950, 2020))
        rows.append(
            tool_trajectory_row(
                f"row-{i:04d}",
                f"When was the film directed by {person} released?",
                person,
                ["director_to_movie", "movie_to_year"],
                [{person: [film]}, {film: [year]}],
                [year],
            )
        )
    return rows


_RELATION = {
    "actor": "starred_actors",
    "director": "directed_by",
    "writer": "written_by",
    "year": "release_year",
    "language": "in_language",
    "genre": "has_genre",
}


def metaqa_rows(
    n: int, *, metaqa_dir: str | Path, seed: int = 0, hops: int = 2
) -> list[dict[str, Any]]:
    """Trajectories for the first `n` answerable MetaQA `hops`-hop dev questions (seeded order).

    `metaqa_dir` holds MetaQA as published (`{1,2,3}-hop/vanilla/qa_dev.txt`,
    `{k}-hop/qa_dev_qtype.txt`) and `kb_subset_keallm/kb_subset_named.txt`; tool results come from
    that KB (read, not copied): a hop `actor_to_movie` lists the movies starring the entity,
    `movie_to_year` their years.

    >>> metaqa_rows(2, metaqa_dir="data/metaqa", hops=1)[0]["id"]
    'metaqa-1hop-dev-7126'
    """
    metaqa = Path(metaqa_dir)
    kb = metaqa / "kb_subset_keallm" / "kb_subset_named.txt"
    if not kb.is_file():
        raise FileNotFoundError(f"{kb}: no MetaQA KB subset here; pass the MetaQA directory")
    forward: dict[tuple[str, str], list[str]] = defaultdict(list)
    backward: dict[tuple[str, str], list[str]] = defaultdict(list)
    with kb.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) == 3:
                movie, relation, obj = parts
                forward[(movie, relation)].append(obj)
                backward[(relation, obj)].append(movie)

    def neighbors(entity: str, hop: str) -> list[str]:
        source, target = hop.split("_to_")
        if source == "movie":
            return sorted(set(forward.get((entity, _RELATION[target]), [])))[:8]
        return sorted(set(backward.get((_RELATION[source], entity), [])))[:8]

    base = metaqa / f"{hops}-hop"
    questions = (base / "vanilla" / "qa_dev.txt").read_text(encoding="utf-8").splitlines()
    qtypes = (base / "qa_dev_qtype.txt").read_text(encoding="utf-8").splitlines()
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    rows = []
    for index in order:
        text, answer_text = questions[index].split("\t")
        chain = qtypes[index].split("_to_")
        hop_names = [f"{a}_to_{b}" for a, b in zip(chain, chain[1:], strict=False)]
        if any(part not in _RELATION and part != "movie" for part in chain):
            continue
        topic = text[text.index("[") + 1 : text.index("]")]
        frontier, results = [topic], []
        for hop in hop_names:
            found = {entity: neighbors(entity, hop) for entity in frontier}
            results.append(found)
            frontier = [x for entity in frontier for x in found[entity]][:3]
        if not frontier:
            continue
        answers = answer_text.split("|")
        question = text.replace("[", "").replace("]", "")
        rows.append(
            tool_trajectory_row(
                f"metaqa-{hops}hop-dev-{index}", question, topic, hop_names, results, answers
            )
        )
        if len(rows) == n:
            break
    return rows
