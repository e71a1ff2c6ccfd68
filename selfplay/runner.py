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
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kag.coverage import Coverage, coverage_counts
from kag.schema import Run, Task, Trajectory
from kag.stores.base import GraphBatch, GraphStore
from selfplay.config import UNSTORED_WORK, SelfPlayConfig, next_hops
from selfplay.families import FamilyProposer, family_tools, grow_graph, split_request, task_setup
from selfplay.generation import (
    RolloutSource,
    build_policy,
    build_scorer,
    build_suite,
    build_tools,
)
from selfplay.proposer import Proposal, Proposer
from selfplay.rollout import trajectory_id
from selfplay.scoring import Scorer
from selfplay.solver import Policy
from selfplay.writeback import ScoredRollout, write_rollouts, write_tasks

__all__ = ["RunSummary", "run", "run_tasks"]


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
    #: question rewrites of this call (`ProposerConfig.rewrite`): "kept" and each refusal kind
    rewrites: dict[str, int] = field(default_factory=dict)

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
            + (
                f"\n  question rewrites {dict(sorted(self.rewrites.items()))}"
                if self.rewrites
                else ""
            )
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


def run(
    graph: Any,
    *,
    config: SelfPlayConfig,
    engine: Any = None,
    policy: Any = None,
) -> RunSummary:
    """Run (or resume) self-play on `graph` (a URL, a `KnowledgeActionGraph` or a store; None
    opens the default graph, `$KAG_GRAPH` or `sqlite:///kag.db`).

    `engine` (any `selfplay.engines` engine) overrides `config.engine`; `policy` (any `Policy`,
    e.g. an `OraclePolicy` with options) overrides both. The policy's engine (`engine`, else the
    one the policy runs on) also rewrites questions (`config.proposer.rewrite`) and serves an
    LLM judge whose model is "policy" (`config.judge`).
    """
    import kag

    opened = None
    if graph is None or isinstance(graph, str):
        opened = graph = kag.open(graph)
    store: GraphStore = getattr(graph, "store", graph)
    if config.workers > 0 and (engine is not None or policy is not None):
        raise ValueError(
            "with workers > 0 every Ray worker builds its own policy from config.engine "
            "(oracle, vllm or openai); do not pass engine= or policy="
        )
    close_policy: Callable[[], None] = lambda: None  # noqa: E731
    close_scorer: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if policy is None:
            policy, close_policy = build_policy(config, engine)
        policy_engine = engine if engine is not None else getattr(policy, "engine", None)
        if config.proposer.rewrite and policy_engine is None:
            raise ValueError(
                "rewriting questions (ProposerConfig.rewrite, --rewrite-questions) needs a model "
                "engine, and the oracle policy has none: run with --engine vllm or openai"
            )
        if config.judge is not None and config.judge.uses_policy_engine and policy_engine is None:
            raise ValueError(
                "the LLM judge 'policy' runs on the policy's engine, and this policy has none "
                "(the oracle): give the judge a model of its own (JudgeConfig(model=DIR), "
                "`--judge MODEL_DIR`)"
            )
        tools = build_tools(store, config)
        if config.workers > 0:
            scorer = None  # each Ray worker builds its own, with its own judge engine
        else:
            scorer, close_scorer = build_scorer(
                config, tools, policy_engine=policy_engine, store=store
            )
        return _SelfPlay(
            store, config, policy, tools=tools, scorer=scorer, engine=policy_engine
        ).execute()
    finally:
        try:
            close_scorer()
        finally:
            close_policy()
            if opened is not None:
                opened.close()


class _RunState:
    """A run's record and counters: loaded (and checked) when it resumes, rebuilt as it goes."""

    def __init__(self, config: SelfPlayConfig, *, run_id: str, policy_name: str) -> None:
        self.config = config
        self.run_id = run_id
        self.policy_name = policy_name
        self.tally = _Tally()
        self.tasks: list[Task] = []
        self.dropped: Counter = Counter()
        self.rewrites: Counter = Counter()
        self.resumed = False
        self.resumes = 0
        self.started_at = _now()

    def load(self, store: GraphStore) -> None:
        """Take over the stored run of this id, if any; a ValueError if its settings differ."""
        existing = store.get_nodes("Run", [self.run_id])
        if not existing:
            return
        old: Run = existing[0]  # type: ignore[assignment]
        if old.kind != "selfplay":
            raise ValueError(f"run {self.run_id!r} exists and is a {old.kind!r} run")
        mine = self.config.work_fields()
        stored = {k: old.config.get(k, UNSTORED_WORK.get(k)) for k in mine}
        diff = sorted(k for k in mine if stored.get(k) != mine[k])
        if diff:
            raise ValueError(
                f"run {self.run_id!r} exists with different settings for {', '.join(diff)} "
                f"(stored: {', '.join(f'{k}={stored.get(k)!r}' for k in diff)}); resume it "
                "with the same settings or pick a new --run-id"
            )
        self.resumed = True
        self.tasks = run_tasks(store, self.run_id)
        hops_of = {t.id: t.hops for t in self.tasks}
        for batch in store.iter_nodes("Trajectory", where={"run_id": self.run_id}):
            for t in batch:
                self.tally.add_trajectory(t, hops_of.get(t.task_id, 0))  # type: ignore[arg-type]
        self.started_at = old.started_at or self.started_at
        self.resumes = int(old.counters.get("resumes", 0)) + 1

    def by_hops(self) -> dict[int, tuple[int, int]]:
        return {h: (v[0], v[1]) for h, v in self.tally.by_hops.items()}

    def next_hops(self) -> int:
        return next_hops(self.config.curriculum, self.by_hops())

    def record(self, status: str, *, finished: bool = False) -> Run:
        """The Run node as it stands, with the counters of every trajectory so far."""
        counters = {
            **self.tally.counters(len(self.tasks), self.next_hops()),
            "resumes": self.resumes,
        }
        counters["dropped"] = dict(self.dropped)
        if self.rewrites:
            counters["rewrites"] = dict(self.rewrites)
        return Run(
            id=self.run_id,
            kind="selfplay",
            config={**self.config.to_dict(), "run_id": self.run_id, "policy": self.policy_name},
            started_at=self.started_at,
            finished_at=_now() if finished else None,
            status=status,
            counters=counters,
        )


class _Progress:
    """The progress bar on stderr: trajectories written, accept rate, tokens per second."""

    def __init__(self, *, total: int, initial: int, run_id: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            initial=min(initial, total),
            unit="traj",
            desc=f"selfplay {run_id}",
            file=sys.stderr,
            dynamic_ncols=True,
        )
        # the rate's own clock: tqdm's start_t is wall-clock time.time(), not perf_counter()
        self.t0 = time.perf_counter()

    def update(self, n: int, *, tally: _Tally, tokens: int) -> None:
        self.bar.update(n)
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = tally.accepted / max(tally.trajectories, 1)
        self.bar.set_postfix(accept=f"{rate:.0%}", tok_s=f"{tokens / elapsed:.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


class _SelfPlay:
    """One call of `run`: finish what a resumed run lacks, then propose and solve round by round."""

    def __init__(
        self,
        store: GraphStore,
        config: SelfPlayConfig,
        policy: Policy,
        *,
        tools: Any,
        scorer: Scorer | None,
        engine: Any,
    ) -> None:
        self.store = store
        self.config = config
        run_id = config.run_id or _default_run_id(config.seed)
        self.state = _RunState(config, run_id=run_id, policy_name=policy.name)
        self.tools = tools
        # with Ray workers the driver's scorer only persists the Verifier nodes (the judge's
        # settings, not its engine): the workers score
        self.scorer = (
            scorer
            if scorer is not None
            else Scorer(
                tools,
                suite=build_suite(config),
                suites={f: build_suite(config, family=f) for f in config.families if f != "search"},
                store=store,
            )
        )
        # tool_use tasks bring their own tools (a graph-edit one: a scratch copy per trajectory)
        setup = task_setup(store)
        if self.scorer.setup is None:
            self.scorer.setup = setup
        self.engine = engine
        self.source: Any = None
        if config.workers == 0:
            self.source = RolloutSource(
                store,
                policy,
                tools=self.tools,
                run_id=run_id,
                solver=config.solver,
                scorer=self.scorer,
                setup=setup,
            )
        self.progress: _Progress | None = None
        self.written = 0
        self.tokens_this_call = 0
        self.solve_s = 0.0

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def execute(self) -> RunSummary:
        t0 = time.perf_counter()
        self.tools.persist(self.store)
        self.store.write(_batch_of(*family_tools(self.config.families)))
        self.scorer.persist(self.store)
        self.state.load(self.store)
        self.store.write(_batch_of(self.state.record("running")))
        status = "failed"
        try:
            if self.config.progress:
                self.progress = _Progress(
                    total=self.config.tasks * self.config.samples,
                    initial=self.state.tally.trajectories,
                    run_id=self.run_id,
                )
            self._finish_pending()
            self._propose_and_solve()
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if self.progress is not None:
                self.progress.close()
            if self.source is not None and self.config.workers > 0:
                self.source.close()
            try:
                self.store.write(_batch_of(self.state.record(status, finished=True)))
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
            for task in self.state.tasks
            for k in range(self.config.samples)
            if trajectory_id(self.run_id, task.id, k) not in done
        ]
        if pending:
            self._solve(pending)

    def _propose_and_solve(self) -> None:
        cfg, state = self.config, self.state
        proposer: FamilyProposer | None = None
        attempt = 0
        while len(state.tasks) < cfg.tasks:
            if proposer is None:
                verifiers = tuple(self.scorer.verifier_ids)
                pcfg = dataclasses.replace(cfg.proposer, verifiers=verifiers)
                engine = self.engine if pcfg.rewrite else None
                search = Proposer(self.store, config=pcfg, engine=engine)
                proposer = FamilyProposer(self.store, search)
            hops = state.next_hops()
            n = min(cfg.tasks_per_round, cfg.tasks - len(state.tasks))
            coverage: Coverage | None = coverage_counts(self.store) if cfg.coverage else None
            seed = _round_seed(cfg.seed, len(state.tasks), attempt)
            proposal = Proposal()
            for i, (family, n_family) in enumerate(split_request(n, cfg.families).items()):
                if n_family == 0:
                    continue
                part = proposer.propose(
                    family,
                    n_family,
                    hops=hops,
                    seed=seed + i,
                    coverage=coverage,
                    exclude=[t.id for t in proposal.tasks],
                )
                proposal.tasks.extend(part.tasks)
                proposal.dropped.update(part.dropped)
                proposal.rewrites.update(part.rewrites)
                proposal.walks += part.walks
            state.dropped.update(proposal.dropped)
            state.rewrites.update(proposal.rewrites)
            if not proposal.tasks:
                attempt += 1
                if attempt >= 3:
                    print(
                        f"selfplay {self.run_id}: the graph yields no new {hops}-hop tasks "
                        f"({dict(proposal.dropped)}); stopping at {len(state.tasks)} tasks",
                        file=sys.stderr,
                    )
                    return
                continue
            attempt = 0
            write_tasks(self.store, proposal.tasks, run_id=self.run_id)
            state.tasks.extend(proposal.tasks)
            self._solve([(t, k) for t in proposal.tasks for k in range(cfg.samples)])

    def _solve(self, work: Sequence[tuple[Task, int]]) -> None:
        t0 = time.perf_counter()
        if self.source is None:  # Ray workers, started on first use
            from selfplay.distributed import WorkerPool

            self.source = WorkerPool(self.store, self.config, run_id=self.run_id)
        self.source.solve(work, on_scored=self._write)
        self.solve_s += time.perf_counter() - t0

    def _write(self, scored: list[ScoredRollout]) -> None:
        for s in scored:
            self.state.tally.add_scored(s)
            self.tokens_this_call += s.rollout.n_generated
        grow = grow_graph if self.config.grow else None
        write_rollouts(self.store, scored, run=self.state.record("running"), grow=grow)
        self.written += len(scored)
        if self.progress is not None:
            self.progress.update(len(scored), tally=self.state.tally, tokens=self.tokens_this_call)

    def _summary(self, status: str, wall_s: float) -> RunSummary:
        t = self.state.tally
        return RunSummary(
            run_id=self.run_id,
            status=status,
            tasks=len(self.state.tasks),
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
            resumed=self.state.resumed,
            wall_s=wall_s,
            dropped=dict(self.state.dropped),
            rewrites=dict(self.state.rewrites),
        )


def _batch_of(*records: Any) -> GraphBatch:
    return GraphBatch().extend(records)
