"""Set questions (two constraints intersected) and obfuscated starts (the start described, not
named): proposals are right by an independent recomputation, the oracle solves them through the
real solver, tools and scorer, and each kind of wrong answer is rejected."""

from __future__ import annotations

import json

import pytest

import kag
from kag.cli import main as kag_main
from kag.walks import parse_step, path_branches
from kag.world import generate_world, write_world
from selfplay.answers import leaked_answer
from selfplay.graph_tools import default_registry
from selfplay.oracle import OraclePolicy
from selfplay.proposer import Proposer, ProposerConfig
from selfplay.rollout import Rollout
from selfplay.scoring import Scorer
from selfplay.solver import Solver, SolverConfig
from tests.data import DATA_DIR

METAQA_KB = DATA_DIR / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt"


def _brute_reach(triples, start: str, steps) -> set[str]:
    frontier = {start}
    for step in steps:
        relation, direction = parse_step(step)
        if direction == "out":
            frontier = {t for s, r, t in triples if r == relation and s in frontier}
        else:
            frontier = {s for s, r, t in triples if r == relation and t in frontier}
    return frontier


def _check_proposal(task, triples, names) -> None:
    """The task's answers are the set algebra of its chains, recomputed over the raw triples."""
    shape = task.path["shape"]
    branches = path_branches(task.path)
    answer_chains = [b for b in branches if b.role == "answer"]
    start_chains = [b for b in branches if b.role == "start"]
    for b in branches:  # every chain is a real walk in the graph
        for k, step in enumerate(b.relations):
            relation, direction = parse_step(step)
            a, c = b.entities[k], b.entities[k + 1]
            assert ((a, relation, c) if direction == "out" else (c, relation, a)) in triples
    if shape == "set":
        assert len(answer_chains) == 2 and not start_chains
        sets = [_brute_reach(triples, b.entities[0], b.relations) for b in answer_chains]
        answers = sets[0] & sets[1]
        assert answers == set(task.answer_ids) and answers
        assert all(len(answers) < len(s) for s in sets)  # both constraints matter
        assert len(answers) <= 10
        assert all(b.entities[-1] in answers for b in answer_chains)
        anchors = [b.entities[0] for b in answer_chains]
    else:
        assert shape == "obfuscated" and len(answer_chains) == 1 and 1 <= len(start_chains) <= 2
        start = answer_chains[0].entities[0]
        described = set.intersection(
            *(_brute_reach(triples, b.entities[0], b.relations) for b in start_chains)
        )
        assert described == {start}  # the description picks out the start and nothing else
        answers = _brute_reach(triples, start, answer_chains[0].relations)
        assert answers == set(task.answer_ids)
        assert leaked_answer(task.question, [names[start]]) is None
        assert f'"{names[start]}"' not in task.question
        anchors = [b.entities[0] for b in start_chains]
    assert leaked_answer(task.question, task.answers) is None
    for anchor in anchors:
        assert f'"{names[anchor]}"' in task.question
    assert task.family == "search" and task.id.startswith("task:")
    assert set(task.path["entities"]) == {e for b in branches for e in b.entities}


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=5, size=600)


@pytest.mark.parametrize("shape", ["set", "obfuscated"])
def test_world_proposals_of_each_shape_are_right_and_the_oracle_solves_them(graph, world, shape):
    write_world(graph, *world)
    triples = {r.key for r in world[1]}
    names = {e.id: e.name for e in world[0]}
    registry = default_registry(graph, sandbox=None)
    scorer = Scorer(registry, store=graph.store)
    scorer.persist(graph.store)
    config = ProposerConfig(shapes=(shape,), verifiers=tuple(scorer.verifier_ids))
    proposer = Proposer(graph, config=config)
    tasks = [t for h in (2, 3) for t in proposer.propose(10, hops=h, seed=h).tasks]
    assert len(tasks) == 20
    assert len({t.id for t in tasks}) == 20
    for t in tasks:
        _check_proposal(t, triples, names)
    again = [t.id for h in (2, 3) for t in proposer.propose(10, hops=h, seed=h).tasks]
    assert again == [t.id for t in tasks]  # deterministic
    chains = Proposer(graph, config=ProposerConfig()).propose(20, hops=2, seed=2).tasks
    assert not {t.id for t in chains} & {t.id for t in tasks}
    if shape == "obfuscated":
        assert any(sum(b.role == "start" for b in path_branches(t.path)) == 2 for t in tasks)
    rollouts = Solver(OraclePolicy(), registry, config=SolverConfig(max_turns=16)).solve(
        tasks, run_id=f"gold-{shape}"
    )
    scored = scorer.score(rollouts)
    assert [s.verdict for s in scored] == ["accepted"] * len(tasks), [
        [(v.verifier_id, v.detail) for v in s.verifications if v.passed is False]
        for s in scored
        if s.verdict != "accepted"
    ]


def _replace_messages(rollout: Rollout, messages) -> Rollout:
    import dataclasses

    return dataclasses.replace(rollout, messages=messages)


def test_wrong_answers_to_set_and_obfuscated_tasks_are_rejected(graph, world):
    write_world(graph, *world)
    triples = {r.key for r in world[1]}
    names = {e.id: e.name for e in world[0]}
    registry = default_registry(graph, sandbox=None)
    scorer = Scorer(registry, store=graph.store)
    scorer.persist(graph.store)
    verifiers = tuple(scorer.verifier_ids)
    sets = Proposer(graph, config=ProposerConfig(shapes=("set",), verifiers=verifiers))
    obf = Proposer(graph, config=ProposerConfig(shapes=("obfuscated",), verifiers=verifiers))
    set_tasks = sets.propose(8, hops=2, seed=1).tasks
    obf_tasks = obf.propose(8, hops=2, seed=1).tasks
    solver = Solver(OraclePolicy(), registry, config=SolverConfig(max_turns=16))
    gold = {r.task.id: r for r in solver.solve([*set_tasks, *obf_tasks], run_id="wrong")}
    wrong: list[Rollout] = []
    for t in set_tasks:
        # one constraint only: its whole (larger) set is a superset of the answers
        first = path_branches(t.path)[0]
        superset = sorted(_brute_reach(triples, first.entities[0], first.relations))
        assert set(t.answer_ids) < set(superset)
        wrong.append(_replace_answer(gold[t.id], "; ".join(names[e] for e in superset)))
        if len(t.answers) > 1:  # a missing item
            wrong.append(_replace_answer(gold[t.id], "; ".join(t.answers[1:])))
    for t in obf_tasks:
        # a wrong start: the chain followed from another entity the first description reaches,
        # or from the anchor itself when the description names one entity
        chain = [b for b in path_branches(t.path) if b.role == "answer"][0]
        desc = [b for b in path_branches(t.path) if b.role == "start"][0]
        others = sorted(
            _brute_reach(triples, desc.entities[0], desc.relations) - {chain.entities[0]}
        )
        for other in [*others, desc.entities[0]]:
            reached = _brute_reach(triples, other, chain.relations)
            if reached and reached != set(t.answer_ids):
                wrong.append(
                    _replace_answer(gold[t.id], "; ".join(names[e] for e in sorted(reached)))
                )
                break
        if len(t.answers) > 1:
            wrong.append(_replace_answer(gold[t.id], "; ".join(t.answers[1:])))
    assert len(wrong) >= len(set_tasks) + 4
    assert [s.verdict for s in scorer.score(list(gold.values()))].count("accepted") == len(gold)
    verdicts = [s.verdict for s in scorer.score(wrong)]
    assert verdicts == ["rejected"] * len(wrong)


def _replace_answer(rollout: Rollout, answer: str) -> Rollout:
    messages = [dict(m) for m in rollout.messages]
    assert messages[-1]["role"] == "assistant"
    messages[-1]["content"] = f"<think>a wrong answer</think>\n<answer>{answer}</answer>"
    return _replace_messages(rollout, messages)


def _metaqa_slice(n_films: int = 3000) -> list[tuple[str, str, str]]:
    """Every triple of the first `n_films` films of the real MetaQA KB (its subjects)."""
    films: dict[str, None] = {}
    out = []
    for line in METAQA_KB.read_text(encoding="utf-8").splitlines():
        parts = tuple(line.split("|"))
        if len(parts) != 3:
            continue
        if parts[0] not in films and len(films) >= n_films:
            continue
        films.setdefault(parts[0])
        out.append(parts)
    return out


def test_a_metaqa_slice_gives_set_and_obfuscated_tasks_the_oracle_solves(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'metaqa.db'}"
    triples = _metaqa_slice()
    with kag.open(url) as g:
        g.upsert_relations(triples, create_entities=True)
        names = {e.id: e.name for e in g.iter_nodes("Entity")}
    argv = ["selfplay", "run", "--engine", "oracle", "--graph", url, "--hops", "2"]
    argv += ["--tasks", "16", "--tasks-per-round", "16", "--directions", "both"]
    argv += ["--shape", "set", "--shape", "obfuscated", "--max-turns", "16"]
    argv += ["--no-progress", "--json"]
    assert kag_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["tasks"], summary["accepted"]) == (16, 16)
    triple_set = set(triples)
    with kag.open(url) as g:
        tasks = list(g.iter_nodes("Task"))
        run = g.get("Run", summary["run_id"])
    assert run.config["proposer"]["shapes"] == ["set", "obfuscated"]
    shapes = sorted(t.path["shape"] for t in tasks)
    assert shapes == ["obfuscated"] * 8 + ["set"] * 8
    for t in tasks:
        _check_proposal(t, triple_set, names)
    assert any(" a film " in t.question for t in tasks)


def test_shapes_are_checked_and_a_chain_only_run_records_none():
    from selfplay.config import SelfPlayConfig

    with pytest.raises(ValueError, match="shapes"):
        ProposerConfig(shapes=("loop",))
    with pytest.raises(ValueError, match="shapes"):
        ProposerConfig(shapes=("set", "set"))
    assert "shapes" not in SelfPlayConfig(engine="oracle").to_dict()["proposer"]
    both = SelfPlayConfig(engine="oracle", proposer=ProposerConfig(shapes=("chain", "set")))
    assert both.work_fields()["proposer"]["shapes"] == ["chain", "set"]
