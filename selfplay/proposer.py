"""Walks to verifiable tasks: the proposer of self-play.

A walk `e0 -[r1]-> e1 -[r2]-> ... -[rH]-> eH` becomes a `Task`:

| part          | from                                                                          |
|---------------|-------------------------------------------------------------------------------|
| question      | the start entity's name and the phrase of each relation (`relation_phrase`:   |
|               | the graph's, else one inferred from the name); with `rewrite`, the engine's   |
|               | rewrite when `accept_rewrite` keeps it                                        |
| answers       | every entity the chain r1..rH reaches from e0 (set semantics, on the CSR)     |
| evidence      | the path's entities (SUPPORTS edges)                                          |
| verifiers     | the ids in `ProposerConfig.verifiers` (CHECKED_BY edges)                      |
| id            | `task:` + the walk signature, so reruns never duplicate a task                |

Three task shapes (`ProposerConfig.shapes`; `Task.path` holds the chains, `kag.walks.path_branches`
reads them):

| shape        | question                                             | answers                          |
|--------------|------------------------------------------------------|----------------------------------|
| `chain`      | "What is the genre of a film directed by "X"?"       | what the chain reaches from X    |
| `set`        | "Which entities are both a film directed by "X" and  | reach(X, [~directed_by]) ∩       |
|              | a film of genre "Y"?" (two chains, WebShaper-style)  | reach(Y, [~has_genre])           |
| `obfuscated` | "What is the genre of the only entity that is a film | the chain from the start, which  |
|              | directed by "X"?" (the start described, not named:   | the description pins down        |
|              | WebSailor-style)                                     | uniquely                         |

A set task's answer set is non-empty, at most `max_answers` and smaller than each constraint's
alone (both constraints matter); an obfuscated start is the one entity its description (one
relation to a named entity, or two intersected) reaches, and the question names neither it nor
any answer. Every expansion behind a set constraint or a description lists at most `max_fanout`
entities, so one `get_relations` call sees all of it.

Tasks whose question names one of their answers (a shortcut, `selfplay.answers.leaked_answer`, the
check the `no_shortcut` verifier makes) or that reach too many answers are rejected; walks whose signature is already a task (in this batch or in the graph) are skipped.

>>> proposer = Proposer(graph, config=ProposerConfig(verifiers=("answer_match@2",)))  # doctest: +SKIP
>>> proposer.propose(8, hops=2, seed=0).tasks[0].question  # doctest: +SKIP
'What is the place where the city where "Ada Lovelace" was born is located?'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kag.coverage import Coverage
from kag.schema import Entity, Task
from kag.stores.base import GraphStore
from kag.walks import (
    WALK_DIRECTIONS,
    CSRGraph,
    PathBranch,
    Walk,
    WalkDirections,
    WalkMode,
    flip_step,
    parse_step,
    sample_walks,
    walk_signature,
)
from selfplay.answers import leaked_answer
from selfplay.phrases import infer_inverse_phrase, infer_relation_phrase

__all__ = [
    "SEARCH_SHAPES",
    "ProposerConfig",
    "Proposal",
    "Proposer",
    "relation_phrase",
    "render_question",
    "render_set_question",
    "shape_signature",
    "accept_rewrite",
    "REWRITE_REFUSALS",
    "task_id_for",
]

TASK_ID_PREFIX = "task:"
# a reasoning model's thoughts are not part of its rewrite
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def relation_phrase(relation: str, phrases: Mapping[str, str] | None = None) -> str:
    """The phrase of a walk step: the graph's phrase when set, else a `{x}` template inferred
    from its name (`selfplay.phrases.infer_relation_phrase`; for an inverse step `~r`,
    `infer_inverse_phrase`). A phrase file gives an inverse step's phrase under the key `~r`.

    >>> relation_phrase("/film/film/directed_by")
    'the director of {x}'
    >>> relation_phrase("starredActors")
    'the actors starring in {x}'
    >>> relation_phrase("born_in", {"born_in": "was born in"})
    'was born in'
    >>> relation_phrase("~directed_by"), relation_phrase("~r", {"~r": "what {x} made"})
    ('a film directed by {x}', 'what {x} made')
    """
    if phrases and phrases.get(relation):
        return phrases[relation]
    base, direction = parse_step(relation)
    if direction == "in":
        return infer_inverse_phrase(base)
    return infer_relation_phrase(relation)


def render_question(
    start_name: str, phrases: Sequence[str], *, start_text: str | None = None
) -> str:
    """The task question of a walk from its start entity's name and its relation phrases.

    Phrases with `{x}` for the subject (`"the city where {x} was born"`) nest; any other phrase
    makes a chain of relations to follow. The start entity's name is always quoted, as it is in the
    tool calls and observations that name it, so the agent copies it verbatim (and a name such as
    "A Broken Shadow" never reads as part of the sentence).

    >>> render_question("Ada", ["the city where {x} was born", "the country {x} is in"])
    'What is the country the city where "Ada" was born is in?'
    >>> render_question("Ada", ["born in", "located in"])
    'Start from "Ada" and follow "born in", then "located in". Which entities do you reach?'

    `start_text` stands in for the quoted name (an obfuscated start: a description of it):

    >>> render_question("", ["the genre of {x}"], start_text='the only entity that is a film directed by "X"')
    'What is the genre of the only entity that is a film directed by "X"?'
    """
    if not phrases:
        raise ValueError("a question needs at least one relation phrase")
    start = start_text if start_text is not None else f'"{start_name}"'
    if all("{x}" in p for p in phrases):
        text = start
        for phrase in phrases:
            text = phrase.replace("{x}", text)
        return f"What is {text}?"
    chain = ", then ".join(f'"{p.replace("{x}", "it")}"' for p in phrases)
    return f"Start from {start} and follow {chain}. Which entities do you reach?"


def _branch_text(anchor_name: str, phrases: Sequence[str]) -> str:
    """A noun phrase for what a chain reaches from a named entity.

    >>> _branch_text("X", ["a film directed by {x}"])
    'a film directed by "X"'
    >>> _branch_text("X", ["born in"])
    'reached from "X" by following "born in"'
    """
    if all("{x}" in p for p in phrases):
        text = f'"{anchor_name}"'
        for phrase in phrases:
            text = phrase.replace("{x}", text)
        return text
    chain = ", then ".join(f'"{p.replace("{x}", "it")}"' for p in phrases)
    return f'reached from "{anchor_name}" by following {chain}'


def render_set_question(branches: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The question of a set task: what every chain (anchor name, relation phrases) reaches.

    >>> render_set_question([("X", ["a film directed by {x}"]), ("Y", ["a film of genre {x}"])])
    'Which entities are both a film directed by "X" and a film of genre "Y"?'
    """
    if len(branches) < 2:
        raise ValueError("a set question needs at least two constraints")
    texts = [_branch_text(name, phrases) for name, phrases in branches]
    return f"Which entities are both {' and '.join(texts)}?"


def _described_start(descriptions: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The words that stand for an obfuscated start entity.

    >>> _described_start([("X", ["a film directed by {x}"])])
    'the only entity that is a film directed by "X"'
    """
    texts = [_branch_text(name, phrases) for name, phrases in descriptions]
    if len(texts) == 1:
        return f"the only entity that is {texts[0]}"
    return f"the only entity that is both {' and '.join(texts)}"


def shape_signature(shape: str, branches: Sequence[PathBranch]) -> str:
    """Stable hash of a set or obfuscated task: its shape and each chain's `walk_signature`
    (a set task's chains in sorted order, so the same intersection found from either side is
    one task); never equal to a chain task's signature, which hashes no shape.

    >>> a, b = PathBranch(("x", "f"), ("~r",)), PathBranch(("y", "f"), ("~s",))
    >>> shape_signature("set", [a, b]) == shape_signature("set", [b, a])
    True
    """
    parts = [[b.role, walk_signature(b.entities[0], b.relations)] for b in branches]
    if shape == "set":
        parts.sort()
    payload = json.dumps([shape, parts], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


#: the task shapes the search proposer makes (`ProposerConfig.shapes`)
SEARCH_SHAPES: tuple[str, ...] = ("chain", "set", "obfuscated")


#: why `accept_rewrite` refuses a rewrite: the first word of its reason
REWRITE_REFUSALS = (
    "empty",
    "not_one_question",
    "too_long",
    "drops_start_name",
    "names_answer",
    "names_answer_id",
)


def accept_rewrite(task: Task, text: str) -> str | None:
    """None when `text` may replace `task`'s templated question, else why not.

    A rewrite must be one line ending in `?`, at most four times as long as the template, keep
    the start entity's quoted name exactly (`"Ada"`, as tool calls and observations name it), and
    name no answer and no answer id (`selfplay.answers.leaked_answer`, the check the
    `no_shortcut` verifier makes, so a kept rewrite never makes a task unacceptable). The reason
    starts with its kind, one of `REWRITE_REFUSALS`.

    >>> task = Task(id="t", question='What is the spouse of "Ada"?', answers=("Bob",),
    ...             answer_ids=("p:bob",), props={"start_name": "Ada"})
    >>> accept_rewrite(task, 'Who is "Ada" married to?') is None
    True
    >>> accept_rewrite(task, 'Is "Ada" married to Bob?')
    "names_answer: the rewrite names the answer 'Bob'"
    >>> accept_rewrite(task, "Who is Ada married to?")
    'drops_start_name: the rewrite does not keep the quoted start name "Ada"'
    """
    text = text.strip()
    if not text:
        return "empty: the engine gave no text"
    if "\n" in text or not text.endswith("?"):
        return f"not_one_question: the rewrite is not one line ending in '?': {text[:80]!r}"
    limit = 4 * len(task.question)
    if len(text) > limit:
        return f"too_long: {len(text)} characters, more than {limit} (4 x the template)"
    props = task.props or {}
    # a set or obfuscated task names several entities (`start_names`): each must stay
    for start_name in props.get("start_names") or [props.get("start_name", "")]:
        start_name = str(start_name)
        if start_name and f'"{start_name}"' not in text:
            return (
                f'drops_start_name: the rewrite does not keep the quoted start name "{start_name}"'
            )
    leaked = leaked_answer(text, task.answers)
    if leaked is not None:
        return f"names_answer: the rewrite names the answer {leaked!r}"
    leaked = leaked_answer(text, task.answer_ids)
    if leaked is not None:
        return f"names_answer_id: the rewrite names the answer id {leaked!r}"
    return None


def task_id_for(signature: str) -> str:
    """The deterministic task id of a walk signature: `task:` + its first 32 hex digits.

    >>> task_id_for("a83da57a31c3" * 6)
    'task:a83da57a31c3a83da57a31c3a83da57a'
    """
    return TASK_ID_PREFIX + signature[:32]


@dataclass(frozen=True, kw_only=True, slots=True)
class ProposerConfig:
    """How walks become tasks."""

    #: walk sampler mode (`kag.walks`); "non_backtracking" avoids "the X of the Y of X" loops
    mode: WalkMode = "non_backtracking"
    #: "out" walks relations from source to target only; "both" also walks them backwards as
    #: inverse steps `~r` ("a film directed by X", `kag.walks.parse_step`), for graphs whose
    #: multi-hop questions run against the edge direction (MetaQA: film -> person edges only)
    directions: WalkDirections = "out"
    #: tasks reaching more answers than this are rejected (a question with 200 answers tests recall
    #: of a list, not multi-hop reasoning)
    max_answers: int = 10
    #: entities with more out-edges are never walked through (None: no limit); answers are still
    #: computed on the whole graph
    max_out_degree: int | None = 200
    #: verifier ids attached to every task (CHECKED_BY); they must exist as Verifier nodes
    verifiers: tuple[str, ...] = ()
    #: only relation types in this list (None: all)
    relation_types: tuple[str, ...] | None = None
    #: walks sampled per task asked for; dead ends, duplicates and shortcuts eat some of them
    oversample: int = 4
    #: sampling rounds with fresh seeds before giving up on filling a request
    max_rounds: int = 8
    #: coverage-driven sampling: weight start entities by 1 / (1 + accepted tasks)^strength and
    #: prefer walks over the least-covered relation types (0 turns it off)
    coverage_strength: float = 1.0
    #: ask the engine to rewrite each question in natural language; a rewrite is kept only when
    #: `accept_rewrite` finds nothing wrong (it keeps the quoted start name and names no answer),
    #: else the template stays. `SelfPlayConfig` runs it on the policy's engine
    rewrite: bool = False
    #: new tokens for a rewrite
    rewrite_max_tokens: int = 96
    #: task shapes to propose, the tasks asked for shared out over them in this order
    #: (`SEARCH_SHAPES`): "chain" (a walk), "set" (two chains intersected) and "obfuscated" (a
    #: chain whose start is described by its relations, not named); see the module docstring.
    #: Default chain only, the tasks every run made before shapes existed
    shapes: tuple[str, ...] = ("chain",)
    #: set and obfuscated tasks only: every `get_relations` expansion behind a constraint or a
    #: description, and each constraint's whole set, lists at most this many entities (default
    #: 50, the most the graph tools' `get_relations` lists), so a solver sees all of it
    max_fanout: int = 50

    def __post_init__(self) -> None:
        if self.max_answers < 1:
            raise ValueError(f"max_answers must be >= 1, got {self.max_answers}")
        if self.directions not in WALK_DIRECTIONS:
            raise ValueError(
                f"directions must be one of {list(WALK_DIRECTIONS)}, got {self.directions!r}"
            )
        if self.oversample < 1 or self.max_rounds < 1:
            raise ValueError("oversample and max_rounds must be >= 1")
        if self.coverage_strength < 0:
            raise ValueError(f"coverage_strength must be >= 0, got {self.coverage_strength}")
        if self.max_out_degree is not None and self.max_out_degree < 1:
            raise ValueError(f"max_out_degree must be >= 1 or None, got {self.max_out_degree}")
        if isinstance(self.shapes, str):
            raise ValueError(
                f"shapes must be a list of shape names, not the string {self.shapes!r}"
            )
        object.__setattr__(self, "shapes", tuple(self.shapes))
        unknown = [x for x in self.shapes if x not in SEARCH_SHAPES]
        if not self.shapes or unknown or len(set(self.shapes)) != len(self.shapes):
            raise ValueError(
                f"shapes must name each of {', '.join(SEARCH_SHAPES)} at most once (at least "
                f"one), got {list(self.shapes)}"
            )
        if self.max_fanout < 1:
            raise ValueError(f"max_fanout must be >= 1, got {self.max_fanout}")


@dataclass(slots=True)
class Proposal:
    """Tasks from one `propose` call and why the other walks were dropped."""

    tasks: list[Task] = field(default_factory=list)
    #: reason -> walks dropped: dead_end, duplicate, known (already in the graph), shortcut,
    #: too_many_answers
    dropped: Counter = field(default_factory=Counter)
    walks: int = 0
    #: question rewrites (`ProposerConfig.rewrite`): "kept", and one count per refusal kind
    #: (`REWRITE_REFUSALS`); the template stays for every refused one
    rewrites: Counter = field(default_factory=Counter)
    #: shape -> reason -> walks dropped, for a proposer of several shapes (`dropped` sums
    #: them); set and obfuscated tasks add too_broad (an expansion lists more than
    #: `max_fanout`), not_narrowing (a set constraint alone gives the answers), not_unique (no
    #: description pins the start down), too_few_hops and names_start
    dropped_by_shape: dict[str, Counter] = field(default_factory=dict)


class Proposer:
    """Samples walks on a graph's CSR and turns them into tasks (see the module docstring).

    `graph` is a `KnowledgeActionGraph` or a store; the CSR is built once (pass `csr=` to share).
    """

    def __init__(
        self,
        graph: Any,
        *,
        config: ProposerConfig | None = None,
        csr: CSRGraph | None = None,
        engine: Any = None,
    ) -> None:
        self.store: GraphStore = getattr(graph, "store", graph)
        self.config = config or ProposerConfig()
        if self.config.rewrite and engine is None:
            raise ValueError("ProposerConfig.rewrite=True needs an engine")
        self.engine = engine
        self.csr = csr if csr is not None else CSRGraph.from_store(self.store)
        if self.csr.n_edges == 0:
            raise ValueError(
                f"{self.store.url} has no relations to walk; import triples first "
                "(`kag import triples` or `kag generate world`)"
            )
        if self.config.relation_types is not None:
            self.csr_walk = self.csr.filter(relation_types=list(self.config.relation_types))
        else:
            self.csr_walk = self.csr
        if self.config.directions == "both":  # built once: every round walks the same graph
            self.csr_walk = self.csr_walk.bidirectional()
        self.phrases = self.store.relation_phrases()
        self._both: CSRGraph | None = None
        self._position: dict[str, int] | None = None
        self._rel_index = {r: i for i, r in enumerate(self.csr.relation_types)}

    # ------------------------------------------------------------------ answers

    def reach(self, start: str, relations: Sequence[str]) -> list[str]:
        """Every entity id the relation chain reaches from `start`, sorted (set semantics).

        An inverse step `~r` follows `r` from target to source, over the reverse adjacency.

        >>> Proposer(g).reach("ada", ["born_in", "located_in"])  # doctest: +SKIP
        ['england']
        >>> Proposer(g).reach("london", ["~born_in"])  # doctest: +SKIP
        ['ada']
        """
        frontier = np.array([self._node(start)], dtype=np.int64)
        for step in relations:
            relation, direction = parse_step(step)
            r = self._rel_index.get(relation)
            if r is None:
                return []
            csr = self.csr.reverse if direction == "in" else self.csr
            reached: list[np.ndarray] = []
            for node in frontier.tolist():
                lo, hi = int(csr.indptr[node]), int(csr.indptr[node + 1])
                # edges are sorted by (relation, other end): one binary search per node
                a, b = np.searchsorted(csr.rel[lo:hi], [r, r + 1])
                if b > a:
                    reached.append(csr.indices[lo + a : lo + b])
            if not reached:
                return []
            frontier = np.unique(np.concatenate(reached))
            if frontier.size > 10 * self.config.max_answers + 100:
                # far past max_answers: no need to finish the (possibly huge) expansion
                return [csr.entity_ids[i] for i in frontier.tolist()]
        return sorted(self.csr.entity_ids[i] for i in frontier.tolist())

    # ------------------------------------------------------------------ proposing

    def propose(
        self,
        n: int,
        *,
        hops: int,
        seed: int = 0,
        coverage: Coverage | None = None,
        exclude: Iterable[str] = (),
    ) -> Proposal:
        """Up to `n` new tasks of `hops` hops (fewer when the graph runs out of fresh walks).

        Same arguments and graph give the same tasks. `coverage` (from
        `kag.coverage.coverage_counts`) steers sampling towards least-covered start entities and
        relation types; `exclude` holds task ids to treat as known (besides those in the graph).
        """
        if n < 0 or hops < 1:
            raise ValueError(f"need n >= 0 and hops >= 1, got n={n}, hops={hops}")
        taken: set[str] = set(exclude)
        cfg = self.config
        if cfg.shapes == ("chain",):  # exactly the tasks of a run made before shapes existed
            out = self._propose_chains(n, hops, seed, coverage, taken)
        else:
            out = Proposal()
            base, extra = divmod(n, len(cfg.shapes))
            for i, shape in enumerate(cfg.shapes):
                k = base + (i < extra)
                if k == 0:
                    continue
                if shape == "chain":
                    part = self._propose_chains(k, hops, seed, coverage, taken)
                else:  # a seed of its own, so adding a shape never changes another's tasks
                    part = self._propose_branched(shape, k, hops, seed, i, coverage, taken)
                out.tasks.extend(part.tasks)
                out.walks += part.walks
                out.dropped.update(part.dropped)
                out.dropped_by_shape[shape] = part.dropped
        if self.engine is not None and cfg.rewrite and out.tasks:
            out.tasks = self._rewrite(out.tasks, out.rewrites)
        return out

    def _propose_chains(
        self, n: int, hops: int, seed: int, coverage: Coverage | None, taken: set[str]
    ) -> Proposal:
        out = Proposal()
        cfg = self.config
        for round_ in range(cfg.max_rounds):
            need = n - len(out.tasks)
            if need <= 0:
                break
            walks = self._sample(need * cfg.oversample, hops, seed * 1_000_003 + round_, coverage)
            out.walks += len(walks)
            candidates: dict[str, Walk] = {}
            for walk in walks:
                if walk.hops < hops:
                    out.dropped["dead_end"] += 1
                    continue
                tid = task_id_for(walk.signature)
                if tid in taken or tid in candidates:
                    out.dropped["duplicate"] += 1
                    continue
                candidates[tid] = walk
            known = {t.id for t in self.store.get_nodes("Task", list(candidates))}
            out.dropped["known"] += len(known)
            fresh = [(tid, w) for tid, w in candidates.items() if tid not in known]
            taken.update(candidates)
            if coverage is not None and cfg.coverage_strength > 0:
                fresh.sort(key=lambda item: _coverage_score(item[1], coverage))
            names = self._names({e for _, w in fresh for e in w.entities})
            for tid, walk in fresh:
                if len(out.tasks) >= n:
                    break
                task = self._task(tid, walk, names, out.dropped)
                if task is not None:
                    out.tasks.append(task)
        return out

    def _sample(self, n: int, hops: int, seed: int, coverage: Coverage | None) -> list[Walk]:
        csr = self.csr_walk
        cfg = self.config
        start = None
        if coverage is not None and cfg.coverage_strength > 0:
            degree = csr.out_degree()
            candidates = np.flatnonzero(degree > 0)
            if candidates.size == 0:
                return []
            counts = np.array(
                [coverage.start_entities.get(csr.entity_ids[i], 0) for i in candidates.tolist()],
                dtype=np.float64,
            )
            weight = (1.0 + counts) ** (-4.0 * cfg.coverage_strength)
            rng = np.random.default_rng([seed, 17])
            start = candidates[rng.choice(candidates.size, size=n, p=weight / weight.sum())]
            start = start.astype(np.int32)
        walks = sample_walks(
            csr,
            n,
            hops,
            mode=cfg.mode,
            seed=seed,
            start=start,
            max_out_degree=cfg.max_out_degree,
            dead_end="stop",
        )
        return walks.to_records()

    def _names(self, ids: set[str]) -> dict[str, Entity]:
        found: dict[str, Entity] = {}
        ordered = sorted(ids)
        for a in range(0, len(ordered), 5_000):
            for e in self.store.get_nodes("Entity", ordered[a : a + 5_000]):
                found[e.id] = e  # type: ignore[assignment]
        return found

    def _task(
        self, tid: str, walk: Walk, entities: dict[str, Entity], dropped: Counter
    ) -> Task | None:
        answer_ids = self.reach(walk.entities[0], walk.relations)
        if not answer_ids or len(answer_ids) > self.config.max_answers:
            dropped["too_many_answers" if answer_ids else "dead_end"] += 1
            return None
        answer_entities = self._names(set(answer_ids) - set(entities))
        answer_entities.update(entities)
        start = entities.get(walk.entities[0])
        start_name = (start.name if start else "") or walk.entities[0]
        phrases = [relation_phrase(r, self.phrases) for r in walk.relations]
        question = render_question(start_name, phrases)
        answers = tuple(
            (answer_entities[a].name if a in answer_entities else "") or a for a in answer_ids
        )
        if leaked_answer(question, answers) is not None:
            dropped["shortcut"] += 1
            return None
        return Task(
            id=tid,
            domain=(start.domain if start else "") or "",
            question=question,
            answers=answers,
            answer_ids=tuple(answer_ids),
            hops=walk.hops,
            walk_signature=walk.signature,
            status="active",
            path={"entities": list(walk.entities), "relations": list(walk.relations)},
            props={
                "start_name": start_name,
                "phrases": phrases,
                "verifiers": list(self.config.verifiers),
            },
        )

    # ------------------------------------------------------------------ set and obfuscated

    def _propose_branched(
        self,
        shape: str,
        n: int,
        hops: int,
        seed: int,
        shape_index: int,
        coverage: Coverage | None,
        taken: set[str],
    ) -> Proposal:
        """Up to `n` set or obfuscated tasks of depth `hops` (see `_set_drafts` and
        `_obfuscated_drafts` for what each walk becomes)."""
        out = Proposal()
        cfg = self.config
        if shape == "obfuscated" and hops < 2:  # a described start and at least one hop on
            out.dropped["too_few_hops"] += n
            return out
        for round_ in range(cfg.max_rounds):
            need = n - len(out.tasks)
            if need <= 0:
                break
            round_seed = seed * 1_000_003 + 10_000 * (shape_index + 1) + round_
            base_hops = hops if shape == "set" else hops - 1
            # most second constraints do not narrow the first: sample four times as many
            walks = self._sample(need * cfg.oversample * 4, base_hops, round_seed, coverage)
            out.walks += len(walks)
            full = [w for w in walks if w.hops == base_hops]
            out.dropped["dead_end"] += len(walks) - len(full)
            if shape == "set":
                drafts = self._set_drafts(full, round_seed, out.dropped)
            else:
                drafts = self._obfuscated_drafts(full, round_seed, out.dropped)
            candidates: dict[str, tuple[list[PathBranch], list[str], str]] = {}
            for branches, answer_ids in drafts:
                signature = shape_signature(shape, branches)
                tid = task_id_for(signature)
                if tid in taken or tid in candidates:
                    out.dropped["duplicate"] += 1
                    continue
                candidates[tid] = (branches, answer_ids, signature)
            known = {t.id for t in self.store.get_nodes("Task", list(candidates))}
            out.dropped["known"] += len(known)
            taken.update(candidates)
            fresh = [(tid, c) for tid, c in candidates.items() if tid not in known]
            ids = {e for _, (bs, answer_ids, _) in fresh for b in bs for e in b.entities}
            names = self._names(ids | {a for _, (_, answer_ids, _) in fresh for a in answer_ids})
            for tid, (branches, answer_ids, signature) in fresh:
                if len(out.tasks) >= n:
                    break
                task = self._branched_task(
                    shape, tid, signature, branches, answer_ids, names, out.dropped
                )
                if task is not None:
                    out.tasks.append(task)
        return out

    def _reach_within(self, start: str, relations: Sequence[str]) -> list[str] | None:
        """What `relations` reach from `start`, sorted, or None when some entity's expansion
        (or the set reached) lists more than `max_fanout` entities: a solver could not see it
        all in one `get_relations` call."""
        limit = self.config.max_fanout
        frontier = np.array([self._node(start)], dtype=np.int64)
        for step in relations:
            relation, direction = parse_step(step)
            r = self._rel_index.get(relation)
            if r is None:
                return []
            csr = self.csr.reverse if direction == "in" else self.csr
            reached: list[np.ndarray] = []
            for node in frontier.tolist():
                lo, hi = int(csr.indptr[node]), int(csr.indptr[node + 1])
                a, b = np.searchsorted(csr.rel[lo:hi], [r, r + 1])
                if b - a > limit:
                    return None
                if b > a:
                    reached.append(csr.indices[lo + a : lo + b])
            if not reached:
                return []
            frontier = np.unique(np.concatenate(reached))
            if frontier.size > limit:
                return None
        return sorted(self.csr.entity_ids[i] for i in frontier.tolist())

    def _node(self, entity_id: str) -> int:
        """The CSR node of an entity id (`CSRGraph.index_of` builds its map on every call)."""
        if self._position is None:
            self._position = {e: i for i, e in enumerate(self.csr.entity_ids)}
        try:
            return self._position[entity_id]
        except KeyError:
            raise ValueError(f"entity {entity_id!r} is not in the walk graph") from None

    @property
    def _csr_both(self) -> CSRGraph:
        """The walk graph's relations both ways (constraints and descriptions may run against
        an edge whatever `directions` is: "a film directed by X" reaches films from X)."""
        if self.config.directions == "both":
            return self.csr_walk
        if self._both is None:
            self._both = self.csr_walk.bidirectional()
        return self._both

    def _set_drafts(
        self, walks: list[Walk], seed: int, dropped: Counter
    ) -> list[tuple[list[PathBranch], list[str]]]:
        """Each walk `A -> ... -> x` is the first constraint; a second chain of 1 or 2 hops
        (alternating, at most the walk's) is walked from `x` and read backwards, from its far
        end `B` to `x`. The answers are what both reach from their named ends."""
        if not walks:
            return []
        hops = walks[0].hops
        second = [1 + (k % min(2, hops)) for k in range(len(walks))]
        back: dict[int, list[Walk]] = {}
        for h in sorted(set(second)):
            group = [w.entities[-1] for w, h2 in zip(walks, second, strict=True) if h2 == h]
            back[h] = sample_walks(
                self._csr_both,
                len(group),
                h,
                mode=self.config.mode,
                seed=[seed, h, 29],
                start=group,
                max_out_degree=self.config.max_out_degree,
                dead_end="stop",
            ).to_records()
        taken = {h: iter(ws) for h, ws in back.items()}
        out = []
        for walk, h2 in zip(walks, second, strict=True):
            other = next(taken[h2])
            if other.hops < h2:
                dropped["dead_end"] += 1
                continue
            first = PathBranch(entities=tuple(walk.entities), relations=tuple(walk.relations))
            second_branch = PathBranch(
                entities=tuple(reversed(other.entities)),
                relations=tuple(flip_step(r) for r in reversed(other.relations)),
            )
            reached = [
                self._reach_within(b.entities[0], b.relations) for b in (first, second_branch)
            ]
            if any(r is None for r in reached):
                dropped["too_broad"] += 1
                continue
            a, b = (set(r or ()) for r in reached)
            answers = sorted(a & b)
            if not answers:  # cannot happen (x is in both); a graph changed under the CSR
                dropped["dead_end"] += 1
                continue
            if len(answers) > self.config.max_answers:
                dropped["too_many_answers"] += 1
                continue
            if len(answers) >= min(len(a), len(b)):
                dropped["not_narrowing"] += 1
                continue
            out.append(([first, second_branch], answers))
        return out

    def _obfuscated_drafts(
        self, walks: list[Walk], seed: int, dropped: Counter
    ) -> list[tuple[list[PathBranch], list[str]]]:
        """Each walk `S -> ... -> eH` is the answer chain; its start `S` is described by one
        relation to a named entity that reaches `S` alone, or by two whose sets meet in `S`
        alone (every other walk prefers two when both exist). Named entities on the chain are
        never used (the description would give part of the way away)."""
        both = self._csr_both
        rng = np.random.default_rng([seed, 31])
        limit = self.config.max_fanout
        out = []
        for k, walk in enumerate(walks):
            answers = self.reach(walk.entities[0], walk.relations)
            if not answers or len(answers) > self.config.max_answers:
                dropped["too_many_answers" if answers else "dead_end"] += 1
                continue
            start = walk.entities[0]
            node = self._node(start)
            lo, hi = int(both.indptr[node]), int(both.indptr[node + 1])
            if hi - lo > 4 * limit:  # a hub: sample its edges, never scan them all
                picks = np.sort(rng.choice(hi - lo, size=4 * limit, replace=False)) + lo
            else:
                picks = np.arange(lo, hi)
            avoid = {*walk.entities, *answers}
            options: list[tuple[int, str, str, frozenset[str]]] = []
            for e in picks.tolist():
                anchor = both.entity_ids[int(both.indices[e])]
                if anchor in avoid:
                    continue
                step = flip_step(both.relation_types[int(both.rel[e])])  # anchor -> start
                reached = self._reach_within(anchor, [step])
                if reached:
                    options.append((len(reached), anchor, step, frozenset(reached)))
            options.sort(key=lambda o: (o[0], o[1], o[2]))
            singles = [o for o in options if o[0] == 1]
            pair = None
            if k % 2 == 1 or not singles:
                few = options[:16]
                pair = next(
                    (
                        (p, q)
                        for i, p in enumerate(few)
                        for q in few[i + 1 :]
                        if p[1] != q[1] and p[3] & q[3] == {start} and p[0] > 1 and q[0] > 1
                    ),
                    None,
                )
            if pair is not None:
                chosen = list(pair)
            elif singles:
                chosen = [singles[int(rng.integers(len(singles)))]]
            else:
                dropped["not_unique"] += 1
                continue
            branches = [
                PathBranch(entities=(anchor, start), relations=(step,), role="start")
                for _, anchor, step, _ in chosen
            ]
            branches.append(
                PathBranch(entities=tuple(walk.entities), relations=tuple(walk.relations))
            )
            out.append((branches, answers))
        return out

    def _branched_task(
        self,
        shape: str,
        tid: str,
        signature: str,
        branches: list[PathBranch],
        answer_ids: list[str],
        entities: dict[str, Entity],
        dropped: Counter,
    ) -> Task | None:
        def name(entity_id: str) -> str:
            e = entities.get(entity_id)
            return (e.name if e else "") or entity_id

        starts = [b for b in branches if b.role == "start"]
        chains = [b for b in branches if b.role == "answer"]
        anchors = starts if shape == "obfuscated" else chains  # the entities the question names
        phrases = [[relation_phrase(r, self.phrases) for r in b.relations] for b in branches]
        by_branch = dict(zip(map(id, branches), phrases, strict=True))
        if shape == "set":
            question = render_set_question(
                [(name(b.entities[0]), by_branch[id(b)]) for b in chains]
            )
        else:
            described = _described_start([(name(b.entities[0]), by_branch[id(b)]) for b in starts])
            question = render_question("", by_branch[id(chains[0])], start_text=described)
        answers = tuple(name(a) for a in answer_ids)
        if leaked_answer(question, answers) is not None:
            dropped["shortcut"] += 1
            return None
        if shape == "obfuscated" and leaked_answer(question, [name(chains[0].entities[0])]):
            dropped["names_start"] += 1
            return None
        start = entities.get(chains[0].entities[0])
        depth = max(len(b.relations) for b in starts) if starts else 0
        hops = depth + max(len(b.relations) for b in chains)
        # chain entities first: coverage counts `entities[0]` as the task's start entity
        order = [*chains, *starts] if shape == "obfuscated" else chains
        return Task(
            id=tid,
            domain=(start.domain if start else "") or "",
            question=question,
            answers=answers,
            answer_ids=tuple(answer_ids),
            hops=hops,
            walk_signature=signature,
            status="active",
            path={
                "shape": shape,
                "entities": list(dict.fromkeys(e for b in order for e in b.entities)),
                "branches": [
                    {"entities": list(b.entities), "relations": list(b.relations), "role": b.role}
                    for b in branches
                ],
            },
            props={
                "shape": shape,
                "start_name": name(anchors[0].entities[0]),
                "start_names": list(dict.fromkeys(name(b.entities[0]) for b in anchors)),
                "phrases": phrases,
                "verifiers": list(self.config.verifiers),
            },
        )

    def _rewrite(self, tasks: list[Task], counts: Counter) -> list[Task]:
        from selfplay.engines.base import SamplingConfig

        prompts = [
            [
                {
                    "role": "system",
                    "content": "Rewrite the question as one fluent English question. Keep every "
                    "quoted name exactly, with its quotes. Reply with the question only.",
                },
                {"role": "user", "content": t.question},
            ]
            for t in tasks
        ]
        sampling = SamplingConfig(
            max_tokens=self.config.rewrite_max_tokens, temperature=0.0, seed=0
        )
        results = self.engine.chat(prompts, sampling=sampling)
        out = []
        for task, completions in zip(tasks, results, strict=True):
            text = completions[0].text if completions else ""
            text = _THINK.sub("", text).strip()
            refused = accept_rewrite(task, text)
            if refused is None:
                counts["kept"] += 1
                props = {**task.props, "template_question": task.question, "rewritten": True}
                task = _replace_task(task, question=text, props=props)
            else:
                counts[refused.split(":", 1)[0]] += 1
            out.append(task)
        return out


def _replace_task(task: Task, **changes: Any) -> Task:
    data = task.to_dict()
    data.update(changes)
    return Task.from_dict(data)  # type: ignore[return-value]


def _coverage_score(walk: Walk, coverage: Coverage) -> tuple[int, int]:
    """Lower is less covered: (start entity count, summed relation-type counts)."""
    return (
        coverage.start_entities.get(walk.entities[0], 0),
        sum(coverage.relation_types.get(parse_step(r)[0], 0) for r in walk.relations),
    )
