"""The oracle policy end to end: gold trajectories accepted, every edge written, provenance queries.

Runs on every backend (`graph` fixture), plus one run on the real MetaQA knowledge base.
"""

from __future__ import annotations

from collections import Counter

import pytest

import kag
import selfplay
from kag.schema import Run
from kag.world import generate_world, write_world
from selfplay.config import CurriculumConfig, SelfPlayConfig
from selfplay.graph_tools import default_registry
from selfplay.oracle import OraclePolicy
from selfplay.proposer import Proposer, ProposerConfig
from selfplay.rollout import step_id
from selfplay.scoring import Scorer
from selfplay.solver import Solver, SolverConfig
from selfplay.writeback import write_rollouts, write_tasks
from tests.data import DATA_DIR

METAQA_KB = DATA_DIR / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt"


def _world(graph, size: int = 200, seed: int = 4) -> None:
    write_world(graph, *generate_world(seed=seed, size=size))


def _config(**kw) -> SelfPlayConfig:
    return SelfPlayConfig(engine="oracle", progress=False, **kw)


def test_oracle_trajectories_are_all_accepted_with_every_edge_written(graph):
    _world(graph)
    summary = selfplay.run(
        graph,
        config=_config(
            run_id="gold",
            tasks=4,
            samples=2,
            curriculum=CurriculumConfig(min_hops=2, max_hops=3, min_trajectories=4),
            tasks_per_round=2,
        ),
    )
    assert summary.status == "completed"
    assert (summary.tasks, summary.trajectories, summary.accepted) == (4, 8, 8)
    assert summary.by_hops == {2: [4, 4], 3: [4, 4]}  # the curriculum moved on after 4 accepted
    trajectories = list(graph.iter_nodes("Trajectory"))
    assert len(trajectories) == 8
    assert {t.verdict for t in trajectories} == {"accepted"}
    assert {t.policy for t in trajectories} == {"oracle"}
    assert {t.run_id for t in trajectories} == {"gold"}

    stats = graph.stats()
    steps = list(graph.iter_nodes("Step"))
    tool_steps = [s for s in steps if s.role == "tool"]
    n_verifiers = graph.count("Verifier")
    edges = stats["edges"]
    assert edges["SOLVES"] == 8
    assert edges["HAS_STEP"] == len(steps)
    assert edges["TRANSITIONS_TO"] == len(steps) - 8
    assert edges["USED_TOOL"] == len(tool_steps)
    # one verdict per trajectory-level verifier, one per tool Step (tool_step@2, VERIFIES -> Step)
    assert edges["VERIFIES"] == edges["APPLIES"] == 8 * (n_verifiers - 1) + len(tool_steps)
    on_steps = [v for v in graph.iter_nodes("Verification") if v.subject_kind == "Step"]
    assert {v.subject_id for v in on_steps} == {s.id for s in tool_steps}
    assert {(v.verifier_id, v.passed) for v in on_steps} == {("tool_step@2", True)}
    assert edges["PRODUCED_BY"] == 8 + 4  # trajectories and tasks -> the run
    assert edges["CHECKED_BY"] == 4 * n_verifiers
    assert edges["SUPPORTS"] == sum(len(set(t.path["entities"])) for t in graph.iter_nodes("Task"))
    assert edges["TOUCHED"] > 0
    # every path entity of every task is touched by a tool step of each of its trajectories
    for t in trajectories:
        task = graph.get("Task", t.task_id)
        ids = [step_id(t.id, i) for i in range(t.props["n_tool_calls"] * 2 + 8)]
        touched = {e.target for e in graph.edges("TOUCHED", source=ids)}
        assert set(task.path["entities"]) <= touched
    run = graph.get("Run", "gold")
    assert run.status == "completed" and run.finished_at
    assert run.counters["trajectories"] == 8 and run.counters["accepted"] == 8
    assert run.config["engine"] == "oracle"


def test_rerunning_a_finished_run_writes_nothing_new(graph):
    _world(graph)
    config = _config(run_id="twice", tasks=4, samples=1)
    selfplay.run(graph, config=config)
    before = graph.stats()
    again = selfplay.run(graph, config=config)
    assert again.resumed and again.written_this_call == 0
    after = graph.stats()
    assert after["nodes"] == before["nodes"] and after["edges"] == before["edges"]


def test_steps_round_trip_to_the_design_message_format(graph):
    _world(graph)
    selfplay.run(graph, config=_config(run_id="fmt", tasks=1))
    traj = next(graph.iter_nodes("Trajectory"))
    steps = sorted(
        graph.get_many("Step", [e.target for e in graph.edges("HAS_STEP", source=traj.id)]),
        key=lambda s: s.idx,
    )
    messages = [s.to_message() for s in steps]
    assert [m["role"] for m in messages[:3]] == ["system", "user", "assistant"]
    calls = [c for m in messages if m["tool_calls"] for c in m["tool_calls"]]
    results = [m for m in messages if m["role"] == "tool"]
    assert [c["id"] for c in calls] == [m["tool_call_id"] for m in results]
    assert messages[-1]["role"] == "assistant" and "<answer>" in messages[-1]["content"]
    assert traj.answer and traj.n_turns == sum(m["role"] == "assistant" for m in messages)


def test_provenance_query_finds_trajectories_by_entity_tool_and_failed_verifier(graph):
    _world(graph, seed=8)
    registry = default_registry(graph, sandbox=None)
    registry.persist(graph.store)
    scorer = Scorer(registry)
    scorer.persist(graph.store)
    proposer = Proposer(graph, config=ProposerConfig(verifiers=tuple(scorer.verifier_ids)))
    tasks = proposer.propose(4, hops=2, seed=3).tasks
    write_tasks(graph.store, tasks)
    config = SolverConfig(max_turns=6)
    clean = Solver(OraclePolicy(), registry, config=config).solve(tasks, run_id="clean")
    sloppy = Solver(OraclePolicy(malformed_turns=1), registry, config=config).solve(
        tasks, run_id="sloppy"
    )
    graph.upsert(Run(id="clean", kind="selfplay"), Run(id="sloppy", kind="selfplay"))
    write_rollouts(graph.store, scorer.score(clean + sloppy))

    # the question a user asks: which trajectories touched X through get_relations and failed Z?
    x = tasks[0].path["entities"][1]
    got = graph.find_trajectories(
        touched_entity=x, used_tool="get_relations@1", failed_verifier="tool_call_validity@1"
    )
    expected = sorted(
        r.id
        for r in sloppy
        if any(t.call_name == "get_relations" and x in t.touched_entity_ids for t in r.tool_calls)
    )
    assert got == expected and len(got) >= 1
    assert all(i.startswith("traj:sloppy:") for i in got)
    # the clean twins touched X the same way and passed
    assert graph.find_trajectories(
        touched_entity=x, used_tool="get_relations@1", passed_verifier="tool_call_validity@1"
    ) == sorted(i.replace("sloppy", "clean") for i in expected)
    # malformed calls do not stop the oracle, but they reject its trajectory: the sloppy twins
    # answer right and still score below every clean (accepted) one
    by_id = {t.id: t for t in graph.iter_nodes("Trajectory")}
    clean = [t for i, t in by_id.items() if i.startswith("traj:clean:")]
    sloppy_t = [t for i, t in by_id.items() if i.startswith("traj:sloppy:")]
    assert {t.verdict for t in clean} == {"accepted"}
    assert {t.verdict for t in sloppy_t} == {"rejected"}
    assert max(t.reward for t in sloppy_t) < min(t.reward for t in clean)
    assert all(t.props["n_invalid_calls"] >= 1 for t in sloppy_t)


def test_oracle_on_the_real_metaqa_knowledge_base(sqlite_url):
    lines = METAQA_KB.read_text(encoding="utf-8").splitlines()[:6000]
    triples = [tuple(line.split("|")) for line in lines if line.count("|") == 2]
    # MetaQA's questions walk relations both ways ("films directed by the director of X"):
    # add the inverse of the person relations, as its question templates assume
    inverse = {"directed_by": "directed", "written_by": "wrote", "starred_actors": "starred_in"}
    triples += [(o, inverse[r], s) for s, r, o in triples if r in inverse]
    with kag.open(sqlite_url) as g:
        g.upsert_relations(triples, create_entities=True)
        summary = selfplay.run(
            g,
            config=_config(
                run_id="metaqa",
                tasks=12,
                curriculum=CurriculumConfig(min_hops=2, max_hops=2),
            ),
        )
        assert summary.tasks == 12 and summary.accepted == 12
        tasks = list(g.iter_nodes("Task"))
        # MetaQA has no phrases: questions nest phrases inferred from the relation names
        assert all(t.question.startswith("What is the ") for t in tasks)
        assert not any("_" in t.question.replace(t.props["start_name"], "") for t in tasks)
        relations = Counter(r for t in tasks for r in t.path["relations"])
        assert set(relations) <= {
            "directed_by",
            "written_by",
            "starred_actors",
            "has_genre",
            "has_tags",
            "release_year",
            "in_language",
            "has_imdb_rating",
            "has_imdb_votes",
            *inverse.values(),
        }


def test_a_resumed_run_must_keep_its_settings(sqlite_url):
    with kag.open(sqlite_url) as g:
        _world(g)
        selfplay.run(g, config=_config(run_id="fixed", tasks=2))
        with pytest.raises(ValueError, match="different settings for tasks"):
            selfplay.run(g, config=_config(run_id="fixed", tasks=3))


class _TokenCountingOracle:
    """The oracle, claiming 50 generated tokens per turn (the oracle itself reports none)."""

    name = "oracle"

    def __init__(self) -> None:
        self.inner = OraclePolicy()

    def act(self, requests, *, tools):
        import dataclasses

        actions = self.inner.act(requests, tools=tools)
        return [dataclasses.replace(a, n_tokens=50) for a in actions]

    def count_tokens(self, rollout, *, tools):
        return self.inner.count_tokens(rollout, tools=tools)


def test_progress_bar_shows_tokens_per_second_of_elapsed_time(graph, capsys):
    import re

    _world(graph)
    config = SelfPlayConfig(engine="oracle", tasks=4, run_id="bar", progress=True)
    summary = selfplay.run(graph, config=config, policy=_TokenCountingOracle())
    rates = [int(r) for r in re.findall(r"tok_s=(\d+)", capsys.readouterr().err)]
    assert rates and summary.tokens_this_call > 0
    # the bar's rate is tokens over the seconds since it started, never over a clock mix-up
    assert 0 < rates[-1] <= 2 * summary.tokens_per_s


def test_another_driver_generates_scored_rollouts_under_a_run_of_its_own_kind(graph):
    from selfplay.generation import RolloutSource

    _world(graph)
    tasks = Proposer(graph, config=ProposerConfig()).propose(2, hops=2, seed=1).tasks
    write_tasks(graph.store, tasks)
    tools = default_registry(graph, sandbox=None)
    source = RolloutSource(graph.store, OraclePolicy(), tools=tools, run_id="grpo-step-1")
    run = Run(id="grpo-step-1", kind="grpo", status="running")
    scored = source.generate(tasks, run=run, samples=3)
    assert [s.rollout.task.id for s in scored] == [t.id for t in tasks for _ in range(3)]
    assert {s.verdict for s in scored} == {"accepted"} and {s.reward for s in scored} == {1.0}
    [stored] = graph.store.get_nodes("Run", ["grpo-step-1"])
    assert stored.kind == "grpo"
    trajectories = list(graph.iter_nodes("Trajectory"))
    assert sorted(t.id for t in trajectories) == sorted(s.rollout.id for s in scored)
    assert {t.run_id for t in trajectories} == {"grpo-step-1"}
    assert graph.stats()["edges"]["PRODUCED_BY"] == 6  # trajectories -> the run, tasks untouched
