"""A connection to a Neo4j server: the URL, the driver, sessions and retried read queries.

>>> parse_neo4j_url("bolt://neo4j:pw@localhost")[0]
'bolt://localhost:7687'

`Neo4jConnection` is what every part of the Neo4j backend talks through (the store, the bulk
writer, the relation-type registry); a wrong address or password is one `StoreError` line, and the
driver's own log lines never reach the terminal (its `neo4j` logger gets a `NullHandler`; an
application that configures logging still sees them).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import neo4j
from neo4j import exceptions as ex

from kag.stores.base import StoreError
from kag.stores.neo4j_cypher import DRIVER_ERRORS, describe

__all__ = ["SCHEMES", "Neo4jConnection", "parse_neo4j_url"]

#: URL schemes of Neo4j graphs
SCHEMES = ("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc")

# Without a handler, Python's last-resort handler prints the driver's warnings ("Unable to
# retrieve routing information", once per attempt) before our own message.
logging.getLogger("neo4j").addHandler(logging.NullHandler())


def parse_neo4j_url(url: str) -> tuple[str, str, str, str | None]:
    """Split a graph URL into (driver URI without credentials, user, password, database).

    Credentials missing from the URL come from `KAG_NEO4J_USER` (default `neo4j`) and
    `KAG_NEO4J_PASSWORD`; user and password may be percent-encoded.

    >>> parse_neo4j_url("neo4j://neo4j:p%40ss@127.0.0.1:7687?database=kag")
    ('neo4j://127.0.0.1:7687', 'neo4j', 'p@ss', 'kag')
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(
            f"not a Neo4j URL: {url.split('@')[-1]!r}; use neo4j://user:password@host:7687"
        )
    if not parts.hostname:
        raise ValueError(
            f"Neo4j URL {parts.scheme}://...@{parts.netloc.split('@')[-1]} names no host"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"Neo4j URL has a bad port: {parts.netloc.split('@')[-1]!r}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    uri = f"{parts.scheme}://{host}:{port or 7687}"
    user = unquote(parts.username) if parts.username else os.environ.get("KAG_NEO4J_USER", "neo4j")
    if parts.password is not None:
        password = unquote(parts.password)
    else:
        password = os.environ.get("KAG_NEO4J_PASSWORD", "")
    database = parse_qs(parts.query).get("database", [None])[0]
    return uri, user, password, database


class Neo4jConnection:
    """The driver for one graph URL, verified on opening (see `Neo4jConfig` for the options).

    >>> conn = Neo4jConnection("neo4j://neo4j:secret@localhost:7687")  # doctest: +SKIP
    >>> conn.read("MATCH (n) RETURN count(n) AS n")[0]["n"]  # doctest: +SKIP
    0
    """

    def __init__(
        self,
        url: str,
        *,
        database: str | None = None,
        connect_attempts: int = 3,
        connection_timeout: float = 5.0,
        max_retry_time: float = 15.0,
    ) -> None:
        uri, user, password, url_database = parse_neo4j_url(url)
        self.address = uri
        self.database = database or url_database
        self._driver = neo4j.GraphDatabase.driver(
            uri,
            auth=(user, password),
            connection_timeout=connection_timeout,
            max_transaction_retry_time=max_retry_time,
            notifications_min_severity="OFF",
        )
        self._connect(user, connect_attempts)

    def _connect(self, user: str, attempts: int) -> None:
        delay = 1.0
        last: BaseException | None = None
        for attempt in range(max(1, attempts)):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                self._driver.verify_connectivity()
                return
            except ex.AuthError:
                # never retried: Neo4j locks a user out after a few failed attempts
                self._driver.close()
                raise StoreError(
                    f"Neo4j {self.address}: authentication failed for user {user!r}; check the "
                    "password in the URL (neo4j://user:password@host:port) or KAG_NEO4J_PASSWORD"
                ) from None
            except (*DRIVER_ERRORS, OSError) as err:
                last = err
        self._driver.close()
        raise StoreError(
            f"cannot reach Neo4j at {self.address} after {max(1, attempts)} attempt(s): "
            f"{type(last).__name__}: {last}. Is the server running? `make neo4j` starts a local one."
        ) from None

    def session(self, *, read: bool = False) -> neo4j.Session:
        """A driver session on the graph's database (read or write access)."""
        return self._driver.session(
            database=self.database,
            default_access_mode=neo4j.READ_ACCESS if read else neo4j.WRITE_ACCESS,
        )

    def read(self, query: str, **params: Any) -> list[Any]:
        """Records of one read query, in a managed (retried) read transaction."""
        with self.session(read=True) as session:
            return session.execute_read(lambda tx: list(tx.run(query, params)))

    def read_as(self, action: str, query: str, **params: Any) -> list[Any]:
        """`read`, with a driver error turned into a `StoreError` naming `action` and the server
        (for generators, which a decorator cannot wrap)."""
        try:
            return self.read(query, **params)
        except DRIVER_ERRORS as err:
            raise StoreError(f"Neo4j {self.address}: {action} failed: {describe(err)}") from err

    def close(self) -> None:
        self._driver.close()
