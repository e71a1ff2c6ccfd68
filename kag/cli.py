"""The `kag` command line: the one layer above every package.

Each command lives with the package it belongs to and is imported only when it runs, so
`kag --help` and `kag stats` never import torch or vLLM:

| command                  | handled by                         |
|--------------------------|------------------------------------|
| `kag db upgrade`         | here                               |
| `kag stats`              | here                               |
| `kag import triples`     | `kag.importer:main`                |
| `kag import graph`       | `exporters.cli:import_graph_main`  |
| `kag import tools`       | `selfplay.cli:import_tools_main`   |
| `kag export ...`         | `exporters.cli:main`               |
| `kag copy`               | `kag.copy:main`                    |
| `kag walk`               | `kag.walks:main`                   |
| `kag generate world`     | `kag.world:main`                   |
| `kag model tiny`         | `trainer.cli:model_main`           |
| `kag selfplay run`       | `selfplay.cli:main`                |
| `kag train ...`          | `trainer.cli:main`                 |
| `kag demo`               | `kag.demo:main`                    |

Every handler is `main(argv: list[str]) -> int`. A `UserError` (or `ValueError` raised for bad
input) is printed as one line `kag: error: ...` with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

__all__ = ["main", "UserError", "add_graph_argument"]


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


# command -> (handler "module:function" or a dict of subcommand -> handler, one-line help)
COMMANDS: dict[str, tuple[str | dict[str, str], str]] = {
    "db": ({"upgrade": "kag.cli:db_upgrade_main"}, "create or migrate the graph schema"),
    "stats": ("kag.cli:stats_main", "counts per node and edge kind, relation types, coverage"),
    "import": (
        {
            "triples": "kag.importer:main",
            "graph": "exporters.cli:import_graph_main",
            "tools": "selfplay.cli:import_tools_main",
        },
        "bulk-import triples, a graph snapshot or tool definitions",
    ),
    "export": ("exporters.cli:main", "export datasets (sft, rl, opd) or a graph snapshot"),
    "copy": ("kag.copy:main", "copy a whole graph between backends"),
    "walk": ("kag.walks:main", "sample walks over the entity relations"),
    "generate": ({"world": "kag.world:main"}, "generate a synthetic knowledge graph"),
    "model": ({"tiny": "trainer.cli:model_main"}, "build the tiny test MoE model"),
    "selfplay": ("selfplay.cli:main", "run self-play data generation"),
    "train": ("trainer.cli:main", "train MoE models (sft, grpo, opd)"),
    "demo": ("kag.demo:main", "the whole loop on the embedded default"),
}


def add_graph_argument(parser: argparse.ArgumentParser) -> None:
    """`--graph URL`, defaulting to `$KAG_GRAPH` and then `sqlite:///kag.db`."""
    parser.add_argument(
        "--graph",
        metavar="URL",
        default=None,
        help="graph URL (default: $KAG_GRAPH or sqlite:///kag.db)",
    )


def _call(handler: str, argv: list[str]) -> int:
    module_name, _, func_name = handler.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(argv) or 0)


def _root_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kag",
        description="Knowledge-action graph platform: curate, self-play, export, train.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _root_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    target, help_text = COMMANDS[name]
    if isinstance(target, dict):
        if not rest or rest[0] in ("-h", "--help") or rest[0] not in target:
            print(f"usage: kag {name} {{{','.join(target)}}} ...\n\n{help_text}", file=sys.stderr)
            if rest and rest[0] not in ("-h", "--help"):
                print(f"kag {name}: error: unknown subcommand {rest[0]!r}", file=sys.stderr)
                return 2
            return 0 if rest else 2
        target, rest = target[rest[0]], rest[1:]
    try:
        return _call(target, rest)
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"kag {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kag {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kag walk ... | head`: the reader left, which is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # the store's own errors carry a user-facing message
        from kag.stores.base import StoreError

        if isinstance(err, StoreError):
            print(f"kag {name}: error: {err}", file=sys.stderr)
            return 1
        raise


# --------------------------------------------------------------------------- built-in commands


def db_upgrade_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kag db upgrade", description="Create or migrate the schema."
    )
    add_graph_argument(parser)
    args = parser.parse_args(argv)
    from kag.stores import open_store, redact_url

    store = open_store(args.graph)
    try:
        applied = store.upgrade()
    finally:
        store.close()
    if applied:
        print(f"{redact_url(store.url)}: applied {', '.join(applied)}")
    else:
        print(f"{redact_url(store.url)}: schema up to date")
    return 0


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

    with kag.open(args.graph, upgrade=False) as graph:  # a read: never creates a graph
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


if __name__ == "__main__":
    raise SystemExit(main())
