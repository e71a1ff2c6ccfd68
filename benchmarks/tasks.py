"""Task proposal per family on real knowledge bases: tasks proposed per second, and why walks drop.

| metric                         | value                                                 | baseline                          |
|--------------------------------|-------------------------------------------------------|-----------------------------------|
| `{kb}_search_tasks_per_s`      | `Proposer.propose` (CSR walks, set-semantics answers, | the same tasks made with networkx:|
|                                | shortcut and answer-count filters), 2 hops            | `random.choice` walks on a        |
|                                |                                                       | `MultiDiGraph`, answers by set    |
|                                |                                                       | expansion, the same filters       |
| `{kb}_instruction_tasks_per_s` | search tasks with output constraints composed on them | the search proposer of the run    |
| `{kb}_search_{set,obfuscated}_tasks_per_s` | set and obfuscated search tasks (`ProposerConfig.shapes`, | the chain search proposer |
|                                | `directions="both"`), drops per shape  |                                   |
| `{kb}_compute_tasks_per_s`     | `ComputeProposer.propose` (numeric facts; MetaQA's    | the search proposer of the run    |
|                                | years are relation targets, FB15k-237 has no numbers: |                                   |
|                                | count tasks only)                                     |                                   |

The networkx peer holds the graph and every name in memory and checks nothing against a store;
the proposer reads names and known task ids from the graph in each sampling round, so on a KB
where most forward walks dead-end (MetaQA) its rounds, not the walks, dominate. Every RESULT line
also gives `dropped` (reason -> share of the walks or candidates that did not
become tasks) and the counts. Each KB (FB15k-237 train with names; the MetaQA KB subset) is imported
into a fresh SQLite file first, as a user would; only proposing is timed, after one warm-up call.
Tool-use tasks are imported, not proposed (`kag import tasks`): not measured here.

    python benchmarks/tasks.py [--tasks 256] [--kb fb15k-237,metaqa]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `python benchmarks/tasks.py` puts benchmarks/ first on sys.path, where benchmarks/selfplay.py
# would shadow the selfplay package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"
FB15K = DATA / "fb15k-237"
METAQA_KB = DATA / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt"
HOPS = 2


def load(kb: str, workdir: Path) -> str:
    import kag
    from kag.importer import import_triples

    url = f"sqlite:///{workdir / (kb + '.db')}"
    with kag.open(url) as graph:
        if kb == "fb15k-237":
            import_triples(
                graph,
                [FB15K / "train.tsv"],
                entities_file=FB15K / "entity2text.txt",
                progress=False,
            )
        else:
            import_triples(graph, [METAQA_KB], delimiter="|", progress=False)
    return url


def shares(dropped: Counter, total: int) -> dict[str, float]:
    return {k: round(v / max(total, 1), 4) for k, v in sorted(dropped.items()) if v}


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def networkx_tasks(store, n: int, seed: int, max_answers: int = 10) -> tuple[int, float]:
    """The naive peer: networkx walks and answer sets, the same filters; (tasks, seconds)."""
    import networkx as nx

    from selfplay.answers import leaked_answer

    g = nx.MultiDiGraph()
    names = {e.id: e.name for batch in store.iter_nodes("Entity") for e in batch}
    for batch in store.iter_relations():
        for r in batch:
            g.add_edge(r.source, r.target, key=r.type)
    nodes = [v for v in g.nodes if g.out_degree(v) > 0]
    rng = random.Random(seed)
    started = time.perf_counter()
    made, seen, attempts = 0, set(), 0
    while made < n and attempts < 50 * n:
        attempts += 1
        v = rng.choice(nodes)
        walk, rels = [v], []
        for _ in range(HOPS):
            out = list(g.out_edges(walk[-1], keys=True))
            if not out:
                break
            _, t, r = rng.choice(out)
            walk.append(t)
            rels.append(r)
        if len(rels) < HOPS or (v, tuple(rels)) in seen:
            continue
        seen.add((v, tuple(rels)))
        frontier = {v}
        for r in rels:
            frontier = {t for u in frontier for _, t, k in g.out_edges(u, keys=True) if k == r}
        if not frontier or len(frontier) > max_answers:
            continue
        question = f'Start from "{names.get(v, v)}" and follow {", then ".join(rels)}.'
        if leaked_answer(question, [names.get(a, a) for a in frontier]) is None:
            made += 1
    return made, time.perf_counter() - started


def measure(kb: str, url: str, n: int) -> list[dict]:
    import kag
    from selfplay.families import FamilyProposer
    from selfplay.proposer import Proposer, ProposerConfig

    results = []
    with kag.open(url) as graph:
        store = graph.store
        search = Proposer(store)
        family = FamilyProposer(store, search)
        family.propose("search", 8, hops=HOPS, seed=99)  # warm-up: CSR, names
        family.propose("compute", 8, hops=HOPS, seed=99)  # warm-up: the numbers
        base_tasks, base_s = timed(lambda: networkx_tasks(store, n, seed=1))
        base_rate = base_tasks[0] / base_tasks[1] if base_tasks[1] else 0.0
        search_rate = None
        for name in ("search", "instruction", "compute"):
            proposal, seconds = timed(lambda name=name: family.propose(name, n, hops=HOPS, seed=1))
            rate = len(proposal.tasks) / seconds if seconds else 0.0
            total = max(proposal.walks, len(proposal.tasks) + sum(proposal.dropped.values()))
            if name == "search":
                search_rate = rate
                baseline, baseline_value = "networkx walks + answer sets, same filters", base_rate
            else:
                baseline, baseline_value = "the search proposer, same run", search_rate
            results.append(
                {
                    "metric": f"{kb.replace('-', '_')}_{name}_tasks_per_s",
                    "value": round(rate, 2),
                    "unit": "tasks/s",
                    "baseline": baseline,
                    "baseline_value": round(baseline_value or 0.0, 2),
                    "ratio": round(rate / baseline_value, 3) if baseline_value else None,
                    "tasks": len(proposal.tasks),
                    "asked": n,
                    "seconds": round(seconds, 3),
                    "walks": proposal.walks,
                    "dropped": shares(proposal.dropped, total),
                    "hops": HOPS,
                }
            )
        for shape in ("set", "obfuscated"):  # the other search shapes, against chain walks
            shaped = Proposer(store, config=ProposerConfig(shapes=(shape,), directions="both"))
            shaped.propose(8, hops=HOPS, seed=99)  # warm-up: the two-way CSR
            proposal, seconds = timed(lambda p=shaped: p.propose(n, hops=HOPS, seed=1))
            rate = len(proposal.tasks) / seconds if seconds else 0.0
            total = max(proposal.walks, len(proposal.tasks) + sum(proposal.dropped.values()))
            results.append(
                {
                    "metric": f"{kb.replace('-', '_')}_search_{shape}_tasks_per_s",
                    "value": round(rate, 2),
                    "unit": "tasks/s",
                    "baseline": "the chain search proposer, same run",
                    "baseline_value": round(search_rate or 0.0, 2),
                    "ratio": round(rate / search_rate, 3) if search_rate else None,
                    "tasks": len(proposal.tasks),
                    "asked": n,
                    "seconds": round(seconds, 3),
                    "walks": proposal.walks,
                    "dropped": shares(proposal.dropped_by_shape.get(shape, Counter()), total),
                    "hops": HOPS,
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=256, help="tasks asked of each proposer")
    parser.add_argument("--kb", default="fb15k-237,metaqa", help="comma list: fb15k-237, metaqa")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kb in args.kb.split(","):
            url = load(kb, Path(tmp))
            for result in measure(kb, url, args.tasks):
                print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
