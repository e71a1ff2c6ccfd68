"""Session-scoped pytest fixtures for the tiny model and the engines (a pytest plugin).

| fixture          | what it gives                                                       |
|------------------|---------------------------------------------------------------------|
| `tiny_model_dir` | `Path` of the tiny Qwen3-MoE model + tokenizer, built once (seed 0)  |
| `vllm_engine`    | a `VLLMEngine` on the tiny model (CPU), shared by the whole session  |
| `vllm_server`    | a running OpenAI-compatible vLLM server of the tiny model            |

Load it with `pytest_plugins = ["tests.engine_fixtures"]` in `tests/conftest.py` (or `-p
tests.engine_fixtures`). Engine fixtures take 30-60 s to start on CPU; tests using them should be
marked `@pytest.mark.vllm`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test model directory (loads with transformers Auto* classes and vLLM)."""
    from trainer.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path) -> Iterator[Any]:
    """An in-process `VLLMEngine` on the tiny model; closed at the end of the session."""
    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig

    engine = VLLMEngine(
        tiny_model_dir, config=VLLMEngineConfig(max_model_len=2048, kv_cache_gib=0.5)
    )
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path) -> Iterator[Any]:
    """A `VLLMServer` (OpenAI-compatible, loopback, free port) of the tiny model; `.base_url`, `.model`."""
    from selfplay.vllm_server import VLLMServer, VLLMServerConfig

    server = VLLMServer(
        tiny_model_dir, config=VLLMServerConfig(max_model_len=2048, kv_cache_gib=0.5)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)
