"""`kag generate world`: write the reproducible fictional graph of `kag.world` into a graph."""

from __future__ import annotations

import argparse
import json

from kag.cli import UserError, add_graph_argument
from kag.world import MIN_SIZE, generate_world, write_world

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """`kag generate world --seed S --size N [--merge] [--graph URL] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="kag generate world", description="Generate a reproducible fictional knowledge graph."
    )
    add_graph_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", type=int, default=1000, help=f"number of entities (>= {MIN_SIZE}, default 1000)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="write into a graph that already holds entities (records are upserted by id)",
    )
    parser.add_argument("--json", action="store_true", help="print a summary as one JSON object")
    args = parser.parse_args(argv)
    if args.size < MIN_SIZE:
        raise UserError(f"--size must be at least {MIN_SIZE}, got {args.size}")
    import kag

    entities, relations, phrases = generate_world(seed=args.seed, size=args.size)
    with kag.open(args.graph) as graph:
        held = graph.store.count_nodes("Entity")
        if held and not args.merge:
            raise UserError(
                f"{graph.url} already holds {held:,} entities; generate the world into an empty "
                "graph (another --graph), or pass --merge to upsert it into this one"
            )
        write_world(graph, entities, relations, phrases)
        url = graph.url
    summary = {
        "graph": url,
        "seed": args.seed,
        "entities": len(entities),
        "relations": len(relations),
        "relation_types": len({r.type for r in relations}),
        "domains": sorted({e.domain for e in entities}),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"generated a world (seed {args.seed}) into {url}: {summary['entities']:,} entities, "
            f"{summary['relations']:,} relations of {summary['relation_types']} types "
            f"in domains {', '.join(summary['domains'])}"
        )
    return 0
