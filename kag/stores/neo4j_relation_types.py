"""The relation types of a Neo4j graph: `(:RelationType {token, name, phrase})` nodes and counts.

Every relation type the graph holds is recorded as a node that maps its relationship type (the
token, `relationship_type(name)`) back to the name the user gave; two names with one token are
a collision, refused before anything is written. Counting relations of a type reads Neo4j's count
store, never the relationships.

>>> types = RelationTypes(connection)  # doctest: +SKIP
>>> types.register(["born_in"]); types.counts(["rel_born_in"])  # doctest: +SKIP
{'rel_born_in': 0}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kag.schema import EDGE_ENDPOINTS
from kag.stores.neo4j_connection import Neo4jConnection
from kag.stores.neo4j_cypher import collision, quote_name, relationship_type

__all__ = ["RelationTypes"]

#: edge kinds that can leave an Entity node: relationships, not relations
_EDGE_KINDS_FROM_ENTITY = tuple(
    kind for kind, ends in EDGE_ENDPOINTS.items() if any(s == "Entity" for s, _ in ends)
)


class RelationTypes:
    """The recorded relation types of one graph, with a cache of the tokens seen so far."""

    def __init__(self, connection: Neo4jConnection) -> None:
        self._conn = connection
        self._tokens: dict[str, str] = {}  # token -> relation name, as recorded in the graph

    def forget(self) -> None:
        """Drop the cache (after the graph was wiped behind this store's back)."""
        self._tokens.clear()

    def recorded(self) -> list[tuple[str, str]]:
        """(token, name) of every recorded relation type; refreshes the cache."""
        rows = self._conn.read("MATCH (k:RelationType) RETURN k.token AS token, k.name AS name")
        pairs = [(r["token"], r["name"]) for r in rows]
        self._tokens.update(pairs)
        return pairs

    def new_tokens(self, names: Iterable[str]) -> dict[str, str]:
        """token -> name of the names not yet known to this cache; a collision is an error."""
        new: dict[str, str] = {}
        for name in dict.fromkeys(names):
            token = relationship_type(name)
            known = self._tokens.get(token) or new.get(token)
            if known is None:
                new[token] = name
            elif known != name:
                raise collision(name, known, token)
        return new

    def remember(self, tokens: Mapping[str, str]) -> None:
        """Note tokens that a committed transaction registered (`register_in`)."""
        self._tokens.update(tokens)

    @staticmethod
    def register_in(tx: Any, tokens: Mapping[str, str]) -> None:
        """Record `tokens` (from `new_tokens`) inside transaction `tx`; a collision is an error."""
        if not tokens:
            return
        rows = [{"token": t, "name": n} for t, n in tokens.items()]
        result = tx.run(
            "UNWIND $rows AS row MERGE (k:RelationType {token: row.token}) "
            "ON CREATE SET k.name = row.name RETURN k.token AS token, k.name AS name",
            rows=rows,
        )
        for record in result:
            if record["name"] != tokens[record["token"]]:
                raise collision(tokens[record["token"]], record["name"], record["token"])

    def register(self, names: Iterable[str]) -> None:
        """Record relation types in their own transaction, before relations of them are written."""
        new_tokens = self.new_tokens(names)
        if new_tokens:
            with self._conn.session() as session:
                session.execute_write(self.register_in, new_tokens)
            self.remember(new_tokens)

    def counts(self, tokens: Sequence[str], *, per_query: int = 200) -> dict[str, int]:
        """Relationships of each token, from the count store, `per_query` tokens per UNION query.

        One query for many types, because every query text is planned once per server: 237
        single-type queries cost seconds on a server that has not seen them yet.
        """
        counts: dict[str, int] = {}
        for start in range(0, len(tokens), per_query):
            part = tokens[start : start + per_query]
            query = " UNION ALL ".join(
                f"MATCH ()-[r:{quote_name(token)}]->() RETURN {i} AS i, count(r) AS n"
                for i, token in enumerate(part)
            )
            for record in self._conn.read(query):
                counts[part[record["i"]]] = record["n"]
        return counts

    def relation_count(self) -> int:
        """Relations, from the count store: relationships leaving an entity, minus edges that do.

        One plan for any number of relation types, unlike `counts`.
        """
        branches = ["MATCH (:Entity)-[r]->() RETURN count(r) AS n"]
        for kind in _EDGE_KINDS_FROM_ENTITY:
            branches.append(f"MATCH (:Entity)-[r:{quote_name(kind)}]->() RETURN -count(r) AS n")
        return sum(r["n"] for r in self._conn.read(" UNION ALL ".join(branches)))
