"""A reproducible fictional knowledge graph, so demos and tests need no files: `kag generate world`.

| domain       | entity types                                  | relations inside it                         |
|--------------|-----------------------------------------------|---------------------------------------------|
| `geography`  | country, city                                 | located_in, capital_of, borders             |
| `film`       | actor, director, film, film_studio            | acted_in, starring, directed, directed_by, produced_by |
| `literature` | writer, book, publisher                       | wrote, written_by, published_by             |
| `music`      | musician, band, album, record_label           | member_of, performed_by, released_by        |
| `business`   | entrepreneur, company                         | founded_by, works_for                       |
| `science`    | scientist, university                         | works_for, educated_at                      |

Every entity also carries numeric attributes in `props` (`NUMERIC_ATTRIBUTES`: a city's
`population`, a film's `release_year` and `runtime_min`, a company's `founded` and `employees`...),
drawn from a random stream of their own, so they never change the names, relations or phrases a
seed gives (those are exactly what they were before attributes existed).

Cross-domain relations (born_in, citizen_of, headquartered_in, set_in, adapted_from,
married_to, parent_of) tie the domains together, and popularity follows a Zipf law, so there
are hubs and long tails and multi-hop walks such as film -directed_by-> person -born_in-> city
-located_in-> country. Every relation has a phrase with `{x}` for its subject, used to render
questions: `"the city where {x} was born"`.

>>> entities, relations, phrases = generate_world(seed=7, size=200)
>>> len(entities), phrases["born_in"]
(200, 'the city where {x} was born')
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from kag.schema import Entity, Relation

__all__ = [
    "MIN_SIZE",
    "NUMERIC_ATTRIBUTES",
    "RELATION_PHRASES",
    "WorldConfig",
    "generate_world",
    "write_world",
]

MIN_SIZE = 50

#: relation type -> noun phrase naming its object, with `{x}` for the subject
RELATION_PHRASES: dict[str, str] = {
    "located_in": "the place where {x} is located",
    "capital_of": "the country whose capital is {x}",
    "borders": "a country that borders {x}",
    "born_in": "the city where {x} was born",
    "citizen_of": "the country {x} is a citizen of",
    "married_to": "the spouse of {x}",
    "parent_of": "a child of {x}",
    "acted_in": "a film {x} acted in",
    "starring": "an actor starring in {x}",
    "directed": "a film directed by {x}",
    "directed_by": "the director of {x}",
    "produced_by": "the studio that produced {x}",
    "adapted_from": "the book {x} was adapted from",
    "wrote": "a book written by {x}",
    "written_by": "the author of {x}",
    "published_by": "the publisher of {x}",
    "set_in": "the city where {x} is set",
    "member_of": "the band {x} is a member of",
    "performed_by": "the performer of {x}",
    "released_by": "the record label that released {x}",
    "founded_by": "the founder of {x}",
    "headquartered_in": "the city where {x} has its headquarters",
    "works_for": "the organisation {x} works for",
    "educated_at": "the university where {x} studied",
}

# entity type -> (domain, share of the world); shares sum to 1
_TYPES: dict[str, tuple[str, float]] = {
    "country": ("geography", 0.02),
    "city": ("geography", 0.08),
    "film_studio": ("film", 0.02),
    "publisher": ("literature", 0.02),
    "record_label": ("music", 0.02),
    "band": ("music", 0.02),
    "company": ("business", 0.04),
    "university": ("science", 0.02),
    "actor": ("film", 0.12),
    "director": ("film", 0.05),
    "writer": ("literature", 0.08),
    "musician": ("music", 0.08),
    "entrepreneur": ("business", 0.06),
    "scientist": ("science", 0.07),
    "film": ("film", 0.14),
    "book": ("literature", 0.10),
    "album": ("music", 0.06),
}
_PEOPLE = ("actor", "director", "writer", "musician", "entrepreneur", "scientist")

#: entity type -> its numeric attributes as (name, low, high, log-uniform): integers in
#: [low, high]. Organisations are founded by 1960 and works appear from 1961, so "years between
#: the founding of the studio and the release of the film" is never negative.
NUMERIC_ATTRIBUTES: dict[str, tuple[tuple[str, int, int, bool], ...]] = {
    "country": (("population", 200_000, 90_000_000, True), ("area_km2", 1_000, 2_000_000, True)),
    "city": (("population", 5_000, 9_000_000, True), ("founded", 800, 1950, False)),
    "film_studio": (("founded", 1890, 1960, False),),
    "publisher": (("founded", 1800, 1960, False),),
    "record_label": (("founded", 1900, 1960, False),),
    "band": (("formed", 1960, 2015, False), ("members", 2, 7, False)),
    "company": (("founded", 1850, 1960, False), ("employees", 10, 250_000, True)),
    "university": (("founded", 1100, 1960, False), ("students", 1_000, 60_000, True)),
    **{person: (("born", 1900, 2000, False),) for person in _PEOPLE},
    "film": (("release_year", 1961, 2024, False), ("runtime_min", 75, 190, False)),
    "book": (("year", 1961, 2024, False), ("pages", 90, 1200, False)),
    "album": (("release_year", 1961, 2024, False), ("tracks", 6, 18, False)),
}

_SYLLABLES = [
    "ar",
    "bel",
    "cor",
    "dan",
    "el",
    "fen",
    "gar",
    "hal",
    "ir",
    "jor",
    "kel",
    "lin",
    "mar",
    "nor",
    "or",
    "pel",
    "quin",
    "ros",
    "sal",
    "tor",
    "ul",
    "vin",
    "wen",
    "yar",
    "zel",
    "ba",
    "do",
    "fi",
    "ka",
    "lo",
    "mi",
    "ne",
    "ri",
    "su",
    "ta",
    "ve",
]
_FIRST = [
    "Ada",
    "Bram",
    "Cora",
    "Dario",
    "Elin",
    "Fenna",
    "Goran",
    "Hedda",
    "Ivo",
    "Jana",
    "Kasimir",
    "Liora",
    "Milo",
    "Nadia",
    "Oskar",
    "Petra",
    "Quentin",
    "Runa",
    "Silas",
    "Tilde",
    "Ugo",
    "Vera",
    "Wendel",
    "Xenia",
    "Yorick",
    "Zora",
    "Alba",
    "Bastian",
    "Cyra",
    "Dorian",
    "Esme",
    "Felix",
    "Greta",
    "Hugo",
    "Ilse",
    "Jonas",
    "Kaia",
    "Lucan",
    "Maren",
    "Niko",
    "Odile",
    "Pavel",
    "Rhea",
    "Soren",
    "Talia",
    "Viggo",
]
_ADJECTIVES = [
    "Silent",
    "Crimson",
    "Hidden",
    "Golden",
    "Broken",
    "Distant",
    "Hollow",
    "Burning",
    "Quiet",
    "Frozen",
    "Wandering",
    "Last",
    "Velvet",
    "Iron",
    "Pale",
    "Secret",
    "Northern",
    "Endless",
    "Bitter",
    "Gentle",
    "Restless",
    "Shattered",
    "Sunken",
    "Wild",
]
_NOUNS = [
    "Harbor",
    "Garden",
    "Mirror",
    "River",
    "Tower",
    "Winter",
    "Letter",
    "Orchard",
    "Lantern",
    "Voyage",
    "Empire",
    "Echo",
    "Meadow",
    "Signal",
    "Compass",
    "Shadow",
    "Island",
    "Summer",
    "Kingdom",
    "Archive",
    "Horizon",
    "Ember",
    "Citadel",
    "Tide",
]
_ORG_SUFFIX = {
    "film_studio": ("Pictures", "Studios", "Films"),
    "publisher": ("Press", "Books", "Publishing"),
    "record_label": ("Records", "Sound", "Music"),
    "band": ("", "Collective", "Ensemble"),
    "company": ("Industries", "Systems", "Group", "Labs"),
    "university": ("University", "Institute of Technology", "College"),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class WorldConfig:
    """A world: `seed` fixes everything; `size` is the exact number of entities (>= 50).

    Relations come to roughly 4-5 per entity. `build()` returns the world; the same config
    gives the same world on the same Python version.
    """

    seed: int = 0
    size: int = 1000

    def build(self) -> tuple[list[Entity], list[Relation], dict[str, str]]:
        return _World(self).generate()


def generate_world(*, seed: int, size: int) -> tuple[list[Entity], list[Relation], dict[str, str]]:
    """(entities, relations, relation phrases) of a fictional world of `size` entities.

    >>> a = generate_world(seed=1, size=60); b = generate_world(seed=1, size=60)
    >>> a == b
    True
    """
    return WorldConfig(seed=seed, size=size).build()


class _World:
    def __init__(self, config: WorldConfig) -> None:
        if config.size < MIN_SIZE:
            raise ValueError(f"size must be at least {MIN_SIZE} entities, got {config.size}")
        self.rng = random.Random(config.seed)
        # a stream of its own: drawing attributes never shifts the names and relations of a seed
        self.numbers = random.Random(f"kag-world-numbers:{config.seed}")
        self.size = config.size
        self.entities: list[Entity] = []
        self.by_type: dict[str, list[str]] = {}
        self.relations: dict[tuple[str, str, str], Relation] = {}
        self.names: set[str] = set()

    # ---------------------------------------------------------------- helpers

    def _counts(self) -> dict[str, int]:
        """Entities per type: every type at least 1 (2 countries), the total exactly `size`."""
        counts = {t: max(1, int(share * self.size)) for t, (_, share) in _TYPES.items()}
        counts["country"] = max(2, counts["country"])
        # people absorb the rounding, so the total is exact
        order = [*_PEOPLE, "film", "book"]
        k = 0
        while sum(counts.values()) != self.size:
            t = order[k % len(order)]
            if sum(counts.values()) < self.size:
                counts[t] += 1
            elif counts[t] > 1:
                counts[t] -= 1
            k += 1
        return counts

    def _unique(self, make: Callable[[], str]) -> str:
        for _ in range(20):
            name = make()
            if name not in self.names:
                break
        else:
            base, n = name, 2
            while f"{base} {_roman(n)}" in self.names:
                n += 1
            name = f"{base} {_roman(n)}"
        self.names.add(name)
        return name

    def _word(self, parts: int) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()

    def _name(self, etype: str) -> str:
        rng = self.rng
        if etype in _PEOPLE:
            return self._unique(lambda: f"{rng.choice(_FIRST)} {self._word(rng.randint(2, 3))}")
        if etype == "country":
            return self._unique(
                lambda: self._word(rng.randint(2, 3)) + rng.choice(("ia", "land", "or", "ana"))
            )
        if etype == "city":
            return self._unique(
                lambda: (
                    rng.choice(("", "", "", "Port ", "New ", "San "))
                    + self._word(rng.randint(2, 3))
                )
            )
        if etype in _ORG_SUFFIX:
            return self._unique(
                lambda: f"{self._word(rng.randint(2, 3))} {rng.choice(_ORG_SUFFIX[etype])}".strip()
            )
        # works: films, books, albums
        return self._unique(
            lambda: (
                rng.choice(("The ", "", "A ")) + f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
            )
        )

    def _numbers(self, etype: str) -> dict[str, int]:
        out = {}
        for name, low, high, log in NUMERIC_ATTRIBUTES.get(etype, ()):
            if log:
                value = round(math.exp(self.numbers.uniform(math.log(low), math.log(high))))
                out[name] = min(high, max(low, value))
            else:
                out[name] = self.numbers.randint(low, high)
        return out

    def _zipf_pick(self, etype: str, k: int = 1) -> list[str]:
        """`k` distinct entities of a type, popular ones (low index) far more often."""
        pool = self.by_type[etype]
        k = min(k, len(pool))
        chosen: dict[str, None] = {}
        for _ in range(8 * k):
            # inverse CDF of a truncated 1/x law on 1..n: index = floor((n+1)**u) - 1
            chosen[pool[int((len(pool) + 1) ** self.rng.random()) - 1]] = None
            if len(chosen) == k:
                break
        return list(chosen)

    def _pick(self, etype: str) -> str:
        return self._zipf_pick(etype)[0]

    def _relate(self, source: str, rel: str, target: str) -> None:
        if source != target:
            key = (source, rel, target)
            self.relations.setdefault(key, Relation(source=source, type=rel, target=target))

    # ---------------------------------------------------------------- generation

    def generate(self) -> tuple[list[Entity], list[Relation], dict[str, str]]:
        counts = self._counts()
        for etype, (domain, _) in _TYPES.items():
            ids = self.by_type.setdefault(etype, [])
            for i in range(counts[etype]):
                entity_id = f"{etype}/{i:06d}"
                ids.append(entity_id)
                self.entities.append(
                    Entity(
                        id=entity_id,
                        name=self._name(etype),
                        type=etype,
                        domain=domain,
                        description=f"a fictional {etype.replace('_', ' ')}",
                        props=self._numbers(etype),
                    )
                )
        self._geography()
        self._organisations()
        self._people()
        self._works()
        relations = sorted(self.relations.values(), key=lambda r: r.key)
        return self.entities, relations, dict(RELATION_PHRASES)

    def _geography(self) -> None:
        countries, cities = self.by_type["country"], self.by_type["city"]
        for i, city in enumerate(cities):
            # every country gets at least one city, its capital
            country = countries[i] if i < len(countries) else self._pick("country")
            self._relate(city, "located_in", country)
            if i < len(countries):
                self._relate(city, "capital_of", country)
        for country in countries:
            for other in self.rng.sample(countries, k=min(len(countries), self.rng.randint(1, 3))):
                if other != country:
                    self._relate(country, "borders", other)
                    self._relate(other, "borders", country)

    def _organisations(self) -> None:
        for etype in ("film_studio", "publisher", "record_label", "company", "university"):
            for org in self.by_type[etype]:
                self._relate(org, "headquartered_in", self._pick("city"))
                founder_type = "entrepreneur" if etype == "company" else self.rng.choice(_PEOPLE)
                self._relate(org, "founded_by", self._pick(founder_type))
        for band in self.by_type["band"]:
            self._relate(band, "located_in", self._pick("city"))

    def _people(self) -> None:
        rng = self.rng
        people = [p for t in _PEOPLE for p in self.by_type[t]]
        for person in people:
            city = self._pick("city")
            self._relate(person, "born_in", city)
            if rng.random() < 0.7:
                self._relate(person, "citizen_of", self._pick("country"))
        for person in self.by_type["entrepreneur"]:
            if rng.random() < 0.6:
                self._relate(person, "works_for", self._pick("company"))
        for person in self.by_type["scientist"]:
            self._relate(person, "works_for", self._pick("university"))
            self._relate(person, "educated_at", self._pick("university"))
        for person in self.by_type["writer"] + self.by_type["director"]:
            if rng.random() < 0.4:
                self._relate(person, "educated_at", self._pick("university"))
        for musician in self.by_type["musician"]:
            if rng.random() < 0.5:
                self._relate(musician, "member_of", self._pick("band"))
        shuffled = people[:]
        rng.shuffle(shuffled)
        for a, b in zip(shuffled[0::2], shuffled[1::2], strict=False):
            if rng.random() < 0.35:
                self._relate(a, "married_to", b)
                self._relate(b, "married_to", a)
                if rng.random() < 0.5:
                    child = rng.choice(people)
                    self._relate(a, "parent_of", child)
                    self._relate(b, "parent_of", child)

    def _works(self) -> None:
        rng = self.rng
        for film in self.by_type["film"]:
            for director in self._zipf_pick("director", 1 if rng.random() < 0.9 else 2):
                self._relate(film, "directed_by", director)
                self._relate(director, "directed", film)
            for actor in self._zipf_pick("actor", rng.randint(1, 4)):
                self._relate(film, "starring", actor)
                self._relate(actor, "acted_in", film)
            self._relate(film, "produced_by", self._pick("film_studio"))
            if rng.random() < 0.3:
                self._relate(film, "set_in", self._pick("city"))
            if rng.random() < 0.2:
                self._relate(film, "adapted_from", self._pick("book"))
        for book in self.by_type["book"]:
            for writer in self._zipf_pick("writer", 1 if rng.random() < 0.85 else 2):
                self._relate(book, "written_by", writer)
                self._relate(writer, "wrote", book)
            self._relate(book, "published_by", self._pick("publisher"))
            if rng.random() < 0.4:
                self._relate(book, "set_in", self._pick("city"))
        for album in self.by_type["album"]:
            performer_type = "band" if rng.random() < 0.5 else "musician"
            self._relate(album, "performed_by", self._pick(performer_type))
            self._relate(album, "released_by", self._pick("record_label"))


def _roman(n: int) -> str:
    out = ""
    for value, letters in ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out += letters
            n -= value
    return out


def write_world(
    target: object,
    entities: Sequence[Entity],
    relations: Sequence[Relation],
    phrases: dict[str, str],
    *,
    batch_size: int = 50_000,
) -> None:
    """Write a world into a store or `KnowledgeActionGraph` (one transaction on SQL)."""
    from kag.stores.base import GraphBatch

    store = getattr(target, "store", target)

    def batches() -> Iterator[GraphBatch]:
        for a in range(0, len(entities), batch_size):
            yield GraphBatch(nodes={"Entity": list(entities[a : a + batch_size])})
        for a in range(0, len(relations), batch_size):
            yield GraphBatch(relations=list(relations[a : a + batch_size]))

    store.write_many(batches())
    store.set_relation_phrases(phrases)
