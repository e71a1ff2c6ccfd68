"""`kag walk`: print random walks over the entity relations (`kag.walks`).

Walks that hit a dead end before `--hops` are replaced by more walkers, so `--n` full walks
come back unless the graph has too few; `--keep-short` prints the raw sample instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kag.cli import UserError, add_graph_argument
from kag.stores import open_store, redact_url
from kag.walks import WALK_MODES, CSRGraph, Walk, sample_walks

__all__ = ["main"]


def _entity_names(store: Any, ids: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    unique = sorted(set(ids))
    for a in range(0, len(unique), 10_000):
        for node in store.get_nodes("Entity", unique[a : a + 10_000]):
            names[node.id] = node.name or node.id
    return names


def main(argv: list[str]) -> int:
    """`kag walk --n N --hops H [--seed S] [--mode M] [--relation R ...] [--json] [--graph URL]`."""

    parser = argparse.ArgumentParser(
        prog="kag walk", description="Sample random walks over the entity relations."
    )
    add_graph_argument(parser)
    parser.add_argument("--n", type=int, default=10, help="number of walks (default 10)")
    parser.add_argument("--hops", type=int, default=3, help="hops per walk (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--mode", choices=WALK_MODES, default="non_backtracking")
    parser.add_argument(
        "--relation",
        action="append",
        default=None,
        metavar="R",
        help="only this relation type (repeatable)",
    )
    parser.add_argument("--domain", default=None, help="only relations inside this entity domain")
    parser.add_argument(
        "--max-out-degree", type=int, default=None, help="skip nodes with more out-edges"
    )
    parser.add_argument(
        "--keep-short", action="store_true", help="also print walks that hit a dead end early"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.n < 0 or args.hops < 1:
        raise UserError(f"--n must be >= 0 and --hops >= 1, got {args.n} and {args.hops}")

    store = open_store(args.graph)
    try:
        csr = CSRGraph.from_store(store, relation_types=args.relation, domain=args.domain)
        if csr.n_edges == 0:
            raise UserError(
                f"{redact_url(store.url)} has no relations to walk"
                + (" with these filters" if args.relation or args.domain else "")
                + "; import some with `kag import triples` or `kag generate world`"
            )
        records = _cli_walks(csr, args)
        names = _entity_names(store, [e for w in records for e in w.entities])
    finally:
        store.close()

    if args.json:
        out = {
            "graph": redact_url(store.url),
            "n": args.n,
            "hops": args.hops,
            "mode": args.mode,
            "seed": args.seed,
            "walks": [
                {**w.to_dict(), "names": [names.get(e, e) for e in w.entities]} for w in records
            ],
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for w in records:
        parts = [f"{names.get(w.entities[0], w.entities[0])}"]
        for rel, entity in zip(w.relations, w.entities[1:], strict=True):
            parts.append(f" -[{rel}]-> {names.get(entity, entity)}")
        print(f"{w.signature[:12]}  {''.join(parts)}")
    if len(records) < args.n:
        print(
            f"(only {len(records)} of {args.n} walks reached {args.hops} hops; "
            "--keep-short shows walks that stop early)",
            file=sys.stderr,
        )
    return 0


def _cli_walks(csr: CSRGraph, args: argparse.Namespace) -> list[Walk]:
    """`--n` walks of the full `--hops`: walkers that hit a dead end are replaced by more
    walkers (from seeds derived from `--seed`), up to a few rounds."""
    if args.keep_short:
        walks = sample_walks(
            csr,
            args.n,
            args.hops,
            mode=args.mode,
            seed=args.seed,
            max_out_degree=args.max_out_degree,
        )
        return walks.to_records()
    records: list[Walk] = []
    for attempt in range(5):
        walks = sample_walks(
            csr,
            max(args.n, 64) * 4**attempt,
            args.hops,
            mode=args.mode,
            seed=[args.seed, attempt],
            max_out_degree=args.max_out_degree,
            dead_end="drop",
        )
        records += walks.to_records()[: args.n - len(records)]
        if len(records) >= args.n:
            break
    return records
