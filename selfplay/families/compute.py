"""The compute family: tasks whose answer needs arithmetic over numeric facts, and graph growth.

| name                       | what it is                                                            |
|----------------------------|-----------------------------------------------------------------------|
| `ComputeConfig`            | templates, item counts, tolerances of proposed tasks                  |
| `ComputeProposer`          | graph -> compute tasks (family "compute"), deterministic and deduped  |
| `parse_number`             | the one number of a final answer ("1,234", "12.5 km", "-3", "1e3")    |
| `NumericMatch`             | `numeric_match@1`: the number within tolerance, or the entity's name  |
| `suite` (`compute_suite`)  | the family's `VerifierSuite` (numeric_match + the default checks)     |
| `ComputeOraclePolicy`      | gold policy: relations, `get_entity`, the `python` tool, its output   |
| `growth_batch`             | what an accepted trajectory adds: a derived Entity, PRODUCES,         |
|                            | DEPENDS_ON and a relation from the subject                            |
| `COMPUTE_SYSTEM_PROMPT`    | the solver's system prompt for compute tasks                          |

Templates (the attribute names are the numeric `props` keys of the entities, quoted so a policy
can find them in `get_entity`'s output):

| template     | example question                                                             | answer  |
|--------------|------------------------------------------------------------------------------|---------|
| `sum`        | What is the total "runtime_min" of every film directed by "Ada Bel"?          | number  |
| `mean`       | What is the average "pages" of every book written by "X"? Round to 2 decimals. | number  |
| `count`      | Count every film directed by "Ada Bel". How many are there?                   | number  |
| `argmax`     | Of every film directed by "Ada Bel", which has the largest "runtime_min"?     | a name  |
| `argmin`     | ... which has the smallest "runtime_min"?                                     | a name  |
| `compare`    | Which has the larger "population": the city where "A" was born or the city    | a name  |
|              | where "B" was born?                                                           |         |
| `difference` | What is the "release_year" of "F" minus the "founded" of the studio that      | number  |
|              | produced "F"? (a chain of 1 or 2 hops with one entity at each hop)            |         |

Numbers come from entity props, or from a relation whose targets are named by plain numbers
(MetaQA's `film -release_year-> "1999"`, `ComputeConfig.literal_share`): such a fact carries
`"relation"` and is read with `get_relations` instead of `get_entity`.

Every task stores its answer as text in `answers` and in `props`: `value` (the number, or the
name), `tolerance` (absolute) and `rel_tolerance`, `facts` (`{entity_id, attribute, value}` of
every fact used), `expand` (the `[entity_id, relation]` lists to follow), `operation`,
`subject` and `attribute` (where the derived fact goes). `path["entities"]` lists every entity
whose facts are needed and no relations, so `evidence_coverage@2` requires acting on each one
(`get_relations` on the subject, `get_entity` on every item).

Graph growth (`growth_batch`): an accepted trajectory writes a derived Entity
`derived:<task id>` (type `derived_fact`, `props={"derived": True, "value", "attribute",
"operation", "task_id", "subject", "facts"}`), a PRODUCES edge from the `python` tool Step whose
output gave the answer (else the final assistant Step), DEPENDS_ON edges from that Step to the
tool Steps whose observations supplied the facts, and a relation `subject -[attribute]-> derived`
(e.g. `total_runtime_min_of_directed`) with a `{x}` phrase, so later walks and tasks use it.
An `argmax`/`argmin` relation goes to the winning entity instead
(`max_runtime_min_of_directed`); `compare` tasks grow nothing (two subjects make no fact about
either).

>>> proposal = ComputeProposer(store).propose(8, seed=0)  # doctest: +SKIP
>>> proposal.tasks[0].question, proposal.tasks[0].answers  # doctest: +SKIP
('What is the total "runtime_min" of every film directed by "Ada Bel"?', ('311',))
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kag.schema import Edge, Entity, Relation, Task
from kag.stores.base import GraphBatch, GraphStore
from kag.walks import CSRGraph
from selfplay.answers import leaked_answer, normalize_answer, score_answer
from selfplay.parsing import extract_answer
from selfplay.proposer import Proposal, relation_phrase
from selfplay.rewards import RewardConfig, VerifierSuite
from selfplay.rollout import Rollout, step_id
from selfplay.solver import FAMILY_SYSTEM_PROMPTS, Action, TurnRequest
from selfplay.verifiers import (
    EvidenceCoverage,
    LLMJudge,
    NoShortcut,
    ProcessCheck,
    ToolCallValidity,
    ToolStepCheck,
    TrajectoryVerifier,
    VerifierResult,
    VerifyContext,
    tool_steps,
    trajectory_messages,
)
from selfplay.writeback import ScoredRollout

__all__ = [
    "COMPUTE_SYSTEM_PROMPT",
    "ComputeConfig",
    "ComputeOraclePolicy",
    "ComputeProposer",
    "NumericMatch",
    "TEMPLATES",
    "compute_suite",
    "derived_entity_id",
    "format_number",
    "growth_batch",
    "numbers_in",
    "numeric_props",
    "parse_number",
    "suite",
]

FAMILY = "compute"
TEMPLATES = ("sum", "mean", "count", "argmax", "argmin", "compare", "difference")
#: templates whose answer is an entity's name (the others answer a number)
ENTITY_TEMPLATES = ("argmax", "argmin", "compare")
DERIVED_PREFIX = "derived:"
DERIVED_TYPE = "derived_fact"

COMPUTE_SYSTEM_PROMPT = FAMILY_SYSTEM_PROMPTS["compute"]


# --------------------------------------------------------------------------- numbers


def numeric_props(props: Mapping[str, Any]) -> dict[str, int | float]:
    """The numeric attributes of an entity's props: finite ints and floats (booleans are not).

    >>> numeric_props({"founded": 1987, "derived": True, "name": "x", "ratio": 0.5})
    {'founded': 1987, 'ratio': 0.5}
    """
    return {
        k: v
        for k, v in props.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def format_number(value: float) -> str:
    """The answer text of a number: integers without a decimal point, others to 2 decimals.

    >>> format_number(311), format_number(12.0), format_number(103.3333), format_number(-2.5)
    ('311', '12', '103.33', '-2.5')
    """
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


# a thousands separator: a comma between a digit and exactly three digits
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# a number that is not part of a word ("km2" holds none); a sign only at the start or after a space
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w])")


def numbers_in(text: str) -> list[float]:
    """Every number in a text, in order: thousands separators ("1,234,567"), a sign ("-3",
    "\u22123"), decimals ("12.5", ".5"), exponents ("1.2e3"); digits inside a word do not count.

    >>> numbers_in("1,234 films, 12.5 km, \u22123 and 1e3 (km2 is no number)")
    [1234.0, 12.5, -3.0, 1000.0]
    """
    text = _THOUSANDS.sub("", text.replace("\u2212", "-"))
    out = []
    for m in _NUMBER.finditer(text):
        try:
            out.append(float(m.group(0)))
        except ValueError:
            continue
    return [x for x in out if math.isfinite(x)]


def parse_number(text: str | None) -> float | None:
    """The one number an answer gives, else None (no number, or several different ones: an
    answer that hedges between "12 or 13" gives no number). The same number repeated is fine.

    >>> parse_number("1,234"), parse_number("12.5 km"), parse_number("about -3 years")
    (1234.0, 12.5, -3.0)
    >>> parse_number("12 or 13") is None, parse_number("twelve") is None
    (True, True)
    """
    if text is None:
        return None
    found = set(numbers_in(text))
    return found.pop() if len(found) == 1 else None


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True, slots=True)
class ComputeConfig:
    """How the graph's numeric facts become compute tasks."""

    #: templates to propose from, in turn (see the module table)
    templates: tuple[str, ...] = TEMPLATES
    #: fewest items an aggregation (sum, mean, count, argmax, argmin) runs over; 1 item is a lookup
    min_items: int = 2
    #: most items an aggregation runs over (each is one `get_entity` call)
    max_items: int = 8
    #: longest relation chain of a `difference` task (1 or 2 hops)
    max_chain_hops: int = 2
    #: groups of attributes whose difference means something (besides the same attribute on
    #: both ends): years of founding, release, birth... They are dates, so never summed
    difference_groups: tuple[tuple[str, ...], ...] = (
        ("release_year", "year", "founded", "formed", "born"),
    )
    #: absolute tolerance of a number that is not an integer (`mean` answers are rounded to 2
    #: decimals, so 0.01 accepts the rounded value); integer answers must be exact
    float_tolerance: float = 0.01
    #: relative tolerance of every numeric answer (0: only the absolute one)
    rel_tolerance: float = 0.0
    #: verifier ids attached to every task (CHECKED_BY); default: `compute_suite().ids`
    verifiers: tuple[str, ...] | None = None
    #: a relation type whose targets are named by plain numbers at least this often (MetaQA's
    #: `release_year`) gives its sources a numeric attribute of the relation's name
    literal_share: float = 0.9
    #: candidates drawn per task asked for; misses (ties, too few items, shortcuts) eat some
    oversample: int = 8
    #: drawing rounds before giving up on filling a request
    max_rounds: int = 8

    def __post_init__(self) -> None:
        unknown = [t for t in self.templates if t not in TEMPLATES]
        if unknown or not self.templates:
            raise ValueError(f"unknown compute templates {unknown}; known: {', '.join(TEMPLATES)}")
        if not 2 <= self.min_items <= self.max_items:
            raise ValueError(
                f"need 2 <= min_items <= max_items, got {self.min_items}, {self.max_items}"
            )
        if self.max_chain_hops not in (1, 2):
            raise ValueError(f"max_chain_hops must be 1 or 2, got {self.max_chain_hops}")
        if self.float_tolerance < 0 or self.rel_tolerance < 0:
            raise ValueError("float_tolerance and rel_tolerance must be >= 0")
        if self.oversample < 1 or self.max_rounds < 1:
            raise ValueError("oversample and max_rounds must be >= 1")
        if not 0.0 < self.literal_share <= 1.0:
            raise ValueError(f"literal_share must be in (0, 1], got {self.literal_share}")


# --------------------------------------------------------------------------- proposer


def _every(noun: str) -> str:
    """'a film directed by "X"' -> 'every film directed by "X"'."""
    return "every " + re.sub(r"^(?:a|an|the)\s+", "", noun)


def _quoted(name: str) -> str:
    """A name as questions quote it, the way the search proposer quotes start names."""
    return f'"{name}"'


def _task_id(template: str, key: Sequence[Any]) -> tuple[str, str]:
    signature = hashlib.sha256(
        json.dumps([FAMILY, template, *key], ensure_ascii=False).encode()
    ).hexdigest()
    return "task:" + signature[:32], signature


def _token(text: str) -> str:
    """A relation-name piece of free text: `/film/film/directed_by` -> `film_film_directed_by`."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "r"


class ComputeProposer:
    """Compute tasks from a graph's relations and its entities' numeric props (module table).

    `graph` is a `KnowledgeActionGraph` or a store; its relations are projected once into a CSR
    (pass `csr=` to share one) and every entity's numeric props are read once. Same graph, config
    and seed give the same tasks; a task already in the graph or in `exclude` is never proposed
    again.
    """

    def __init__(
        self, graph: Any, *, config: ComputeConfig | None = None, csr: CSRGraph | None = None
    ) -> None:
        self.store: GraphStore = getattr(graph, "store", graph)
        self.config = config or ComputeConfig()
        self.csr = csr if csr is not None else CSRGraph.from_store(self.store)
        if self.csr.n_edges == 0:
            raise ValueError(
                f"{self.store.url} has no relations to build compute tasks on; import triples "
                "first (`kag import triples` or `kag generate world`)"
            )
        self.phrases = self.store.relation_phrases()
        csr = self.csr
        position = {e: i for i, e in enumerate(csr.entity_ids)}
        self.names: dict[int, str] = {}
        self.domains: dict[int, str] = {}
        self.values: dict[int, dict[str, int | float]] = {}
        for batch in self.store.iter_nodes("Entity"):
            for e in batch:
                i = position.get(e.id)
                if i is None:
                    continue
                self.names[i] = e.name or e.id  # type: ignore[attr-defined]
                self.domains[i] = e.domain  # type: ignore[attr-defined]
                numbers = numeric_props(e.props)
                if numbers:
                    self.values[i] = numbers
        # segments of out-edges with one (source, relation): CSR edges are sorted by
        # (source, relation, target), so a segment is a run of equal (source, relation) keys
        n_rel = max(1, len(csr.relation_types))
        src = np.repeat(np.arange(csr.n_nodes, dtype=np.int64), np.diff(csr.indptr))
        key = src * n_rel + csr.rel.astype(np.int64)
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        counts = np.diff(np.r_[starts, key.size])
        self._seg_node = src[starts]
        self._seg_rel = csr.rel[starts]
        self._seg_lo = starts
        self._seg_count = counts
        cfg = self.config
        self._multi = np.flatnonzero((counts >= cfg.min_items) & (counts <= cfg.max_items))
        single = np.flatnonzero(counts == 1)
        self._literals = self._literal_values(single)
        # node -> its functional hops [(relation index, target)], for difference chains
        self._hops: dict[int, list[tuple[int, int]]] = {}
        for s in single.tolist():
            node = int(self._seg_node[s])
            self._hops.setdefault(node, []).append(
                (int(self._seg_rel[s]), int(csr.indices[self._seg_lo[s]]))
            )
        # relation index -> single segments whose target has numbers, for comparisons
        self._single_by_rel: dict[int, list[int]] = {}
        for s in single.tolist():
            if int(csr.indices[self._seg_lo[s]]) in self.values:
                self._single_by_rel.setdefault(int(self._seg_rel[s]), []).append(s)
        self._difference_starts = sorted(n for n in self._hops if n in self.values)
        # lists whose items share a numeric attribute: what sum, mean, argmax and argmin draw from
        self._multi_numeric = np.array(
            [
                m
                for m in self._multi.tolist()
                if set.intersection(*(set(self.values.get(i, ())) for i in self._targets(m)))
            ],
            dtype=np.int64,
        )
        verifiers = cfg.verifiers if cfg.verifiers is not None else tuple(compute_suite().ids)
        self._verifiers = list(verifiers)

    def _literal_values(self, single: np.ndarray) -> set[tuple[int, str]]:
        """Numbers held as relation targets (MetaQA's `film -release_year-> "1999"`): where most
        targets of a relation type are named by a plain number (`_LITERAL`), a source with one
        such target gets the number as the attribute named by the relation (entity props win).
        Returns the (entity, attribute) pairs read that way: a policy reads them with
        `get_relations`, not `get_entity`."""
        csr = self.csr
        targets = csr.indices[self._seg_lo[single]]
        rels = self._seg_rel[single]
        numeric: Counter = Counter()
        total: Counter = Counter()
        for r, t in zip(rels.tolist(), targets.tolist(), strict=True):
            total[r] += 1
            numeric[r] += _LITERAL.fullmatch(self.names.get(t, "").strip()) is not None
        kinds = {r for r in total if numeric[r] >= self.config.literal_share * total[r]}
        found: set[tuple[int, str]] = set()
        for node, r, t in zip(self._seg_node[single].tolist(), rels.tolist(), targets.tolist()):
            if r not in kinds:
                continue
            text = self.names.get(t, "").strip()
            if not _LITERAL.fullmatch(text):
                continue
            attr = csr.relation_types[r]
            values = self.values.setdefault(int(node), {})
            if attr not in values:
                values[attr] = _literal_number(text)
                found.add((int(node), attr))
        return found

    def _fact(self, node: int, attr: str) -> dict[str, Any]:
        fact = {"entity_id": self.csr.entity_ids[node], "attribute": attr}
        fact["value"] = self.values[node][attr]
        if (node, attr) in self._literals:
            fact["relation"] = attr  # read from the relation's target, not from props
        return fact

    # ------------------------------------------------------------------ proposing

    def propose(
        self,
        n: int,
        *,
        seed: int = 0,
        hops: int | None = None,
        exclude: Iterable[str] = (),
        coverage: Any = None,
    ) -> Proposal:
        """Up to `n` new compute tasks (fewer when the graph runs out of fresh ones).

        Templates take turns. `hops` (None: any) keeps tasks of that many hops: aggregations
        and comparisons have 1, `difference` chains 1 or 2. `exclude` holds task ids to treat
        as known, besides those already in the graph. `Proposal.dropped` counts the misses by
        reason (too_few_items, no_attribute, tie, no_chain, shortcut, duplicate, known).
        `coverage` is accepted so the search `Proposer` and this one are called alike; compute
        sampling is uniform and does not use it yet.
        """
        if n < 0:
            raise ValueError(f"need n >= 0, got {n}")
        templates = [t for t in self.config.templates if _template_hops_ok(t, hops, self.config)]
        if hops is not None and not templates:
            raise ValueError(
                f"no compute template makes {hops}-hop tasks (aggregations and comparisons have "
                f"1 hop, difference chains up to max_chain_hops={self.config.max_chain_hops})"
            )
        out = Proposal()
        taken: set[str] = set(exclude)
        cfg = self.config
        k = 0
        for round_ in range(cfg.max_rounds):
            need = n - len(out.tasks)
            if need <= 0:
                break
            rng = random.Random(f"kag-compute:{seed}:{round_}")
            candidates: dict[str, Task] = {}
            for _ in range(need * cfg.oversample):
                template = templates[k % len(templates)]
                k += 1
                out.walks += 1
                drawn = self._draw(template, rng, hops)
                if isinstance(drawn, str):
                    out.dropped[drawn] += 1
                elif drawn.id in taken or drawn.id in candidates:
                    out.dropped["duplicate"] += 1
                else:
                    candidates[drawn.id] = drawn
            known = {t.id for t in self.store.get_nodes("Task", list(candidates))}
            out.dropped["known"] += len(known)
            taken.update(candidates)
            # templates take turns in what is kept too, so one that misses less cannot crowd
            # out the others
            by_template: dict[str, list[Task]] = {}
            for tid, task in candidates.items():
                if tid not in known:
                    by_template.setdefault(task.props["template"], []).append(task)
            queues = [by_template.get(t, []) for t in templates]
            while len(out.tasks) < n and any(queues):
                for queue in queues:
                    if queue and len(out.tasks) < n:
                        out.tasks.append(queue.pop(0))
        return out

    def _draw(self, template: str, rng: random.Random, hops: int | None) -> Task | str:
        if template == "compare":
            return self._compare(rng)
        if template == "difference":
            return self._difference(rng, hops)
        return self._aggregate(template, rng)

    def _targets(self, segment: int) -> list[int]:
        lo = int(self._seg_lo[segment])
        return self.csr.indices[lo : lo + int(self._seg_count[segment])].tolist()

    def _phrase(self, relation: int) -> str:
        return relation_phrase(self.csr.relation_types[relation], self.phrases)

    def _noun(self, relations: Sequence[int], subject: str) -> str:
        """The entity a chain of relations reaches from `subject` (a quoted name or `{x}`)."""
        phrases = [self._phrase(r) for r in relations]
        if all("{x}" in p for p in phrases):
            text = subject
            for p in phrases:
                text = p.replace("{x}", text)
            return text
        chain = ", then ".join(f'"{p}"' for p in phrases)
        return f"the entity that {chain} lead{'s' if len(phrases) == 1 else ''} to from {subject}"

    def _aggregate(self, op: str, rng: random.Random) -> Task | str:
        pool = self._multi if op == "count" else self._multi_numeric
        if not pool.size:
            return "too_few_items" if op == "count" else "no_attribute"
        seg = int(pool[rng.randrange(pool.size)])
        subject, rel = int(self._seg_node[seg]), int(self._seg_rel[seg])
        items = self._targets(seg)
        relation = self.csr.relation_types[rel]

        def noun(subject_text: str) -> str:
            return _every(self._noun([rel], subject_text))

        sname = self.names.get(subject, self.csr.entity_ids[subject])
        quoted = f'"{sname}"'
        facts: list[dict[str, Any]] = []
        answer_ids: tuple[str, ...] = ()
        if op == "count":
            value: Any = len(items)
            attr = ""
            question = f"Count {noun(quoted)}. How many are there?"
            derived = f"count_of_{_token(relation)}"
            phrase = f"the count of {noun('{x}')}"
        else:
            common = set.intersection(*(set(self.values.get(i, {})) for i in items))
            if op == "sum":  # a total of years means nothing
                common -= {a for group in self.config.difference_groups for a in group}
            if not common:
                return "no_attribute"
            attr = rng.choice(sorted(common))
            numbers = [self.values[i][attr] for i in items]
            facts = [self._fact(i, attr) for i in items]
            if op == "sum":
                value = sum(numbers)
                question = f'What is the total "{attr}" of {noun(quoted)}?'
                derived = f"total_{_token(attr)}_of_{_token(relation)}"
                phrase = f'the total "{attr}" of {noun("{x}")}'
            elif op == "mean":
                value = sum(numbers) / len(numbers)
                question = f'What is the average "{attr}" of {noun(quoted)}? Round to 2 decimals.'
                derived = f"mean_{_token(attr)}_of_{_token(relation)}"
                phrase = f'the average "{attr}" of {noun("{x}")}'
            else:
                best = max(numbers) if op == "argmax" else min(numbers)
                winners = [i for i, v in zip(items, numbers, strict=True) if v == best]
                if len(winners) > 1:
                    return "tie"
                names = [self.names.get(i, self.csr.entity_ids[i]) for i in items]
                if len(set(map(normalize_answer, names))) < len(names):
                    return "tie"  # two items of one name: the name would not say which
                value = self.names.get(winners[0], self.csr.entity_ids[winners[0]])
                answer_ids = (self.csr.entity_ids[winners[0]],)
                most = "largest" if op == "argmax" else "smallest"
                question = f'Of {noun(quoted)}, which has the {most} "{attr}"?'
                derived = f"{op[3:]}_{_token(attr)}_of_{_token(relation)}"
                phrase = f'the one of {noun("{x}")} with the {most} "{attr}"'
        return self._task(
            op,
            key=[self.csr.entity_ids[subject], relation, attr],
            question=question,
            value=value,
            answer_ids=answer_ids,
            hops=1,
            entities=[subject, *(items if op != "count" else [])],
            facts=facts,
            expand=[[self.csr.entity_ids[subject], relation]],
            relations=[relation],
            start_names=[sname],
            subject=subject,
            derived=derived,
            phrase=phrase,
        )

    def _compare(self, rng: random.Random) -> Task | str:
        relations = sorted(r for r, segs in self._single_by_rel.items() if len(segs) >= 2)
        if not relations:
            return "no_chain"
        rel = rng.choice(relations)
        a, b = rng.sample(self._single_by_rel[rel], 2)
        (x, tx), (y, ty) = [(int(self._seg_node[s]), self._targets(s)[0]) for s in (a, b)]
        if len({x, y, tx, ty}) < 4:
            return "no_chain"
        common = sorted(
            k
            for k in set(self.values[tx]) & set(self.values[ty])
            if self.values[tx][k] != self.values[ty][k]
        )
        if not common:
            return "no_attribute"
        attr = rng.choice(common)
        larger = rng.random() < 0.5
        vx, vy = self.values[tx][attr], self.values[ty][attr]
        winner = tx if (vx > vy) == larger else ty
        names = {i: self.names.get(i, self.csr.entity_ids[i]) for i in (x, y, tx, ty)}
        if normalize_answer(names[tx]) == normalize_answer(names[ty]):
            return "tie"
        relation = self.csr.relation_types[rel]
        question = (
            f'Which has the {"larger" if larger else "smaller"} "{attr}": '
            f"{self._noun([rel], _quoted(names[x]))} or {self._noun([rel], _quoted(names[y]))}?"
        )
        ids = self.csr.entity_ids
        return self._task(
            "compare",
            key=sorted([ids[x], ids[y]]) + [relation, attr, larger],
            question=question,
            value=names[winner],
            answer_ids=(ids[winner],),
            hops=1,
            entities=[x, tx, y, ty],
            facts=[self._fact(tx, attr), self._fact(ty, attr)],
            expand=[[ids[x], relation], [ids[y], relation]],
            relations=[relation, relation],
            start_names=[names[x], names[y]],
            subject=None,
            derived="",
            phrase="",
            operation="max" if larger else "min",
        )

    def _difference(self, rng: random.Random, hops: int | None) -> Task | str:
        if not self._difference_starts:
            return "no_chain"
        cfg = self.config
        start = self._difference_starts[rng.randrange(len(self._difference_starts))]
        length = hops if hops is not None else rng.randint(1, cfg.max_chain_hops)
        chain, node = [start], start
        relations: list[int] = []
        for _ in range(length):
            options = [(r, t) for r, t in self._hops.get(node, []) if t not in chain]
            if not options:
                return "no_chain"
            r, node = rng.choice(options)
            relations.append(r)
            chain.append(node)
        end = chain[-1]
        pairs = [
            (a1, a2)
            for a1 in sorted(self.values[start])
            for a2 in sorted(self.values.get(end, {}))
            if a1 == a2 or any(a1 in g and a2 in g for g in cfg.difference_groups)
        ]
        if not pairs:
            return "no_attribute"
        a1, a2 = rng.choice(pairs)
        v1, v2 = self.values[start][a1], self.values[end][a2]
        ids = self.csr.entity_ids
        sname = self.names.get(start, ids[start])
        quoted = f'"{sname}"'
        rel_names = [self.csr.relation_types[r] for r in relations]
        question = (
            f'What is the "{a1}" of {quoted} minus the "{a2}" of {self._noun(relations, quoted)}?'
        )
        derived = f"{_token(a1)}_minus_{_token(a2)}_of_" + "_".join(map(_token, rel_names))
        phrase = f'the "{a1}" of {{x}} minus the "{a2}" of {self._noun(relations, "{x}")}'
        return self._task(
            "difference",
            key=[ids[start], *rel_names, a1, a2],
            question=question,
            value=v1 - v2,
            answer_ids=(),
            hops=length,
            entities=chain,
            facts=[self._fact(start, a1), self._fact(end, a2)],
            expand=[[ids[a], rel_names[k]] for k, a in enumerate(chain[:-1])],
            relations=rel_names,
            start_names=[sname],
            subject=start,
            derived=derived,
            phrase=phrase,
        )

    def _task(
        self,
        template: str,
        *,
        key: list[Any],
        question: str,
        value: Any,
        answer_ids: tuple[str, ...],
        hops: int,
        entities: list[int],
        facts: list[dict[str, Any]],
        expand: list[list[str]],
        relations: list[str],
        start_names: list[str],
        subject: int | None,
        derived: str,
        phrase: str,
        operation: str | None = None,
    ) -> Task | str:
        cfg = self.config
        numeric = template not in ENTITY_TEMPLATES
        text = format_number(value) if numeric else str(value)
        if leaked_answer(question, [text]) is not None:
            return "shortcut"
        tid, signature = _task_id(template, key)
        ids = self.csr.entity_ids
        tolerance = 0.0
        if numeric and not float(value).is_integer():
            tolerance = cfg.float_tolerance
        first = subject if subject is not None else entities[0]
        return Task(
            id=tid,
            family=FAMILY,
            domain=self.domains.get(first, ""),
            question=question,
            answers=(text,),
            answer_ids=answer_ids,
            hops=hops,
            walk_signature=signature,
            status="active",
            path={"entities": list(dict.fromkeys(ids[i] for i in entities))},
            props={
                "template": template,
                "operation": operation
                or {"argmax": "max", "argmin": "min"}.get(template, template),
                "answer_kind": "number" if numeric else "entity",
                "value": value,
                "tolerance": tolerance,
                "rel_tolerance": cfg.rel_tolerance if numeric else 0.0,
                "facts": facts,
                "expand": expand,
                "relations": relations,
                "start_name": start_names[0],
                "start_names": start_names,
                "subject": ids[subject] if subject is not None else None,
                "attribute": derived,
                "derived_phrase": phrase,
                "verifiers": list(self._verifiers),
            },
        )


# a target name that is a number: "1999", "-3", "7.5" (not "1,234" or "7.5 stars")
_LITERAL = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _literal_number(text: str) -> int | float:
    """The number a literal target names: `_literal_number("1999") == 1999`, `"7.5"` -> 7.5."""
    return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)


def _template_hops_ok(template: str, hops: int | None, cfg: ComputeConfig) -> bool:
    if hops is None:
        return True
    if template == "difference":
        return 1 <= hops <= cfg.max_chain_hops
    return hops == 1


# --------------------------------------------------------------------------- verifier


def _final_answer(trajectory: Any) -> str | None:
    for m in reversed(trajectory_messages(trajectory)):
        if m.get("role") == "assistant":
            return extract_answer(m.get("content") or "")
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class NumericMatch(TrajectoryVerifier):
    """`numeric_match@1`: the final `<answer>` gives the task's number, within tolerance.

    Numeric tasks: `parse_number` reads the answer's one number x (several different numbers,
    or none, fail); it passes when ``|x - value| <= max(tolerance, rel_tolerance * |value|)``,
    with `tolerance` and `rel_tolerance` from the task's props (else this verifier's
    defaults). Score: 1 within tolerance, else ``partial_credit * max(0, 1 - |x - value| /
    max(|value|, 1))``, so a near miss scores above a far one and both below a pass.
    Entity tasks (`props["answer_kind"] == "entity"`: argmax, argmin, compare): the answer must
    name the one valid entity and nothing else, as `answer_match@2` reads names; score: F1.
    """

    name: ClassVar[str] = "numeric_match"
    version: ClassVar[str] = "1"
    #: absolute tolerance when the task sets none
    abs_tolerance: float = 0.0
    #: relative tolerance when the task sets none
    rel_tolerance: float = 0.0
    #: the highest score of a number outside tolerance (it decays linearly with the error)
    partial_credit: float = 0.5

    def __post_init__(self) -> None:
        if self.abs_tolerance < 0 or self.rel_tolerance < 0:
            raise ValueError("numeric_match tolerances must be >= 0")
        if not 0.0 <= self.partial_credit < 1.0:
            raise ValueError(
                f"numeric_match partial_credit must be in [0, 1), got {self.partial_credit}"
            )

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        answer = _final_answer(trajectory)
        if answer is None:
            return VerifierResult(
                passed=False,
                score=0.0,
                detail="no <answer>...</answer> in the final assistant message",
            )
        props = task.props
        if "value" not in props:
            return VerifierResult(
                passed=None,
                score=0.0,
                detail=f"task {task.id!r} has no props['value'] to compare with",
            )
        if props.get("answer_kind") == "entity":
            s = score_answer(answer, task.answers)
            passed = s.precision == 1.0 and s.recall == 1.0
            return VerifierResult(
                passed=passed,
                score=s.f1,
                detail=f"{answer[:120]!r} {'names' if passed else 'is not'} {task.answers[0]!r}"
                if task.answers
                else "the task has no answer",
            )
        value = float(props["value"])
        x = parse_number(answer)
        if x is None:
            n = len(set(numbers_in(answer)))
            why = "no number" if n == 0 else f"{n} different numbers"
            return VerifierResult(
                passed=False,
                score=0.0,
                detail=f"answer {answer[:120]!r} gives {why}; one is needed",
            )
        tol = max(
            float(props.get("tolerance", self.abs_tolerance)),
            float(props.get("rel_tolerance", self.rel_tolerance)) * abs(value),
        )
        error = abs(x - value)
        if error <= tol:
            return VerifierResult(
                passed=True,
                score=1.0,
                detail=f"{format_number(x)} is within {format_number(tol)} of {format_number(value)}",
            )
        score = self.partial_credit * max(0.0, 1.0 - error / max(abs(value), 1.0))
        return VerifierResult(
            passed=False,
            score=score,
            detail=f"{format_number(x)} is {format_number(error)} from {format_number(value)} "
            f"(tolerance {format_number(tol)})",
        )


def suite(*, judge: LLMJudge | None = None, reward: RewardConfig | None = None) -> VerifierSuite:
    """The compute family's suite. Required: `numeric_match@1`, `evidence_coverage@2`,
    `no_shortcut@1`, `tool_call_validity@1`; optional: `process@1` and the LLM judge when given;
    steps: `tool_step@2`. The reward's outcome is `numeric_match`.

    >>> suite().ids[:4]
    ['numeric_match@1', 'evidence_coverage@2', 'no_shortcut@1', 'tool_call_validity@1']
    """
    optional: list[TrajectoryVerifier] = [ProcessCheck()]
    if judge is not None:
        optional.append(judge)
    return VerifierSuite(
        required=[NumericMatch(), EvidenceCoverage(), NoShortcut(), ToolCallValidity()],
        optional=optional,
        steps=ToolStepCheck(),
        reward=reward or RewardConfig(outcome=NumericMatch.name),
    )


#: the same as `suite`, under a name that says which family's it is where several are imported
compute_suite = suite


# --------------------------------------------------------------------------- oracle


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return None


@dataclass(slots=True)
class _Seen:
    """What a compute trajectory's observations told so far."""

    known: set[str]
    expanded: dict[tuple[str, str], list[tuple[str, str]]]
    read: dict[str, dict[str, Any]]
    python_out: str | None
    #: entity id -> name, as the observations named it
    names: dict[str, str]


def _seen(messages: list[dict[str, Any]]) -> _Seen:
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    out = _Seen(known=set(), expanded={}, read={}, python_out=None, names={})
    for m in messages:
        if m["role"] == "assistant":
            for c in m.get("tool_calls") or ():
                fn = c.get("function") or {}
                args = _json(fn.get("arguments") or "{}")
                calls[str(c.get("id"))] = (
                    str(fn.get("name")),
                    args if isinstance(args, dict) else {},
                )
        elif m["role"] == "tool" and str(m.get("tool_call_id")) in calls:
            name, args = calls[str(m.get("tool_call_id"))]
            obs = _json(m.get("content"))
            if not isinstance(obs, dict) or "error" in obs:
                continue
            for item in [
                *obs.get("results", []),
                *obs.get("relations", []),
                obs.get("entity"),
                obs,
            ]:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    out.names.setdefault(item["id"], str(item.get("name") or item["id"]))
            if name == "search_entities":
                out.known.update(r["id"] for r in obs.get("results", []))
            elif name == "get_relations":
                key = (str(args.get("entity_id")), str(args.get("relation")))
                found = [
                    (r["id"], r.get("name") or r["id"])
                    for r in obs.get("relations", [])
                    if r.get("relation") == key[1] and r.get("direction", "out") == "out"
                ]
                out.expanded[key] = found
                out.known.update(i for i, _ in found)
            elif name == "get_entity":
                out.read[str(obs.get("id"))] = obs
            elif name == "python":
                out.python_out = str(obs.get("stdout", "")).strip()
    return out


class ComputeOraclePolicy:
    """Gold policy of compute tasks, through the same solver, tools and verifiers as a model.

    | turn | the oracle writes                                                                  |
    |------|------------------------------------------------------------------------------------|
    | 1    | `search_entities(query=<start name>)` for each start entity                        |
    | 2..  | `get_relations(entity_id, relation)` for each list to follow (`props["expand"]`),  |
    |      | and `get_entity(entity_id)` for each fact entity once it has been seen            |
    | next | `python(code=...)` with the values READ from the observations                      |
    |      | (`print(sum([161, 75]))`, `print(1999 - 1987)`, `print(max(..., key=...))`)       |
    | last | `<answer>` + the python tool's output + `</answer>`                                |

    It never copies the task's stored value: a wrong number in the graph's observations would
    give a wrong answer, as it would for a model. Tasks of another family go to `fallback`
    (default: the search `OraclePolicy`), so one oracle serves a run that mixes families.
    """

    def __init__(
        self, *, name: str = "oracle", max_calls_per_turn: int = 8, fallback: Any = None
    ) -> None:
        if max_calls_per_turn < 1:
            raise ValueError("max_calls_per_turn must be >= 1")
        if fallback is None:
            from selfplay.oracle import OraclePolicy

            fallback = OraclePolicy(name=name, max_calls_per_turn=max_calls_per_turn)
        self.name = name
        self.max_calls_per_turn = max_calls_per_turn
        self.fallback = fallback

    def count_tokens(self, rollout: Rollout, *, tools: list[dict[str, Any]]) -> int:
        """The search oracle's rough count: neither oracle has a tokenizer."""
        return self.fallback.count_tokens(rollout, tools=tools)

    def act(self, requests: Sequence[TurnRequest], *, tools: list[dict[str, Any]]) -> list[Action]:
        others = [r for r in requests if r.rollout.task.family != FAMILY]
        delegated = iter(self.fallback.act(others, tools=tools) if others else [])
        return [
            Action(text=self._next(r), finish_reason="stop")
            if r.rollout.task.family == FAMILY
            else next(delegated)
            for r in requests
        ]

    def _next(self, request: TurnRequest) -> str:
        r = request.rollout
        props = r.task.props
        seen = _seen(r.messages)
        if request.final or seen.python_out is not None:
            return f"<answer>{seen.python_out or ''}</answer>"
        n = sum(m["role"] == "assistant" for m in r.messages)
        if n == 0:
            names = props.get("start_names") or [props.get("start_name", "")]
            return _call_text(
                "Find the start entities.", [("search_entities", {"query": q}) for q in names]
            )
        calls: list[tuple[str, dict[str, Any]]] = []
        facts = props.get("facts", [])
        lists = [(e, rel) for e, rel in props.get("expand", [])]
        lists += [(f["entity_id"], f["relation"]) for f in facts if f.get("relation")]
        pending_expand = [key for key in dict.fromkeys(lists) if key not in seen.expanded]
        pending_read = [
            f["entity_id"]
            for f in facts
            if not f.get("relation") and f["entity_id"] not in seen.read
        ]
        pending_read = list(dict.fromkeys(pending_read))
        ready_expand = [(e, rel) for e, rel in pending_expand if e in seen.known]
        ready_read = [e for e in pending_read if e in seen.known]
        if not ready_expand and not ready_read:
            # nothing of the plan seen yet (a search listed other entities): act on it anyway
            if pending_expand:
                ready_expand = pending_expand[:1]
            else:
                ready_read = pending_read[:1]
        calls += [("get_relations", {"entity_id": e, "relation": rel}) for e, rel in ready_expand]
        calls += [("get_entity", {"entity_id": e}) for e in ready_read]
        if calls:
            return _call_text("Collect the facts.", calls[: self.max_calls_per_turn])
        return _call_text("Compute.", [("python", {"code": _code(props, seen)})])


def _code(props: Mapping[str, Any], seen: _Seen) -> str:
    """The python the oracle runs, from the values its observations gave."""
    op = props.get("operation")
    if op == "count":
        e, rel = props["expand"][0]
        items = [name for _, name in seen.expanded.get((e, rel), [])]
        return f"items = {items!r}\nprint(len(items))"
    values: list[tuple[str, Any]] = []
    for f in props.get("facts", []):
        if f.get("relation"):  # a literal target: its name is the number
            found = seen.expanded.get((f["entity_id"], f["relation"]), [])
            number = _literal_number(found[0][1].strip()) if found else None
            values.append((seen.names.get(f["entity_id"], f["entity_id"]), number))
            continue
        obs = seen.read.get(f["entity_id"], {})
        values.append(
            (str(obs.get("name", f["entity_id"])), (obs.get("props") or {}).get(f["attribute"]))
        )
    if op == "difference":
        return f"print({values[0][1]!r} - {values[1][1]!r})"
    # a total or an average needs the numbers alone: no name to copy that could go wrong
    numbers = [v for _, v in values]
    if op == "sum":
        return f"print(sum({numbers!r}))"
    if op == "mean":
        return f"values = {numbers!r}\nprint(round(sum(values) / len(values), 2))"
    pick = "max" if op == "max" else "min"
    return f"values = {values!r}\nprint({pick}(values, key=lambda item: item[1])[0])"


def _call_text(thought: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    blocks = "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
        + "\n</tool_call>"
        for name, args in calls
    )
    return f"<think>{thought}</think>\n{blocks}"


# --------------------------------------------------------------------------- growth


def derived_entity_id(task_id: str) -> str:
    """The id of the fact a compute task derives.

    >>> derived_entity_id("task:0123")
    'derived:task:0123'
    """
    return DERIVED_PREFIX + task_id


def _edge(kind: str, source_kind: str, source: str, target_kind: str, target: str) -> Edge:
    return Edge(
        kind=kind, source_kind=source_kind, source=source, target_kind=target_kind, target=target
    )


def growth_batch(scored: ScoredRollout) -> GraphBatch:
    """The new knowledge one scored compute rollout adds (empty unless it was accepted).

    A derived Entity (`derived_entity_id(task.id)`), PRODUCES from the `python` tool Step whose
    output the answer repeats (else the last python Step, else the final assistant Step),
    DEPENDS_ON from that Step to every tool Step that acted on an entity of the task's facts or
    lists (`get_entity`, `get_relations`) without an error, and the relation `subject
    -[props["attribute"]]-> derived fact` (argmax/argmin: `-> the winning entity`) with its
    phrase. Ids are deterministic, so writing it twice changes nothing; several accepted
    trajectories of one task share one derived Entity, each with its own PRODUCES edge.
    """
    r = scored.rollout
    task = r.task
    props = task.props
    batch = GraphBatch()
    subject = props.get("subject")
    attribute = props.get("attribute")
    if scored.verdict != "accepted" or task.family != FAMILY or not subject or not attribute:
        return batch
    messages = r.messages
    steps = [s for s in tool_steps(messages) if not s.malformed]
    answer = _final_answer(messages) or ""
    python = [s for s in steps if s.name == "python"]
    producer: int | None = None
    for s in reversed(python):
        out = _json(s.observation)
        stdout = str(out.get("stdout", "")).strip() if isinstance(out, dict) else ""
        if stdout and normalize_answer(stdout) == normalize_answer(answer):
            producer = s.index
            break
    if producer is None and python:
        producer = python[-1].index
    if producer is None:
        producer = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    fact_ids = {f["entity_id"] for f in props.get("facts", [])} | {
        e for e, _ in props.get("expand", [])
    }
    sources = [
        s.index
        for s in steps
        if s.index < producer
        and s.name in ("get_entity", "get_relations")
        and set(s.acted_on) & fact_ids
        and "error" not in (_json(s.observation) or {})
    ]
    derived_id = derived_entity_id(task.id)
    value = props["value"]
    entity_answer = props.get("answer_kind") == "entity"
    text = str(value) if entity_answer else format_number(value)
    phrase = str(props.get("derived_phrase") or "")
    label = phrase.replace("{x}", f'"{props.get("start_name", subject)}"') if phrase else attribute
    batch.add(
        Entity(
            id=derived_id,
            name=f"{label}: {text}",
            type=DERIVED_TYPE,
            domain=task.domain,
            description=f"derived by self-play from task {task.id}: {label} is {text}",
            props={
                "derived": True,
                "value": value,
                "attribute": attribute,
                "operation": props.get("operation"),
                "task_id": task.id,
                "subject": subject,
                "facts": list(props.get("facts", [])),
                **({"answer_id": task.answer_ids[0]} if entity_answer and task.answer_ids else {}),
            },
        )
    )
    target = task.answer_ids[0] if entity_answer and task.answer_ids else derived_id
    batch.add(Relation(source=subject, type=attribute, target=target, props={"derived": True}))
    if phrase:
        batch.phrases[attribute] = phrase
    producer_id = step_id(r.id, producer)
    batch.add(_edge("PRODUCES", "Step", producer_id, "Entity", derived_id))
    for index in sources:
        batch.add(_edge("DEPENDS_ON", "Step", producer_id, "Step", step_id(r.id, index)))
    return batch
