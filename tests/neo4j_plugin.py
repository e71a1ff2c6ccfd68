"""Pytest fixtures for a real Neo4j: one server for the whole run, wiped before each test.

`neo4j_server` starts the launcher in `neo4j-launcher/` once per session (building it with Maven
if needed), or uses the server that `KAG_NEO4J_URI` / `KAG_NEO4J_USER` / `KAG_NEO4J_PASSWORD`
point at. Neo4j tests never skip: without Java and Maven they fail, saying what to install.
`neo4j_url` gives each test an empty graph with the schema in place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import pytest


@dataclass(frozen=True, kw_only=True, slots=True)
class Neo4jEndpoint:
    """Where the test server listens: `url` carries the credentials, `uri` does not."""

    uri: str
    user: str
    password: str
    url: str
    server: object | None  # the `Neo4jServer` when this run started it


def _wipe(url: str) -> None:
    """Delete every node but the migration records, and make sure the schema is current."""
    from kag.stores.neo4j import Neo4jStore

    store = Neo4jStore(url)
    try:
        with store.session() as session:
            session.run(
                "MATCH (n) WHERE NOT n:KagMigration "
                "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"
            ).consume()
        store.upgrade()
    finally:
        store.close()


@pytest.fixture(scope="session")
def neo4j_server() -> Iterator[Neo4jEndpoint]:
    uri = os.environ.get("KAG_NEO4J_URI")
    if uri:
        user = os.environ.get("KAG_NEO4J_USER", "neo4j")
        password = os.environ.get("KAG_NEO4J_PASSWORD", "")
        parts = urlsplit(uri)
        url = f"{parts.scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc.split('@')[-1]}"
        yield Neo4jEndpoint(uri=uri, user=user, password=password, url=url, server=None)
        return
    from kag.neo4j_server import LauncherConfig

    server = LauncherConfig().start()  # raises with what to install when Java or Maven is missing
    try:
        yield Neo4jEndpoint(
            uri=server.uri,
            user=server.user,
            password=server.password,
            url=server.url,
            server=server,
        )
    finally:
        server.stop()


@pytest.fixture
def neo4j_url(neo4j_server: Neo4jEndpoint) -> str:
    """The URL of an empty Neo4j graph with the schema applied."""
    _wipe(neo4j_server.url)
    return neo4j_server.url
