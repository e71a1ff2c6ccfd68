"""Walks that follow relations backwards (`~r` steps): the reverse CSR, walks and answers in both
directions, inverse phrases, and gold trajectories on inverse tasks, on the real MetaQA KB too."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

import kag
from kag.cli import main as kag_main
from kag.walks import CSRGraph, inverse_step, parse_step, sample_walks, walk_signature
from kag.world import generate_world, write_world
from selfplay.config import SelfPlayConfig
from selfplay.graph_tools import default_registry
from selfplay.oracle import OraclePolicy
from selfplay.phrases import infer_inverse_phrase
from selfplay.proposer import Proposer, ProposerConfig, relation_phrase, render_question
from selfplay.rollout import step_id
from selfplay.scoring import Scorer
from selfplay.solver import Solver, SolverConfig
from selfplay.verifiers import answer_path_entities, tool_steps
from tests.data import DATA_DIR

METAQA_KB = DATA_DIR / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt"


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=5, size=600)


@pytest.fixture(scope="module")
def world_triples(world) -> set[tuple[str, str, str]]:
    return {r.key for r in world[1]}


def _edges(csr: CSRGraph) -> list[tuple[str, str, str]]:
    return [(csr.entity_ids[v], *e) for v in range(csr.n_nodes) for e in csr.edges_of(v)]


def test_reverse_adjacency_holds_every_in_edge_sorted_by_relation_then_source(world_triples):
    csr = CSRGraph.from_triples(sorted(world_triples))
    back = csr.reverse
    assert back is csr.reverse  # built once
    assert back.entity_ids == csr.entity_ids and back.relation_types == csr.relation_types
    assert {(t, r, s) for s, r, t in _edges(back)} == world_triples
    assert back.n_edges == csr.n_edges
    index = {e: i for i, e in enumerate(csr.entity_ids)}
    rank = {r: i for i, r in enumerate(csr.relation_types)}
    for v in range(back.n_nodes):
        keys = [(rank[r], index[s]) for r, s in back.edges_of(v)]
        assert keys == sorted(keys)


def test_walks_in_both_directions_take_inverse_steps_along_real_edges(world_triples):
    csr = CSRGraph.from_triples(sorted(world_triples))
    walks = sample_walks(csr, 3000, 3, mode="non_backtracking", seed=2, directions="both")
    records = walks.to_records()
    steps = Counter(parse_step(r)[1] for w in records for r in w.relations)
    assert steps["in"] > 0.2 * sum(steps.values()) and steps["out"] > 0
    for w in records:
        for k, step in enumerate(w.relations):
            relation, direction = parse_step(step)
            a, b = w.entities[k], w.entities[k + 1]
            assert ((a, relation, b) if direction == "out" else (b, relation, a)) in world_triples
            if k:  # never straight back where it came from, over the same edge or another
                assert b != w.entities[k - 1]
    # an inverse walk is a different task from the forward one; forward walks are as before
    assert walk_signature("a", ["~r"]) != walk_signature("a", ["r"])
    assert inverse_step("r") == "~r" and parse_step("~r") == ("r", "in")
    out = sample_walks(csr, 500, 2, mode="non_backtracking", seed=3)
    again = sample_walks(csr, 500, 2, mode="non_backtracking", seed=3, directions="out")
    assert [w.signature for w in out.to_records()] == [w.signature for w in again.to_records()]
    assert not any(r.startswith("~") for w in out.to_records() for r in w.relations)
    with pytest.raises(ValueError, match="directions"):
        sample_walks(csr, 1, 1, directions="in")
    with pytest.raises(ValueError, match="'~'"):
        CSRGraph.from_triples([("a", "~odd", "b")]).bidirectional()


def _brute_reach(triples, start: str, steps: list[str]) -> list[str]:
    frontier = {start}
    for step in steps:
        relation, direction = parse_step(step)
        if direction == "out":
            frontier = {t for s, r, t in triples if r == relation and s in frontier}
        else:
            frontier = {s for s, r, t in triples if r == relation and t in frontier}
    return sorted(frontier)


def test_reach_with_inverse_steps_equals_a_brute_force_set_computation(sqlite_url):
    rng = random.Random(0)
    nodes = [f"n{i}" for i in range(40)]
    triples = sorted(
        {(rng.choice(nodes), rng.choice("pqr"), rng.choice(nodes)) for _ in range(160)}
    )
    with kag.open(sqlite_url) as g:
        g.upsert_relations(triples, create_entities=True)
        proposer = Proposer(g, config=ProposerConfig(max_answers=100, directions="both"))
        checked = 0
        for _ in range(300):
            start = rng.choice(sorted({s for s, _, _ in triples} | {t for *_, t in triples}))
            steps = [
                rng.choice(["p", "q", "r", "~p", "~q", "~r"]) for _ in range(rng.randint(1, 3))
            ]
            expected = _brute_reach(triples, start, steps)
            assert proposer.reach(start, steps) == expected, (start, steps)
            checked += bool(expected)
        assert checked > 50


def test_the_oracle_is_accepted_on_every_inverse_task_with_the_store_checking_steps(graph, world):
    write_world(graph, *world)
    registry = default_registry(graph, sandbox=None)
    scorer = Scorer(registry, store=graph.store)
    scorer.persist(graph.store)
    config = ProposerConfig(directions="both", verifiers=tuple(scorer.verifier_ids))
    proposer = Proposer(graph, config=config)
    tasks = [t for h in (2, 3) for t in proposer.propose(12, hops=h, seed=h).tasks]
    inverse = [t for t in tasks if any(r.startswith("~") for r in t.path["relations"])]
    assert len(inverse) >= 12
    for t in inverse:  # the graph's answers are what the steps reach, both ways
        assert proposer.reach(t.path["entities"][0], t.path["relations"]) == list(t.answer_ids)
        on_path = answer_path_entities(graph.store, t)
        assert on_path is not None and set(t.path["entities"]) <= on_path
    rollouts = Solver(OraclePolicy(), registry, config=SolverConfig(max_turns=8)).solve(
        inverse, run_id="inverse"
    )
    calls = [
        json.loads(c["function"]["arguments"])
        for r in rollouts
        for m in r.messages
        for c in m.get("tool_calls") or ()
    ]
    assert any(c.get("direction") == "in" for c in calls)
    scored = scorer.score(rollouts)
    assert [s.verdict for s in scored] == ["accepted"] * len(inverse)
    # the store's answer paths decide `on_path`: the call of each hop on its path entity passes,
    # inverse calls included (the oracle also expands branches that lead nowhere; those may fail)
    checked = 0
    for s in scored:
        path = s.rollout.task.path
        hops = {
            (e, *parse_step(r)) for e, r in zip(path["entities"], path["relations"], strict=False)
        }
        steps = {step_id(s.rollout.id, t.index): t for t in tool_steps(s.rollout)}
        for v in s.verifications:
            step = steps.get(v.subject_id)
            if v.subject_kind != "Step" or step is None or step.name != "get_relations":
                continue
            args = json.loads(step.arguments)
            if (args["entity_id"], args["relation"], args.get("direction", "out")) in hops:
                assert v.passed, v.detail
                checked += 1
    assert checked == sum(t.hops for t in inverse)


@pytest.mark.parametrize(("dataset", "count"), [("fb15k-237", 237), ("metaqa", 9), ("wn18rr", 11)])
def test_every_relation_of_the_real_data_sets_gets_a_readable_inverse_template(dataset, count):
    if dataset == "metaqa":
        lines = METAQA_KB.read_text(encoding="utf-8").splitlines()
        names = sorted({line.split("|")[1] for line in lines if line.count("|") == 2})
    else:
        text = (DATA_DIR / dataset / "relations.txt").read_text(encoding="utf-8")
        names = [line.strip() for line in text.splitlines() if line.strip()]
    assert len(names) == count
    for name in names:
        phrase = infer_inverse_phrase(name)
        assert phrase.count("{x}") == 1, (name, phrase)
        words = phrase.replace("{x}", "").split()
        assert words and all(w.isalnum() for w in words), (name, phrase)
        assert relation_phrase(inverse_step(name)) == phrase == infer_inverse_phrase(name)
        question = render_question("Ada", [relation_phrase(name), phrase])
        assert question.startswith("What is ") and '"Ada"' in question


@pytest.mark.parametrize(
    ("relation", "phrase"),
    [
        ("directed_by", "a film directed by {x}"),
        ("starred_actors", "a film starring {x}"),
        ("release_year", "a film released in {x}"),
        ("has_genre", "a film of genre {x}"),
        ("/film/film/directed_by", "a film directed by {x}"),
        ("/film/film/costume_design_by", "a film with costume design by {x}"),
        ("/people/person/gender", "a person whose gender is {x}"),
        ("/location/location/contains", "a location that contains {x}"),
        ("/language/human_language/countries_spoken_in", "a human language spoken in {x}"),
        ("_hypernym", "something whose hypernym is {x}"),
        ("_similar_to", "something similar to {x}"),
        ("_member_of_domain_region", "a member of the domain region {x}"),
        ("born_in", "something born in {x}"),
        ("lives_in", "something that lives in {x}"),
    ],
)  # fmt: skip
def test_inverse_phrases_read_as_english(relation, phrase):
    assert infer_inverse_phrase(relation) == phrase


def test_a_phrase_file_gives_inverse_phrases_under_the_inverse_step():
    phrases = {"directed_by": "the director of {x}", "~directed_by": "what {x} directed"}
    assert relation_phrase("~directed_by", phrases) == "what {x} directed"
    assert relation_phrase("~written_by", phrases) == "a film written by {x}"
    question = render_question(
        "Jane Campion", [relation_phrase(s) for s in ["~directed_by", "has_genre"]]
    )
    assert question == 'What is the genre of a film directed by "Jane Campion"?'


def test_the_metaqa_kb_yields_inverse_tasks_that_the_oracle_solves(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'metaqa.db'}"
    triples = [
        tuple(line.split("|"))
        for line in METAQA_KB.read_text(encoding="utf-8").splitlines()
        if line.count("|") == 2
    ]
    with kag.open(url) as g:  # the KB as it is: film -> person edges only, no inverses added
        g.upsert_relations(triples, create_entities=True)
    argv = ["selfplay", "run", "--engine", "oracle", "--graph", url, "--hops", "2-3"]
    argv += ["--tasks", "24", "--tasks-per-round", "12", "--directions", "both"]
    argv += ["--no-progress", "--json"]
    assert kag_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["tasks"], summary["accepted"]) == (24, 24)
    assert summary["by_hops"] == {"2": [12, 12], "3": [12, 12]}
    with kag.open(url) as g:
        tasks = list(g.iter_nodes("Task"))
        run = g.get("Run", summary["run_id"])
    assert run.config["proposer"]["directions"] == "both"
    assert sum(any(r.startswith("~") for r in t.path["relations"]) for t in tasks) >= 20
    for t in tasks:
        start = t.props["start_name"]
        text = t.question.replace(start, "")
        assert t.question.startswith("What is ") and "_" not in text and "~" not in text
    inverse_questions = [t.question for t in tasks if t.path["relations"][0].startswith("~")]
    assert any(" a film " in q for q in inverse_questions)


def test_forward_runs_record_no_directions_so_older_runs_resume():
    assert "directions" not in SelfPlayConfig(engine="oracle").to_dict()["proposer"]
    both = SelfPlayConfig(engine="oracle", proposer=ProposerConfig(directions="both"))
    assert both.work_fields()["proposer"]["directions"] == "both"
    with pytest.raises(ValueError, match="directions"):
        ProposerConfig(directions="in")  # type: ignore[arg-type]
