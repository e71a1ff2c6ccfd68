"""Random walks on FB15k-237 (all splits, 14,541 entities, 310,116 relations): CSR vs networkx.

| metric                    | value                                           | baseline                                  |
|---------------------------|-------------------------------------------------|-------------------------------------------|
| `walk_steps_per_s`        | hops/s of `sample_walks(mode="uniform")`, 4 hops | `random.choice(list(G.successors(v)))` per hop on a networkx `MultiDiGraph` |
| `simple_walk_steps_per_s` | hops/s of `sample_walks(mode="simple")`, 4 hops  | the same loop, choosing among successors not yet on the walk |

The graph is imported into a fresh SQLite file and projected with `CSRGraph.from_store`, as a
user would; only sampling is timed. A step is a hop actually taken (walkers that reach a node
without out-edges stop, as in the baseline). Each figure and its baseline is the best of the same
`--repeat` runs (`repeat` in the RESULT line).

    python benchmarks/walks.py [--walkers 2097152] [--baseline-walkers 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: `$KAG_DATA_DIR/fb15k-237`, default `../shared/data` next to the repository
DATA_DIR = (
    Path(os.environ.get("KAG_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    / "fb15k-237"
)
SPLITS = ("train.tsv", "dev.tsv", "test.tsv")
HOPS = 4


def load_csr(data_dir: Path, workdir: Path):
    import kag
    from kag.importer import import_triples
    from kag.walks import CSRGraph

    with kag.open(f"sqlite:///{workdir / 'fb15k.db'}") as graph:
        import_triples(graph, [data_dir / s for s in SPLITS], progress=False)
        started = time.perf_counter()
        csr = CSRGraph.from_store(graph)
        return csr, time.perf_counter() - started


def csr_rate(csr, mode: str, walkers: int, repeat: int, threads: int | None) -> tuple[float, dict]:
    from kag.walks import sample_walks

    sample_walks(csr, 1 << 12, HOPS, mode=mode, seed=0)  # warm-up
    best, info = 0.0, {}
    for k in range(repeat):
        started = time.perf_counter()
        walks = sample_walks(csr, walkers, HOPS, mode=mode, seed=k, threads=threads)
        seconds = time.perf_counter() - started
        if walks.steps / seconds > best:
            best = walks.steps / seconds
            info = {"steps": walks.steps, "seconds": round(seconds, 4), "walkers": walkers}
    return best, info


def networkx_rate(csr, *, simple: bool, walkers: int, repeat: int) -> float:
    """Per-step Python walk on a networkx MultiDiGraph holding the same edges."""
    import networkx as nx
    import numpy as np

    graph = nx.MultiDiGraph()
    graph.add_nodes_from(range(csr.n_nodes))
    src = np.repeat(np.arange(csr.n_nodes), np.diff(csr.indptr))
    graph.add_edges_from(zip(src.tolist(), csr.indices.tolist(), csr.rel.tolist(), strict=True))
    starts = np.flatnonzero(np.diff(csr.indptr) > 0).tolist()
    best = 0.0
    for k in range(repeat):
        rng = random.Random(k)
        steps = 0
        started = time.perf_counter()
        for _ in range(walkers):
            node = rng.choice(starts)
            path = [node]
            for _ in range(HOPS):
                successors = list(graph.successors(node))
                if simple:
                    successors = [s for s in successors if s not in path]
                if not successors:
                    break
                node = rng.choice(successors)
                path.append(node)
                steps += 1
        best = max(best, steps / (time.perf_counter() - started))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="FB15k-237 directory")
    parser.add_argument("--walkers", type=int, default=1 << 21, help="walkers per CSR run")
    parser.add_argument(
        "--baseline-walkers", type=int, default=20_000, help="walkers per networkx run"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best counts")
    parser.add_argument(
        "--threads", type=int, default=None, help="sampler threads (default: cores)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    with tempfile.TemporaryDirectory(prefix="kag-walks-") as tmp:
        csr, projection_s = load_csr(args.data, Path(tmp))
    common = {
        "graph": "FB15k-237 (all splits)",
        "nodes": csr.n_nodes,
        "edges": csr.n_edges,
        "hops": HOPS,
        "cores": os.cpu_count(),
        "csr_projection_s": round(projection_s, 3),
    }
    load = {"load_avg_1m": round(os.getloadavg()[0], 2)}  # the machine may be shared
    for metric, mode, simple in (
        ("walk_steps_per_s", "uniform", False),
        ("simple_walk_steps_per_s", "simple", True),
    ):
        value, info = csr_rate(csr, mode, args.walkers, args.repeat, args.threads)
        baseline = networkx_rate(
            csr, simple=simple, walkers=args.baseline_walkers, repeat=args.repeat
        )
        result = {
            "metric": metric,
            "value": round(value, 1),
            "unit": "steps/s",
            "baseline": "networkx" + (" (simple paths)" if simple else ""),
            "baseline_value": round(baseline, 1),
            "ratio": round(value / baseline, 2),
            "mode": mode,
            "repeat": args.repeat,  # best of, for both
            "baseline_walkers": args.baseline_walkers,
            **info,
            **common,
            **load,
            "target": ">= 2e7 steps/s and ratio >= 30" if mode == "uniform" else ">= 5e6 steps/s",
        }
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
