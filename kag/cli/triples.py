"""`kag import triples FILE...`: the command line of `kag.importer.import_triples`."""

from __future__ import annotations

import argparse
import json
import sys

from kag.cli import add_graph_argument
from kag.importer import FORMATS, import_triples

__all__ = ["main", "parse_columns"]


def parse_columns(text: str | None) -> tuple[str | int, ...] | None:
    """`--columns` as names or 0-based positions: `"s,2,o"` -> `("s", 2, "o")`."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--columns takes three comma-separated names or positions, got {text!r}")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def main(argv: list[str]) -> int:
    """`kag import triples FILE... [--entities F] [--relations F] [--format F] [--delimiter D] ...`"""
    parser = argparse.ArgumentParser(
        prog="kag import triples",
        description="Import triple files into the graph: nothing is written unless every file "
        "is valid; then all or nothing on SQLite, while Neo4j commits in batches and a rerun "
        "of the same import after a failure completes it exactly.",
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="triple files (tsv, csv, jsonl, parquet)"
    )
    add_graph_argument(parser)
    parser.add_argument(
        "--entities",
        metavar="FILE",
        help="entity file: id, name, type, description; further header columns (or jsonl "
        "keys) are props, numbers loaded as numbers",
    )
    parser.add_argument(
        "--entities-delimiter",
        metavar="D",
        help="delimiter of the entity file (default: tab, or sniffed)",
    )
    parser.add_argument(
        "--relations", metavar="FILE", help="relation file: name, natural-language phrase"
    )
    parser.add_argument(
        "--format", choices=FORMATS, help="triple file format (default: by extension)"
    )
    parser.add_argument("--delimiter", metavar="D", help="field delimiter, e.g. '|' or '\\t'")
    parser.add_argument(
        "--columns",
        metavar="S,R,O",
        help="subject,relation,object columns: names or 0-based positions",
    )
    parser.add_argument(
        "--header", action="store_true", help="the first row of delimited files names the columns"
    )
    parser.add_argument("--domain", default="", help="domain given to new entities")
    parser.add_argument(
        "--all-entities", action="store_true", help="also import entity-file rows no triple uses"
    )
    parser.add_argument(
        "--batch-size", type=int, default=50_000, help="records per write batch (default 50000)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    import kag

    with kag.open(args.graph) as graph:
        report = import_triples(
            graph,
            args.files,
            format=args.format,
            delimiter=args.delimiter,
            columns=parse_columns(args.columns),
            header=args.header,
            domain=args.domain,
            entities_file=args.entities,
            entities_delimiter=args.entities_delimiter,
            relations_file=args.relations,
            all_entities=args.all_entities,
            batch_size=args.batch_size,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        url = graph.url
    if args.json:
        print(json.dumps({"graph": url, **report.to_dict()}))
        return 0
    print(
        f"imported {report.rows:,} rows from {len(report.files)} file(s) into {url}: "
        f"{report.entities_new:,} new entities, {report.relations_new:,} new relations "
        f"({report.duplicates:,} duplicates), {report.relation_types:,} relation types"
        + (f", {report.phrases:,} phrases applied" if report.phrases else "")
        + f" in {report.seconds:.1f} s ({report.relations_per_s:,.0f} rows/s)"
    )
    if report.phrases_unmatched:
        names = ", ".join(report.phrases_unmatched[:10])
        more = len(report.phrases_unmatched) - 10
        print(
            f"kag import triples: {len(report.phrases_unmatched)} phrase(s) of {args.relations} "
            f"name no relation type and were not applied: {names}"
            + (f" and {more} more" if more > 0 else ""),
            file=sys.stderr,
        )
    return 0
