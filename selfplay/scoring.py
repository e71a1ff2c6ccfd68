"""Score rollouts with a `VerifierSuite`: verdict, reward and Verification records, for write-back.

>>> scorer = Scorer(registry)  # the default suite  # doctest: +SKIP
>>> [s.verdict for s in scorer.score(rollouts)]  # doctest: +SKIP
['accepted', 'rejected']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kag.stores.base import GraphStore
from selfplay.rollout import Rollout
from selfplay.tools import ToolRegistry
from selfplay.verifiers import VerifierSuite, VerifyContext
from selfplay.writeback import ScoredRollout

__all__ = ["Scorer"]


class Scorer:
    """Runs `suite` (default: `VerifierSuite.default()`) on rollouts, with `tools` as the registry
    that `tool_call_validity` checks calls against and `engine` for an LLM judge."""

    def __init__(
        self, tools: ToolRegistry, *, suite: VerifierSuite | None = None, engine: Any = None
    ) -> None:
        self.tools = tools
        self.suite = suite or VerifierSuite.default()
        self.engine = engine

    @property
    def verifier_ids(self) -> list[str]:
        """The ids attached to proposed tasks (CHECKED_BY)."""
        return self.suite.ids

    def persist(self, store: GraphStore) -> None:
        """Upsert the suite's Verifier nodes."""
        self.suite.persist(store)

    def score(self, rollouts: Sequence[Rollout]) -> list[ScoredRollout]:
        """One `ScoredRollout` per rollout; a verifier's own failure never loses a rollout."""
        out = []
        for r in rollouts:
            context = VerifyContext(
                registry=self.tools,
                touched_entity_ids=r.touched_entity_ids,
                n_malformed=r.n_malformed,
                engine=self.engine,
            )
            result = self.suite.evaluate(r.task, r, context)
            out.append(
                ScoredRollout(
                    rollout=r,
                    verdict="accepted" if result.accepted else "rejected",
                    reward=result.reward,
                    verifications=tuple(result.verifications(r.id)),
                )
            )
        return out
