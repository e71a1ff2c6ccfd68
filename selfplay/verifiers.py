"""Verifiers: checks of a trajectory against its task, each `name@version` with a Verifier record.

| verifier (`name@1`)     | passes when                                                          | kind  |
|-------------------------|----------------------------------------------------------------------|-------|
| `answer_match`          | the final `<answer>` equals a valid answer (normalised text)         | rule  |
| `evidence_coverage`     | every entity of the task's path was touched by a tool call           | rule  |
| `process`               | at least one tool call per hop                                       | rule  |
| `tool_call_validity`    | every call names a known tool with arguments valid for its schema    | rule  |
| `no_shortcut`           | the question does not contain an answer                              | rule  |
| `llm_judge`             | an engine, shown question, answers and reply, says CORRECT           | llm   |

Every verifier has `verify(task, trajectory, context) -> VerifierResult(passed, score, detail)`;
`trajectory` is a list of DESIGN section 4 messages, a list of `Step`s, or any object with
`.messages` (a solver `Rollout`). `passed` is None when the verifier cannot decide.

`VerifierSuite` combines them: a trajectory is accepted when every required verifier passes, and
its reward is `outcome_weight * outcome score + process_weight * mean process score`
(`RewardConfig`). `SuiteResult.verifications(subject_id)` gives the Verification records.

>>> suite = VerifierSuite.default()
>>> result = suite.evaluate(task, rollout, VerifyContext(registry=registry))  # doctest: +SKIP
>>> result.accepted, result.reward  # doctest: +SKIP
(True, 1.0)
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kag.schema import Step, Task, Verification, Verifier
from kag.stores.base import GraphBatch
from selfplay.answers import answers_match, leaked_answer, normalize_answer
from selfplay.graph_tools import entity_ids_in
from selfplay.parsing import extract_answer

__all__ = [
    "VerifierResult",
    "VerifyContext",
    "TrajectoryVerifier",
    "AnswerMatch",
    "EvidenceCoverage",
    "ProcessCheck",
    "ToolCallValidity",
    "NoShortcut",
    "LLMJudge",
    "RewardConfig",
    "VerifierSuite",
    "SuiteResult",
    "VERIFIERS",
    "build_verifier",
    "verification_id",
    "trajectory_messages",
    "touched_entity_ids",
    "build_judge_prompt",
    "judge_verdict_regex",
    "parse_judge_verdict",
    "extract_answer",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifierResult:
    """One verifier's verdict: `passed` (None = cannot decide), a score in [0, 1], and why."""

    passed: bool | None
    score: float
    detail: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyContext:
    """What verifiers may need beyond the task and the messages.

    `registry` (a `ToolRegistry`) lets `tool_call_validity` check arguments against schemas;
    `touched_entity_ids` are the entities the trajectory's tool calls touched, as the registry's
    observations reported them (recomputed from the messages when None, or taken from a
    `Rollout`); `n_malformed` counts tool calls the parser could not read (from a `Rollout` when
    None); `engine` serves `llm_judge`.
    """

    registry: Any = None
    touched_entity_ids: Sequence[str] | None = None
    n_malformed: int | None = None
    engine: Any = None


# --------------------------------------------------------------------------- trajectory helpers


def trajectory_messages(trajectory: Any) -> list[dict[str, Any]]:
    """DESIGN section 4 messages of a trajectory given as messages, Steps or a `Rollout`."""
    items = getattr(trajectory, "messages", trajectory)
    if isinstance(items, Mapping) or not isinstance(items, Sequence):
        raise TypeError(
            f"a trajectory must be a list of messages or Steps, got {type(items).__name__}"
        )
    if items and all(isinstance(s, Step) for s in items):
        return [s.to_message() for s in sorted(items, key=lambda s: s.idx)]
    out = []
    for i, m in enumerate(items):
        if isinstance(m, Step):
            out.append(m.to_message())
        elif isinstance(m, Mapping) and "role" in m:
            out.append(dict(m))
        else:
            raise TypeError(
                f"trajectory item {i} is neither a message with a 'role' nor a Step: {m!r:.100}"
            )
    return out


def _tool_calls(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(call id, tool name, arguments JSON text) of every tool call, in order."""
    calls = []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        for c in m.get("tool_calls") or ():
            fn = c.get("function") or {}
            args = fn.get("arguments")
            if not isinstance(args, str):
                args = json.dumps(args) if args is not None else ""
            calls.append((str(c.get("id") or ""), str(fn.get("name") or ""), args))
    return calls


def _json_or_none(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None


def touched_entity_ids(trajectory: Any, context: VerifyContext | None = None) -> list[str]:
    """The entities a trajectory's tool calls touched.

    Taken from `context.touched_entity_ids`, else from the trajectory (a `Rollout` records the
    observations' ids), else recomputed from the messages: `*entity_id` arguments of each call
    and `id` values in the JSON of each tool result (what the graph tools return).
    """
    if context is not None and context.touched_entity_ids is not None:
        return list(context.touched_entity_ids)
    recorded = getattr(trajectory, "touched_entity_ids", None)
    if recorded is not None and not callable(recorded):
        return list(recorded)
    messages = trajectory_messages(trajectory)
    found: dict[str, None] = {}
    for _, _, args in _tool_calls(messages):
        for e in entity_ids_in(_json_or_none(args)):
            found.setdefault(e)
    for m in messages:
        if m.get("role") == "tool":
            for e in entity_ids_in(_json_or_none(m.get("content"))):
                found.setdefault(e)
    return list(found)


def _final_answer(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for m in reversed(messages):
        if m.get("role") == "assistant":
            return extract_answer(m.get("content") or "")
    return None


# --------------------------------------------------------------------------- verifiers


class TrajectoryVerifier:
    """Base of verifiers: `name`, `version`, `kind` and `verify`; fields of a subclass are its config."""

    __slots__ = ()
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    kind: ClassVar[str] = "rule"

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def config(self) -> dict[str, Any]:
        """The verifier's settings, as stored in its Verifier record."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.metadata.get("config", True)
        }

    def record(self) -> Verifier:
        """The Verifier node of this verifier."""
        return Verifier.create(
            name=self.name, version=self.version, kind=self.kind, config=self.config()
        )

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        raise NotImplementedError


def _names(values: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


_LIST_SEPARATORS = (";", "\n", "|", ",")


@dataclass(frozen=True, kw_only=True, slots=True)
class AnswerMatch(TrajectoryVerifier):
    """The `<answer>` of the final assistant message matches any valid answer.

    With `allow_lists`, an answer listing several entities (separated by `;`, `,`, `|` or new
    lines) passes when every listed item is a valid answer.
    """

    name: ClassVar[str] = "answer_match"
    allow_lists: bool = True

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        answer = _final_answer(trajectory_messages(trajectory))
        if answer is None:
            return VerifierResult(
                passed=False,
                score=0.0,
                detail="no <answer>...</answer> in the final assistant message",
            )
        if not task.answers:
            return VerifierResult(
                passed=None, score=0.0, detail=f"task {task.id!r} has no answers to compare with"
            )
        for gold in task.answers:
            if answers_match(answer, gold):
                return VerifierResult(
                    passed=True, score=1.0, detail=f"answer {answer!r} matches {gold!r}"
                )
        if self.allow_lists:
            # one separator at a time: names may contain commas ("Salò, or the 120 Days of Sodom")
            for sep in _LIST_SEPARATORS:
                parts = [p for p in answer.split(sep) if p.strip()]
                if len(parts) > 1 and all(
                    any(answers_match(p, g) for g in task.answers) for p in parts
                ):
                    return VerifierResult(
                        passed=True,
                        score=1.0,
                        detail=f"every item of {answer[:200]!r} is a valid answer",
                    )
        return VerifierResult(
            passed=False,
            score=0.0,
            detail=f"answer {answer[:200]!r} matches none of {_names(list(task.answers))}",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class EvidenceCoverage(TrajectoryVerifier):
    """Every entity on the task's path (`task.path["entities"]`) was touched by a tool call."""

    name: ClassVar[str] = "evidence_coverage"

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        required = list(dict.fromkeys(task.path.get("entities") or ()))
        if not required:
            return VerifierResult(
                passed=None, score=0.0, detail=f"task {task.id!r} has no evidence path"
            )
        touched = set(touched_entity_ids(trajectory, context))
        missing = [e for e in required if e not in touched]
        score = (len(required) - len(missing)) / len(required)
        if missing:
            return VerifierResult(
                passed=False,
                score=score,
                detail=f"{len(required) - len(missing)}/{len(required)} path entities touched; missing {_names(missing)}",
            )
        return VerifierResult(
            passed=True, score=1.0, detail=f"all {len(required)} path entities touched"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessCheck(TrajectoryVerifier):
    """At least `min_calls_per_hop` tool calls per hop of the task; score = the fraction reached."""

    name: ClassVar[str] = "process"
    min_calls_per_hop: int = 1

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        needed = task.hops * self.min_calls_per_hop
        n = len(_tool_calls(trajectory_messages(trajectory)))
        if needed <= 0:
            return VerifierResult(
                passed=True, score=1.0, detail=f"{n} tool calls; the task has no hops"
            )
        score = min(1.0, n / needed)
        return VerifierResult(
            passed=n >= needed,
            score=score,
            detail=f"{n} tool calls for {task.hops} hops (at least {needed} needed)",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCallValidity(TrajectoryVerifier):
    """Every tool call names a registered tool and its arguments are valid against the schema.

    Needs `context.registry`; calls the parser could not read (`n_malformed`) count as invalid.
    """

    name: ClassVar[str] = "tool_call_validity"

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        registry = context.registry if context is not None else None
        if registry is None:
            return VerifierResult(
                passed=None, score=0.0, detail="no tool registry given to check the calls against"
            )
        calls = _tool_calls(trajectory_messages(trajectory))
        malformed = (
            context.n_malformed if context is not None and context.n_malformed is not None else None
        )
        if malformed is None:
            malformed = int(getattr(trajectory, "n_malformed", 0) or 0)
        problems = [
            p for _, name, args in calls if (p := registry.validate_call(name, args)) is not None
        ]
        total = len(calls) + malformed
        if total == 0:
            return VerifierResult(passed=True, score=1.0, detail="no tool calls")
        bad = len(problems) + malformed
        detail = f"{total - bad}/{total} tool calls valid"
        if malformed:
            detail += f"; {malformed} could not be parsed"
        if problems:
            detail += f"; first problem: {problems[0]}"
        return VerifierResult(passed=bad == 0, score=(total - bad) / total, detail=detail)


@dataclass(frozen=True, kw_only=True, slots=True)
class NoShortcut(TrajectoryVerifier):
    """The question does not contain any answer (as whole words, after normalisation)."""

    name: ClassVar[str] = "no_shortcut"

    def verify(
        self, task: Task, trajectory: Any = (), context: VerifyContext | None = None
    ) -> VerifierResult:
        leaked = leaked_answer(task.question, task.answers)
        if leaked:
            return VerifierResult(
                passed=False, score=0.0, detail=f"the question contains the answer {leaked!r}"
            )
        return VerifierResult(passed=True, score=1.0, detail="the question contains no answer")


# --------------------------------------------------------------------------- LLM judge

_JUDGE_SYSTEM = (
    "You grade answers to questions about a knowledge graph. Compare the candidate answer with "
    "the reference answers: it is CORRECT if it names one of them (different wording, case or "
    "punctuation is fine) and INCORRECT otherwise. Reply with one short sentence of reasoning "
    "and then a last line that is exactly `VERDICT: CORRECT` or `VERDICT: INCORRECT`."
)
_VERDICT = re.compile(r"VERDICT\s*:\s*\**\s*(CORRECT|INCORRECT)\b", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def build_judge_prompt(task: Task, answer: str | None) -> list[dict[str, Any]]:
    """The judge's conversation (DESIGN section 4 messages) for one answer to `task`.

    >>> build_judge_prompt(Task(id="t", question="Who?", answers=("Ada",)), "ada")[1]["content"].splitlines()[0]
    'Question: Who?'
    """
    references = "; ".join(task.answers) if task.answers else "(none given)"
    candidate = answer if answer is not None else "(no answer given)"
    user = (
        f"Question: {task.question}\nReference answers: {references}\nCandidate answer: {candidate}"
    )
    return [
        {"role": "system", "content": _JUDGE_SYSTEM},
        {"role": "user", "content": user},
    ]


def parse_judge_verdict(text: str | None) -> tuple[bool | None, str]:
    """`(passed, reason)` from a judge reply; passed is None when it gave no verdict line.

    >>> parse_judge_verdict("Same city.\\nVERDICT: CORRECT")
    (True, 'Same city.')
    >>> parse_judge_verdict("I am not sure")[0] is None
    True
    """
    body = _THINK.sub("", text or "")
    verdicts = _VERDICT.findall(body)
    if not verdicts:
        return None, f"the judge gave no verdict: {body.strip()[:200]!r}"
    reason = _VERDICT.split(body)[0].strip() or "no reason given"
    return verdicts[-1].upper() == "CORRECT", " ".join(reason.split())[:500]


def judge_verdict_regex(max_tokens: int) -> str:
    """The reply a constrained judge may give: one line of printable ASCII reasoning, short
    enough to leave room for the verdict in `max_tokens` (a token is at least one character),
    then `VERDICT: CORRECT` or `VERDICT: INCORRECT`; `parse_judge_verdict` reads every such reply.

    >>> judge_verdict_regex(64)
    '[ -~]{0,40}\\\\nVERDICT: (CORRECT|INCORRECT)'
    """
    room = max(0, min(400, max_tokens - 24))
    return f"[ -~]{{0,{room}}}\\nVERDICT: (CORRECT|INCORRECT)"


@dataclass(frozen=True, kw_only=True, slots=True)
class LLMJudge(TrajectoryVerifier):
    """Asks an engine whether the final answer matches a reference answer (greedy by default).

    The engine is any object with `chat(conversations, tools=None, sampling=...)` returning one
    list of completions (with `.text`) per conversation, as `selfplay.engines` do; it is taken
    from `engine` or from `context.engine`.
    """

    name: ClassVar[str] = "llm_judge"
    kind: ClassVar[str] = "llm"
    max_tokens: int = 256
    temperature: float = 0.0
    #: constrain decoding (`SamplingConfig.regex`, vLLM's structured outputs) to one line of
    #: reasoning and the verdict line, so every reply parses (`judge_verdict_regex`); needs an
    #: engine that honours structured outputs (vLLM in process or a vLLM server)
    constrained: bool = False
    engine: Any = field(default=None, compare=False, repr=False, metadata={"config": False})

    def __post_init__(self) -> None:
        if self.constrained and self.max_tokens < 32:
            raise ValueError(
                f"a constrained LLMJudge needs max_tokens >= 32 (room for the verdict line), "
                f"got {self.max_tokens}"
            )

    def verify(
        self, task: Task, trajectory: Any, context: VerifyContext | None = None
    ) -> VerifierResult:
        engine = self.engine if self.engine is not None else (context.engine if context else None)
        if engine is None:
            return VerifierResult(passed=None, score=0.0, detail="no engine given to the LLM judge")
        from selfplay.engines.base import SamplingConfig

        answer = _final_answer(trajectory_messages(trajectory))
        if answer is None:
            return VerifierResult(
                passed=False,
                score=0.0,
                detail="no <answer>...</answer> in the final assistant message",
            )
        sampling = SamplingConfig(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            n=1,
            regex=judge_verdict_regex(self.max_tokens) if self.constrained else None,
        )
        outputs = engine.chat([build_judge_prompt(task, answer)], tools=None, sampling=sampling)
        first = outputs[0]
        completion = first[0] if isinstance(first, Sequence) else first
        passed, reason = parse_judge_verdict(getattr(completion, "text", str(completion)))
        return VerifierResult(passed=passed, score=1.0 if passed else 0.0, detail=reason)


#: verifier name -> class, to rebuild verifiers from their records
VERIFIERS: dict[str, type[TrajectoryVerifier]] = {
    cls.name: cls
    for cls in (AnswerMatch, EvidenceCoverage, ProcessCheck, ToolCallValidity, NoShortcut, LLMJudge)
}


def build_verifier(spec: str | Verifier, **config: Any) -> TrajectoryVerifier:
    """A verifier from its name, its `name@version` id, or its Verifier record.

    >>> build_verifier("process@1", min_calls_per_hop=2).min_calls_per_hop
    2
    """
    if isinstance(spec, Verifier):
        name, version, config = spec.name, spec.version, {**dict(spec.config), **config}
    else:
        name, _, version = spec.partition("@")
    cls = VERIFIERS.get(name)
    if cls is None:
        raise ValueError(f"unknown verifier {name!r}; known: {', '.join(VERIFIERS)}")
    if version and version != cls.version:
        raise ValueError(f"verifier {name!r} has version {cls.version}, not {version!r}")
    try:
        return cls(**config)
    except TypeError as err:
        raise ValueError(f"verifier {name!r}: bad config {config!r}: {err}") from None


# --------------------------------------------------------------------------- suite


def verification_id(subject_id: str, verifier_id: str) -> str:
    """The deterministic id of one verifier's verdict on one trajectory or step.

    >>> verification_id("traj:r:t:0", "answer_match@1")
    'ver:traj:r:t:0:answer_match@1'
    """
    return f"ver:{subject_id}:{verifier_id}"


@dataclass(frozen=True, kw_only=True, slots=True)
class RewardConfig:
    """How a trajectory's reward combines verifier scores.

    `reward = outcome_weight * score(outcome) + process_weight * mean(score(p) for p in process)`;
    with the defaults a correct, fully grounded trajectory gets 1.0, a correct answer without the
    tool work 0.8, and a wrong answer after the right tool work 0.2 (partial credit for process).
    """

    outcome_weight: float = 0.8
    process_weight: float = 0.2
    outcome: str = "answer_match"
    process: tuple[str, ...] = ("evidence_coverage", "process")

    def __post_init__(self) -> None:
        if isinstance(self.process, str):
            raise ValueError("RewardConfig.process must be a list of verifier names, not a string")
        object.__setattr__(self, "process", tuple(self.process))
        for name in ("outcome_weight", "process_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SuiteResult:
    """A suite's verdict on one trajectory: accepted, reward, and each verifier's result by id."""

    accepted: bool
    reward: float
    results: dict[str, VerifierResult]
    required: tuple[str, ...]

    @property
    def failed(self) -> list[str]:
        """Ids of the verifiers that did not pass (False or undecided)."""
        return [vid for vid, r in self.results.items() if r.passed is not True]

    def verifications(
        self, subject_id: str, *, subject_kind: str = "Trajectory"
    ) -> list[Verification]:
        """The Verification records of this result (deterministic ids, for idempotent write-back)."""
        return [
            Verification(
                id=verification_id(subject_id, vid),
                verifier_id=vid,
                subject_id=subject_id,
                subject_kind=subject_kind,  # type: ignore[arg-type]
                passed=r.passed,
                score=float(r.score),
                detail=r.detail,
                props={"required": vid in self.required},
            )
            for vid, r in self.results.items()
        ]


class VerifierSuite:
    """Required and optional verifiers plus the reward rule.

    Without `reward`, the default `RewardConfig` is used over whichever of its process verifiers
    the suite has; a given `reward` must name verifiers of the suite. Acceptance: every required verifier passes (an undecided one, `passed=None`, rejects).
    A verifier that raises is recorded as undecided with the error as its detail.
    """

    def __init__(
        self,
        *,
        required: Sequence[TrajectoryVerifier | str],
        optional: Sequence[TrajectoryVerifier | str] = (),
        reward: RewardConfig | None = None,
    ) -> None:
        self.required = [
            v if isinstance(v, TrajectoryVerifier) else build_verifier(v) for v in required
        ]
        self.optional = [
            v if isinstance(v, TrajectoryVerifier) else build_verifier(v) for v in optional
        ]
        ids = [v.id for v in self.verifiers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a verifier appears twice in the suite: {ids}")
        names = {v.name for v in self.verifiers}
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
        """Required: answer_match, evidence_coverage, no_shortcut. Optional: process,
        tool_call_validity, and the judge when given."""
        optional: list[TrajectoryVerifier] = [ProcessCheck(), ToolCallValidity()]
        if judge is not None:
            optional.append(judge)
        return cls(
            required=[AnswerMatch(), EvidenceCoverage(), NoShortcut()],
            optional=optional,
            reward=reward,
        )

    @property
    def verifiers(self) -> list[TrajectoryVerifier]:
        return [*self.required, *self.optional]

    @property
    def ids(self) -> list[str]:
        return [v.id for v in self.verifiers]

    def records(self) -> list[Verifier]:
        """The Verifier nodes of the suite."""
        return [v.record() for v in self.verifiers]

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
            try:
                r = v.verify(task, trajectory, context)
            except Exception as err:  # one broken check must not lose the trajectory
                r = VerifierResult(
                    passed=None, score=0.0, detail=f"verifier error: {type(err).__name__}: {err}"
                )
            results[v.id] = r
            by_name[v.name] = r
        required = tuple(v.id for v in self.required)
        accepted = all(results[vid].passed is True for vid in required)
        rw = self.reward
        process = [by_name[n].score for n in rw.process]
        reward = rw.outcome_weight * by_name[rw.outcome].score
        if process:
            reward += rw.process_weight * sum(process) / len(process)
        return SuiteResult(
            accepted=accepted, reward=float(reward), results=results, required=required
        )
