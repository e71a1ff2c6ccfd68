"""Acceptance and reward: a `VerifierSuite` of required and optional verifiers and its `RewardConfig`.

| name            | what it is                                                                   |
|-----------------|------------------------------------------------------------------------------|
| `RewardConfig`  | how verifier scores make a reward, with bands that keep every rejected       |
|                 | trajectory below every accepted one                                          |
| `VerifierSuite` | required verifiers (all must pass), optional ones, the step check, the rule  |
| `SuiteResult`   | one trajectory's verdict, reward, verifier results and step results          |

The reward is built so that it cannot be gamed by the tricks a policy finds first:

- a partial answer scores its F1 (below a full one) and is rejected (`answer_match@2`);
- ids seen in a broad search do not count as evidence (`evidence_coverage@2`);
- each malformed or schema-invalid call costs `invalid_call_penalty` and, by default, rejects;
- a rejected trajectory's reward is at most `rejected_max`, an accepted one's at least
  `accepted_min` (> `rejected_max`), so no rejected trajectory outscores an accepted one.

>>> suite = VerifierSuite.default()
>>> result = suite.evaluate(task, rollout, VerifyContext(registry=registry))  # doctest: +SKIP
>>> result.accepted, result.reward  # doctest: +SKIP
(True, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kag.schema import Task, Verification, Verifier
from kag.stores.base import GraphBatch
from selfplay.rollout import step_id
from selfplay.verifiers import (
    AnswerMatch,
    EvidenceCoverage,
    LLMJudge,
    NoShortcut,
    ProcessCheck,
    ToolCallValidity,
    ToolStepCheck,
    TrajectoryVerifier,
    VerifierResult,
    VerifyContext,
    build_verifier,
    invalid_calls,
)

__all__ = ["RewardConfig", "SuiteResult", "VerifierSuite", "verification_id"]


def verification_id(subject_id: str, verifier_id: str) -> str:
    """The deterministic id of one verifier's verdict on one trajectory or step.

    >>> verification_id("traj:r:t:0", "answer_match@2")
    'ver:traj:r:t:0:answer_match@2'
    """
    return f"ver:{subject_id}:{verifier_id}"


@dataclass(frozen=True, kw_only=True, slots=True)
class RewardConfig:
    """How a trajectory's reward combines verifier scores.

    ``quality = (outcome_weight * score(outcome) + process_weight * mean(score(p) for p in
    process)) / (outcome_weight + process_weight) - invalid_call_penalty * invalid calls``,
    clipped to [0, 1]. An accepted trajectory gets ``accepted_min + (1 - accepted_min) *
    quality``, a rejected one ``rejected_max * quality``: with the defaults a correct, fully
    grounded trajectory gets 1.0, every accepted one at least 0.5, and every rejected one at most
    0.45 (a wrong answer after the right tool work gets partial credit, about 0.1).
    """

    #: weight of the outcome verifier's score (the answer's F1)
    outcome_weight: float = 0.8
    #: weight of the mean score of the process verifiers
    process_weight: float = 0.2
    outcome: str = "answer_match"
    #: process verifiers averaged into the reward (those the suite lacks are left out). The step
    #: check (`tool_step`) may be named too; it is not by default, because a policy that must
    #: name every answer expands frontier entities that turn out to be dead ends, and an optimal
    #: trajectory would score below 1. Its per-step verdicts are kept for process advantages.
    process: tuple[str, ...] = ("evidence_coverage", "process", "tool_call_validity")
    #: subtracted from the quality per malformed or schema-invalid tool call
    invalid_call_penalty: float = 0.1
    #: the lowest reward of an accepted trajectory
    accepted_min: float = 0.5
    #: the highest reward of a rejected trajectory (must be below `accepted_min`)
    rejected_max: float = 0.45

    def __post_init__(self) -> None:
        if isinstance(self.process, str):
            raise ValueError("RewardConfig.process must be a list of verifier names, not a string")
        object.__setattr__(self, "process", tuple(self.process))
        for name in ("outcome_weight", "process_weight", "invalid_call_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.outcome_weight + self.process_weight <= 0:
            raise ValueError("RewardConfig needs outcome_weight + process_weight > 0")
        if not 0.0 <= self.rejected_max < self.accepted_min <= 1.0:
            raise ValueError(
                "RewardConfig needs 0 <= rejected_max < accepted_min <= 1 (every rejected "
                f"trajectory below every accepted one), got rejected_max={self.rejected_max}, "
                f"accepted_min={self.accepted_min}"
            )

    def reward(
        self, *, accepted: bool, outcome: float, process: Sequence[float], invalid: int
    ) -> float:
        """The reward of one trajectory from its verifier scores.

        >>> RewardConfig().reward(accepted=True, outcome=1.0, process=[1.0, 1.0], invalid=0)
        1.0
        >>> RewardConfig().reward(accepted=False, outcome=1.0, process=[1.0], invalid=0)
        0.45
        """
        mean_process = sum(process) / len(process) if process else 0.0
        weight = self.outcome_weight + (self.process_weight if process else 0.0)
        quality = (
            self.outcome_weight * outcome + (self.process_weight * mean_process if process else 0.0)
        ) / weight
        quality = min(1.0, max(0.0, quality - self.invalid_call_penalty * invalid))
        if accepted:
            return self.accepted_min + (1.0 - self.accepted_min) * quality
        return self.rejected_max * quality


@dataclass(frozen=True, kw_only=True, slots=True)
class SuiteResult:
    """A suite's verdict on one trajectory: accepted, reward, each verifier's result by id, and
    the step check's result per tool-result message index."""

    accepted: bool
    reward: float
    results: dict[str, VerifierResult]
    required: tuple[str, ...]
    steps: dict[int, VerifierResult] = field(default_factory=dict)
    step_verifier: str | None = None
    #: malformed or schema-invalid tool calls
    invalid_calls: int = 0

    @property
    def failed(self) -> list[str]:
        """Ids of the verifiers that did not pass (False or undecided)."""
        return [vid for vid, r in self.results.items() if r.passed is not True]

    def verifications(
        self, subject_id: str, *, subject_kind: str = "Trajectory"
    ) -> list[Verification]:
        """The Verification records of this result (deterministic ids, for idempotent write-back):
        one per verifier on the trajectory, and one per tool step on its Step
        (`selfplay.rollout.step_id(subject_id, index)`)."""
        out = [
            Verification(
                id=verification_id(subject_id, vid),
                verifier_id=vid,
                subject_id=subject_id,
                subject_kind=subject_kind,  # type: ignore[arg-type]
                passed=r.passed,
                score=float(r.score),
                detail=r.detail,
                props={"required": vid in self.required, **_checks(r)},
            )
            for vid, r in self.results.items()
        ]
        if self.step_verifier is not None:
            for index, r in sorted(self.steps.items()):
                sid = step_id(subject_id, index)
                out.append(
                    Verification(
                        id=verification_id(sid, self.step_verifier),
                        verifier_id=self.step_verifier,
                        subject_id=sid,
                        subject_kind="Step",
                        passed=r.passed,
                        score=float(r.score),
                        detail=r.detail,
                        props={"required": False, **_checks(r)},
                    )
                )
        return out


def _checks(r: VerifierResult) -> dict[str, Any]:
    return {"checks": dict(r.checks)} if r.checks else {}


class VerifierSuite:
    """Required and optional verifiers, the step check, and the reward rule.

    Without `reward`, the default `RewardConfig` is used over whichever of its process verifiers
    the suite has; a given `reward` must name verifiers of the suite. Acceptance: every required
    verifier passes (an undecided one, `passed=None`, rejects). A verifier that raises is recorded
    as undecided with the error as its detail. `steps` (default `ToolStepCheck()`, None for none)
    verifies every tool step; its mean step score is the `tool_step` process score (in the
    reward when `RewardConfig.process` names it).
    """

    def __init__(
        self,
        *,
        required: Sequence[TrajectoryVerifier | str],
        optional: Sequence[TrajectoryVerifier | str] = (),
        steps: ToolStepCheck | None = None,
        reward: RewardConfig | None = None,
    ) -> None:
        self.required = [
            v if isinstance(v, TrajectoryVerifier) else build_verifier(v) for v in required
        ]
        self.optional = [
            v if isinstance(v, TrajectoryVerifier) else build_verifier(v) for v in optional
        ]
        self.steps = steps
        ids = [v.id for v in self.verifiers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a verifier appears twice in the suite: {ids}")
        names = {v.name for v in self.verifiers} | ({steps.name} if steps else set())
        if reward is None:  # the default rule, over the process verifiers this suite has
            default = RewardConfig()
            reward = RewardConfig(process=tuple(n for n in default.process if n in names))
        self.reward = reward
        for name in (self.reward.outcome, *self.reward.process):
            if name not in names:
                raise ValueError(
                    f"RewardConfig names verifier {name!r}, which is not in the suite ({sorted(names)})"
                )

    @classmethod
    def default(
        cls, *, judge: LLMJudge | None = None, reward: RewardConfig | None = None
    ) -> VerifierSuite:
        """Required: answer_match, evidence_coverage, no_shortcut, tool_call_validity. Optional:
        process, and the judge when given. Steps: tool_step."""
        optional: list[TrajectoryVerifier] = [ProcessCheck()]
        if judge is not None:
            optional.append(judge)
        return cls(
            required=[AnswerMatch(), EvidenceCoverage(), NoShortcut(), ToolCallValidity()],
            optional=optional,
            steps=ToolStepCheck(),
            reward=reward,
        )

    @property
    def verifiers(self) -> list[TrajectoryVerifier]:
        """The trajectory-level verifiers, required first."""
        return [*self.required, *self.optional]

    @property
    def ids(self) -> list[str]:
        """Every verifier id of the suite (the step check's last), as tasks list them."""
        return [v.id for v in self.verifiers] + ([self.steps.id] if self.steps else [])

    def records(self) -> list[Verifier]:
        """The Verifier nodes of the suite."""
        return [v.record() for v in self.verifiers] + ([self.steps.record()] if self.steps else [])

    def persist(self, store: Any) -> int:
        """Upsert the Verifier nodes (idempotent); returns how many."""
        store = getattr(store, "store", store)
        batch = GraphBatch().extend(self.records())
        store.write(batch)
        return len(batch)

    def evaluate(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> SuiteResult:
        """Run every verifier on one trajectory; never raises for a verifier's own failure."""
        results: dict[str, VerifierResult] = {}
        by_name: dict[str, VerifierResult] = {}
        for v in self.verifiers:
            r = _safely(lambda v=v: v.verify(task, trajectory, context))
            results[v.id] = r
            by_name[v.name] = r
        steps: dict[int, VerifierResult] = {}
        if self.steps is not None:
            try:
                steps = self.steps.verify_steps(task, trajectory, context)
            except Exception as err:  # one broken check must not lose the trajectory
                by_name[self.steps.name] = _error(err)
            else:
                good = sum(r.passed is True for r in steps.values())
                by_name[self.steps.name] = VerifierResult(
                    passed=good == len(steps) if steps else None,
                    score=sum(r.score for r in steps.values()) / len(steps) if steps else 0.0,
                    detail=f"{good}/{len(steps)} tool steps pass every check",
                )
        required = tuple(v.id for v in self.required)
        accepted = all(results[vid].passed is True for vid in required)
        invalid = _safely_count(trajectory, context)
        rw = self.reward
        reward = rw.reward(
            accepted=accepted,
            outcome=by_name[rw.outcome].score,
            process=[by_name[n].score for n in rw.process],
            invalid=invalid,
        )
        return SuiteResult(
            accepted=accepted,
            reward=float(reward),
            results=results,
            required=required,
            steps=steps,
            step_verifier=self.steps.id if self.steps is not None else None,
            invalid_calls=invalid,
        )


def _error(err: Exception) -> VerifierResult:
    return VerifierResult(
        passed=None, score=0.0, detail=f"verifier error: {type(err).__name__}: {err}"
    )


def _safely(fn: Any) -> VerifierResult:
    try:
        return fn()
    except Exception as err:  # one broken check must not lose the trajectory
        return _error(err)


def _safely_count(trajectory: Any, context: VerifyContext | None) -> int:
    try:
        return invalid_calls(trajectory, context)[0]
    except Exception:  # counted as none: the verifiers' own results already record the error
        return 0
