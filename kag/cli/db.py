"""`kag db upgrade`: create or migrate the graph schema (SQL: Alembic; Neo4j: migrations/neo4j)."""

from __future__ import annotations

import argparse

from kag.cli import add_graph_argument

__all__ = ["db_upgrade_main"]


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
