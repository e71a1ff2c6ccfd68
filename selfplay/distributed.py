"""Scale-out of self-play with Ray: workers generate and verify, the driver writes to the graph.

Each worker is a Ray actor with its own policy (oracle, an in-process vLLM engine, or a client of
an OpenAI-compatible server) and its own read connection to the graph for the tools. The driver
splits the work into chunks, hands them out, and writes each chunk's scored rollouts as it comes
back, so the graph has one writer and a killed run resumes as a local one does.

>>> run(graph, config=SelfPlayConfig(engine="oracle", tasks=64, workers=4))  # doctest: +SKIP

A Ray cluster already running (`ray.init(address=...)` before the run) is used as it is;
otherwise a local one with `workers` CPUs is started and shut down at the end.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from kag.schema import Task
from kag.stores.base import GraphStore
from selfplay.config import SelfPlayConfig
from selfplay.families import task_setup
from selfplay.generation import RolloutSource, build_policy, build_scorer, build_tools
from selfplay.writeback import ScoredRollout

__all__ = ["WorkerPool", "absolute_graph_url"]


def absolute_graph_url(url: str) -> str:
    """A graph URL that means the same thing from any working directory.

    >>> absolute_graph_url("sqlite:///kag.db").startswith("sqlite:////")
    True
    >>> absolute_graph_url("neo4j://u:p@host:7687")
    'neo4j://u:p@host:7687'
    """
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        path = url[len(prefix) :]
        if path and path != ":memory:":
            return prefix + os.path.abspath(path)
    return url


class _Worker:
    """One generator: a `RolloutSource` with its own policy and tools, returning scored rollouts."""

    def __init__(self, graph_url: str, config: SelfPlayConfig, run_id: str) -> None:
        from kag.stores import open_store

        self.store = open_store(graph_url)
        policy, self._close_policy = build_policy(config)
        tools = build_tools(self.store, config)
        try:
            scorer, self._close_scorer = build_scorer(
                config, tools, policy_engine=getattr(policy, "engine", None), store=self.store
            )
        except BaseException:
            self._close_policy()
            raise
        setup = task_setup(self.store)
        scorer.setup = scorer.setup or setup
        self.source = RolloutSource(
            self.store,
            policy,
            tools=tools,
            run_id=run_id,
            solver=config.solver,
            scorer=scorer,
            setup=setup,
        )

    def solve(self, work: list[tuple[Task, int]]) -> list[ScoredRollout]:
        scored: list[ScoredRollout] = []
        self.source.solve(work, on_scored=scored.extend)
        return scored

    def close(self) -> None:
        try:
            self._close_scorer()
        finally:
            self._close_policy()
            self.store.close()


class WorkerPool:
    """`config.workers` Ray actors kept for the whole run; `solve` hands out one batch of work.

    >>> pool = WorkerPool(store, config, run_id="r1"); pool.solve(work, on_scored=print); pool.close()  # doctest: +SKIP
    """

    def __init__(self, store: GraphStore, config: SelfPlayConfig, *, run_id: str) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is in the `scale` extra
            raise ValueError("--workers needs Ray: pip install 'kag[scale]'") from None
        if config.workers < 1:
            raise ValueError(f"a worker pool needs workers >= 1, got {config.workers}")
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            ray.init(
                num_cpus=config.workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._started = True
        try:
            actor = ray.remote(num_cpus=1)(_Worker)
            url = absolute_graph_url(store.url)
            self.actors = [actor.remote(url, config, run_id) for _ in range(config.workers)]
        except BaseException:
            self.close()
            raise

    def solve(
        self,
        work: Sequence[tuple[Task, int]],
        *,
        on_scored: Callable[[list[ScoredRollout]], None],
        chunk_size: int | None = None,
    ) -> None:
        """Solve `(task, sample)` pairs; `on_scored` gets each chunk's results as it arrives.

        Chunks default to about four per worker, so a slow chunk does not idle the others.
        """
        ray = self._ray
        if not work:
            return
        size = chunk_size or max(1, math.ceil(len(work) / (4 * len(self.actors))))
        chunks = [list(work[a : a + size]) for a in range(0, len(work), size)]
        pending: dict[Any, int] = {}
        next_chunk = 0
        for i, a in enumerate(self.actors):
            if next_chunk < len(chunks):
                pending[a.solve.remote(chunks[next_chunk])] = i
                next_chunk += 1
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            on_scored(ray.get(done[0]))
            if next_chunk < len(chunks):
                pending[self.actors[i].solve.remote(chunks[next_chunk])] = i
                next_chunk += 1

    def close(self) -> None:
        """Stop the actors (and the local Ray cluster, if this pool started it)."""
        ray = self._ray
        actors, self.actors = getattr(self, "actors", []), []
        try:
            if actors:
                ray.get([a.close.remote() for a in actors], timeout=120)
        finally:
            for a in actors:
                ray.kill(a)
            if self._started:
                ray.shutdown()
                self._started = False
