"""The instruction family: output constraints checked one by one, composed onto proposed and
imported tasks, met by the oracle, and broken replies rejected.

Every check runs on real parts: a generated world in SQLite, the proposer, the solver loop with
the real tool registry, the scorer with `selfplay.instruction.suite()`, write-back and export.
"""

from __future__ import annotations

import json
import random
import re

import polars as pl
import pytest

from exporters.exporter import export
from exporters.select import Selection
from kag.schema import Run, Task
from kag.taskfiles import TaskFileError
from kag.world import generate_world, write_world
from selfplay.answers import answer_items, score_answer
from selfplay.constraints import (
    CONSTRAINT_KINDS,
    FILLER,
    POSTSCRIPT_TEXT,
    BulletList,
    EndsWith,
    ForbiddenKeywords,
    JsonList,
    Lowercase,
    MaxSentences,
    MaxWords,
    MinSentences,
    MinWords,
    NoCommas,
    Postscript,
    Quotation,
    RequiredKeywords,
    StartsWith,
    Uppercase,
    check_reply,
    constraint_from_spec,
    count_sentences,
    count_words,
    parse_constraints,
    reply_text,
    satisfiable,
)
from selfplay.graph_tools import default_registry
from selfplay.instruction import (
    END_PHRASES,
    FORBIDDEN_WORDS,
    KEYWORDS,
    START_PHRASES,
    VERIFIER_ID,
    compose,
    compose_tasks,
    render_answer,
    suite,
)
from selfplay.oracle import OraclePolicy
from selfplay.parsing import extract_answer
from selfplay.proposer import Proposer, ProposerConfig
from selfplay.scoring import Scorer
from selfplay.solver import Solver, SolverConfig
from selfplay.taskimport import import_tasks
from selfplay.verifiers import InstructionFollowing, VerifyContext, build_verifier
from selfplay.writeback import write_rollouts, write_tasks

# --------------------------------------------------------------------------- one checker per kind

# (constraint, reply text, passes?) -- hand-written edge cases for every kind
CASES = [
    (JsonList(), '["Paris", "Lyon"]', True),
    (JsonList(), '```json\n["Paris"]\n```', True),
    (JsonList(), '["Paris"] is the answer', False),  # trailing text
    (JsonList(), 'Answer: ["Paris"]', False),  # leading text
    (JsonList(), '{"answers": ["Paris"]}', False),  # an object, not a list
    (JsonList(), "[1, 2]", False),  # not strings
    (JsonList(), "Paris; Lyon", False),
    (BulletList(n=2), "- Paris\n- Lyon", True),
    (BulletList(n=2), "* Paris\n* Lyon", True),
    (BulletList(n=2), "Found two:\n- Paris\n- Lyon\nDone.", True),  # prose lines are allowed
    (BulletList(n=2), "- Paris\n- Lyon\n- Nice", False),  # one too many
    (BulletList(n=2), "- Paris", False),
    (BulletList(n=2), "-Paris\n-Lyon", False),  # a bullet needs a space after its marker
    (BulletList(n=2), "Paris - Lyon - Nice", False),  # dashes inside a line are no bullets
    (MaxWords(n=3), "Jean-Paul Sartre", True),  # Jean, Paul, Sartre
    (MaxWords(n=2), "Jean-Paul Sartre", False),
    (MaxWords(n=2), "naïve café", True),  # accented letters are word characters
    (MinWords(n=3), "Jean-Paul Sartre", True),
    (MinWords(n=4), "Jean-Paul Sartre", False),
    (MinWords(n=1), "— ; …", False),  # punctuation is no word
    (MinSentences(n=3), "One. Two! Three?", True),
    (MinSentences(n=2), "Pi is 3.14 exactly.", False),  # a decimal point ends no sentence
    (MaxSentences(n=1), "Paris; Lyon", True),
    (MaxSentences(n=1), "Paris. Lyon.", False),
    (RequiredKeywords(words=("path",)), "I followed the PATH.", True),  # any case
    (RequiredKeywords(words=("path",)), "I followed a pathway.", False),  # whole words only
    (RequiredKeywords(words=("path", "graph")), "the path only", False),
    (RequiredKeywords(words=("straße",)), "DIE STRASSE", True),  # full Unicode case folding
    (ForbiddenKeywords(words=("maybe",)), "Maybelline is the answer", True),
    (ForbiddenKeywords(words=("maybe",)), "It is, Maybe, Paris", False),
    (Lowercase(), "paris; lyon", True),
    (Lowercase(), "école straße", True),
    (Lowercase(), "Paris", False),
    (Lowercase(), "ÉCOLE", False),
    (Lowercase(), "1990; 2000", False),  # no letters: nothing is in lowercase
    (Uppercase(), "PARIS; ÉCOLE; ΟΔΟΣ", True),  # any script
    (Uppercase(), "STRAßE", False),  # ß is a lowercase letter (its capital is SS)
    (Uppercase(), "STRASSE", True),
    (Uppercase(), "PARIS; lyon", False),
    (StartsWith(phrase="My answer is"), "my answer is Paris", True),
    (StartsWith(phrase="My answer is"), "So, my answer is Paris", False),
    (EndsWith(phrase="That is all."), "Paris. THAT IS ALL.", True),
    (EndsWith(phrase="That is all."), "Paris. That is all. Bye", False),  # nothing after it
    (NoCommas(), "Paris; Lyon", True),
    (NoCommas(), "Paris, Lyon", False),
    (NoCommas(), "Paris，Lyon", False),  # the full-width comma too
    (Quotation(), '"Paris; Lyon"', True),
    (Quotation(), '"Paris; Lyon', False),
    (Quotation(), '"', False),
    (Postscript(), "Paris\nP.S. Every hop was checked.", True),
    (Postscript(), "Paris\np.s. lowercase works too", True),
    (Postscript(), "Paris and P.S. inside a line", False),
]


def test_every_kind_has_hand_written_cases_that_pass_and_fail():
    seen = {(c.kind, ok) for c, _, ok in CASES}
    assert {k for k, _ in seen} == set(CONSTRAINT_KINDS)
    assert all((k, True) in seen and (k, False) in seen for k in CONSTRAINT_KINDS)


@pytest.mark.parametrize(
    ("constraint", "text", "expected"),
    CASES,
    ids=[f"{c.kind}-{i}" for i, (c, _, _) in enumerate(CASES)],
)
def test_checker_verdict_on_hand_written_reply(constraint, text, expected):
    passed, detail = constraint.check(text)
    assert passed is expected, detail
    assert detail  # every verdict says why


def test_word_and_sentence_counts_follow_ifeval_words_without_nltk():
    assert count_words("Jean-Paul's café, 3.5 km") == 7  # Jean, Paul, s, café, 3, 5, km
    assert count_words("") == 0
    assert count_sentences("Dr. No lives. Here") == 3  # no abbreviation list: documented
    assert count_sentences("Really?! Yes.") == 2


def test_reply_text_drops_reasoning_and_answer_tags_but_keeps_their_content():
    content = "<think>Draft: <answer>x</answer></think>Found: <answer>Paris; Lyon</answer>"
    assert reply_text(content) == "Found: Paris; Lyon"
    checks = check_reply([StartsWith(phrase="found"), Lowercase()], content)
    assert [c.passed for c in checks] == [True, False]


# --------------------------------------------------------------------------- specs


def test_every_constraint_round_trips_through_its_json_spec():
    rng = random.Random(0)
    for cls in CONSTRAINT_KINDS.values():
        c = _example(cls.kind, ["Paris", "Lyon"], rng)
        spec = c.to_spec()
        assert json.loads(json.dumps(spec)) == spec
        assert constraint_from_spec(spec) == c
    props = {"max_turns": 4, "instructions": [MaxWords(n=5).to_spec(), {"kind": "no_commas"}]}
    assert parse_constraints(props) == [MaxWords(n=5), NoCommas()]
    assert parse_constraints([{"kind": "uppercase"}]) == [Uppercase()]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "shout"}, "unknown constraint kind 'shout'"),
        ({"kind": "max_words", "n": 0}, "n must be a positive integer"),
        ({"kind": "max_words", "n": True}, "n must be a positive integer"),
        ({"kind": "max_words"}, "takes ['n']"),
        ({"kind": "uppercase", "n": 3}, "takes no params"),
        ({"kind": "required_keywords", "words": "graph"}, "non-empty list of strings"),
        ({"kind": "required_keywords", "words": ["two words"]}, "must be one word"),
        ({"kind": "forbidden_keywords", "words": ["maybe", "MAYBE"]}, "appears twice"),
        ({"kind": "starts_with", "phrase": " "}, "phrase must be non-empty"),
        ({"n": 3}, 'an object with a "kind"'),
    ],
)
def test_bad_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_constraints({"instructions": [spec]})
    with pytest.raises(ValueError, match=re.escape("constraints.instructions[0]")):
        parse_constraints({"instructions": [spec]})


# --------------------------------------------------------------------------- answer_match reads them


def test_answer_items_read_json_and_bullet_lists_whatever_the_names_hold():
    assert answer_items('["Salò, or the 120 Days", "Rome"]') == ["Salò, or the 120 Days", "Rome"]
    assert answer_items('```json\n["Paris", "Lyon"]\n```') == ["Paris", "Lyon"]
    assert answer_items("- Lyon; Rhône\n- Paris") == ["Lyon; Rhône", "Paris"]
    assert answer_items("* Paris\n* Paris") == ["Paris"]  # repeated items count once
    assert answer_items("[1990, 2000]") == ["1990", "2000"]
    # not a list of names: read as text, as before
    assert answer_items('{"a": "Paris"}; Lyon', ["Lyon"]) == ['{"a": "Paris"}', "Lyon"]
    mixed = answer_items("- Paris; Rhône\nLyon", ["Paris; Rhône", "Lyon"])  # the best split
    assert mixed == ["Paris; Rhône", "Lyon"]


@pytest.mark.parametrize(
    "reply",
    [
        '["PARIS", "LYON"]',
        "- paris\n- lyon",
        "PARIS; LYON",
        "paris | lyon",
    ],
)
def test_case_and_list_formats_never_hide_the_answers(reply):
    s = score_answer(reply, ["Paris", "Lyon"])
    assert (s.precision, s.recall) == (1.0, 1.0)


# --------------------------------------------------------------------------- compose


def _task(answers=("Paris", "Lyon"), **kw) -> Task:
    return Task(
        id=kw.pop("id", "task:base"),
        question=kw.pop(
            "question", 'Start from "Ada" and follow "lived in". Which entities do you reach?'
        ),
        answers=tuple(answers),
        path={"entities": ["ada", "paris"], "relations": ["lived_in"]},
        hops=1,
        props={"start_name": "Ada", "verifiers": ["answer_match@2"], **kw.pop("props", {})},
        **kw,
    )


def test_compose_is_deterministic_and_keeps_what_answer_match_and_evidence_read():
    base = _task()
    a, b = compose(base, rng=7), compose(base, rng=7)
    assert a == b
    assert a.family == "instruction" and a.id != base.id and a.id.startswith("task:")
    assert (a.answers, a.answer_ids, a.path, a.hops) == (
        base.answers,
        base.answer_ids,
        base.path,
        1,
    )
    assert a.question.startswith(base.question) and len(a.question) > len(base.question)
    assert a.props["base_family"] == "search" and a.props["base_task_id"] == base.id
    assert a.props["verifiers"] == ["answer_match@2", VERIFIER_ID]
    specs = a.props["constraints"]["instructions"]
    assert len(specs) == 2 and len({s["kind"] for s in specs}) == 2
    for c in parse_constraints(a.props["constraints"]):
        assert c.instruction() in a.question
    # other seeds choose other sets, each with its own id
    ids = {compose(base, rng=s).id for s in range(20)}
    assert len(ids) > 10
    # given constraints give the same task whatever the rng
    given = [Uppercase(), MaxWords(n=20)]
    assert compose(base, given, rng=1) == compose(base, given, rng=2)


def test_compose_keeps_other_constraints_of_the_base_task():
    composed = compose(_task(props={"constraints": {"max_turns": 4}}), [NoCommas()])
    assert composed.props["constraints"] == {
        "max_turns": 4,
        "instructions": [{"kind": "no_commas"}],
    }


@pytest.mark.parametrize(
    ("answers", "constraints", "message"),
    [
        (("Paris",), [Uppercase(), Lowercase()], "never composed"),
        (("Paris",), [JsonList(), StartsWith(phrase="Hi")], "never composed"),
        (("Paris",), [MaxWords(n=5), MaxWords(n=9)], "appears twice"),
        (("Paris", "Lyon"), [JsonList(), NoCommas()], "no_commas: 1 comma"),
        (("Paris", "Lyon", "Nice"), [MaxWords(n=2)], "max_words: 3 words"),
        (("Paris", "Lyon"), [BulletList(n=3)], "bullet_list: 2 bullet lines"),
        (("Salò, or the 120 Days",), [NoCommas()], "no_commas"),
        (("Maybe Baby",), [ForbiddenKeywords(words=("maybe",))], "forbidden_keywords"),
        (("Paris",), [MinWords(n=30), MaxWords(n=20)], "max_words"),
        (("Words",), [MaxWords(n=10)], "name the answer 'Words'"),  # a shortcut question
    ],
)
def test_compose_refuses_sets_that_cannot_hold_with_the_answers(answers, constraints, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compose(_task(answers), constraints)


def test_compose_refuses_instruction_tasks_and_tasks_without_answers():
    composed = compose(_task(), [NoCommas()])
    with pytest.raises(ValueError, match="already an instruction task"):
        compose(composed, [Uppercase()])
    with pytest.raises(ValueError, match="no answers"):
        compose(_task(answers=()), [Uppercase()])


def test_the_oracle_vocabulary_never_holds_a_forbidden_word_or_a_comma():
    own = " ".join([*FILLER, POSTSCRIPT_TEXT, *START_PHRASES, *END_PHRASES, "I checked the and"])
    words = {w.casefold() for w in re.findall(r"\w+", own)}
    assert not words & set(FORBIDDEN_WORDS)
    assert not set(KEYWORDS) & set(FORBIDDEN_WORDS)
    assert "," not in own


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=11, size=300)


def _world_answer_sets(world, n: int = 60) -> list[tuple[str, ...]]:
    """Answer sets of real shape: 1-4 entity names of a generated world."""
    entities = world[0]
    names = [e.name for e in entities]
    rng = random.Random(3)
    sets = [tuple(rng.sample(names, rng.randint(1, 4))) for _ in range(n)]
    # and the awkward names the world lacks: commas, semicolons, non-Latin, a forbidden word
    sets += [
        ("Salò, or the 120 Days of Sodom",),
        ("Lyon; Rhône", "Straße"),
        ("Москва", "東京"),
        ("Maybe Baby", "İstanbul"),
        ("3.14",),
    ]
    return sets


def test_chosen_constraints_always_hold_with_the_answers_over_many_seeds(world):
    kinds_seen: set[str] = set()
    for i, answers in enumerate(_world_answer_sets(world)):
        base = _task(answers, id=f"task:{i}")
        for seed in range(12):
            for n in (1, 2, 3):
                task = compose(base, rng=seed, n_constraints=n)
                constraints = parse_constraints(task.props["constraints"])
                assert 1 <= len(constraints) <= n
                kinds_seen.update(c.kind for c in constraints)
                # the witness the oracle writes meets every constraint and names every answer
                reply = render_answer(task, task.answers)
                failed = [r for r in check_reply(constraints, reply) if not r.passed]
                assert not failed, (answers, [c.to_spec() for c in constraints], reply, failed)
                s = score_answer(extract_answer(reply) or "", task.answers)
                assert (s.precision, s.recall) == (1.0, 1.0), reply
                assert satisfiable(task.answers, constraints) == []
    assert kinds_seen == set(CONSTRAINT_KINDS)


# --------------------------------------------------------------------------- oracle, verifier, export


def _proposed(graph, registry, *, n: int, hops: int, seed: int) -> list[Task]:
    proposer = Proposer(graph, config=ProposerConfig(verifiers=tuple(suite().ids)))
    return proposer.propose(n, hops=hops, seed=seed).tasks


@pytest.fixture
def gold(sqlite_url, world, tmp_path):
    """A world graph with 24 composed tasks (2 and 3 hops) and the oracle's scored rollouts."""
    import kag

    graph = kag.open(sqlite_url)
    write_world(graph, *world)
    registry = default_registry(graph, sandbox=None)
    registry.persist(graph.store)
    scorer = Scorer(registry, suite=suite(), store=graph.store)
    scorer.persist(graph.store)
    base = _proposed(graph, registry, n=12, hops=2, seed=1)
    base += _proposed(graph, registry, n=12, hops=3, seed=2)
    tasks = compose_tasks(base, seed=5, n_constraints=2)
    assert len(tasks) == len(base) == 24
    write_tasks(graph.store, tasks)
    rollouts = Solver(OraclePolicy(), registry, config=SolverConfig(max_turns=8)).solve(
        tasks, run_id="gold"
    )
    scored = scorer.score(rollouts)
    yield graph, registry, base, tasks, rollouts, scored
    graph.close()


def test_the_oracle_meets_every_composed_task_at_full_accept_through_solver_and_scorer(gold):
    graph, _, _, tasks, rollouts, scored = gold
    assert [s.verdict for s in scored] == ["accepted"] * len(tasks)
    assert {s.reward for s in scored} == {1.0}
    for s in scored:
        by_id = {v.verifier_id: v for v in s.verifications}
        assert by_id[VERIFIER_ID].passed is True and by_id[VERIFIER_ID].props["required"] is True
        assert by_id["answer_match@2"].passed and by_id["evidence_coverage@2"].passed
        kinds = [c["kind"] for c in s.rollout.task.props["constraints"]["instructions"]]
        assert by_id[VERIFIER_ID].props["checks"] == dict.fromkeys(kinds, True)
    assert {r.status for r in rollouts} == {"completed"}


def test_instruction_trajectories_are_written_and_exported_with_their_family(gold, tmp_path):
    graph, _, _, tasks, _, scored = gold
    write_rollouts(graph.store, scored, run=Run(id="gold", kind="selfplay", status="completed"))
    stored = graph.store.get_nodes("Task", [t.id for t in tasks])
    assert {t.family for t in stored} == {"instruction"}
    checked = {e.target for e in graph.edges("CHECKED_BY", source=[t.id for t in tasks])}
    assert VERIFIER_ID in checked
    export("sft", tmp_path / "sft", graph=graph, selection=Selection(family=("instruction",)))
    rows = pl.read_parquet(tmp_path / "sft" / "data" / "*.parquet").to_dicts()
    assert len(rows) == len(tasks)
    assert {r["family"] for r in rows} == {"instruction"}
    by_task = {t.id: t for t in tasks}
    for row in rows:
        task = by_task[row["task_id"]]
        assert row["messages"][1]["content"] == task.question  # the instructions are in the prompt
        final = row["messages"][-1]["content"]
        constraints = parse_constraints(task.props["constraints"])
        assert all(r.passed for r in check_reply(constraints, final))


# one reply per kind with the right entities that breaks that constraint
def _broken(kind: str, names: list[str]) -> str:
    plain = "; ".join(names)
    return {
        "json_list": f"<answer>{plain}</answer>",
        "bullet_list": f"<answer>{plain}</answer>",
        "min_words": f"<answer>{plain}</answer>",
        "max_words": f"<answer>{plain}</answer> " + " ".join(FILLER * 4),
        "min_sentences": f"<answer>{plain}</answer>",
        "max_sentences": f"<answer>{plain}</answer> " + " ".join(FILLER * 4),
        "required_keywords": f"<answer>{plain}</answer>",
        "forbidden_keywords": f"{' '.join(FORBIDDEN_WORDS).capitalize()}: <answer>{plain}</answer>",
        "lowercase": f"Found: <answer>{plain.lower()}</answer>",
        "uppercase": f"found: <answer>{plain.upper()}</answer>",
        "starts_with": f"<answer>{plain}</answer>",
        "ends_with": f"<answer>{plain}</answer>",
        "no_commas": f"Found them, here: <answer>{plain}</answer>",
        "quotation": f"<answer>{plain}</answer>",
        "postscript": f"<answer>{plain}</answer>",
    }[kind]


def _with_final(messages: list[dict], content: str) -> list[dict]:
    return [*messages[:-1], {**messages[-1], "content": content}]


@pytest.mark.parametrize("kind", sorted(CONSTRAINT_KINDS))
def test_a_reply_that_names_the_answers_but_breaks_a_constraint_is_rejected(gold, kind):
    _, registry, bases, _, rollouts, _ = gold
    # a task with several answers where the kind allows it (a comma needs two names to break)
    rollout = max(rollouts, key=lambda r: len(r.task.answers))
    base = next(b for b in bases if b.id == rollout.task.props["base_task_id"])
    names = list(dict.fromkeys(rollout.task.answers))
    constraint = _example(kind, names, random.Random(kind))
    task = compose(base, [constraint])
    gold_messages = _with_final(rollout.messages, render_answer(task, names))
    bad_messages = _with_final(rollout.messages, _broken(kind, names))
    s = suite()
    context = VerifyContext(registry=registry)
    good = s.evaluate(task, gold_messages, context)
    bad = s.evaluate(task, bad_messages, context)
    assert good.accepted and good.reward == 1.0
    assert bad.results["answer_match@2"].passed is True  # the right entities ...
    assert bad.results[VERIFIER_ID].passed is False  # ... but the constraint is broken
    assert bad.results[VERIFIER_ID].checks == {kind: False}
    assert not bad.accepted and bad.reward < good.reward and bad.reward <= 0.45


def test_a_reply_that_meets_the_constraints_with_wrong_entities_is_rejected(gold):
    _, registry, _, _, rollouts, _ = gold
    rollout = rollouts[0]
    task = rollout.task
    wrong = render_answer(task, ["Nobody In Particular"])
    r = suite().evaluate(
        task, _with_final(rollout.messages, wrong), VerifyContext(registry=registry)
    )
    assert r.results[VERIFIER_ID].passed is True
    assert r.results["answer_match@2"].passed is False and not r.accepted


def test_partial_compliance_scores_its_share_and_ranks_above_none():
    task = compose(_task(("Paris",)), [Uppercase(), NoCommas(), EndsWith(phrase="Done.")])
    v = InstructionFollowing()
    msgs = lambda content: [{"role": "assistant", "content": content}]  # noqa: E731
    two = v.verify(task, msgs("PARIS, <answer>PARIS</answer> DONE."))
    one = v.verify(task, msgs("Paris, <answer>Paris</answer> done."))
    assert (two.passed, two.score, one.score) == (False, 2 / 3, 1 / 3)
    assert two.checks == {"uppercase": True, "no_commas": False, "ends_with": True}
    assert "no_commas: 1 comma" in two.detail
    no_answer = v.verify(task, msgs("PARIS DONE."))
    assert (no_answer.passed, no_answer.score) == (False, 0.0)


def test_the_verifier_on_tasks_without_constraints_and_with_unreadable_ones():
    v = build_verifier("instruction_following@1")
    assert isinstance(v, InstructionFollowing)
    msgs = [{"role": "assistant", "content": "<answer>Paris</answer>"}]
    assert v.verify(_task(), msgs).passed is True  # a search task asks for nothing
    bare = Task(id="t", question="q?", answers=("Paris",), family="instruction")
    assert v.verify(bare, msgs).passed is None
    broken = _task(props={"constraints": {"instructions": [{"kind": "shout"}]}})
    r = v.verify(broken, msgs)
    assert r.passed is None and "unknown constraint kind 'shout'" in r.detail


# --------------------------------------------------------------------------- imported tasks


def test_an_imported_task_with_constraints_is_checked_the_same_way(sqlite_url, tmp_path):
    import kag

    graph = kag.open(sqlite_url)
    graph.upsert_entities(
        [
            {"id": "ada", "name": "Ada Lovelace"},
            {"id": "london", "name": "London"},
            {"id": "england", "name": "England"},
        ]
    )
    graph.upsert_relations([("ada", "born_in", "london"), ("london", "located_in", "england")])
    instructions = [
        {"kind": "uppercase"},
        {"kind": "ends_with", "phrase": "That is all."},
        {"kind": "max_words", "n": 8},
    ]
    row = {
        "id": "q-ada",
        "question": "Where was the birthplace of [Ada Lovelace] located?",
        "answers": ["England"],
        "path": {"entities": ["ada", "london", "england"], "relations": ["born_in", "located_in"]},
        "family": "instruction",
        "constraints": {"max_turns": 4, "instructions": instructions},
    }
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    s = suite()
    report = import_tasks(graph, [path], verifiers=s.records())
    assert report.imported == 1
    (task,) = graph.store.get_nodes("Task", ["q-ada"])
    assert parse_constraints(task.props["constraints"]) == [
        Uppercase(),
        EndsWith(phrase="That is all."),
        MaxWords(n=8),
    ]
    registry = default_registry(graph, sandbox=None)
    (rollout,) = Solver(OraclePolicy(), registry).solve([task], run_id="imported")
    (scored,) = Scorer(registry, suite=s, store=graph.store).score([rollout])
    assert scored.verdict == "accepted" and scored.reward == 1.0
    final = rollout.messages[-1]["content"]
    assert final == "<answer>ENGLAND</answer>\nTHAT IS ALL."
    context = VerifyContext(registry=registry)
    for bad in (
        "<answer>England</answer>\nThat is all.",  # not in capitals
        "<answer>ENGLAND</answer>",  # no end phrase
        "<answer>ENGLAND</answer>\nTHE START WAS FOUND AND EVERY HOP FOLLOWED. THAT IS ALL.",
    ):
        r = s.evaluate(task, _with_final(rollout.messages, bad), context)
        assert r.results["answer_match@2"].passed and not r.accepted, bad
    graph.close()


def test_an_imported_row_whose_constraints_do_not_read_is_an_error_naming_file_and_line(
    sqlite_url, tmp_path
):
    import kag

    graph = kag.open(sqlite_url)
    graph.upsert_entities(
        [{"id": "ada", "name": "Ada Lovelace"}, {"id": "london", "name": "London"}]
    )
    rows = [
        {"question": "Where was [Ada Lovelace] born?", "answers": ["London"]},
        {
            "question": "Where was [Ada Lovelace] born?",
            "answers": ["London"],
            "constraints": {"instructions": [{"kind": "max_words", "n": -1}]},
        },
    ]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(TaskFileError) as err:
        import_tasks(graph, [path])
    assert "tasks.jsonl line 2, field 'constraints': constraints.instructions[0]: constraint " in (
        str(err.value)
    )
    assert "'max_words': n must be a positive integer, got -1" in str(err.value)
    assert graph.count("Task") == 0  # nothing half-written
    graph.close()


# --------------------------------------------------------------------------- helpers


def _example(kind: str, answers, rng: random.Random):
    """A constraint of `kind` that holds with `answers` (as compose would choose it)."""
    return {
        "json_list": lambda: JsonList(),
        "bullet_list": lambda: BulletList(n=len(dict.fromkeys(answers))),
        "min_words": lambda: MinWords(n=25),
        "max_words": lambda: MaxWords(n=count_words(" ".join(answers)) + 4),
        "min_sentences": lambda: MinSentences(n=3),
        "max_sentences": lambda: MaxSentences(n=1),
        "required_keywords": lambda: RequiredKeywords(words=("graph", "path")),
        "forbidden_keywords": lambda: ForbiddenKeywords(words=("maybe", "perhaps")),
        "lowercase": lambda: Lowercase(),
        "uppercase": lambda: Uppercase(),
        "starts_with": lambda: StartsWith(phrase=rng.choice(START_PHRASES)),
        "ends_with": lambda: EndsWith(phrase=rng.choice(END_PHRASES)),
        "no_commas": lambda: NoCommas(),
        "quotation": lambda: Quotation(),
        "postscript": lambda: Postscript(),
    }[kind]()
