"""The solver loop: malformed tool calls become counted observations; budgets end trajectories."""

from __future__ import annotations

import json

import pytest

import kag
from kag.world import generate_world, write_world
from selfplay.graph_tools import default_registry
from selfplay.oracle import OraclePolicy
from selfplay.proposer import Proposer
from selfplay.scoring import Scorer
from selfplay.solver import ANSWER_NOW, Solver, SolverConfig


@pytest.fixture
def setup(sqlite_url):
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=6, size=200))
        registry = default_registry(g, sandbox=None)
        tasks = Proposer(g).propose(3, hops=3, seed=4).tasks
        assert len(tasks) == 3
        yield g, registry, tasks


def test_malformed_tool_calls_become_error_observations_and_are_counted(setup):
    g, registry, tasks = setup
    rollouts = Solver(OraclePolicy(malformed_turns=2), registry).solve(tasks, run_id="r")
    for r in rollouts:
        assert r.n_malformed == 2
        bad = [r.messages[i] for i, t in r.tool_results.items() if t.malformed]
        assert len(bad) == 2
        for m in bad:
            assert m["role"] == "tool"
            assert json.loads(m["content"])["error"].startswith("malformed tool call: tool call 1")
        # the run goes on after them and still reaches the answer
        assert r.status == "completed" and r.answer
    scored = Scorer(registry).score(rollouts)
    for s in scored:
        results = {v.verifier_id: v for v in s.verifications}
        assert results["tool_call_validity@1"].passed is False
        assert results["answer_match@2"].passed is True


def test_calls_the_registry_rejects_are_observations_too(setup):
    g, registry, tasks = setup
    solver = Solver(OraclePolicy(), registry)
    r = solver.start(tasks[0], run_id="r")
    from selfplay.solver import Action

    solver.apply(
        r,
        Action(
            text='<tool_call>{"name": "fly", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "get_entity", "arguments": {"entity_id": 3}}</tool_call>'
        ),
    )
    observations = [json.loads(m["content"]) for m in r.messages if m["role"] == "tool"]
    assert "unknown tool 'fly'" in observations[0]["error"]
    assert "invalid arguments for get_entity" in observations[1]["error"]
    assert (r.n_tool_calls, r.n_tool_errors, r.n_malformed) == (2, 2, 0)


def test_the_turn_limit_forces_one_final_answer_turn(setup):
    g, registry, tasks = setup
    config = SolverConfig(max_turns=2)  # a 3-hop task needs 5 oracle turns
    rollouts = Solver(OraclePolicy(), registry, config=config).solve(tasks, run_id="r")
    for r in rollouts:
        assert r.status == "truncated"
        assert r.n_turns == 3  # two turns and the final one
        assert r.messages[-2] == {
            "role": "user",
            "content": ANSWER_NOW,
            "reasoning_content": None,
            "tool_calls": None,
            "tool_call_id": None,
            "name": None,
        }
        assert r.messages[-1]["role"] == "assistant"
    assert {s.verdict for s in Scorer(registry).score(rollouts)} == {"rejected"}


def test_the_context_budget_aborts_a_trajectory(setup):
    g, registry, tasks = setup
    config = SolverConfig(max_context_tokens=160, min_turn_tokens=8)
    rollouts = Solver(OraclePolicy(), registry, config=config).solve(tasks, run_id="r")
    assert {r.status for r in rollouts} == {"aborted"}
    assert all("context budget" in r.stop_reason for r in rollouts)
    assert all(0 < r.n_turns < 5 for r in rollouts)


def test_solver_config_errors_name_the_field():
    with pytest.raises(ValueError, match="max_turns"):
        SolverConfig(max_turns=0)
    with pytest.raises(ValueError, match="min_turn_tokens"):
        SolverConfig(max_context_tokens=16, min_turn_tokens=32)


def test_each_family_gets_its_own_turn_budget(setup):
    import dataclasses

    from selfplay.families import FAMILY_PROTOCOLS
    from selfplay.solver import TurnBudget

    g, registry, tasks = setup
    # the same 3-hop tasks (5 oracle turns) as search tasks under a 2-turn protocol, and as
    # "compute" tasks under a 6-turn one, in one solve call
    as_compute = [dataclasses.replace(t, id=t.id + "-c", family="compute") for t in tasks]
    config = SolverConfig(
        budgets={
            "search": TurnBudget(max_turns=2, max_new_tokens=256),
            "compute": TurnBudget(max_turns=6, max_new_tokens=256),
        }
    )
    rollouts = Solver(OraclePolicy(), registry, config=config).solve(
        [*tasks, *as_compute], run_id="r"
    )
    by_family = {r.task.id: r for r in rollouts}
    for t in tasks:
        r = by_family[t.id]
        assert (r.status, r.n_turns) == ("truncated", 3)
        assert r.stop_reason == "turn limit (2 turns)"
    for t in as_compute:
        assert by_family[t.id].status == "completed"
    # the shipped protocols: shapes of search get more turns, tool_use more than search
    search = dataclasses.replace(tasks[0], path={**tasks[0].path, "shape": "set"})
    defaults = SolverConfig(budgets=FAMILY_PROTOCOLS)
    assert defaults.budget_for(search).max_turns == 16
    assert defaults.budget_for(tasks[0]).max_turns == 8
    assert defaults.budget_for(dataclasses.replace(tasks[0], family="tool_use")).max_turns == 12
    assert SolverConfig().budget_for(tasks[0]) == TurnBudget(max_turns=8, max_new_tokens=256)
    with pytest.raises(ValueError, match="max_turns"):
        TurnBudget(max_turns=0, max_new_tokens=1)
