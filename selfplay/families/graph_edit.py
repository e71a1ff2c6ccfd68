"""Graph-edit tasks of the tool_use family: multi-turn edits of a scratch copy, checked by its state.

A task names real entities of a small subgraph (a center entity and everything one relation away)
and asks for several edits; each trajectory edits its own copy (`selfplay.edit_tools`) and
passes when the copy ends with exactly the requested edits (`graph_state@1`) through valid calls
(`tool_call_validity@1`). Nothing a policy does reaches the graph itself.

| op              | example instruction                                   | what it exercises     |
|-----------------|-------------------------------------------------------|-----------------------|
| `rename`        | Rename "Torgarana" to "New Torgarana".                | one update            |
| `set_prop`      | Set the "population" of "Torgarana" to 16114605.      | one update (a number) |
| `remove_relation` | Remove the "born_in" relation from "Ada" to "Lyon". | one removal           |
| `move_relation` | Move the "directed_by" relation of "F" from "A" to "B". | remove, then add    |
| `remove_all`    | Remove every "acted_in" relation that goes out of "Ada". | reading first        |
| `link_new`      | Link "Ada" by "acted_in" to "Silent Orchard", an entity of type "film". | recovery: |
|                 | looking the new name up fails; it must be added before it is linked |         |
| `delete_entity` | Remove "Lyon" from the graph.                         | recovery: refused     |
|                 | while it has relations; read them, remove each, remove it again |             |

| name                 | what it gives                                                          |
|----------------------|------------------------------------------------------------------------|
| `GraphEditConfig`    | ops, edits per task, subgraph size                                     |
| `GraphEditProposer`  | graph -> graph-edit tasks (family tool_use), deterministic and deduped |
| `suite()`            | required `graph_state@1`, `tool_call_validity@1`                       |
| `SYSTEM_PROMPT`      | the system prompt of graph-edit tasks                                  |
| `is_graph_edit(task)`| whether a tool_use task is a graph-edit one (props `graph_edit`)       |
| `registry(task)`     | a fresh scratch copy of the task's subgraph and its edit tools         |
| `oracle_turn(task, messages)` | the gold policy's next message, read from the observations    |

Task props: `source` ("graph_edit"), `graph_edit` = `{"center", "start"` (the subgraph snapshot),
`"edits"` (one `{"op", "text", ...}` per instruction, with the names it quotes), `"expected"`
(the `selfplay.edit_tools.state_diff` items the edits make)`}`, `tools` (the edit tool ids),
`verifiers`. `task.answers` are the expected edits in words, `task.hops` the number of edits and
`task.path["entities"]` the real entities the instructions name (SUPPORTS).

>>> tasks = GraphEditProposer(store).propose(4, edits=3, seed=0).tasks  # doctest: +SKIP
>>> print(tasks[0].question)  # doctest: +SKIP
Make these edits to the graph:
1. Rename "Torgarana" to "New Torgarana".
...
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kag.schema import Task
from kag.stores.base import GraphStore
from kag.walks import CSRGraph
from selfplay.edit_tools import (
    ScratchGraph,
    describe_edit,
    edit_registry,
    edit_tool_records,
    state_diff,
)
from selfplay.proposer import Proposal
from selfplay.rewards import RewardConfig, VerifierSuite
from selfplay.tools import ToolRegistry
from selfplay.verifiers import GraphState, ToolCallValidity

__all__ = [
    "OPS",
    "SOURCE",
    "SYSTEM_PROMPT",
    "GraphEditConfig",
    "GraphEditProposer",
    "is_graph_edit",
    "oracle_turn",
    "registry",
    "suite",
]

FAMILY = "tool_use"
#: `task.props["source"]` of a graph-edit task
SOURCE = "graph_edit"
OPS = (
    "rename",
    "set_prop",
    "remove_relation",
    "move_relation",
    "remove_all",
    "link_new",
    "delete_entity",
)
SYSTEM_PROMPT = (
    "You edit a working copy of a knowledge graph with tools. Find the entities a request names "
    "with find_entities (it gives their ids), read them with read_entity and read_relations, and "
    "change the copy with add_entity, update_entity, remove_entity, add_relation and "
    "remove_relation. Make every edit the request asks for and no other. When a tool refuses an "
    "edit it says why: fix the cause and try again (an entity the request names that is not in "
    "the graph must be added before it is linked; an entity must lose its relations before it is "
    "removed). When every edit is made, stop calling tools and reply with a short summary inside "
    "<answer>...</answer>."
)
# names of new entities: adjective + noun, never one the subgraph holds
_ADJECTIVES = ("Silent", "Amber", "Northern", "Hidden", "Crimson", "Quiet", "Golden", "Distant")
_NOUNS = ("Orchard", "Harbor", "Archive", "Lantern", "Meridian", "Canyon", "Atlas", "Beacon")
_RENAMES = ("New {n}", "{n} II", "Greater {n}", "{n} Revised", "Old {n}")
_STATUSES = ("reviewed", "archived", "disputed")


# --------------------------------------------------------------------------- suite


def suite() -> VerifierSuite:
    """Required: `graph_state@1` (the outcome) and `tool_call_validity@1` (the process score).
    No step check: a refused edit is part of a good trajectory, not a bad step.

    >>> suite().ids
    ['graph_state@1', 'tool_call_validity@1']
    """
    return VerifierSuite(
        required=[GraphState(), ToolCallValidity()],
        steps=None,
        reward=RewardConfig(outcome=GraphState.name, process=(ToolCallValidity.name,)),
    )


def is_graph_edit(task: Task) -> bool:
    """Whether a task is a graph-edit task (it carries `props["graph_edit"]`).

    >>> is_graph_edit(Task(id="t", question="q", family="tool_use"))
    False
    """
    return isinstance(task.props.get("graph_edit"), Mapping)


def registry(task: Task) -> ToolRegistry:
    """The edit tools bound to a fresh scratch copy of the task's start subgraph: every call
    builds a new copy, so each trajectory edits its own (and never the graph).

    >>> registry(task).names[:3]  # doctest: +SKIP
    ['find_entities', 'read_entity', 'read_relations']
    """
    if not is_graph_edit(task):
        raise ValueError(f"task {task.id!r} is not a graph-edit task (no props['graph_edit'])")
    return edit_registry(ScratchGraph.from_snapshot(task.props["graph_edit"]["start"]))


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True, slots=True)
class GraphEditConfig:
    """How subgraphs of the graph become graph-edit tasks."""

    #: the edit ops to draw from (module table); each task leads with the next op in turn (a
    #: center without room for it is passed over), so a batch of `len(ops)` tasks holds every op
    ops: tuple[str, ...] = OPS
    #: fewest edits a task asks for (a run's hop count asks for more, up to `max_edits`)
    min_edits: int = 2
    #: most edits a task asks for
    max_edits: int = 4
    #: relations a center entity may have (in both directions); busier entities are skipped, so
    #: the scratch copy holds every relation of the center
    max_center_relations: int = 12
    #: relations between the center's neighbours kept in the copy, besides the center's own
    max_extra_relations: int = 24
    #: most relations a `remove_all` or `delete_entity` edit removes
    max_removed: int = 4
    #: other entities of each type the center and its neighbours have, added to the copy
    #: (without their relations) so a relation can move to one: "from A to B"
    alternates: int = 2
    #: verifier ids attached to every task (CHECKED_BY); default: `suite().ids`
    verifiers: tuple[str, ...] | None = None
    #: centers drawn per task asked for; misses (no room for the edits) eat some
    oversample: int = 6

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or not self.ops:
            raise ValueError(f"unknown graph-edit ops {unknown}; known: {', '.join(OPS)}")
        if not 1 <= self.min_edits <= self.max_edits:
            raise ValueError(
                f"need 1 <= min_edits <= max_edits, got {self.min_edits}, {self.max_edits}"
            )
        for name in ("max_center_relations", "max_removed", "oversample"):
            if getattr(self, name) < 1:
                raise ValueError(f"GraphEditConfig.{name} must be >= 1")
        if self.max_extra_relations < 0 or self.alternates < 0:
            raise ValueError("GraphEditConfig.max_extra_relations and alternates must be >= 0")


# --------------------------------------------------------------------------- edits


Pattern = tuple[str | None, str | None, str | None]


@dataclass(slots=True)
class _Edit:
    """One instruction: its text, the scratch calls that make it (on the start state), what it
    names, writes and claims (to keep the edits of a task independent of their order)."""

    spec: dict[str, Any]
    #: entity ids the text names (they must keep their names) and ids whose record it changes
    names: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    #: relation triples (None: any) it adds, removes or depends on
    patterns: list[Pattern] = field(default_factory=list)
    #: new entity names it adds
    new_names: set[str] = field(default_factory=set)


def _overlap(a: Pattern, b: Pattern) -> bool:
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _conflict(edit: _Edit, others: Sequence[_Edit]) -> bool:
    for o in others:
        if edit.writes & (o.names | o.writes) or o.writes & edit.names:
            return True
        if edit.new_names & o.new_names:
            return True
        if any(_overlap(p, q) for p in edit.patterns for q in o.patterns):
            return True
    return False


def _q(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


class _Subgraph:
    """The scratch start state of one center and the facts the edit makers draw on."""

    def __init__(self, graph: ScratchGraph, center: str, store: GraphStore | None = None) -> None:
        self.graph = graph
        self.center = center
        self.store = store
        counts = Counter(e["name"].strip().lower() for e in graph.entities.values())
        #: entities whose name is unique in the copy (only they can be named in an instruction)
        self.nameable = sorted(
            i
            for i, e in graph.entities.items()
            if e["name"].strip() and counts[e["name"].strip().lower()] == 1
        )
        self.names_lower = set(counts)

    def name(self, entity_id: str) -> str:
        return self.graph.name_of(entity_id)

    def unused(self, name: str) -> bool:
        """Whether no entity of the whole graph has this name (a new entity's must be new)."""
        return self.store is None or not self.store.find_entities(name=name, limit=1)


def _make_edit(op: str, sub: _Subgraph, rng: random.Random, cfg: GraphEditConfig) -> _Edit | None:
    """One edit of kind `op` on the subgraph, or None when it offers no room for one."""
    g = sub.graph
    nameable = set(sub.nameable)
    triples = sorted(t for t in g.relations if t[0] in nameable and t[2] in nameable)
    if op == "rename":
        if not sub.nameable:
            return None
        e = rng.choice(sub.nameable)
        article = sub.name(e).lower().startswith("the ")
        options = [t.format(n=sub.name(e)) for t in _RENAMES if not (article and t[0] != "{")]
        options = [o for o in options if o.strip().lower() not in sub.names_lower]
        if not options:
            return None
        new = rng.choice(options)
        text = f"Rename {_q(sub.name(e))} to {_q(new)}."
        return _Edit(
            {"op": op, "text": text, "entity": sub.name(e), "name": new},
            names={e},
            writes={e},
        )
    if op == "set_prop":
        if not sub.nameable:
            return None
        e = rng.choice(sub.nameable)
        props = g.entities[e]["props"]
        numeric = sorted(
            k for k, v in props.items() if isinstance(v, int) and not isinstance(v, bool)
        )
        if numeric:
            key = rng.choice(numeric)
            value: Any = int(props[key]) + rng.choice((-1, 1)) * rng.randint(1, 9)
        else:
            key = "status"
            options = [s for s in _STATUSES if props.get(key) != s]
            value = rng.choice(options)
        text = f"Set the {_q(key)} of {_q(sub.name(e))} to {json.dumps(value)}."
        return _Edit(
            {"op": op, "text": text, "entity": sub.name(e), "key": key, "value": value},
            names={e},
            writes={e},
        )
    if op == "remove_relation":
        if not triples:
            return None
        s, r, t = rng.choice(triples)
        text = f"Remove the {_q(r)} relation from {_q(sub.name(s))} to {_q(sub.name(t))}."
        return _Edit(
            {"op": op, "text": text, "source": sub.name(s), "relation": r, "target": sub.name(t)},
            names={s, t},
            patterns=[(s, r, t)],
        )
    if op == "move_relation":
        rng.shuffle(triples)
        for s, r, a in triples:
            kind = g.entities[a]["type"]
            others = [
                b
                for b in sub.nameable
                if b not in (s, a)
                and g.entities[b]["type"] == kind
                and (s, r, b) not in g.relations
            ]
            if not others:
                continue
            b = rng.choice(others)
            text = (
                f"Move the {_q(r)} relation of {_q(sub.name(s))} from {_q(sub.name(a))} "
                f"to {_q(sub.name(b))}."
            )
            return _Edit(
                {
                    "op": op,
                    "text": text,
                    "source": sub.name(s),
                    "relation": r,
                    "target": sub.name(a),
                    "new_target": sub.name(b),
                },
                names={s, a, b},
                patterns=[(s, r, a), (s, r, b)],
            )
        return None
    if op == "remove_all":
        groups = Counter((s, r) for s, r, _ in g.relations if s in nameable)
        fits = sorted(k for k, n in groups.items() if 2 <= n <= cfg.max_removed)
        if not fits:
            return None
        s, r = rng.choice(fits)
        text = f"Remove every {_q(r)} relation that goes out of {_q(sub.name(s))}."
        return _Edit(
            {"op": op, "text": text, "source": sub.name(s), "relation": r},
            names={s},
            patterns=[(s, r, None)],
        )
    if op == "link_new":
        out = sorted(
            (s, r, t) for s, r, t in g.relations if s in nameable and g.entities[t]["type"]
        )
        if not out:
            return None
        s, r, t = rng.choice(out)
        kind = g.entities[t]["type"]
        options = [f"{a} {n}" for a in _ADJECTIVES for n in _NOUNS]
        options = [o for o in options if o.lower() not in sub.names_lower and sub.unused(o)]
        if not options:
            return None
        new = rng.choice(options)
        new_id = g.new_id(new)
        text = f"Link {_q(sub.name(s))} by {_q(r)} to {_q(new)}, an entity of type {_q(kind)}."
        return _Edit(
            {
                "op": op,
                "text": text,
                "source": sub.name(s),
                "relation": r,
                "target": new,
                "type": kind,
            },
            names={s},
            patterns=[(s, r, new_id), (new_id, None, None), (None, None, new_id)],
            new_names={new.lower()},
        )
    if op == "delete_entity":
        fits = [
            e
            for e in sub.nameable
            if e != sub.center and 1 <= len(g.relations_of(e, direction="both")) <= cfg.max_removed
        ]
        if not fits:
            return None
        z = rng.choice(fits)
        text = f"Remove {_q(sub.name(z))} from the graph."
        return _Edit(
            {"op": op, "text": text, "entity": sub.name(z)},
            names={z},
            writes={z},
            patterns=[(z, None, None), (None, None, z)],
        )
    raise ValueError(f"unknown graph-edit op {op!r}")


def _apply(edit: Mapping[str, Any], graph: ScratchGraph, ids: Mapping[str, str]) -> None:
    """Make one edit on a scratch graph with its own edit methods (`ids`: name -> id)."""
    op = edit["op"]
    if op == "rename":
        graph.update_entity(ids[edit["entity"]], name=edit["name"])
    elif op == "set_prop":
        graph.update_entity(ids[edit["entity"]], props={edit["key"]: edit["value"]})
    elif op == "remove_relation":
        graph.remove_relation(ids[edit["source"]], edit["relation"], ids[edit["target"]])
    elif op == "move_relation":
        s, r = ids[edit["source"]], edit["relation"]
        graph.remove_relation(s, r, ids[edit["target"]])
        graph.add_relation(s, r, ids[edit["new_target"]])
    elif op == "remove_all":
        s = ids[edit["source"]]
        for rel in graph.relations_of(s, relation=edit["relation"], direction="out"):
            graph.remove_relation(s, edit["relation"], rel["id"])
    elif op == "link_new":
        added = graph.add_entity(edit["target"], type=edit["type"])
        graph.add_relation(ids[edit["source"]], edit["relation"], added["id"])
    elif op == "delete_entity":
        z = ids[edit["entity"]]
        for rel in graph.relations_of(z, direction="both"):
            if rel["direction"] == "out":
                graph.remove_relation(z, rel["relation"], rel["id"])
            else:
                graph.remove_relation(rel["id"], rel["relation"], z)
        graph.remove_entity(z)
    else:
        raise ValueError(f"unknown graph-edit op {op!r}")


# --------------------------------------------------------------------------- proposer


class GraphEditProposer:
    """Graph-edit tasks from a graph's entities and relations (module tables).

    `graph` is a `KnowledgeActionGraph` or a store; its relations are projected once into a CSR
    (pass `csr=` to share one). Same graph, config and seed give the same tasks; a task already
    in the graph or in `exclude` is never proposed again.
    """

    def __init__(
        self, graph: Any, *, config: GraphEditConfig | None = None, csr: CSRGraph | None = None
    ) -> None:
        self.store: GraphStore = getattr(graph, "store", graph)
        self.config = config or GraphEditConfig()
        self.csr = csr if csr is not None else CSRGraph.from_store(self.store)
        if self.csr.n_edges == 0:
            raise ValueError(
                f"{self.store.url} has no relations to build graph-edit tasks on; import triples "
                "first (`kag import triples` or `kag generate world`)"
            )
        self._by_type: dict[str, list[str]] = {}
        degree = self.csr.out_degree() + self.csr.reverse.out_degree()
        #: node indexes of the entities a task may center on: some relations, not a hub
        self.centers = [
            int(i)
            for i in range(self.csr.n_nodes)
            if 2 <= degree[i] <= self.config.max_center_relations
        ]
        if not self.centers:
            raise ValueError(
                f"{self.store.url} has no entity with 2 to {self.config.max_center_relations} "
                "relations to center graph-edit tasks on (GraphEditConfig.max_center_relations)"
            )

    def _of_type(self, kind: str) -> list[str]:
        """Ids of some entities of a type (the store's first ones by name), read once."""
        if kind not in self._by_type:
            found = self.store.find_entities(type=kind, limit=4 * self.config.alternates + 8)
            self._by_type[kind] = [e.id for e in found]
        return self._by_type[kind]

    def subgraph(self, center: str) -> ScratchGraph:
        """The scratch start state around `center`: it, every entity one relation away, every
        relation of the center, up to `max_extra_relations` among the others, and
        `alternates` more entities of each of their types (without relations)."""
        csr = self.csr
        i = csr.index_of([center])[0]
        own = [(center, r, t) for r, t in csr.edges_of(i)]
        own += [(s, r, center) for r, s in csr.reverse.edges_of(i)]
        members = sorted({center, *(t for _, _, t in own), *(s for s, _, _ in own)})
        inside = set(members)
        extra = sorted(
            (m, r, t)
            for m, k in zip(members, csr.index_of(members).tolist(), strict=True)
            if m != center
            for r, t in csr.edges_of(k)
            if t in inside and t != center
        )[: self.config.max_extra_relations]
        records = {e.id: e for e in self.store.get_nodes("Entity", members)}
        if self.config.alternates:
            rng = random.Random(hashlib.sha256(center.encode()).digest())
            more: list[str] = []
            for kind in sorted({e.type for e in records.values()} - {""}):  # type: ignore[attr-defined]
                pool = [i for i in self._of_type(kind) if i not in inside and i not in more]
                more += rng.sample(pool, min(self.config.alternates, len(pool)))
            records.update((e.id, e) for e in self.store.get_nodes("Entity", more))
            members = sorted({*members, *more})
        snapshot = {
            "entities": [
                {
                    "id": m,
                    "name": records[m].name,  # type: ignore[attr-defined]
                    "type": records[m].type,  # type: ignore[attr-defined]
                    "description": records[m].description,  # type: ignore[attr-defined]
                    "props": {
                        k: v
                        for k, v in records[m].props.items()
                        if v is None or isinstance(v, str | int | float | bool)
                    },
                }
                for m in members
                if m in records
            ],
            "relations": [
                list(t)
                for t in sorted({*own, *extra})
                if t[0] in records and t[2] in records and t[0] != t[2]
            ],
        }
        return ScratchGraph.from_snapshot(snapshot)

    def propose(
        self, n: int, *, edits: int | None = None, seed: int = 0, exclude: Iterable[str] = ()
    ) -> Proposal:
        """Up to `n` new tasks of `edits` edits each (clamped to the config's min and max;
        default `min_edits`); `exclude` holds task ids to treat as known."""
        cfg = self.config
        count = max(cfg.min_edits, min(cfg.max_edits, edits or cfg.min_edits))
        rng = random.Random(seed)
        known = set(exclude)
        tasks: list[Task] = []
        dropped: Counter = Counter()
        draws = [self.centers[k] for k in rng.sample(range(len(self.centers)), len(self.centers))]
        draws = draws[: max(n * cfg.oversample, n)]
        lead, misses = 0, 0
        for node in draws:
            if len(tasks) >= n:
                break
            op = cfg.ops[lead % len(cfg.ops)]
            task = self._task(self.csr.entity_ids[node], count, rng, lead=op)
            if task is None:
                dropped["no_room_for_edits"] += 1
                misses += 1
                if misses >= 2 * len(cfg.ops):  # this op fits few centers: go on to the next
                    lead, misses = lead + 1, 0
                continue
            lead, misses = lead + 1, 0
            if task.id in known:
                dropped["duplicate"] += 1
                continue
            known.add(task.id)
            tasks.append(task)
        stored = (
            {t.id for t in self.store.get_nodes("Task", [t.id for t in tasks])} if tasks else set()
        )
        fresh = [t for t in tasks if t.id not in stored]
        dropped["already_in_graph"] += len(tasks) - len(fresh)
        return Proposal(tasks=fresh, dropped=Counter({k: v for k, v in dropped.items() if v}))

    def _task(self, center: str, count: int, rng: random.Random, *, lead: str) -> Task | None:
        cfg = self.config
        start = self.subgraph(center)
        sub = _Subgraph(start, center, self.store)
        if center not in sub.nameable:
            return None
        chosen: list[_Edit] = []
        ops = [lead, *rng.sample(cfg.ops, len(cfg.ops))]
        for k, op in enumerate(ops * 2):
            if len(chosen) >= count:
                break
            edit = _make_edit(op, sub, rng, cfg)
            if k == 0 and edit is None:
                return None  # the task leads with its op, or is not made on this center
            if edit is None or _conflict(edit, chosen):
                continue
            chosen.append(edit)
        if len(chosen) < count:
            return None
        ids = {start.name_of(i): i for i in sub.nameable}
        final = start.copy()
        for edit in chosen:
            _apply(edit.spec, final, ids)
        expected = state_diff(start, final)
        specs = [e.spec for e in chosen]
        signature = hashlib.sha256(
            json.dumps([FAMILY, SOURCE, center, specs], ensure_ascii=False, sort_keys=True).encode()
        ).hexdigest()
        named = sorted({i for e in chosen for i in e.names}, key=lambda i: (i != center, i))
        names = {i: e["name"] for g in (final, start) for i, e in g.entities.items()}
        lines = "\n".join(f"{k}. {e['text']}" for k, e in enumerate(specs, 1))
        question = (
            f"Make these edits to the graph:\n{lines}\n"
            "Make exactly these edits and no other, then reply with a short summary inside "
            "<answer>...</answer>."
        )
        verifiers = list(cfg.verifiers if cfg.verifiers is not None else suite().ids)
        return Task(
            id="task:" + signature[:32],
            family=FAMILY,
            domain=self._domain(center),
            question=question,
            answers=tuple(describe_edit(item, names) for item in expected),
            hops=len(chosen),
            walk_signature=signature,
            path={"entities": named, "relations": []},
            props={
                "source": SOURCE,
                "ops": [e["op"] for e in specs],
                "graph_edit": {
                    "center": center,
                    "start": start.snapshot(),
                    "edits": specs,
                    "expected": expected,
                },
                "tools": [t.id for t in edit_tool_records()],
                "verifiers": verifiers,
            },
        )

    def _domain(self, center: str) -> str:
        found = self.store.get_nodes("Entity", [center])
        return found[0].domain if found else ""  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- oracle


@dataclass(slots=True)
class _Seen:
    """What a graph-edit trajectory's observations told so far."""

    #: entity name -> id (from find_entities' exact matches and add_entity)
    ids: dict[str, str] = field(default_factory=dict)
    #: names find_entities found nothing for
    missing: set[str] = field(default_factory=set)
    #: (entity id, relation or None, direction) -> the relations read_relations listed
    read: dict[tuple[str, str | None, str], list[dict[str, Any]]] = field(default_factory=dict)
    #: every call in order: (tool name, canonical arguments, succeeded)
    calls: list[tuple[str, str, bool]] = field(default_factory=list)
    looked_up: set[str] = field(default_factory=set)

    def ok(self, name: str, args: Mapping[str, Any]) -> bool:
        key = _args_key(args)
        return any(n == name and a == key and good for n, a, good in self.calls)

    def tried(self, name: str, args: Mapping[str, Any]) -> list[int]:
        key = _args_key(args)
        return [i for i, (n, a, _) in enumerate(self.calls) if n == name and a == key]


def _args_key(args: Mapping[str, Any]) -> str:
    return json.dumps(dict(args), sort_keys=True, ensure_ascii=False)


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return None


def _seen(messages: Sequence[Mapping[str, Any]]) -> _Seen:
    out = _Seen()
    pending: dict[str, tuple[str, dict[str, Any]]] = {}
    for m in messages:
        if m.get("role") == "assistant":
            for c in m.get("tool_calls") or ():
                fn = c.get("function") or {}
                args = _json(fn.get("arguments") or "{}")
                pending[str(c.get("id"))] = (
                    str(fn.get("name")),
                    args if isinstance(args, dict) else {},
                )
            continue
        if m.get("role") != "tool" or str(m.get("tool_call_id")) not in pending:
            continue
        name, args = pending.pop(str(m.get("tool_call_id")))
        obs = _json(m.get("content"))
        good = isinstance(obs, dict) and "error" not in obs
        out.calls.append((name, _args_key(args), good))
        if name == "find_entities":
            query = str(args.get("query", ""))
            out.looked_up.add(query)
            if not good:
                out.missing.add(query)
                continue
            for r in obs.get("results", []):
                if r.get("name") == query:
                    out.ids.setdefault(query, r["id"])
        elif name == "add_entity" and good:
            added = obs.get("added") or {}
            out.ids[str(added.get("name"))] = str(added.get("id"))
            out.missing.discard(str(added.get("name")))
        elif name == "read_relations" and good:
            key = (
                str(args.get("entity_id")),
                args.get("relation"),
                str(args.get("direction") or "out"),
            )
            out.read[key] = list(obs.get("relations", []))
    return out


def _named(edit: Mapping[str, Any]) -> list[str]:
    """The entity names an instruction quotes, in order."""
    return [
        edit[k]
        for k in ("entity", "source", "target", "new_target")
        if isinstance(edit.get(k), str)
    ]


def _next_calls(edit: Mapping[str, Any], seen: _Seen) -> list[tuple[str, dict[str, Any]]]:
    """The calls one edit needs next given what the observations told (empty: it is made)."""
    op, ids = edit["op"], seen.ids
    if op == "link_new":
        s, new = ids.get(edit["source"]), ids.get(edit["target"])
        if s is None:
            return []
        if new is None:  # looking it up failed: create it first, then link it
            return [("add_entity", {"name": edit["target"], "type": edit["type"]})]
        call = {"source_id": s, "relation": edit["relation"], "target_id": new}
        return [] if seen.ok("add_relation", call) else [("add_relation", call)]
    if any(ids.get(n) is None for n in _named(edit)):
        return []  # an entity the instruction names was not found: nothing to act on
    if op == "rename":
        call = {"entity_id": ids[edit["entity"]], "name": edit["name"]}
        return [] if seen.ok("update_entity", call) else [("update_entity", call)]
    if op == "set_prop":
        call = {"entity_id": ids[edit["entity"]], "props": {edit["key"]: edit["value"]}}
        return [] if seen.ok("update_entity", call) else [("update_entity", call)]
    if op in ("remove_relation", "move_relation"):
        s, r = ids[edit["source"]], edit["relation"]
        calls = [
            ("remove_relation", {"source_id": s, "relation": r, "target_id": ids[edit["target"]]})
        ]
        if op == "move_relation":
            calls.append(
                (
                    "add_relation",
                    {"source_id": s, "relation": r, "target_id": ids[edit["new_target"]]},
                )
            )
        return [(n, a) for n, a in calls if not seen.ok(n, a)]
    if op == "remove_all":
        s, r = ids[edit["source"]], edit["relation"]
        read = {"entity_id": s, "relation": r, "direction": "out"}
        listed = seen.read.get((s, r, "out"))
        if listed is None:
            return [("read_relations", read)]
        calls = [
            ("remove_relation", {"source_id": s, "relation": r, "target_id": rel["id"]})
            for rel in listed
            if rel.get("direction") == "out"
        ]
        return [(n, a) for n, a in calls if not seen.ok(n, a)]
    if op == "delete_entity":
        z = ids[edit["entity"]]
        remove = {"entity_id": z}
        if seen.ok("remove_entity", remove):
            return []
        attempts = seen.tried("remove_entity", remove)
        if not attempts:  # the natural first call; a refusal says what is in the way
            return [("remove_entity", remove)]
        listed = seen.read.get((z, None, "both"))
        if listed is None:
            return [("read_relations", {"entity_id": z, "direction": "both"})]
        calls = []
        for rel in listed:
            s, t = (z, rel["id"]) if rel.get("direction") == "out" else (rel["id"], z)
            calls.append(
                ("remove_relation", {"source_id": s, "relation": rel["relation"], "target_id": t})
            )
        pending = [(n, a) for n, a in calls if not seen.ok(n, a)]
        return pending or [("remove_entity", remove)]
    raise ValueError(f"unknown graph-edit op {op!r}")


def oracle_turn(
    task: Task, messages: Sequence[Mapping[str, Any]], *, final: bool = False, max_calls: int = 8
) -> str:
    """The gold policy's next assistant message on a graph-edit task.

    | turn  | the oracle writes                                                          |
    |-------|----------------------------------------------------------------------------|
    | 1     | `find_entities(query=name)` for every name the instructions quote          |
    | 2..   | the next calls of every edit not made yet, from what the observations told |
    |       | (ids, relations read, refusals): a name not found is added before linking; |
    |       | a refused `remove_entity` is followed by `read_relations`, the removals    |
    |       | and `remove_entity` again                                                  |
    | last  | `<answer>` with the number of edits made, once no edit needs a call        |

    It never reads the task's expected state: the ids come from the observations, as they
    would for a model.
    """
    edits = task.props["graph_edit"]["edits"]
    seen = _seen(messages)
    if not final:
        names = list(dict.fromkeys(n for e in edits for n in _named(e)))
        lookups = [("find_entities", {"query": n}) for n in names if n not in seen.looked_up]
        calls = lookups or [c for e in edits for c in _next_calls(e, seen)]
        if calls:
            thought = "Find the entities the request names." if lookups else "Make the next edits."
            return _call_text(thought, calls[:max_calls])
    return f"<answer>Made the {len(edits)} requested edit(s).</answer>"


def _call_text(thought: str, calls: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    blocks = "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": name, "arguments": dict(args)}, ensure_ascii=False)
        + "\n</tool_call>"
        for name, args in calls
    )
    return f"<think>{thought}</think>\n{blocks}"
