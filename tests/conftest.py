"""Shared fixtures: graph backends (every contract test runs on each), the tiny model, Neo4j.

`graph_url` / `graph` are parametrised over the backends: "sqlite" (a fresh file per test) and
"neo4j" (one server per test run, wiped before each test; see `tests/neo4j_plugin.py`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import kag
from tests.data import find_data_dir

pytest_plugins = [
    name
    for name in ("tests.neo4j_plugin", "tests.engine_fixtures")
    if importlib.util.find_spec(name) is not None
]

BACKENDS = ["sqlite", "neo4j"] if importlib.util.find_spec("tests.neo4j_plugin") else ["sqlite"]


@pytest.fixture(params=BACKENDS)
def graph_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL of an empty graph on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kag.db'}"
    return request.getfixturevalue("neo4j_url")


@pytest.fixture
def graph(graph_url: str):
    """An open, empty `KnowledgeActionGraph` on each backend."""
    with kag.open(graph_url) as g:
        yield g


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'kag.db'}"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data sets: `$KAG_DATA_DIR`, default `../shared/data` next to the repo."""
    return find_data_dir()
