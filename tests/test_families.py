"""A self-play run proposes tasks of several families and scores each with its family's suite."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import kag
import selfplay
from kag.cli import main as kag_main
from kag.world import generate_world, write_world
from selfplay.config import CurriculumConfig, SelfPlayConfig


def test_a_run_of_three_families_shares_its_tasks_and_the_oracle_passes_all(graph_url, tmp_path):
    with kag.open(graph_url) as g:
        write_world(g, *generate_world(seed=5, size=250))
        config = SelfPlayConfig(
            run_id="mixed",
            tasks=15,
            engine="oracle",
            families=("search", "instruction", "compute"),
            tasks_per_round=6,
            progress=False,
            curriculum=CurriculumConfig(min_hops=2, max_hops=2),
        )
        summary = selfplay.run(g, config=config)
        assert (summary.tasks, summary.accepted) == (15, 15)
        tasks = [t for b in g.store.iter_nodes("Task") for t in b]
        families = ("search", "instruction", "compute")
        by_family = {f: [t for t in tasks if t.family == f] for f in families}
        # rounds of 6, 6 and 3 tasks, each shared out in family order
        assert {f: len(v) for f, v in by_family.items()} == {
            "search": 5,
            "instruction": 5,
            "compute": 5,
        }
        # each walk gives one task: no instruction task is built on a search task of the run
        search_walks = {t.walk_signature for t in by_family["search"]}
        assert not search_walks & {t.walk_signature for t in by_family["instruction"]}
        for t in by_family["instruction"]:
            [traj] = [
                x for b in g.store.iter_nodes("Trajectory", where={"task_id": t.id}) for x in b
            ]
            ids = {e.source for e in g.store.edges("VERIFIES", target=traj.id)}
            assert f"ver:{traj.id}:instruction_following@1" in ids
            assert "instruction_following@1" in {
                e.target for e in g.store.edges("CHECKED_BY", source=t.id)
            }
        # compute tasks are solved with the python tool and grow the graph with derived facts
        for t in by_family["compute"]:
            [traj] = [
                x for b in g.store.iter_nodes("Trajectory", where={"task_id": t.id}) for x in b
            ]
            assert "python@1" in traj.props["tools"]
        produces = g.store.edges("PRODUCES")
        assert len(produces) == sum(
            1 for t in by_family["compute"] if t.props.get("template") != "compare"
        )
        assert produces and g.store.edges("DEPENDS_ON")
        derived = g.store.get_nodes("Entity", [e.target for e in produces])
        assert all(e.props.get("derived") is True for e in derived)
    assert kag_main(["export", "sft", str(tmp_path / "sft"), "--graph", graph_url]) == 0
    rows = pq.read_table(tmp_path / "sft" / "data").to_pylist()
    assert sorted({r["family"] for r in rows}) == ["compute", "instruction", "search"]


def test_every_task_family_is_proposed_and_an_unknown_one_is_refused():
    assert SelfPlayConfig(families=("tool_use",)).families == ("tool_use",)
    with pytest.raises(ValueError, match="unknown task family 'math'"):
        SelfPlayConfig(families=("math",))
    with pytest.raises(ValueError, match="not the string"):
        SelfPlayConfig(families="search")


def test_the_cli_takes_families(sqlite_url, capsys):
    assert (
        kag_main(["generate", "world", "--seed", "2", "--size", "200", "--graph", sqlite_url]) == 0
    )
    capsys.readouterr()
    code = kag_main(
        [
            "selfplay", "run", "--engine", "oracle", "--tasks", "4", "--family", "search",
            "--family", "instruction", "--graph", sqlite_url, "--json", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accepted"] == summary["trajectories"] == 4
    with kag.open(sqlite_url) as g:
        families = sorted(t.family for b in g.store.iter_nodes("Task") for t in b)
    assert families == ["instruction", "instruction", "search", "search"]
