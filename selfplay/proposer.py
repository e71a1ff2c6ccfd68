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

Tasks whose question names one of their answers (a shortcut, `selfplay.answers.leaked_answer`, the
check the `no_shortcut` verifier makes) or that reach too many answers are rejected; walks whose signature is already a task (in this batch or in the graph) are skipped.

>>> proposer = Proposer(graph, config=ProposerConfig(verifiers=("answer_match@2",)))  # doctest: +SKIP
>>> proposer.propose(8, hops=2, seed=0).tasks[0].question  # doctest: +SKIP
'What is the place where the city where "Ada Lovelace" was born is located?'
"""

from __future__ import annotations

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
    Walk,
    WalkDirections,
    WalkMode,
    parse_step,
    sample_walks,
)
from selfplay.answers import leaked_answer
from selfplay.phrases import infer_inverse_phrase, infer_relation_phrase

__all__ = [
    "ProposerConfig",
    "Proposal",
    "Proposer",
    "relation_phrase",
    "render_question",
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


def render_question(start_name: str, phrases: Sequence[str]) -> str:
    """The task question of a walk from its start entity's name and its relation phrases.

    Phrases with `{x}` for the subject (`"the city where {x} was born"`) nest; any other phrase
    makes a chain of relations to follow. The start entity's name is always quoted, as it is in the
    tool calls and observations that name it, so the agent copies it verbatim (and a name such as
    "A Broken Shadow" never reads as part of the sentence).

    >>> render_question("Ada", ["the city where {x} was born", "the country {x} is in"])
    'What is the country the city where "Ada" was born is in?'
    >>> render_question("Ada", ["born in", "located in"])
    'Start from "Ada" and follow "born in", then "located in". Which entities do you reach?'
    """
    if not phrases:
        raise ValueError("a question needs at least one relation phrase")
    if all("{x}" in p for p in phrases):
        text = f'"{start_name}"'
        for phrase in phrases:
            text = phrase.replace("{x}", text)
        return f"What is {text}?"
    chain = ", then ".join(f'"{p.replace("{x}", "it")}"' for p in phrases)
    return f'Start from "{start_name}" and follow {chain}. Which entities do you reach?'


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
    start_name = str((task.props or {}).get("start_name", ""))
    if start_name and f'"{start_name}"' not in text:
        return f'drops_start_name: the rewrite does not keep the quoted start name "{start_name}"'
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
        frontier = np.unique(self.csr.index_of([start]))
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
        out = Proposal()
        taken: set[str] = set(exclude)
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
        if self.engine is not None and cfg.rewrite and out.tasks:
            out.tasks = self._rewrite(out.tasks, out.rewrites)
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
