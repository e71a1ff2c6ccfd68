"""`kag loop` and `kag demo`: the recipe as one resumable pipeline, and the report it writes.

The demo runs at a reduced size through the real stages (SQLite graph, oracle self-play, Parquet
exports, the tiny MoE trained with SFT, GRPO and OPD, vLLM evaluations and student self-play);
every number of its report is checked against the eval Runs of the graph and against `kag eval`
itself. A second loop of the same settings is stopped between stages and killed inside one, then
resumed, and must end with the graph an uninterrupted loop makes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import kag
from kag.cli import main as kag_main
from kag.cli.demo import DEMO_FAMILIES
from kag.cli.loop import LoopConfig, steer_hops
from trainer.grpo_train import read_prompt_ids, run_id_of_step

#: the reduced demo: two rounds, both families, every stage, a few steps each
SMALL = [
    "--world-size", "200", "--heldout", "3", "--demos", "60", "--sft-epochs", "1",
    "--sft-max-steps", "12", "--grpo-steps", "1", "--grpo-samples", "2", "--grpo-groups", "2",
    "--opd-steps", "1", "--student-tasks", "3", "--max-turns", "3",
    # the knobs of the learning setup reach the commands they are for
    "--vocab-size", "1024", "--digit-group", "3", "--sft-max-seq-len", "1536", "--sft-rows", "2",
    "--grpo-temperature", "0.8", "--grpo-prompts", "failed", "--grpo-probe-limit", "6",
    "--grpo-mini-batches", "2", "--opd-temperature", "0.7", "--opd-prompts-per-step", "2",
    "--hidden-size", "192", "--heads", "3", "--layers", "1",
]  # fmt: skip
#: the resumed loop: two rounds without teachers (fewer engine starts), so a kill is affordable
RESUMABLE = [
    "--world-size", "200", "--heldout", "3", "--demos", "40", "--sft-epochs", "1",
    "--sft-max-steps", "8", "--grpo-steps", "0", "--student-tasks", "3", "--max-turns", "3",
]  # fmt: skip


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _kag(*argv: str, log: Path) -> subprocess.CompletedProcess:
    with log.open("a") as out:
        return subprocess.run(
            [sys.executable, "-m", "kag.cli", *argv],
            env=_env(),
            stdout=out,
            stderr=out,
            timeout=1800,
        )


def _counts(url: str) -> dict[str, Any]:
    with kag.open(url) as graph:
        stats = graph.store.stats()
    return {"nodes": stats["nodes"], "edges": stats["edges"]}


# -- settings ------------------------------------------------------------------------------


def test_loop_stages_train_teachers_once_and_skip_the_last_rounds_student() -> None:
    stages = LoopConfig(workdir="w", rounds=2).stages()
    assert stages[:3] == ["r0-curate", "r0-heldout", "r0-demos"]
    assert [s for s in stages if "grpo" in s and not s.startswith("r0-eval")] == [
        "r0-grpo-search",
        "r0-grpo-compute",
    ]
    assert "r0-student" in stages and "r1-student" not in stages
    assert stages[-2:] == ["r1-opd", "r1-eval-opd"]
    retrain = LoopConfig(workdir="w", rounds=2, retrain_teachers=True).stages()
    assert "r1-grpo-compute" in retrain


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"families": ("search", "chat")}, "cannot propose"),
        ({"families": ("search", "search")}, "listed twice"),
        ({"loop_id": "a:b"}, "loop id"),
        ({"rounds": 0}, "rounds must be >= 1"),
        ({"grpo_steps": -1}, "grpo_steps must be >= 0"),
        ({"digit_group": 4}, "digit_group must be one of 1, 2, 3"),
        ({"grpo_reward_base": "graded"}, "grpo_reward_base must be one of verifier, outcome"),
        ({"grpo_prompts": "some"}, "grpo_prompts must be one of all, failed"),
        ({"grpo_probe_limit": 0}, "grpo_probe_limit must be >= 1"),
        ({"grpo_temperature": 0.0}, "grpo_temperature must be > 0"),
        ({"opd_temperature": -1.0}, "opd_temperature must be > 0"),
        ({"opd_prompts_per_step": 0}, "opd_prompts_per_step must be >= 1"),
        ({"grpo_mini_batches": 0}, "grpo_mini_batches must be >= 1"),
        ({"sft_rows": 0}, "sft_rows must be >= 1"),
        ({"heads": 0}, "heads must be >= 1"),
        ({"hidden_size": 256, "heads": 8}, "model shape .*head_dim 32 < 64"),
    ],
)
def test_loop_config_names_what_is_wrong(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoopConfig(workdir="w", **changes)


def test_loop_defaults_are_those_of_the_commands_they_feed() -> None:
    """The loop repeats `kag model tiny`'s and `kag train opd`'s defaults (importing them would
    load torch with every `kag` command): a change there must show up here."""
    from trainer.models import TinyModelConfig
    from trainer.opd import OPDConfig

    loop, tiny = LoopConfig(workdir="w"), TinyModelConfig()
    assert (loop.vocab_size, loop.digit_group) == (tiny.vocab_size, tiny.digit_group)
    assert (loop.hidden_size, loop.heads, loop.layers) == (
        tiny.hidden_size,
        tiny.num_attention_heads,
        tiny.num_hidden_layers,
    )
    assert loop.opd_prompts_per_step == OPDConfig().prompts_per_step


def test_student_is_steered_to_the_hops_it_fails_at() -> None:
    assert steer_hops({"2": {"accept_rate": 0.9}, "3": {"accept_rate": 0.2}}, base=2) == "3-4"
    assert steer_hops({"2": {"accept_rate": 0.0}, "3": {"accept_rate": 0.5}}, base=2) == "2-4"


def test_a_rerun_with_other_settings_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    work = tmp_path / "loop"
    argv = ["loop", "--workdir", str(work), *RESUMABLE, "--stop-after", "r0-heldout"]
    assert kag_main(argv) == 0
    counts = _counts(f"sqlite:///{work / 'kag.db'}")
    assert kag_main([*argv[:-2], "--demos", "41"]) == 2
    assert "demos: 40 -> 41" in capsys.readouterr().err
    assert _counts(f"sqlite:///{work / 'kag.db'}") == counts
    assert kag_main(["loop", "--workdir", str(work), "--stop-after", "r9-sft"]) == 2


# -- the demo and its report ---------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("demo") / "demo"
    log = work.parent / "demo.log"
    done = _kag("demo", "--workdir", str(work), *SMALL, log=log)
    assert done.returncode == 0, log.read_text()[-4000:]
    return work


def _report_rows(text: str) -> dict[str, list[str]]:
    """Stage label -> the cells of its row in the accept-rate table of report.md."""
    table = text.split("## Held-out accept rate per stage", 1)[1].split("\n\n", 2)[1]
    rows = [r.strip("|").split("|") for r in table.splitlines()[2:] if r.startswith("|")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


# the demo's stages start vLLM a dozen times: minutes on 2 cores, past the suite's 900 s default
@pytest.mark.timeout(2400)
@pytest.mark.vllm
def test_demo_report_numbers_are_those_of_the_graph_and_kag_eval(demo: Path, capsys) -> None:
    numbers = json.loads((demo / "report.json").read_text())
    labels = [e["label"] for e in numbers["evals"]]
    assert labels == [
        "base (untrained)",
        "r0 SFT",
        *(f"r0 teacher {f}" for f in DEMO_FAMILIES),
        "r0 OPD student",
        "r1 SFT",
        "r1 OPD student",
    ]
    url = f"sqlite:///{demo / 'kag.db'}"
    text = (demo / "report.md").read_text()
    rows = _report_rows(text)
    for e in numbers["evals"]:
        # the graph's eval Run
        with kag.open(url) as graph:
            run = graph.store.get_nodes("Run", [e["run_id"]])[0]
        assert run.kind == "eval" and run.status == "completed"
        c = run.counters
        assert (e["tasks"], e["accepted"], e["accept_rate"]) == (
            c["tasks"],
            c["greedy_accepted"],
            c["accept_rate"],
        )
        assert c["tasks"] == 6 and c["tasks_in_datasets"] == 0  # held out: never exported
        for fam, v in e["by_family"].items():
            assert v["accept_rate"] == c["by_family"][fam]["accept_rate"]
        # `kag eval` with the same run id reports the finished run
        python = ["--python-tool"] if "compute" in DEMO_FAMILIES else []
        assert kag_main(["eval", "--run-id", e["run_id"], "--model", e["model"], "--tasks",
                         f"run:{numbers['loop_id']}-r0-heldout", "--max-turns", "3",
                         *python, "--json", "--no-progress", "--graph", url]) == 0  # fmt: skip
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["accept_rate"] == e["accept_rate"]
        assert report["written_this_call"] == 0
        # and report.md shows the same numbers
        cells = rows[e["label"]]
        assert cells[0] == f"`{e['run_id']}`"
        assert float(cells[-1]) == pytest.approx(e["accept_rate"], abs=5e-4)
        for i, fam in enumerate(sorted(e["by_family"])):
            assert float(cells[1 + i]) == pytest.approx(
                e["by_family"][fam]["accept_rate"], abs=5e-4
            )
    for png in ("accept_rate.png", "loss.png", "reward.png"):
        assert (demo / png).stat().st_size > 1000
        assert f"]({png})" in text


@pytest.mark.timeout(2400)
@pytest.mark.vllm
def test_demo_records_every_stage_and_the_student_data_feeds_round_one(demo: Path) -> None:
    url = f"sqlite:///{demo / 'kag.db'}"
    config = LoopConfig(workdir=str(demo), loop_id="demo", rounds=2, families=DEMO_FAMILIES)
    with kag.open(url) as graph:
        store = graph.store
        stages = store.get_nodes("Run", [config.stage_record_id(s) for s in config.stages()])
        assert len(stages) == len(config.stages())
        assert store.get_nodes("Run", ["demo-r0-student"])[0].status == "completed"
        # the student's accepted trajectories joined round 1's data, after all of round 0's
        from kag.lineage import dataset_id_of

        def contained(path: str) -> set[str]:
            return {e.target for e in store.edges("CONTAINS", source=dataset_id_of(demo / path))}

        r0, r1 = contained("datasets/r0/sft"), contained("datasets/r1/sft")
        student_ok = {
            t.id
            for b in store.iter_nodes("Trajectory", where={"run_id": "demo-r0-student"})
            for t in b
            if t.verdict == "accepted" and not t.props.get("n_invalid_calls")
        }
    numbers = json.loads((demo / "report.json").read_text())
    rows = {s["stage"]: s for s in numbers["stages"]}
    assert r0 and r0 <= r1 and student_ok <= r1 and not (student_ok & r0)
    assert rows["r0-demos"]["trajectories"] == 60
    assert all(s["wall_s"] > 0 for s in numbers["stages"])
    assert numbers["coverage"]["r0-demos"]["accepted_tasks"] > 0
    text = (demo / "report.md").read_text()
    for stage in config.stages():
        assert f"| {stage} |" in text
    # SMALL's tokenizer, SFT and GRPO settings are those the models were made with
    tiny = json.loads((demo / "models" / "base" / "kag_tiny_model.json").read_text())
    assert (tiny["vocab_size"], tiny["digit_group"]) == (1024, 3)
    shape = json.loads((demo / "models" / "base" / "config.json").read_text())
    assert {k: shape[k] for k in ("hidden_size", "num_attention_heads", "num_hidden_layers")} == {
        "hidden_size": 192,
        "num_attention_heads": 3,
        "num_hidden_layers": 1,
    }
    sft = json.loads((demo / "runs" / "r0-sft" / "run.json").read_text())["config"]
    assert (sft["max_seq_len"], sft["micro_batch_rows"]) == (1536, 2)
    grpo = json.loads((demo / "runs" / "r0-grpo-search" / "run.json").read_text())["config"]
    assert grpo["grpo"]["step"]["temperature"] == 0.8
    assert grpo["grpo"]["step"]["mini_batches"] == 2
    assert grpo["grpo"]["shaping"]["base"] == "verifier"
    # --grpo-prompts failed: the teacher's prompts are the probed search tasks the SFT model failed
    assert Path(grpo["data_dir"]).name == "rl-search-failed"
    prompts = set(read_prompt_ids(grpo["data_dir"]))
    with kag.open(url) as graph:
        probed = [
            t
            for b in graph.store.iter_nodes(
                "Trajectory", where={"run_id": "demo-r0-grpo-search-probe"}
            )
            for t in b
        ]
    assert 0 < len(probed) <= 6 and prompts
    assert prompts <= {t.task_id for t in probed if t.verdict == "rejected"}
    # the OPD stage's prompts per step and sampling temperature
    opd = json.loads((demo / "runs" / "r0-opd" / "run.json").read_text())["config"]
    assert opd["opd"]["prompts_per_step"] == 2
    drawn = (demo / "runs" / "r0-opd" / "prompts.jsonl").read_text().splitlines()
    assert [len(json.loads(line)["task_ids"]) for line in drawn] == [2]
    with kag.open(url) as graph:
        (step_run,) = graph.store.get_nodes("Run", [run_id_of_step("r0-opd", 1)])
    assert step_run.config["temperature"] == 0.7


# -- one tool set ------------------------------------------------------------------------


def _tool_sets(store: Any, run_id: str) -> dict[str, set[tuple[str, ...]]]:
    """The tool lists the trajectories of Run `run_id` were offered, per task family."""
    trajectories = [t for b in store.iter_nodes("Trajectory", where={"run_id": run_id}) for t in b]
    families = {t.id: t.family for t in store.get_nodes("Task", [t.task_id for t in trajectories])}
    sets: dict[str, set[tuple[str, ...]]] = {}
    for t in trajectories:
        sets.setdefault(families[t.task_id], set()).add(tuple(t.props["tools"]))
    return sets


@pytest.mark.timeout(1800)
@pytest.mark.vllm
def test_a_search_teacher_of_a_compute_loop_is_probed_and_trained_with_the_sft_tool_set(
    tmp_path: Path,
) -> None:
    # the demonstrations offer the python tool to search tasks too when compute is a family, so
    # the search teacher's probe and rollouts must: a prompt without it is one SFT never showed
    work, log = tmp_path / "tools", tmp_path / "loop.log"
    argv = [*RESUMABLE, "--grpo-steps", "1", "--grpo-samples", "2", "--grpo-groups", "1"]
    argv += ["--grpo-prompts", "failed", "--grpo-probe-limit", "2"]
    done = _kag("loop", "--workdir", str(work), *argv, "--stop-after", "r0-grpo-search", log=log)
    assert done.returncode == 0, log.read_text()[-3000:]
    with kag.open(f"sqlite:///{work / 'kag.db'}") as graph:
        store = graph.store
        demos = _tool_sets(store, "loop-r0-demos")
        assert set(demos) == {"search", "compute"}
        (sft_tools,) = demos["search"]
        assert "python@1" in sft_tools and demos["compute"] == {sft_tools}
        for run in ("loop-r0-eval-sft", "loop-r0-grpo-search-probe"):
            assert all(s == {sft_tools} for s in _tool_sets(store, run).values()), run
        rollouts = _tool_sets(store, run_id_of_step("loop-r0-grpo-search", 1))
        assert rollouts == {"search": {sft_tools}}


# -- killed and resumed --------------------------------------------------------------------


@pytest.mark.timeout(2400)
@pytest.mark.vllm
def test_a_loop_stopped_and_killed_then_resumed_ends_with_the_uninterrupted_graph(
    tmp_path: Path,
) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    log = tmp_path / "loop.log"
    assert _kag("loop", "--workdir", str(whole), *RESUMABLE, log=log).returncode == 0
    # stopped between stages twice, at stages picked from the list
    stages = LoopConfig(workdir="w", grpo_steps=0, student_tasks=3).stages()
    for stop in (stages[2], stages[6]):
        done = _kag("loop", "--workdir", str(broken), *RESUMABLE, "--stop-after", stop, log=log)
        assert done.returncode == 0, log.read_text()[-3000:]
    # killed (the whole process group, vLLM's engine included) inside the student self-play
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kag.cli", "loop", "--workdir", str(broken), *RESUMABLE],
            env=_env(),
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.time() + 900
    while time.time() < deadline and "== r0-student\n" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
    time.sleep(15)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _kag("loop", "--workdir", str(broken), *RESUMABLE, log=log)
    assert resumed.returncode == 0, log.read_text()[-3000:]
    assert re.search(r"r0-curate: finished earlier", log.read_text())
    assert _counts(f"sqlite:///{broken / 'kag.db'}") == _counts(f"sqlite:///{whole / 'kag.db'}")
