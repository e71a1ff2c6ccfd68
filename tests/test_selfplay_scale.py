"""Scaling the horizon and the fleet: curriculum, coverage-driven sampling, Ray workers."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import kag
import selfplay
from kag.cli import main as kag_main
from kag.coverage import Coverage, coverage_counts
from kag.world import generate_world, write_world
from selfplay.config import CurriculumConfig, SelfPlayConfig, next_hops
from selfplay.proposer import Proposer, ProposerConfig
from selfplay.solver import SolverConfig


def test_curriculum_moves_up_only_past_the_accept_threshold():
    c = CurriculumConfig(min_hops=2, max_hops=4, promote_at=0.5, min_trajectories=10)
    assert next_hops(c, {}) == 2
    assert next_hops(c, {2: (9, 9)}) == 2  # too few trajectories to judge
    assert next_hops(c, {2: (10, 4)}) == 2  # below the threshold
    assert next_hops(c, {2: (10, 5)}) == 3
    assert next_hops(c, {2: (10, 9), 3: (10, 8)}) == 4
    assert next_hops(c, {2: (10, 9), 3: (10, 8), 4: (50, 50)}) == 4  # max_hops caps it
    with pytest.raises(ValueError, match="min_hops <= max_hops"):
        CurriculumConfig(min_hops=3, max_hops=2)


def test_a_failing_policy_stays_on_short_walks_and_a_good_one_moves_on(sqlite_url):
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=12, size=300))
        curriculum = CurriculumConfig(min_hops=2, max_hops=4, promote_at=0.6, min_trajectories=3)
        failing = selfplay.run(
            g,
            config=SelfPlayConfig(
                run_id="weak", tasks=9, tasks_per_round=3, curriculum=curriculum, progress=False,
                solver=SolverConfig(max_turns=1),  # the oracle cannot finish: all rejected
            ),
        )  # fmt: skip
        assert failing.accepted == 0 and set(failing.by_hops) == {2}
        good = selfplay.run(
            g,
            config=SelfPlayConfig(
                run_id="strong", tasks=9, tasks_per_round=3, curriculum=curriculum, progress=False
            ),
        )
        assert good.by_hops == {2: [3, 3], 3: [3, 3], 4: [3, 3]}
        assert g.get("Run", "strong").counters["current_hops"] == 4


def test_coverage_steers_new_tasks_to_uncovered_start_entities(sqlite_url):
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=13, size=300))
        selfplay.run(g, config=SelfPlayConfig(run_id="first", tasks=20, progress=False))
        coverage = coverage_counts(g.store)
        assert coverage.accepted_tasks == 20
        covered = set(coverage.start_entities)
        steered = Proposer(g).propose(20, hops=2, seed=1, coverage=coverage).tasks
        assert len(steered) == 20
        assert not covered & {t.path["entities"][0] for t in steered}

        # `kag stats --coverage` reports it
        assert kag_main(["stats", "--coverage", "--json", "--graph", sqlite_url]) == 0


def test_coverage_prefers_the_least_covered_relation_types(sqlite_url, capsys):
    with kag.open(sqlite_url) as g:
        people = [{"id": f"p{i}", "name": f"Person {i}"} for i in range(30)]
        things = [{"id": f"t{i}", "name": f"Thing {i}"} for i in range(30)]
        g.upsert_entities(people + things)
        g.upsert_relations(
            [(f"p{i}", "likes", f"t{i}") for i in range(30)]
            + [(f"p{i}", "owns", f"t{(i + 1) % 30}") for i in range(30)]
        )
        covered = Coverage(relation_types=Counter({"likes": 50}))
        proposer = Proposer(g, config=ProposerConfig(oversample=8))
        steered = proposer.propose(10, hops=1, seed=0, coverage=covered).tasks
        assert {t.path["relations"][0] for t in steered} == {"owns"}
        plain = proposer.propose(10, hops=1, seed=0).tasks
        assert {t.path["relations"][0] for t in plain} == {"likes", "owns"}
    capsys.readouterr()


def test_ray_workers_generate_and_the_driver_writes(sqlite_url, tmp_path):
    import ray

    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=14, size=200))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = selfplay.run(
            sqlite_url,
            config=SelfPlayConfig(
                run_id="ray", tasks=8, samples=2, workers=2, tasks_per_round=4, progress=False
            ),
        )
    finally:
        ray.shutdown()
    assert (summary.trajectories, summary.accepted) == (16, 16)
    with kag.open(sqlite_url) as g:
        trajectories = list(g.iter_nodes("Trajectory"))
        assert len(trajectories) == 16 == len({t.id for t in trajectories})
        assert Counter(t.task_id for t in trajectories) == {t.id: 2 for t in g.iter_nodes("Task")}
        assert g.get("Run", "ray").counters["accepted"] == 16
        assert g.stats()["edges"]["SOLVES"] == 16
    with pytest.raises(ValueError, match="do not pass engine= or policy="):
        selfplay.run(sqlite_url, config=SelfPlayConfig(workers=2), policy=object())


def test_cli_summary_is_json(sqlite_url, capsys):
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=15, size=150))
    argv = ["selfplay", "run", "--engine", "oracle", "--tasks", "3", "--run-id", "cli",
            "--graph", sqlite_url, "--no-progress", "--json"]  # fmt: skip
    assert kag_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == "cli" and out["accepted"] == 3 and out["accept_rate"] == 1.0
    assert kag_main(["selfplay", "run", "--engine", "vllm", "--graph", sqlite_url]) == 2
    assert "--engine vllm needs --model" in capsys.readouterr().err
