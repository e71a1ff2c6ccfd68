"""Synthetic self-play output for tests and benchmarks: tasks, trajectories, steps, verifications
and every edge the self-play write-back produces (DESIGN section 3), as `GraphBatch`es.

Trajectories look like the oracle policy's: a system prompt, the question, one `get_relations` call
per hop with its observation, and a final `<answer>`. Everything is a function of the config and
the seed, so two builds give the same graph.

>>> cfg = SyntheticConfig(n_tasks=2, trajectories_per_task=2)
>>> sum(len(b.nodes.get("Trajectory", [])) for b in synthetic_batches(cfg))
4
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

from kag.schema import (
    Edge,
    Entity,
    Relation,
    Run,
    Step,
    Task,
    Tool,
    ToolCall,
    Trajectory,
    Verification,
    Verifier,
)
from kag.stores.base import GraphBatch, GraphStore

__all__ = [
    "SyntheticConfig",
    "synthetic_batches",
    "write_synthetic",
    "SYSTEM_PROMPT",
    "TOOLS",
    "VERIFIERS",
]

SYSTEM_PROMPT = "You answer multi-hop questions with the graph tools. Put the final answer in <answer></answer>."

TOOLS = (
    Tool.create(
        name="get_relations",
        description="List the relations of an entity, optionally of one type.",
        parameters={
            "type": "object",
            "properties": {"entity_id": {"type": "string"}, "relation": {"type": "string"}},
            "required": ["entity_id"],
        },
    ),
    Tool.create(
        name="search_entities",
        description="Find entities by name.",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    ),
)

VERIFIERS = (
    Verifier.create(name="answer_match", kind="rule", config={"normalise": True}),
    Verifier.create(name="process", kind="rule", config={"min_calls_per_hop": 1}),
)

_RELATIONS = {
    "film": ("/film/film/directed_by", "/film/director/born_in", "/location/city/country"),
    "music": ("/music/album/artist", "/music/artist/label", "/organization/founded_in"),
    "geo": ("/location/contains", "/location/adjoins", "/location/capital"),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class SyntheticConfig:
    """Shape of the synthetic self-play output.

    - `n_tasks`, `trajectories_per_task`: size (trajectories = their product).
    - `domains`, `runs`, `policies`, `hops`: assigned round-robin by task (runs, hops) and by
      trajectory (policies).
    - `accept_rate`: share of trajectories with verdict "accepted" (seeded).
    - `signature_pool`: when set, tasks reuse `walk_signature`s from a pool of this size, as when
      several runs propose the same walk.
    - `duplicate_messages`: every trajectory of a task has the same messages (only tool-call ids differ).
    - `batch_tasks`: tasks per `GraphBatch`.
    """

    n_tasks: int = 10
    trajectories_per_task: int = 2
    domains: tuple[str, ...] = ("film", "music", "geo")
    runs: tuple[str, ...] = ("selfplay-a", "selfplay-b")
    policies: tuple[str, ...] = ("oracle", "tiny")
    hops: tuple[int, ...] = (2, 3)
    accept_rate: float = 0.75
    n_entities: int = 500
    signature_pool: int | None = None
    duplicate_messages: bool = False
    seed: int = 0
    batch_tasks: int = 500

    def __post_init__(self) -> None:
        if self.n_tasks < 0 or self.trajectories_per_task < 1 or self.batch_tasks < 1:
            raise ValueError(
                "n_tasks >= 0, trajectories_per_task >= 1 and batch_tasks >= 1 are required"
            )
        unknown = [d for d in self.domains if d not in _RELATIONS]
        if unknown or not self.domains:
            raise ValueError(
                f"domains must be among {sorted(_RELATIONS)}, got {list(self.domains)}"
            )


def _entity(k: int) -> str:
    return f"ent-{k:06d}"


def _header(cfg: SyntheticConfig) -> GraphBatch:
    batch = GraphBatch().add(*TOOLS, *VERIFIERS)
    for run in cfg.runs:
        batch.add(
            Run(
                id=run,
                kind="selfplay",
                config={"seed": cfg.seed},
                started_at="2025-01-01T00:00:00Z",
                status="completed",
            )
        )
    for k in range(cfg.n_entities):
        domain = cfg.domains[k % len(cfg.domains)]
        batch.add(Entity(id=_entity(k), name=f"Entity {k}", type="thing", domain=domain))
    return batch


def _task_records(cfg: SyntheticConfig, i: int, batch: GraphBatch) -> None:
    rng = random.Random(f"{cfg.seed}:{i}")
    domain = cfg.domains[i % len(cfg.domains)]
    hops = cfg.hops[(i // len(cfg.runs)) % len(cfg.hops)]  # not tied to the run
    run = cfg.runs[i % len(cfg.runs)]
    rels = [_RELATIONS[domain][h % 3] for h in range(hops)]
    path = [_entity(rng.randrange(cfg.n_entities)) for _ in range(hops + 1)]
    task_id = f"task-{i:07d}"
    answer = f"Entity {int(path[-1][4:])}"
    signature = f"sig-{i % cfg.signature_pool if cfg.signature_pool else i:07d}"
    task = Task(
        id=task_id,
        domain=domain,
        question=f"Starting from Entity {int(path[0][4:])}, follow {' then '.join(rels)}: where do you end up? (#{i})",
        answers=(answer,),
        answer_ids=(path[-1],),
        hops=hops,
        walk_signature=signature,
        path={"entities": path, "relations": rels},
    )
    batch.add(task)
    batch.add(
        *(
            Relation(source=a, type=r, target=b)
            for a, r, b in zip(path, rels, path[1:], strict=False)
        )
    )
    batch.add(
        *(
            Edge(
                kind="SUPPORTS", source_kind="Entity", source=e, target_kind="Task", target=task_id
            )
            for e in set(path)
        )
    )
    batch.add(
        *(
            Edge(
                kind="CHECKED_BY",
                source_kind="Task",
                source=task_id,
                target_kind="Verifier",
                target=v.id,
            )
            for v in VERIFIERS
        )
    )
    batch.add(
        Edge(kind="PRODUCED_BY", source_kind="Task", source=task_id, target_kind="Run", target=run)
    )
    for j in range(cfg.trajectories_per_task):
        _trajectory_records(cfg, task, run, path, rels, answer, j, rng, batch)


def _trajectory_records(
    cfg: SyntheticConfig,
    task: Task,
    run: str,
    path: list[str],
    rels: list[str],
    answer: str,
    j: int,
    rng: random.Random,
    batch: GraphBatch,
) -> None:
    tid = f"traj-{task.id[5:]}-{j:02d}"
    accepted = rng.random() < cfg.accept_rate
    attempt = "" if cfg.duplicate_messages else f" (attempt {j})"
    messages: list[dict] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": task.question},
    ]
    touched: list[list[str]] = [[], []]
    for h, rel in enumerate(rels):
        call = ToolCall(
            id=f"call-{tid}-{h}",
            name="get_relations",
            arguments=json.dumps({"entity_id": path[h], "relation": rel}),
        )
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": f"Hop {h + 1}: follow {rel}{attempt}.",
                "tool_calls": [call.to_message()],
            }
        )
        touched.append([path[h]])
        messages.append(
            {
                "role": "tool",
                "content": json.dumps([{"relation": rel, "target": path[h + 1]}]),
                "tool_call_id": call.id,
                "name": "get_relations",
            }
        )
        touched.append([path[h + 1]])
    final = answer if accepted else "Entity unknown"
    messages.append(
        {
            "role": "assistant",
            "content": f"<answer>{final}</answer>",
            "reasoning_content": f"Done{attempt}.",
        }
    )
    touched.append([])
    n_tokens = 0
    steps = []
    for idx, message in enumerate(messages):
        tokens = len(json.dumps(message)) // 4
        n_tokens += tokens
        steps.append(
            Step.from_message(
                message, id=f"{tid}:s{idx:03d}", trajectory_id=tid, idx=idx, n_tokens=tokens
            )
        )
    traj = Trajectory(
        id=tid,
        task_id=task.id,
        run_id=run,
        policy=cfg.policies[j % len(cfg.policies)],
        status="completed",
        verdict="accepted" if accepted else "rejected",
        reward=1.0 if accepted else 0.0,
        n_turns=sum(m["role"] == "assistant" for m in messages),
        n_tokens=n_tokens,
        answer=final,
        props={"tools": [t.id for t in TOOLS]},
    )
    batch.add(traj, *steps)
    batch.add(
        Edge(
            kind="SOLVES", source_kind="Trajectory", source=tid, target_kind="Task", target=task.id
        )
    )
    batch.add(
        Edge(
            kind="PRODUCED_BY", source_kind="Trajectory", source=tid, target_kind="Run", target=run
        )
    )
    for idx, step in enumerate(steps):
        batch.add(
            Edge(
                kind="HAS_STEP",
                source_kind="Trajectory",
                source=tid,
                target_kind="Step",
                target=step.id,
            )
        )
        if idx:
            batch.add(
                Edge(
                    kind="TRANSITIONS_TO",
                    source_kind="Step",
                    source=steps[idx - 1].id,
                    target_kind="Step",
                    target=step.id,
                )
            )
        if step.tool_calls:
            batch.add(
                Edge(
                    kind="USED_TOOL",
                    source_kind="Step",
                    source=step.id,
                    target_kind="Tool",
                    target=TOOLS[0].id,
                )
            )
        for e in touched[idx]:
            batch.add(
                Edge(
                    kind="TOUCHED",
                    source_kind="Step",
                    source=step.id,
                    target_kind="Entity",
                    target=e,
                )
            )
    checks = [
        Verification(
            id=f"{tid}:v:answer",
            verifier_id=VERIFIERS[0].id,
            subject_id=tid,
            passed=accepted,
            score=float(accepted),
        ),
        Verification(
            id=f"{tid}:v:process",
            verifier_id=VERIFIERS[1].id,
            subject_id=tid,
            passed=True,
            score=1.0,
        ),
        Verification(
            id=f"{tid}:v:args",
            verifier_id=VERIFIERS[1].id,
            subject_id=steps[2].id,
            subject_kind="Step",
            passed=True,
            score=1.0,
        ),
    ]
    for v in checks:
        batch.add(v)
        batch.add(
            Edge(
                kind="VERIFIES",
                source_kind="Verification",
                source=v.id,
                target_kind=v.subject_kind,
                target=v.subject_id,
            )
        )
        batch.add(
            Edge(
                kind="APPLIES",
                source_kind="Verification",
                source=v.id,
                target_kind="Verifier",
                target=v.verifier_id,
            )
        )


def synthetic_batches(config: SyntheticConfig) -> Iterator[GraphBatch]:
    """The synthetic graph as a stream of batches: tools, verifiers, runs and entities first."""
    yield _header(config)
    for start in range(0, config.n_tasks, config.batch_tasks):
        batch = GraphBatch()
        for i in range(start, min(start + config.batch_tasks, config.n_tasks)):
            _task_records(config, i, batch)
        yield batch


def write_synthetic(store: GraphStore, config: SyntheticConfig) -> int:
    """Write the synthetic graph into `store`; returns the number of records written."""
    phrases = {
        r: r.rsplit("/", 1)[-1].replace("_", " ") for rels in _RELATIONS.values() for r in rels
    }
    written = store.write_many(synthetic_batches(config))
    store.set_relation_phrases({r: p for r, p in phrases.items()})
    return written
