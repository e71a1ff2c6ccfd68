"""KAG: a knowledge-action graph platform for long-horizon agent training data.

>>> import kag
>>> with kag.open("sqlite:///kag.db") as graph:  # doctest: +SKIP
...     graph.upsert_entities([{"id": "ada", "name": "Ada Lovelace", "type": "person"}])
...     print(graph.stats()["nodes"]["Entity"])

`kag.open` gives a `KnowledgeActionGraph` over the embedded SQLite store or a Neo4j server; the
records it stores are defined in `kag.schema`.
"""

from kag.graph import KnowledgeActionGraph, open
from kag.schema import (
    Dataset,
    Edge,
    Entity,
    Relation,
    Run,
    SchemaError,
    Step,
    Task,
    Tool,
    ToolCall,
    Trajectory,
    Verification,
    Verifier,
)
from kag.stores import GraphBatch, StoreError

__version__ = "0.1.0"

__all__ = [
    "open",
    "KnowledgeActionGraph",
    "GraphBatch",
    "StoreError",
    "SchemaError",
    "Entity",
    "Relation",
    "Tool",
    "Verifier",
    "Task",
    "Trajectory",
    "Step",
    "ToolCall",
    "Verification",
    "Run",
    "Dataset",
    "Edge",
]
