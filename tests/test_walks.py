"""Walks: the CSR projection of a store and the vectorised samplers, and `kag walk`."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kag
from kag.cli import main as kag_main
from kag.walks import CSRGraph, sample_walks, walk_signature
from kag.world import generate_world, write_world

MODES = ["uniform", "non_backtracking", "simple"]


@pytest.fixture(scope="module")
def world():
    entities, relations, phrases = generate_world(seed=11, size=2000)
    return entities, relations, phrases


@pytest.fixture(scope="module")
def world_csr(world) -> CSRGraph:
    _, relations, _ = world
    return CSRGraph.from_triples((r.source, r.type, r.target) for r in relations)


@pytest.fixture(scope="module")
def world_triples(world) -> set[tuple[str, str, str]]:
    return {r.key for r in world[1]}


def test_csr_from_store_holds_exactly_the_stored_relations(graph):
    entities, relations, phrases = generate_world(seed=3, size=300)
    write_world(graph, entities, relations, phrases)
    csr = CSRGraph.from_store(graph)
    edges = {
        (csr.entity_ids[s], csr.relation_types[r], csr.entity_ids[t])
        for s in range(csr.n_nodes)
        for r, t in zip(
            csr.rel[csr.indptr[s] : csr.indptr[s + 1]].tolist(),
            csr.indices[csr.indptr[s] : csr.indptr[s + 1]].tolist(),
            strict=True,
        )
    }
    assert edges == {r.key for r in relations}
    assert csr.indices.dtype == np.int32 and csr.rel.dtype == np.int32

    film = CSRGraph.from_store(graph, domain="film")
    domain_of = {e.id: e.domain for e in entities}
    expected = {r.key for r in relations if domain_of[r.source] == domain_of[r.target] == "film"}
    assert film.n_edges == len(expected) > 0

    only = CSRGraph.from_store(graph, relation_types=["born_in", "located_in"])
    assert set(only.relation_types[r] for r in np.unique(only.rel)) == {"born_in", "located_in"}
    with pytest.raises(ValueError, match="no_such_relation"):
        CSRGraph.from_store(graph, relation_types=["no_such_relation"])


@pytest.mark.parametrize("mode", MODES)
def test_walks_are_reproducible_by_seed_whatever_the_thread_count(world_csr, mode):
    a = sample_walks(world_csr, 200_000, 4, mode=mode, seed=5, threads=1)
    b = sample_walks(world_csr, 200_000, 4, mode=mode, seed=5, threads=2)
    c = sample_walks(world_csr, 200_000, 4, mode=mode, seed=6, threads=2)
    assert np.array_equal(a.nodes, b.nodes) and np.array_equal(a.rels, b.rels)
    assert not np.array_equal(a.nodes, c.nodes)


@pytest.mark.parametrize("mode", MODES)
def test_every_hop_follows_a_real_edge_with_its_relation_type(world_csr, world_triples, mode):
    walks = sample_walks(world_csr, 3000, 4, mode=mode, seed=1)
    records = walks.to_records()
    assert sum(w.hops for w in records) == walks.steps > 0
    for w in records:
        assert len(w.entities) == w.hops + 1
        for k, rel in enumerate(w.relations):
            assert (w.entities[k], rel, w.entities[k + 1]) in world_triples
    # a walk stops only where the graph leaves no way on
    stopped = walks.lengths < 4
    last = walks.nodes[np.flatnonzero(stopped), walks.lengths[stopped]]
    if mode == "uniform":
        assert (world_csr.out_degree()[last] == 0).all()


def test_simple_walks_never_revisit_a_node(world_csr):
    walks = sample_walks(world_csr, 50_000, 6, mode="simple", seed=2)
    for nodes, length in zip(walks.nodes, walks.lengths, strict=True):
        path = nodes[: length + 1]
        assert len(set(path.tolist())) == len(path)
    assert (walks.lengths == 6).mean() > 0.5


def test_non_backtracking_walks_never_step_straight_back(world_csr):
    walks = sample_walks(world_csr, 50_000, 5, mode="non_backtracking", seed=3)
    nodes, lengths = walks.nodes, walks.lengths
    for h in range(2, 6):
        took = lengths >= h
        assert not (nodes[took, h] == nodes[took, h - 2]).any()


def test_a_walker_with_one_way_out_among_many_ways_back_always_takes_it():
    # b has 40 edges back to a and one to c: rejection sampling alone would almost always fail
    triples = [("a", "r", "b"), ("b", "to_c", "c")] + [("b", f"back{i}", "a") for i in range(40)]
    csr = CSRGraph.from_triples(triples)
    for mode in ("simple", "non_backtracking"):
        walks = sample_walks(csr, 500, 2, mode=mode, start=["a"] * 500, seed=0)
        assert {w.entities for w in walks.to_records()} == {("a", "b", "c")}


def test_non_backtracking_walker_stops_when_the_only_way_on_is_back():
    csr = CSRGraph.from_triples([("a", "r", "b"), ("b", "r", "a")])
    walks = sample_walks(csr, 10, 3, mode="non_backtracking", start=["a"] * 10)
    assert walks.lengths.tolist() == [1] * 10
    assert (
        len(sample_walks(csr, 10, 3, mode="non_backtracking", start=["a"] * 10, dead_end="drop"))
        == 0
    )


def test_uniform_walks_choose_out_edges_uniformly():
    csr = CSRGraph.from_triples([("hub", f"r{i}", f"n{i}") for i in range(4)])
    walks = sample_walks(csr, 40_000, 1, start=["hub"] * 40_000, seed=9)
    share = np.bincount(walks.rels[:, 0], minlength=4) / 40_000
    assert np.allclose(share, 0.25, atol=0.015)


def test_relation_filter_is_respected(world_csr):
    walks = sample_walks(
        world_csr, 5000, 3, relation_types=["born_in", "located_in", "borders"], seed=4
    )
    used = {r for w in walks.to_records() for r in w.relations}
    assert used and used <= {"born_in", "located_in", "borders"}
    with pytest.raises(ValueError, match="bogus"):
        sample_walks(world_csr, 10, 2, relation_types=["bogus"])


def test_max_out_degree_keeps_walks_away_from_hubs_or_truncates_them():
    triples = [("hub", "r", f"n{i}") for i in range(10)] + [
        ("a", "r", "hub"),
        ("a", "r", "b"),
        ("b", "r", "c"),
    ]
    csr = CSRGraph.from_triples(triples)
    skip = sample_walks(csr, 2000, 2, max_out_degree=3, seed=0)
    assert "hub" not in {e for w in skip.to_records() for e in w.entities}
    truncated = sample_walks(
        csr, 2000, 1, start=["hub"] * 2000, max_out_degree=3, hub_policy="truncate"
    )
    assert {w.entities[1] for w in truncated.to_records()} == {"n0", "n1", "n2"}


def test_dead_ends_stop_short_or_are_dropped():
    csr = CSRGraph.from_triples([("a", "r", "b"), ("b", "r", "c")])
    stop = sample_walks(csr, 5, 4, start=["a"] * 5)
    assert stop.lengths.tolist() == [2] * 5
    assert stop.nodes[0].tolist() == [0, 1, 2, -1, -1] and stop.rels[0].tolist() == [0, 0, -1, -1]
    assert len(sample_walks(csr, 5, 4, start=["a"] * 5, dead_end="drop")) == 0
    assert len(sample_walks(csr, 5, 2, start=["a"] * 5, dead_end="drop")) == 5


def test_walk_signature_is_stable_and_depends_on_start_and_relation_chain_only():
    assert walk_signature("/m/027rn", ["born_in", "located_in"]) == (
        "a83da57a31c3" + walk_signature("/m/027rn", ["born_in", "located_in"])[12:]
    )
    csr = CSRGraph.from_triples(
        [("x", "r", "a"), ("x", "r", "b"), ("a", "s", "c"), ("b", "s", "d")]
    )
    records = sample_walks(csr, 200, 2, start=["x"] * 200, seed=0).to_records()
    assert len({w.entities for w in records}) == 2
    assert len({w.signature for w in records}) == 1
    assert records[0].to_dict()["walk_signature"] == walk_signature("x", ["r", "s"])


def test_bad_arguments_are_clear_errors(world_csr):
    with pytest.raises(ValueError, match="walk mode"):
        sample_walks(world_csr, 1, 2, mode="levy")
    with pytest.raises(ValueError, match="not in the walk graph"):
        sample_walks(world_csr, 1, 2, start=["nobody"])
    with pytest.raises(ValueError, match="one entity per walker"):
        sample_walks(world_csr, 3, 2, start=[world_csr.entity_ids[0]])


def test_kag_walk_prints_walks_as_one_json_object(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'kag.db'}"
    assert kag_main(["generate", "world", "--seed", "2", "--size", "300", "--graph", url]) == 0
    capsys.readouterr()
    assert (
        kag_main(
            [
                "walk",
                "--n",
                "25",
                "--hops",
                "3",
                "--seed",
                "1",
                "--mode",
                "simple",
                "--json",
                "--graph",
                url,
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 25 and 0 < len(out["walks"]) <= 25
    with kag.open(url) as graph:
        for w in out["walks"]:
            assert w["hops"] == 3 and len(w["entities"]) == 4 == len(w["names"])
            assert w["walk_signature"] == walk_signature(w["entities"][0], w["relations"])
            for k, rel in enumerate(w["relations"]):
                targets = {e.id for _, e in graph.neighbors(w["entities"][k], relation=rel)}
                assert w["entities"][k + 1] in targets
            assert w["names"][0] == graph.get_entity(w["entities"][0]).name

    assert kag_main(["walk", "--n", "3", "--relation", "no_such", "--graph", url]) == 2
    assert "no_such" in capsys.readouterr().err
