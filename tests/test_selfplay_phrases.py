"""Readable questions without a phrase file, and the guard on engine rewrites of questions."""

from __future__ import annotations

import pytest

import kag
from kag.schema import Task
from kag.world import RELATION_PHRASES, generate_world, write_world
from selfplay.answers import leaked_answer
from selfplay.phrases import infer_relation_phrase
from selfplay.proposer import (
    REWRITE_REFUSALS,
    Proposer,
    accept_rewrite,
    relation_phrase,
    render_question,
)
from selfplay.verifiers import NoShortcut
from tests.data import DATA_DIR

METAQA_KB = DATA_DIR / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt"


def _relation_names(dataset: str) -> list[str]:
    if dataset == "metaqa":
        lines = METAQA_KB.read_text(encoding="utf-8").splitlines()
        return sorted({line.split("|")[1] for line in lines if line.count("|") == 2})
    path = DATA_DIR / dataset / "relations.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize(("dataset", "count"), [("fb15k-237", 237), ("metaqa", 9), ("wn18rr", 11)])
def test_every_relation_of_the_real_data_sets_gets_a_readable_template(dataset, count):
    names = _relation_names(dataset)
    assert len(names) == count
    for name in names:
        phrase = infer_relation_phrase(name)
        assert phrase.count("{x}") == 1, (name, phrase)
        words = phrase.replace("{x}", "").split()
        assert words and all(w.isalnum() for w in words), (name, phrase)
        assert "_" not in phrase and "/" not in phrase, (name, phrase)
        assert infer_relation_phrase(name) == phrase  # deterministic
        question = render_question("Ada Lovelace", [phrase, phrase])
        assert question.startswith("What is ") and '"Ada Lovelace"' in question


@pytest.mark.parametrize(
    ("relation", "phrase"),
    [
        ("/people/person/spouse_s./people/marriage/spouse", "the spouse of {x}"),
        ("/people/person/gender", "the gender of {x}"),
        ("/film/film/directed_by", "the director of {x}"),
        ("/film/film/executive_produced_by", "the executive producer of {x}"),
        ("/film/film/costume_design_by", "the costume designer of {x}"),
        ("/film/film/film_format", "the format of {x}"),
        ("/people/person/place_of_birth", "the place of birth of {x}"),
        ("/location/location/contains", "the one that {x} contains"),
        ("/language/human_language/countries_spoken_in", "the countries {x} is spoken in"),
        ("/organization/organization_founder/organizations_founded",
         "the organizations founded by {x}"),
        ("/medicine/symptom/symptom_of", "the one that has {x} as a symptom"),
        ("/medicine/disease/notable_people_with_this_condition", "the notable people with {x}"),
        ("/film/film/estimated_budget./measurement_unit/dated_money_value/currency",
         "the currency of the estimated budget of {x}"),
        ("directed_by", "the director of {x}"),
        ("written_by", "the writer of {x}"),
        ("starred_actors", "the actors starring in {x}"),
        ("release_year", "the release year of {x}"),
        ("has_genre", "the genre of {x}"),
        ("has_tags", "the tags of {x}"),
        ("in_language", "the language of {x}"),
        ("_hypernym", "the hypernym of {x}"),
        ("_member_meronym", "the member meronym of {x}"),
        ("_derivationally_related_form", "the derivationally related form of {x}"),
        ("_similar_to", "something similar to {x}"),
        ("_member_of_domain_region", "the domain region that has {x} as a member"),
        ("born_in", "the one that {x} was born in"),
        ("located_in", "the one that {x} is located in"),
        ("starredIn", "the one that {x} starred in"),
    ],
)  # fmt: skip
def test_inferred_phrases_read_as_english(relation, phrase):
    assert infer_relation_phrase(relation) == phrase


def test_questions_nest_the_inferred_phrases():
    spouse = relation_phrase("/people/person/spouse_s./people/marriage/spouse")
    gender = relation_phrase("/people/person/gender")
    assert render_question("Ada", [spouse, gender]) == 'What is the gender of the spouse of "Ada"?'
    film = [relation_phrase(r) for r in ("starred_actors", "directed_by", "has_genre")]
    assert render_question("Jack Frost", film[1:]) == (
        'What is the genre of the director of "Jack Frost"?'
    )


def test_a_phrase_file_wins_and_the_synthetic_world_questions_do_not_change(sqlite_url):
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=3, size=300))
        # every relation of the world has its phrase: inference never applies there
        assert set(g.relation_types()) <= set(RELATION_PHRASES)
        tasks = Proposer(g).propose(20, hops=2, seed=1).tasks
        assert len(tasks) == 20
        for task in tasks:
            phrases = [RELATION_PHRASES[r] for r in task.path["relations"]]
            assert task.question == render_question(task.props["start_name"], phrases)
            assert task.props["phrases"] == phrases


def test_metaqa_tasks_read_as_nested_questions_and_name_no_answer(sqlite_url):
    lines = METAQA_KB.read_text(encoding="utf-8").splitlines()[:6000]
    triples = [tuple(line.split("|")) for line in lines if line.count("|") == 2]
    inverse = {"directed_by": "directed", "written_by": "wrote", "starred_actors": "starred_in"}
    triples += [(o, inverse[r], s) for s, r, o in triples if r in inverse]
    with kag.open(sqlite_url) as g:
        g.upsert_relations(triples, create_entities=True)
        tasks = Proposer(g).propose(10, hops=2, seed=0).tasks
    assert len(tasks) == 10
    for task in tasks:
        start = task.props["start_name"]
        assert task.question.startswith("What is the ") and task.question.endswith("?")
        assert f'"{start}"' in task.question
        assert "_" not in task.question.replace(start, "")
        assert leaked_answer(task.question, task.answers) is None
        assert NoShortcut().verify(task).passed is True


def _task() -> Task:
    return Task(
        id="task:t",
        question='What is the gender of the spouse of "Ada Lovelace"?',
        answers=("Female",),
        answer_ids=("gender:f2",),
        props={"start_name": "Ada Lovelace"},
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('What gender is the spouse of "Ada Lovelace"?', None),
        ('  Which gender did the partner of "Ada Lovelace" have?  ', None),
        ("", "empty"),
        ('Is the spouse of "Ada Lovelace" female?', "names_answer"),
        ('Is the spouse of "Ada Lovelace" of gender:f2?', "names_answer_id"),
        ("What is the gender of the spouse of Ada Lovelace?", "drops_start_name"),
        ('What is the gender of the spouse of "Ada"?', "drops_start_name"),
        ('What gender is the spouse of "Ada Lovelace"? ' * 6, "too_long"),
        ('The spouse of "Ada Lovelace" has a gender.', "not_one_question"),
        ('What gender?\nThe spouse of "Ada Lovelace"?', "not_one_question"),
    ],
)
def test_a_rewrite_is_kept_only_when_it_keeps_the_name_and_names_no_answer(text, kind):
    reason = accept_rewrite(_task(), text)
    if kind is None:
        assert reason is None
    else:
        assert reason is not None and reason.split(":", 1)[0] == kind
        assert kind in REWRITE_REFUSALS
