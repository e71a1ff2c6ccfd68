"""Scored rollouts on demand: solve tasks with a policy and tools, verify them, write them back.

This is the part of self-play that another driver reuses: the self-play runner calls `solve` round
after round, and a GRPO trainer can call `generate` with its own policy and a Run of its own kind.

| name                 | what it gives                                                             |
|----------------------|---------------------------------------------------------------------------|
| `RolloutSource`      | `solve(work, on_scored=)` streams scored rollouts; `generate(tasks, run=)` |
|                      | also writes them under a Run and returns them                              |
| `build_policy`       | the policy a `SelfPlayConfig` names (oracle, vllm, openai) and its closer  |
| `build_tools`        | the tool registry a `SelfPlayConfig` offers (graph tools, python if asked) |
| `build_scorer`       | the scorer a `SelfPlayConfig` asks for, with its LLM judge's engine        |
| `build_suite`        | its verifier suite: the default one, plus the LLM judge if asked           |

>>> source = RolloutSource(store, policy, tools=default_registry(store), run_id="grpo-1")  # doctest: +SKIP
>>> scored = source.generate(tasks, run=Run(id="grpo-1", kind="grpo"), samples=8)  # doctest: +SKIP
>>> [s.reward for s in scored]  # doctest: +SKIP
[1.0, 0.0, ...]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kag.schema import Run, Task
from kag.stores.base import GraphStore
from selfplay.config import JudgeConfig, SelfPlayConfig
from selfplay.graph_tools import default_registry
from selfplay.rewards import VerifierSuite
from selfplay.rollout import Rollout, trajectory_id
from selfplay.scoring import Scorer
from selfplay.solver import Policy, Solver, SolverConfig, TaskSetup
from selfplay.tools import ToolRegistry
from selfplay.verifiers import LLMJudge
from selfplay.writeback import ScoredRollout, write_rollouts

__all__ = ["RolloutSource", "build_policy", "build_scorer", "build_suite", "build_tools"]


class RolloutSource:
    """Rollouts of one Run (`run_id` makes their ids): a solver over `policy` and `tools`, scored.

    `scorer` defaults to `Scorer(tools, store=store)` (the default verifier suite); `setup`
    gives tasks that bring their own tools (`selfplay.families.task_setup`) those tools and
    their system prompt. The source writes nothing until `generate` (or `persist`) is called;
    `solve` leaves writing to its caller.
    """

    def __init__(
        self,
        store: GraphStore,
        policy: Policy,
        *,
        tools: ToolRegistry,
        run_id: str,
        solver: SolverConfig | None = None,
        scorer: Scorer | None = None,
        setup: Callable[[Task], TaskSetup | None] | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.tools = tools
        self.solver = Solver(policy, tools, config=solver, setup=setup)
        self.scorer = scorer or Scorer(tools, store=store, setup=setup)

    def persist(self) -> None:
        """Upsert the Tool and Verifier nodes the rollouts' edges point at (idempotent)."""
        self.tools.persist(self.store)
        self.scorer.persist(self.store)

    def solve(
        self,
        work: Sequence[tuple[Task, int]],
        *,
        on_scored: Callable[[list[ScoredRollout]], None],
    ) -> None:
        """Solve `(task, sample)` pairs together; after every turn, `on_scored` gets those that ended."""

        def score(rollouts: list[Rollout]) -> None:
            on_scored(self.scorer.score(rollouts))

        rollouts = [self.solver.start(t, run_id=self.run_id, sample=k) for t, k in work]
        self.solver.run(rollouts, on_finished=score)

    def generate(self, tasks: Sequence[Task], *, run: Run, samples: int = 1) -> list[ScoredRollout]:
        """`samples` scored rollouts of every task, written back under `run`, in task order.

        The tasks must be in the graph already; `run` (its kind names the caller: "selfplay",
        "grpo", "eval") is upserted with every write, with PRODUCED_BY from each trajectory.
        """
        if run.id != self.run_id:
            raise ValueError(f"run {run.id!r} is not this source's run {self.run_id!r}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        return self.generate_samples([(t, k) for t in tasks for k in range(samples)], run=run)

    def generate_samples(
        self, work: Sequence[tuple[Task, int]], *, run: Run
    ) -> list[ScoredRollout]:
        """`generate` for chosen `(task, sample index)` pairs, in their order: a caller that
        retries a rollout gives it a sample index not used before (a new trajectory id and
        seed), e.g. OPD's retries of aborted rollouts."""
        if run.id != self.run_id:
            raise ValueError(f"run {run.id!r} is not this source's run {self.run_id!r}")
        ids = [trajectory_id(self.run_id, t.id, k) for t, k in work]
        if len(set(ids)) != len(ids):
            raise ValueError("each (task, sample) pair may be asked for once per call")
        self.persist()
        scored: dict[str, ScoredRollout] = {}

        def write(chunk: list[ScoredRollout]) -> None:
            write_rollouts(self.store, chunk, run=run)
            scored.update((s.rollout.id, s) for s in chunk)

        self.solve(work, on_scored=write)
        return [scored[i] for i in ids]


def build_policy(
    config: SelfPlayConfig, engine: Any = None, *, greedy_samples: int = 0
) -> tuple[Policy, Callable[[], None]]:
    """The policy of a run and a function that releases what it started.

    `engine` (any `selfplay.engines` engine) overrides `config.engine`; an engine policy decodes
    samples below `greedy_samples` greedily (see `EnginePolicy`).

    >>> policy, close = build_policy(SelfPlayConfig(engine="oracle")); policy.name
    'oracle'
    """
    from selfplay.oracle import OraclePolicy
    from selfplay.solver import EnginePolicy

    cfg = config.solver
    if engine is not None:
        policy = EnginePolicy(
            engine, temperature=cfg.temperature, top_p=cfg.top_p, greedy_samples=greedy_samples
        )
        return policy, lambda: None
    if config.engine == "oracle":
        oracle = OraclePolicy(max_calls_per_turn=cfg.max_calls_per_turn)
        if "compute" in config.families:  # it hands every other task to the search oracle
            from selfplay.families.compute import ComputeOraclePolicy

            return ComputeOraclePolicy(fallback=oracle), lambda: None
        return oracle, lambda: None
    if config.engine == "vllm":
        from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig

        built: Any = VLLMEngine(
            config.model,  # type: ignore[arg-type]
            config=VLLMEngineConfig(
                max_model_len=max(cfg.max_context_tokens, 256),
                dtype=config.dtype,
                # vLLM's CPU sampler crashes on a seeded request whose prefill is split across
                # steps (its CPU generator has no offset to rewind): prefill prompts whole
                engine_kwargs={
                    "enable_chunked_prefill": False,
                    "max_num_batched_tokens": max(cfg.max_context_tokens, 16384),
                },
            ),
        )
    else:
        from selfplay.engines.openai import OpenAIEngine

        built = OpenAIEngine(config.base_url, config.model)  # type: ignore[arg-type]
    policy = EnginePolicy(
        built, temperature=cfg.temperature, top_p=cfg.top_p, greedy_samples=greedy_samples
    )
    return policy, built.close


def build_tools(store: GraphStore, config: SelfPlayConfig) -> ToolRegistry:
    """The tools a run offers: the graph tools, and the sandboxed `python` if `config.python_tool`
    or the run proposes compute tasks (they are solved with it)."""
    from selfplay.sandbox import SandboxConfig

    python = config.python_tool or "compute" in config.families
    return default_registry(store, sandbox=SandboxConfig() if python else None)


def _no_op() -> None:
    return None


def build_scorer(
    config: SelfPlayConfig,
    tools: ToolRegistry,
    *,
    policy_engine: Any = None,
    store: GraphStore | None = None,
) -> tuple[Scorer, Callable[[], None]]:
    """The scorer of a run and a function that releases what it started.

    Without `config.judge` it is `Scorer(tools, store=store)` (the default suite; `store` serves
    the tool-step check's answer paths). With one, `llm_judge@1`
    joins the suite (required or optional, `JudgeConfig.required`) and the scorer's engine is
    `policy_engine` (judge model "policy"), else a judge engine of its own: an OpenAI client
    when `JudgeConfig.base_url` is set, an in-process vLLM engine on the model directory otherwise.

    >>> scorer, close = build_scorer(SelfPlayConfig(engine="oracle"), tools)  # doctest: +SKIP
    >>> scorer.verifier_ids  # doctest: +SKIP
    ['answer_match@2', 'evidence_coverage@2', 'no_shortcut@1', 'tool_call_validity@1', 'process@1', 'tool_step@2']
    """
    suites = {
        f: build_suite(config, family=f) for f in getattr(config, "families", ()) if f != "search"
    }
    if config.judge is None:
        return Scorer(tools, suites=suites, store=store), _no_op
    engine, close = _judge_engine(config.judge, policy_engine)
    scorer = Scorer(tools, suite=build_suite(config), suites=suites, engine=engine, store=store)
    return scorer, close


def build_suite(config: Any, *, family: str = "search") -> VerifierSuite:
    """The verifier suite of a run's `family` tasks (`selfplay.families.family_suite`), with
    `llm_judge@1` when `config.judge` asks for it (among the required verifiers when
    `JudgeConfig.required`).

    >>> suite = build_suite(SelfPlayConfig(judge=JudgeConfig(required=True)))
    >>> [v.id for v in suite.required][-1]
    'llm_judge@1'
    """
    from selfplay.families import family_suite

    judge_config = config.judge
    if judge_config is None:
        return family_suite(family)
    judge = LLMJudge(
        max_tokens=judge_config.max_tokens,
        temperature=judge_config.temperature,
        constrained=judge_config.constrained,
    )
    suite = family_suite(family, judge=judge)
    if not judge_config.required or judge not in suite.optional:
        return suite  # tool_use's suite takes no judge: calls and states are checked, not text
    return VerifierSuite(
        required=[*suite.required, judge],
        optional=[v for v in suite.optional if v is not judge],
        steps=suite.steps,
        reward=suite.reward,
    )


def _judge_engine(judge: JudgeConfig, policy_engine: Any) -> tuple[Any, Callable[[], None]]:
    if judge.uses_policy_engine:
        if policy_engine is None:
            raise ValueError(
                "the LLM judge 'policy' runs on the policy's engine, and this policy has none "
                "(the oracle): give the judge a model of its own (JudgeConfig(model=DIR), "
                "`--judge MODEL_DIR`)"
            )
        return policy_engine, _no_op
    if judge.base_url is not None:
        from selfplay.engines.openai import OpenAIEngine

        engine: Any = OpenAIEngine(judge.base_url, judge.model)
    else:
        from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig

        engine = VLLMEngine(judge.model, config=VLLMEngineConfig(kv_cache_gib=0.5))
    return engine, engine.close
