"""Dataset exports (DESIGN section 5): sft, rl and opd datasets from a graph of self-play output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import datasets
import polars as pl
import pyarrow.parquet as pq
import pytest

import exporters
from exporters import (
    DedupConfig,
    EmptySelectionError,
    Selection,
    SplitConfig,
    export,
    verify_dataset,
)
from exporters.schema import dataset_schema
from exporters.synthetic import SyntheticConfig, write_synthetic
from kag.cli import main as kag_main

SMALL = SyntheticConfig(n_tasks=12, trajectories_per_task=2, n_entities=60, accept_rate=0.75)


def _rows(out: Path) -> list[dict]:
    return pl.read_parquet(out / "data" / "*.parquet").to_dicts()


def _trajectories(graph) -> list:
    return list(graph.iter_nodes("Trajectory"))


def _tasks(graph) -> dict:
    return {t.id: t for t in graph.iter_nodes("Task")}


@pytest.fixture
def small_graph(graph):
    """The small synthetic graph on every backend (for tests of what is read from the store)."""
    write_synthetic(graph.store, SMALL)
    return graph


@pytest.fixture
def sqlite_empty(sqlite_url):
    import kag

    with kag.open(sqlite_url) as g:
        yield g


@pytest.fixture
def sqlite_graph(sqlite_url):
    """The small synthetic graph on SQLite (for behaviour that does not depend on the backend)."""
    import kag

    with kag.open(sqlite_url) as g:
        write_synthetic(g.store, SMALL)
        yield g


def test_sft_dataset_loads_with_datasets_and_polars_and_holds_the_accepted_trajectories(
    small_graph, tmp_path
):
    out = tmp_path / "sft"
    result = export("sft", out, graph=small_graph)

    accepted = {t.id for t in _trajectories(small_graph) if t.verdict == "accepted"}
    assert result.rows == len(accepted) > 0
    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"))
    assert sum(len(split) for split in ds.values()) == len(accepted)
    frame = pl.scan_parquet(out / "data" / "*.parquet").collect()
    assert frame.columns == dataset_schema("sft").names
    assert set(frame["trajectory_id"]) == accepted
    assert set(frame["verdict"]) == {"accepted"}
    row = frame.row(0, named=True)
    traj = small_graph.get("Trajectory", row["trajectory_id"])
    steps = sorted(
        small_graph.iter_nodes("Step", where={"trajectory_id": traj.id}),
        key=lambda s: s.idx,
    )
    assert row["messages"] == [s.to_message() for s in steps]
    assert [t["function"]["name"] for t in json.loads(row["tools"])] == [
        "get_relations",
        "search_entities",
    ]
    assert row["tool_ids"] == ["get_relations@1"]
    assert (
        row["n_turns"] == traj.n_turns
        and row["policy"] == traj.policy
        and row["run_id"] == traj.run_id
    )
    task = small_graph.get("Task", row["task_id"])
    assert row["answers"] == list(task.answers) and row["domain"] == task.domain
    assert set(task.path["entities"]) == set(row["entity_ids"])
    assert len(row["verification_ids"]) == 3  # two on the trajectory, one on a step
    # the files are zstd Parquet in data/{split}-{shard:05d}.parquet
    for path in (out / "data").iterdir():
        assert path.name.split("-")[0] in ("train", "validation", "test") and path.name.endswith(
            "-00000.parquet"
        )
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_every_row_renders_with_the_tiny_models_chat_template(sqlite_url, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    import kag

    with kag.open(sqlite_url) as graph:
        write_synthetic(graph.store, SMALL)
        export("sft", tmp_path / "sft", graph=graph)
        export("rl", tmp_path / "rl", graph=graph)
    for row in datasets.load_dataset("parquet", data_dir=str(tmp_path / "sft" / "data"))["train"]:
        text = tok.apply_chat_template(
            row["messages"], tools=json.loads(row["tools"]), tokenize=False
        )
        assert '"name": "get_relations"' in text  # tools and tool calls rendered
        assert "<tool_response>" in text and f"<answer>{row['answers'][0]}</answer>" in text
        assert len(tok(text)["input_ids"]) > 0
    for row in _rows(tmp_path / "rl"):
        text = tok.apply_chat_template(
            row["messages"],
            tools=json.loads(row["tools"]),
            tokenize=False,
            add_generation_prompt=True,
        )
        assert text.endswith("<|im_start|>assistant\n") and row["messages"][-1]["content"] in text


def test_splits_are_stable_across_exports_and_keep_every_task_in_one_split(sqlite_graph, tmp_path):
    export(
        "sft",
        tmp_path / "a",
        graph=sqlite_graph,
        dedup=DedupConfig(exact=False),
        selection=Selection(verdict=()),
    )
    export(
        "sft",
        tmp_path / "b",
        graph=sqlite_graph,
        dedup=DedupConfig(exact=False),
        selection=Selection(verdict=()),
    )
    export(
        "sft", tmp_path / "film", graph=sqlite_graph, selection=Selection(domain="film", verdict=())
    )

    def splits(out: Path) -> dict[str, str]:
        """row id -> split, read from the file names."""
        return {
            row_id: p.name.split("-")[0]
            for p in (out / "data").iterdir()
            for row_id in pl.read_parquet(p)["id"]
        }

    a, b = splits(tmp_path / "a"), splits(tmp_path / "b")
    assert a == b and len(a) == SMALL.n_tasks * SMALL.trajectories_per_task
    task_split: dict[str, set[str]] = defaultdict(set)
    for row in _rows(tmp_path / "a"):
        task_split[row["task_id"]].add(a[row["id"]])
    assert all(len(s) == 1 for s in task_split.values())
    # a smaller export keeps every task where the full one put it
    film = splits(tmp_path / "film")
    assert film and all(film[i] == a[i] for i in film)
    # uneven ratios still group by task
    export(
        "sft", tmp_path / "half", graph=sqlite_graph, splits=SplitConfig.parse("train=0.5,test=0.5")
    )
    half = _rows(tmp_path / "half")
    assert {r["task_id"] for r in half}  # non-empty
    manifest = verify_dataset(tmp_path / "half")
    assert set(manifest["counts"]["split"]) <= {"train", "test"}


def test_exact_dedup_drops_identical_messages_even_with_other_tool_call_ids(sqlite_empty, tmp_path):
    graph = sqlite_empty
    cfg = SyntheticConfig(
        n_tasks=6, trajectories_per_task=3, n_entities=30, accept_rate=1.0, duplicate_messages=True
    )
    write_synthetic(graph.store, cfg)
    kept = export("sft", tmp_path / "exact", graph=graph)
    assert kept.rows == 6 and kept.counts["dropped"]["duplicate_messages"] == 12
    # the first trajectory of each task (in id order) is the one kept
    assert {r["id"] for r in _rows(tmp_path / "exact")} == {f"traj-{i:07d}-00" for i in range(6)}
    everything = export("sft", tmp_path / "all", graph=graph, dedup=DedupConfig(exact=False))
    assert everything.rows == 18


def test_walk_dedup_keeps_one_task_per_signature_across_runs_and_cap_limits_domains(
    sqlite_empty, tmp_path
):
    graph = sqlite_empty
    cfg = SyntheticConfig(
        n_tasks=12, trajectories_per_task=2, n_entities=40, accept_rate=1.0, signature_pool=4
    )
    write_synthetic(graph.store, cfg)
    result = export("sft", tmp_path / "walk", graph=graph, dedup=DedupConfig(walk=True))
    rows = _rows(tmp_path / "walk")
    tasks = _tasks(graph)
    signatures = defaultdict(set)
    for r in rows:
        signatures[tasks[r["task_id"]].walk_signature].add(r["task_id"])
    assert len(signatures) == 4 and all(len(t) == 1 for t in signatures.values())
    # tasks 0..3 came first with each signature; runs alternate, so duplicates crossed runs
    assert {r["task_id"] for r in rows} == {f"task-{i:07d}" for i in range(4)}
    assert result.rows == 8 and result.counts["dropped"]["duplicate_walk"] == 16

    capped = export("sft", tmp_path / "cap", graph=graph, dedup=DedupConfig(cap_per_domain=3))
    per_domain = defaultdict(int)
    for r in _rows(tmp_path / "cap"):
        per_domain[r["domain"]] += 1
    assert dict(per_domain) == {"film": 3, "music": 3, "geo": 3} and capped.counts[
        "domain"
    ] == dict(per_domain)


def test_filters_select_run_domain_policy_verdict_turns_and_hops(small_graph, tmp_path):
    trajs, tasks = _trajectories(small_graph), _tasks(small_graph)
    cases = [
        Selection(run_id="selfplay-a"),
        Selection(domain=("music", "geo")),
        Selection(policy="tiny", verdict=()),
        Selection(verdict="rejected"),
        Selection(min_turns=4),
        Selection(max_turns=3),
        Selection(min_hops=3, max_hops=3),
        Selection(run_id="selfplay-b", min_hops=2, max_hops=2, policy="oracle"),
    ]
    for i, sel in enumerate(cases):
        verdicts = ("accepted",) if sel.verdict is None else sel.verdict
        expected = {
            t.id
            for t in trajs
            if (not sel.run_id or t.run_id in sel.run_id)
            and (not sel.policy or t.policy in sel.policy)
            and (not verdicts or t.verdict in verdicts)
            and sel.keeps_turns(t.n_turns)
            and sel.keeps_task(tasks[t.task_id])
        }
        assert expected, sel
        export(
            "sft",
            tmp_path / str(i),
            graph=small_graph,
            selection=sel,
            dedup=DedupConfig(exact=False),
        )
        assert {r["id"] for r in _rows(tmp_path / str(i))} == expected, sel
        assert (
            verify_dataset(tmp_path / str(i))["filters"]
            == sel.with_default_verdict("sft").to_dict()
        )


def test_bad_selection_values_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        Selection(verdict="maybe")
    with pytest.raises(ValueError, match="min_turns=5 is greater than max_turns=2"):
        Selection(min_turns=5, max_turns=2)
    with pytest.raises(ValueError, match="min_hops must be a non-negative integer"):
        Selection(min_hops=-1)
    with pytest.raises(ValueError, match="ratios sum to 0.9"):
        SplitConfig.parse("train=0.8,test=0.1")
    with pytest.raises(ValueError, match="unknown dedup rule 'fuzzy'"):
        DedupConfig.parse("exact,fuzzy")
    with pytest.raises(ValueError, match="unknown dataset kind 'dpo'"):
        export("dpo", "/nonexistent/x")


def test_manifest_records_the_export_and_its_checksums_catch_a_changed_file(sqlite_graph, tmp_path):
    out = tmp_path / "sft"
    result = export("sft", out, graph=sqlite_graph, selection=Selection(domain="film"))
    manifest = verify_dataset(out)
    assert manifest["schema_version"] == exporters.SCHEMA_VERSION and manifest["kind"] == "sft"
    assert manifest["source"]["graph"] == sqlite_graph.url and "created_at" in manifest
    assert manifest["filters"]["domain"] == ["film"] and manifest["filters"]["verdict"] == [
        "accepted"
    ]
    assert manifest["counts"]["rows"] == result.rows == sum(manifest["counts"]["split"].values())
    assert manifest["counts"]["domain"] == {"film": result.rows}
    assert manifest["counts"]["verdict"] == {"accepted": result.rows}
    assert {"README.md", "lengths.png"} <= set(manifest["files"])
    assert all(f in manifest["files"] for f in result.files)
    card = (out / "README.md").read_text()
    assert "lengths.png" in card and f"{result.rows:,}" in card
    assert (out / "lengths.png").read_bytes().startswith(b"\x89PNG")

    shard = out / result.files[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{result.files[0]}: sha256 differs"):
        verify_dataset(out)


def test_lineage_links_the_dataset_to_every_exported_trajectory_and_the_export_run(
    small_graph, tmp_path
):
    result = export("sft", tmp_path / "sft", graph=small_graph)
    dataset = small_graph.get("Dataset", result.dataset_id)
    assert (
        dataset.rows == result.rows
        and dataset.path == str(tmp_path / "sft")
        and dataset.kind == "sft"
    )
    assert dataset.manifest_sha256 == result.manifest_sha256
    contains = small_graph.edges("CONTAINS", source=result.dataset_id)
    assert {e.target for e in contains} == {r["trajectory_id"] for r in _rows(tmp_path / "sft")}
    assert len(contains) == result.rows
    (produced,) = small_graph.edges("PRODUCED_BY", source=result.dataset_id)
    run = small_graph.get("Run", produced.target)
    assert run.id == result.run_id and run.kind == "export" and run.status == "completed"
    assert run.counters["rows"] == result.rows and run.config["filters"]["verdict"] == ["accepted"]
    assert small_graph.stats()["datasets"] == [
        {"id": result.dataset_id, "kind": "sft", "rows": result.rows, "path": str(tmp_path / "sft")}
    ]


def test_rl_and_opd_rows_are_tasks_with_prompt_verifiers_and_routing(small_graph, tmp_path):
    tasks, trajs = _tasks(small_graph), _trajectories(small_graph)
    export("rl", tmp_path / "rl", graph=small_graph)
    rows = _rows(tmp_path / "rl")
    assert {r["id"] for r in rows} == set(tasks) and all(r["id"] == r["task_id"] for r in rows)
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["system", "user"]
        assert r["messages"][1]["content"] == tasks[r["id"]].question
        assert r["hops"] == tasks[r["id"]].hops
        assert [v["id"] for v in json.loads(r["verifiers"])] == ["answer_match@1", "process@1"]
        of_task = [t for t in trajs if t.task_id == r["id"]]
        assert r["trajectory_id"] == min(t.id for t in of_task)
        assert r["reward"] == pytest.approx(sum(t.reward for t in of_task) / len(of_task))
        assert set(r["entity_ids"]) == set(tasks[r["id"]].path["entities"])
    export(
        "opd",
        tmp_path / "opd",
        graph=small_graph,
        selection=Selection(verdict="accepted", min_hops=3),
        opd=exporters.OPDConfig(teachers={"film": "teachers/film-grpo"}, max_turns=6),
    )
    opd = _rows(tmp_path / "opd")
    assert opd and all(tasks[r["id"]].hops >= 3 and r["verdict"] == "accepted" for r in opd)
    for r in opd:
        # a listed domain routes to its teacher; every other task to its family's
        assert r["teacher"] == ("teachers/film-grpo" if r["domain"] == "film" else r["family"])
        assert json.loads(r["protocol"]) == {
            "max_turns": 6,
            "max_tokens": 1024,
            "finalisation": "answer_now",
        }
    assert (
        pl.scan_parquet(tmp_path / "opd" / "data" / "*.parquet").collect_schema().names()
        == dataset_schema("opd").names
    )


def _no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name]


def test_empty_selection_says_so_and_writes_nothing(sqlite_graph, tmp_path):
    with pytest.raises(
        EmptySelectionError,
        match=r"no sft rows selected .*'domain': \['nowhere'\].*nothing was written",
    ):
        export("sft", tmp_path / "empty", graph=sqlite_graph, selection=Selection(domain="nowhere"))
    assert not (tmp_path / "empty").exists() and _no_leftovers(tmp_path)
    assert (
        sqlite_graph.count("Dataset") == 0
        and sqlite_graph.count("Run", where={"kind": "export"}) == 0
    )


def test_non_empty_output_is_refused_without_overwrite_and_overwrite_replaces_an_earlier_export(
    sqlite_graph, tmp_path
):
    out = tmp_path / "sft"
    first = export("sft", out, graph=sqlite_graph)
    with pytest.raises(ValueError, match="is not empty; pass --overwrite"):
        export("sft", out, graph=sqlite_graph)
    assert verify_dataset(out)["dataset_id"] == first.dataset_id
    second = export(
        "sft", out, graph=sqlite_graph, selection=Selection(domain="geo"), overwrite=True
    )
    assert verify_dataset(out)["dataset_id"] == second.dataset_id and second.rows < first.rows
    assert _no_leftovers(tmp_path) and not [p for p in tmp_path.iterdir() if ".old-" in p.name]
    # a directory that is not an earlier export is never deleted, even with overwrite
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="refusing to overwrite .*no manifest.json"):
        export("sft", precious, graph=sqlite_graph, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_interrupted_export_leaves_no_partial_dataset_and_no_lineage(sqlite_graph, tmp_path):
    def interrupt(rows: int, read: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(
            "sft",
            tmp_path / "sft",
            graph=sqlite_graph,
            selection=Selection(batch_size=4),
            progress=interrupt,
        )
    assert not (tmp_path / "sft").exists() and _no_leftovers(tmp_path)
    assert sqlite_graph.count("Dataset") == 0


def test_killed_export_process_leaves_no_dataset_at_the_output_path(sqlite_url, tmp_path):
    import kag

    with kag.open(sqlite_url) as graph:
        write_synthetic(graph.store, SMALL)
    script = textwrap.dedent(
        f"""
        import os, signal
        from exporters import Selection, export
        def die(rows, read):
            if rows >= 4:
                os.kill(os.getpid(), signal.SIGKILL)
        export("sft", {str(tmp_path / "sft")!r}, graph={sqlite_url!r}, selection=Selection(batch_size=2), progress=die)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).parents[1], capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert not (tmp_path / "sft").exists()
    partial = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert len(partial) == 1  # it had started: the staging directory is all that is left
    with kag.open(sqlite_url) as graph:
        assert graph.count("Dataset") == 0
    # the next export is not disturbed by the leftover
    assert export("sft", tmp_path / "sft", graph=sqlite_url).rows > 0


def test_cli_exports_with_filters_and_reports_user_errors(sqlite_url, tmp_path, capsys):
    import kag

    with kag.open(sqlite_url) as graph:
        write_synthetic(graph.store, SMALL)
    out = tmp_path / "cli"
    argv = [
        "export",
        "sft",
        str(out),
        "--graph",
        sqlite_url,
        "--domain",
        "film",
        "--domain",
        "geo",
        "--dedup",
        "exact,walk",
    ]
    assert kag_main([*argv, "--min-turns", "3", "--cap-per-domain", "2"]) == 0
    assert "sft rows" in capsys.readouterr().out
    manifest = verify_dataset(out)
    assert manifest["filters"]["domain"] == ["film", "geo"] and manifest["dedup"]["walk"] is True
    assert (
        set(manifest["counts"]["domain"]) <= {"film", "geo"}
        and max(manifest["counts"]["domain"].values()) <= 2
    )

    assert kag_main(argv) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert (
        kag_main(
            [
                "export",
                "rl",
                str(tmp_path / "x"),
                "--graph",
                sqlite_url,
                "--min-turns",
                "5",
                "--max-turns",
                "1",
            ]
        )
        == 2
    )
    assert "min_turns=5 is greater than max_turns=1" in capsys.readouterr().err
    assert (
        kag_main(
            ["export", "sft", str(tmp_path / "y"), "--graph", sqlite_url, "--run", "no-such-run"]
        )
        == 2
    )
    assert "no sft rows selected" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert (
        kag_main(["export", "opd", str(tmp_path / "o"), "--graph", sqlite_url, "--teacher", "film"])
        == 2
    )
    assert "write FAMILY_OR_DOMAIN=KEY" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["cli", "kag.db"]  # refused exports left nothing


def test_overwriting_an_export_replaces_its_dataset_lineage_too(small_graph, tmp_path):
    out = tmp_path / "sft"
    first = export("sft", out, graph=small_graph)
    elsewhere = export("sft", tmp_path / "other", graph=small_graph)
    second = export(
        "sft", out, graph=small_graph, selection=Selection(domain="geo"), overwrite=True
    )
    datasets = {d.id for d in small_graph.iter_nodes("Dataset")}
    assert datasets == {second.dataset_id, elsewhere.dataset_id}  # the first is gone
    assert small_graph.edges("CONTAINS", source=first.dataset_id) == []
    contains = small_graph.edges("CONTAINS", source=second.dataset_id)
    assert {e.target for e in contains} == {r["trajectory_id"] for r in _rows(out)}
    assert small_graph.get("Run", first.run_id).status == "completed"  # the record that it ran
