"""Verifiers judge trajectories the way acceptance and rewards rely on."""

from __future__ import annotations

import json

import pytest

from kag.schema import Step, Task, Verifier
from selfplay.answers import answers_match, normalize_answer
from selfplay.tools import ToolRegistry, tool
from selfplay.verifiers import (
    AnswerMatch,
    EvidenceCoverage,
    LLMJudge,
    NoShortcut,
    ProcessCheck,
    RewardConfig,
    ToolCallValidity,
    TrajectoryVerifier,
    VerifierResult,
    VerifierSuite,
    VerifyContext,
    build_judge_prompt,
    build_verifier,
    parse_judge_verdict,
    touched_entity_ids,
)

TASK = Task(
    id="task:1",
    question="Which country is the city where Ada Lovelace was born the capital of?",
    answers=("United Kingdom", "Great Britain"),
    answer_ids=("uk",),
    hops=2,
    path={"entities": ["ada", "lon", "uk"], "relations": ["born_in", "capital_of"]},
)


@tool
def get_relations(entity_id: str, relation: str | None = None) -> dict:
    """Relations of an entity."""
    return {}


REGISTRY = ToolRegistry([get_relations])


def call(i: int, name: str, arguments: dict | str) -> dict:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": args}}
        ],
    }


def result(i: int, content: dict) -> dict:
    return {
        "role": "tool",
        "content": json.dumps(content),
        "tool_call_id": f"c{i}",
        "name": "get_relations",
    }


def solved(answer: str = "the United Kingdom") -> list[dict]:
    """A trajectory that walks ada -> lon -> uk with two calls and answers."""
    return [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": TASK.question},
        call(0, "get_relations", {"entity_id": "ada"}),
        result(
            0,
            {
                "entity": {"id": "ada"},
                "relations": [{"relation": "born_in", "id": "lon", "name": "London"}],
            },
        ),
        call(1, "get_relations", {"entity_id": "lon"}),
        result(
            1,
            {
                "entity": {"id": "lon"},
                "relations": [{"relation": "capital_of", "id": "uk", "name": "United Kingdom"}],
            },
        ),
        {"role": "assistant", "content": f"It is the UK.\n<answer>{answer}</answer>"},
    ]


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("candidate", "gold", "same"),
    [
        ("the United Kingdom", "United Kingdom", True),
        ("  united   KINGDOM. ", "United Kingdom", True),
        ("Zoë Saldaña", "Zoe_Saldana", True),
        ("Jean Paul", "Jean-Paul", True),
        ("An Education", "education", True),
        ("United States", "United Kingdom", False),
        ("", "the", False),
    ],
)
def test_answers_compare_after_normalising_case_punctuation_articles_and_spaces(
    candidate, gold, same
):
    assert answers_match(candidate, gold) is same


def test_normalize_answer_keeps_words_readable():
    assert normalize_answer("The Lord of the Rings: The Two Towers") == "lord of the rings two towers"


def test_answer_match_accepts_any_valid_answer_from_the_final_answer_tag():
    assert AnswerMatch().verify(TASK, solved("great britain")).passed is True
    r = AnswerMatch().verify(TASK, solved())
    assert (r.passed, r.score, r.detail) == (
        True,
        1.0,
        "answer 'the United Kingdom' matches 'United Kingdom'",
    )


def test_answer_match_rejects_wrong_or_missing_answers_and_says_why():
    wrong = AnswerMatch().verify(TASK, solved("France"))
    assert (wrong.passed, wrong.score) == (False, 0.0)
    assert wrong.detail == "answer 'France' matches none of 'United Kingdom', 'Great Britain'"
    untagged = solved()
    untagged[-1] = {"role": "assistant", "content": "United Kingdom"}
    assert (
        AnswerMatch().verify(TASK, untagged).detail
        == "no <answer>...</answer> in the final assistant message"
    )
    # only the final assistant message counts; an answer inside reasoning does not
    thinking = solved()
    thinking[-1] = {
        "role": "assistant",
        "content": "<think><answer>United Kingdom</answer></think>not sure",
    }
    assert AnswerMatch().verify(TASK, thinking).passed is False


def test_answer_lists_pass_only_when_every_item_is_valid():
    assert AnswerMatch().verify(TASK, solved("United Kingdom; Great Britain")).passed is True
    assert AnswerMatch().verify(TASK, solved("United Kingdom, France")).passed is False
    # commas inside a name do not split it when another separator lists the items
    film = Task(
        id="t", question="Films?", answers=("Arabian Nights", "Salò, or the 120 Days of Sodom")
    )
    assert (
        AnswerMatch().verify(film, solved("Arabian Nights; Salò, or the 120 Days of Sodom")).passed
        is True
    )
    assert AnswerMatch().verify(film, solved("Salò, or the 120 Days of Sodom")).passed is True
    assert (
        AnswerMatch(allow_lists=False).verify(TASK, solved("United Kingdom; Great Britain")).passed
        is False
    )


# --------------------------------------------------------------------------- evidence and process


def test_evidence_coverage_needs_every_path_entity_touched():
    r = EvidenceCoverage().verify(TASK, solved())
    assert (r.passed, r.score) == (True, 1.0)
    partial = solved()[:4] + [{"role": "assistant", "content": "<answer>United Kingdom</answer>"}]
    r = EvidenceCoverage().verify(TASK, partial)
    assert (r.passed, r.score) == (False, pytest.approx(2 / 3))
    assert r.detail == "2/3 path entities touched; missing 'uk'"


def test_touched_ids_come_from_the_context_when_the_loop_recorded_them():
    assert touched_entity_ids(solved()) == ["ada", "lon", "uk"]
    ctx = VerifyContext(touched_entity_ids=["ada"])
    assert EvidenceCoverage().verify(TASK, solved(), ctx).passed is False


def test_process_needs_one_tool_call_per_hop():
    assert ProcessCheck().verify(TASK, solved()).passed is True
    one_call = solved()[:4] + [{"role": "assistant", "content": "<answer>United Kingdom</answer>"}]
    r = ProcessCheck().verify(TASK, one_call)
    assert (r.passed, r.score, r.detail) == (
        False,
        0.5,
        "1 tool calls for 2 hops (at least 2 needed)",
    )
    assert ProcessCheck(min_calls_per_hop=2).verify(TASK, solved()).score == 0.5


def test_tool_call_validity_checks_arguments_against_the_schema():
    ctx = VerifyContext(registry=REGISTRY)
    assert ToolCallValidity().verify(TASK, solved(), ctx).passed is True
    bad = solved()
    bad[4] = call(1, "get_relations", {"entity": "lon"})
    r = ToolCallValidity().verify(TASK, bad, ctx)
    assert (r.passed, r.score) == (False, 0.5)
    assert (
        r.detail
        == "1/2 tool calls valid; first problem: invalid arguments for get_relations: Additional properties are not allowed ('entity' was unexpected)"
    )
    unparsed = ToolCallValidity().verify(
        TASK, solved(), VerifyContext(registry=REGISTRY, n_malformed=2)
    )
    assert (unparsed.passed, unparsed.score) == (False, 0.5)
    assert ToolCallValidity().verify(TASK, solved()).passed is None  # no registry: cannot decide


def test_no_shortcut_rejects_questions_that_contain_an_answer():
    assert NoShortcut().verify(TASK).passed is True
    leaky = Task(
        id="t2",
        question="Is the capital of the United Kingdom London?",
        answers=("United Kingdom",),
    )
    r = NoShortcut().verify(leaky)
    assert (r.passed, r.detail) == (False, "the question contains the answer 'United Kingdom'")
    # whole words only: "Ada" is not in "Adams"
    assert (
        NoShortcut()
        .verify(Task(id="t3", question="Who taught John Adams?", answers=("Ada",)))
        .passed
        is True
    )


def test_steps_and_messages_are_judged_the_same():
    steps = [
        Step.from_message(m, id=f"s{i}", trajectory_id="traj", idx=i)
        for i, m in enumerate(solved())
    ]
    for v in (AnswerMatch(), EvidenceCoverage(), ProcessCheck()):
        assert v.verify(TASK, list(reversed(steps))) == v.verify(TASK, solved())


# --------------------------------------------------------------------------- LLM judge


def test_judge_prompt_shows_question_references_and_candidate():
    messages = build_judge_prompt(TASK, "UK")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == (
        f"Question: {TASK.question}\nReference answers: United Kingdom; Great Britain\nCandidate answer: UK"
    )
    assert "VERDICT: CORRECT" in messages[0]["content"]


@pytest.mark.parametrize(
    ("reply", "passed", "reason"),
    [
        ("UK is the United Kingdom.\nVERDICT: CORRECT", True, "UK is the United Kingdom."),
        ("Different country.\nverdict: incorrect", False, "Different country."),
        (
            "<think>VERDICT: CORRECT</think>Not the same.\nVERDICT: **INCORRECT**",
            False,
            "Not the same.",
        ),
        ("VERDICT: INCORRECT ... wait. VERDICT: CORRECT", True, "no reason given"),
    ],
)
def test_judge_verdicts_are_parsed_from_the_last_verdict_line(reply, passed, reason):
    assert parse_judge_verdict(reply) == (passed, reason)


def test_a_judge_reply_without_verdict_is_undecided():
    passed, reason = parse_judge_verdict("I think so?")
    assert passed is None and reason == "the judge gave no verdict: 'I think so?'"


def test_judge_without_an_engine_cannot_decide():
    r = LLMJudge().verify(TASK, solved())
    assert (r.passed, r.detail) == (None, "no engine given to the LLM judge")
    assert LLMJudge(engine=object()).record().config == {"max_tokens": 256, "temperature": 0.0}


# --------------------------------------------------------------------------- suite


def test_default_suite_accepts_a_correct_grounded_trajectory_with_full_reward():
    suite = VerifierSuite.default()
    res = suite.evaluate(TASK, solved(), VerifyContext(registry=REGISTRY))
    assert res.accepted and res.reward == pytest.approx(1.0)
    assert res.failed == []
    assert list(res.results) == [
        "answer_match@1",
        "evidence_coverage@1",
        "no_shortcut@1",
        "process@1",
        "tool_call_validity@1",
    ]


def test_acceptance_needs_every_required_verifier_and_reward_mixes_outcome_and_process():
    suite = VerifierSuite.default()
    wrong = suite.evaluate(TASK, solved("France"), VerifyContext(registry=REGISTRY))
    assert not wrong.accepted and wrong.failed == ["answer_match@1"]
    assert wrong.reward == pytest.approx(0.2)  # process credit only

    lucky = [*solved()[:2], {"role": "assistant", "content": "<answer>United Kingdom</answer>"}]
    res = suite.evaluate(TASK, lucky, VerifyContext(registry=REGISTRY))
    assert not res.accepted and res.failed == ["evidence_coverage@1", "process@1"]
    assert res.reward == pytest.approx(0.8)

    custom = VerifierSuite(
        required=["answer_match"],
        optional=["process"],
        reward=RewardConfig(outcome_weight=1.0, process_weight=1.0, process=("process",)),
    )
    res = custom.evaluate(TASK, lucky)
    assert res.accepted and res.reward == pytest.approx(1.0)


def test_an_undecided_or_broken_required_verifier_rejects():
    class Broken(TrajectoryVerifier):
        name = "broken"

        def verify(self, task, trajectory, context=None) -> VerifierResult:
            raise RuntimeError("boom")

    suite = VerifierSuite(required=["answer_match", Broken()], reward=RewardConfig(process=()))
    res = suite.evaluate(TASK, solved())
    assert not res.accepted
    assert res.results["broken@1"] == VerifierResult(
        passed=None, score=0.0, detail="verifier error: RuntimeError: boom"
    )
    assert (
        VerifierSuite(required=["tool_call_validity", "answer_match"])
        .evaluate(TASK, solved())
        .accepted
        is False
    )


def test_suite_gives_verification_records_with_deterministic_ids():
    res = VerifierSuite.default().evaluate(TASK, solved(), VerifyContext(registry=REGISTRY))
    records = res.verifications("traj:r:task:1:0")
    assert [v.id for v in records][:2] == [
        "ver:traj:r:task:1:0:answer_match@1",
        "ver:traj:r:task:1:0:evidence_coverage@1",
    ]
    first = records[0]
    assert (first.verifier_id, first.subject_kind, first.passed, first.score) == (
        "answer_match@1",
        "Trajectory",
        True,
        1.0,
    )
    assert records == res.verifications("traj:r:task:1:0")


def test_suite_verifiers_persist_as_verifier_nodes(graph):
    suite = VerifierSuite.default(judge=LLMJudge())
    assert suite.persist(graph) == 6
    assert suite.persist(graph) == 6
    stored = graph.store.get_nodes("Verifier", ["process@1", "llm_judge@1"])
    assert [(v.kind, dict(v.config)) for v in stored] == [
        ("rule", {"min_calls_per_hop": 1}),
        ("llm", {"max_tokens": 256, "temperature": 0.0}),
    ]
    assert graph.store.count_nodes("Verifier") == 6
    assert build_verifier(stored[0]) == ProcessCheck()


def test_bad_suite_configuration_is_named():
    with pytest.raises(
        ValueError, match="RewardConfig names verifier 'process', which is not in the suite"
    ):
        VerifierSuite(required=["answer_match"], reward=RewardConfig(process=("process",)))
    with pytest.raises(ValueError, match="unknown verifier 'nonsense'"):
        build_verifier("nonsense@1")
    with pytest.raises(ValueError, match="verifier 'process' has version 1, not '9'"):
        build_verifier(Verifier.create(name="process", version="9"))
    with pytest.raises(ValueError, match="appears twice"):
        VerifierSuite(required=["answer_match", "answer_match"], reward=RewardConfig(process=()))
