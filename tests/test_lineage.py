"""Lineage end to end on SQLite: export -> `kag train sft --graph` -> eval run -> `kag lineage`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kag
from exporters import export
from exporters.synthetic import SyntheticConfig, write_synthetic
from kag.cli import main as kag_main
from kag.lineage import link_run_to_model, record_model, weights_sha256
from kag.schema import Run

SMALL = SyntheticConfig(n_tasks=6, trajectories_per_task=2, n_entities=40, accept_rate=0.75)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("lineage")
    url = f"sqlite:///{root / 'kag.db'}"
    with kag.open(url) as graph:
        write_synthetic(graph.store, SMALL)
        exported = export("sft", root / "ds", graph=graph)
    argv = [
        "train", "sft", "--data", str(root / "ds"), "--model", str(tiny_model_dir),
        "--out", str(root / "run"), "--max-steps", "2", "--max-seq-len", "2048",
        "--no-tensorboard", "--graph", url,
    ]  # fmt: skip
    assert kag_main(argv) == 0
    trained = root / "run" / "model"
    with kag.open(url) as graph:
        graph.upsert(Run(id="run:eval-1", kind="eval", started_at="2026-12-02T00:00:00Z"))
        model = link_run_to_model(graph.store, run_id="run:eval-1", path=trained)
    return {"url": url, "dataset": exported, "model": model, "trained": trained}


def test_sft_with_graph_records_the_model_its_run_dataset_and_start_model(chain, tiny_model_dir):
    with kag.open(chain["url"]) as graph:
        model = chain["model"]
        assert model.stage == "sft" and model.weights_sha256 == weights_sha256(chain["trained"])
        (run,) = graph.edges("PRODUCED_BY", source=model.id)
        assert graph.get("Run", run.target).kind == "sft"
        trained_on = [e.target for e in graph.edges("TRAINED_ON", source=model.id)]
        assert trained_on == [chain["dataset"].dataset_id]
        (parent,) = graph.edges("DERIVED_FROM", source=model.id)
        base = graph.get("Model", parent.target)
        assert base.stage == "base" and base.weights_sha256 == weights_sha256(tiny_model_dir)
        assert [e.source for e in graph.edges("USED_MODEL", target=model.id)] == ["run:eval-1"]


def test_kag_lineage_names_every_link_as_text_and_json(chain, capsys):
    model, ds = chain["model"], chain["dataset"]
    assert kag_main(["lineage", model.id, "--graph", chain["url"], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "Model"
    assert [d["id"] for d in data["datasets"]] == [ds.dataset_id]
    assert data["datasets"][0]["produced_by"] == [ds.run_id]
    assert data["trajectories"] == ds.rows and len(data["tasks"]) >= 1
    stages = {m["id"]: m["stage"] for m in data["models"]}
    assert stages[model.id] == "sft" and sorted(stages.values()) == ["base", "sft"]
    assert [r["id"] for r in data["evaluations"]] == ["run:eval-1"]
    assert kag_main(["lineage", ds.dataset_id, "--graph", chain["url"]]) == 0
    text = capsys.readouterr().out
    for name in (ds.dataset_id, model.id, "(sft)", "(base)", "run:eval-1", ds.run_id):
        assert name in text
    # from a trajectory of the dataset, the chain reaches the model trained on it
    with kag.open(chain["url"]) as graph:
        tid = graph.edges("CONTAINS", source=ds.dataset_id)[0].target
    assert kag_main(["lineage", tid, "--graph", chain["url"], "--json"]) == 0
    assert model.id in {m["id"] for m in json.loads(capsys.readouterr().out)["models"]}


def test_unknown_ids_and_datasets_are_user_errors(chain, capsys, tmp_path):
    assert kag_main(["lineage", "model:nope", "--graph", chain["url"]]) == 2
    assert "'model:nope'" in capsys.readouterr().err
    with kag.open(chain["url"]) as graph, pytest.raises(ValueError, match="ds:missing"):
        record_model(graph.store, path=chain["trained"], stage="sft", datasets=["ds:missing"])
    with kag.open(chain["url"]) as graph, pytest.raises(ValueError, match="stage"):
        record_model(graph.store, path=chain["trained"], stage="rlhf")
    with pytest.raises(ValueError, match="no weight files"):
        weights_sha256(tmp_path)


def test_record_model_is_idempotent_for_an_opd_style_caller(chain):
    with kag.open(chain["url"]) as graph:
        before = graph.stats()["nodes"]["Model"]
        for _ in range(2):
            record_model(
                graph.store,
                path=chain["trained"],
                stage="sft",
                run_id="run:again",
                datasets=[chain["dataset"].dataset_id],
                parents=[Path(chain["model"].path)],
            )
        assert graph.stats()["nodes"]["Model"] == before
        assert len(graph.edges("PRODUCED_BY", source=chain["model"].id)) == 2
