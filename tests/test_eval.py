"""`kag eval`: held-out accept rate, pass@k and their breakdowns, as an eval Run in the graph.

The oracle is the positive control (it solves every task, so its accept rate is 1.0); the tiny
random model runs through the in-process vLLM engine and a real vLLM server (its accept rate is
about 0), and every report is checked against what the graph holds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import kag
import selfplay
from exporters import Selection, SplitConfig, export
from kag.cli import main as kag_main
from kag.lineage import weights_sha256
from kag.schema import Run
from kag.world import generate_world, write_world
from selfplay.config import CurriculumConfig, JudgeConfig, SelfPlayConfig
from selfplay.evaluation import (
    EvalConfig,
    EvalReport,
    TaskSelection,
    eval_report,
    evaluate,
    pass_at_k,
    select_tasks,
    tasks_in_datasets,
)
from selfplay.oracle import OraclePolicy
from selfplay.proposer import Proposer
from selfplay.rollout import Rollout
from selfplay.solver import Action, TurnRequest
from selfplay.writeback import write_tasks


def _world(url: str, *, seed: int = 4, size: int = 200) -> None:
    with kag.open(url) as graph:
        write_world(graph, *generate_world(seed=seed, size=size))


def _selfplay(graph: Any, run_id: str, *, tasks: int, hops: int = 2) -> None:
    config = SelfPlayConfig(
        run_id=run_id,
        tasks=tasks,
        engine="oracle",
        progress=False,
        curriculum=CurriculumConfig(min_hops=hops, max_hops=hops),
    )
    selfplay.run(graph, config=config)


def _ids(tasks: Sequence[Any]) -> list[str]:
    return [t.id for t in tasks]


def _check_report_is_the_graph(graph: Any, report: EvalReport, *, per_task: int) -> None:
    """The report's numbers are what the graph holds for its eval Run."""
    store = graph.store
    rid = report.run_id
    trajectories = [
        t for batch in store.iter_nodes("Trajectory", where={"run_id": rid}) for t in batch
    ]
    assert report.trajectories == len(trajectories) == report.overall.tasks * per_task
    assert report.overall.accepted == sum(t.verdict == "accepted" for t in trajectories)
    assert report.overall.accepted == store.count_nodes(
        "Trajectory", where={"run_id": rid, "verdict": "accepted"}
    )
    produced = {
        e.source for e in store.edges("PRODUCED_BY", target=rid) if e.source_kind == "Trajectory"
    }
    assert produced == {t.id for t in trajectories}
    greedy = [t for t in trajectories if t.id.endswith(":0")]
    assert report.overall.greedy_accepted == sum(t.verdict == "accepted" for t in greedy)
    assert math.isclose(report.accept_rate, report.overall.greedy_accepted / len(greedy))
    assert math.isclose(report.overall.mean_tokens, sum(t.n_tokens for t in greedy) / len(greedy))
    assert math.isclose(report.overall.mean_turns, sum(t.n_turns for t in greedy) / len(greedy))
    assert math.isclose(report.overall.mean_reward, sum(t.reward for t in greedy) / len(greedy))
    [run] = store.get_nodes("Run", [rid])
    assert (run.kind, run.status) == ("eval", "completed")
    assert run.counters == report.counters()
    for by in (report.by_family, report.by_hops, report.by_domain):
        assert sum(m.tasks for m in by.values()) == report.overall.tasks
        assert sum(m.trajectories for m in by.values()) == report.trajectories
        assert sum(m.greedy_accepted for m in by.values()) == report.overall.greedy_accepted


# ---------------------------------------------------------------------- the oracle


def test_oracle_accepts_every_fresh_task_and_the_report_is_what_the_graph_holds(graph_url):
    _world(graph_url)
    with kag.open(graph_url) as graph:
        config = EvalConfig(engine="oracle", limit=6, hops=(2, 3), progress=False)
        report = evaluate(graph, config=config)
        assert report.status == "completed"
        assert report.accept_rate == 1.0 and report.pass_at_k == {"1": 1.0}
        assert report.overall.tasks == 6 and report.overall.mean_reward > 0
        assert {h: m.tasks for h, m in report.by_hops.items()} == {"2": 3, "3": 3}
        assert set(report.by_family) == {"search"}
        assert report.tasks_in_datasets == 0
        _check_report_is_the_graph(graph, report, per_task=1)
        # the fresh tasks belong to the eval Run, so `run:` selects them again
        produced = sorted(
            e.source
            for e in graph.edges("PRODUCED_BY", target=report.run_id)
            if e.source_kind == "Task"
        )
        assert len(produced) == 6
        assert _ids(select_tasks(graph.store, f"run:{report.run_id}")) == produced
        [run] = graph.get_many("Run", [report.run_id])
        assert run.config["model"] == "oracle" and run.config["selection"] == "fresh"
        assert run.config["tasks"] == 6


def test_rerunning_an_evaluation_resumes_it_and_never_duplicates(sqlite_url):
    _world(sqlite_url)
    with kag.open(sqlite_url) as graph:
        config = EvalConfig(engine="oracle", limit=4, samples=2, progress=False)
        first = evaluate(graph, config=config)
        assert first.trajectories == 12 and first.written_this_call == 12
        # lose two trajectories, as a run killed midway would
        lost = sorted(t.id for t in graph.iter_nodes("Trajectory", where={"run_id": first.run_id}))[
            :2
        ]
        graph.store.delete_nodes("Trajectory", lost)
        again = evaluate(graph, config=config)
        assert again.run_id == first.run_id and again.resumed
        assert again.written_this_call == 2 and again.trajectories == 12
        assert again.to_dict() | {"written_this_call": 12, "resumed": False, "wall_s": 0} == (
            first.to_dict() | {"wall_s": 0}
        )
        assert graph.count("Run", where={"kind": "eval"}) == 1
        assert graph.count("Task") == 4  # the fresh tasks were not proposed again


def test_pass_at_k_estimator_matches_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # C(3,2) / C(5,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # C(3,3) / C(5,3)
    assert pass_at_k(5, 2, 4) == 1.0  # fewer than k failures: some draw of 4 passes
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # C(7,5) / C(10,5)
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 8, 1) == 1.0
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)


class _RightOnSomeSamples:
    """The oracle on the greedy trajectory and on samples in `right`; a wrong answer elsewhere."""

    name = "half-right"

    def __init__(self, right: set[int]) -> None:
        self.oracle = OraclePolicy()
        self.right = right

    def count_tokens(self, rollout: Rollout, *, tools: list[dict[str, Any]]) -> int:
        return self.oracle.count_tokens(rollout, tools=tools)

    def act(self, requests: Sequence[TurnRequest], *, tools: list[dict[str, Any]]) -> list[Action]:
        gold = self.oracle.act(requests, tools=tools)
        return [
            a
            if r.rollout.sample == 0 or r.rollout.sample in self.right
            else Action(text="<answer>nobody at all</answer>", finish_reason="stop")
            for r, a in zip(requests, gold, strict=True)
        ]


def test_pass_at_k_in_the_report_is_estimated_from_the_sampled_trajectories(sqlite_url):
    _world(sqlite_url)
    with kag.open(sqlite_url) as graph:
        config = EvalConfig(engine="oracle", limit=3, samples=4, progress=False)
        # samples 1 and 2 of 1..4 right: n=4, c=2 for every task
        report = evaluate(graph, config=config, policy=_RightOnSomeSamples({1, 2}))
        assert report.accept_rate == 1.0  # the greedy trajectory (sample 0) is right
        assert report.pass_at_k == pytest.approx({"1": 0.5, "2": 1 - 1 / 6, "4": 1.0})
        assert report.overall.accepted == 3 * 3 and report.trajectories == 3 * 5
        assert report.by_family["search"].pass_at_k == report.pass_at_k
        _check_report_is_the_graph(graph, report, per_task=5)
        # the report is the graph's: reading it back later gives the same numbers
        assert eval_report(graph.store, report.run_id).counters() == report.counters()


def test_malformed_call_rate_counts_the_calls_that_could_not_be_parsed(sqlite_url):
    _world(sqlite_url)
    with kag.open(sqlite_url) as graph:
        config = EvalConfig(engine="oracle", limit=3, progress=False)
        report = evaluate(graph, config=config, policy=OraclePolicy(malformed_turns=1))
        stored = list(graph.iter_nodes("Trajectory", where={"run_id": report.run_id}))
        calls = sum(t.props["n_tool_calls"] for t in stored)
        assert report.overall.malformed_calls == 3 and report.overall.tool_calls == calls > 0
        assert report.overall.malformed_rate == pytest.approx(3 / (calls + 3))
        assert report.policy == "oracle" and report.engine == "policy"


# ---------------------------------------------------------------------- selections


@pytest.fixture
def played(sqlite_url):
    """A world with two oracle self-play runs (2-hop and 3-hop tasks)."""
    _world(sqlite_url)
    with kag.open(sqlite_url) as graph:
        _selfplay(graph, "sp-2", tasks=8, hops=2)
        _selfplay(graph, "sp-3", tasks=4, hops=3)
        yield graph


def test_dataset_selection_takes_the_task_ids_of_the_split_files(played, tmp_path):
    out = tmp_path / "sft"
    splits = SplitConfig(ratios=(("train", 0.5), ("test", 0.5)))
    export("sft", out, graph=played, splits=splits, selection=Selection(run_id="sp-2"))
    by_split: dict[str, set[str]] = {}
    for f in (out / "data").glob("*.parquet"):
        by_split.setdefault(f.name.split("-")[0], set()).update(
            pq.read_table(f).column("task_id").to_pylist()
        )
    assert set(by_split) == {"train", "test"}
    store = played.store
    for split, ids in by_split.items():
        assert _ids(select_tasks(store, f"dataset:{out}:{split}")) == sorted(ids)
    assert _ids(select_tasks(store, f"dataset:{out}")) == sorted(
        by_split["train"] | by_split["test"]
    )
    assert (
        _ids(select_tasks(store, f"dataset:{out}:train", limit=2)) == sorted(by_split["train"])[:2]
    )
    report = evaluate(
        played, config=EvalConfig(engine="oracle", tasks=f"dataset:{out}:test", progress=False)
    )
    assert report.overall.tasks == len(by_split["test"]) and report.accept_rate == 1.0
    # evaluating on a training split is allowed, and the report says the tasks are not held out
    assert report.tasks_in_datasets == len(by_split["test"])


def test_run_selection_takes_the_tasks_of_a_selfplay_an_import_or_an_eval_run(played):
    store = played.store
    sp3 = sorted(
        e.source for e in store.edges("PRODUCED_BY", target="sp-3") if e.source_kind == "Task"
    )
    assert len(sp3) == 4
    assert _ids(select_tasks(store, "run:sp-3")) == sp3
    # `kag import tasks` writes its tasks with PRODUCED_BY -> a Run of kind "import"
    proposed = Proposer(store).propose(3, hops=2, seed=99).tasks
    store.write(kag.GraphBatch().add(Run(id="import-1", kind="import", status="completed")))
    write_tasks(store, proposed, run_id="import-1")
    assert _ids(select_tasks(store, "run:import-1")) == sorted(_ids(proposed))
    # an eval run's tasks are the ones its trajectories solve, even those it did not propose
    report = evaluate(
        played, config=EvalConfig(engine="oracle", tasks="run:sp-3", limit=2, progress=False)
    )
    assert report.overall.tasks == 2
    assert _ids(select_tasks(store, f"run:{report.run_id}")) == sp3[:2]


def test_filter_selection_takes_the_graphs_tasks_with_those_fields(played):
    store = played.store
    every = [t for batch in store.iter_nodes("Task") for t in batch]
    three = sorted(t.id for t in every if t.hops == 3)
    assert len(three) == 4
    assert _ids(select_tasks(store, "hops=3")) == three
    assert _ids(select_tasks(store, "family=search,hops=3")) == three
    domain = every[0].domain
    assert _ids(select_tasks(store, f"domain={domain}")) == sorted(
        t.id for t in every if t.domain == domain
    )
    both = sorted(t.id for t in every if t.domain == domain and t.hops == 2)
    if both:
        assert _ids(select_tasks(store, f"domain={domain},hops=2")) == both
    report = evaluate(played, config=EvalConfig(engine="oracle", tasks="hops=3", progress=False))
    assert set(report.by_hops) == {"3"} and report.overall.tasks == 4


def test_fresh_tasks_are_in_no_exported_dataset_even_when_their_task_nodes_are_gone(
    sqlite_url, tmp_path
):
    _world(sqlite_url)
    with kag.open(sqlite_url) as graph:
        store = graph.store
        # what a fresh eval proposes with seed 0 on this graph (reading only: the same twice)...
        first = select_tasks(store, "fresh", limit=4, seed=0)
        assert _ids(select_tasks(store, "fresh", limit=4, seed=0)) == _ids(first)
        # ...solved, exported, then its Task nodes deleted
        write_tasks(store, first, run_id=None)
        _solve_with_the_oracle(graph, first)
        result = export("sft", tmp_path / "sft", graph=graph, selection=Selection(run_id="gold"))
        assert tasks_in_datasets(store, _ids(first)) == set(_ids(first))
        store.delete_nodes("Task", _ids(first))
        fresh = select_tasks(store, "fresh", limit=4, seed=0)
        assert len(fresh) == 4 and not set(_ids(fresh)) & set(_ids(first))
        assert tasks_in_datasets(store, _ids(fresh)) == set()
        # the control: without the Dataset, the same call proposes the exported tasks again
        store.delete_nodes("Dataset", [result.dataset_id])
        assert _ids(select_tasks(store, "fresh", limit=4, seed=0)) == _ids(first)


def test_fresh_tasks_follow_the_proposer_settings_given(sqlite_url):
    from selfplay.proposer import ProposerConfig

    _world(sqlite_url)
    with kag.open(sqlite_url) as graph:
        relation = max(graph.relation_types().items(), key=lambda kv: kv[1])[0]
        config = EvalConfig(
            engine="oracle",
            limit=3,
            hops=(1,),
            proposer=ProposerConfig(relation_types=(relation,)),
            progress=False,
        )
        report = evaluate(graph, config=config)
        tasks = select_tasks(graph.store, f"run:{report.run_id}")
        assert len(tasks) == 3 and all(t.path["relations"] == [relation] for t in tasks)
        [run] = graph.get_many("Run", [report.run_id])
        assert run.config["proposer"]["relation_types"] == [relation]


def _solve_with_the_oracle(graph: Any, tasks: list) -> None:
    from kag.schema import Run as RunRecord
    from selfplay.generation import RolloutSource, build_tools

    tools = build_tools(graph.store, SelfPlayConfig(engine="oracle"))
    source = RolloutSource(graph.store, OraclePolicy(), tools=tools, run_id="gold")
    source.generate(tasks, run=RunRecord(id="gold", kind="selfplay"))


def test_a_task_file_is_imported_once_and_its_tasks_evaluated(played, tmp_path):
    store = played.store
    proposed = Proposer(store).propose(3, hops=2, seed=7).tasks
    rows = [
        {"question": t.question, "answers": list(t.answers), "topic": t.path["entities"][0]}
        for t in proposed
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = select_tasks(store, str(path))
    assert sorted(t.question for t in tasks) == sorted(t.question for t in proposed)
    [run] = list(played.iter_nodes("Run", where={"kind": "import"}))
    assert _ids(select_tasks(store, f"run:{run.id}")) == _ids(tasks)
    report = evaluate(played, config=EvalConfig(engine="oracle", tasks=str(path), progress=False))
    assert report.overall.tasks == 3 and report.selection == f"file:{path}"
    _check_report_is_the_graph(played, report, per_task=1)
    again = evaluate(
        played, config=EvalConfig(engine="oracle", tasks=f"file:{path}", progress=False)
    )
    assert again.run_id == report.run_id and again.written_this_call == 0
    assert played.count("Run", where={"kind": "import"}) == 1


def test_selection_text_parses_into_each_kind(tmp_path):
    assert TaskSelection.parse(None).kind == TaskSelection.parse("fresh").kind == "fresh"
    d = TaskSelection.parse(f"dataset:{tmp_path}:test")
    assert (d.kind, d.path, d.split) == ("dataset", str(tmp_path), "test")
    assert TaskSelection.parse(f"dataset:{tmp_path}").split is None
    f = TaskSelection.parse("domain=film,hops=3")
    assert (f.kind, f.domain, f.hops, f.family) == ("filter", "film", 3, None)
    assert TaskSelection.parse(str(tmp_path / "tasks.jsonl")).kind == "file"
    for bad, says in [
        ("colour=red", "unknown filter key 'colour'"),
        ("hops=two", "hops must be an integer"),
        ("family=poetry", "family 'poetry' is not one of"),
        ("run:", "needs a run id"),
    ]:
        with pytest.raises(ValueError, match=says):
            TaskSelection.parse(bad)
    with pytest.raises(ValueError, match="needs temperature > 0"):
        EvalConfig(engine="oracle", samples=4, temperature=0.0)


# ---------------------------------------------------------------------- the command line


def test_cli_json_prints_one_object_with_the_report(sqlite_url, capsys):
    _world(sqlite_url)
    argv = ["eval", "--engine", "oracle", "--limit", "3", "--samples", "2", "--no-progress"]
    assert kag_main([*argv, "--graph", sqlite_url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("accept_rate", "trajectories", "by_family", "by_hops", "by_domain", "pass_at_k",
                "mean_reward", "run_id", "model"):  # fmt: skip
        assert key in report
    assert report["accept_rate"] == 1.0 and report["trajectories"] == 9
    assert report["by_family"]["search"]["tasks"] == 3
    assert kag_main([*argv, "--graph", sqlite_url]) == 0  # the same run again: a table
    out = capsys.readouterr().out
    assert f"eval {report['run_id']}: completed (resumed)" in out
    assert "accept" in out and "pass@2" in out and "family   search" in out


@pytest.mark.parametrize(
    ("tasks", "says"),
    [
        ("dataset:{tmp}/nowhere", "no such dataset directory"),
        ("dataset:{tmp}", "not an exported dataset (no manifest.json)"),
        ("dataset:{sft}:validation", "has no split 'validation' (its splits: "),
        ("run:no-such-run", "no run 'no-such-run'"),
        ("run:import-empty", "has no tasks"),
        ("family=compute", "no task in"),
        ("{tmp}/tasks.jsonl", "no such task file"),
        ("{tmp}/real.jsonl", "field 'answers'"),
        ("colour=red", "unknown filter key"),
    ],
)
def test_bad_selections_exit_2_with_one_line_and_write_nothing(
    played, tmp_path, capsys, tasks, says
):
    out = tmp_path / "sft"
    export("sft", out, graph=played, splits=SplitConfig(ratios=(("train", 1.0),)))
    played.store.write(kag.GraphBatch().add(Run(id="import-empty", kind="import")))
    (tmp_path / "real.jsonl").write_text('{"question": "q"}\n')
    before = played.stats()
    argv = ["eval", "--engine", "oracle", "--tasks", tasks.format(tmp=tmp_path, sft=out)]
    assert kag_main([*argv, "--no-progress", "--graph", played.url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kag eval: error: ") and says in err and len(err.splitlines()) == 1
    assert played.stats() == before


def test_a_run_id_reused_with_other_settings_is_refused(sqlite_url, capsys):
    _world(sqlite_url)
    argv = ["eval", "--engine", "oracle", "--limit", "2", "--run-id", "e1", "--no-progress"]
    assert kag_main([*argv, "--graph", sqlite_url, "--json"]) == 0
    capsys.readouterr()
    assert kag_main([*argv, "--samples", "3", "--graph", sqlite_url]) == 2
    assert "exists with different settings for samples" in capsys.readouterr().err


def test_a_run_id_of_another_kind_of_run_is_refused(played, capsys):
    argv = ["eval", "--engine", "oracle", "--run-id", "sp-2", "--no-progress"]
    assert kag_main([*argv, "--graph", played.url]) == 2
    assert "run 'sp-2' exists and is a 'selfplay' run, not an eval run" in capsys.readouterr().err


def test_judge_options_without_a_judge_are_refused(sqlite_url, capsys):
    argv = ["eval", "--engine", "oracle", "--judge-required", "--graph", sqlite_url]
    assert kag_main(argv) == 2
    assert "need --judge policy|MODEL" in capsys.readouterr().err
    assert kag_main(["eval", "--engine", "oracle", "--judge", "policy", "--graph", sqlite_url]) == 2
    assert "the oracle has none" in capsys.readouterr().err


def test_a_missing_model_or_an_unreachable_server_fails_in_one_line(sqlite_url, tmp_path, capsys):
    from selfplay.vllm_server import free_port

    _world(sqlite_url)
    with kag.open(sqlite_url) as graph:
        before = graph.stats()
        with pytest.raises(ValueError, match="has no config.json"):
            evaluate(graph, config=EvalConfig(model=str(tmp_path / "no-model"), progress=False))
        assert graph.stats() == before
    url = f"http://127.0.0.1:{free_port()}/v1"
    argv = ["eval", "--engine", "openai", "--base-url", url, "--model", "m", "--limit", "1"]
    assert kag_main([*argv, "--no-progress", "--graph", sqlite_url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kag eval: error: cannot reach the model server at {url}")
    assert len(err.splitlines()) == 1
    with kag.open(sqlite_url) as graph:  # the attempt is on record, as failed
        [run] = list(graph.iter_nodes("Run", where={"kind": "eval"}))
        assert run.status == "failed" and run.counters["trajectories"] == 0


# ---------------------------------------------------------------------- the tiny model


class _Recording:
    """The real engine, with the temperature of every request it gets written down."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.temperatures: list[list[float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, prompts: Any, *, sampling: Any) -> Any:
        self.temperatures.append([s.temperature for s in sampling])
        return self.engine.generate(prompts, sampling=sampling)

    def chat(self, conversations: Any, *, tools: Any = None, sampling: Any) -> Any:
        self.temperatures.append([s.temperature for s in sampling])
        return self.engine.chat(conversations, tools=tools, sampling=sampling)


@pytest.mark.vllm
def test_tiny_model_on_the_in_process_engine_reports_what_the_graph_holds(vllm_engine, sqlite_url):
    _world(sqlite_url, seed=2, size=120)
    budgets = dict(max_turns=2, max_new_tokens=24, max_context_tokens=2048, progress=False)
    with kag.open(sqlite_url) as graph:
        # the policy's engine also judges (optional: recorded, deciding nothing)
        judge = JudgeConfig(model="policy", max_tokens=16)
        config = EvalConfig(limit=2, judge=judge, **budgets)
        greedy = evaluate(graph, config=config, engine=vllm_engine)
        assert greedy.engine == "vllm" and greedy.model == str(
            Path(vllm_engine.model_dir).absolute()
        )
        assert greedy.accept_rate == 0.0  # random weights
        assert greedy.overall.mean_tokens > 0
        _check_report_is_the_graph(graph, greedy, per_task=1)
        judged = {
            v.subject_id for v in graph.iter_nodes("Verification") if v.verifier_id == "llm_judge@1"
        }
        assert judged == {
            t.id for t in graph.iter_nodes("Trajectory", where={"run_id": greedy.run_id})
        }
        [run] = graph.get_many("Run", [greedy.run_id])
        assert run.config["judge"]["model"] == "policy"
        # pass@2 on the same tasks: one greedy and two sampled trajectories per task, in one batch
        recording = _Recording(vllm_engine)
        config = EvalConfig(tasks=f"run:{greedy.run_id}", samples=2, **budgets)
        sampled = evaluate(graph, config=config, engine=recording)
        assert sampled.overall.tasks == 2 and set(sampled.pass_at_k) == {"1", "2"}
        _check_report_is_the_graph(graph, sampled, per_task=3)
        assert sorted(recording.temperatures[0]) == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
        assert {t for call in recording.temperatures for t in call} == {0.0, 1.0}


@pytest.mark.vllm
def test_kag_eval_json_through_the_vllm_engine_keeps_stdout_one_object(
    tiny_model_dir, sqlite_url, tmp_path
):
    _world(sqlite_url, seed=2, size=120)
    argv = ["eval", "--model", str(tiny_model_dir), "--limit", "2", "--max-turns", "1"]
    argv += [
        "--max-new-tokens",
        "16",
        "--max-context-tokens",
        "2048",
        "--graph",
        sqlite_url,
        "--json",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "kag.cli", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)  # one object, nothing else
    assert "INFO" in done.stderr  # vLLM's log lines still reach the user, on stderr
    assert report["engine"] == "vllm" and report["model"] == str(tiny_model_dir.absolute())
    with kag.open(sqlite_url) as graph:
        stored = eval_report(graph.store, report["run_id"])
        assert (
            report["trajectories"]
            == 2
            == graph.count("Trajectory", where={"run_id": report["run_id"]})
        )
        assert report["accepted"] == stored.overall.accepted
        assert {k: v for k, v in report.items() if k in stored.counters()} == stored.counters()
        # lineage: the eval Run used the checkpoint, recorded as a base Model by its weights
        (used,) = graph.edges("USED_MODEL", source=report["run_id"])
        model = graph.get("Model", used.target)
        assert (model.stage, model.weights_sha256) == ("base", weights_sha256(tiny_model_dir))


@pytest.mark.vllm
def test_kag_eval_through_a_vllm_openai_server(vllm_server, sqlite_url, capsys):
    _world(sqlite_url, seed=2, size=120)
    argv = [
        "eval",
        "--engine",
        "openai",
        "--base-url",
        vllm_server.base_url,
        "--model",
        vllm_server.model,
    ]
    argv += ["--limit", "2", "--samples", "2", "--max-turns", "2", "--max-new-tokens", "24"]
    assert (
        kag_main(
            [
                *argv,
                "--max-context-tokens",
                "2048",
                "--no-progress",
                "--graph",
                sqlite_url,
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["engine"] == "openai" and report["trajectories"] == 2 * 3
    with kag.open(sqlite_url) as graph:
        stored = eval_report(graph.store, report["run_id"])
        _check_report_is_the_graph(graph, stored, per_task=3)
        assert report["accept_rate"] == stored.accept_rate
        assert report["by_family"] == {k: v.to_dict() for k, v in stored.by_family.items()}


def test_exports_leave_out_evaluation_trajectories_unless_asked(sqlite_url, tmp_path):
    from exporters import EmptySelectionError

    _world(sqlite_url)
    with kag.open(sqlite_url) as graph:
        _selfplay(graph, "train-run", tasks=3)
        report = evaluate(graph, config=EvalConfig(engine="oracle", limit=4, progress=False))
        held_out_ids = {
            t.task_id
            for batch in graph.store.iter_nodes("Trajectory", where={"run_id": report.run_id})
            for t in batch
        }
        assert len(held_out_ids) == 4
    for kind in ("sft", "rl"):
        result = export(kind, tmp_path / kind, graph=sqlite_url)
        rows = pq.read_table(tmp_path / kind / "data").to_pylist()
        assert {r["run_id"] for r in rows} == {"train-run"}
        assert not {r["task_id"] for r in rows} & held_out_ids
        assert result.counts["dropped"]["eval"] >= 4
    with pytest.raises(EmptySelectionError):  # only evaluation data: nothing to export
        export(
            "sft", tmp_path / "none", graph=sqlite_url, selection=Selection(run_id=report.run_id)
        )
    both = export(
        "sft", tmp_path / "both", graph=sqlite_url, selection=Selection(include_eval=True)
    )
    assert both.counts["rows"] == 3 + 4
