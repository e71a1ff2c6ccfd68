"""Held-out evaluation of a policy: accept rate, pass@k, reward, turns and tokens per family, hops
and domain, written into the graph as a Run of kind `eval` with its trajectories.

`evaluate(graph, config=EvalConfig(model=DIR))` selects tasks, solves each with the self-play
solver, tools and verifiers (one greedy trajectory per task, plus `samples` sampled ones when
`samples > 1`), writes every trajectory with PRODUCED_BY -> the eval Run, and reads the report
back from the graph, so the numbers are what provenance queries see.

| name                 | what it is                                                               |
|----------------------|--------------------------------------------------------------------------|
| `EvalConfig`         | model and engine, task selection, samples (pass@k), budgets, seed        |
| `TaskSelection`      | a parsed `--tasks` value (fresh, `dataset:DIR[:SPLIT]`, `run:ID`, filter, |
|                      | task file)                                                               |
| `select_tasks`       | the tasks a selection names (reads only; fresh tasks are not written)    |
| `evaluate`           | run or resume an evaluation; returns an `EvalReport`                     |
| `eval_report`        | the report of a stored eval Run, read from the graph                     |
| `EvalReport`         | the numbers overall (`SliceMetrics`) and per family, hops and domain     |
| `pass_at_k`          | the unbiased pass@k estimator 1 - C(n-c, k) / C(n, k)                    |
| `tasks_in_datasets`  | which of some task ids an exported Dataset contains (CONTAINS)           |

To compare models on the same tasks, evaluate the first on fresh tasks and every later one with
`tasks=f"run:{first.run_id}"` (an eval Run's tasks are those its trajectories solve).

>>> report = evaluate("sqlite:///kag.db", config=EvalConfig(engine="oracle", limit=8))  # doctest: +SKIP
>>> report.accept_rate, report.by_family["search"].tasks  # doctest: +SKIP
(1.0, 8)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kag.schema import TASK_FAMILIES, Run, Task, Trajectory
from kag.stores import redact_url
from kag.stores.base import GraphBatch, GraphStore
from selfplay.config import EngineKind, JudgeConfig, SelfPlayConfig
from selfplay.families import PROPOSED_FAMILIES, family_suite, task_setup
from selfplay.generation import (
    RolloutSource,
    build_policy,
    build_scorer,
    build_suite,
    build_tools,
)
from selfplay.proposer import ProposerConfig
from selfplay.rollout import trajectory_id
from selfplay.solver import Policy, SolverConfig, TurnBudget
from selfplay.writeback import ScoredRollout, task_batch, write_rollouts

__all__ = [
    "DEFAULT_FRESH_TASKS",
    "EvalConfig",
    "EvalReport",
    "SliceMetrics",
    "TaskSelection",
    "eval_report",
    "eval_run_id",
    "evaluate",
    "pass_at_k",
    "select_tasks",
    "tasks_from_file",
    "tasks_in_datasets",
]

#: tasks proposed when the selection is fresh and no `limit` is given
DEFAULT_FRESH_TASKS = 32
RUN_KIND = "eval"
_CHUNK = 5_000
_FILTER_KEYS = ("family", "hops", "domain")


# ---------------------------------------------------------------------- selections


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSelection:
    """Which tasks an evaluation runs on, parsed from the `--tasks` text by `parse`.

    | text                          | kind      | tasks                                             |
    |-------------------------------|-----------|---------------------------------------------------|
    | `None`, `""`, `fresh`         | `fresh`   | new tasks proposed from the graph's walks: in no  |
    |                               |           | exported dataset, never seen in training          |
    | `dataset:DIR[:SPLIT]`         | `dataset` | the `task_id`s of an exported dataset's Parquet   |
    |                               |           | files (one split, or all), any kind               |
    | `run:RUN_ID`                  | `run`     | tasks PRODUCED_BY the run (self-play, import) and |
    |                               |           | tasks its trajectories solve (an eval run)        |
    | `family=F,hops=H,domain=D`    | `filter`  | the graph's tasks with those fields (any subset)  |
    | `file:PATH` or a path         | `file`    | a task file, imported first (`tasks_from_file`)   |

    >>> TaskSelection.parse("family=search,hops=2")
    TaskSelection(kind='filter', path=None, split=None, run_id=None, family='search', hops=2, domain=None)
    >>> TaskSelection.parse("run:selfplay-1").describe()
    'run:selfplay-1'
    """

    kind: Literal["fresh", "dataset", "run", "filter", "file"]
    path: str | None = None
    split: str | None = None
    run_id: str | None = None
    family: str | None = None
    hops: int | None = None
    domain: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> TaskSelection:
        """The selection a `--tasks` text names; a ValueError saying what is wrong otherwise."""
        text = (text or "").strip()
        if text in ("", "fresh"):
            return cls(kind="fresh")
        if text.startswith("dataset:"):
            rest = text[len("dataset:") :]
            if not rest:
                raise ValueError("--tasks dataset: needs a directory: dataset:DIR[:SPLIT]")
            path, split = rest, None
            head, sep, tail = rest.rpartition(":")
            # DIR:SPLIT unless the whole text is a directory (a path may hold a colon)
            if sep and head and tail and "/" not in tail and not Path(rest).is_dir():
                path, split = head, tail
            return cls(kind="dataset", path=str(Path(path).expanduser().absolute()), split=split)
        if text.startswith("run:"):
            run_id = text[len("run:") :].strip()
            if not run_id:
                raise ValueError("--tasks run: needs a run id: run:RUN_ID")
            return cls(kind="run", run_id=run_id)
        if text.startswith("file:"):
            return cls(kind="file", path=str(Path(text[len("file:") :]).expanduser().absolute()))
        parts = [p.strip() for p in text.split(",")]
        if all("=" in p for p in parts) and not Path(text).exists():
            return cls._filter(text, parts)
        return cls(kind="file", path=str(Path(text).expanduser().absolute()))

    @classmethod
    def _filter(cls, text: str, parts: list[str]) -> TaskSelection:
        found: dict[str, Any] = {}
        for part in parts:
            key, _, value = (s.strip() for s in part.partition("="))
            if key not in _FILTER_KEYS:
                raise ValueError(
                    f"--tasks {text!r}: unknown filter key {key!r}; use {', '.join(_FILTER_KEYS)}"
                )
            if key in found:
                raise ValueError(f"--tasks {text!r}: {key} is given twice")
            if not value:
                raise ValueError(f"--tasks {text!r}: {key} has no value")
            found[key] = value
        if "family" in found and found["family"] not in TASK_FAMILIES:
            raise ValueError(
                f"--tasks {text!r}: family {found['family']!r} is not one of "
                f"{', '.join(TASK_FAMILIES)}"
            )
        if "hops" in found:
            try:
                found["hops"] = int(found["hops"])
            except ValueError:
                raise ValueError(f"--tasks {text!r}: hops must be an integer") from None
            if found["hops"] < 1:
                raise ValueError(f"--tasks {text!r}: hops must be >= 1")
        return cls(kind="filter", **found)

    def describe(self) -> str:
        """The canonical text of the selection (dataset and file paths made absolute).

        >>> TaskSelection.parse("domain=film,family=search").describe()
        'family=search,domain=film'
        """
        if self.kind == "fresh":
            return "fresh"
        if self.kind == "dataset":
            return f"dataset:{self.path}" + (f":{self.split}" if self.split else "")
        if self.kind == "run":
            return f"run:{self.run_id}"
        if self.kind == "file":
            return f"file:{self.path}"
        given = ((k, getattr(self, k)) for k in _FILTER_KEYS)
        return ",".join(f"{k}={v}" for k, v in given if v is not None)


def select_tasks(
    store: GraphStore,
    selection: TaskSelection | str | None,
    *,
    limit: int | None = None,
    hops: Sequence[int] = (2,),
    seed: int = 0,
    verifiers: Sequence[str] = (),
    proposer: ProposerConfig | None = None,
) -> list[Task]:
    """The tasks of a selection, sorted by id, at most `limit` (fresh: `limit` or 32 proposed).

    Reads only: fresh tasks are proposed (by `proposer`, default the self-play proposer's
    settings; split evenly over `hops`, with `verifiers` attached) but not written. Raises a ValueError naming the dataset, run or filter that gives no task.

    >>> [t.id for t in select_tasks(store, "run:selfplay-1", limit=2)]  # doctest: +SKIP
    ['task:0a3f...', 'task:1c9e...']
    """
    if not isinstance(selection, TaskSelection):
        selection = TaskSelection.parse(selection)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if selection.kind == "fresh":
        return _fresh_tasks(
            store,
            limit or DEFAULT_FRESH_TASKS,
            hops=hops,
            seed=seed,
            config=dataclasses.replace(proposer or ProposerConfig(), verifiers=tuple(verifiers)),
        )
    if selection.kind == "dataset":
        assert selection.path is not None
        ids = _dataset_task_ids(Path(selection.path), selection.split)
        where = f"dataset {selection.path}" + (
            f" split {selection.split}" if selection.split else ""
        )
        tasks = _tasks_in_graph(store, ids, where=where)
    elif selection.kind == "run":
        assert selection.run_id is not None
        tasks = _run_tasks(store, selection.run_id)
    elif selection.kind == "filter":
        where_fields = {k: getattr(selection, k) for k in _FILTER_KEYS}
        where_fields = {k: v for k, v in where_fields.items() if v is not None}
        tasks = [t for batch in store.iter_nodes("Task", where=where_fields) for t in batch]  # type: ignore[misc]
        if not tasks:
            raise ValueError(f"no task in {redact_url(store.url)} has {selection.describe()}")
    else:
        assert selection.path is not None
        tasks = tasks_from_file(store, Path(selection.path))
    tasks = sorted(tasks, key=lambda t: t.id)
    return tasks[:limit] if limit is not None else tasks


def tasks_from_file(store: GraphStore, path: Path) -> list[Task]:
    """The tasks of a user task file (MetaQA, JSONL, CSV, Parquet), imported into the graph first
    by `selfplay.taskimport.import_tasks` (Tasks PRODUCED_BY a Run of kind "import").

    Importing is idempotent (the same file again writes nothing), so evaluating a file twice
    evaluates the same tasks. A bad row raises the importer's error naming file, line and field.
    """
    from selfplay.taskimport import import_tasks

    if not path.is_file():
        raise FileNotFoundError(
            f"--tasks {path}: no such task file (selections: fresh, dataset:DIR[:SPLIT], "
            "run:RUN_ID, family=F,hops=H,domain=D, or a task file)"
        )
    report = import_tasks(store, [path])
    if not report.task_ids:
        raise ValueError(
            f"--tasks {path}: no task of the file could be imported ({report.lines} lines: "
            f"{report.unresolved} unresolved, {report.shortcut} shortcuts, "
            f"{report.duplicates} duplicates)"
        )
    return _tasks_in_graph(store, report.task_ids, where=f"task file {path}")


def _tasks_in_graph(store: GraphStore, ids: Sequence[str], *, where: str) -> list[Task]:
    ids = sorted(set(ids))
    if not ids:
        raise ValueError(f"{where} holds no task ids")
    found: list[Task] = []
    for a in range(0, len(ids), _CHUNK):
        found.extend(store.get_nodes("Task", ids[a : a + _CHUNK]))  # type: ignore[arg-type]
    missing = sorted(set(ids) - {t.id for t in found})
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(ids)} tasks of {where} are not in "
            f"{redact_url(store.url)} (first: {missing[0]!r}); pass the --graph they come from"
        )
    return found


def _dataset_task_ids(root: Path, split: str | None) -> list[str]:
    import pyarrow.parquet as pq

    if not root.is_dir():
        raise ValueError(f"--tasks dataset:{root}: no such dataset directory")
    if not (root / "manifest.json").is_file():
        raise ValueError(
            f"--tasks dataset:{root}: not an exported dataset (no manifest.json); "
            "export one with `kag export sft|rl|opd DIR`"
        )
    files = sorted((root / "data").glob("*.parquet"))
    splits = sorted({f.name.rsplit("-", 1)[0] for f in files})
    if split is not None:
        if split not in splits:
            raise ValueError(
                f"--tasks dataset:{root}:{split}: the dataset has no split {split!r} "
                f"(its splits: {', '.join(splits) or 'none'})"
            )
        files = [f for f in files if f.name.rsplit("-", 1)[0] == split]
    ids: list[str] = []
    for f in files:
        ids.extend(v for v in pq.read_table(f, columns=["task_id"]).column(0).to_pylist() if v)
    return ids


def _run_tasks(store: GraphStore, run_id: str) -> list[Task]:
    found = store.get_nodes("Run", [run_id])
    if not found:
        raise ValueError(f"--tasks run:{run_id}: no run {run_id!r} in {redact_url(store.url)}")
    ids = {e.source for e in store.edges("PRODUCED_BY", target=run_id) if e.source_kind == "Task"}
    for batch in store.iter_nodes("Trajectory", where={"run_id": run_id}):
        ids.update(t.task_id for t in batch)  # type: ignore[attr-defined]
    if not ids:
        raise ValueError(
            f"--tasks run:{run_id}: the {found[0].kind} run {run_id!r} has no tasks"  # type: ignore[attr-defined]
        )
    return _tasks_in_graph(store, sorted(ids), where=f"run {run_id!r}")


def tasks_in_datasets(store: GraphStore, task_ids: Iterable[str]) -> set[str]:
    """The ids among `task_ids` that some exported Dataset contains (CONTAINS -> a trajectory of
    the task), whether or not the Task node is still in the graph.

    >>> tasks_in_datasets(store, ["task:a", "task:b"])  # doctest: +SKIP
    {'task:a'}
    """
    ids = sorted(set(task_ids))
    of_task: dict[str, str] = {}
    for a in range(0, len(ids), _CHUNK):
        for batch in store.iter_nodes("Trajectory", where={"task_id": ids[a : a + _CHUNK]}):
            of_task.update((t.id, t.task_id) for t in batch)  # type: ignore[attr-defined]
    trajectories = sorted(of_task)
    contained: set[str] = set()
    for a in range(0, len(trajectories), _CHUNK):
        for e in store.edges("CONTAINS", target=trajectories[a : a + _CHUNK]):
            if e.source_kind == "Dataset":
                contained.add(of_task[e.target])
    return contained


def _fresh_tasks(
    store: GraphStore, n: int, *, hops: Sequence[int], seed: int, config: ProposerConfig
) -> list[Task]:
    from selfplay.proposer import Proposer

    if not hops or any(h < 1 for h in hops):
        raise ValueError(f"hops of fresh tasks must be >= 1, got {list(hops)}")
    proposer = Proposer(store, config=config)
    hops = sorted(set(hops))
    # n split evenly over the hop counts, the first ones taking the remainder
    want = {h: n // len(hops) + (i < n % len(hops)) for i, h in enumerate(hops)}
    chosen: dict[int, list[Task]] = {h: [] for h in hops}
    seen: set[str] = set()
    for attempt in range(4):
        for h in hops:
            need = want[h] - len(chosen[h])
            if need <= 0:
                continue
            digest = hashlib.sha256(f"eval|{seed}|{h}|{attempt}".encode()).digest()
            proposed = proposer.propose(
                need, hops=h, seed=int.from_bytes(digest[:4], "little"), exclude=seen
            ).tasks
            seen.update(t.id for t in proposed)
            # the proposer skips tasks in the graph; a dataset may hold tasks that no longer are
            held = tasks_in_datasets(store, [t.id for t in proposed])
            chosen[h].extend(t for t in proposed if t.id not in held)
        if all(len(chosen[h]) >= want[h] for h in hops):
            break
    tasks = [t for h in hops for t in chosen[h]]
    if not tasks:
        raise ValueError(
            f"{redact_url(store.url)} yields no fresh {'/'.join(map(str, hops))}-hop tasks (every walk is "
            "already a task or in a dataset); evaluate --tasks run:RUN_ID or a filter instead"
        )
    if len(tasks) < n:
        print(
            f"eval: the graph yields only {len(tasks)} fresh tasks of the {n} asked for",
            file=sys.stderr,
        )
    return sorted(tasks, key=lambda t: t.id)


# ---------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalConfig:
    """One evaluation. Stored on the eval Run; the same config on the same graph gives the same
    run id, so a rerun resumes (or just reports) instead of duplicating.

    >>> EvalConfig(engine="oracle", samples=4).trajectories_per_task
    5
    """

    #: model directory (vllm) or served model name (openai); ignored by the oracle and when
    #: `evaluate(engine=)` is given. Recorded as the Run's `config["model"]` (absolute for a
    #: directory): the model a USED_MODEL edge will name
    model: str | None = None
    #: "vllm" (in-process engine on `model`), "openai" (server at `base_url` serving `model`),
    #: "oracle" (the gold policy: a positive control of the harness, accept rate 1.0)
    engine: EngineKind = "vllm"
    #: OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (engine "openai")
    base_url: str | None = None
    #: weights dtype of the vllm engine; None: the dtype the checkpoint was saved in
    dtype: str | None = None
    #: the task selection (`TaskSelection.parse`); None: fresh tasks proposed from the graph
    tasks: str | None = None
    #: at most this many tasks of the selection (the first by task id); fresh: how many to
    #: propose (None: `DEFAULT_FRESH_TASKS`)
    limit: int | None = None
    #: hop counts of fresh tasks, split evenly
    hops: tuple[int, ...] = (2,)
    #: how fresh tasks are proposed (the self-play default; give a self-play run's own to draw
    #: eval tasks the way its training tasks were drawn); its verifiers become the scorer's
    proposer: ProposerConfig = field(default_factory=ProposerConfig)
    #: sampled trajectories per task for pass@k. 1: greedy only (pass@1 is the greedy accept
    #: rate); k > 1: one greedy trajectory (sample 0) plus k sampled at `temperature` (samples
    #: 1..k), with pass@j estimated from the k (Chen et al. 2021, arXiv 2107.03374)
    samples: int = 1
    #: temperature of the sampled trajectories (the greedy one always decodes at 0)
    temperature: float = 1.0
    #: regular turns per trajectory before the final "answer now" turn
    max_turns: int = 8
    #: new tokens per turn
    max_new_tokens: int = 256
    #: prompt + new tokens a trajectory may reach
    max_context_tokens: int = 4096
    #: per-family protocols (`SolverConfig.budgets`; `kag eval` passes the families' own,
    #: `selfplay.families.FAMILY_PROTOCOLS`, unless --max-turns or --max-new-tokens is given)
    budgets: Mapping[str, TurnBudget] = field(default_factory=dict)
    #: offer the sandboxed `python` tool besides the graph tools
    python_tool: bool = False
    #: the LLM judge (`llm_judge@1`), as in self-play: give the training run's judge so a
    #: trajectory is accepted here exactly when it would be there (None: the rule verifiers)
    judge: JudgeConfig | None = None
    #: seed of fresh-task proposal and of sampling
    seed: int = 0
    #: the eval Run's id; None derives one from the model, selection, settings and seed
    #: (`eval_run_id`). Reuse it to resume an evaluation
    run_id: str | None = None
    #: a progress bar on stderr
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ("oracle", "vllm", "openai"):
            raise ValueError(f"engine must be oracle, vllm or openai, got {self.engine!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be a positive integer, got {self.samples!r}")
        if self.samples > 1 and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(
                f"samples={self.samples} needs temperature > 0 (pass@k over greedy copies "
                f"is meaningless), got {self.temperature!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        object.__setattr__(self, "hops", tuple(self.hops))
        if not self.hops or any(isinstance(h, bool) or int(h) != h or h < 1 for h in self.hops):
            raise ValueError(f"hops must be positive integers, got {list(self.hops)}")
        self.selection()
        self.solver()

    def selection(self) -> TaskSelection:
        """The parsed task selection."""
        return TaskSelection.parse(self.tasks)

    @property
    def trajectories_per_task(self) -> int:
        """1 greedy, plus `samples` sampled ones when `samples > 1`."""
        return 1 if self.samples == 1 else 1 + self.samples

    def solver(self) -> SolverConfig:
        """The solver budgets and sampling (greedy only when `samples == 1`)."""
        return SolverConfig(
            max_turns=self.max_turns,
            max_new_tokens=self.max_new_tokens,
            max_context_tokens=self.max_context_tokens,
            budgets=self.budgets,
            temperature=0.0 if self.samples == 1 else self.temperature,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from `n` samples of which `c` passed: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(5, 4, 2)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _ks(samples: int) -> list[int]:
    """The k of pass@k reported for `samples` samples: powers of two up to it, and itself."""
    ks = {samples}
    k = 1
    while k < samples:
        ks.add(k)
        k *= 2
    return sorted(ks)


def _model_ref(config: EvalConfig, engine: Any, policy: Any) -> tuple[str, str]:
    """(engine label, model) of an evaluation: what the Run records and its id derives from."""
    if policy is not None:
        return "policy", str(getattr(policy, "name", type(policy).__name__))
    if engine is not None:
        kind = {"VLLMEngine": "vllm", "OpenAIEngine": "openai"}.get(type(engine).__name__)
        model = getattr(engine, "model_dir", None) or getattr(engine, "model", None)
        label = kind or type(engine).__name__
        return label, str(Path(model).absolute()) if kind == "vllm" else str(model)
    if config.engine == "oracle":
        return "oracle", "oracle"
    if config.engine == "vllm":
        return "vllm", str(Path(str(config.model)).expanduser().absolute())
    return "openai", str(config.model)


def _fingerprint(engine: str, model: str, base_url: str | None) -> str:
    """Names, sizes and times of a model directory's files (a model rewritten in place gets a new
    run id); a served model is known by its server and name."""
    if engine == "vllm":
        path = Path(model)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
        text = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    if engine == "openai":
        return f"{base_url}|{model}"
    return model


def _work_fields(
    config: EvalConfig, *, engine: str, model: str, base_url: str | None
) -> dict[str, Any]:
    """What decides an evaluation's trajectories (a resumed run must match them)."""
    selection = config.selection()
    fields: dict[str, Any] = {
        "engine": engine,
        "model": model,
        "model_fingerprint": _fingerprint(engine, model, base_url),
        "selection": selection.describe(),
        "limit": config.limit,
        "samples": config.samples,
        "temperature": config.temperature if config.samples > 1 else 0.0,
        "seed": config.seed,
        "max_turns": config.max_turns,
        "max_new_tokens": config.max_new_tokens,
        "max_context_tokens": config.max_context_tokens,
        "python_tool": config.python_tool,
        "judge": dataclasses.asdict(config.judge) if config.judge is not None else None,
    }
    if config.budgets:
        fields["budgets"] = {k: dataclasses.asdict(v) for k, v in sorted(config.budgets.items())}
    if selection.kind == "fresh":
        fields["hops"] = sorted(set(config.hops))
        fields["proposer"] = json.loads(
            json.dumps(dataclasses.asdict(config.proposer) | {"verifiers": []}, default=list)
        )
    return fields


def eval_run_id(work_fields: dict[str, Any], *, tasks_sha256: str | None = None) -> str:
    """The deterministic id of an eval Run: `eval:` + the model's name + a hash of its settings
    (and of its task ids, for selections other than fresh).

    >>> eval_run_id({"model": "/m/tiny", "seed": 0})
    'eval:tiny:8dd2444ce197'
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(work_fields["model"])).name).strip("-")
    text = json.dumps({**work_fields, "tasks_sha256": tasks_sha256}, sort_keys=True)
    return f"eval:{name or 'model'}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _tasks_sha256(tasks: Sequence[Task]) -> str:
    return hashlib.sha256("\n".join(sorted(t.id for t in tasks)).encode()).hexdigest()


# ---------------------------------------------------------------------- report


@dataclass(slots=True)
class SliceMetrics:
    """The numbers of one group of tasks (all of them, or one family, hops count or domain).

    The accept rate, reward, turns, tokens and malformed-call rate are those of the greedy
    trajectories (one per task); `trajectories` and `accepted` count every trajectory, sampled
    ones included; `pass_at_k` maps k to the mean over tasks of `pass_at_k(n, c, k)` over the
    sampled trajectories (with greedy only: {"1": accept rate}).
    """

    tasks: int = 0
    trajectories: int = 0
    accepted: int = 0
    greedy_accepted: int = 0
    accept_rate: float = 0.0
    pass_at_k: dict[str, float] = field(default_factory=dict)
    mean_reward: float = 0.0
    mean_turns: float = 0.0
    mean_tokens: float = 0.0
    tool_calls: int = 0
    malformed_calls: int = 0
    #: malformed calls over attempted calls (well-formed + malformed)
    malformed_rate: float = 0.0
    #: statuses of the greedy trajectories (completed, truncated, aborted)
    statuses: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("accept_rate", "mean_reward", "mean_turns", "mean_tokens", "malformed_rate"):
            d[key] = round(d[key], 6)
        d["pass_at_k"] = {k: round(v, 6) for k, v in self.pass_at_k.items()}
        return d


@dataclass(slots=True)
class _TaskTrajectories:
    task: Task
    greedy: Trajectory | None = None
    sampled: list[Trajectory] = field(default_factory=list)

    @property
    def all(self) -> list[Trajectory]:
        return ([self.greedy] if self.greedy is not None else []) + self.sampled


@dataclass(slots=True)
class EvalReport:
    """What an evaluation measured: `overall` and the same numbers per family, hops and domain.

    `to_dict()` is one flat JSON object: the run's identity, `overall`'s fields at the top level
    (`accept_rate`, `trajectories`, `pass_at_k`, `mean_reward`, ...), and `by_family`, `by_hops`,
    `by_domain`. `tasks_in_datasets` counts evaluated tasks that an exported Dataset contains
    (0 for fresh tasks; a held-out check for the others).
    """

    run_id: str
    status: str
    model: str
    engine: str
    policy: str
    selection: str
    samples: int
    temperature: float
    overall: SliceMetrics
    by_family: dict[str, SliceMetrics] = field(default_factory=dict)
    by_hops: dict[str, SliceMetrics] = field(default_factory=dict)
    by_domain: dict[str, SliceMetrics] = field(default_factory=dict)
    tasks_in_datasets: int = 0
    resumed: bool = False
    #: trajectories this call wrote (a resumed or finished run counts only the new ones)
    written_this_call: int = 0
    wall_s: float = 0.0

    @property
    def accept_rate(self) -> float:
        """The greedy accept rate over all evaluated tasks."""
        return self.overall.accept_rate

    @property
    def trajectories(self) -> int:
        return self.overall.trajectories

    @property
    def pass_at_k(self) -> dict[str, float]:
        return self.overall.pass_at_k

    def counters(self) -> dict[str, Any]:
        """The numbers stored as the eval Run's counters."""
        return {
            **self.overall.to_dict(),
            "by_family": {k: v.to_dict() for k, v in self.by_family.items()},
            "by_hops": {k: v.to_dict() for k, v in self.by_hops.items()},
            "by_domain": {k: v.to_dict() for k, v in self.by_domain.items()},
            "tasks_in_datasets": self.tasks_in_datasets,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "model": self.model,
            "engine": self.engine,
            "policy": self.policy,
            "selection": self.selection,
            "samples": self.samples,
            "temperature": self.temperature,
            **self.counters(),
            "resumed": self.resumed,
            "written_this_call": self.written_this_call,
            "wall_s": round(self.wall_s, 3),
        }

    def render(self) -> str:
        """A small table for the end of `kag eval`."""
        o = self.overall
        ks = sorted(o.pass_at_k, key=int)
        head = f"{'':<8} {'group':<16} {'tasks':>6} {'accept':>7}"
        head += "".join(f" {'pass@' + k:>7}" for k in ks)
        head += f" {'reward':>7} {'turns':>6} {'tokens':>7} {'malformed':>9}"
        lines = [
            f"eval {self.run_id}: {self.status}{' (resumed)' if self.resumed else ''}",
            f"  model {self.model} ({self.engine}), tasks {self.selection}, "
            f"{o.trajectories} trajectories ({o.accepted} accepted)"
            + (
                f", {self.tasks_in_datasets} tasks in exported datasets"
                if self.tasks_in_datasets
                else ""
            ),
            head,
        ]

        def row(by: str, name: str, m: SliceMetrics) -> str:
            text = f"{by:<8} {name[:16]:<16} {m.tasks:>6} {m.accept_rate:>7.1%}"
            text += "".join(
                f" {m.pass_at_k[k]:>7.1%}" if k in m.pass_at_k else f" {'-':>7}" for k in ks
            )
            return text + (
                f" {m.mean_reward:>7.3f} {m.mean_turns:>6.2f} {m.mean_tokens:>7.1f} "
                f"{m.malformed_rate:>9.1%}"
            )

        lines.append(row("all", "", o))
        for by, groups in (
            ("family", self.by_family),
            ("hops", self.by_hops),
            ("domain", self.by_domain),
        ):
            lines.extend(row(by, name or "-", m) for name, m in groups.items())
        return "\n".join(lines)


def _metrics(groups: Sequence[_TaskTrajectories], *, samples: int) -> SliceMetrics:
    """The `SliceMetrics` of some tasks' trajectories (sample 0 greedy, the others sampled)."""
    greedy = [g.greedy for g in groups if g.greedy is not None]
    m = SliceMetrics(tasks=len(groups))
    m.trajectories = sum(len(g.all) for g in groups)
    m.accepted = sum(t.verdict == "accepted" for g in groups for t in g.all)
    m.greedy_accepted = sum(t.verdict == "accepted" for t in greedy)
    if greedy:
        n = len(greedy)
        m.accept_rate = m.greedy_accepted / n
        m.mean_reward = sum(float(t.reward) for t in greedy) / n
        m.mean_turns = sum(t.n_turns for t in greedy) / n
        m.mean_tokens = sum(t.n_tokens for t in greedy) / n
    m.tool_calls = sum(int(t.props.get("n_tool_calls", 0)) for t in greedy)
    m.malformed_calls = sum(int(t.props.get("n_malformed", 0)) for t in greedy)
    attempted = m.tool_calls + m.malformed_calls
    m.malformed_rate = m.malformed_calls / attempted if attempted else 0.0
    m.statuses = dict(sorted(Counter(t.status for t in greedy).items()))
    if samples == 1:
        m.pass_at_k = {"1": m.accept_rate} if greedy else {}
    else:
        sampled = [g.sampled for g in groups if g.sampled]
        for k in _ks(samples):
            values = [
                pass_at_k(len(s), sum(t.verdict == "accepted" for t in s), k)
                for s in sampled
                if len(s) >= k
            ]
            if values:
                m.pass_at_k[str(k)] = sum(values) / len(values)
    return m


def _sample_of(t: Trajectory) -> int:
    sample = (t.props or {}).get("sample")
    if isinstance(sample, int):
        return sample
    return int(t.id.rsplit(":", 1)[-1])


def eval_report(store: GraphStore, run_id: str) -> EvalReport:
    """The report of the stored eval Run `run_id`, computed from its trajectories in the graph.

    >>> eval_report(store, "eval:tiny:8dd2444ce197").accept_rate  # doctest: +SKIP
    0.125
    """
    run = _stored_run(store, run_id)
    if run is None or run.kind != RUN_KIND:
        raise ValueError(f"no eval run {run_id!r} in {redact_url(store.url)}")
    return _report(store, run)


def _report(store: GraphStore, run: Run) -> EvalReport:
    """The report of `run` (as given, not as stored) from its trajectories in the graph."""
    run_id = run.id
    cfg = run.config
    samples = int(cfg.get("samples", 1))
    trajectories: list[Trajectory] = [
        t  # type: ignore[misc]
        for batch in store.iter_nodes("Trajectory", where={"run_id": run_id})
        for t in batch
    ]
    tasks = (
        {
            t.id: t
            for t in _tasks_in_graph(
                store, [t.task_id for t in trajectories], where=f"eval run {run_id!r}"
            )
        }
        if trajectories
        else {}
    )
    groups = {tid: _TaskTrajectories(task=task) for tid, task in sorted(tasks.items())}
    for t in sorted(trajectories, key=lambda t: t.id):
        g = groups[t.task_id]
        if _sample_of(t) == 0:
            g.greedy = t
        else:
            g.sampled.append(t)

    def by(key: Callable[[Task], Any]) -> dict[str, SliceMetrics]:
        split: dict[str, list[_TaskTrajectories]] = {}
        for g in groups.values():
            split.setdefault(str(key(g.task)), []).append(g)
        ordered = sorted(split.items(), key=lambda kv: (key(kv[1][0].task), kv[0]))
        return {k: _metrics(v, samples=samples) for k, v in ordered}

    return EvalReport(
        run_id=run_id,
        status=run.status,
        model=str(cfg.get("model", "")),
        engine=str(cfg.get("engine", "")),
        policy=str(cfg.get("policy", "")),
        selection=str(cfg.get("selection", "")),
        samples=samples,
        temperature=float(cfg.get("temperature", 0.0)),
        overall=_metrics(list(groups.values()), samples=samples),
        by_family=by(lambda t: t.family),
        by_hops=by(lambda t: t.hops),
        by_domain=by(lambda t: t.domain),
        tasks_in_datasets=len(tasks_in_datasets(store, groups)) if groups else 0,
    )


# ---------------------------------------------------------------------- evaluate


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def evaluate(
    graph: Any,
    *,
    config: EvalConfig,
    engine: Any = None,
    policy: Policy | None = None,
) -> EvalReport:
    """Run (or resume) an evaluation on `graph` (a URL, a `KnowledgeActionGraph` or a store;
    None opens the default graph) and return its report, read back from the graph.

    `engine` (any `selfplay.engines` engine, e.g. one already loaded) overrides `config.engine`;
    `policy` (any `Policy`) overrides both. The selection is resolved before anything is written
    or started: a selection that gives no task raises a ValueError and writes nothing. A rerun
    with the same config (same run id) solves only the trajectories the run still lacks.
    """
    import kag

    opened = None
    if graph is None or isinstance(graph, str):
        opened = graph = kag.open(graph)
    store: GraphStore = getattr(graph, "store", graph)
    try:
        return _Evaluation(store, config, engine=engine, policy=policy).execute()
    finally:
        if opened is not None:
            opened.close()


class _Evaluation:
    """One call of `evaluate`: resolve the tasks, then solve what the run lacks and report."""

    def __init__(self, store: GraphStore, config: EvalConfig, *, engine: Any, policy: Any) -> None:
        self.store = store
        self.config = config
        self.engine = engine
        self.policy = policy
        # the policy and judge engines are not named here: this config only builds tools and
        # the verifier suite (the engines are built later, from `config`, or handed over)
        # every proposed family's suite, so each task is scored as its family asks
        self.selfplay = SelfPlayConfig(
            engine="oracle",
            python_tool=config.python_tool,
            judge=config.judge,
            families=PROPOSED_FAMILIES,
        )
        # the python tool only when asked (or for compute tasks, see `execute`): the tools listed
        # in the prompt are part of what a model was trained on
        self.tools = build_tools(store, dataclasses.replace(self.selfplay, families=("search",)))
        self.verifier_ids = build_suite(self.selfplay).ids
        self.engine_label, self.model = _model_ref(config, engine, policy)
        self.base_url = getattr(engine, "base_url", None) or config.base_url

    def execute(self) -> EvalReport:
        t0 = time.perf_counter()
        cfg, store = self.config, self.store
        if self.engine is None and self.policy is None:
            # the model is needed unless the caller hands over an engine or a policy
            if cfg.engine == "vllm":
                from checkpoints import check_model_dir

                if not cfg.model:
                    raise ValueError("engine 'vllm' needs model= (a model directory)")
                check_model_dir(cfg.model)
            if cfg.engine == "openai" and not (cfg.base_url and cfg.model):
                raise ValueError("engine 'openai' needs base_url= and model=")
        work = _work_fields(cfg, engine=self.engine_label, model=self.model, base_url=self.base_url)
        tasks, new_tasks, run_id, existing = self._resolve(work)
        work["tasks"] = len(tasks)
        work["tasks_sha256"] = _tasks_sha256(tasks)
        if existing is not None:
            _check_resumable(existing, work)
        if any(t.family == "compute" for t in tasks) and "python" not in self.tools.names:
            self.tools = build_tools(store, self.selfplay)  # compute tasks are solved with it

        close: Callable[[], None] = lambda: None  # noqa: E731
        policy = self.policy
        if policy is None:
            selfplay_config = SelfPlayConfig(
                # a given engine overrides config.engine (whose model may then be unset)
                engine=cfg.engine if self.engine is None else "oracle",
                model=cfg.model,
                base_url=cfg.base_url,
                dtype=cfg.dtype,
                solver=cfg.solver(),
                families=PROPOSED_FAMILIES,  # the oracle then solves tasks of every family
            )
            policy, close = build_policy(
                selfplay_config, self.engine, greedy_samples=1 if cfg.samples > 1 else 0
            )
        close_scorer: Callable[[], None] = lambda: None  # noqa: E731
        try:
            scorer, close_scorer = build_scorer(
                self.selfplay,
                self.tools,
                policy_engine=getattr(policy, "engine", None),
                store=store,
            )
            run = Run(
                id=run_id,
                kind=RUN_KIND,
                config={**work, "run_id": run_id, "policy": policy.name},
                started_at=existing.started_at if existing is not None else _now(),
                status="running",
                counters=dict(existing.counters) if existing is not None else {},
            )
            written = self._solve(policy, scorer, run, tasks, new_tasks)
        finally:
            close_scorer()
            close()
        report = eval_report(store, run_id)
        report.resumed = existing is not None
        report.written_this_call = written
        report.wall_s = time.perf_counter() - t0
        return report

    def _resolve(self, work: dict[str, Any]) -> tuple[list[Task], list[Task], str, Run | None]:
        """(tasks, those of them to write, run id, the stored run if it exists)."""
        cfg, store = self.config, self.store
        selection = cfg.selection()
        if selection.kind == "fresh":
            run_id = cfg.run_id or eval_run_id(work)
            existing = _stored_run(store, run_id)
            if existing is not None:  # its fresh tasks are in the graph now: take them over
                _check_resumable(existing, work)
                produced = [
                    e.source
                    for e in store.edges("PRODUCED_BY", target=run_id)
                    if e.source_kind == "Task"
                ]
                tasks = _tasks_in_graph(store, produced, where=f"eval run {run_id!r}")
                return sorted(tasks, key=lambda t: t.id), [], run_id, existing
            tasks = select_tasks(
                store,
                selection,
                limit=cfg.limit,
                hops=cfg.hops,
                seed=cfg.seed,
                verifiers=self.verifier_ids,
                proposer=cfg.proposer,
            )
            return tasks, tasks, run_id, None
        tasks = select_tasks(store, selection, limit=cfg.limit)
        run_id = cfg.run_id or eval_run_id(work, tasks_sha256=_tasks_sha256(tasks))
        return tasks, [], run_id, _stored_run(store, run_id)

    def _solve(
        self, policy: Any, scorer: Any, run: Run, tasks: list[Task], new_tasks: list[Task]
    ) -> int:
        store, cfg = self.store, self.config
        # imported tool_use tasks bring their own functions, system prompt and suite
        scorer.suites.setdefault("tool_use", family_suite("tool_use"))
        setup = task_setup(store)
        scorer.setup = setup
        source = RolloutSource(
            store,
            policy,
            tools=self.tools,
            run_id=run.id,
            solver=cfg.solver(),
            scorer=scorer,
            setup=setup,
        )
        source.persist()
        head = task_batch(new_tasks, run_id=run.id) if new_tasks else GraphBatch()
        store.write(head.add(run))
        done: set[str] = set()
        for batch in store.iter_nodes("Trajectory", where={"run_id": run.id}):
            done.update(t.id for t in batch)
        pending = [
            (t, k)
            for t in tasks
            for k in range(cfg.trajectories_per_task)
            if trajectory_id(run.id, t.id, k) not in done
        ]
        bar = _progress(len(pending), run.id) if cfg.progress and pending else None
        written = 0

        def write(chunk: list[ScoredRollout]) -> None:
            nonlocal written
            write_rollouts(store, chunk)
            written += len(chunk)
            if bar is not None:
                bar.update(len(chunk))

        status = "failed"
        try:
            if pending:
                source.solve(pending, on_scored=write)
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if bar is not None:
                bar.close()
            finished = dataclasses.replace(run, status=status, finished_at=_now())
            try:
                counters = _report(store, finished).counters()
                store.write(GraphBatch().add(dataclasses.replace(finished, counters=counters)))
            except Exception:  # the original error matters more than a failed status write
                if status == "completed":
                    raise
        return written


def _stored_run(store: GraphStore, run_id: str) -> Run | None:
    found = store.get_nodes("Run", [run_id])
    return found[0] if found else None  # type: ignore[return-value]


def _check_resumable(old: Run, work: dict[str, Any]) -> None:
    if old.kind != RUN_KIND:
        raise ValueError(f"run {old.id!r} exists and is a {old.kind!r} run, not an eval run")
    diff = sorted(k for k in work if old.config.get(k) != work[k])
    if diff:
        stored = ", ".join(f"{k}={old.config.get(k)!r}" for k in diff)
        raise ValueError(
            f"eval run {old.id!r} exists with different settings for {', '.join(diff)} "
            f"(stored: {stored}); resume it with the same settings or pick a new run id"
        )


def _progress(total: int, run_id: str) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, unit="traj", desc=f"eval {run_id}", file=sys.stderr, dynamic_ncols=True
    )
