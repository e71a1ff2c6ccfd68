"""The synthetic world: reproducible, the size asked for, every relation phrased, walkable."""

from __future__ import annotations

from collections import Counter

import pytest

import kag
from kag.cli import main as kag_main
from kag.walks import CSRGraph, sample_walks
from kag.world import MIN_SIZE, RELATION_PHRASES, generate_world


def test_same_seed_gives_the_same_world_and_another_seed_another():
    a = generate_world(seed=42, size=500)
    b = generate_world(seed=42, size=500)
    c = generate_world(seed=43, size=500)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]


@pytest.mark.parametrize("size", [MIN_SIZE, 137, 1000, 5000])
def test_world_has_exactly_size_entities_and_consistent_relations(size):
    entities, relations, phrases = generate_world(seed=1, size=size)
    ids = [e.id for e in entities]
    assert len(ids) == size == len(set(ids))
    assert len({e.name for e in entities}) == size, "names are unique, so questions are unambiguous"
    known = set(ids)
    assert all(r.source in known and r.target in known and r.source != r.target for r in relations)
    assert len({r.key for r in relations}) == len(relations)
    assert 3 * size <= len(relations) <= 8 * size
    assert {e.domain for e in entities} == {
        "geography",
        "film",
        "literature",
        "music",
        "business",
        "science",
    }


def test_every_relation_type_has_a_phrase_with_its_subject_slot():
    entities, relations, phrases = generate_world(seed=5, size=2000)
    used = Counter(r.type for r in relations)
    assert set(used) == set(phrases) == set(RELATION_PHRASES)
    for rel, phrase in phrases.items():
        assert phrase.count("{x}") == 1, rel
        assert phrase.format(x="Ada") != phrase


def test_world_has_hubs_and_long_multi_hop_walks():
    entities, relations, _ = generate_world(seed=8, size=3000)
    csr = CSRGraph.from_triples((r.source, r.type, r.target) for r in relations)
    in_degree = Counter(r.target for r in relations)
    assert max(in_degree.values()) >= 10 * len(relations) / len(in_degree)
    walks = sample_walks(csr, 5000, 4, mode="simple", seed=0, dead_end="drop")
    assert len(walks) > 2500
    assert len({w.relations for w in walks.to_records()}) > 100
    # the classic question: the country of the birthplace of a film's director
    films = [e.id for e in entities if e.type == "film"]
    chain = ["directed_by", "born_in", "located_in"]
    walks = sample_walks(
        csr, len(films), 3, start=films, relation_types=chain, mode="simple", dead_end="drop"
    )
    assert len(walks) == len(films)
    assert {w.relations for w in walks.to_records()} == {tuple(chain)}
    assert {w.entities[-1].split("/")[0] for w in walks.to_records()} == {"country"}


def test_too_small_a_world_is_refused():
    with pytest.raises(ValueError, match=f"at least {MIN_SIZE}"):
        generate_world(seed=0, size=MIN_SIZE - 1)


def test_kag_generate_world_writes_the_world_and_its_phrases(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'kag.db'}"
    assert kag_main(["generate", "world", "--seed", "4", "--size", "400", "--graph", url]) == 0
    assert "400 entities" in capsys.readouterr().out
    entities, relations, phrases = generate_world(seed=4, size=400)
    with kag.open(url) as graph:
        stats = graph.stats()
        assert stats["nodes"]["Entity"] == 400
        assert stats["edges"]["RELATION"] == len(relations)
        assert graph.relation_phrases() == phrases
        assert graph.get_entity(entities[7].id) == entities[7]
    # running it again with --merge changes nothing: writes are idempotent upserts
    argv = ["generate", "world", "--seed", "4", "--size", "400", "--merge", "--graph", url]
    assert kag_main(argv) == 0
    with kag.open(url) as graph:
        assert graph.stats()["edges"]["RELATION"] == len(relations)
    assert kag_main(["generate", "world", "--size", "3", "--graph", url]) == 2
    assert "at least" in capsys.readouterr().err


def test_kag_generate_world_refuses_a_graph_that_holds_entities_unless_merge(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'kag.db'}"
    with kag.open(url) as graph:
        graph.upsert_entities([{"id": "ada", "name": "Ada Lovelace", "type": "person"}])
    assert kag_main(["generate", "world", "--size", "100", "--graph", url]) == 2
    err = capsys.readouterr().err
    assert "already holds 1 entities" in err and "--merge" in err
    with kag.open(url) as graph:
        assert graph.stats()["nodes"]["Entity"] == 1, "nothing was written"
    assert kag_main(["generate", "world", "--size", "100", "--merge", "--graph", url]) == 0
    with kag.open(url) as graph:
        assert graph.stats()["nodes"]["Entity"] == 101
