"""Score rollouts with a `VerifierSuite`: verdict, reward and Verification records, for write-back.

>>> scorer = Scorer(registry)  # the default suite  # doctest: +SKIP
>>> [s.verdict for s in scorer.score(rollouts)]  # doctest: +SKIP
['accepted', 'rejected']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kag.schema import Task
from kag.stores.base import GraphStore
from selfplay.rewards import VerifierSuite
from selfplay.rollout import Rollout
from selfplay.solver import TaskSetup
from selfplay.tools import ToolRegistry
from selfplay.verifiers import VerifyContext, answer_path_entities
from selfplay.writeback import ScoredRollout

__all__ = ["Scorer"]


class Scorer:
    """Runs `suite` (default: `VerifierSuite.default()`) on rollouts, or the suite `suites` names
    for the task's family, with `tools` as the registry that `tool_call_validity` checks calls
    against, `engine` for an LLM judge, and `store` (the graph) for the tool-step check's answer
    paths (without it, the task's own path). `setup` (as `Solver(setup=...)`) gives the tools
    of a task that brings its own: its calls are checked against those."""

    def __init__(
        self,
        tools: ToolRegistry,
        *,
        suite: VerifierSuite | None = None,
        suites: Mapping[str, VerifierSuite] | None = None,
        engine: Any = None,
        store: GraphStore | None = None,
        setup: Callable[[Task], TaskSetup | None] | None = None,
    ) -> None:
        self.tools = tools
        self.setup = setup
        # task id -> the registry its calls are checked against, for tasks with their own tools
        self._own_tools: dict[str, ToolRegistry] = {}
        self.suite = suite or VerifierSuite.default()
        self.suites = dict(suites or {})
        self.engine = engine
        self.store = store
        # task id -> its answer-path entities: K samples of one task share one graph search
        self._paths: dict[str, frozenset[str] | None] = {}

    @property
    def verifier_ids(self) -> list[str]:
        """The ids attached to proposed tasks (CHECKED_BY)."""
        return self.suite.ids

    def suite_for(self, task: Task) -> VerifierSuite:
        """The suite that scores `task`: its family's, else the default one."""
        return self.suites.get(task.family, self.suite)

    def persist(self, store: GraphStore) -> None:
        """Upsert the Verifier nodes of every suite."""
        for suite in (self.suite, *self.suites.values()):
            suite.persist(store)

    def score(self, rollouts: Sequence[Rollout]) -> list[ScoredRollout]:
        """One `ScoredRollout` per rollout; a verifier's own failure never loses a rollout."""
        out = []
        for r in rollouts:
            context = VerifyContext(
                registry=self._registry(r.task),
                touched_entity_ids=r.touched_entity_ids,
                n_malformed=r.n_malformed,
                engine=self.engine,
                answer_path_entities=self._answer_paths(r.task),
            )
            result = self.suite_for(r.task).evaluate(r.task, r, context)
            out.append(
                ScoredRollout(
                    rollout=r,
                    verdict="accepted" if result.accepted else "rejected",
                    reward=result.reward,
                    verifications=tuple(result.verifications(r.id)),
                    props={"n_invalid_calls": result.invalid_calls},
                )
            )
        return out

    def _registry(self, task: Task) -> ToolRegistry:
        if self.setup is None:
            return self.tools
        if task.id not in self._own_tools:
            own = self.setup(task)
            if own is None:
                return self.tools
            if len(self._own_tools) > 10_000:
                self._own_tools.clear()
            self._own_tools[task.id] = own.tools
        return self._own_tools[task.id]

    def _answer_paths(self, task: Task) -> frozenset[str] | None:
        if self.store is None:
            return None
        if task.id not in self._paths:
            if len(self._paths) > 10_000:
                self._paths.clear()
            self._paths[task.id] = answer_path_entities(self.store, task)
        return self._paths[task.id]
