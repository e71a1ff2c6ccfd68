"""Fast random walks over the entity relations: an int32 CSR and samplers vectorised over walkers.

| mode               | next hop                                                          |
|--------------------|-------------------------------------------------------------------|
| `uniform`          | any out-edge, uniformly                                           |
| `non_backtracking` | any out-edge whose target is not the node just left               |
| `simple`           | any out-edge whose target is not yet on the walk (a simple path)  |

`CSRGraph.from_store(store)` projects a store's relations (optionally only some relation types or
one domain) into a CSR; `sample_walks(csr, n, hops, mode=..., seed=...)` moves all `n` walkers one
hop at a time with numpy (a Python loop per hop, never per walker) and returns `Walks` arrays;
`walks.to_records()` gives `Walk` records with entity ids, relation types and `walk_signature`.

Walks may also follow relations backwards (`directions="both"`). A walk step is then written as
one string, the one encoding every part of KAG reads (`parse_step`, `inverse_step`):

| step           | means                                                   | `parse_step`              |
|----------------|---------------------------------------------------------|---------------------------|
| `directed_by`  | follow `directed_by` from source to target (an out-edge) | `("directed_by", "out")`  |
| `~directed_by` | follow `directed_by` from target to source (an in-edge)  | `("directed_by", "in")`   |

so `Walk.relations`, `Task.path["relations"]` and walk signatures hold `~r` for an inverse hop
(a forward walk's signature is what it always was). A relation type whose own name starts with
`~` cannot be walked in both directions (`CSRGraph.bidirectional` refuses it).

>>> csr = CSRGraph.from_triples([("a", "r", "b"), ("b", "s", "c")])
>>> sample_walks(csr, 2, 2, start=["a", "a"], seed=0).to_records()[0].relations
('r', 's')
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from kag.stores.base import RelationArrays

__all__ = [
    "CSRGraph",
    "Walks",
    "Walk",
    "WalkMode",
    "WalkDirections",
    "INVERSE_PREFIX",
    "PathBranch",
    "flip_step",
    "inverse_step",
    "path_branches",
    "parse_step",
    "sample_walks",
    "walk_signature",
]

WalkMode = Literal["uniform", "non_backtracking", "simple"]
WALK_MODES: tuple[str, ...] = ("uniform", "non_backtracking", "simple")
HubPolicy = Literal["skip", "truncate"]
DeadEnd = Literal["stop", "drop"]
WalkDirections = Literal["out", "both"]
WALK_DIRECTIONS: tuple[str, ...] = ("out", "both")

#: the mark of an inverse step: `~r` follows relation `r` from its target to its source
INVERSE_PREFIX = "~"


def inverse_step(relation: str) -> str:
    """The step that follows `relation` backwards, from target to source.

    >>> inverse_step("directed_by")
    '~directed_by'
    """
    return INVERSE_PREFIX + relation


def flip_step(step: str) -> str:
    """The step that undoes `step`: `r` <-> `~r` (an entity reached by `step` from `a` reaches
    `a` back by `flip_step(step)`).

    >>> flip_step("directed_by"), flip_step("~directed_by")
    ('~directed_by', 'directed_by')
    """
    relation, direction = parse_step(step)
    return relation if direction == "in" else inverse_step(relation)


@dataclass(frozen=True, slots=True)
class PathBranch:
    """One relation chain of a task path: `entities[k] -[relations[k]]-> entities[k+1]`.

    `role` is "answer" (the chain's end set holds the answers) or "start" (its end set pins
    down the start entity of the answer chain: an obfuscated start, see `path_branches`).
    """

    entities: tuple[str, ...]
    relations: tuple[str, ...]
    role: Literal["answer", "start"] = "answer"


def path_branches(path: Any) -> list[PathBranch]:
    """The relation chains of a `Task.path`, in the shapes the search proposer writes.

    | `path["shape"]`     | chains                                                              |
    |---------------------|---------------------------------------------------------------------|
    | absent or "chain"   | one answer chain: `entities` and `relations` (`e0 -r1-> ... -> eH`) |
    | "set"               | `branches`: answer chains from named entities; the answers are the  |
    |                     | intersection of what each chain reaches                             |
    | "obfuscated"        | `branches`: "start" chains whose reached sets intersect in exactly  |
    |                     | the answer chain's start entity, then that answer chain             |

    A path without a relation chain (an imported task with only its topic entity) has none.

    >>> path_branches({"entities": ["a", "b"], "relations": ["r"]})
    [PathBranch(entities=('a', 'b'), relations=('r',), role='answer')]
    >>> [b.role for b in path_branches({"shape": "obfuscated", "branches": [
    ...     {"entities": ["x", "s"], "relations": ["~r"], "role": "start"},
    ...     {"entities": ["s", "t"], "relations": ["q"]}]})]
    ['start', 'answer']
    """
    if not path:
        return []
    if "branches" in path:
        out = []
        for b in path.get("branches") or ():
            entities, relations = tuple(b.get("entities") or ()), tuple(b.get("relations") or ())
            if relations and len(relations) == len(entities) - 1:
                role = "start" if b.get("role") == "start" else "answer"
                out.append(PathBranch(entities=entities, relations=relations, role=role))
        return out
    entities, relations = tuple(path.get("entities") or ()), tuple(path.get("relations") or ())
    if relations and len(relations) == len(entities) - 1:
        return [PathBranch(entities=entities, relations=relations)]
    return []


def parse_step(step: str) -> tuple[str, Literal["out", "in"]]:
    """`(relation type, direction)` of a walk step: `"in"` for an inverse step `~r`.

    The direction is the one `get_relations(..., direction=...)` and `store.neighbors` take.

    >>> parse_step("directed_by"), parse_step("~directed_by")
    (('directed_by', 'out'), ('directed_by', 'in'))
    """
    if step.startswith(INVERSE_PREFIX) and len(step) > len(INVERSE_PREFIX):
        return step[len(INVERSE_PREFIX) :], "in"
    return step, "out"


# Walkers are processed in fixed-size chunks, each with its own random stream derived from
# (seed, chunk index): results do not depend on the number of threads, and a chunk's arrays
# stay in the CPU cache while it hops.
CHUNK_SIZE = 1 << 16
# Rejection rounds before the exact (but slower) per-edge fallback in non_backtracking/simple.
REJECTION_ROUNDS = 3


# --------------------------------------------------------------------------- CSR


@dataclass(frozen=True, eq=False)
class CSRGraph:
    """Out-edges of every entity in compressed sparse row form.

    The out-edges of node `i` are `indices[indptr[i]:indptr[i+1]]` (target nodes) with relation
    ids `rel[...]` (indexes into `relation_types`), sorted by (relation, target). Nodes index
    `entity_ids`. `indptr` is int64 so graphs beyond 2**31 edges still fit; the rest is int32.
    """

    entity_ids: list[str]
    relation_types: list[str]
    indptr: np.ndarray
    indices: np.ndarray
    rel: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.entity_ids)

    @property
    def n_edges(self) -> int:
        return int(self.indices.shape[0])

    def out_degree(self) -> np.ndarray:
        """Out-degree of every node (int32)."""
        return np.diff(self.indptr).astype(np.int32)

    def edges_of(self, node: int) -> list[tuple[str, str]]:
        """`(relation type, target entity id)` of a node's out-edges, for inspection."""
        lo, hi = int(self.indptr[node]), int(self.indptr[node + 1])
        return [
            (self.relation_types[r], self.entity_ids[t])
            for r, t in zip(self.rel[lo:hi].tolist(), self.indices[lo:hi].tolist(), strict=True)
        ]

    def index_of(self, entity_ids: Sequence[str]) -> np.ndarray:
        """Node indices of entity ids; an unknown id is a `ValueError` naming it."""
        position = {e: i for i, e in enumerate(self.entity_ids)}
        out = np.empty(len(entity_ids), dtype=np.int32)
        for k, entity_id in enumerate(entity_ids):
            try:
                out[k] = position[entity_id]
            except KeyError:
                raise ValueError(f"entity {entity_id!r} is not in the walk graph") from None
        return out

    @functools.cached_property
    def reverse(self) -> CSRGraph:
        """The in-edges of every node in the same form (built once, on first use).

        Node `i`'s in-edges are `reverse.indices[reverse.indptr[i]:reverse.indptr[i+1]]` (the
        sources) with relation ids `reverse.rel[...]`, sorted by (relation, source), over the
        same `entity_ids` and `relation_types`.

        >>> CSRGraph.from_triples([("a", "r", "b"), ("c", "r", "b")]).reverse.edges_of(1)
        [('r', 'a'), ('r', 'c')]
        """
        src = self._sources()
        order = np.lexsort((src, self.rel, self.indices))
        return CSRGraph._from_sorted(
            self.entity_ids, self.relation_types, self.indices[order], src[order], self.rel[order]
        )

    def bidirectional(self) -> CSRGraph:
        """Out-edges and in-edges as one graph to walk: relation types `r...` then `~r...`.

        An in-edge `s -[r]-> t` becomes the out-edge `t -[~r]-> s` (`inverse_step`); edges stay
        sorted by (relation id, target), forward types first. A relation type whose name already
        starts with `~` is an error (its steps would read as inverse steps).

        >>> g = CSRGraph.from_triples([("a", "r", "b")]).bidirectional()
        >>> g.relation_types, g.edges_of(0), g.edges_of(1)
        (['r', '~r'], [('r', 'b')], [('~r', 'a')])
        """
        marked = [r for r in self.relation_types if r.startswith(INVERSE_PREFIX)]
        if marked:
            raise ValueError(
                f"relation type(s) {marked[:5]} start with {INVERSE_PREFIX!r}, which marks an "
                "inverse step: rename them to walk relations in both directions"
            )
        n_types = len(self.relation_types)
        back = self.reverse
        src = np.concatenate([self._sources(), back._sources()])
        dst = np.concatenate([self.indices, back.indices])
        rel = np.concatenate([self.rel, back.rel + np.int32(n_types)])
        order = np.lexsort((dst, rel, src))
        types = [*self.relation_types, *(inverse_step(r) for r in self.relation_types)]
        return CSRGraph._from_sorted(self.entity_ids, types, src[order], dst[order], rel[order])

    # ----------------------------------------------------------------- building

    @classmethod
    def from_arrays(
        cls, arrays: RelationArrays, *, relation_types: Sequence[str] | None = None
    ) -> CSRGraph:
        """Build from a store's `RelationArrays` (optionally keeping only some relation types).

        >>> import numpy as np
        >>> a = RelationArrays(["x", "y"], np.array([0], np.int32), np.array([1], np.int32),
        ...                    np.array([0], np.int32), ["knows"])
        >>> CSRGraph.from_arrays(a).edges_of(0)
        [('knows', 'y')]
        """
        n = len(arrays.entity_ids)
        src = np.asarray(arrays.src, dtype=np.int32)
        dst = np.asarray(arrays.dst, dtype=np.int32)
        rel = np.asarray(arrays.rel, dtype=np.int32)
        if not (src.shape == dst.shape == rel.shape) or src.ndim != 1:
            raise ValueError(
                f"src, dst and rel must be 1-d arrays of one length, got {src.shape}, {dst.shape}, {rel.shape}"
            )
        if src.size and (
            min(src.min(), dst.min()) < 0
            or max(src.max(), dst.max()) >= n
            or rel.min() < 0
            or rel.max() >= len(arrays.relation_types)
        ):
            raise ValueError("relation arrays hold an index outside entity_ids or relation_types")
        order = np.lexsort((dst, rel, src))
        csr = cls._from_sorted(
            list(arrays.entity_ids), list(arrays.relation_types), src[order], dst[order], rel[order]
        )
        return csr if relation_types is None else csr.filter(relation_types=relation_types)

    @classmethod
    def from_store(
        cls,
        store: Any,
        *,
        relation_types: Sequence[str] | None = None,
        domain: str | None = None,
    ) -> CSRGraph:
        """Project a store's (or a `KnowledgeActionGraph`'s) entity relations into a CSR.

        `relation_types` keeps only those types; `domain` only relations whose two entities are
        in that domain. Unknown relation types are an error naming them.
        """
        if relation_types is not None:
            relation_types = list(relation_types)
            present = store.relation_types()
            unknown = [r for r in relation_types if r not in present]
            if unknown:
                raise ValueError(
                    f"unknown relation type(s) {unknown}; the graph has {len(present)} types, "
                    f"e.g. {sorted(present)[:5]}"
                )
        arrays = store.relation_arrays(relation_types=relation_types, domain=domain)
        return cls.from_arrays(arrays)

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[str, str, str]]) -> CSRGraph:
        """Build from `(source id, relation type, target id)` triples (tests, small graphs).

        >>> CSRGraph.from_triples([("a", "r", "b")]).n_edges
        1
        """
        entities: dict[str, int] = {}
        types: dict[str, int] = {}
        seen: set[tuple[int, int, int]] = set()
        for s, r, t in triples:
            key = (
                entities.setdefault(s, len(entities)),
                types.setdefault(r, len(types)),
                entities.setdefault(t, len(entities)),
            )
            seen.add(key)
        triples_arr = np.array(sorted(seen), dtype=np.int32).reshape(-1, 3)
        arrays = RelationArrays(
            list(entities), triples_arr[:, 0], triples_arr[:, 2], triples_arr[:, 1], list(types)
        )
        return cls.from_arrays(arrays)

    @classmethod
    def _from_sorted(
        cls,
        entity_ids: list[str],
        relation_types: list[str],
        src: np.ndarray,
        dst: np.ndarray,
        rel: np.ndarray,
    ) -> CSRGraph:
        n = len(entity_ids)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
        return cls(
            entity_ids=entity_ids,
            relation_types=relation_types,
            indptr=indptr,
            indices=np.ascontiguousarray(dst, dtype=np.int32),
            rel=np.ascontiguousarray(rel, dtype=np.int32),
        )

    def _sources(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_nodes, dtype=np.int32), np.diff(self.indptr))

    def _keep(self, mask: np.ndarray) -> CSRGraph:
        src = self._sources()[mask]
        return CSRGraph._from_sorted(
            self.entity_ids, self.relation_types, src, self.indices[mask], self.rel[mask]
        )

    # ----------------------------------------------------------------- views

    def filter(self, *, relation_types: Sequence[str]) -> CSRGraph:
        """Only the edges of these relation types (unknown names are an error).

        >>> CSRGraph.from_triples([("a", "r", "b"), ("a", "s", "c")]).filter(relation_types=["s"]).n_edges
        1
        """
        position = {r: i for i, r in enumerate(self.relation_types)}
        unknown = [r for r in relation_types if r not in position]
        if unknown:
            raise ValueError(
                f"unknown relation type(s) {unknown}; known types include {self.relation_types[:5]}"
            )
        wanted = np.zeros(len(self.relation_types), dtype=bool)
        wanted[[position[r] for r in relation_types]] = True
        return self._keep(wanted[self.rel])

    def bounded(self, max_out_degree: int, *, policy: HubPolicy = "skip") -> CSRGraph:
        """Tame hubs: nodes with more than `max_out_degree` out-edges.

        `skip` removes every edge into or out of a hub, so walks never start at, enter or
        leave one (a hub makes a question with hundreds of answers). `truncate` keeps only a
        hub's first `max_out_degree` out-edges in CSR order (by relation, then target).

        >>> g = CSRGraph.from_triples([("h", "r", "a"), ("h", "r", "b"), ("a", "r", "h")])
        >>> g.bounded(1).n_edges, g.bounded(1, policy="truncate").n_edges
        (0, 2)
        """
        if max_out_degree < 1:
            raise ValueError(f"max_out_degree must be >= 1, got {max_out_degree}")
        degree = np.diff(self.indptr)
        hub = degree > max_out_degree
        if not hub.any():
            return self
        src = self._sources()
        if policy == "skip":
            return self._keep(~hub[src] & ~hub[self.indices])
        if policy == "truncate":
            rank = np.arange(self.n_edges, dtype=np.int64) - self.indptr[src]
            return self._keep(rank < max_out_degree)
        raise ValueError(f"hub policy must be 'skip' or 'truncate', got {policy!r}")


# --------------------------------------------------------------------------- walks


def walk_signature(start: str, relations: Sequence[str]) -> str:
    """Stable hash of a walk's start entity and relation-type chain, for deduplicating tasks.

    The intermediate entities are left out on purpose: a task asks "the r2 of the r1 of X", so
    its question and its full answer set depend only on X and (r1, r2, ...). Two walks that
    reach different entities along the same chain from the same start make the same task.

    >>> walk_signature("/m/027rn", ["born_in", "located_in"])[:12]
    'a83da57a31c3'
    """
    payload = json.dumps([start, list(relations)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class Walk:
    """One walk: `entities[k] -[relations[k]]-> entities[k+1]` (`~r`: `entities[k+1] -[r]->
    entities[k]`, an inverse step, see `parse_step`).

    >>> w = Walk(entities=("a", "b"), relations=("r",))
    >>> w.hops, w.signature == walk_signature("a", ["r"])
    (1, True)
    """

    entities: tuple[str, ...]
    relations: tuple[str, ...]

    @property
    def hops(self) -> int:
        return len(self.relations)

    @property
    def signature(self) -> str:
        return walk_signature(self.entities[0], self.relations)

    def to_dict(self) -> dict[str, Any]:
        """The Task `path` shape plus hops and signature."""
        return {
            "entities": list(self.entities),
            "relations": list(self.relations),
            "hops": self.hops,
            "walk_signature": self.signature,
        }


@dataclass(frozen=True, eq=False)
class Walks:
    """Sampled walks as arrays: `nodes` [n, hops+1] and `rels` [n, hops] (int32, -1 past the
    end of a walk that stopped early), `lengths` [n] the hops each walk took."""

    csr: CSRGraph
    nodes: np.ndarray
    rels: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def steps(self) -> int:
        """Hops taken by all walks together."""
        return int(self.lengths.sum())

    def to_records(self) -> list[Walk]:
        """`Walk` records with entity ids and relation type names."""
        ids, types = self.csr.entity_ids, self.csr.relation_types
        out = []
        for nodes, rels, length in zip(
            self.nodes.tolist(), self.rels.tolist(), self.lengths.tolist(), strict=True
        ):
            out.append(
                Walk(
                    entities=tuple(ids[v] for v in nodes[: length + 1]),
                    relations=tuple(types[r] for r in rels[:length]),
                )
            )
        return out


@dataclass(frozen=True, eq=False)
class _Sampling:
    """The CSR padded with a sentinel node `n` (degree 0) and a sentinel edge `m` (to `n`, rel
    -1): a dead walker sits on the sentinel and keeps "moving" along the sentinel edge, so the
    uniform hop needs no masks at all."""

    degree: np.ndarray  # int32 [n+1]
    degree_f: np.ndarray  # float32 [n+1] (float64 past 2**24): saves a cast in the hot loop
    first: np.ndarray  # int64 [n+1]: first out-edge, or m when the node has none
    indices: np.ndarray  # int32 [m+1]
    rel: np.ndarray  # int32 [m+1]
    sentinel_node: int
    sentinel_edge: int

    @classmethod
    def of(cls, csr: CSRGraph) -> _Sampling:
        n, m = csr.n_nodes, csr.n_edges
        degree = np.append(csr.out_degree(), np.int32(0))
        first = np.where(degree > 0, np.append(csr.indptr[:-1], m), m).astype(np.int64)
        return cls(
            degree=degree,
            # float32 halves the memory traffic of the hot loop; floor(u * d) < d still holds
            # for u < 1 in float32 while d <= 2**24
            degree_f=degree.astype(np.float32 if degree.max(initial=0) <= 1 << 24 else np.float64),
            first=first,
            indices=np.append(csr.indices, np.int32(n)),
            rel=np.append(csr.rel, np.int32(-1)),
            sentinel_node=n,
            sentinel_edge=m,
        )

    def uniform_edges(self, cur: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniform out-edge of each node in `cur` (the sentinel edge for nodes without one)."""
        u = rng.random(cur.size)
        u *= self.degree[cur]
        edge = u.astype(self.first.dtype)
        edge += self.first[cur]
        return edge


def _pick_valid(
    s: _Sampling, cur: np.ndarray, forbidden: Any, rng: np.random.Generator
) -> np.ndarray:
    """Exact fallback: for each walker, a uniform edge among those `forbidden` does not reject;
    the sentinel edge where there is none. `forbidden(walker, dst)` takes aligned arrays."""
    degree = s.degree[cur].astype(np.int64)
    total = int(degree.sum())
    walker = np.repeat(np.arange(cur.size), degree)
    offset = np.arange(total) - np.repeat(np.cumsum(degree) - degree, degree)
    edge = s.first[cur].astype(np.int64)[walker] + offset
    ok = ~forbidden(walker, s.indices[edge])
    counts = np.bincount(walker[ok], minlength=cur.size)
    valid_edge = edge[ok]
    base = np.cumsum(counts) - counts
    choice = np.full(cur.size, s.sentinel_edge, dtype=s.first.dtype)
    has = counts > 0
    pick = (rng.random(int(has.sum())) * counts[has]).astype(np.int64)
    choice[has] = valid_edge[base[has] + pick]
    return choice


def _walk_chunk(
    s: _Sampling,
    mode: str,
    rng: np.random.Generator,
    nodes: np.ndarray,
    rels: np.ndarray,
    lengths: np.ndarray,
) -> None:
    """Walk one chunk from the start nodes in `nodes[0]`, filling `nodes` [hops+1, w],
    `rels` [hops, w] (hop-major, so every hop reads and writes contiguous rows) and the
    `lengths` [w] of the walks."""
    hops, w = rels.shape
    # Preallocated buffers and take(out=, mode="clip"): the uniform hop allocates nothing
    # (take with mode="raise" buffers its output). Positions used as indices are int64:
    # take() would convert int32 indices to int64 on every call.
    u = np.empty(w, dtype=s.degree_f.dtype)
    degree = np.empty(w, dtype=s.degree_f.dtype)
    edge = np.empty(w, dtype=np.int64)
    first = np.empty(w, dtype=np.int64)
    cur = nodes[0].astype(np.int64)
    for h in range(hops):
        nxt = nodes[h + 1]
        rng.random(out=u, dtype=u.dtype)
        np.take(s.degree_f, cur, out=degree, mode="clip")
        np.multiply(u, degree, out=u)
        np.copyto(edge, u, casting="unsafe")
        np.take(s.first, cur, out=first, mode="clip")
        np.add(edge, first, out=edge)
        np.take(s.indices, edge, out=nxt, mode="clip")
        if mode != "uniform" and (mode == "simple" or h > 0):
            if mode == "simple":
                path = nodes[: h + 1]
                hit = (path == nxt).any(axis=0)

                def bad_of(walker: np.ndarray, dst: np.ndarray, path=path) -> np.ndarray:
                    return (path[:, walker] == dst).any(axis=0)
            else:
                prev = nodes[h - 1]
                hit = prev == nxt

                def bad_of(walker: np.ndarray, dst: np.ndarray, prev=prev) -> np.ndarray:
                    return prev[walker] == dst

            # dead walkers move sentinel -> sentinel, which looks like a revisit: leave them be
            bad = np.flatnonzero(hit & (degree > 0))
            for _ in range(REJECTION_ROUNDS):
                if bad.size == 0:
                    break
                retry = s.uniform_edges(cur[bad], rng)
                edge[bad] = retry
                nxt[bad] = s.indices[retry]
                bad = bad[bad_of(bad, nxt[bad])]
            if bad.size:
                exact = _pick_valid(s, cur[bad], lambda k, dst, bad=bad: bad_of(bad[k], dst), rng)
                edge[bad] = exact
                nxt[bad] = s.indices[exact]
        np.take(s.rel, edge, out=rels[h], mode="clip")
        np.copyto(cur, nxt)
    # while the chunk is still in cache: the sentinel becomes -1, and each walk's length
    np.putmask(nodes, nodes == s.sentinel_node, -1)
    np.sum(rels >= 0, axis=0, dtype=np.int32, out=lengths)


def sample_walks(
    csr: CSRGraph,
    n: int,
    hops: int,
    *,
    mode: WalkMode = "uniform",
    seed: int | Sequence[int] = 0,
    start: Sequence[str] | np.ndarray | None = None,
    relation_types: Sequence[str] | None = None,
    max_out_degree: int | None = None,
    hub_policy: HubPolicy = "skip",
    dead_end: DeadEnd = "stop",
    threads: int | None = None,
    directions: WalkDirections = "out",
) -> Walks:
    """Sample `n` walks of up to `hops` hops, all walkers at once.

    `start`: entity ids or node indices, one per walker (default: uniform over nodes that have
    an out-edge). A walker with no valid next hop stops there (`dead_end="stop"`, its `length`
    is shorter) or is dropped from the result (`dead_end="drop"`, so fewer than `n` walks come
    back). In `non_backtracking` mode a walker whose only way on is back where it came from
    stops. Same `seed` (an int or a list of ints) and arguments give the same walks, whatever
    `threads` is.

    `directions="both"` walks in-edges too, as inverse steps `~r` (`CSRGraph.bidirectional`;
    `relation_types` names the types to keep, both ways): non-backtracking then also never goes
    straight back over the edge it came by, whichever way it points, and a hub is a node with more
    than `max_out_degree` edges in and out together. `"out"` (the default) walks out-edges only.

    >>> both = CSRGraph.from_triples([("a", "r", "b"), ("c", "r", "b")])
    >>> sample_walks(both, 1, 2, mode="non_backtracking", start=["a"], directions="both").to_records()[0].relations
    ('r', '~r')

    >>> csr = CSRGraph.from_triples([("a", "r", "b"), ("b", "r", "a")])
    >>> w = sample_walks(csr, 1, 3, mode="simple", start=["a"])
    >>> w.to_records()[0].entities, int(w.lengths[0])
    (('a', 'b'), 1)
    """
    if mode not in WALK_MODES:
        raise ValueError(f"walk mode must be one of {list(WALK_MODES)}, got {mode!r}")
    if dead_end not in ("stop", "drop"):
        raise ValueError(f"dead_end must be 'stop' or 'drop', got {dead_end!r}")
    if n < 0 or hops < 1:
        raise ValueError(f"need n >= 0 and hops >= 1, got n={n}, hops={hops}")
    if directions not in WALK_DIRECTIONS:
        raise ValueError(f"directions must be one of {list(WALK_DIRECTIONS)}, got {directions!r}")
    if relation_types is not None:
        csr = csr.filter(relation_types=relation_types)
    if directions == "both":
        csr = csr.bidirectional()
    if max_out_degree is not None:
        csr = csr.bounded(max_out_degree, policy=hub_policy)
    s = _Sampling.of(csr)
    bounds = [(a, min(a + CHUNK_SIZE, n)) for a in range(0, n, CHUNK_SIZE)]
    # stream 0 picks start nodes, stream 1 + k drives chunk k
    streams = np.random.SeedSequence(seed).spawn(1 + len(bounds))
    if start is None:
        candidates = np.flatnonzero(s.degree[:-1] > 0).astype(np.int32)
        if candidates.size == 0 and n:
            raise ValueError("the walk graph has no relations to walk along")
        start_rng = np.random.default_rng(streams[0])
        starts = candidates[start_rng.integers(0, max(candidates.size, 1), size=n)]
    else:
        if isinstance(start, np.ndarray) and start.dtype.kind in "iu":
            starts = start.astype(np.int32)
            if starts.size and (starts.min() < 0 or starts.max() >= csr.n_nodes):
                raise ValueError("start holds a node index outside the walk graph")
        else:
            starts = csr.index_of(list(start))
        if starts.shape != (n,):
            raise ValueError(f"start must give one entity per walker ({n}), got {starts.shape[0]}")
    # hop-major storage; `Walks` exposes the transposed views [n, hops+1] without a copy
    nodes = np.empty((hops + 1, n), dtype=np.int32)
    rels = np.empty((hops, n), dtype=np.int32)
    lengths = np.empty(n, dtype=np.int32)
    nodes[0] = starts

    def run(k: int) -> None:
        a, b = bounds[k]
        rng = np.random.default_rng(streams[1 + k])
        _walk_chunk(s, mode, rng, nodes[:, a:b], rels[:, a:b], lengths[a:b])

    workers = threads or min(len(bounds), os.cpu_count() or 1)
    if workers <= 1:
        for k in range(len(bounds)):
            run(k)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, range(len(bounds))))
    if dead_end == "drop":
        full = lengths == hops
        nodes, rels, lengths = nodes[:, full], rels[:, full], lengths[full]
    return Walks(csr=csr, nodes=nodes.T, rels=rels.T, lengths=lengths)
