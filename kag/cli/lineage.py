"""`kag lineage ID`: the chain through a model, dataset, run or trajectory (graph -> model -> evals)."""

from __future__ import annotations

import argparse
import json

from kag.cli import add_graph_argument

__all__ = ["main"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kag lineage",
        description="Print the lineage of a model, dataset, run or trajectory: tasks -> "
        "trajectories -> datasets -> models (stage, parents) -> runs that used the models.",
    )
    parser.add_argument("id", help="a Model, Dataset, Run or Trajectory id")
    add_graph_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    import kag
    from kag.lineage import format_lineage, lineage

    with kag.open(args.graph, upgrade=False) as graph:  # a read: never creates a graph
        chain = lineage(graph.store, args.id)
    print(json.dumps(chain, sort_keys=True) if args.json else format_lineage(chain))
    return 0
