"""`kag copy SRC_URL DST_URL`: `kag.copy.copy_graph` between two graph URLs, into an empty graph
unless `--into-nonempty`."""

from __future__ import annotations

import argparse
import sys
import time

from kag.cli import UserError
from kag.copy import copy_graph
from kag.stores import GraphStore, open_store, redact_url

__all__ = ["main"]


def _is_empty(store: GraphStore) -> bool:
    stats = store.stats()
    return not any(stats["nodes"].values()) and not any(stats["edges"].values())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kag copy",
        description="Copy a whole graph between backends, e.g. sqlite:///kag.db to neo4j://user:pw@host:7687.",
    )
    parser.add_argument("source", metavar="SRC_URL", help="graph to read")
    parser.add_argument(
        "destination", metavar="DST_URL", help="graph to write (schema created if missing)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=10_000, help="records per batch (default 10,000)"
    )
    parser.add_argument(
        "--into-nonempty",
        action="store_true",
        help="allow a destination that already holds data (records are upserted by id)",
    )
    args = parser.parse_args(argv)

    if args.source == args.destination:
        raise UserError("source and destination are the same graph")
    source = open_store(args.source)
    try:
        if hasattr(source, "check_schema"):
            source.check_schema()
        destination = open_store(args.destination)
        try:
            destination.upgrade()
            if not args.into_nonempty and not _is_empty(destination):
                raise UserError(
                    f"destination {redact_url(args.destination)} already holds data; copy into an "
                    "empty graph, or pass --into-nonempty to upsert into it"
                )
            started = time.perf_counter()
            last = [0.0]

            def progress(kind: str, n: int) -> None:
                now = time.perf_counter()
                if now - last[0] > 1.0:
                    last[0] = now
                    print(f"\rkag copy: {kind} {n:,}", end="", file=sys.stderr, flush=True)

            counts = copy_graph(source, destination, batch_size=args.batch_size, progress=progress)
        finally:
            destination.close()
    finally:
        source.close()
    seconds = time.perf_counter() - started
    print("\r", end="", file=sys.stderr)
    total = sum(counts.values())
    print(
        f"copied {total:,} records from {redact_url(args.source)} to {redact_url(args.destination)} "
        f"in {seconds:.1f} s; stats match"
    )
    for kind, n in counts.items():
        print(f"  {kind:<14} {n:>12,}")
    return 0
