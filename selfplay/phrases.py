"""Question phrases for relations that have none: `infer_relation_phrase` reads a relation's name.

A graph's phrase file (`kag import triples --relations`, `set_relation_phrases`) always wins; for
the other relations this gives a `{x}` template, so questions nest readably ("What is the gender of
the spouse of "Ada"?") instead of listing relation names to follow. Rule-based and deterministic:
no model, the same name always gives the same phrase.

>>> infer_relation_phrase("/people/person/spouse_s./people/marriage/spouse")
'the spouse of {x}'
>>> infer_relation_phrase("directed_by"), infer_relation_phrase("_hypernym")
('the director of {x}', 'the hypernym of {x}')

`infer_inverse_phrase` does the same for an inverse walk step `~r` (`kag.walks.parse_step`): the
`{x}` template of the entities that have `{x}` as their `r`, e.g. `directed_by` -> "a film directed
by {x}", `/location/location/contains` -> "a location that contains {x}".

>>> infer_inverse_phrase("starred_actors"), infer_inverse_phrase("/people/person/gender")
('a film starring {x}', 'a person whose gender is {x}')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["infer_inverse_phrase", "infer_relation_phrase"]


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# words that end a name and link it to its object ("lives_in", "similar_to")
_PREPOSITIONS = _word_set(
    "in at on from to for with into within about under near over as via against after before "
    "through onto among between across around"
)
# leading words that add nothing to a noun phrase ("has_genre", "in_language", "is_part_of")
_LEADING = frozenset({"has", "have", "is", "are", "in"})
# verbs in the third person, as relation names use them ("contains", "lives_in")
_VERBS_3RD = _word_set(
    "contains includes borders adjoins owns employs produces influences follows precedes "
    "succeeds speaks uses requires causes treats hosts governs publishes directs writes creates "
    "knows likes loves hates sponsors supports manages leads lives works plays belongs resides "
    "participates competes appears stars acts sings teaches serves flows runs refers points "
    "links relates depends reports studies attends joins visits"
)
# past participles and past forms that do not end in -ed
_IRREGULAR = _word_set(
    "written wrote born made done drawn sung sang shown known held led run taken given chosen "
    "won sold told built bought brought split set spoken broken kept sent spent struck taught "
    "thought worn grown hidden ridden driven eaten fallen frozen begun beaten blown flown "
    "thrown sworn torn stolen became become came fought grew sank swum"
)
# participles used actively: "the film that {x} starred in", not "... is starred in"
_ACTIVE = _word_set(
    "starred acted lived worked played died studied appeared performed participated competed "
    "served resided fought graduated majored specialised specialized stayed traveled travelled "
    "moved grew sang voted wrote came became dated"
)
# participles of past events: "the city {x} was born in", not "... is born in"
_EVENT = _word_set(
    "born buried married founded educated raised released established formed killed baptized "
    "elected drafted signed trained discovered invented built created recorded filmed published"
)
# adjectives that link to an object: "something similar to {x}"
_ADJECTIVES = _word_set(
    "similar adjacent next close equal identical equivalent opposite near parallel subordinate "
    "superior inferior prior"
)
# "directed_by" -> the agent noun of the participle
_AGENTS = {
    "directed": "director", "written": "writer", "produced": "producer", "edited": "editor",
    "composed": "composer", "created": "creator", "founded": "founder", "designed": "designer",
    "published": "publisher", "distributed": "distributor", "owned": "owner",
    "narrated": "narrator", "illustrated": "illustrator", "translated": "translator",
    "invented": "inventor", "developed": "developer", "managed": "manager", "led": "leader",
    "coached": "coach", "painted": "painter", "sung": "singer", "performed": "performer",
    "played": "player", "hosted": "host", "governed": "governor", "photographed": "photographer",
    "choreographed": "choreographer", "animated": "animator", "sponsored": "sponsor",
    "operated": "operator", "presented": "presenter", "discovered": "discoverer",
    "organized": "organizer", "organised": "organiser", "built": "builder", "taught": "teacher",
    "adapted": "adapter", "recorded": "recorder", "conducted": "conductor", "funded": "funder",
}  # fmt: skip
# "costume_design_by" -> the agent noun of the activity
_ACTIVITY_AGENTS = {
    "design": "designer", "direction": "director", "production": "producer", "music": "composer",
    "screenplay": "screenwriter", "cinematography": "cinematographer", "editing": "editor",
    "photography": "photographer", "choreography": "choreographer", "illustration": "illustrator",
    "translation": "translator", "narration": "narrator", "composition": "composer",
    "animation": "animator", "lyrics": "lyricist",
}  # fmt: skip
# "member_of_domain_usage": the first word names what {x} is of the rest
_RELATIONAL = _word_set(
    "member instance part subclass subset component capital symptom specialization "
    "specialisation subsidiary citizen"
)
# nouns that a participle describes the place or time of: "place_founded"
_PLACE_TIME = frozenset(["place", "location", "city", "country", "venue", "date", "year", "time"])
# participles whose object is not an agent: "entity_involved" -> "the entity involved in {x}"
_PARTICIPLE_PREPS = {"involved": "in", "located": "in", "based": "in", "included": "in"}
# names whose words no rule reads well
_IDIOMS = {
    "also see": "a word related to {x}",
    "starred actors": "the actors starring in {x}",
    "is a": "the class of {x}",
    "same as": "the same thing as {x}",
}
# Freebase CVT paths ".../a./measurement_unit/dated_money_value/currency": the value describes
# the first half ("the currency of the net worth of {x}"), so both halves are read
_MEASURE_DOMAINS = frozenset({"measurement_unit"})


def _words(segment: str) -> list[str]:
    """Lower-case words of one name segment: camelCase and `_`/`-` split, a lone `s` dropped."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", segment).lower()
    return [w for w in re.findall(r"[^\W_]+", text) if w != "s"]


def _segments(part: str) -> list[str]:
    return [s for s in re.split(r"[/.:#]+", part) if s.strip()]


def _is_participle(word: str) -> bool:
    return word in _IRREGULAR or (
        len(word) > 4 and word.endswith("ed") and not word.endswith("eed")
    )


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _be(participle: str) -> str:
    if participle in _ACTIVE:
        return ""
    return "was " if participle in _EVENT else "is "


def _from_words(words: list[str]) -> str:
    """The `{x}` template of a relation's words (the rules of `infer_relation_phrase`)."""
    text = " ".join(words)
    if text in _IDIOMS:
        return _IDIOMS[text]
    if len(words) > 1 and words[0] in _LEADING:
        return _from_words(words[1:])
    last, rest = words[-1], words[:-1]
    if len(words) >= 3 and words[-2] == "this" and words[-3] in _PREPOSITIONS:
        return f"the {' '.join(words[:-2])} {{x}}"  # "people_with_this_condition"
    if last == "by" and rest:
        head, mods = rest[-1], rest[:-1]
        lead = f"{' '.join(mods)} " if mods else ""
        if _is_participle(head):
            if head in _AGENTS:
                return f"the {lead}{_AGENTS[head]} of {{x}}"
            return f"the one that {lead}{head} {{x}}"
        if head in _ACTIVITY_AGENTS:
            return f"the {lead}{_ACTIVITY_AGENTS[head]} of {{x}}"
        return f"the one behind the {' '.join(rest)} of {{x}}"
    if len(words) > 2 and words[0] in _RELATIONAL and words[1] == "of":
        return f"the {' '.join(words[2:])} that has {{x}} as {_article(words[0])} {words[0]}"
    if last == "of" and rest and not _is_participle(rest[-1]):
        noun = " ".join(rest)
        return f"the one that has {{x}} as {_article(noun)} {noun}"
    if (last in _PREPOSITIONS or last == "of") and rest:
        head, before = rest[-1], rest[:-1]
        if head in _ADJECTIVES and not before:
            return f"something {head} {last} {{x}}"
        if head in _VERBS_3RD and all(w.endswith("ly") for w in before):
            return f"the one that {{x}} {' '.join(rest)} {last}"
        if _is_participle(head):
            adverbs = [w for w in before if w.endswith("ly")]
            nouns = [w for w in before if not w.endswith("ly")]
            subject = f"the {' '.join(nouns)}" if nouns else "the one that"
            verb = " ".join([*adverbs, head])
            return f"{subject} {{x}} {_be(head)}{verb} {last}"
        return f"the {' '.join(rest)} {last} {{x}}"  # "countries_within"
    if (last in _VERBS_3RD or _is_participle(last)) and all(w.endswith("ly") for w in rest):
        return f"the one that {{x}} {text}"  # "contains", "partially_contains", "directed"
    if len(words) > 1 and _is_participle(last):
        noun = " ".join(rest)
        if rest[-1] in _PLACE_TIME:  # "place_founded"
            where = "when" if rest[-1] in ("date", "year", "time") else "where"
            return f"the {noun} {where} {{x}} {_be(last)}{last}"
        return f"the {noun} {last} {_PARTICIPLE_PREPS.get(last, 'by')} {{x}}"  # "films_distributed"
    return f"the {text} of {{x}}"


def infer_relation_phrase(relation: str) -> str:
    """A `{x}` template for a relation that has no phrase, read from its name.

    The name is the last segment of a path (`/`, `.`, `:` or `#` separate segments; for a
    Freebase CVT path `A./B` the second half), split into words (`_`, `-`, camelCase), a lone
    `s` dropped (`spouse_s`) and a leading word equal to the path's domain dropped
    (`/film/film/film_format` reads "format"). Then the first rule that fits:

    | rule                                     | name                         | phrase                                           |
    |------------------------------------------|------------------------------|--------------------------------------------------|
    | an idiom                                 | `starred_actors`, `_also_see` | the actors starring in {x}; a word related to {x} |
    | leading `has`, `is`, `in` dropped        | `has_genre`, `in_language`   | the genre of {x}; the language of {x}             |
    | `... with this N`                        | `people_with_this_condition` | the people with {x}                               |
    | participle + `by`: its agent             | `directed_by`, `executive_produced_by` | the director of {x}; the executive producer of {x} |
    | participle + `by`, no agent known        | `influenced_by`              | the one that influenced {x}                       |
    | activity + `by`                          | `costume_design_by`, `story_by` | the costume designer of {x}; the one behind the story of {x} |
    | relational noun + `of` + noun            | `member_of_domain_usage`     | the domain usage that has {x} as a member         |
    | noun + `of`                              | `capital_of`, `symptom_of`   | the one that has {x} as a capital                 |
    | adjective + preposition                  | `_similar_to`                | something similar to {x}                          |
    | verb + preposition                       | `lives_in`                   | the one that {x} lives in                         |
    | participle + preposition                 | `born_in`, `located_in`, `starred_in` | the one that {x} was born in; ... is located in; ... starred in |
    | nouns + participle + preposition         | `countries_spoken_in`        | the countries {x} is spoken in                    |
    | noun + preposition                       | `countries_within`           | the countries within {x}                          |
    | a verb alone                             | `contains`, `partially_contains` | the one that {x} contains                     |
    | nouns + participle                       | `films_distributed`          | the films distributed by {x}                      |
    | place or time + participle               | `place_founded`              | the place where {x} was founded                   |
    | a CVT into `/measurement_unit/`          | `.../net_worth./measurement_unit/dated_money_value/currency` | the currency of the net worth of {x} |
    | anything else: a noun phrase             | `gender`, `release_year`, `place_of_birth` | the gender of {x}; the release year of {x}; the place of birth of {x} |

    The result always holds `{x}` once and no `_` or `/`.

    >>> infer_relation_phrase("/film/film/directed_by")
    'the director of {x}'
    >>> infer_relation_phrase("starredActors"), infer_relation_phrase("has_imdb_rating")
    ('the actors starring in {x}', 'the imdb rating of {x}')
    >>> infer_relation_phrase("/location/country/capital"), infer_relation_phrase("_member_meronym")
    ('the capital of {x}', 'the member meronym of {x}')
    >>> infer_relation_phrase("/language/human_language/countries_spoken_in")
    'the countries {x} is spoken in'
    """
    name = _read_name(relation)
    if name is None:
        return "the object of {x}"
    phrase = _from_words(name.words)
    if name.measured:
        phrase = phrase.replace("{x}", f"the {' '.join(name.measured)} of {{x}}")
    return phrase


@dataclass(frozen=True, slots=True)
class _Name:
    """A relation name read into words: `words` of its last segment, `measured` the words of the
    first half of a CVT into `/measurement_unit/` (else empty), `subject` the words of the
    Freebase type its subjects have (`/film/film/...` -> film; else empty)."""

    words: list[str]
    measured: list[str]
    subject: list[str]


def _read_name(relation: str) -> _Name | None:
    parts = [p for p in re.split(r"\.(?=/)", relation) if _segments(p)]
    if not parts:
        return None
    segments = _segments(parts[-1])
    words = _words(segments[-1])
    domain = segments[0] if len(segments) >= 3 else None
    if domain is not None and len(words) > 1 and words[0] == domain.lower():
        words = words[1:]
    if not words:
        words = [w for s in reversed(segments) for w in _words(s)][:3] or ["object"]
    measured: list[str] = []
    if len(parts) > 1 and domain in _MEASURE_DOMAINS:
        measured = [
            w for w in (re.sub(r"\d+", "", w) for w in _words(_segments(parts[0])[-1])) if w
        ]
    first = _segments(parts[0])
    # a type of Freebase's catch-all domains (/base/schemastaging/...) names no kind of thing
    subject = _words(first[1]) if len(first) >= 3 and first[0] not in _NO_SUBJECT else []
    return _Name(words=words, measured=measured, subject=[w for w in subject if w.isalnum()])


_NO_SUBJECT = frozenset({"base", "user", "common", "dataworld"})
# MetaQA's WikiMovies schema (`film -[directed_by]-> person`): every subject is a film
_FILM_SCHEMA_INVERSE = {
    "directed_by": "a film directed by {x}",
    "written_by": "a film written by {x}",
    "starred_actors": "a film starring {x}",
    "release_year": "a film released in {x}",
    "has_genre": "a film of genre {x}",
    "has_tags": "a film tagged {x}",
    "in_language": "a film in {x}",
    "has_imdb_rating": "a film rated {x} on IMDb",
    "has_imdb_votes": "a film with {x} IMDb votes",
}
# names whose words no inverse rule reads well (symmetric ones read the same both ways)
_INVERSE_IDIOMS = {
    "also see": "a word related to {x}",
    "same as": "the same thing as {x}",
    "is a": "an instance of {x}",
    "verb group": "a verb in a group with {x}",
}


def _inverse_from_words(words: list[str], thing: str) -> str:
    """The `{x}` template of an inverse step from a relation's words (`infer_inverse_phrase`);
    `thing` names the subjects ("a film", or "something")."""
    text = " ".join(words)
    if text in _INVERSE_IDIOMS:
        return _INVERSE_IDIOMS[text]
    if text == "starred actors":
        return f"{thing} starring {{x}}"
    if len(words) > 1 and words[0] in _LEADING:
        return _inverse_from_words(words[1:], thing)
    last, rest = words[-1], words[:-1]
    if last == "by" and rest:
        head = rest[-1]
        if _is_participle(head):  # "directed_by", "executive_produced_by"
            return f"{thing} {' '.join(rest)} by {{x}}"
        return f"{thing} with {' '.join(rest)} by {{x}}"  # "costume_design_by", "story_by"
    if len(words) > 2 and words[0] in _RELATIONAL and words[1] == "of":
        return f"{_article(words[0])} {words[0]} of the {' '.join(words[2:])} {{x}}"
    if last == "of" and rest and not _is_participle(rest[-1]):
        return f"the {' '.join(rest)} of {{x}}"  # x is the capital of y: the capital of y
    if (last in _PREPOSITIONS or last == "of") and rest:
        head = rest[-1]
        if head in _ADJECTIVES and len(rest) == 1:
            return f"something {head} {last} {{x}}"  # symmetric: "similar_to"
        if head in _VERBS_3RD or head in _ACTIVE:
            return f"{thing} that {head} {last} {{x}}"  # "lives_in", "starred_in"
        if _is_participle(head):
            return f"{thing} {head} {last} {{x}}"  # "born_in", "countries_spoken_in"
    if (last in _VERBS_3RD or _is_participle(last)) and all(w.endswith("ly") for w in rest):
        return f"{thing} that {text} {{x}}"  # "contains", "partially_contains"
    if len(words) > 1 and _is_participle(last):
        if rest[-1] in _PLACE_TIME:  # "place_founded": founded in {x}
            return f"{thing} {last} {'in' if rest[-1] != 'date' else 'on'} {{x}}"
        return f"{thing} that {last} {{x}}"  # "films_distributed": the distributor
    return f"{thing} whose {text} is {{x}}"


def infer_inverse_phrase(relation: str) -> str:
    """A `{x}` template for the inverse step `~relation`: the entities whose `relation` is `{x}`.

    The name is read as for `infer_relation_phrase`; the subjects are named by the Freebase type
    of the path (`/film/film/directed_by`: "a film"), else "something". MetaQA's WikiMovies
    relations, whose subjects are all films, have fixed phrases. Then the first rule that fits:

    | rule                              | name                                    | inverse phrase                        |
    |-----------------------------------|-----------------------------------------|---------------------------------------|
    | MetaQA's film schema              | `directed_by`, `starred_actors`, `release_year`, `has_genre` | a film directed by {x}; a film starring {x}; a film released in {x}; a film of genre {x} |
    | an idiom (symmetric ones too)     | `_also_see`, `_verb_group`              | a word related to {x}; a verb in a group with {x} |
    | leading `has`, `is`, `in` dropped | `has_part`                              | something whose part is {x}           |
    | participle + `by`                 | `/film/film/executive_produced_by`      | a film executive produced by {x}      |
    | activity + `by`                   | `/film/film/costume_design_by`          | a film with costume design by {x}     |
    | relational noun + `of` + noun     | `_member_of_domain_region`              | a member of the domain region {x}     |
    | noun + `of`                       | `/medicine/symptom/symptom_of`          | the symptom of {x}                    |
    | adjective + preposition           | `_similar_to`                           | something similar to {x}              |
    | verb + preposition                | `lives_in`, `starred_in`                | something that lives in {x}           |
    | participle + preposition          | `born_in`, `/language/human_language/countries_spoken_in` | something born in {x}; a human language spoken in {x} |
    | a verb alone                      | `/location/location/contains`           | a location that contains {x}          |
    | place or time + participle        | `place_founded`                         | something founded in {x}              |
    | nouns + participle                | `films_distributed`                     | something that distributed {x}        |
    | anything else: a noun phrase      | `/people/person/gender`, `_hypernym`    | a person whose gender is {x}; something whose hypernym is {x} |

    A CVT into `/measurement_unit/` reads its first half too ("a film whose estimated budget
    currency is {x}"). The result always holds `{x}` once and no `_` or `/`.

    >>> infer_inverse_phrase("directed_by"), infer_inverse_phrase("/film/film/directed_by")
    ('a film directed by {x}', 'a film directed by {x}')
    >>> infer_inverse_phrase("born_in"), infer_inverse_phrase("/location/location/contains")
    ('something born in {x}', 'a location that contains {x}')
    """
    if relation in _FILM_SCHEMA_INVERSE:
        return _FILM_SCHEMA_INVERSE[relation]
    name = _read_name(relation)
    if name is None:
        return "something whose object is {x}"
    subject = " ".join(name.subject)
    thing = f"{_article(subject)} {subject}" if subject else "something"
    words = [*name.measured, *name.words] if name.measured else name.words
    return _inverse_from_words(words, thing)
