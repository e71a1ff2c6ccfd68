"""The prompt a model trains on is the prompt self-play gives it, token for token, on every backend.

An exported SFT row is rendered with the tiny model's chat template and its `tools` column, and
compared with what the self-play solver renders for the same trajectory: the first prompt (system
prompt, offered tools in their order, the question) and the whole conversation.
"""

from __future__ import annotations

import json

import polars as pl
from transformers import AutoTokenizer

import exporters
from kag.schema import Run
from kag.world import generate_world, write_world
from selfplay.graph_tools import default_registry
from selfplay.oracle import OraclePolicy
from selfplay.proposer import Proposer, ProposerConfig
from selfplay.scoring import Scorer
from selfplay.solver import Solver
from selfplay.writeback import write_rollouts, write_tasks


def _ids(tokenizer, messages, tools, *, generation: bool) -> list[int]:
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=True, add_generation_prompt=generation
    )


def test_exported_sft_rows_render_to_the_self_play_prompt_token_for_token(
    graph, tiny_model_dir, tmp_path
):
    write_world(graph, *generate_world(seed=3, size=150))
    registry = default_registry(graph, sandbox=None)
    registry.persist(graph.store)
    scorer = Scorer(registry)
    scorer.persist(graph.store)
    tasks = Proposer(graph, config=ProposerConfig(verifiers=tuple(scorer.verifier_ids))).propose(
        6, hops=2, seed=1
    )
    write_tasks(graph.store, tasks.tasks)
    solver = Solver(OraclePolicy(), registry)
    rollouts = solver.solve(tasks.tasks, run_id="parity")
    graph.upsert(Run(id="parity", kind="selfplay"))
    write_rollouts(graph.store, scorer.score(rollouts))

    out = tmp_path / "sft"
    exporters.export("sft", out, graph=graph.store)
    rows = pl.read_parquet(out / "data").to_dicts()
    assert len(rows) == len(rollouts) == 6

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    specs = registry.specs()
    by_id = {r.id: r for r in rollouts}
    for row in rows:
        rollout = by_id[row["trajectory_id"]]
        tools = json.loads(row["tools"])
        # the offered tools, in the order the prompt lists them (not the ones the trajectory used)
        assert [t["function"]["name"] for t in tools] == [s["function"]["name"] for s in specs]
        first = solver.start(rollout.task, run_id="again").messages
        assert _ids(tokenizer, row["messages"][:2], tools, generation=True) == _ids(
            tokenizer, first, specs, generation=True
        )
        assert _ids(tokenizer, row["messages"], tools, generation=False) == _ids(
            tokenizer, rollout.messages, specs, generation=False
        )
