"""The proposer: walks become tasks with full answer sets, evidence, verifiers; no shortcuts or repeats."""

from __future__ import annotations

import networkx as nx
import pytest

import kag
from kag.walks import walk_signature
from kag.world import generate_world, write_world
from selfplay.answers import leaked_answer
from selfplay.proposer import (
    Proposer,
    ProposerConfig,
    relation_phrase,
    render_question,
    task_id_for,
)
from selfplay.writeback import task_batch, write_tasks


@pytest.fixture
def world_graph(sqlite_url):
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=3, size=400))
        yield g


def _reach_nx(g: nx.MultiDiGraph, start: str, relations) -> set[str]:
    frontier = {start}
    for rel in relations:
        frontier = {t for s in frontier for _, t, k in g.out_edges(s, keys=True) if k == rel}
    return frontier


def test_answers_are_every_entity_the_relation_chain_reaches(world_graph):
    proposer = Proposer(world_graph, config=ProposerConfig(max_answers=50))
    nxg = world_graph.to_networkx()
    proposal = proposer.propose(30, hops=2, seed=1)
    assert len(proposal.tasks) == 30
    multi = 0
    for task in proposal.tasks:
        start, relations = task.path["entities"][0], task.path["relations"]
        expected = _reach_nx(nxg, start, relations)
        assert set(task.answer_ids) == expected
        assert task.path["entities"][-1] in expected  # the walk's own end is one of them
        names = {world_graph.get_entity(e).name for e in expected}
        assert set(task.answers) == names
        assert task.hops == 2 and task.walk_signature == walk_signature(start, relations)
        multi += len(expected) > 1
    assert multi > 0  # the world has relations with several objects: set semantics matters


def test_question_uses_the_graph_phrases_and_edits_to_them(world_graph):
    proposer = Proposer(world_graph)
    task = proposer.propose(1, hops=2, seed=5).tasks[0]
    start_name = world_graph.get_entity(task.path["entities"][0]).name
    assert start_name in task.question and task.question.startswith("What is ")
    # a user edits the phrases: new tasks read with the edited phrases
    phrases = {r: f"the {r.replace('_', ' ')} thing of {{x}}" for r in world_graph.relation_types()}
    world_graph.set_relation_phrases(phrases)
    task = Proposer(world_graph).propose(1, hops=2, seed=5).tasks[0]
    r1, r2 = task.path["relations"]
    assert task.question == (
        f"What is the {r2.replace('_', ' ')} thing of the {r1.replace('_', ' ')} thing of "
        f'"{start_name}"?'
    )


def test_phrases_default_to_a_template_inferred_from_the_relation_name():
    assert relation_phrase("/film/film/directed_by") == "the director of {x}"
    assert relation_phrase("has_imdb_rating") == "the imdb rating of {x}"
    assert relation_phrase("directed_by", {"directed_by": "the film maker of {x}"}) == (
        "the film maker of {x}"
    )
    # inferred phrases nest, with the start name quoted
    phrases = [relation_phrase("spouse"), relation_phrase("gender")]
    assert render_question("Ada", phrases) == 'What is the gender of the spouse of "Ada"?'
    # a phrase file's phrase without {x} still makes the chain question
    assert render_question("Heat", ["directed by"]) == (
        'Start from "Heat" and follow "directed by". Which entities do you reach?'
    )
    with pytest.raises(ValueError, match="at least one relation phrase"):
        render_question("Heat", [])


def test_a_question_that_names_an_answer_is_rejected_as_a_shortcut(sqlite_url):
    with kag.open(sqlite_url) as g:
        g.upsert_entities(
            [{"id": "a", "name": "Ann"}, {"id": "b", "name": "Bob"}, {"id": "c", "name": "Cy"}]
        )
        # a -knows-> b -knows-> a: the 2-hop chain from Ann comes back to Ann
        g.upsert_relations([("a", "knows", "b"), ("b", "knows", "a"), ("b", "likes", "c")])
        proposer = Proposer(g, config=ProposerConfig(mode="uniform", max_out_degree=None))
        proposal = proposer.propose(10, hops=2, seed=0)
        assert proposal.dropped["shortcut"] > 0
        for task in proposal.tasks:
            assert leaked_answer(task.question, task.answers) is None
    assert leaked_answer('Start from "Ann".', ["ann"]) == "ann"
    assert leaked_answer('Start from "Annabel".', ["Ann"]) is None


def test_tasks_are_deduplicated_by_walk_signature_against_the_graph(world_graph):
    config = ProposerConfig(verifiers=())
    first = Proposer(world_graph, config=config).propose(20, hops=2, seed=9)
    ids = [t.id for t in first.tasks]
    assert len(set(ids)) == len(ids)
    assert all(t.id == task_id_for(t.walk_signature) for t in first.tasks)
    write_tasks(world_graph.store, first.tasks, run_id=None)
    again = Proposer(world_graph, config=config).propose(20, hops=2, seed=9)
    assert not set(ids) & {t.id for t in again.tasks}
    assert again.dropped["known"] > 0
    assert world_graph.count("Task") == 20


def test_task_batch_links_evidence_and_verifiers(world_graph):
    from selfplay.rewards import VerifierSuite

    suite = VerifierSuite.default()
    suite.persist(world_graph.store)
    config = ProposerConfig(verifiers=tuple(suite.ids))
    task = Proposer(world_graph, config=config).propose(1, hops=3, seed=2).tasks[0]
    world_graph.write(task_batch([task]))
    supports = world_graph.edges("SUPPORTS", target=task.id)
    assert {e.source for e in supports} == set(task.path["entities"])
    checked = world_graph.edges("CHECKED_BY", source=task.id)
    assert {e.target for e in checked} == set(suite.ids)


def test_bad_requests_are_named(world_graph):
    with pytest.raises(ValueError, match="hops >= 1"):
        Proposer(world_graph).propose(3, hops=0)
    with pytest.raises(ValueError, match="max_answers"):
        ProposerConfig(max_answers=0)
    with pytest.raises(ValueError, match="unknown relation type"):
        Proposer(world_graph, config=ProposerConfig(relation_types=("no_such_relation",)))


def test_an_empty_graph_is_a_clear_error(sqlite_url):
    with kag.open(sqlite_url) as g, pytest.raises(ValueError, match="no relations to walk"):
        Proposer(g)
