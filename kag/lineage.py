"""Model lineage: record checkpoints in the graph and walk the chain from graph to model.

| function | what it does |
|---|---|
| `weights_sha256(path)` | one digest over a checkpoint's weight files (`*.safetensors`, `*.bin`) |
| `record_model(store, ...)` | upsert a Model with PRODUCED_BY, TRAINED_ON and DERIVED_FROM edges |
| `ensure_model(store, path=...)` | the Model of a checkpoint dir, a `base` one when not yet known |
| `link_run_to_model(store, ...)` | USED_MODEL: a self-play, eval or rollout run's policy |
| `lineage(store, node_id)` | the chain graph -> tasks -> trajectories -> dataset -> model -> runs |

Every function takes any `GraphStore` (SQL or Neo4j) and writes idempotent upserts. The trainer
never imports this module; CLI layers call it after training (`kag train sft --graph URL`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kag.schema import MODEL_STAGES, Edge, Model, Run
from kag.stores.base import GraphBatch, GraphStore

#: weight file suffixes hashed by `weights_sha256`, in this order of preference
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt")
#: lineage node kinds `lineage` can start from
LINEAGE_KINDS: tuple[str, ...] = ("Model", "Dataset", "Run", "Trajectory")


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 over a checkpoint's weight files (sorted by name; name and bytes both hashed).

    `weights_sha256("runs/sft/model")` -> `"9f2c..."`; a directory without weight files is an error.
    """
    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    else:
        raise ValueError(f"model path {root} does not exist")
    if not files:
        raise ValueError(
            f"model directory {root} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})"
        )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def model_id(sha256: str) -> str:
    """The Model id of a weights digest: `model_id("ab12...")` -> `"model:ab12..."[:22]`."""
    return f"model:{sha256[:16]}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_model(store: GraphStore, *, sha256: str) -> Model | None:
    """The Model whose weights have this digest, or None."""
    for batch in store.iter_nodes("Model", where={"weights_sha256": sha256}):
        for node in batch:
            return node  # type: ignore[return-value]
    return None


def ensure_model(store: GraphStore, *, path: str | os.PathLike[str], stage: str = "base") -> Model:
    """The Model of the checkpoint at `path`: looked up by weights digest, else written as `stage`.

    `ensure_model(store, path="tiny-model").stage` -> `"base"` the first time.
    """
    sha = weights_sha256(path)
    known = find_model(store, sha256=sha)
    if known is not None:
        return known
    model = Model(id=model_id(sha), path=str(Path(path).resolve()), stage=stage, weights_sha256=sha)
    store.write(GraphBatch().add(model))
    return model


def dataset_id_of(path: str | os.PathLike[str]) -> str:
    """The Dataset id an exporter wrote into `path/manifest.json`; errors when there is none."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"{manifest} does not exist: {path} is not an exported dataset")
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if not data.get("dataset_id"):
        raise ValueError(f"{manifest} has no dataset_id")
    return str(data["dataset_id"])


def record_model(
    store: GraphStore,
    *,
    path: str | os.PathLike[str],
    stage: str,
    run_id: str | None = None,
    run_config: dict[str, Any] | None = None,
    datasets: Sequence[str] = (),
    parents: Sequence[str | os.PathLike[str]] = (),
    rollout_runs: Sequence[str] = (),
) -> Model:
    """Write a trained checkpoint and its lineage in one batch; return its Model.

    `path`: the checkpoint (dir or file); `stage`: base, sft, grpo or opd; `run_id`: the training
    Run (written as `Run(kind=stage)` when the store does not hold it); `datasets`: Dataset ids
    trained on (unknown ids are an error); `parents`: start checkpoints and, for OPD, each teacher
    (paths, recorded as `base` Models when not yet known); `rollout_runs`: on-policy training's
    rollout Runs in step order, each given USED_MODEL to the first parent, the model it started
    from, with props `updates` (step n ran it after n-1 optimizer updates: the weights in between
    are no Models of their own) and `training_run` (Runs not in the graph are skipped). Example,
    as an OPD trainer would call it:

        record_model(store, path="runs/opd/model", stage="opd", run_id="run:opd-1",
                     datasets=["ds:abc"], parents=["runs/sft/model", "teachers/search"])
    """
    if stage not in MODEL_STAGES:
        raise ValueError(f"model stage {stage!r} is not one of {', '.join(MODEL_STAGES)}")
    missing = sorted(set(datasets) - {d.id for d in store.get_nodes("Dataset", list(datasets))})
    if missing:
        raise ValueError(f"unknown dataset id(s) {missing}: export them with lineage first")
    parent_models = [ensure_model(store, path=p) for p in parents]
    sha = weights_sha256(path)
    model = find_model(store, sha256=sha)
    if model is None or model.stage != stage:
        model = Model(
            id=model_id(sha), path=str(Path(path).resolve()), stage=stage, weights_sha256=sha
        )
    batch = GraphBatch().add(model)
    if run_id is not None:
        if not store.get_nodes("Run", [run_id]):
            now = _now()
            batch.add(
                Run(
                    id=run_id,
                    kind=stage,
                    config=run_config or {},
                    started_at=now,
                    finished_at=now,
                    status="completed",
                )
            )
        batch.add(_edge("PRODUCED_BY", "Model", model.id, "Run", run_id))
    for ds in datasets:
        batch.add(_edge("TRAINED_ON", "Model", model.id, "Dataset", ds))
    for parent in parent_models:
        if parent.id != model.id:
            batch.add(_edge("DERIVED_FROM", "Model", model.id, "Model", parent.id))
    if rollout_runs and parent_models:
        found = {r.id for r in store.get_nodes("Run", list(rollout_runs))}
        for n, rollout in enumerate(rollout_runs, start=1):
            if rollout in found:
                props = {"updates": n - 1, "training_run": run_id}
                start = parent_models[0].id
                batch.add(_edge("USED_MODEL", "Run", rollout, "Model", start, props=props))
    store.write(batch)
    return model


def link_run_to_model(store: GraphStore, *, run_id: str, path: str | os.PathLike[str]) -> Model:
    """USED_MODEL from a self-play, eval or rollout Run to the checkpoint at `path`."""
    if not store.get_nodes("Run", [run_id]):
        raise ValueError(f"unknown run id {run_id!r}")
    model = ensure_model(store, path=path)
    store.write(GraphBatch().add(_edge("USED_MODEL", "Run", run_id, "Model", model.id)))
    return model


def _edge(kind: str, sk: str, s: str, tk: str, t: str, props: dict[str, Any] | None = None) -> Edge:
    return Edge(kind=kind, source_kind=sk, source=s, target_kind=tk, target=t, props=props or {})


def _kind_of(store: GraphStore, node_id: str) -> str:
    for kind in LINEAGE_KINDS:
        if store.get_nodes(kind, [node_id]):
            return kind
    raise ValueError(
        f"no Model, Dataset, Run or Trajectory has id {node_id!r} (check `kag stats` for ids)"
    )


def lineage(store: GraphStore, node_id: str) -> dict[str, Any]:
    """The chain through a model, dataset, run or trajectory, as plain data.

    Returns `{"id", "kind", "models": [...], "datasets": [...], "runs": [...], "trajectories": n,
    "tasks": [...], "evaluations": [...]}`; each model lists its stage, parents, datasets and the
    runs that produced and used it. `lineage(store, "model:ab12")["models"][0]["datasets"]`
    -> `["ds:..."]`.
    """
    kind = _kind_of(store, node_id)
    models: set[str] = set()
    datasets: set[str] = set()
    if kind == "Model":
        models.add(node_id)
    elif kind == "Dataset":
        datasets.add(node_id)
        models |= {e.source for e in store.edges("TRAINED_ON", target=node_id)}
    elif kind == "Run":
        produced = [e.source for e in store.edges("PRODUCED_BY", target=node_id)]
        models |= {m.id for m in store.get_nodes("Model", produced)}
        models |= {e.target for e in store.edges("USED_MODEL", source=node_id)}
        datasets |= {d.id for d in store.get_nodes("Dataset", produced)}
    elif datasets_of := {e.source for e in store.edges("CONTAINS", target=node_id)}:
        datasets |= datasets_of  # a Trajectory: the datasets holding it and the models they trained
        models |= {e.source for e in store.edges("TRAINED_ON", target=sorted(datasets_of))}
    # walk up to ancestors so the chain reaches the base model
    frontier = set(models)
    while frontier:
        parents = {e.target for e in store.edges("DERIVED_FROM", source=sorted(frontier))}
        frontier = parents - models
        models |= parents
    model_rows = []
    for m in sorted(store.get_nodes("Model", sorted(models)), key=lambda n: n.id):
        trained = sorted(e.target for e in store.edges("TRAINED_ON", source=m.id))
        datasets |= set(trained)
        model_rows.append(
            {
                "id": m.id,
                "stage": m.stage,
                "path": m.path,
                "weights_sha256": m.weights_sha256,
                "parents": sorted(e.target for e in store.edges("DERIVED_FROM", source=m.id)),
                "datasets": trained,
                "produced_by": sorted(e.target for e in store.edges("PRODUCED_BY", source=m.id)),
                "used_by": sorted(e.source for e in store.edges("USED_MODEL", target=m.id)),
            }
        )
    used_runs = sorted({r for row in model_rows for r in row["used_by"]})
    evaluations = [
        {"id": r.id, "kind": r.kind, "status": r.status, "counters": dict(r.counters)}
        for r in store.get_nodes("Run", used_runs)
    ]
    dataset_rows = []
    trajectory_ids: set[str] = set()
    for d in sorted(store.get_nodes("Dataset", sorted(datasets)), key=lambda n: n.id):
        contained = [e.target for e in store.edges("CONTAINS", source=d.id)]
        trajectory_ids |= set(contained)
        dataset_rows.append(
            {
                "id": d.id,
                "kind": d.kind,
                "path": d.path,
                "rows": d.rows,
                "trajectories": len(contained),
                "produced_by": sorted(e.target for e in store.edges("PRODUCED_BY", source=d.id)),
            }
        )
    if kind == "Trajectory":
        trajectory_ids.add(node_id)
    trajectories = store.get_nodes("Trajectory", sorted(trajectory_ids))
    tasks = sorted({t.task_id for t in trajectories})
    return {
        "id": node_id,
        "kind": kind,
        "tasks": tasks,
        "trajectories": len(trajectories),
        "trajectory_runs": sorted({t.run_id for t in trajectories}),
        "datasets": dataset_rows,
        "models": model_rows,
        "evaluations": evaluations,
    }


def format_lineage(chain: dict[str, Any]) -> str:
    """`lineage(...)` as text, one link per line, from the graph up to the evaluations."""
    lines = [f"{chain['kind']} {chain['id']}"]
    lines.append(f"tasks: {len(chain['tasks'])} ({', '.join(chain['tasks'][:5])})")
    lines.append(
        f"trajectories: {chain['trajectories']} from runs {', '.join(chain['trajectory_runs'])}"
    )
    for d in chain["datasets"]:
        lines.append(
            f"dataset {d['id']} ({d['kind']}, {d['rows']} rows, {d['trajectories']} trajectories)"
            f" produced by {', '.join(d['produced_by']) or '-'}"
        )
    for m in chain["models"]:
        lines.append(
            f"model {m['id']} ({m['stage']}) trained on {', '.join(m['datasets']) or '-'}"
            f" derived from {', '.join(m['parents']) or '-'}"
            f" produced by {', '.join(m['produced_by']) or '-'}"
        )
    for r in chain["evaluations"]:
        lines.append(f"run {r['id']} ({r['kind']}, {r['status']}) used model")
    return "\n".join(lines)
