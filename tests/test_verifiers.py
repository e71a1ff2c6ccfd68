"""Verifiers judge trajectories the way acceptance and rewards rely on."""

from __future__ import annotations

import json

import pytest

from kag.schema import Step, Task, Verifier
from selfplay.answers import answers_match, normalize_answer
from selfplay.rewards import RewardConfig, VerifierSuite
from selfplay.tools import ToolRegistry, tool
from selfplay.verifiers import (
    AnswerMatch,
    EvidenceCoverage,
    LLMJudge,
    NoShortcut,
    ProcessCheck,
    ToolCallValidity,
    ToolStepCheck,
    TrajectoryVerifier,
    VerifierResult,
    VerifyContext,
    answer_path_entities,
    build_judge_prompt,
    build_verifier,
    parse_judge_verdict,
    tool_steps,
    touched_entity_ids,
)

TASK = Task(
    id="task:1",
    question="Which country is the city where Ada Lovelace was born the capital of?",
    answers=("United Kingdom",),
    answer_ids=("uk",),
    hops=2,
    path={"entities": ["ada", "lon", "uk"], "relations": ["born_in", "capital_of"]},
)


@tool
def get_relations(entity_id: str, relation: str | None = None) -> dict:
    """Relations of an entity."""
    return {}


@tool
def search_entities(query: str, limit: int = 10) -> dict:
    """Entities by name."""
    return {}


REGISTRY = ToolRegistry([get_relations, search_entities])

#: a task with three answers: the films "Ada" starred in
FILMS = Task(
    id="task:films",
    question='Which films did "Ada" star in?',
    answers=("Arabian Nights", "Salò, or the 120 Days of Sodom", "Teorema"),
    answer_ids=("f1", "f2", "f3"),
    hops=1,
    path={"entities": ["ada", "f1"], "relations": ["starred_in"]},
)


def call(i: int, name: str, arguments: dict | str) -> dict:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": args}}
        ],
    }


def result(i: int, content: dict, name: str = "get_relations") -> dict:
    return {
        "role": "tool",
        "content": json.dumps(content),
        "tool_call_id": f"c{i}",
        "name": name,
    }


def answered(task: Task, answer: str) -> list[dict]:
    """A one-hop trajectory on `task`'s start that ends with `answer`."""
    start = task.path["entities"][0]
    rels = [
        {"relation": "starred_in", "id": i, "name": n}
        for i, n in zip(task.answer_ids, task.answers, strict=True)
    ]
    return [
        {"role": "user", "content": task.question},
        call(0, "get_relations", {"entity_id": start}),
        result(0, {"entity": {"id": start}, "relations": rels}),
        {"role": "assistant", "content": f"<answer>{answer}</answer>"},
    ]


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
        # symbols and initials are names, not punctuation
        ("C", "C++", False),
        ("C", "C#", False),
        ("c++", "C++", True),
        ("I", "A.I.", False),
        ("AI", "A.I.", True),
        ("U.S.A", "USA", True),
        ("Vitamin", "Vitamin A", False),
        ("Rock & Roll", "Rock and Roll", True),
        ("3.14", "314", False),
        ("1,000", "1000", True),
    ],
)
def test_answers_compare_after_normalising_case_punctuation_articles_and_spaces(
    candidate, gold, same
):
    assert answers_match(candidate, gold) is same


def test_normalize_answer_keeps_words_readable():
    assert (
        normalize_answer("The Lord of the Rings: The Two Towers") == "lord of the rings two towers"
    )
    assert normalize_answer("The The") == "the"  # a band whose whole name is an article stays


def test_answer_match_accepts_the_answer_from_the_final_answer_tag():
    r = AnswerMatch().verify(TASK, solved())
    assert (r.passed, r.score) == (True, 1.0)
    assert (
        r.detail
        == "1/1 listed items valid, 1/1 answers named (precision 1.00, recall 1.00) in 'the United Kingdom'"
    )


def test_answer_match_rejects_wrong_or_missing_answers_and_says_why():
    wrong = AnswerMatch().verify(TASK, solved("France"))
    assert (wrong.passed, wrong.score) == (False, 0.0)
    assert wrong.detail == "answer 'France' matches none of 'United Kingdom'"
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


def test_a_partial_answer_to_a_task_with_several_answers_is_rejected_with_its_f1():
    one = AnswerMatch().verify(FILMS, answered(FILMS, "Teorema"))
    assert one.passed is False
    assert one.score == pytest.approx(2 * 1.0 * (1 / 3) / (1 + 1 / 3))  # precision 1, recall 1/3
    assert one.checks == {"precision": True, "recall": False}
    every = AnswerMatch().verify(
        FILMS, answered(FILMS, "Arabian Nights; Salò, or the 120 Days of Sodom; Teorema")
    )
    assert (every.passed, every.score) == (True, 1.0)
    # recall is configurable: two of three is enough at min_recall 0.6
    two = AnswerMatch(min_recall=0.6).verify(FILMS, answered(FILMS, "Teorema\nArabian Nights"))
    assert two.passed is True and two.score == pytest.approx(0.8)


def test_listing_everything_is_rejected_for_its_wrong_items():
    shotgun = "Arabian Nights; Salò, or the 120 Days of Sodom; Teorema; Medea; Mamma Roma"
    r = AnswerMatch().verify(FILMS, answered(FILMS, shotgun))
    assert r.passed is False and r.checks == {"precision": False, "recall": True}
    assert r.score == pytest.approx(0.75)  # precision 3/5, recall 1
    assert (
        AnswerMatch(allow_lists=False).verify(FILMS, answered(FILMS, "Teorema; Medea")).score == 0
    )


def test_a_name_with_a_comma_is_one_item_and_bullets_are_dropped():
    film = Task(id="t", question="Film?", answers=("Salò, or the 120 Days of Sodom",))
    assert AnswerMatch().verify(film, solved("Salò, or the 120 Days of Sodom")).passed is True
    listed = "- Arabian Nights\n- Salò, or the 120 Days of Sodom\n- Teorema"
    assert AnswerMatch().verify(FILMS, answered(FILMS, listed)).passed is True


# --------------------------------------------------------------------------- evidence and process


def test_evidence_coverage_follows_the_hop_chain():
    r = EvidenceCoverage().verify(TASK, solved())
    assert (r.passed, r.score) == (True, 1.0)
    partial = solved()[:4] + [{"role": "assistant", "content": "<answer>United Kingdom</answer>"}]
    r = EvidenceCoverage().verify(TASK, partial)
    # ada acted on; lon only seen in an observation (never expanded); uk never reached
    assert (r.passed, r.score) == (False, pytest.approx(1 / 3))
    assert (
        r.detail == "1/3 entities of the hop chain reached by acting on them; missing 'lon', 'uk'"
    )


def test_ids_in_a_broad_search_result_are_not_evidence():
    hits = [{"id": e, "name": e} for e in ("ada", "lon", "uk", *(f"x{i}" for i in range(47)))]
    broad = [
        {"role": "user", "content": TASK.question},
        call(0, "search_entities", {"query": "a", "limit": 50}),
        result(0, {"query": "a", "results": hits}, name="search_entities"),
        {"role": "assistant", "content": "<answer>United Kingdom</answer>"},
    ]
    assert set(touched_entity_ids(broad)) >= {"ada", "lon", "uk"}  # seen, as TOUCHED records
    r = EvidenceCoverage().verify(TASK, broad)
    assert (r.passed, r.score) == (False, 0.0)


def test_an_imported_task_without_relations_needs_its_topic_acted_on():
    task = Task(id="t", question="Films of Ada?", answers=("Teorema",), path={"entities": ["ada"]})
    assert EvidenceCoverage().verify(task, answered(FILMS, "Teorema")).passed is True
    searched = [
        call(0, "search_entities", {"query": "Ada"}),
        result(0, {"results": [{"id": "ada"}]}),
    ]
    assert EvidenceCoverage().verify(task, searched).passed is False


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
    assert ToolCallValidity(max_invalid=1).verify(TASK, bad, ctx).passed is True
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
    # whole words only: "Ada" is not in "Adams"; but an underscore is a space, as in answers
    assert (
        NoShortcut()
        .verify(Task(id="t3", question="Who taught John Adams?", answers=("Ada",)))
        .passed
        is True
    )
    wessex = Task(id="t4", question='Start from "ethelbert_of_wessex".', answers=("wessex",))
    assert NoShortcut().verify(wessex).passed is False


def test_steps_and_messages_are_judged_the_same():
    steps = [
        Step.from_message(m, id=f"s{i}", trajectory_id="traj", idx=i)
        for i, m in enumerate(solved())
    ]
    for v in (AnswerMatch(), EvidenceCoverage(), ProcessCheck(), ToolStepCheck()):
        assert v.verify(TASK, list(reversed(steps))) == v.verify(TASK, solved())


# --------------------------------------------------------------------------- tool steps


def test_tool_steps_pair_each_result_with_its_call():
    steps = tool_steps(solved())
    assert [(s.index, s.name, s.acted_on, s.malformed) for s in steps] == [
        (3, "get_relations", ("ada",), False),
        (5, "get_relations", ("lon",), False),
    ]
    assert steps[1].observed == ("lon", "uk")


def test_step_checks_judge_validity_information_and_path():
    traj = solved()
    traj[4] = call(1, "get_relations", {"entity_id": "paris"})  # off the path
    traj[5] = result(1, {"error": "no entity with id 'paris'"})
    traj.insert(
        6,
        {
            "role": "tool",
            "content": '{"error": "malformed tool call: bad JSON"}',
            "tool_call_id": "malformed_2_0",
        },
    )
    steps = ToolStepCheck().verify_steps(TASK, traj, VerifyContext(registry=REGISTRY))
    assert sorted(steps) == [3, 5, 6]
    assert steps[3].passed is True and steps[3].checks == {
        "call_valid": True,
        "observation": True,
        "on_path": True,
    }
    assert steps[5].checks == {"call_valid": True, "observation": False, "on_path": False}
    assert steps[5].score == pytest.approx(1 / 3)
    assert (
        "the tool returned an error" in steps[5].detail and "lead to no answer" in steps[5].detail
    )
    assert steps[6].checks == {"call_valid": False, "observation": False, "on_path": None}
    assert steps[6].passed is False


def test_a_search_is_on_a_path_when_it_finds_an_entity_on_one():
    """A misspelt name finds the wrong entity: that search step fails `on_path`, so the process
    advantage blames the turn that made the mistake, not the correct calls after it."""
    found = [
        {"role": "user", "content": TASK.question},
        call(0, "search_entities", {"query": "Ada Lovelace"}),
        result(0, {"query": "Ada Lovelace", "results": [{"id": "ada", "name": "Ada"}]}),
        call(1, "search_entities", {"query": "Ada Lovelock"}),
        result(1, {"query": "Ada Lovelock", "results": [{"id": "bob", "name": "Ada Lovelock"}]}),
        call(2, "search_entities", {"query": "Nobody"}),
        result(2, {"query": "Nobody", "results": []}),
    ]
    steps = ToolStepCheck().verify_steps(TASK, found, VerifyContext(registry=REGISTRY))
    assert steps[2].checks["on_path"] is True and steps[2].score == 1.0
    assert steps[4].checks["on_path"] is False
    assert steps[4].score == pytest.approx(2 / 3)
    assert "none on a path to an answer" in steps[4].detail
    # a search that finds nothing is uninformative, and names no entity to place on a path
    assert steps[6].checks["on_path"] is None


def test_a_python_step_fails_when_its_code_uses_a_value_no_observation_gave():
    """The compute failure a small model makes: the id is right, the value copied wrong. The
    step check's `grounded` fails the python step that used it (and names the value), so the
    process advantage blames that turn; a right copy and code without data stay passing."""
    task = Task(
        id="task:sum",
        question='What is the total "population" of "Ada" and "Bo"?',
        answers=("24430133",),
        hops=1,
        path={"entities": ["ada", "bo"], "relations": []},
    )
    facts = [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": task.question},
        call(0, "get_entity", {"entity_id": "ada"}),
        result(0, {"id": "ada", "name": "Ada", "props": {"population": 24430058}}, "get_entity"),
        call(1, "get_entity", {"entity_id": "bo"}),
        result(1, {"id": "bo", "name": "Bo", "props": {"population": 75}}, "get_entity"),
    ]

    def python_step(code: str) -> dict:
        traj = [*facts, call(2, "python", {"code": code}), result(2, {"stdout": "1\n"}, "python")]
        return ToolStepCheck().verify_steps(task, traj)[7]

    right = python_step("print(sum([24430058, 75]))")
    assert right.checks["grounded"] is True and right.passed is True and right.score == 1.0
    wrong = python_step("print(sum([24430085, 75]))")
    assert wrong.checks["grounded"] is False and wrong.passed is False
    assert "24430085" in wrong.detail and "appear in no earlier message" in wrong.detail
    # without a registry call_valid is undecided, and a python call acts on no entity
    assert wrong.score == 0.5 and set(wrong.checks) == {
        "call_valid",
        "observation",
        "on_path",
        "grounded",
    }
    # a name in an argmax list counts as data too; the question's own words are seen
    named = python_step("values = [('Ada', 24430058), ('Bob', 75)]\nprint(max(values)[0])")
    assert named.checks["grounded"] is False and "'Bob'" in named.detail
    # nothing to decide: no data literal, or code that does not parse
    assert python_step("print(round(2 / 3, 2))").checks["grounded"] is None
    assert python_step("print(sum([24430058, 75)").checks["grounded"] is None
    # only python steps carry the check
    steps = ToolStepCheck().verify_steps(task, facts)
    assert all("grounded" not in s.checks for s in steps.values())


def test_answer_paths_follow_every_chain_that_still_reaches_an_answer(graph):
    graph.upsert_entities([{"id": i, "name": i} for i in ("ada", "lon", "bath", "uk", "fr")])
    graph.upsert_relations(
        [("ada", "born_in", "lon"), ("ada", "born_in", "bath"), ("lon", "capital_of", "uk")]
    )
    # bath is born_in-reachable but capital of nothing: not on a path to the answer
    assert answer_path_entities(graph.store, TASK) == frozenset({"ada", "lon", "uk"})
    assert answer_path_entities(graph.store, Task(id="t", question="q")) is None
    assert answer_path_entities(graph.store, TASK, max_frontier=1) is None


# --------------------------------------------------------------------------- LLM judge


def test_judge_prompt_shows_question_references_and_candidate():
    messages = build_judge_prompt(TASK, "UK")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == (
        f"Question: {TASK.question}\nReference answers: United Kingdom\nCandidate answer: UK"
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
    assert LLMJudge(engine=object()).record().config == {
        "constrained": False,
        "max_tokens": 256,
        "temperature": 0.0,
    }


# --------------------------------------------------------------------------- suite


def test_default_suite_accepts_a_correct_grounded_trajectory_with_full_reward():
    suite = VerifierSuite.default()
    res = suite.evaluate(TASK, solved(), VerifyContext(registry=REGISTRY))
    assert res.accepted and res.reward == pytest.approx(1.0)
    assert res.failed == []
    assert list(res.results) == [
        "answer_match@2",
        "evidence_coverage@2",
        "no_shortcut@1",
        "tool_call_validity@1",
        "process@1",
    ]
    assert sorted(res.steps) == [3, 5] and res.invalid_calls == 0


def test_rewards_keep_every_rejected_trajectory_below_every_accepted_one():
    suite = VerifierSuite.default()
    ctx = VerifyContext(registry=REGISTRY)
    wrong = suite.evaluate(TASK, solved("France"), ctx)
    assert not wrong.accepted and wrong.failed == ["answer_match@2"]
    assert wrong.reward == pytest.approx(0.45 * 0.2)  # process credit only, in the rejected band

    lucky = [*solved()[:2], {"role": "assistant", "content": "<answer>United Kingdom</answer>"}]
    res = suite.evaluate(TASK, lucky, ctx)
    assert not res.accepted and res.failed == ["evidence_coverage@2", "process@1"]
    # process: evidence 0, process 0, validity 1 (no call is invalid)
    assert res.reward == pytest.approx(0.45 * (0.8 + 0.2 / 3))

    # only no_shortcut fails: every other score is perfect, yet the reward stays below 0.5
    leaky = Task.from_dict(
        {
            **TASK.to_dict(),
            "question": "The city where Ada was born is capital of the United Kingdom?",
        }
    )
    res = suite.evaluate(leaky, solved(), ctx)
    assert res.failed == ["no_shortcut@1"] and res.reward == pytest.approx(0.45)

    # an accepted trajectory with an invalid call and weaker process still scores >= 0.5
    sloppy = solved()
    sloppy.insert(
        6, {"role": "tool", "content": '{"error": "malformed"}', "tool_call_id": "malformed_2_0"}
    )
    lenient = VerifierSuite(
        required=["answer_match"],
        optional=["tool_call_validity", "process"],
        steps=ToolStepCheck(),
        reward=RewardConfig(
            invalid_call_penalty=1.0, process=("process", "tool_call_validity", "tool_step")
        ),
    )
    res = lenient.evaluate(TASK, sloppy, ctx)
    assert res.accepted and res.invalid_calls == 1 and res.reward == pytest.approx(0.5)

    custom = VerifierSuite(
        required=["answer_match"],
        optional=["process"],
        reward=RewardConfig(outcome_weight=1.0, process_weight=1.0, process=("process",)),
    )
    res = custom.evaluate(TASK, lucky)
    assert res.accepted and res.reward == pytest.approx(0.5 + 0.5 * 0.5)  # quality (1 + 0) / 2


def test_invalid_calls_lower_the_reward_and_reject_by_default():
    ctx = VerifyContext(registry=REGISTRY)
    bad = solved()
    bad.insert(4, call(9, "get_relations", {"entity": "lon"}))
    bad.insert(5, result(9, {"error": "invalid arguments"}))
    res = VerifierSuite.default().evaluate(TASK, bad, ctx)
    clean = VerifierSuite.default().evaluate(TASK, solved(), ctx)
    assert not res.accepted and res.failed == ["tool_call_validity@1"]
    assert res.invalid_calls == 1 and res.reward < clean.reward


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
        "ver:traj:r:task:1:0:answer_match@2",
        "ver:traj:r:task:1:0:evidence_coverage@2",
    ]
    first = records[0]
    assert (first.verifier_id, first.subject_kind, first.passed, first.score) == (
        "answer_match@2",
        "Trajectory",
        True,
        1.0,
    )
    steps = [v for v in records if v.subject_kind == "Step"]
    assert [(v.id, v.subject_id, v.passed) for v in steps] == [
        ("ver:traj:r:task:1:0#003:tool_step@2", "traj:r:task:1:0#003", True),
        ("ver:traj:r:task:1:0#005:tool_step@2", "traj:r:task:1:0#005", True),
    ]
    assert steps[0].props["checks"] == {"call_valid": True, "observation": True, "on_path": True}
    assert records == res.verifications("traj:r:task:1:0")


def test_suite_verifiers_persist_as_verifier_nodes(graph):
    suite = VerifierSuite.default(judge=LLMJudge())
    assert suite.persist(graph) == 7
    assert suite.persist(graph) == 7
    stored = graph.store.get_nodes("Verifier", ["process@1", "llm_judge@1", "answer_match@2"])
    assert sorted((v.id, v.kind, dict(v.config)) for v in stored) == [
        ("answer_match@2", "rule", {"allow_lists": True, "min_precision": 1.0, "min_recall": 1.0}),
        ("llm_judge@1", "llm", {"constrained": False, "max_tokens": 256, "temperature": 0.0}),
        ("process@1", "rule", {"min_calls_per_hop": 1}),
    ]
    assert graph.store.count_nodes("Verifier") == 7
    by_id = {v.id: v for v in stored}
    assert build_verifier(by_id["process@1"]) == ProcessCheck()
    assert build_verifier(by_id["answer_match@2"]) == AnswerMatch()


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
    with pytest.raises(ValueError, match="rejected_max < accepted_min"):
        RewardConfig(rejected_max=0.6, accepted_min=0.5)
    with pytest.raises(ValueError, match=r"min_recall must be in \(0, 1\]"):
        AnswerMatch(min_recall=0)
