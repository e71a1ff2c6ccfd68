"""Graph backends behind one protocol; `open_store(url)` picks one from the URL scheme.

>>> store = open_store("sqlite:///:memory:")  # doctest: +SKIP
"""

from __future__ import annotations

import os

from kag.stores.base import (
    GraphBatch,
    GraphNotFoundError,
    GraphStore,
    RelationArrays,
    StoreError,
    TrajectoryContent,
    TrajectoryQuery,
)

__all__ = [
    "DEFAULT_URL",
    "GraphBatch",
    "GraphNotFoundError",
    "GraphStore",
    "RelationArrays",
    "StoreError",
    "TrajectoryContent",
    "TrajectoryQuery",
    "open_store",
    "resolve_url",
    "redact_url",
]

DEFAULT_URL = "sqlite:///kag.db"


def resolve_url(url: str | None) -> str:
    """The graph URL to use: the argument, else `$KAG_GRAPH`, else `sqlite:///kag.db`."""
    return url or os.environ.get("KAG_GRAPH") or DEFAULT_URL


def redact_url(url: str) -> str:
    """The URL without its password, for logs and manifests.

    >>> redact_url("neo4j://neo4j:secret@localhost:7687")
    'neo4j://neo4j:***@localhost:7687'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def open_store(url: str | None = None) -> GraphStore:
    """Open the backend for `url` (see `resolve_url`); the schema must exist (`kag db upgrade`)."""
    url = resolve_url(url)
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("sqlite", "postgresql", "mysql"):
        from kag.stores.sql import SQLStore

        return SQLStore(url)
    if scheme in ("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"):
        from kag.stores.neo4j import Neo4jStore

        return Neo4jStore(url)
    raise ValueError(
        f"unsupported graph URL {redact_url(url)!r}: use sqlite:///path/kag.db, "
        "neo4j://user:password@host:7687 or bolt://..."
    )
