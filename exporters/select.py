"""Which trajectories and tasks an export reads: the `Selection` filters, streamed from any store.

| reader                   | yields batches of     | used by       |
|--------------------------|-----------------------|---------------|
| `iter_trajectories`      | `SelectedTrajectory`  | `sft`         |
| `iter_tasks`             | `SelectedTask`        | `rl`, `opd`   |

Both read the graph in id order, `batch_size` records at a time, with a handful of batched queries
per batch (nodes, steps, edges, verifications), so memory depends on the batch size and never on
the size of the graph.

>>> Selection(domain="film", min_turns=2).to_dict()["domain"]
['film']
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kag.schema import TASK_FAMILIES, VERDICTS, Task, Trajectory
from kag.stores.base import GraphStore

__all__ = [
    "invalid_call_count",
    "Selection",
    "SelectedTrajectory",
    "SelectedTask",
    "iter_trajectories",
    "iter_tasks",
    "TASK_STATUSES_EXPORTED",
]

#: tasks a user retired, or self-play rejected (e.g. shortcut questions), are never exported
TASK_STATUSES_EXPORTED = ("active", "proposed")


def invalid_call_count(trajectory: Trajectory) -> int:
    """Malformed or schema-invalid tool calls of a trajectory, as scoring recorded them.

    >>> invalid_call_count(Trajectory(id="t", task_id="q", props={"n_invalid_calls": 2}))
    2
    """
    props = trajectory.props or {}
    value = props.get("n_invalid_calls", props.get("n_malformed", 0))
    return int(value or 0)


_CHUNK = 900  # ids per IN-list query; stays under SQLite's bound-variable limit


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON: the form of every JSON column of a dataset."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _names(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    out = tuple(value)
    for v in out:
        if not isinstance(v, str) or not v:
            raise ValueError(f"selection {what}: expected non-empty strings, got {v!r}")
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Selection:
    """Filters on what an export reads; every given filter must hold, and an empty tuple or
    `None` means "no filter". A single string is accepted wherever a tuple of names is.

    - `run_id`, `policy`, `verdict`: fields of the trajectory (any of the given values).
    - `family`, `domain`, `min_hops`/`max_hops`: fields of the trajectory's task.
    - `min_turns`/`max_turns`: the trajectory's `n_turns`, inclusive.
    - `keep_invalid_calls`: keep trajectories with a malformed or schema-invalid tool call
      (`Trajectory.props["n_invalid_calls"]`, else `n_malformed`); None means the kind's default:
      `sft` leaves them out (a model would learn the broken calls), `rl` and `opd` keep them.
    - `include_eval`: also read trajectories of evaluation Runs (kind `eval`); by default they are
      left out, so a held-out evaluation never leaks its tasks into training data.
    - `verdict` defaults per kind: `sft` exports accepted trajectories only (`("accepted",)`);
      `rl` and `opd` consider every trajectory of a task.
    - `batch_size`: records read per query round trip (memory scales with it, not the graph).
    """

    run_id: tuple[str, ...] = ()
    family: tuple[str, ...] = ()
    domain: tuple[str, ...] = ()
    policy: tuple[str, ...] = ()
    verdict: tuple[str, ...] | None = None
    min_turns: int | None = None
    max_turns: int | None = None
    min_hops: int | None = None
    max_hops: int | None = None
    keep_invalid_calls: bool | None = None
    include_eval: bool = False
    batch_size: int = 1000

    def __post_init__(self) -> None:
        for name in ("run_id", "family", "domain", "policy"):
            object.__setattr__(self, name, _names(getattr(self, name), name))
        bad_family = [f for f in self.family if f not in TASK_FAMILIES]
        if bad_family:
            raise ValueError(
                f"selection family {bad_family[0]!r} is not one of {list(TASK_FAMILIES)}"
            )
        if self.verdict is not None:
            verdict = _names(self.verdict, "verdict")
            bad = [v for v in verdict if v not in VERDICTS]
            if bad:
                raise ValueError(f"selection verdict {bad[0]!r} is not one of {list(VERDICTS)}")
            object.__setattr__(self, "verdict", verdict)
        for lo, hi in (("min_turns", "max_turns"), ("min_hops", "max_hops")):
            for name in (lo, hi):
                value = getattr(self, name)
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 0
                ):
                    raise ValueError(
                        f"selection {name} must be a non-negative integer, got {value!r}"
                    )
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(
                    f"selection {lo}={a} is greater than {hi}={b}: nothing could match"
                )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(
                f"selection batch_size must be a positive integer, got {self.batch_size!r}"
            )

    def with_default_verdict(self, kind: str) -> Selection:
        """This selection with the kind's defaults filled in (sft: accepted trajectories only,
        without invalid tool calls; rl and opd: every trajectory)."""
        out = self
        if out.verdict is None and kind == "sft":
            out = dataclasses.replace(out, verdict=("accepted",))
        if out.keep_invalid_calls is None:
            out = dataclasses.replace(out, keep_invalid_calls=kind != "sft")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready filters, as recorded in the manifest and on the export Run."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "batch_size"
        }
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def trajectory_where(self) -> dict[str, Any]:
        where: dict[str, Any] = {}
        for name in ("run_id", "policy", "verdict"):
            values = getattr(self, name)
            if values:
                where[name] = list(values)
        return where

    def task_where(self) -> dict[str, Any]:
        where: dict[str, Any] = {"status": list(TASK_STATUSES_EXPORTED)}
        if self.family:
            where["family"] = list(self.family)
        if self.domain:
            where["domain"] = list(self.domain)
        if self.min_hops is not None and self.max_hops is not None:
            where["hops"] = list(range(self.min_hops, self.max_hops + 1))
        return where

    def keeps_turns(self, n_turns: int) -> bool:
        return (self.min_turns is None or n_turns >= self.min_turns) and (
            self.max_turns is None or n_turns <= self.max_turns
        )

    def keeps_calls(self, trajectory: Trajectory) -> bool:
        """False for a trajectory with invalid tool calls unless they are kept."""
        return self.keep_invalid_calls is not False or invalid_call_count(trajectory) == 0

    def keeps_task(self, task: Task) -> bool:
        return (
            task.status in TASK_STATUSES_EXPORTED
            and (not self.family or task.family in self.family)
            and (not self.domain or task.domain in self.domain)
            and (self.min_hops is None or task.hops >= self.min_hops)
            and (self.max_hops is None or task.hops <= self.max_hops)
        )


@dataclass(slots=True)
class SelectedTrajectory:
    """A trajectory with everything a dataset row needs, read in one batch with its neighbours."""

    trajectory: Trajectory
    task: Task
    messages: list[dict[str, Any]]
    tools: str  # JSON list of the OpenAI function specs offered to the policy
    tool_ids: list[str]  # tools actually called (USED_TOOL), sorted
    entity_ids: list[str]  # entities touched by its steps (TOUCHED), sorted
    verification_ids: list[str]  # verifications of the trajectory and its steps, sorted


@dataclass(slots=True)
class SelectedTask:
    """A task, the trajectories of it that match the selection, and its prompt.

    The prompt (system + user messages) and offered tools come from `source`, the matching
    trajectory with the smallest id, so every export of the same graph picks the same one.
    """

    task: Task
    source: SelectedTrajectory
    n_trajectories: int
    n_accepted: int
    mean_reward: float
    verifiers: list[dict[str, Any]] = field(default_factory=list)
    evidence_ids: list[str] = field(default_factory=list)  # SUPPORTS entities (E_q)


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _Reader:
    """Batched lookups around trajectories; caches the few small kinds (tools, verifiers)."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self._tool_specs: dict[str, dict[str, Any] | None] = {}
        self._tools_json: dict[tuple[str, ...], str] = {}
        self._verifiers: dict[str, dict[str, Any] | None] = {}
        self._run_kinds: dict[str, str | None] = {}

    def run_kinds(self, run_ids: Iterable[str]) -> dict[str, str | None]:
        """Run id -> its kind (None for a run id with no Run node); cached, one lookup per batch."""
        missing = sorted({r for r in run_ids if r and r not in self._run_kinds})
        if missing:
            found = self.nodes("Run", missing)
            for r in missing:
                self._run_kinds[r] = found[r].kind if r in found else None
        return self._run_kinds

    def drops_eval(
        self, selection: Selection, trajectories: Sequence[Trajectory]
    ) -> list[Trajectory]:
        """The trajectories a selection keeps: those of eval Runs only with `include_eval`."""
        if selection.include_eval:
            return list(trajectories)
        kinds = self.run_kinds(t.run_id for t in trajectories)
        return [t for t in trajectories if kinds.get(t.run_id) != "eval"]

    def nodes(self, kind: str, ids: Iterable[str]) -> dict[str, Any]:
        wanted = sorted(set(ids))
        out: dict[str, Any] = {}
        for chunk in _chunks(wanted):
            out.update((n.id, n) for n in self.store.get_nodes(kind, chunk))
        return out

    def iter_where(self, kind: str, name: str, ids: Sequence[str], **where: Any) -> Iterator[Any]:
        for chunk in _chunks(sorted(set(ids))):
            for batch in self.store.iter_nodes(
                kind, where={name: list(chunk), **where}, batch_size=50_000
            ):
                yield from batch

    def edge_map(
        self, kind: str, *, source: Sequence[str] = (), target: Sequence[str] = ()
    ) -> dict[str, list[str]]:
        """source -> sorted targets (or target -> sorted sources when `target` is given)."""
        out: dict[str, list[str]] = defaultdict(list)
        ids, by_target = (target, True) if target else (source, False)
        for chunk in _chunks(sorted(set(ids))):
            edges = (
                self.store.edges(kind, target=chunk)
                if by_target
                else self.store.edges(kind, source=chunk)
            )
            for e in edges:
                if by_target:
                    out[e.target].append(e.source)
                else:
                    out[e.source].append(e.target)
        return out

    def tool_specs(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = list(dict.fromkeys(ids))
        missing = [i for i in ids if i not in self._tool_specs]
        if missing:
            found = self.nodes("Tool", missing)
            for i in missing:
                self._tool_specs[i] = found[i].spec() if i in found else None
        return [spec for i in ids if (spec := self._tool_specs[i]) is not None]

    def tools_json(self, ids: Sequence[str]) -> str:
        """JSON text of the specs of these tools, cached: most trajectories share one tool set."""
        key = tuple(ids)
        text = self._tools_json.get(key)
        if text is None:
            text = self._tools_json[key] = dumps(self.tool_specs(key))
        return text

    def verifier_records(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = sorted(set(ids))
        missing = [i for i in ids if i not in self._verifiers]
        if missing:
            found = self.nodes("Verifier", missing)
            for i in missing:
                v = found.get(i)
                self._verifiers[i] = (
                    None
                    if v is None
                    else {
                        "id": v.id,
                        "name": v.name,
                        "kind": v.kind,
                        "version": v.version,
                        "config": v.config,
                    }
                )
        return [rec for i in ids if (rec := self._verifiers[i]) is not None]

    def details(
        self,
        trajectories: Sequence[Trajectory],
        tasks: Mapping[str, Task],
        *,
        prompt_only: bool = False,
    ) -> list[SelectedTrajectory]:
        """Steps, tools, touched entities and verifications of a batch of trajectories."""
        contents = self.store.trajectory_contents([t.id for t in trajectories])
        out = []
        for t in trajectories:
            content = contents[t.id]
            messages = _prompt(content.messages) if prompt_only else content.messages
            offered = t.props.get("tools") if isinstance(t.props, Mapping) else None
            offered_ids = (
                [str(i) for i in offered] if isinstance(offered, list) else content.tool_ids
            )
            out.append(
                SelectedTrajectory(
                    trajectory=t,
                    task=tasks[t.task_id],
                    messages=messages,
                    tools=self.tools_json(offered_ids),
                    tool_ids=content.tool_ids,
                    entity_ids=content.entity_ids,
                    verification_ids=content.verification_ids,
                )
            )
        return out


def _prompt(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leading system and user messages: everything before the first assistant turn."""
    out = []
    for m in messages:
        if m["role"] not in ("system", "user"):
            break
        out.append(m)
    return out


def iter_trajectories(
    store: GraphStore,
    selection: Selection,
    *,
    counters: dict[str, int] | None = None,
) -> Iterator[list[SelectedTrajectory]]:
    """Batches of selected trajectories in trajectory id order.

    `counters` (if given) receives `read` (trajectories matching the trajectory filters),
    `filtered` (dropped by turn, invalid-call, eval-run, task or missing-task filters) and, among
    those, `invalid_calls` (malformed or schema-invalid tool calls) and `eval` (trajectories of
    evaluation Runs).
    """
    counters = counters if counters is not None else {}
    counters.setdefault("read", 0)
    counters.setdefault("filtered", 0)
    counters.setdefault("invalid_calls", 0)
    counters.setdefault("eval", 0)
    reader = _Reader(store)
    for batch in store.iter_nodes(
        "Trajectory", where=selection.trajectory_where(), batch_size=selection.batch_size
    ):
        counters["read"] += len(batch)
        kept = [t for t in batch if selection.keeps_turns(t.n_turns)]
        clean = [t for t in kept if selection.keeps_calls(t)]
        counters["invalid_calls"] += len(kept) - len(clean)
        kept = reader.drops_eval(selection, clean)
        counters["eval"] += len(clean) - len(kept)
        tasks = reader.nodes("Task", (t.task_id for t in kept))
        kept = [t for t in kept if t.task_id in tasks and selection.keeps_task(tasks[t.task_id])]
        counters["filtered"] += len(batch) - len(kept)
        if kept:
            yield reader.details(kept, tasks)


def iter_tasks(
    store: GraphStore,
    selection: Selection,
    *,
    counters: dict[str, int] | None = None,
) -> Iterator[list[SelectedTask]]:
    """Batches of selected tasks in task id order; a task is selected when at least one of its
    trajectories passes the trajectory filters (its prompt and tools come from the first one).

    `counters` receives `read` (tasks passing the task filters), `filtered` (of those, tasks
    with no matching trajectory) and `eval` (trajectories of evaluation Runs left out).
    """
    counters = counters if counters is not None else {}
    counters.setdefault("read", 0)
    counters.setdefault("filtered", 0)
    counters.setdefault("eval", 0)
    reader = _Reader(store)
    traj_where = selection.trajectory_where()
    for batch in store.iter_nodes(
        "Task", where=selection.task_where(), batch_size=selection.batch_size
    ):
        tasks = {t.id: t for t in batch if selection.keeps_task(t)}
        counters["read"] += len(tasks)
        matching: dict[str, list[Trajectory]] = defaultdict(list)
        found = [
            traj
            for traj in reader.iter_where("Trajectory", "task_id", list(tasks), **traj_where)
            if selection.keeps_turns(traj.n_turns) and selection.keeps_calls(traj)
        ]
        kept = reader.drops_eval(selection, found)
        counters["eval"] += len(found) - len(kept)
        for traj in kept:
            matching[traj.task_id].append(traj)
        selected = sorted(matching)
        counters["filtered"] += len(tasks) - len(selected)
        if not selected:
            continue
        sources = [min(matching[tid], key=lambda t: t.id) for tid in selected]
        details = reader.details(sources, tasks, prompt_only=True)
        checked_by = reader.edge_map("CHECKED_BY", source=selected)
        evidence = reader.edge_map("SUPPORTS", target=selected)
        out = []
        for tid, source in zip(selected, details, strict=True):
            trajs = matching[tid]
            out.append(
                SelectedTask(
                    task=tasks[tid],
                    source=source,
                    n_trajectories=len(trajs),
                    n_accepted=sum(t.verdict == "accepted" for t in trajs),
                    mean_reward=sum(float(t.reward) for t in trajs) / len(trajs),
                    verifiers=reader.verifier_records(checked_by.get(tid, ())),
                    evidence_ids=sorted(set(evidence.get(tid, ()))),
                )
            )
        yield out
