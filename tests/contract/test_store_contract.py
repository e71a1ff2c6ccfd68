"""The store contract: every backend behaves the same (runs once per backend in `BACKENDS`)."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

import kag
import kag.cli
from kag.schema import (
    Dataset,
    Edge,
    Entity,
    Relation,
    Run,
    SchemaError,
    Step,
    Task,
    ToolCall,
    Trajectory,
    Verification,
)
from kag.stores import GraphBatch, StoreError

PEOPLE = [
    {
        "id": "ada",
        "name": "Ada Lovelace",
        "type": "person",
        "domain": "science",
        "description": "mathematician",
    },
    {"id": "charles", "name": "Charles Babbage", "type": "person", "domain": "science"},
    {
        "id": "london",
        "name": "London",
        "type": "place",
        "domain": "geo",
        "props": {"population": 8_800_000},
    },
    {
        "id": "byron",
        "name": "Lord Byron",
        "type": "person",
        "domain": "arts",
        "props": {"tags": ["poet", "ü"]},
    },
]
RELATIONS = [
    ("ada", "born_in", "london"),
    ("charles", "born_in", "london"),
    ("ada", "/people/person/parents", "byron"),
    ("ada", "worked_with", "charles"),
]


@pytest.fixture
def people(graph: kag.KnowledgeActionGraph) -> kag.KnowledgeActionGraph:
    graph.upsert_entities(PEOPLE)
    graph.upsert_relations(RELATIONS)
    return graph


def test_entities_round_trip_with_every_field(graph):
    assert graph.upsert_entities(PEOPLE) == 4
    got = graph.get_entity("byron")
    assert got == Entity(
        id="byron", name="Lord Byron", type="person", domain="arts", props={"tags": ["poet", "ü"]}
    )
    assert graph.get_entity("london").props == {"population": 8_800_000}
    assert graph.get_entity("nobody") is None
    assert [e.id for e in graph.get_many("Entity", ["london", "missing", "ada"])] == [
        "london",
        "ada",
    ]


def test_upserts_are_idempotent_and_last_write_wins(people):
    people.upsert_entities(PEOPLE)
    people.upsert_relations(RELATIONS)
    people.upsert_entities([{"id": "ada", "name": "Augusta Ada King", "type": "person"}])
    stats = people.stats()
    assert stats["nodes"]["Entity"] == 4
    assert stats["edges"]["RELATION"] == 4
    assert people.get_entity("ada").name == "Augusta Ada King"


def test_a_bad_record_names_its_field_and_writes_nothing(graph):
    with pytest.raises(SchemaError, match=r"record #1.*'eve'.*'name'"):
        graph.upsert_entities([{"id": "adam", "name": "Adam"}, {"id": "eve", "name": 7}])
    with pytest.raises(SchemaError, match="unknown field"):
        graph.upsert_entities([{"id": "x", "colour": "red"}])
    assert graph.stats()["nodes"]["Entity"] == 0


def test_a_failed_batch_writes_nothing(graph):
    batch = GraphBatch().add(
        Entity(id="a", name="A"),
        Relation(source="a", type="likes", target="ghost"),
    )
    with pytest.raises(StoreError, match="ghost"):
        graph.write(batch)
    assert graph.stats()["nodes"]["Entity"] == 0
    assert graph.relation_types() == {}


def test_edges_need_existing_endpoints_of_the_right_kind(graph):
    graph.upsert(Task(id="q1", question="Where was Ada born?"))
    edge = Edge(
        kind="SOLVES", source_kind="Trajectory", source="t-missing", target_kind="Task", target="q1"
    )
    with pytest.raises(StoreError, match="t-missing"):
        graph.upsert(edge)
    with pytest.raises(SchemaError, match="cannot go"):
        Edge(kind="SOLVES", source_kind="Task", source="q1", target_kind="Task", target="q1")


def test_relations_are_free_text_and_counted_by_type(people):
    assert people.relation_types() == {
        "/people/person/parents": 1,
        "born_in": 2,
        "worked_with": 1,
    }
    with pytest.raises(SchemaError, match="control character"):
        people.upsert_relations([("ada", "bad\ntype", "london")])
    with pytest.raises(SchemaError, match="must not be empty"):
        people.upsert_relations([("ada", "  ", "london")])


def test_relation_count_counts_relations_not_edges(people):
    assert people.relation_count() == 4
    people.upsert(Task(id="q1", question="Who were Ada's parents?"))
    people.upsert(
        Edge(kind="SUPPORTS", source_kind="Entity", source="byron", target_kind="Task", target="q1")
    )
    assert people.relation_count() == 4  # an edge leaving an entity is not a relation
    people.upsert_relations([("ada", "SUPPORTS", "charles"), ("ada", "born_in", "london")])
    assert people.relation_count() == 5 == sum(people.relation_types().values())
    assert people.relation_types()["SUPPORTS"] == 1


def test_neighbors_by_direction_and_relation(people):
    out = people.neighbors("ada")
    assert [(r.type, e.id) for r, e in out] == [
        ("/people/person/parents", "byron"),
        ("born_in", "london"),
        ("worked_with", "charles"),
    ]
    assert out[1][1].name == "London"
    incoming = people.neighbors("london", direction="in")
    assert [(r.source, r.type, r.target) for r, _ in incoming] == [
        ("ada", "born_in", "london"),
        ("charles", "born_in", "london"),
    ]
    both = people.neighbors("charles", direction="both")
    assert sorted((r.source, r.target) for r, _ in both) == [
        ("ada", "charles"),
        ("charles", "london"),
    ]
    assert [e.id for _, e in people.neighbors("ada", relation="born_in")] == ["london"]
    assert [e.id for _, e in people.neighbors("ada", relation=["born_in", "worked_with"])] == [
        "london",
        "charles",
    ]
    assert len(people.neighbors("ada", limit=1)) == 1
    assert people.neighbors("nobody") == []


def test_find_entities_by_name_type_and_domain(people):
    assert [e.id for e in people.find_entities("London")] == ["london"]
    assert [e.id for e in people.find_entities("london")] == []
    assert [e.id for e in people.find_entities("lo", match="prefix")] == ["london", "byron"]
    assert [e.id for e in people.find_entities("BAB", match="contains")] == ["charles"]
    assert [e.id for e in people.find_entities(type="person", domain="science")] == [
        "ada",
        "charles",
    ]
    assert len(people.find_entities(type="person", limit=2)) == 2
    with pytest.raises(ValueError, match="match must be"):
        people.find_entities("x", match="fuzzy")


def test_subgraph_and_networkx_export(people):
    sub = people.subgraph("byron", hops=1)
    assert set(sub.nodes) == {"byron", "ada"}
    sub2 = people.subgraph("byron", hops=2)
    assert set(sub2.nodes) == {"byron", "ada", "london", "charles"}
    assert sub2.has_edge("ada", "london", key="born_in")
    full = people.to_networkx()
    assert isinstance(full, nx.MultiDiGraph)
    assert full.number_of_nodes() == 4 and full.number_of_edges() == 4
    assert full.nodes["london"]["name"] == "London"
    with pytest.raises(KeyError, match="nobody"):
        people.subgraph("nobody")


def test_delete_removes_attached_relations_and_edges(people):
    people.upsert(Task(id="q1", question="Who were Ada's parents?"))
    people.upsert(
        Edge(kind="SUPPORTS", source_kind="Entity", source="byron", target_kind="Task", target="q1")
    )
    assert people.delete("Entity", "byron") == 1
    assert people.get_entity("byron") is None
    assert people.relation_types().get("/people/person/parents") is None
    assert people.edges("SUPPORTS", target="q1") == []
    assert people.delete("Entity", ["byron"]) == 0


def _trajectory_batch(
    tid: str, *, verdict: str, tool: str, touched: str, passed: bool
) -> GraphBatch:
    steps = [
        Step(id=f"{tid}/0", trajectory_id=tid, idx=0, role="user", content="Where was Ada born?"),
        Step(
            id=f"{tid}/1",
            trajectory_id=tid,
            idx=1,
            role="assistant",
            content="",
            reasoning="look it up",
            tool_calls=(
                ToolCall(id="c1", name=tool.split("@")[0], arguments='{"entity_id": "ada"}'),
            ),
        ),
        Step(
            id=f"{tid}/2",
            trajectory_id=tid,
            idx=2,
            role="tool",
            content='{"born_in": "london"}',
            tool_call_id="c1",
            name=tool.split("@")[0],
        ),
        Step(
            id=f"{tid}/3",
            trajectory_id=tid,
            idx=3,
            role="assistant",
            content="<answer>London</answer>",
        ),
    ]
    batch = GraphBatch().add(
        Trajectory(
            id=tid,
            task_id="q1",
            run_id="r1",
            policy="oracle",
            verdict=verdict,
            reward=1.0 if passed else 0.0,
            n_turns=2,
            n_tokens=40,
        ),
        *steps,
        Verification(
            id=f"{tid}/v",
            verifier_id="answer_match@1",
            subject_id=tid,
            passed=passed,
            score=float(passed),
        ),
    )
    batch.add(
        Edge(kind="SOLVES", source_kind="Trajectory", source=tid, target_kind="Task", target="q1"),
        Edge(
            kind="PRODUCED_BY", source_kind="Trajectory", source=tid, target_kind="Run", target="r1"
        ),
        *(
            Edge(
                kind="HAS_STEP",
                source_kind="Trajectory",
                source=tid,
                target_kind="Step",
                target=s.id,
            )
            for s in steps
        ),
        *(
            Edge(
                kind="TRANSITIONS_TO",
                source_kind="Step",
                source=a.id,
                target_kind="Step",
                target=b.id,
            )
            for a, b in zip(steps, steps[1:])
        ),
        Edge(
            kind="USED_TOOL", source_kind="Step", source=f"{tid}/2", target_kind="Tool", target=tool
        ),
        Edge(
            kind="TOUCHED",
            source_kind="Step",
            source=f"{tid}/2",
            target_kind="Entity",
            target=touched,
        ),
        Edge(
            kind="VERIFIES",
            source_kind="Verification",
            source=f"{tid}/v",
            target_kind="Trajectory",
            target=tid,
        ),
        Edge(
            kind="APPLIES",
            source_kind="Verification",
            source=f"{tid}/v",
            target_kind="Verifier",
            target="answer_match@1",
        ),
    )
    return batch


@pytest.fixture
def played(people):
    people.upsert_tools(
        [
            {
                "name": "get_entity",
                "description": "Look up an entity",
                "parameters": {
                    "type": "object",
                    "properties": {"entity_id": {"type": "string"}},
                    "required": ["entity_id"],
                },
            },
            {"name": "get_relations", "parameters": {"type": "object", "properties": {}}},
        ]
    )
    people.upsert_verifiers(
        [{"name": "answer_match", "kind": "rule", "config": {"normalise": True}}]
    )
    people.upsert(
        Run(id="r1", kind="selfplay", config={"hops": 2}, started_at="2026-11-24T00:00:00Z"),
        Task(
            id="q1",
            domain="geo",
            question="Where was Ada born?",
            answers=("London",),
            answer_ids=("london",),
            hops=1,
            walk_signature="sig1",
            path={"entities": ["ada", "london"], "relations": ["born_in"]},
        ),
    )
    people.write(
        _trajectory_batch("t1", verdict="accepted", tool="get_entity@1", touched="ada", passed=True)
    )
    people.write(
        _trajectory_batch(
            "t2", verdict="rejected", tool="get_entity@1", touched="ada", passed=False
        )
    )
    people.write(
        _trajectory_batch(
            "t3", verdict="rejected", tool="get_relations@1", touched="ada", passed=False
        )
    )
    people.write(
        _trajectory_batch(
            "t4", verdict="rejected", tool="get_entity@1", touched="london", passed=False
        )
    )
    return people


def test_every_node_kind_round_trips(played):
    task = played.get("Task", "q1")
    assert task.answers == ("London",) and task.path == {
        "entities": ["ada", "london"],
        "relations": ["born_in"],
    }
    step = played.get("Step", "t1/1")
    assert step.tool_calls == (
        ToolCall(id="c1", name="get_entity", arguments='{"entity_id": "ada"}'),
    )
    assert step.to_message()["tool_calls"][0]["function"]["name"] == "get_entity"
    assert played.get("Step", "t1/2").to_message()["tool_call_id"] == "c1"
    assert played.get("Verification", "t2/v").passed is False
    tool = played.get("Tool", "get_entity@1")
    assert (
        tool.parameters["required"] == ["entity_id"]
        and tool.spec()["function"]["name"] == "get_entity"
    )
    assert played.get("Verifier", "answer_match@1").config == {"normalise": True}
    assert played.get("Run", "r1").config == {"hops": 2}
    played.upsert(Dataset(id="d1", path="/tmp/ds", kind="sft", rows=3))
    played.upsert(
        Verification(id="v-null", verifier_id="answer_match@1", subject_id="t1", passed=None)
    )
    assert played.get("Verification", "v-null").passed is None
    assert played.get("Dataset", "d1").rows == 3
    traj = played.get("Trajectory", "t1")
    assert (traj.verdict, traj.reward, traj.n_turns) == ("accepted", 1.0, 2)


def test_provenance_queries(played):
    q = played.find_trajectories
    assert q(touched_entity="ada", used_tool="get_entity@1", failed_verifier="answer_match@1") == [
        "t2"
    ]
    assert q(touched_entity="ada", used_tool="get_entity@1") == ["t1", "t2"]
    assert q(used_tool="get_entity@1", failed_verifier="answer_match@1") == ["t2", "t4"]
    assert q(passed_verifier="answer_match@1") == ["t1"]
    assert q(verdict="rejected", policy="oracle", run_id="r1") == ["t2", "t3", "t4"]
    assert q(touched_entity="london", used_tool="get_relations@1") == []


def test_edges_are_listed_by_source_and_target(played):
    steps = played.edges("HAS_STEP", source="t1")
    assert [e.target for e in steps] == ["t1/0", "t1/1", "t1/2", "t1/3"]
    assert {e.source for e in played.edges("SOLVES", target="q1")} == {"t1", "t2", "t3", "t4"}
    assert len(played.edges("TRANSITIONS_TO", source=["t1/0", "t2/0"])) == 2
    streamed = [e for batch in played.store.iter_edges("HAS_STEP", batch_size=3) for e in batch]
    assert len(streamed) == 16 and len({e.key for e in streamed}) == 16
    stats = played.stats()
    assert stats["edges"]["HAS_STEP"] == 16 and stats["nodes"]["Step"] == 16
    assert stats["nodes"]["Trajectory"] == 4


def test_iter_nodes_streams_in_id_order_with_filters(played):
    batches = list(played.store.iter_nodes("Step", batch_size=5))
    assert [len(b) for b in batches] == [5, 5, 5, 1]
    ids = [s.id for b in batches for s in b]
    assert ids == sorted(ids)
    assert [t.id for t in played.iter_nodes("Trajectory", where={"verdict": "rejected"})] == [
        "t2",
        "t3",
        "t4",
    ]
    assert [
        s.id for s in played.iter_nodes("Step", where={"trajectory_id": ["t1"], "role": "tool"})
    ] == ["t1/2"]
    assert played.count("Step", where={"role": "assistant"}) == 8
    with pytest.raises(ValueError, match="cannot filter"):
        played.count("Step", where={"colour": "red"})


def test_relation_arrays_project_the_entity_graph(people):
    arr = people.relation_arrays()
    assert arr.src.dtype == np.int32 and len(arr.src) == 4
    triples = {
        (arr.entity_ids[s], arr.relation_types[r], arr.entity_ids[d])
        for s, r, d in zip(arr.src, arr.rel, arr.dst)
    }
    assert triples == set(RELATIONS)
    only = people.relation_arrays(relation_types=["born_in"])
    assert len(only.src) == 2 and {only.relation_types[r] for r in only.rel} == {"born_in"}
    science = people.relation_arrays(domain="science")
    assert {
        (science.entity_ids[s], science.entity_ids[d]) for s, d in zip(science.src, science.dst)
    } == {("ada", "charles")}


def test_relation_phrases_are_kept_per_type(people):
    people.set_relation_phrases({"born_in": "was born in", "not_used_yet": "is unused"})
    people.set_relation_phrases({"born_in": "came into the world in"})
    assert people.relation_phrases() == {
        "born_in": "came into the world in",
        "not_used_yet": "is unused",
    }
    assert "not_used_yet" not in people.relation_types()


def test_hostile_text_is_stored_as_data(graph):
    evil_type = "x`]->() MATCH (n) DETACH DELETE n //"
    evil_name = "'; DROP TABLE entities; --"
    graph.upsert_entities(
        [
            {"id": "e1", "name": evil_name, "props": {"q": '") RETURN 1 //'}},
            {"id": "e2", "name": "ok"},
        ]
    )
    graph.upsert_relations([("e1", evil_type, "e2")])
    assert graph.get_entity("e1").name == evil_name
    assert graph.get_entity("e1").props == {"q": '") RETURN 1 //'}
    assert graph.relation_types() == {evil_type: 1}
    assert graph.find_entities(evil_name)[0].id == "e1"
    assert graph.stats()["nodes"]["Entity"] == 2


def test_write_many_streams_batches(graph):
    def batches():
        for i in range(3):
            yield GraphBatch(
                nodes={"Entity": [Entity(id=f"e{i}", name=f"E{i}")]},
                relations=[Relation(source=f"e{i}", type="next", target=f"x{i}")],
                ensure_entities=[f"x{i}"],
            )

    assert graph.store.write_many(batches()) == 9
    assert graph.stats()["nodes"]["Entity"] == 6
    assert graph.get_entity("x1").name == "x1"
    # ensure_entities never overwrites an entity that exists
    graph.store.write(GraphBatch(ensure_entities=["e0"]))
    assert graph.get_entity("e0").name == "E0"


def test_relations_stream_losslessly(people):
    rels = [r for batch in people.store.iter_relations(batch_size=3) for r in batch]
    assert {r.key for r in rels} == set(RELATIONS)
    people.upsert_relations(
        [{"source": "ada", "type": "born_in", "target": "london", "props": {"year": 1815}}]
    )
    assert people.neighbors("ada", relation="born_in")[0][0].props == {"year": 1815}


def test_trajectory_contents_are_what_the_records_hold(graph):
    from exporters.synthetic import SyntheticConfig, write_synthetic

    write_synthetic(graph.store, SyntheticConfig(n_tasks=4, trajectories_per_task=2, n_entities=30))
    store = graph.store
    ids = [t.id for batch in store.iter_nodes("Trajectory") for t in batch]
    contents = graph.trajectory_contents([*ids, "no-such-trajectory"])
    assert contents["no-such-trajectory"] == kag.stores.TrajectoryContent()
    for tid in ids:
        steps = sorted(
            (s for batch in store.iter_nodes("Step", where={"trajectory_id": tid}) for s in batch),
            key=lambda s: s.idx,
        )
        step_ids = [s.id for s in steps]
        content = contents[tid]
        assert content.messages == [s.to_message() for s in steps]
        assert content.entity_ids == sorted(
            {e.target for e in store.edges("TOUCHED", source=step_ids)}
        )
        assert content.tool_ids == sorted(
            {e.target for e in store.edges("USED_TOOL", source=step_ids)}
        )
        verifications = store.iter_nodes("Verification", where={"subject_id": [tid, *step_ids]})
        assert content.verification_ids == sorted(v.id for batch in verifications for v in batch)
    assert any(c.tool_ids and c.entity_ids and c.verification_ids for c in contents.values())


def test_models_and_their_lineage_edges_round_trip(played):
    from kag.schema import Model

    played.upsert(
        Dataset(id="d1", path="/tmp/ds", kind="sft", rows=3),
        Run(id="r-sft", kind="sft", started_at="2026-12-02T00:00:00Z"),
        Run(id="r-eval", kind="eval", started_at="2026-12-02T01:00:00Z"),
        Model(id="m-base", path="/ckpt/base", stage="base", weights_sha256="aa"),
        Model(id="m-sft", path="/ckpt/sft", stage="sft", weights_sha256="bb", props={"steps": 2}),
    )
    played.upsert(
        Edge(
            kind="PRODUCED_BY",
            source_kind="Model",
            source="m-sft",
            target_kind="Run",
            target="r-sft",
        ),
        Edge(
            kind="TRAINED_ON",
            source_kind="Model",
            source="m-sft",
            target_kind="Dataset",
            target="d1",
        ),
        Edge(
            kind="DERIVED_FROM",
            source_kind="Model",
            source="m-sft",
            target_kind="Model",
            target="m-base",
        ),
        Edge(
            kind="USED_MODEL",
            source_kind="Run",
            source="r-eval",
            target_kind="Model",
            target="m-sft",
        ),
    )
    model = played.get("Model", "m-sft")
    assert (model.stage, model.path, model.weights_sha256, model.props) == (
        "sft",
        "/ckpt/sft",
        "bb",
        {"steps": 2},
    )
    assert [e.target for e in played.edges("DERIVED_FROM", source="m-sft")] == ["m-base"]
    assert [e.source for e in played.edges("TRAINED_ON", target="d1")] == ["m-sft"]
    assert [e.target for e in played.edges("PRODUCED_BY", source="m-sft")] == ["r-sft"]
    assert [e.source for e in played.edges("USED_MODEL", target="m-sft")] == ["r-eval"]
    found = [m.id for m in played.iter_nodes("Model", where={"weights_sha256": "bb"})]
    assert found == ["m-sft"]
    stats = played.stats()
    assert stats["nodes"]["Model"] == 2 and stats["edges"]["USED_MODEL"] == 1
    with pytest.raises(SchemaError, match="stage"):
        Model(id="m-x", path="/ckpt", stage="rlhf")
    with pytest.raises(SchemaError, match="DERIVED_FROM cannot go Model->Dataset"):
        Edge(
            kind="DERIVED_FROM",
            source_kind="Model",
            source="m-sft",
            target_kind="Dataset",
            target="d1",
        )
    # re-recording is an upsert: no duplicates
    played.upsert(Model(id="m-sft", path="/ckpt/sft2", stage="sft", weights_sha256="bb"))
    assert (
        played.stats()["nodes"]["Model"] == 2 and played.get("Model", "m-sft").path == "/ckpt/sft2"
    )


@pytest.fixture
def trained(played):
    """`played` plus an export of t1, t2 (run r1) and a model trained on it."""
    from kag.schema import Model

    played.upsert(
        Dataset(id="d1", path="/tmp/ds", kind="sft", rows=2),
        Model(id="m1", path="/ckpt/m1", stage="sft", weights_sha256="cc"),
        Run(id="r2", kind="selfplay", started_at="2026-11-25T00:00:00Z"),
    )
    played.upsert(
        *(
            Edge(
                kind="CONTAINS",
                source_kind="Dataset",
                source="d1",
                target_kind="Trajectory",
                target=t,
            )
            for t in ("t1", "t2")
        ),
        Edge(
            kind="TRAINED_ON", source_kind="Model", source="m1", target_kind="Dataset", target="d1"
        ),
    )
    return played


def test_query_cli_answers_the_four_provenance_questions(trained, graph_url, capsys):
    url = graph_url
    run = ["query", "trajectories", "--graph", url, "--json"]
    # a bare tool or verifier name stands for its one version
    argv = [*run, "--touched-entity", "ada", "--used-tool", "get_entity",
            "--failed-verifier", "answer_match"]  # fmt: skip
    assert kag.cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"trajectories": ["t2"]}
    assert kag.cli.main([*run, "--used-tool", "get_relations@1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"trajectories": ["t3"]}
    assert kag.cli.main(["query", "datasets", "--run", "r1", "--graph", url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["datasets"]
    assert [(d["id"], d["trajectories"]) for d in out] == [("d1", 2)]
    assert kag.cli.main(["query", "datasets", "--run", "r2", "--graph", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"datasets": []}
    argv = ["query", "models", "--touched-entity", "ada", "--graph", url, "--json"]
    assert kag.cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["models"] == [
        {"id": "m1", "stage": "sft", "path": "/ckpt/m1", "datasets": ["d1"]}
    ]
    argv = ["query", "models", "--touched-entity", "london", "--graph", url, "--json"]
    assert kag.cli.main(argv) == 0  # t4 touched london but is in no dataset
    assert json.loads(capsys.readouterr().out) == {"models": []}
    trained.upsert(
        Task(id="q2", question="Q2?", answers=("A",), hops=1),
        Trajectory(id="t5", task_id="q2", run_id="r2", policy="tiny", verdict="accepted"),
        Trajectory(id="t6", task_id="q2", run_id="r2", policy="oracle", verdict="accepted"),
    )
    assert kag.cli.main(["query", "single-policy-tasks", "--graph", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"single-policy-tasks": {"q1": "oracle"}}


def test_query_errors_name_the_bad_value_and_close_matches(trained, graph_url, capsys):
    url = graph_url
    run = ["query", "trajectories", "--graph", url]
    assert kag.cli.main([*run, "--verdict", "acepted"]) == 2
    assert "'acepted'" in capsys.readouterr().err
    assert kag.cli.main([*run, "--used-tool", "get_entty"]) == 2
    err = capsys.readouterr().err
    assert "'get_entty'" in err and "get_entity@1" in err
    assert kag.cli.main([*run, "--failed-verifier", "answer_mach@1"]) == 2
    assert "answer_match@1" in capsys.readouterr().err
    assert kag.cli.main(["query", "datasets", "--run", "r9", "--graph", url]) == 2
    assert "'r9'" in capsys.readouterr().err
    assert kag.cli.main(["query", "models", "--touched-entity", "nobody", "--graph", url]) == 2
    assert "'nobody'" in capsys.readouterr().err
    trained.upsert_tools([{"name": "get_entity", "version": "2", "parameters": {"type": "object"}}])
    assert kag.cli.main([*run, "--used-tool", "get_entity"]) == 2
    err = capsys.readouterr().err
    assert "get_entity@1" in err and "get_entity@2" in err
