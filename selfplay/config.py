"""The settings of a self-play run: the run, its policy engine and its curriculum.

| config             | what it decides                                                     |
|--------------------|---------------------------------------------------------------------|
| `SelfPlayConfig`   | tasks, samples, seed, engine (oracle, vllm, openai), solver, proposer |
| `CurriculumConfig` | the hop count of new tasks as the accept rate grows (`next_hops`)   |
| `JudgeConfig`      | the LLM judge: its engine (the policy's or its own), required or not |

>>> SelfPlayConfig(engine="oracle", tasks=8).work_fields()["tasks"]
8
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from selfplay.families import check_families
from selfplay.proposer import ProposerConfig
from selfplay.solver import SolverConfig

__all__ = [
    "UNSTORED_WORK",
    "CurriculumConfig",
    "EngineKind",
    "JudgeConfig",
    "SelfPlayConfig",
    "next_hops",
]

EngineKind = Literal["oracle", "vllm", "openai"]


@dataclass(frozen=True, kw_only=True, slots=True)
class CurriculumConfig:
    """Move to longer walks as the policy masters shorter ones (scaling the horizon).

    The run starts at `min_hops`; once `min_trajectories` trajectories of the current hop count
    have been verified and at least `promote_at` of them were accepted, new tasks get one more
    hop, up to `max_hops`. With `min_hops == max_hops` the hop count is fixed.
    """

    min_hops: int = 2
    max_hops: int = 2
    promote_at: float = 0.6
    min_trajectories: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min_hops <= self.max_hops:
            raise ValueError(
                f"hops must satisfy 1 <= min_hops <= max_hops, got {self.min_hops}-{self.max_hops}"
            )
        if not 0.0 <= self.promote_at <= 1.0:
            raise ValueError(f"promote_at must be in [0, 1], got {self.promote_at}")
        if self.min_trajectories < 1:
            raise ValueError(f"min_trajectories must be >= 1, got {self.min_trajectories}")


def next_hops(curriculum: CurriculumConfig, by_hops: dict[int, tuple[int, int]]) -> int:
    """The hop count for new tasks, given `{hops: (trajectories, accepted)}` so far.

    >>> c = CurriculumConfig(min_hops=2, max_hops=4, promote_at=0.5, min_trajectories=4)
    >>> next_hops(c, {}), next_hops(c, {2: (4, 3)}), next_hops(c, {2: (4, 3), 3: (4, 1)})
    (2, 3, 3)
    """
    hops = curriculum.min_hops
    while hops < curriculum.max_hops:
        n, accepted = by_hops.get(hops, (0, 0))
        if n < curriculum.min_trajectories or accepted / n < curriculum.promote_at:
            break
        hops += 1
    return hops


@dataclass(frozen=True, kw_only=True, slots=True)
class JudgeConfig:
    """The LLM judge of a run: the `llm_judge@1` verifier (`selfplay.verifiers.LLMJudge`), which
    shows an engine the question, the reference answers and the final answer and reads its
    `VERDICT: CORRECT|INCORRECT` line; a reply without one is recorded as undecided.

    >>> JudgeConfig(model="/models/judge", required=True).required
    True
    """

    #: "policy": the engine the run's policy runs on; else a model directory (an in-process vLLM
    #: engine of its own) or, with `base_url`, the model name an OpenAI-compatible server serves
    model: str = "policy"
    base_url: str | None = None
    #: required: a trajectory is accepted only when the judge says CORRECT (an undecided verdict
    #: rejects); optional (the default): its verdict is recorded and decides nothing
    required: bool = False
    #: constrain the judge's decoding to a reasoning line and the verdict line (vLLM structured
    #: outputs), so every verdict parses; the engine must honour `SamplingConfig.regex`
    constrained: bool = False
    #: new tokens of a verdict
    max_tokens: int = 256
    #: sampling temperature of the judge; 0 (the default) is greedy, the same verdict every time
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError('JudgeConfig.model must be "policy", a model directory or a name')
        if self.base_url is not None and self.model == "policy":
            raise ValueError(
                "JudgeConfig.base_url needs the served model's name as model, not 'policy'"
            )
        if self.temperature < 0:
            raise ValueError(f"JudgeConfig.temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < (32 if self.constrained else 1):
            raise ValueError(
                f"JudgeConfig.max_tokens must be >= {32 if self.constrained else 1}, "
                f"got {self.max_tokens}"
            )

    @property
    def uses_policy_engine(self) -> bool:
        """Whether the judge runs on the policy's engine (`model == "policy"`)."""
        return self.model == "policy"


#: what a run stored before a work field existed did (`SelfPlayConfig.work_fields`): it
#: proposed search tasks and grew the graph, so it resumes as such a run
UNSTORED_WORK: Mapping[str, Any] = MappingProxyType({"families": ["search"], "grow": True})


@dataclass(frozen=True, kw_only=True, slots=True)
class SelfPlayConfig:
    """One self-play run. Stored on the Run node; a resumed run must give the same work fields."""

    #: the run's id; None makes one from the time and seed. Reuse it to resume a run
    run_id: str | None = None
    #: tasks the run proposes (and solves) in all
    tasks: int = 16
    #: trajectories per task
    samples: int = 1
    #: seed of walk sampling and of the policy's sampling
    seed: int = 0
    #: "oracle" (gold policy), "vllm" (in-process engine on `model`), "openai" (server at
    #: `base_url` serving `model`); ignored when `run(..., engine=)` is given
    engine: EngineKind = "oracle"
    #: model directory (vllm) or served model name (openai)
    model: str | None = None
    base_url: str | None = None
    #: weights dtype of the vllm engine; None: the dtype the checkpoint was saved in
    dtype: str | None = None
    #: tasks proposed per round (the curriculum and coverage update between rounds)
    tasks_per_round: int = 32
    #: steer sampling to the least-covered start entities and relation types
    coverage: bool = True
    #: Ray workers that generate trajectories (0: in this process); the driver writes
    workers: int = 0
    #: task families the run proposes, the tasks of each round shared out over them
    #: (`selfplay.families`: search, instruction)
    families: tuple[str, ...] = ("search",)
    #: offer the sandboxed `python` tool besides the graph tools
    python_tool: bool = False
    #: write what accepted trajectories add to the graph (`selfplay.families.grow_graph`: a
    #: compute trajectory's derived fact) with them; False keeps the graph as it is, e.g. for
    #: held-out tasks, whose derived facts would put their answers in later searches' results
    grow: bool = True
    #: show a progress bar on stderr
    progress: bool = True
    #: the LLM judge (None: no judge); recorded on the Run, not a work field (a resumed run may
    #: add or drop it)
    judge: JudgeConfig | None = None
    solver: SolverConfig = field(default_factory=SolverConfig)
    #: how walks become tasks; `proposer.rewrite` asks the policy's engine to rewrite every
    #: templated question (`selfplay.proposer.accept_rewrite` guards each rewrite)
    proposer: ProposerConfig = field(default_factory=ProposerConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)

    def __post_init__(self) -> None:
        if self.tasks < 0 or self.samples < 1 or self.tasks_per_round < 1 or self.workers < 0:
            raise ValueError(
                "need tasks >= 0, samples >= 1, tasks_per_round >= 1 and workers >= 0, got "
                f"{self.tasks}, {self.samples}, {self.tasks_per_round}, {self.workers}"
            )
        if self.engine not in ("oracle", "vllm", "openai"):
            raise ValueError(f"engine must be oracle, vllm or openai, got {self.engine!r}")
        if isinstance(self.families, str):
            raise ValueError(
                f"families must be a list of family names, not the string {self.families!r}"
            )
        object.__setattr__(self, "families", check_families(self.families))
        if self.engine == "vllm" and not self.model:
            raise ValueError("engine 'vllm' needs model= (a model directory)")
        if self.engine == "openai" and not (self.base_url and self.model):
            raise ValueError("engine 'openai' needs base_url= and model=")

    def to_dict(self) -> dict[str, Any]:
        d = json.loads(json.dumps(dataclasses.asdict(self), default=list))
        # the default leaves no trace, so runs made before `directions` existed resume
        if d["proposer"].get("directions") == "out":
            del d["proposer"]["directions"]
        if d["proposer"].get("shapes") == ["chain"]:  # likewise for runs before task shapes
            del d["proposer"]["shapes"]
            del d["proposer"]["max_fanout"]
        return d

    def work_fields(self) -> dict[str, Any]:
        """What decides the run's tasks and trajectories (must match when resuming)."""
        d = self.to_dict()
        keys = ("tasks", "samples", "seed", "proposer", "curriculum", "families", "grow")
        return {k: d[k] for k in keys}
