"""Self-play runs: propose tasks, solve them, verify, write everything back, resumably.

`run(graph, config=SelfPlayConfig(...))` works in rounds until the run holds `config.tasks` tasks:

1. the curriculum picks the hop count (longer walks once the accept rate at the current one passes
   `CurriculumConfig.promote_at`);
2. the proposer samples that many new tasks, steered to the start entities and relation types least
   covered by accepted tasks (`kag.coverage`), and writes them with PRODUCED_BY -> Run;
3. the solver runs `config.samples` trajectories per task, all in flight together; after every turn
   the finished ones are verified and written, with the Run's counters, in one transaction.

Every id is deterministic (task: walk signature; trajectory: run, task, sample), so a run killed at
any point and started again with the same `run_id` first finishes the trajectories its tasks still
lack, then goes on proposing: no trajectory lost, none duplicated.

>>> summary = run("sqlite:///kag.db", config=SelfPlayConfig(engine="oracle", tasks=8))  # doctest: +SKIP
>>> summary.accepted, summary.trajectories  # doctest: +SKIP
(8, 8)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kag.coverage import Coverage, coverage_counts
from kag.schema import Run, Task, Trajectory
from kag.stores.base import GraphStore
from selfplay.proposer import Proposer, ProposerConfig
from selfplay.rollout import Rollout, trajectory_id
from selfplay.scoring import Scorer
from selfplay.solver import Solver, SolverConfig
from selfplay.writeback import ScoredRollout, write_rollouts, write_tasks

__all__ = [
    "CurriculumConfig",
    "SelfPlayConfig",
    "RunSummary",
    "run",
    "next_hops",
    "run_tasks",
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
    #: tasks proposed per round (the curriculum and coverage update between rounds)
    tasks_per_round: int = 32
    #: steer sampling to the least-covered start entities and relation types
    coverage: bool = True
    #: Ray workers that generate trajectories (0: in this process); the driver writes
    workers: int = 0
    #: offer the sandboxed `python` tool besides the graph tools
    python_tool: bool = False
    #: show a progress bar on stderr
    progress: bool = True
    solver: SolverConfig = field(default_factory=SolverConfig)
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
        if self.engine == "vllm" and not self.model:
            raise ValueError("engine 'vllm' needs model= (a model directory)")
        if self.engine == "openai" and not (self.base_url and self.model):
            raise ValueError("engine 'openai' needs base_url= and model=")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))

    def work_fields(self) -> dict[str, Any]:
        """What decides the run's tasks and trajectories (must match when resuming)."""
        d = self.to_dict()
        return {k: d[k] for k in ("tasks", "samples", "seed", "proposer", "curriculum")}


@dataclass(slots=True)
class RunSummary:
    """What a run did (this call and, for a resumed run, the calls before it)."""

    run_id: str
    status: str
    tasks: int = 0
    trajectories: int = 0
    accepted: int = 0
    rejected: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: tokens the policy generated, in all and in this call
    tokens: int = 0
    tokens_this_call: int = 0
    #: generated tokens per second of this call's solving time
    tokens_per_s: float = 0.0
    tool_calls: int = 0
    malformed_calls: int = 0
    tool_errors: int = 0
    #: hops -> [trajectories, accepted]
    by_hops: dict[int, list[int]] = field(default_factory=dict)
    #: trajectories this call wrote (a resumed run counts only the new ones)
    written_this_call: int = 0
    resumed: bool = False
    wall_s: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.trajectories if self.trajectories else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["accept_rate"] = round(self.accept_rate, 6)
        return d

    def render(self) -> str:
        """A few human lines for the end of `kag selfplay run`."""
        hops = ", ".join(f"{h} hops: {a}/{n}" for h, (n, a) in sorted(self.by_hops.items()))
        return (
            f"run {self.run_id}: {self.status}{' (resumed)' if self.resumed else ''}\n"
            f"  tasks {self.tasks}, trajectories {self.trajectories} "
            f"(accepted {self.accepted}, rejected {self.rejected}, "
            f"accept rate {self.accept_rate:.1%})\n"
            f"  status {dict(sorted(self.statuses.items()))}; accepted by hops: {hops or '-'}\n"
            f"  tool calls {self.tool_calls} (malformed {self.malformed_calls}, errors "
            f"{self.tool_errors}); tokens {self.tokens} "
            f"({self.tokens_per_s:.1f} tokens/s this call); wall {self.wall_s:.1f}s"
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _default_run_id(seed: int) -> str:
    return f"selfplay-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}-s{seed}"


def _round_seed(seed: int, have: int, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}|{have}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def run_tasks(store: GraphStore, run_id: str) -> list[Task]:
    """The tasks a run proposed (PRODUCED_BY -> Run), sorted by id."""
    ids = sorted(
        e.source for e in store.edges("PRODUCED_BY", target=run_id) if e.source_kind == "Task"
    )
    tasks: list[Task] = []
    for a in range(0, len(ids), 5_000):
        tasks.extend(store.get_nodes("Task", ids[a : a + 5_000]))  # type: ignore[arg-type]
    return tasks


class _Tally:
    """Running counters of a run, rebuilt from its trajectories when a run resumes."""

    def __init__(self) -> None:
        self.trajectories = 0
        self.accepted = 0
        self.statuses: Counter = Counter()
        self.tokens = 0
        self.tool_calls = 0
        self.malformed = 0
        self.tool_errors = 0
        self.by_hops: dict[int, list[int]] = {}

    def add(
        self,
        *,
        verdict: str,
        status: str,
        tokens: int,
        hops: int,
        tool_calls: int,
        malformed: int,
        tool_errors: int,
    ) -> None:
        self.trajectories += 1
        self.accepted += verdict == "accepted"
        self.statuses[status] += 1
        self.tokens += tokens
        self.tool_calls += tool_calls
        self.malformed += malformed
        self.tool_errors += tool_errors
        pair = self.by_hops.setdefault(hops, [0, 0])
        pair[0] += 1
        pair[1] += verdict == "accepted"

    def add_trajectory(self, t: Trajectory, hops: int) -> None:
        p = t.props or {}
        self.add(
            verdict=t.verdict,
            status=t.status,
            tokens=t.n_tokens,
            hops=hops,
            tool_calls=int(p.get("n_tool_calls", 0)),
            malformed=int(p.get("n_malformed", 0)),
            tool_errors=int(p.get("n_tool_errors", 0)),
        )

    def add_scored(self, s: ScoredRollout) -> None:
        r = s.rollout
        self.add(
            verdict=s.verdict,
            status=r.status,
            tokens=r.n_generated,
            hops=r.task.hops,
            tool_calls=r.n_tool_calls,
            malformed=r.n_malformed,
            tool_errors=r.n_tool_errors,
        )

    def counters(self, tasks: int, hops: int) -> dict[str, Any]:
        return {
            "tasks": tasks,
            "trajectories": self.trajectories,
            "accepted": self.accepted,
            "rejected": self.trajectories - self.accepted,
            "statuses": dict(self.statuses),
            "tokens": self.tokens,
            "tool_calls": self.tool_calls,
            "malformed_calls": self.malformed,
            "tool_errors": self.tool_errors,
            "by_hops": {str(h): v for h, v in sorted(self.by_hops.items())},
            "current_hops": hops,
        }


def _build_policy(config: SelfPlayConfig, engine: Any) -> tuple[Any, Callable[[], None]]:
    """The policy of a run and a function that releases what it started."""
    from selfplay.oracle import OraclePolicy
    from selfplay.solver import EnginePolicy

    cfg = config.solver
    if engine is not None:
        return EnginePolicy(engine, temperature=cfg.temperature, top_p=cfg.top_p), lambda: None
    if config.engine == "oracle":
        return OraclePolicy(max_calls_per_turn=cfg.max_calls_per_turn), lambda: None
    if config.engine == "vllm":
        from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig

        built: Any = VLLMEngine(
            config.model,  # type: ignore[arg-type]
            config=VLLMEngineConfig(
                max_model_len=max(cfg.max_context_tokens, 256),
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
    policy = EnginePolicy(built, temperature=cfg.temperature, top_p=cfg.top_p)
    return policy, built.close


def run(
    graph: Any,
    *,
    config: SelfPlayConfig,
    engine: Any = None,
    policy: Any = None,
) -> RunSummary:
    """Run (or resume) self-play on `graph` (a URL, a `KnowledgeActionGraph` or a store).

    `engine` (any `selfplay.engines` engine) overrides `config.engine`; `policy` (any `Policy`,
    e.g. an `OraclePolicy` with options) overrides both.
    """
    import kag

    opened = None
    if isinstance(graph, str):
        opened = graph = kag.open(graph)
    store: GraphStore = getattr(graph, "store", graph)
    if config.workers > 0 and (engine is not None or policy is not None):
        raise ValueError(
            "with workers > 0 every Ray worker builds its own policy from config.engine "
            "(oracle, vllm or openai); do not pass engine= or policy="
        )
    close_policy: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if policy is None:
            policy, close_policy = _build_policy(config, engine)
        return _Run(store, config, policy).execute()
    finally:
        close_policy()
        if opened is not None:
            opened.close()


class _Run:
    def __init__(self, store: GraphStore, config: SelfPlayConfig, policy: Any) -> None:
        from selfplay.tools import ToolRegistry

        self.store = store
        self.config = config
        self.policy = policy
        self.run_id = config.run_id or _default_run_id(config.seed)
        sandbox: Any = None
        if config.python_tool:
            from selfplay.sandbox import SandboxConfig

            sandbox = SandboxConfig()
        self.tools = ToolRegistry.default(store, sandbox=sandbox)
        self.scorer = Scorer(self.tools)
        self.tally = _Tally()
        self.tasks: list[Task] = []
        self.dropped: Counter = Counter()
        self.written = 0
        self.tokens_this_call = 0
        self.solve_s = 0.0
        self.resumed = False
        self.bar: Any = None
        self.pool: Any = None

    # ------------------------------------------------------------------ state

    def _load(self) -> Run:
        cfg = self.config
        existing = self.store.get_nodes("Run", [self.run_id])
        now = _now()
        if existing:
            old: Run = existing[0]  # type: ignore[assignment]
            if old.kind != "selfplay":
                raise ValueError(f"run {self.run_id!r} exists and is a {old.kind!r} run")
            stored = {
                k: old.config.get(k) for k in ("tasks", "samples", "seed", "proposer", "curriculum")
            }
            mine = cfg.work_fields()
            diff = sorted(k for k in mine if stored.get(k) != mine[k])
            if diff:
                raise ValueError(
                    f"run {self.run_id!r} exists with different settings for {', '.join(diff)} "
                    f"(stored: {', '.join(f'{k}={stored.get(k)!r}' for k in diff)}); resume it "
                    "with the same settings or pick a new --run-id"
                )
            self.resumed = True
            self.tasks = run_tasks(self.store, self.run_id)
            hops_of = {t.id: t.hops for t in self.tasks}
            for batch in self.store.iter_nodes("Trajectory", where={"run_id": self.run_id}):
                for t in batch:
                    self.tally.add_trajectory(t, hops_of.get(t.task_id, 0))  # type: ignore[arg-type]
            started = old.started_at or now
            resumes = int(old.counters.get("resumes", 0)) + 1
        else:
            started, resumes = now, 0
        self.resumes = resumes
        self.started_at = started
        return self._run_record("running")

    def _run_record(self, status: str, *, finished: bool = False) -> Run:
        hops = next_hops(self.config.curriculum, self._by_hops())
        counters = {**self.tally.counters(len(self.tasks), hops), "resumes": self.resumes}
        counters["dropped"] = dict(self.dropped)
        return Run(
            id=self.run_id,
            kind="selfplay",
            config={**self.config.to_dict(), "run_id": self.run_id, "policy": self.policy.name},
            started_at=self.started_at,
            finished_at=_now() if finished else None,
            status=status,
            counters=counters,
        )

    def _by_hops(self) -> dict[int, tuple[int, int]]:
        return {h: (v[0], v[1]) for h, v in self.tally.by_hops.items()}

    # ------------------------------------------------------------------ the run

    def execute(self) -> RunSummary:
        t0 = time.perf_counter()
        self.tools.persist(self.store)
        self.scorer.persist(self.store)
        self.store.write(_batch_of(self._load()))
        total = self.config.tasks * self.config.samples
        status = "failed"
        try:
            if self.config.progress:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total,
                    initial=min(self.tally.trajectories, total),
                    unit="traj",
                    desc=f"selfplay {self.run_id}",
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
            self._finish_pending()
            self._propose_and_solve()
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.pool is not None:
                self.pool.close()
            try:
                self.store.write(_batch_of(self._run_record(status, finished=True)))
            except Exception:  # the original error matters more than a failed status write
                if status == "completed":
                    raise
        return self._summary(status, time.perf_counter() - t0)

    def _finish_pending(self) -> None:
        done: set[str] = set()
        for batch in self.store.iter_nodes("Trajectory", where={"run_id": self.run_id}):
            done.update(t.id for t in batch)
        pending = [
            (task, k)
            for task in self.tasks
            for k in range(self.config.samples)
            if trajectory_id(self.run_id, task.id, k) not in done
        ]
        if pending:
            self._solve(pending)

    def _propose_and_solve(self) -> None:
        cfg = self.config
        proposer: Proposer | None = None
        attempt = 0
        while len(self.tasks) < cfg.tasks:
            if proposer is None:
                verifiers = tuple(self.scorer.verifier_ids)
                pcfg = dataclasses.replace(cfg.proposer, verifiers=verifiers)
                proposer = Proposer(self.store, config=pcfg)
            hops = next_hops(cfg.curriculum, self._by_hops())
            n = min(cfg.tasks_per_round, cfg.tasks - len(self.tasks))
            coverage: Coverage | None = coverage_counts(self.store) if cfg.coverage else None
            proposal = proposer.propose(
                n,
                hops=hops,
                seed=_round_seed(cfg.seed, len(self.tasks), attempt),
                coverage=coverage,
            )
            self.dropped.update(proposal.dropped)
            if not proposal.tasks:
                attempt += 1
                if attempt >= 3:
                    print(
                        f"selfplay {self.run_id}: the graph yields no new {hops}-hop tasks "
                        f"({dict(proposal.dropped)}); stopping at {len(self.tasks)} tasks",
                        file=sys.stderr,
                    )
                    return
                continue
            attempt = 0
            write_tasks(self.store, proposal.tasks, run_id=self.run_id)
            self.tasks.extend(proposal.tasks)
            self._solve([(t, k) for t in proposal.tasks for k in range(cfg.samples)])

    # ------------------------------------------------------------------ solving

    def _solve(self, work: Sequence[tuple[Task, int]]) -> None:
        t0 = time.perf_counter()
        if self.config.workers > 0:
            if self.pool is None:
                from selfplay.distributed import WorkerPool

                self.pool = WorkerPool(self.store, self.config, run_id=self.run_id)
            self.pool.solve(work, on_scored=self._write)
        else:
            solver = Solver(self.policy, self.tools, config=self.config.solver)
            rollouts = [solver.start(t, run_id=self.run_id, sample=k) for t, k in work]
            solver.run(rollouts, on_finished=self._score_and_write)
        self.solve_s += time.perf_counter() - t0

    def _score_and_write(self, rollouts: list[Rollout]) -> None:
        self._write(self.scorer.score(rollouts))

    def _write(self, scored: list[ScoredRollout]) -> None:
        for s in scored:
            self.tally.add_scored(s)
            self.tokens_this_call += s.rollout.n_generated
        write_rollouts(self.store, scored, run=self._run_record("running"))
        self.written += len(scored)
        if self.bar is not None:
            self.bar.update(len(scored))
            elapsed = max(time.perf_counter() - self.bar.start_t, 1e-9)
            rate = self.tally.accepted / max(self.tally.trajectories, 1)
            self.bar.set_postfix(
                accept=f"{rate:.0%}", tok_s=f"{self.tokens_this_call / elapsed:.0f}", refresh=False
            )

    def _summary(self, status: str, wall_s: float) -> RunSummary:
        t = self.tally
        return RunSummary(
            run_id=self.run_id,
            status=status,
            tasks=len(self.tasks),
            trajectories=t.trajectories,
            accepted=t.accepted,
            rejected=t.trajectories - t.accepted,
            statuses=dict(t.statuses),
            tokens=t.tokens,
            tokens_this_call=self.tokens_this_call,
            tokens_per_s=self.tokens_this_call / self.solve_s if self.solve_s > 0 else 0.0,
            tool_calls=t.tool_calls,
            malformed_calls=t.malformed,
            tool_errors=t.tool_errors,
            by_hops={h: list(v) for h, v in sorted(t.by_hops.items())},
            written_this_call=self.written,
            resumed=self.resumed,
            wall_s=wall_s,
            dropped=dict(self.dropped),
        )


def _batch_of(*records: Any) -> Any:
    from kag.stores.base import GraphBatch

    return GraphBatch().extend(records)
