"""The GRPO training loop: reward shaping, the resumable prompt schedule, and `kag train grpo`.

The shaping and the schedule are pure and tested on their own; one end-to-end run on CPU (a
generated world, oracle self-play, `kag export rl`, the tiny model on vLLM) trains two steps,
then a second call with `--steps 3` resumes it and trains exactly one more step on the next
prompts of the schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.grpo import GRPOConfig, RewardShaping, repeated_tool_calls
from trainer.grpo_loss import filter_uniform_groups
from trainer.grpo_train import (
    METRIC_KEYS,
    GRPOTrainConfig,
    PromptSchedule,
    drawn_tasks,
    read_prompt_ids,
    run_id_of_step,
)


def _call(name: str, arguments: str) -> dict:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }


def _tool() -> dict:
    return {"role": "tool", "content": "[]", "tool_call_id": "c", "name": "f"}


# --------------------------------------------------------------------------- reward shaping


def test_turns_past_the_free_ones_and_repeated_calls_cost_their_penalties():
    shaping = RewardShaping(free_turns=4, turn_penalty=0.1, repetition_penalty=0.25)
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        _call("search", '{"name": "Heat"}'),
        _tool(),
        _call("search", '{"name":"Heat"}'),  # the same call, other spacing: a repeat
        _tool(),
        _call("search", '{"name": "Ada"}'),
        _tool(),
        _call("neighbours", '{"name": "Heat"}'),  # same arguments, other tool: not a repeat
        _tool(),
        _call("search", '{"name": "Heat"}'),  # a repeat again
        _tool(),
        {"role": "assistant", "content": "Ada Lee"},
    ]
    assert repeated_tool_calls(messages) == 2
    # 6 assistant turns: 2 past the 4 free ones; 2 repeats
    assert shaping.shape_messages(1.0, messages) == pytest.approx(1.0 - 2 * 0.1 - 2 * 0.25)
    assert shaping.shape_messages(0.0, messages[:4]) == 0.0  # 1 turn, no repeat


def test_default_shaping_leaves_the_verifier_reward_as_it_is():
    messages = [_call("f", '{"x": 1}'), _tool()] * 10
    assert GRPOConfig().shaping.shape_messages(0.75, messages) == 0.75


def test_key_order_of_arguments_does_not_make_a_call_new():
    calls = [_call("f", '{"x": 1, "y": [1, 2]}'), _call("f", '{"y": [1, 2], "x": 1}')]
    assert repeated_tool_calls(calls) == 1
    assert repeated_tool_calls([_call("f", "not json"), _call("f", "not json")]) == 1
    assert repeated_tool_calls([_call("f", '{"x": 1}'), _call("f", '{"x": 2}')]) == 0


def test_negative_penalties_are_refused():
    with pytest.raises(ValueError, match="turn_penalty"):
        RewardShaping(turn_penalty=-0.1)
    with pytest.raises(ValueError, match="free_turns"):
        RewardShaping(free_turns=-1)


def test_outcome_base_scores_the_verdict_alone_so_groups_without_a_success_drop():
    graded, outcome = RewardShaping(), RewardShaping(base="outcome", turn_penalty=0.1)
    # the verifiers grade rejected trajectories 0-0.45 by their calls and evidence
    assert graded.base_reward(0.3, accepted=False) == 0.3
    assert graded.base_reward(0.8, accepted=True) == 0.8
    assert outcome.base_reward(0.3, accepted=False) == 0.0
    assert outcome.base_reward(0.55, accepted=True) == 1.0
    # penalties apply on top of either base: 6 turns, 2 past the 4 free ones
    messages = [_call("f", f'{{"x": {i}}}') for i in range(6)]
    assert outcome.shape_messages(outcome.base_reward(0.55, accepted=True), messages) == (
        pytest.approx(0.8)
    )
    # a group of rejected rollouts the verifiers graded apart trains under "verifier" only
    rejected = [0.1, 0.3, 0.45, 0.2]
    groups = ["t"] * 4
    assert filter_uniform_groups(rejected, groups).kept == ("t",)
    assert (
        filter_uniform_groups(
            [outcome.base_reward(r, accepted=False) for r in rejected], groups
        ).kept
        == ()
    )


def test_an_unknown_reward_base_is_refused_with_the_choices_named():
    with pytest.raises(ValueError, match="verifier, outcome"):
        RewardShaping(base="graded")


# --------------------------------------------------------------------------- schedule


IDS = [f"task-{i:02d}" for i in range(7)]


def _take(schedule: PromptSchedule, n: int) -> list[str]:
    ids = schedule.draw()
    return [next(ids) for _ in range(n)]


def test_each_epoch_visits_every_prompt_once_in_a_seeded_order():
    schedule = PromptSchedule(IDS, seed=3)
    drawn = _take(schedule, 3 * len(IDS))
    epochs = [drawn[i : i + len(IDS)] for i in range(0, len(drawn), len(IDS))]
    assert all(sorted(e) == IDS for e in epochs)
    assert epochs[0] != epochs[1]  # a new order every epoch
    assert drawn == _take(PromptSchedule(IDS, seed=3), 3 * len(IDS))
    assert drawn != _take(PromptSchedule(IDS, seed=4), 3 * len(IDS))


def test_a_schedule_restored_from_its_state_continues_at_the_next_unseen_prompt():
    """Steps of uneven size (refills draw more), a stop after each, a restore from the saved
    state: the prompts over the whole run are exactly the uninterrupted schedule's."""
    whole = _take(PromptSchedule(IDS, seed=1), 20)
    schedule = PromptSchedule(IDS, seed=1)
    seen: list[str] = []
    for size in (3, 5, 2, 4, 6):
        seen += _take(schedule, size)  # the step's iterator is dropped with the step
        state = json.loads(json.dumps(schedule.state()))  # as the checkpoint stores it
        schedule = PromptSchedule.from_state(IDS, state)
    assert seen == whole
    assert (schedule.epoch, schedule.position) == (2, 6)


def test_a_step_draws_each_prompt_once_when_the_dataset_is_smaller_than_the_step():
    schedule = PromptSchedule(["a", "b", "c"], seed=1)
    drawn: list[str] = []
    tasks = list(drawn_tasks(schedule, str.upper, drawn))  # a step asking for more than 3
    assert sorted(drawn) == ["a", "b", "c"] and tasks == [t.upper() for t in drawn]
    # the next step starts the next epoch with its first id, none skipped
    nxt: list[str] = []
    first = next(drawn_tasks(schedule, str, nxt))
    assert (schedule.epoch, first) == (1, schedule.order(1)[0])


def test_a_saved_schedule_refuses_other_prompts():
    state = PromptSchedule(IDS, seed=0).state()
    with pytest.raises(ValueError, match="same dataset and split"):
        PromptSchedule.from_state(IDS[:-1], state)
    with pytest.raises(ValueError, match="distinct"):
        PromptSchedule(["a", "a"], seed=0)


def test_prompt_ids_come_from_the_task_id_column_of_the_split(tmp_path):
    data = tmp_path / "rl" / "data"
    data.mkdir(parents=True)
    pq.write_table(
        pa.table({"task_id": ["b", "a", "b"], "x": [1, 2, 3]}), data / "train-00000.parquet"
    )
    pq.write_table(pa.table({"task_id": ["c", "a"], "x": [4, 5]}), data / "train-00001.parquet")
    pq.write_table(pa.table({"task_id": ["z"], "x": [6]}), data / "test-00000.parquet")
    assert read_prompt_ids(tmp_path / "rl") == ["b", "a", "c"]
    assert read_prompt_ids(tmp_path / "rl", split="test") == ["z"]
    with pytest.raises(ValueError, match="no validation-\\*.parquet shard"):
        read_prompt_ids(tmp_path / "rl", split="validation")


def test_train_config_names_its_runs_per_step(tmp_path):
    config = GRPOTrainConfig(data_dir=tmp_path, out_dir=tmp_path / "grpo-film")
    assert config.run_name == "grpo-film"
    assert run_id_of_step(config.run_name, 12) == "train:grpo-film:step-000012"
    with pytest.raises(ValueError, match="save_every"):
        GRPOTrainConfig(data_dir=tmp_path, out_dir=tmp_path, save_every=0)


# --------------------------------------------------------------------------- end to end


@pytest.mark.vllm
def test_kag_train_grpo_trains_writes_train_runs_and_resumes_at_the_next_prompts(
    tiny_model_dir: Path, sqlite_url: str, tmp_path: Path, capsys
):
    from transformers import AutoModelForCausalLM

    import kag
    from kag.cli import main as kag_main

    assert (
        kag_main(["generate", "world", "--seed", "2", "--size", "200", "--graph", sqlite_url]) == 0
    )
    selfplay = ["selfplay", "run", "--engine", "oracle", "--tasks", "24", "--no-progress"]
    assert kag_main([*selfplay, "--graph", sqlite_url, "--json"]) == 0
    rl = tmp_path / "rl"
    assert kag_main(["export", "rl", str(rl), "--graph", sqlite_url]) == 0
    capsys.readouterr()
    prompts = read_prompt_ids(rl)
    assert len(prompts) >= 6

    out = tmp_path / "grpo-run"
    argv = [
        "train", "grpo", "--data", str(rl), "--model", str(tiny_model_dir), "--graph", sqlite_url,
        "--out", str(out), "--samples", "4", "--groups-per-step", "2", "--max-refills", "2",
        "--max-turns", "3", "--max-new-tokens", "48", "--max-context-tokens", "2048",
        "--kv-cache-gib", "0.25", "--lr", "1e-3", "--kl-coef", "0", "--seed", "5", "--json",
        "--free-turns", "1", "--turn-penalty", "0.1", "--repetition-penalty", "0.05",
    ]  # fmt: skip
    assert kag_main([*argv, "--steps", "2"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (first["steps"], first["resumed_from"]) == (2, 0)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert all(set(METRIC_KEYS) <= set(r) for r in lines)
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.num_experts_per_tok is not None

    assert kag_main([*argv, "--steps", "3"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (second["steps"], second["resumed_from"], second["trained_this_call"]) == (3, 2, 1)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]

    # the prompts of the whole run are the schedule's, in order, each once
    steps = [json.loads(x) for x in (out / "prompts.jsonl").read_text().splitlines()]
    drawn = [t for s in steps for t in s["task_ids"]]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert [len(s["task_ids"]) for s in steps] == [r["prompts"] for r in lines]
    assert drawn == _take(PromptSchedule(prompts, seed=5), len(drawn))
    assert len(set(drawn)) == min(len(drawn), len(prompts))
    # a step that trained pushed its weights; the engine's log-probs matched the trainer's
    trained = [r for r in lines if r["trained"]]
    assert trained, lines
    assert all(r["mismatch_abs_logp"] < 1e-2 and r["tokens"] > 0 for r in trained)

    with kag.open(sqlite_url) as g:
        for s in steps:
            run = g.get("Run", s["run_id"])
            assert run is not None and run.kind == "train"
            trajectories = [
                t for b in g.store.iter_nodes("Trajectory", where={"run_id": run.id}) for t in b
            ]
            assert sorted(t.task_id for t in trajectories) == sorted(s["task_ids"] * 4)
    assert [s["run_id"] for s in steps] == [run_id_of_step("grpo-run", n) for n in (1, 2, 3)]
    # every step's rollout Run used the start model, after that step's updates so far
    from kag.lineage import find_model, weights_sha256

    with kag.open(sqlite_url) as g:
        start = find_model(g.store, sha256=weights_sha256(argv[argv.index("--model") + 1]))
        assert start is not None
        for n, s in enumerate(steps, start=1):
            (used,) = g.store.edges("USED_MODEL", source=s["run_id"])
            assert used.target == start.id
            assert used.props == {"updates": n - 1, "training_run": "run:grpo-grpo-run"}


@pytest.mark.vllm
def test_kag_train_grpo_on_a_vllm_server_pushes_each_steps_weights_into_it(
    tiny_model_dir: Path, sqlite_url: str, tmp_path: Path, capsys
):
    """`--engine openai` starts a vLLM server on --model and syncs it in place after every step:
    the second step's rollouts come from the first step's weights, so the server's log-probs
    match the trainer's (a large learning rate would make a stale server's differ plainly)."""
    from kag.cli import main as kag_main

    assert (
        kag_main(["generate", "world", "--seed", "3", "--size", "200", "--graph", sqlite_url]) == 0
    )
    selfplay = ["selfplay", "run", "--engine", "oracle", "--tasks", "12", "--no-progress"]
    assert kag_main([*selfplay, "--graph", sqlite_url, "--json"]) == 0
    rl = tmp_path / "rl"
    assert kag_main(["export", "rl", str(rl), "--graph", sqlite_url]) == 0
    capsys.readouterr()
    out = tmp_path / "grpo-server"
    argv = [
        "train", "grpo", "--engine", "openai", "--data", str(rl), "--model", str(tiny_model_dir),
        "--graph", sqlite_url, "--out", str(out), "--samples", "4", "--groups-per-step", "1",
        "--max-refills", "3", "--max-turns", "3", "--max-new-tokens", "32",
        "--max-context-tokens", "1024", "--kv-cache-gib", "0.25", "--lr", "1e-2",
        "--kl-coef", "0", "--seed", "2", "--free-turns", "1", "--turn-penalty", "0.1",
        "--steps", "3", "--json",
    ]  # fmt: skip
    assert kag_main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in lines if r["trained"]]
    assert len(trained) >= 2, lines
    # the engine's version counts the pushes; every push reached the server in place
    assert [r["weight_version"] for r in trained] == list(range(1, len(trained) + 1))
    assert all(r["mismatch_abs_logp"] < 1e-2 and r["time_sync_s"] > 0 for r in trained)


def test_base_url_needs_the_openai_engine(tmp_path, capsys):
    from kag.cli import main as kag_main

    argv = ["train", "grpo", "--data", str(tmp_path), "--model", str(tmp_path)]
    assert kag_main([*argv, "--out", str(tmp_path / "o"), "--base-url", "http://x/v1"]) == 2
    assert "--base-url needs --engine openai" in capsys.readouterr().err


class _Killed(Exception):
    pass


@pytest.mark.vllm
def test_a_run_killed_between_checkpoints_redoes_the_lost_steps_on_the_same_prompts(
    tiny_model_dir: Path, sqlite_url: str, tmp_path: Path
):
    """`save_every=2`, killed after step 3: the resume starts from the step-2 checkpoint, redoes
    step 3 on the same prompts under the same Run id (its rollouts overwritten, not doubled)."""
    from transformers import AutoTokenizer

    import kag
    from kag.schema import Run
    from kag.world import generate_world, write_world
    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig
    from selfplay.generation import RolloutSource
    from selfplay.graph_tools import default_registry
    from selfplay.proposer import Proposer
    from selfplay.solver import EnginePolicy, SolverConfig
    from selfplay.writeback import write_tasks
    from trainer.grpo import GRPOStepConfig
    from trainer.grpo_loss import GRPOLossConfig
    from trainer.grpo_train import train_grpo
    from trainer.sft import load_causal_lm

    out = tmp_path / "run"
    rl = tmp_path / "rl"
    (rl / "data").mkdir(parents=True)
    config = GRPOTrainConfig(
        data_dir=rl,
        out_dir=out,
        steps=4,
        save_every=2,
        seed=1,
        grpo=GRPOConfig(
            samples=2,
            groups_per_step=2,
            max_refills=0,
            shaping=RewardShaping(free_turns=0, turn_penalty=0.1),
            step=GRPOStepConfig(learning_rate=1e-3, loss=GRPOLossConfig(kl_coef=0.0)),
        ),
    )
    engine_config = VLLMEngineConfig(max_model_len=1024, kv_cache_gib=0.25)
    with kag.open(sqlite_url) as g, VLLMEngine(tiny_model_dir, config=engine_config) as engine:
        write_world(g, *generate_world(seed=6, size=200))
        tasks = {t.id: t for t in Proposer(g).propose(10, hops=2, seed=4).tasks}
        write_tasks(g.store, list(tasks.values()))
        pq.write_table(pa.table({"task_id": list(tasks)}), rl / "data" / "train-00000.parquet")
        tools = default_registry(g.store, sandbox=None)
        policy = EnginePolicy(engine, logprobs=True)
        solver = SolverConfig(max_turns=2, max_new_tokens=24, max_context_tokens=1024)

        def rollouts_for(run_id):
            source = RolloutSource(g.store, policy, tools=tools, run_id=run_id, solver=solver)
            return source, Run(id=run_id, kind="train")

        def kill_after_step_3(step, metrics):
            if step == 3:
                raise _Killed

        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        run = dict(engine=engine, task_of=tasks.__getitem__, rollouts_for=rollouts_for)
        with pytest.raises(_Killed):
            train_grpo(
                load_causal_lm(tiny_model_dir),
                tokenizer,
                config=config,
                **run,
                on_step=kill_after_step_3,
            )
        killed = [json.loads(x) for x in (out / "prompts.jsonl").read_text().splitlines()]
        assert [p["step"] for p in killed] == [1, 2, 3]
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002"]

        result = train_grpo(load_causal_lm(tiny_model_dir), tokenizer, config=config, **run)
        assert (result.steps, result.resumed_from) == (4, 2)
        steps = [json.loads(x) for x in (out / "prompts.jsonl").read_text().splitlines()]
        assert [p["step"] for p in steps] == [1, 2, 3, 4]
        assert steps[2] == killed[2]  # step 3 redone on the same prompts
        drawn = [t for p in steps for t in p["task_ids"]]
        assert drawn == _take(PromptSchedule(list(tasks), seed=1), 8) and len(set(drawn)) == 8
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in metrics] == [1, 2, 3, 4]
        redone = [
            t
            for b in g.store.iter_nodes("Trajectory", where={"run_id": steps[2]["run_id"]})
            for t in b
        ]
        assert len(redone) == 2 * 2


def test_kag_train_grpo_names_prompts_missing_from_the_graph(sqlite_url, tmp_path, capsys):
    from kag.cli import main as kag_main

    (tmp_path / "rl" / "data").mkdir(parents=True)
    pq.write_table(
        pa.table({"task_id": ["task:nope"]}), tmp_path / "rl" / "data" / "train-00000.parquet"
    )
    argv = ["train", "grpo", "--data", str(tmp_path / "rl"), "--model", str(tmp_path / "m")]
    assert kag_main([*argv, "--out", str(tmp_path / "out"), "--graph", sqlite_url]) == 2
    assert "'task:nope'" in capsys.readouterr().err
    assert (
        kag_main([*argv, "--split", "test", "--out", str(tmp_path / "o2"), "--graph", sqlite_url])
        == 2
    )
    assert "no test-*.parquet shard" in capsys.readouterr().err
