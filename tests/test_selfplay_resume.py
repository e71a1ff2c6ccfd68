"""`kag selfplay run` killed with SIGKILL mid-run and started again continues with exact counts."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import kag
from kag.world import generate_world, write_world

TASKS, SAMPLES = 60, 2


def _count(db: str, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # schema not there yet
        return 0


def test_a_killed_run_resumes_without_losing_or_duplicating_trajectories(tmp_path):
    db = str(tmp_path / "kag.db")
    url = f"sqlite:///{db}"
    with kag.open(url) as g:
        write_world(g, *generate_world(seed=5, size=600))
    argv = [
        sys.executable, "-m", "kag.cli", "selfplay", "run", "--engine", "oracle",
        "--tasks", str(TASKS), "--samples", str(SAMPLES), "--hops", "2-3",
        "--run-id", "crash", "--seed", "7", "--tasks-per-round", "2", "--graph", url,
        "--no-progress", "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        written = _count(db, "SELECT COUNT(*) FROM trajectories")
        if written >= 10:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    at_kill = _count(db, "SELECT COUNT(*) FROM trajectories")
    assert 0 < at_kill < TASKS * SAMPLES
    with kag.open(url) as g:
        assert g.get("Run", "crash").status == "running"  # what a crash leaves behind

    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] is True
    assert summary["trajectories"] == TASKS * SAMPLES
    assert summary["written_this_call"] == TASKS * SAMPLES - at_kill

    with kag.open(url) as g:
        trajectories = list(g.iter_nodes("Trajectory"))
        assert len(trajectories) == TASKS * SAMPLES
        per_task = Counter(t.task_id for t in trajectories)
        assert len(per_task) == TASKS and set(per_task.values()) == {SAMPLES}
        assert {t.verdict for t in trajectories} == {"accepted"}
        assert g.count("Task") == TASKS
        # every trajectory is whole: its steps, a chain of transitions, its verifications
        stats = g.stats()
        steps = stats["nodes"]["Step"]
        assert stats["edges"]["HAS_STEP"] == steps
        assert stats["edges"]["TRANSITIONS_TO"] == steps - TASKS * SAMPLES
        # system + user, one assistant step per turn, one tool step per call
        assert steps == sum(2 + t.n_turns + t.props["n_tool_calls"] for t in trajectories)
        run = g.get("Run", "crash")
        assert run.status == "completed"
        assert run.counters["trajectories"] == TASKS * SAMPLES
        assert run.counters["accepted"] == TASKS * SAMPLES
        assert run.counters["resumes"] == 1
