"""`kag selfplay run` as a new user meets it: default graph, errors, one JSON object on stdout."""

from __future__ import annotations

import json

import pytest

import kag
from kag.cli import main as kag_main
from kag.world import generate_world, write_world
from selfplay.vllm_server import free_port

ORACLE = ["selfplay", "run", "--engine", "oracle", "--tasks", "3", "--no-progress", "--json"]


def _world(url: str) -> None:
    with kag.open(url) as graph:
        write_world(graph, *generate_world(seed=4, size=200))


def test_selfplay_run_without_graph_uses_the_default_graph(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAG_GRAPH", raising=False)
    _world("sqlite:///kag.db")
    assert kag_main(ORACLE) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["tasks"], summary["trajectories"]) == (3, 3)


def test_selfplay_run_without_graph_uses_kag_graph(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'world.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAG_GRAPH", url)
    _world(url)
    assert kag_main(ORACLE) == 0
    assert json.loads(capsys.readouterr().out)["trajectories"] == 3
    assert not (tmp_path / "kag.db").exists()


def test_an_unreachable_openai_server_is_one_line_naming_the_url(sqlite_url, capsys):
    _world(sqlite_url)
    url = f"http://127.0.0.1:{free_port()}/v1"
    argv = ["selfplay", "run", "--engine", "openai", "--base-url", url, "--model", "m"]
    assert kag_main([*argv, "--tasks", "1", "--no-progress", "--graph", sqlite_url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kag selfplay: error: cannot reach the model server at {url}")
    assert "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.vllm
def test_json_prints_exactly_one_object_on_stdout_with_the_vllm_engine(
    tiny_model_dir, sqlite_url, tmp_path
):
    import subprocess
    import sys

    _world(sqlite_url)
    argv = ["selfplay", "run", "--engine", "vllm", "--model", str(tiny_model_dir), "--tasks", "1"]
    argv += ["--max-turns", "1", "--max-new-tokens", "16", "--graph", sqlite_url, "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "kag.cli", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # one object, nothing else
    assert summary["trajectories"] == 1
    assert "INFO" in done.stderr  # vLLM's log lines still reach the user, on stderr
    from kag.lineage import weights_sha256

    with kag.open(sqlite_url) as graph:  # lineage: the run used the checkpoint (USED_MODEL)
        (used,) = graph.edges("USED_MODEL", source=summary["run_id"])
        assert graph.get("Model", used.target).weights_sha256 == weights_sha256(tiny_model_dir)
