"""The tiny random model runs self-play end to end through both real engines; its answers are rejected.

`VLLMEngine` runs in this process; `OpenAIEngine` talks to a real vLLM server started by the
`vllm_server` fixture. Budgets are tiny so the CPU run stays short.
"""

from __future__ import annotations

import pytest

import kag
import selfplay
from kag.world import generate_world, write_world
from selfplay.config import SelfPlayConfig
from selfplay.solver import SolverConfig

pytestmark = pytest.mark.vllm

SOLVER = SolverConfig(max_turns=2, max_new_tokens=24, max_context_tokens=2048, seed=0)


def _check_garbage_is_rejected(g, summary, *, run_id: str) -> None:
    assert summary.status == "completed"
    assert summary.trajectories == 4 and summary.accepted == 0
    assert summary.tokens > 0 and summary.tokens_per_s > 0
    trajectories = list(g.iter_nodes("Trajectory", where={"run_id": run_id}))
    assert len(trajectories) == 4
    assert {t.verdict for t in trajectories} == {"rejected"}
    assert {t.status for t in trajectories} <= {"completed", "truncated", "aborted"}
    assert all(t.policy.startswith("model:") for t in trajectories)
    for t in trajectories:
        assert t.n_tokens > 0
        outcome = {v.verifier_id: v for v in g.iter_nodes("Verification") if v.subject_id == t.id}
        # the right verifier outcomes are in the graph, linked to the trajectory and verifier
        assert outcome["answer_match@2"].passed is False
        assert outcome["evidence_coverage@2"].passed is False
        assert outcome["no_shortcut@1"].passed is True
        applies = g.edges("APPLIES", source=outcome["answer_match@2"].id)
        assert [e.target for e in applies] == ["answer_match@2"]
        verifies = g.edges("VERIFIES", source=outcome["answer_match@2"].id)
        assert [e.target for e in verifies] == [t.id]
        steps = g.get_many("Step", [e.target for e in g.edges("HAS_STEP", source=t.id)])
        assistant = [s for s in steps if s.role == "assistant"]
        assert len(assistant) == t.n_turns
        assert sum(s.n_tokens for s in assistant) == t.n_tokens
    failed = g.find_trajectories(failed_verifier="answer_match@2", run_id=run_id)
    assert failed == sorted(t.id for t in trajectories)


def test_tiny_model_in_process_vllm_engine_end_to_end(vllm_engine, sqlite_url):
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=2, size=120))
        config = SelfPlayConfig(
            run_id="tiny-vllm", tasks=2, samples=2, engine="vllm", model="unused", solver=SOLVER,
            progress=False,
        )  # fmt: skip
        summary = selfplay.run(g, config=config, engine=vllm_engine)
        _check_garbage_is_rejected(g, summary, run_id="tiny-vllm")


def test_tiny_model_through_openai_engine_against_a_vllm_server(vllm_server, sqlite_url):
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=2, size=120))
        config = SelfPlayConfig(
            run_id="tiny-openai", tasks=2, samples=2, engine="openai", model=vllm_server.model,
            base_url=vllm_server.base_url, solver=SOLVER, progress=False,
        )  # fmt: skip
        summary = selfplay.run(g, config=config)
        _check_garbage_is_rejected(g, summary, run_id="tiny-openai")


def test_a_rewrite_that_loses_the_start_entity_keeps_the_template(vllm_engine, sqlite_url):
    from selfplay.proposer import Proposer, ProposerConfig

    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=2, size=120))
        config = ProposerConfig(rewrite=True, rewrite_max_tokens=16)
        tasks = Proposer(g, config=config, engine=vllm_engine).propose(3, hops=2, seed=0).tasks
        plain = Proposer(g).propose(3, hops=2, seed=0).tasks
        # the random model's rewrite never keeps the quoted names, so the template stays
        assert [t.question for t in tasks] == [t.question for t in plain]
        assert not any(t.props.get("rewritten") for t in tasks)


def test_overlapped_rollouts_match_lock_step_and_keep_the_engine_busy(vllm_engine, sqlite_url):
    """`SolverConfig.overlap_turns` drives each rollout apart: the same turns, seeds, budgets and
    endings as one batched call per turn, with several rollouts' turns in flight at once."""
    import asyncio
    from dataclasses import replace

    from selfplay.graph_tools import default_registry
    from selfplay.proposer import Proposer
    from selfplay.solver import EnginePolicy, Solver

    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=2, size=120))
        tasks = Proposer(g).propose(3, hops=2, seed=0).tasks
        tools = default_registry(g, sandbox=None)
        config = SolverConfig(max_turns=3, max_new_tokens=16, max_context_tokens=2048, seed=5)
        policy = EnginePolicy(vllm_engine, temperature=1.0, continue_tokens=True, logprobs=True)
        assert policy.overlaps

        in_flight, most = [0], [0]
        agenerate = vllm_engine.agenerate

        async def counted(prompts, *, sampling):
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            try:
                await asyncio.sleep(0)
                return await agenerate(prompts, sampling=sampling)
            finally:
                in_flight[0] -= 1

        lock_step = Solver(policy, tools, config=config).solve(tasks, run_id="ls", samples=2)
        vllm_engine.agenerate = counted
        finished: list[str] = []
        try:
            overlapped = Solver(policy, tools, config=replace(config, overlap_turns=True)).solve(
                tasks,
                run_id="ls",
                samples=2,
                on_finished=lambda rs: finished.extend(r.id for r in rs),
            )
        finally:
            del vllm_engine.agenerate
    assert most[0] > 1  # turns of different rollouts shared the engine's batch
    assert sorted(finished) == sorted(r.id for r in overlapped)  # each reported once
    assert [r.id for r in overlapped] == [r.id for r in lock_step]
    for a, b in zip(lock_step, overlapped, strict=True):
        assert (a.status, a.n_turns, a.n_generated) == (b.status, b.n_turns, b.n_generated)
        assert a.sampled_token_ids == b.sampled_token_ids
        assert a.messages == b.messages
