"""`kag export sft|rl|opd|graph OUT_DIR [filters]` and `kag import graph DIR`.

kag export sft out/sft --domain film --min-turns 2 --dedup exact,walk --graph sqlite:///kag.db
kag export graph snapshot/ && kag import graph snapshot/ --graph neo4j://neo4j:pw@host:7687
"""

from __future__ import annotations

import argparse
import sys

from kag.cli import add_graph_argument

__all__ = ["main", "import_graph_main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kag export",
        description="Export verified trajectories as a Parquet dataset (sft, rl, opd), "
        "or the whole graph as a lossless Parquet snapshot (graph).",
    )
    p.add_argument("kind", choices=["sft", "rl", "opd", "graph"], help="what to export")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (must be empty or absent)")
    add_graph_argument(p)
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if it holds an earlier export"
    )
    f = p.add_argument_group("selection (datasets only)")
    f.add_argument(
        "--run", action="append", default=[], metavar="ID", help="self-play run id (repeatable)"
    )
    f.add_argument(
        "--domain", action="append", default=[], metavar="D", help="task domain (repeatable)"
    )
    f.add_argument(
        "--policy", action="append", default=[], metavar="P", help="policy name (repeatable)"
    )
    f.add_argument(
        "--verdict",
        choices=["accepted", "rejected", "any"],
        default=None,
        help="trajectory verdict (default: accepted for sft, any for rl/opd)",
    )
    f.add_argument(
        "--family", action="append", default=[], metavar="F", help="task family (repeatable)"
    )
    f.add_argument(
        "--keep-invalid-calls",
        action="store_true",
        help="keep trajectories with malformed or schema-invalid tool calls in sft exports "
        "(left out by default)",
    )
    f.add_argument(
        "--include-eval",
        action="store_true",
        help="also export trajectories of evaluation runs (left out by default, so held-out "
        "tasks never leak into training data)",
    )
    f.add_argument("--min-turns", type=int, default=None, metavar="N")
    f.add_argument("--max-turns", type=int, default=None, metavar="N")
    f.add_argument("--min-hops", type=int, default=None, metavar="N")
    f.add_argument("--max-hops", type=int, default=None, metavar="N")
    d = p.add_argument_group("dedup, splits, shards (datasets only)")
    d.add_argument(
        "--dedup",
        default="exact",
        metavar="RULES",
        help="comma list of exact, walk; or none (default: exact)",
    )
    d.add_argument(
        "--cap-per-domain", type=int, default=None, metavar="N", help="at most N rows per domain"
    )
    d.add_argument(
        "--splits",
        default="train=0.9,validation=0.05,test=0.05",
        metavar="SPEC",
        help="split ratios by hash of the task id (default: train=0.9,validation=0.05,test=0.05)",
    )
    d.add_argument(
        "--shard-rows", type=int, default=100_000, metavar="N", help="rows per Parquet file"
    )
    o = p.add_argument_group("opd")
    o.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="FAMILY_OR_DOMAIN=KEY",
        help="routing key of a task family or domain (repeatable; default: the task's family)",
    )
    o.add_argument("--protocol-max-turns", type=int, default=8, metavar="N")
    o.add_argument("--protocol-max-tokens", type=int, default=1024, metavar="N")
    return p


def _teachers(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        domain, sep, key = spec.partition("=")
        if not sep or not domain or not key:
            raise ValueError(
                f"--teacher {spec!r}: write FAMILY_OR_DOMAIN=KEY, e.g. --teacher search=search"
            )
        out[domain] = key
    return out


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from exporters.exporter import open_graph_store

    if args.kind == "graph":
        from exporters.snapshot import export_graph

        store, _ = open_graph_store(args.graph)
        try:
            result = export_graph(store, args.out_dir, overwrite=args.overwrite)
        finally:
            store.close()
        nodes = sum(result.counts["nodes"].values())
        edges = sum(result.counts["edges"].values())
        print(
            f"{result.path}: {nodes:,} nodes, {result.counts['relations']:,} relations, {edges:,} edges"
        )
        return 0

    from exporters import DedupConfig, OPDConfig, Selection, SplitConfig, WriterConfig, export

    selection = Selection(
        run_id=tuple(args.run),
        family=tuple(args.family),
        domain=tuple(args.domain),
        policy=tuple(args.policy),
        verdict=None
        if args.verdict is None
        else (() if args.verdict == "any" else (args.verdict,)),
        min_turns=args.min_turns,
        max_turns=args.max_turns,
        min_hops=args.min_hops,
        max_hops=args.max_hops,
        keep_invalid_calls=True if args.keep_invalid_calls else None,
        include_eval=args.include_eval,
    )
    result = export(
        args.kind,
        args.out_dir,
        graph=args.graph,
        selection=selection,
        dedup=DedupConfig.parse(args.dedup, cap_per_domain=args.cap_per_domain),
        splits=SplitConfig.parse(args.splits),
        writer=WriterConfig(shard_rows=args.shard_rows),
        opd=OPDConfig(
            teachers=_teachers(args.teacher),
            max_turns=args.protocol_max_turns,
            max_tokens=args.protocol_max_tokens,
        ),
        overwrite=args.overwrite,
    )
    splits = ", ".join(f"{k} {v:,}" for k, v in result.counts["split"].items())
    dropped = {k: v for k, v in result.counts["dropped"].items() if v}
    print(
        f"{result.path}: {result.rows:,} {args.kind} rows ({splits}); dropped {dropped or 'none'}"
    )
    print(f"dataset {result.dataset_id} (export run {result.run_id})")
    return 0


def import_graph_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="kag import graph", description="Load a snapshot written by `kag export graph`."
    )
    p.add_argument("snapshot_dir", metavar="DIR")
    add_graph_argument(p)
    args = p.parse_args(argv)
    from exporters.exporter import open_graph_store
    from exporters.snapshot import import_graph

    store, _ = open_graph_store(args.graph)
    try:
        store.upgrade()  # importing into a new graph is the common case
        counts = import_graph(store, args.snapshot_dir)
    finally:
        store.close()
    nodes = sum(counts["nodes"].values())
    edges = sum(counts["edges"].values())
    print(
        f"imported {nodes:,} nodes, {counts['relations']:,} relations, {edges:,} edges",
        file=sys.stdout,
    )
    return 0
