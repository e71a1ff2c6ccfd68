"""Graph-edit tasks of the tool_use family: proposed from real subgraphs, solved by the oracle
through the real solver, edit tools and scorer on a scratch copy per trajectory, checked by the
final state (`graph_state@1`), wrong behaviour rejected, written back, exported; the graph itself
is never edited."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import polars as pl
import pytest

import kag
from kag.cli import main as kag_main
from kag.world import generate_world, write_world
from selfplay.config import SelfPlayConfig
from selfplay.edit_tools import EDIT_TOOL_NAMES, ScratchGraph, edit_registry, state_diff
from selfplay.families import family_suite, task_setup
from selfplay.families.graph_edit import (
    OPS,
    GraphEditConfig,
    GraphEditProposer,
    is_graph_edit,
    oracle_turn,
    suite,
)
from selfplay.graph_tools import default_registry
from selfplay.oracle import OraclePolicy
from selfplay.runner import run
from selfplay.scoring import Scorer
from selfplay.solver import Action, Solver, SolverConfig
from selfplay.writeback import write_tasks


def _world(graph, *, size: int = 200, seed: int = 4):
    write_world(graph, *generate_world(seed=seed, size=size))
    return graph


def _graph_state(graph) -> tuple[list, list]:
    """Every entity (all fields) and every relation of the graph, to compare before and after."""
    entities = sorted(
        (e.id, e.name, e.type, e.domain, e.description, json.dumps(dict(e.props), sort_keys=True))
        for b in graph.store.iter_nodes("Entity")
        for e in b
    )
    relations = sorted(
        (r.source, r.type, r.target) for b in graph.store.iter_relations() for r in b
    )
    return entities, relations


def _solve(graph, tasks, policy, *, samples: int = 1, config: SolverConfig | None = None):
    """Solve with `policy` through the real solver, per-task setup and the family's scorer."""
    setup = task_setup(graph.store)
    tools = default_registry(graph.store, sandbox=None)
    solver = Solver(policy, tools, config=config, setup=setup)
    rollouts = solver.solve(tasks, run_id="edit-1", samples=samples)
    scorer = Scorer(tools, suites={"tool_use": family_suite("tool_use")}, setup=setup)
    return scorer.score(rollouts)


class _Wrapped:
    """A policy that writes what `turn(task, messages, final)` gives (a wrong behaviour)."""

    name = "wrong"

    def __init__(self, turn) -> None:
        self.turn = turn

    def count_tokens(self, rollout, *, tools):
        return sum(len(m.get("content") or "") for m in rollout.messages) // 4 + 1

    def act(self, requests, *, tools):
        return [
            Action(
                text=self.turn(r.rollout.task, r.rollout.messages, r.final), finish_reason="stop"
            )
            for r in requests
        ]


def _with_edits(task, edits):
    spec = {**task.props["graph_edit"], "edits": edits}
    return dataclasses.replace(task, props={**task.props, "graph_edit": spec})


def _tool_errors(messages) -> list[str]:
    return [
        json.loads(m["content"])["error"]
        for m in messages
        if m["role"] == "tool" and m["content"].startswith('{"error"')
    ]


# --------------------------------------------------------------------------- proposals


def test_proposals_are_valid_deterministic_and_cover_every_op(sqlite_url):
    with kag.open(sqlite_url) as graph:
        _world(graph)
        first = GraphEditProposer(graph).propose(2 * len(OPS), edits=3, seed=0)
        again = GraphEditProposer(graph).propose(2 * len(OPS), edits=3, seed=0)
        other = GraphEditProposer(graph).propose(2 * len(OPS), edits=3, seed=1)
        tasks = first.tasks
        assert len(tasks) == 2 * len(OPS)
        assert [t.to_dict() for t in tasks] == [t.to_dict() for t in again.tasks]
        assert {t.id for t in tasks} != {t.id for t in other.tasks}
        assert Counter(op for t in tasks for op in t.props["ops"]).keys() == set(OPS)
        real = {e.id: e for b in graph.store.iter_nodes("Entity") for e in b}
        for task in tasks:
            spec = task.props["graph_edit"]
            assert task.family == "tool_use" and is_graph_edit(task)
            assert task.hops == len(spec["edits"]) == 3
            assert task.props["verifiers"] == suite().ids
            start = ScratchGraph.from_snapshot(spec["start"])
            # the copy is the real subgraph around the center: real entities, real relations
            for entity_id, e in start.entities.items():
                assert real[entity_id].name == e["name"] and real[entity_id].type == e["type"]
            for s, r, t in start.relations:
                assert any(o.id == t for _, o in graph.store.neighbors(s, relation=r))
            names = Counter(e["name"].lower() for e in start.entities.values())
            for edit in spec["edits"]:
                assert edit["text"] in task.question
                for key in ("entity", "source", "target", "new_target"):
                    if key in edit and not (edit["op"] == "link_new" and key == "target"):
                        assert names[edit[key].lower()] == 1, edit  # named once in the copy
                if edit["op"] == "link_new":  # a name no entity of the graph has
                    assert not graph.store.find_entities(name=edit["target"])
            assert spec["expected"] and len(task.answers) == len(spec["expected"])
            assert set(task.path["entities"]) <= set(real)
        # known tasks (in exclude or in the graph) are not proposed again
        ids = {t.id for t in tasks}
        assert not ids & {
            t.id for t in GraphEditProposer(graph).propose(4, edits=3, seed=0, exclude=ids).tasks
        }
        suite().persist(graph.store)
        write_tasks(graph.store, tasks)
        assert not ids & {t.id for t in GraphEditProposer(graph).propose(4, edits=3, seed=0).tasks}


def test_bad_graph_edit_settings_are_value_errors_naming_the_field(sqlite_url):
    with pytest.raises(ValueError, match="unknown graph-edit ops"):
        GraphEditConfig(ops=("rename", "teleport"))
    with pytest.raises(ValueError, match="min_edits <= max_edits"):
        GraphEditConfig(min_edits=3, max_edits=2)
    with kag.open(sqlite_url) as graph, pytest.raises(ValueError, match="no relations"):
        GraphEditProposer(graph)


# --------------------------------------------------------------------------- tools


def test_edit_tools_refuse_bad_edits_with_a_recoverable_error_and_change_nothing():
    g = ScratchGraph.from_snapshot(
        {
            "entities": [{"id": "a", "name": "Ada"}, {"id": "b", "name": "Bo"}],
            "relations": [["a", "knows", "b"]],
        }
    )
    reg = edit_registry(g)
    before = g.snapshot()
    refusals = [
        ("find_entities", {"query": "Cy"}, "add it with add_entity"),
        ("remove_entity", {"entity_id": "b"}, "remove each with remove_relation first"),
        ("add_relation", {"source_id": "a", "relation": "knows", "target_id": "b"}, "exists"),
        ("add_relation", {"source_id": "a", "relation": "knows", "target_id": "c"}, "no entity"),
        (
            "remove_relation",
            {"source_id": "b", "relation": "knows", "target_id": "a"},
            "no relation",
        ),
        ("add_entity", {"name": "ada", "type": "person"}, "exists already"),
        ("update_entity", {"entity_id": "a"}, "give a new name"),
        ("update_entity", {"entity_id": "a", "name": "Bo"}, "named 'Bo' already"),
        ("update_entity", {"entity_id": "a", "props": {"x": [1]}}, "invalid arguments"),
    ]
    for name, args, why in refusals:
        obs = reg.call(name, args)
        assert not obs.ok and why in obs.error, (name, obs.error)
        assert g.snapshot() == before
    assert reg.names == list(EDIT_TOOL_NAMES)
    # the recovery each refusal asks for works
    assert reg.call("remove_relation", {"source_id": "a", "relation": "knows", "target_id": "b"}).ok
    assert reg.call("remove_entity", {"entity_id": "b"}).ok
    added = json.loads(reg.call("add_entity", {"name": "Cy", "type": "person"}).content)["added"]
    assert reg.call(
        "add_relation", {"source_id": "a", "relation": "knows", "target_id": added["id"]}
    ).ok
    start = ScratchGraph.from_snapshot(before)
    assert state_diff(start, g) == [
        ["add_entity", "new:cy", "Cy", "person", {}],
        ["add_relation", "a", "knows", "new:cy"],
        ["remove_entity", "b"],
        ["remove_relation", "a", "knows", "b"],
    ]


# --------------------------------------------------------------------------- oracle and verifier


def test_the_oracle_solves_every_task_on_its_own_scratch_copy_and_recovers_from_refusals(
    sqlite_url,
):
    with kag.open(sqlite_url) as graph:
        _world(graph)
        tasks = GraphEditProposer(graph).propose(2 * len(OPS), edits=3, seed=0).tasks
        before = _graph_state(graph)
        scored = _solve(graph, tasks, OraclePolicy(), samples=2)
        assert _graph_state(graph) == before  # nothing reached the graph
    assert len(scored) == 2 * len(tasks)
    assert all(s.verdict == "accepted" and s.reward == 1.0 for s in scored), [
        v.detail for s in scored for v in s.verifications if not v.passed
    ]
    for s in scored:  # both samples of a task made the same edits, each on a fresh copy
        ops = s.rollout.task.props["ops"]
        errors = _tool_errors(s.rollout.messages)
        if "link_new" in ops:  # the new name is looked up first: a miss, then it is added
            assert any("add it with add_entity" in e for e in errors)
        if "delete_entity" in ops:  # removing it first is refused while it has relations
            assert any("remove each with remove_relation first" in e for e in errors)
        assert s.rollout.n_turns >= 3 and s.rollout.status == "completed"
        assert {r.tool_id for r in s.rollout.tool_calls} <= {f"{n}@1" for n in EDIT_TOOL_NAMES}


def _scored_by(graph, tasks, turn):
    by_id = {s.rollout.task.id: s for s in _solve(graph, tasks, _Wrapped(turn))}
    return [by_id[t.id] for t in tasks]


def _failed_checks(s) -> dict:
    (v,) = [v for v in s.verifications if v.verifier_id == "graph_state@1"]
    return {k: ok for k, ok in v.props.get("checks", {}).items() if ok is False}


def test_each_kind_of_wrong_behaviour_is_rejected_by_the_final_state(sqlite_url):
    with kag.open(sqlite_url) as graph:
        _world(graph)
        tasks = GraphEditProposer(graph).propose(2 * len(OPS), edits=3, seed=0).tasks

        def missing_edit(task, messages, final):  # skips the last instruction
            return oracle_turn(
                _with_edits(task, task.props["graph_edit"]["edits"][:-1]), messages, final=final
            )

        def extra_edit(task, messages, final):  # one more change than asked for
            text = oracle_turn(task, messages, final=final)
            done = any(
                "zz_extra" in (m.get("content") or "") for m in messages if m["role"] == "assistant"
            )
            if "<answer>" in text and not done and not final:
                center = task.props["graph_edit"]["center"]
                call = {
                    "name": "update_entity",
                    "arguments": {"entity_id": center, "props": {"note": "zz_extra"}},
                }
                return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
            return text

        def wrong_target(task, messages, final):  # every edit aimed at the center entity
            text = oracle_turn(task, messages, final=final)
            if "find_entities" in text or "<answer>" in text:
                return text
            return _aim_at(text, task.props["graph_edit"]["center"])

        def stops_early(task, messages, final):  # answers after the look-ups
            n = sum(m["role"] == "assistant" for m in messages)
            return oracle_turn(task, messages, final=final) if n == 0 else "<answer>Done.</answer>"

        def ignores_errors(task, messages, final):  # a refusal is taken as done
            last = [m for m in messages[-8:] if m["role"] == "tool"]
            if any(m["content"].startswith('{"error"') for m in last):
                return "<answer>Done.</answer>"
            return oracle_turn(task, messages, final=final)

        cases = {
            "missing": (missing_edit, "required_edits"),
            "extra": (extra_edit, "no_extra_edits"),
            "wrong_target": (wrong_target, "required_edits"),
            "stops_early": (stops_early, "required_edits"),
        }
        failed: dict[str, Counter] = {}
        for label, (turn, check) in cases.items():
            failed[label] = Counter()
            for s in _scored_by(graph, tasks, turn):
                assert s.verdict == "rejected", (label, s.rollout.task.question)
                assert s.reward < 0.5 and check in _failed_checks(s), (label, _failed_checks(s))
                failed[label].update(_failed_checks(s).keys())
        # edits made on the wrong entity are edits nobody asked for, besides the missing ones
        assert failed["wrong_target"]["no_extra_edits"] > 0
        recovering = [t for t in tasks if {"link_new", "delete_entity"} & set(t.props["ops"])]
        assert recovering
        for s in _scored_by(graph, recovering, ignores_errors):
            assert s.verdict == "rejected" and "required_edits" in _failed_checks(s)


def _aim_at(text: str, center: str) -> str:
    """The oracle's calls with every entity id argument replaced by the center's id."""
    head, *blocks = text.split("<tool_call>\n")
    out = [head]
    for block in blocks:
        body, _, tail = block.partition("\n</tool_call>")
        call = json.loads(body)
        args = call["arguments"]
        for key in ("entity_id", "source_id"):
            if key in args and args[key] != center:
                args[key] = center
                break
        else:
            if "target_id" in args and args["target_id"] != center:
                args["target_id"] = center
        out.append(json.dumps(call) + "\n</tool_call>" + tail)
    return "<tool_call>\n".join(out)


def test_a_trajectory_whose_recorded_observations_do_not_replay_is_rejected(sqlite_url):
    with kag.open(sqlite_url) as graph:
        _world(graph)
        tasks = GraphEditProposer(graph).propose(1, edits=2, seed=3).tasks
        (good,) = _solve(graph, tasks, OraclePolicy())
    assert good.verdict == "accepted"
    rollout = good.rollout
    k = next(
        i
        for i, m in enumerate(rollout.messages)
        if m["role"] == "tool" and m["content"].startswith(('{"updated"', '{"removed"', '{"added"'))
    )
    # the recorded observation claims a different outcome than the tool gives
    tampered = rollout.messages[k]["content"].replace('"name":"', '"name":"Not ', 1)
    rollout.messages[k] = {**rollout.messages[k], "content": tampered}
    result = suite().evaluate(rollout.task, rollout)
    assert not result.accepted
    assert "replayed" in result.results["graph_state@1"].checks
    assert result.results["graph_state@1"].checks["replayed"] is False


# --------------------------------------------------------------------------- runs


@pytest.mark.parametrize("backend", ["sqlite", "neo4j"])
def test_a_tool_use_run_writes_graph_edit_trajectories_and_leaves_the_graph_as_it_was(
    backend, tmp_path, request
):
    url = (
        f"sqlite:///{tmp_path / 'kag.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("neo4j_url")
    )
    with kag.open(url) as graph:
        _world(graph, size=120)
        before = _graph_state(graph)
        config = SelfPlayConfig(
            engine="oracle",
            tasks=4,
            samples=2,
            families=("tool_use",),
            run_id="edit-run",
            progress=False,
        )
        summary = run(graph, config=config)
        assert (summary.trajectories, summary.accepted) == (8, 8)
        assert _graph_state(graph) == before
        trajs = [t for b in graph.store.iter_nodes("Trajectory") for t in b]
        assert {t.verdict for t in trajs} == {"accepted"}
        tasks = {t.id: t for b in graph.store.iter_nodes("Task") for t in b}
        assert {tasks[t.task_id].family for t in trajs} == {"tool_use"}
        used = {e.target for e in graph.store.edges("USED_TOOL")}
        assert {"find_entities@1", "update_entity@1"} <= used <= {f"{n}@1" for n in EDIT_TOOL_NAMES}
        assert graph.store.get_nodes("Verifier", ["graph_state@1"])
        checked = {(e.source, e.target) for e in graph.store.edges("CHECKED_BY")}
        assert all((task_id, "graph_state@1") in checked for task_id in tasks)
        # a resumed run with the same id writes nothing new
        again = run(graph, config=config)
        assert again.resumed and again.written_this_call == 0


def test_kag_selfplay_run_tool_use_on_sqlite_then_export_sft(sqlite_url, tmp_path, capsys):
    with kag.open(sqlite_url) as graph:
        _world(graph)
    argv = ["selfplay", "run", "--engine", "oracle", "--family", "tool_use", "--family", "search"]
    argv += [
        "--tasks",
        "8",
        "--graph",
        sqlite_url,
        "--run-id",
        "cli-edit",
        "--no-progress",
        "--json",
    ]
    assert kag_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trajectories"] == 8 and summary["accept_rate"] == 1.0
    with kag.open(sqlite_url) as graph:
        store = graph.store
        tasks = {t.id: t for b in store.iter_nodes("Task") for t in b}
        trajs = [t for b in store.iter_nodes("Trajectory") for t in b]
        edit = [t for t in trajs if tasks[t.task_id].family == "tool_use"]
        assert len(edit) == 4 and all(t.verdict == "accepted" for t in edit)
        for t in edit:
            steps = [s for b in store.iter_nodes("Step", where={"trajectory_id": t.id}) for s in b]
            calls = [s for s in steps if s.role == "assistant" and s.tool_calls]
            assert (
                len(steps) > 4 and calls and t.props["tools"] == [f"{n}@1" for n in EDIT_TOOL_NAMES]
            )
            used = {e.target for s in steps for e in store.edges("USED_TOOL", source=s.id)}
            assert used and used <= set(t.props["tools"])
            (state,) = store.get_nodes("Verification", [f"ver:{t.id}:graph_state@1"])
            assert state.passed is True
    # `kag eval` measures a policy on them too, each trajectory on its own scratch copy
    argv = ["eval", "--engine", "oracle", "--tasks", "family=tool_use", "--graph", sqlite_url]
    assert kag_main([*argv, "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trajectories"] == 4 and report["accept_rate"] == 1.0
    out = tmp_path / "sft"
    assert kag_main(["export", "sft", str(out), "--graph", sqlite_url, "--family", "tool_use"]) == 0
    rows = pl.read_parquet(out / "data").to_dicts()
    assert len(rows) == 4 and {r["family"] for r in rows} == {"tool_use"}
    for row in rows:
        offered = [spec["function"]["name"] for spec in json.loads(row["tools"])]
        assert offered == list(EDIT_TOOL_NAMES)
        assert row["messages"][0]["content"].startswith("You edit a working copy")


def test_a_required_llm_judge_leaves_the_tool_use_suite_as_it_is():
    from selfplay.config import JudgeConfig
    from selfplay.generation import build_suite

    config = SelfPlayConfig(judge=JudgeConfig(model="/m", required=True), families=("tool_use",))
    assert build_suite(config, family="tool_use").ids == family_suite("tool_use").ids
    assert "llm_judge@1" in [v.id for v in build_suite(config).required]
