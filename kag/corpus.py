"""The graph's own text, for training a tokenizer on the words agents read and write.

`graph_corpus(graph)` yields, for every entity, the JSON an observation shows of it and a sentence
with its name, and for every relation type its name, its phrase and a call that follows it. A
tokenizer trained on it (`kag model tiny OUT_DIR --graph URL`) encodes the graph's names, ids and
relation names in one or two tokens each, so a small model copies them between the question, its
tool calls and the observations instead of spelling them out character by character.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = ["graph_corpus"]


def _compact(value: Any) -> str:
    # the tools' observation encoding (no spaces), so the same byte sequences are learnt
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def graph_corpus(graph: Any, *, repeats: int = 3) -> Iterator[str]:
    """Lines of text from a `KnowledgeActionGraph`'s entities and relation types, `repeats` times.

    >>> import kag
    >>> with kag.open("sqlite://") as g:
    ...     _ = g.upsert_entities([{"id": "city/1", "name": "Oslo", "type": "city"}])
    ...     lines = list(graph_corpus(g, repeats=1))
    >>> lines[0]
    '{"id":"city/1","name":"Oslo","type":"city"}'
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    phrases = graph.relation_phrases()
    relations = sorted(graph.relation_types())
    for _ in range(repeats):
        for e in graph.iter_nodes("Entity"):
            yield _compact({"id": e.id, "name": e.name, "type": e.type})
            yield f'Find the start entity "{e.name}". {e.name} is a {e.type} ({e.id}).'
            yield json.dumps({"name": "search_entities", "arguments": {"query": e.name}})
        for r in relations:
            yield json.dumps({"name": "get_relations", "arguments": {"relation": r}})
            yield f'follow "{r}": {phrases.get(r, r)}'
