"""`kag copy`: a whole graph SQLite -> Neo4j -> SQLite, losing nothing on the way."""

from __future__ import annotations

import numpy as np
import pytest

from kag.cli import main as kag_main
from kag.copy import copy_graph
from kag.schema import (
    EDGE_KINDS,
    NODE_KINDS,
    Dataset,
    Edge,
    Entity,
    Model,
    Relation,
    Run,
    Step,
    Task,
    Tool,
    ToolCall,
    Trajectory,
    Verification,
    Verifier,
)
from kag.stores import open_store
from kag.stores.base import GraphBatch
from tests.data import DATA_DIR

FB15K = DATA_DIR / "fb15k-237"


def _fb15k_sample(n: int = 3000) -> tuple[list[Entity], list[Relation], dict[str, str]]:
    """The first `n` FB15k-237 training triples, their named entities and relation phrases."""
    triples = []
    with (FB15K / "train.tsv").open(encoding="utf-8") as f:
        for line in f:
            triples.append(line.rstrip("\n").split("\t"))
            if len(triples) == n:
                break
    names = dict(
        line.rstrip("\n").split("\t", 1)
        for line in (FB15K / "entity2text.txt").open(encoding="utf-8")
    )
    ids = sorted({t[0] for t in triples} | {t[2] for t in triples})
    entities = [
        Entity(id=e, name=names.get(e, e), type="fb15k", domain="film" if i % 2 else "geo")
        for i, e in enumerate(ids)
    ]
    relations = [Relation(source=h, type=r, target=t) for h, r, t in triples]
    types = sorted({t[1] for t in triples})
    phrases = {r: f"is related by {r.rsplit('/', 1)[-1].replace('_', ' ')} to" for r in types[:10]}
    return entities, relations, phrases


def _selfplay_records(entities: list[Entity]) -> GraphBatch:
    """One of every node kind and edge kind, with JSON fields, None fields and tool calls."""
    e0, e1 = entities[0].id, entities[1].id
    tool = Tool.create(
        name="get_entity",
        description="Look up an entity",
        parameters={"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    )
    helper = Tool.create(name="search", version="2", props={"rate_limit": 3})
    verifier = Verifier.create(
        name="answer_match", config={"normalise": True, "weights": [0.5, 1.5]}
    )
    steps = [
        Step(id="t1/0", trajectory_id="t1", idx=0, role="user", content="Where? ünïcode ✓"),
        Step(
            id="t1/1",
            trajectory_id="t1",
            idx=1,
            role="assistant",
            content="",
            reasoning="think",
            tool_calls=(ToolCall(id="c1", name="get_entity", arguments=f'{{"id": "{e0}"}}'),),
            n_tokens=12,
        ),
        Step(
            id="t1/2",
            trajectory_id="t1",
            idx=2,
            role="tool",
            content="{}",
            tool_call_id="c1",
            name="get_entity",
        ),
    ]
    batch = GraphBatch().add(
        tool,
        helper,
        verifier,
        Run(
            id="r1",
            kind="selfplay",
            config={"hops": [2, 4]},
            started_at="2026-11-24T00:00:00Z",
            counters={"n": 1},
        ),
        Task(
            id="q1",
            question="Which?",
            answers=("A", "B"),
            answer_ids=(e1,),
            hops=2,
            walk_signature="sig",
            path={"entities": [e0, e1], "relations": ["r"]},
        ),
        Trajectory(
            id="t1",
            task_id="q1",
            run_id="r1",
            policy="tiny",
            verdict="accepted",
            reward=1,
            n_turns=3,
        ),
        *steps,
        Verification(
            id="v1", verifier_id=verifier.id, subject_id="t1", passed=True, score=1.0, detail="ok"
        ),
        Verification(
            id="v2", verifier_id=verifier.id, subject_id="t1/1", subject_kind="Step", passed=None
        ),
        Dataset(id="d1", path="/data/sft", kind="sft", manifest_sha256="ab" * 32, rows=1),
        Model(id="m0", path="/models/base", stage="base", weights_sha256="cd" * 32),
        Model(id="m1", path="/runs/sft/model", stage="sft", weights_sha256="ef" * 32),
    )

    def edge(k: str, sk: str, s: str, tk: str, t: str, **p: object) -> Edge:
        return Edge(kind=k, source_kind=sk, source=s, target_kind=tk, target=t, props=p)

    batch.add(
        edge("SUPPORTS", "Entity", e0, "Task", "q1", weight=0.5),
        edge("CHECKED_BY", "Task", "q1", "Verifier", verifier.id),
        edge("SOLVES", "Trajectory", "t1", "Task", "q1"),
        *(edge("HAS_STEP", "Trajectory", "t1", "Step", s.id) for s in steps),
        edge("TRANSITIONS_TO", "Step", "t1/0", "Step", "t1/1"),
        edge("TRANSITIONS_TO", "Step", "t1/1", "Step", "t1/2"),
        edge("USED_TOOL", "Step", "t1/1", "Tool", tool.id),
        edge("TOUCHED", "Step", "t1/1", "Entity", e0),
        edge("DEPENDS_ON", "Tool", helper.id, "Tool", tool.id),
        edge("DEPENDS_ON", "Step", "t1/2", "Step", "t1/1"),
        edge("PRODUCES", "Step", "t1/2", "Entity", e1),
        edge("VERIFIES", "Verification", "v1", "Trajectory", "t1"),
        edge("VERIFIES", "Verification", "v2", "Step", "t1/1"),
        edge("APPLIES", "Verification", "v1", "Verifier", verifier.id),
        edge("PRODUCED_BY", "Trajectory", "t1", "Run", "r1"),
        edge("PRODUCED_BY", "Dataset", "d1", "Run", "r1"),
        edge("PRODUCED_BY", "Task", "q1", "Run", "r1"),
        edge("CONTAINS", "Dataset", "d1", "Trajectory", "t1"),
        edge("PRODUCED_BY", "Model", "m1", "Run", "r1"),
        edge("TRAINED_ON", "Model", "m1", "Dataset", "d1"),
        edge("DERIVED_FROM", "Model", "m1", "Model", "m0"),
        edge("USED_MODEL", "Run", "r1", "Model", "m1"),
    )
    return batch


def _snapshot(url: str) -> dict:
    """Everything a graph holds, as plain comparable data."""
    store = open_store(url)
    try:
        snap = {
            "stats": store.stats(),
            "phrases": store.relation_phrases(),
            "relations": sorted(
                (r.source, r.type, r.target, repr(sorted(r.props.items())))
                for b in store.iter_relations(batch_size=700)
                for r in b
            ),
        }
        for kind in NODE_KINDS:
            snap[kind] = [n.to_dict() for b in store.iter_nodes(kind, batch_size=500) for n in b]
        for kind in EDGE_KINDS:
            snap[kind] = sorted(
                repr(e.to_dict()) for b in store.iter_edges(kind, batch_size=2) for e in b
            )
        arrays = store.relation_arrays()
        snap["csr"] = sorted(
            zip(
                np.asarray(arrays.entity_ids)[arrays.src],
                np.asarray(arrays.relation_types)[arrays.rel],
                np.asarray(arrays.entity_ids)[arrays.dst],
                strict=True,
            )
        )
        return snap
    finally:
        store.close()


@pytest.fixture
def rich_sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    entities, relations, phrases = _fb15k_sample()
    store = open_store(url)
    store.upgrade()
    store.write(GraphBatch(nodes={"Entity": entities}))
    relations.append(
        Relation(
            source=entities[0].id,
            type="weird `type`]->() //",
            target=entities[1].id,
            props={"k": [1, "x"]},
        )
    )
    store.write(GraphBatch(relations=relations))
    store.set_relation_phrases(phrases)
    store.write(_selfplay_records(entities))
    store.close()
    return url


def test_sqlite_to_neo4j_to_sqlite_is_lossless(rich_sqlite_url, neo4j_url, tmp_path, capsys):
    original = _snapshot(rich_sqlite_url)
    assert original["stats"]["edges"]["RELATION"] == 3001
    assert all(original["stats"]["nodes"].values()) and all(original["stats"]["edges"].values())

    assert kag_main(["copy", rich_sqlite_url, neo4j_url, "--batch-size", "1000"]) == 0
    out = capsys.readouterr().out
    assert "stats match" in out and "***" in out
    in_neo4j = _snapshot(neo4j_url)
    assert in_neo4j == original

    back = f"sqlite:///{tmp_path / 'back.db'}"
    source, destination = open_store(neo4j_url), open_store(back)
    destination.upgrade()
    counts = copy_graph(source, destination, batch_size=777)
    source.close()
    destination.close()
    assert counts["RELATION"] == 3001 and counts["Entity"] == original["stats"]["nodes"]["Entity"]
    assert _snapshot(back) == original


def test_copy_refuses_a_nonempty_destination_unless_asked_and_then_adds_nothing_twice(
    rich_sqlite_url, neo4j_url, capsys
):
    assert kag_main(["copy", rich_sqlite_url, neo4j_url]) == 0
    first = _snapshot(neo4j_url)
    capsys.readouterr()
    assert kag_main(["copy", rich_sqlite_url, neo4j_url]) == 2
    assert "already holds data" in capsys.readouterr().err
    assert kag_main(["copy", rich_sqlite_url, neo4j_url, "--into-nonempty"]) == 0
    assert _snapshot(neo4j_url) == first


def test_copy_of_a_graph_onto_itself_is_refused(rich_sqlite_url, capsys):
    assert kag_main(["copy", rich_sqlite_url, rich_sqlite_url]) == 2
    assert "same graph" in capsys.readouterr().err
