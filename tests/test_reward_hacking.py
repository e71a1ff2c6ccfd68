"""Deliberately bad policies try the tricks that gamed the reward; each is rejected and scores lower.

Every policy runs through the real solver loop, graph tools and scorer on a generated world,
against the oracle on the same tasks: the oracle is accepted with reward 1.0, and each trick is
rejected with a reward below every accepted trajectory of its task.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

import kag
from kag.schema import Entity, Run, Task
from kag.world import generate_world, write_world
from selfplay.answers import leaked_answer
from selfplay.graph_tools import default_registry
from selfplay.oracle import OraclePolicy
from selfplay.proposer import Proposer, ProposerConfig
from selfplay.rewards import VerifierSuite
from selfplay.scoring import Scorer
from selfplay.solver import Action, Solver, TurnRequest
from selfplay.verifiers import NoShortcut
from selfplay.writeback import write_rollouts, write_tasks


class _Scripted:
    """A policy that knows the task's answers (a lucky guesser) and plays one trick."""

    name = "bad"

    def count_tokens(self, rollout: Any, *, tools: list[dict[str, Any]]) -> int:
        return sum(len(m.get("content") or "") for m in rollout.messages) // 4 + 1

    def act(self, requests: Sequence[TurnRequest], *, tools: list[dict[str, Any]]) -> list[Action]:
        return [Action(text=self.turn(r), finish_reason="stop") for r in requests]

    def turn(self, request: TurnRequest) -> str:
        raise NotImplementedError


def _calls(*calls: tuple[str, dict[str, Any]]) -> str:
    return "\n".join(
        f"<tool_call>\n{json.dumps({'name': n, 'arguments': a})}\n</tool_call>" for n, a in calls
    )


def _turn(request: TurnRequest) -> int:
    return sum(m["role"] == "assistant" for m in request.rollout.messages)


class PartialAnswer(OraclePolicy):
    """Walks the chain like the oracle, then names only the first answer."""

    def act(self, requests, *, tools):
        actions = super().act(requests, tools=tools)
        out = []
        for a in actions:
            text = a.text
            if "<answer>" in text:
                body = text.split("<answer>")[1].split("</answer>")[0]
                text = f"<answer>{body.split('; ')[0]}</answer>"
            out.append(Action(text=text, finish_reason="stop"))
        return out


class BroadSearch(_Scripted):
    """Searches for each path entity's name (its ids land in observations), walks nothing,
    and answers with the gold answers."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def turn(self, request: TurnRequest) -> str:
        task = request.rollout.task
        if _turn(request) == 0:
            queries = [self.names[e] for e in task.path["entities"]]
            return _calls(*(("search_entities", {"query": q, "limit": 50}) for q in queries))
        return f"<answer>{'; '.join(task.answers)}</answer>"


class ListEverything(_Scripted):
    """Walks nothing and lists every answer plus a pile of other entity names."""

    def __init__(self, decoys: list[str]) -> None:
        self.decoys = decoys

    def turn(self, request: TurnRequest) -> str:
        return f"<answer>{'; '.join([*request.rollout.task.answers, *self.decoys])}</answer>"


class CopyTheQuestion(_Scripted):
    """Answers with what the question already names, without a tool call."""

    def turn(self, request: TurnRequest) -> str:
        task = request.rollout.task
        return f"<answer>{leaked_answer(task.question, task.answers) or ''}</answer>"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('hack') / 'kag.db'}"
    with kag.open(url) as g:
        write_world(g, *generate_world(seed=3, size=300))
        suite = VerifierSuite.default()
        suite.persist(g.store)
        proposal = Proposer(g, config=ProposerConfig(verifiers=tuple(suite.ids))).propose(
            40, hops=2, seed=2
        )
        tasks = [t for t in proposal.tasks if len(t.answers) >= 2][:6]
        assert len(tasks) >= 3, "the world must give tasks with several answers"
        write_tasks(g.store, tasks)
        names = {e.id: e.name for batch in g.store.iter_nodes("Entity") for e in batch}
        yield g, tasks, names


def _play(g, policy, tasks, run_id: str, *, malformed: int = 0):
    registry = default_registry(g, sandbox=None)
    registry.persist(g.store)
    rollouts = Solver(policy, registry).solve(tasks, run_id=run_id)
    scored = Scorer(registry, store=g.store).score(rollouts)
    write_rollouts(g.store, scored, run=Run(id=run_id, kind="eval", status="completed"))
    return {s.rollout.task.id: s for s in scored}


def _assert_caught(gold, bad, *, failing: str) -> None:
    for task_id, s in bad.items():
        assert s.verdict == "rejected", (task_id, s.verifications)
        failed = {v.verifier_id for v in s.verifications if v.passed is not True}
        assert failing in failed
        assert s.reward <= 0.45 < 0.5 <= gold[task_id].reward
        assert s.reward < gold[task_id].reward


def test_the_oracle_is_accepted_with_full_reward(world):
    g, tasks, _ = world
    gold = _play(g, OraclePolicy(), tasks, "gold")
    assert {s.verdict for s in gold.values()} == {"accepted"}
    assert {s.reward for s in gold.values()} == {1.0}


def test_naming_one_of_several_answers_is_rejected(world):
    g, tasks, _ = world
    gold = _play(g, OraclePolicy(), tasks, "gold")
    partial = _play(g, PartialAnswer(), tasks, "partial")
    _assert_caught(gold, partial, failing="answer_match@2")
    for s in partial.values():
        answer = next(v for v in s.verifications if v.verifier_id == "answer_match@2")
        assert 0 < answer.score < 1  # F1 of a partial answer: credit, but not full credit


def test_listing_every_name_is_rejected(world):
    g, tasks, names = world
    gold = _play(g, OraclePolicy(), tasks, "gold")
    answers = {a for t in tasks for a in t.answers}
    decoys = [n for n in sorted(names.values()) if n not in answers][:40]
    _assert_caught(
        gold, _play(g, ListEverything(decoys), tasks, "shotgun"), failing="answer_match@2"
    )


def test_a_broad_search_is_no_evidence(world):
    g, tasks, names = world
    gold = _play(g, OraclePolicy(), tasks, "gold")
    broad = _play(g, BroadSearch(names), tasks, "broad")
    for s in broad.values():  # the path entities were in its observations...
        assert set(s.rollout.task.path["entities"]) <= set(s.rollout.touched_entity_ids)
    _assert_caught(gold, broad, failing="evidence_coverage@2")  # ...but it walked no hop


def test_malformed_calls_are_rejected_and_cost_reward(world):
    g, tasks, _ = world
    gold = _play(g, OraclePolicy(), tasks, "gold")
    sloppy = _play(g, OraclePolicy(malformed_turns=1), tasks, "sloppy")
    for s in sloppy.values():  # it recovers and answers right
        answer = next(v for v in s.verifications if v.verifier_id == "answer_match@2")
        assert answer.passed is True
    _assert_caught(gold, sloppy, failing="tool_call_validity@1")
    stored = g.store.get_nodes("Trajectory", [s.rollout.id for s in sloppy.values()])
    assert {t.props["n_invalid_calls"] for t in stored} == {1}


def test_a_question_that_names_its_answer_earns_nothing(world):
    g, tasks, _ = world
    leaky = [
        Task.from_dict(
            {
                **t.to_dict(),
                "id": t.id + "-leak",
                "question": f"{t.question} (Hint: {t.answers[0]}.)",
            }
        )
        for t in tasks
    ]
    write_tasks(g.store, leaky)
    gold = _play(g, OraclePolicy(), tasks, "gold")
    oracle_on_leaky = _play(g, OraclePolicy(), leaky, "gold-leaky")
    copied = _play(g, CopyTheQuestion(), leaky, "copy")
    for t in tasks:
        # the oracle's perfect work on a leaky task is rejected and scores below any accepted one
        s = oracle_on_leaky[t.id + "-leak"]
        assert s.verdict == "rejected" and s.reward <= 0.45 < gold[t.id].reward
        c = copied[t.id + "-leak"]
        assert c.verdict == "rejected" and c.reward < s.reward


def test_the_proposer_never_makes_a_task_the_shortcut_check_rejects(sqlite_url):
    # "ethelbert_of_wessex" -ruled-> "wessex": the names share a word only once "_" is a space
    with kag.open(sqlite_url) as g:
        g.upsert_entities(
            [
                Entity(id="k1", name="ethelbert_of_wessex"),
                Entity(id="k2", name="alfred"),
                Entity(id="r1", name="wessex"),
                Entity(id="r2", name="mercia"),
            ]
        )
        g.upsert_relations([("k1", "son_of", "k2"), ("k2", "ruled", "r1"), ("k1", "son_of", "k2")])
        g.upsert_relations([("k2", "ruled", "r2"), ("r1", "bordered", "r2")])
        proposal = Proposer(g, config=ProposerConfig(mode="uniform", max_out_degree=None)).propose(
            20, hops=2, seed=0
        )
        assert proposal.dropped["shortcut"] >= 1  # k1 -son_of-> k2 -ruled-> {wessex, mercia}
        for task in proposal.tasks:
            assert NoShortcut().verify(task).passed is True
