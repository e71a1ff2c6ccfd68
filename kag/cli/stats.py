"""`kag stats`: counts per node and edge kind, relation types, datasets and coverage."""

from __future__ import annotations

import argparse
import json

from kag.cli import add_graph_argument

__all__ = ["stats_main"]


def stats_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kag stats", description="Counts per node and edge kind.")
    add_graph_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="also show coverage of entities and relation types by accepted tasks",
    )
    args = parser.parse_args(argv)
    import kag

    with kag.open(args.graph) as graph:
        stats = graph.stats(coverage=args.coverage)
    if args.json:
        print(json.dumps(stats, sort_keys=True))
        return 0
    print(f"graph: {stats['url']}")
    for section in ("nodes", "edges"):
        print(f"{section}:")
        for kind, n in stats[section].items():
            print(f"  {kind:<14} {n:>12,}")
    types = stats["relation_types"]
    print(f"relation types: {len(types)}")
    for rel, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))[:20]:
        print(f"  {n:>10,}  {rel}")
    if len(types) > 20:
        print(f"  ... and {len(types) - 20} more")
    if stats.get("datasets"):
        print("datasets:")
        for ds in stats["datasets"]:
            print(f"  {ds['id']}  {ds['kind']:<4} {ds['rows']:>10,} rows  {ds['path']}")
    if "coverage" in stats:
        cov = stats["coverage"]
        print("coverage by accepted tasks:")
        for key, value in cov.items():
            print(f"  {key:<28} {value}")
    return 0
