"""The LLM judge and the question rewrite, reachable from the config and the command line.

The vLLM tests run the real tiny model (random weights): its free text never holds a verdict line,
so its verdicts are undecided and its rewrites refused; constrained decoding (vLLM structured
outputs) makes the same model give a verdict that parses.
"""

from __future__ import annotations

import json
import re

import pytest

import kag
import selfplay
from kag.cli import main as kag_main
from kag.schema import Run
from kag.world import generate_world, write_world
from selfplay.answers import leaked_answer
from selfplay.config import JudgeConfig, SelfPlayConfig
from selfplay.engines.base import SamplingConfig
from selfplay.engines.openai import OpenAIEngine, OpenAIEngineConfig
from selfplay.generation import build_suite
from selfplay.oracle import OraclePolicy
from selfplay.proposer import ProposerConfig, render_question
from selfplay.verifiers import NoShortcut, judge_verdict_regex, parse_judge_verdict
from selfplay.vllm_server import free_port

JUDGE = "llm_judge@1"


def _world(g) -> None:
    write_world(g, *generate_world(seed=2, size=160))


def _judge_verdicts(g, run_id: str) -> dict[str, object]:
    """trajectory id -> its llm_judge Verification."""
    ids = {t.id for t in g.iter_nodes("Trajectory", where={"run_id": run_id})}
    return {
        v.subject_id: v
        for v in g.iter_nodes("Verification")
        if v.verifier_id == JUDGE and v.subject_id in ids
    }


# --------------------------------------------------------------------------- without an engine


def test_the_judge_joins_the_suite_as_optional_or_required():
    assert JUDGE not in [v.id for v in build_suite(SelfPlayConfig()).verifiers]
    optional = build_suite(SelfPlayConfig(judge=JudgeConfig()))
    assert JUDGE in [v.id for v in optional.optional]
    assert JUDGE not in [v.id for v in optional.required]
    required = build_suite(SelfPlayConfig(judge=JudgeConfig(required=True, constrained=True)))
    assert [v.id for v in required.required][-1] == JUDGE
    assert JUDGE not in [v.id for v in required.optional]
    judge = next(v for v in required.verifiers if v.id == JUDGE)
    assert judge.record().config == {"max_tokens": 256, "temperature": 0.0, "constrained": True}


def test_bad_judge_and_structured_output_settings_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="base_url needs the served model's name"):
        JudgeConfig(base_url="http://127.0.0.1:8000/v1")
    with pytest.raises(ValueError, match="max_tokens must be >= 32"):
        JudgeConfig(constrained=True, max_tokens=8)
    with pytest.raises(ValueError, match="regex or choice, not both"):
        SamplingConfig(regex="a", choice=["a"])
    with pytest.raises(ValueError, match="SamplingConfig.regex is not a regular expression"):
        SamplingConfig(regex="(")
    with pytest.raises(ValueError, match="choice must hold non-empty strings"):
        SamplingConfig(choice=[])


def test_a_constrained_reply_always_parses_as_a_verdict():
    pattern = re.compile(judge_verdict_regex(64))
    for reply in ("\nVERDICT: CORRECT", "Same city.\nVERDICT: INCORRECT"):
        assert pattern.fullmatch(reply)
        assert parse_judge_verdict(reply)[0] is not None
    assert not pattern.fullmatch("x" * 41 + "\nVERDICT: CORRECT")  # no room left for the verdict


def test_a_server_without_vllm_extensions_refuses_structured_output_clearly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = OpenAIEngine(url, "m", config=OpenAIEngineConfig(vllm_extensions=False))
    try:
        with pytest.raises(ValueError, match="SamplingConfig.regex needs a server that takes"):
            engine.chat([[{"role": "user", "content": "hi"}]], sampling=SamplingConfig(regex="a"))
    finally:
        engine.close()


def test_the_oracle_has_no_engine_for_a_policy_judge_or_a_rewrite(sqlite_url):
    with kag.open(sqlite_url) as g:
        _world(g)
        with pytest.raises(ValueError, match="the oracle\\): give the judge a model of its own"):
            selfplay.run(g, config=SelfPlayConfig(tasks=1, judge=JudgeConfig(), progress=False))
        rewrite = ProposerConfig(rewrite=True)
        with pytest.raises(ValueError, match="rewriting questions .* needs a model engine"):
            selfplay.run(g, config=SelfPlayConfig(tasks=1, proposer=rewrite, progress=False))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--judge", "policy"], "--judge policy runs on the policy's engine"),
        (["--judge", "/no/such/judge"], "--judge /no/such/judge: no such model directory"),
        (["--judge-required"], "need --judge policy|MODEL"),
        (["--rewrite-questions"], "--rewrite-questions needs a model engine"),
    ],
)
def test_selfplay_run_refuses_a_judge_or_rewrite_it_cannot_serve(
    sqlite_url, capsys, flags, message
):
    argv = ["selfplay", "run", "--engine", "oracle", "--graph", sqlite_url, *flags]
    assert kag_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- the tiny model


@pytest.mark.vllm
def test_structured_outputs_constrain_the_vllm_engine(vllm_engine):
    chat = [[{"role": "user", "content": "Is Paris in France?"}]] * 2
    [[a], [b]] = vllm_engine.chat(chat, sampling=SamplingConfig(choice=["yes", "no"], max_tokens=4))
    assert {a.text, b.text} <= {"yes", "no"}
    sampling = SamplingConfig(regex=judge_verdict_regex(48), max_tokens=48, temperature=1.0, seed=3)
    [[c]] = vllm_engine.chat(chat[:1], sampling=sampling)
    assert re.fullmatch(judge_verdict_regex(48), c.text), c.text


@pytest.mark.vllm
def test_rewrites_by_the_tiny_model_are_refused_and_no_task_leaks_an_answer(
    vllm_engine, sqlite_url
):
    proposer = ProposerConfig(rewrite=True, rewrite_max_tokens=24)
    config = SelfPlayConfig(run_id="rewrite", tasks=4, proposer=proposer, progress=False)
    with kag.open(sqlite_url) as g:
        _world(g)
        summary = selfplay.run(g, config=config, policy=OraclePolicy(), engine=vllm_engine)
        assert summary.tasks == 4 and summary.accepted == 4
        # every rewrite was judged, and the random model's were all refused
        assert sum(summary.rewrites.values()) == 4 and "kept" not in summary.rewrites
        run = g.store.get_nodes("Run", ["rewrite"])[0]
        assert run.counters["rewrites"] == summary.rewrites
        assert run.config["proposer"]["rewrite"] is True
        for task in g.iter_nodes("Task"):
            assert task.question == render_question(task.props["start_name"], task.props["phrases"])
            assert not task.props.get("rewritten")
            assert leaked_answer(task.question, task.answers) is None
            assert NoShortcut().verify(task).passed is True


@pytest.mark.vllm
def test_a_malformed_verdict_is_undecided_and_the_trajectory_is_still_written(
    vllm_engine, sqlite_url
):
    # sampled (the greedy tiny model stops at once): free text that holds no verdict line
    judge = JudgeConfig(max_tokens=24, temperature=1.0)
    config = SelfPlayConfig(run_id="judge-free", tasks=2, judge=judge, progress=False)
    with kag.open(sqlite_url) as g:
        _world(g)
        summary = selfplay.run(g, config=config, policy=OraclePolicy(), engine=vllm_engine)
        # the judge is optional: the oracle's trajectories are accepted and all written
        assert summary.trajectories == 2 and summary.accepted == 2
        verdicts = _judge_verdicts(g, "judge-free")
        assert len(verdicts) == 2
        for v in verdicts.values():
            assert v.passed is None and v.score == 0.0
            assert v.detail.startswith("the judge gave no verdict: ")
            assert v.detail != "the judge gave no verdict: ''"  # the reply's text is kept
            assert v.props["required"] is False
        run: Run = g.store.get_nodes("Run", ["judge-free"])[0]
        assert run.config["judge"] == {
            "model": "policy", "base_url": None, "required": False, "constrained": False,
            "max_tokens": 24, "temperature": 1.0,
        }  # fmt: skip
        assert [v.id for v in g.store.get_nodes("Verifier", [JUDGE])] == [JUDGE]


@pytest.mark.vllm
def test_a_constrained_judge_gives_a_parsed_verdict_that_decides_when_required(
    vllm_engine, sqlite_url
):
    judge = JudgeConfig(required=True, constrained=True, max_tokens=64, temperature=1.0)
    config = SelfPlayConfig(run_id="judge-strict", tasks=3, judge=judge, progress=False)
    with kag.open(sqlite_url) as g:
        _world(g)
        summary = selfplay.run(g, config=config, policy=OraclePolicy(), engine=vllm_engine)
        assert summary.trajectories == 3
        verdicts = _judge_verdicts(g, "judge-strict")
        trajectories = {
            t.id: t for t in g.iter_nodes("Trajectory", where={"run_id": "judge-strict"})
        }
        assert set(verdicts) == set(trajectories)
        for tid, v in verdicts.items():
            assert v.passed in (True, False), v.detail
            assert not v.detail.startswith("the judge gave no verdict")
            assert v.props["required"] is True
            # every other required verifier passes for the oracle: the judge decides
            expected = "accepted" if v.passed else "rejected"
            assert trajectories[tid].verdict == expected
        assert summary.accepted == sum(v.passed for v in verdicts.values())


@pytest.mark.vllm
def test_selfplay_run_judges_with_a_model_directory_of_its_own(tiny_model_dir, sqlite_url, capsys):
    with kag.open(sqlite_url) as g:
        _world(g)
    argv = ["selfplay", "run", "--engine", "oracle", "--tasks", "2", "--graph", sqlite_url]
    argv += ["--judge", str(tiny_model_dir), "--judge-constrained", "--run-id", "cli-judge"]
    assert kag_main([*argv, "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trajectories"] == 2 and summary["accepted"] == 2  # the judge is optional
    with kag.open(sqlite_url) as g:
        verdicts = _judge_verdicts(g, "cli-judge")
        assert len(verdicts) == 2 and all(v.passed in (True, False) for v in verdicts.values())
        run = g.store.get_nodes("Run", ["cli-judge"])[0]
        assert run.config["judge"]["model"] == str(tiny_model_dir)
        assert run.config["judge"]["constrained"] is True


@pytest.mark.vllm
def test_a_judge_on_a_vllm_server_gets_structured_outputs_through_the_openai_engine(
    vllm_server, sqlite_url
):
    with OpenAIEngine(vllm_server.base_url, vllm_server.model) as engine:
        sampling = SamplingConfig(choice=["yes", "no"], max_tokens=4)
        [[a]] = engine.chat(
            [[{"role": "user", "content": "Is Paris in France?"}]], sampling=sampling
        )
        assert a.text in ("yes", "no")
    judge = JudgeConfig(
        model=vllm_server.model, base_url=vllm_server.base_url, constrained=True, max_tokens=64
    )
    config = SelfPlayConfig(run_id="judge-server", tasks=2, judge=judge, progress=False)
    with kag.open(sqlite_url) as g:
        _world(g)
        summary = selfplay.run(g, config=config)
        assert summary.trajectories == 2 and summary.accepted == 2
        verdicts = _judge_verdicts(g, "judge-server")
        assert len(verdicts) == 2 and all(v.passed in (True, False) for v in verdicts.values())
