"""SFT export of synthetic self-play output in SQLite: throughput against a naive exporter, and
flat memory from 10,000 to 100,000 trajectories.

| metric                    | value                                             | baseline                                   |
|---------------------------|---------------------------------------------------|--------------------------------------------|
| `export_rows_per_s`       | rows/s of `exporters.export("sft", ...)` on the 100k graph (manifest, card and lineage included) | naive: per trajectory, its task, steps, edges and verifications through the store API, every row into a pandas DataFrame, then `to_parquet` (zstd) |
| `export_memory_flatness`  | peak RSS of the export at 100k trajectories       | peak RSS of the same export at 10k (ratio = baseline / value) |

Every export runs in a fresh subprocess (so peak RSS is its own). The graphs are built once per
`--workdir` and reused (building 100k trajectories with their steps and edges takes minutes).

    python benchmarks/export.py [--workdir DIR] [--small 10000] [--large 100000] [--baseline-limit N]

`--baseline-limit N` times the naive exporter on the first N trajectories only (its rows/s does
not depend on the graph size); by default it runs on all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build_graph(path: Path, n_trajectories: int) -> str:
    """A SQLite graph with `n_trajectories` accepted, distinct trajectories (reused if present)."""
    import kag
    from exporters.synthetic import SyntheticConfig, write_synthetic

    url = f"sqlite:///{path}"
    marker = path.with_suffix(".done")
    if marker.exists():
        return url
    path.unlink(missing_ok=True)
    cfg = SyntheticConfig(
        n_tasks=n_trajectories // 2,
        trajectories_per_task=2,
        accept_rate=1.0,
        n_entities=5000,
        batch_tasks=1000,
    )
    started = time.perf_counter()
    with kag.open(url) as graph:
        write_synthetic(graph.store, cfg)
    marker.write_text(json.dumps({"trajectories": n_trajectories}))
    print(
        f"built {path.name}: {n_trajectories:,} trajectories in {time.perf_counter() - started:.0f}s",
        flush=True,
    )
    return url


def child_export(url: str, out: Path) -> dict:
    from exporters import export

    started = time.perf_counter()
    result = export("sft", out, graph=url, overwrite=True)
    seconds = time.perf_counter() - started
    return {"rows": result.rows, "seconds": seconds, "peak_rss_mib": _peak_rss_mib()}


def child_naive(url: str, out: Path, limit: int | None) -> dict:
    """The exporter one writes first: one trajectory at a time through the store API, all rows
    in a pandas DataFrame, then `to_parquet`."""
    import pandas as pd

    from kag.stores import open_store

    store = open_store(url)
    started = time.perf_counter()
    rows = []
    tools: dict[str, dict] = {}
    for batch in store.iter_nodes("Trajectory", where={"verdict": "accepted"}):
        for t in batch:
            if limit is not None and len(rows) >= limit:
                break
            (task,) = store.get_nodes("Task", [t.task_id])
            steps = sorted(
                (s for b in store.iter_nodes("Step", where={"trajectory_id": t.id}) for s in b),
                key=lambda s: s.idx,
            )
            step_ids = [s.id for s in steps]
            touched = sorted({e.target for e in store.edges("TOUCHED", source=step_ids)})
            used = sorted({e.target for e in store.edges("USED_TOOL", source=step_ids)})
            verifications = sorted(
                v.id
                for b in store.iter_nodes("Verification", where={"subject_id": [t.id, *step_ids]})
                for v in b
            )
            for tool_id in t.props.get("tools", used):
                if tool_id not in tools:
                    tools[tool_id] = store.get_nodes("Tool", [tool_id])[0].spec()
            rows.append(
                {
                    "id": t.id,
                    "task_id": task.id,
                    "trajectory_id": t.id,
                    "domain": task.domain,
                    "messages": [s.to_message() for s in steps],
                    "tools": json.dumps([tools[i] for i in t.props.get("tools", used)]),
                    "answers": list(task.answers),
                    "verdict": t.verdict,
                    "reward": float(t.reward),
                    "n_turns": t.n_turns,
                    "n_tokens": t.n_tokens,
                    "policy": t.policy,
                    "run_id": t.run_id,
                    "entity_ids": touched,
                    "tool_ids": used,
                    "verification_ids": verifications,
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out / "train.parquet", compression="zstd")
    seconds = time.perf_counter() - started
    store.close()
    return {"rows": len(rows), "seconds": seconds, "peak_rss_mib": _peak_rss_mib()}


def _run_child(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kag-bench-export"
    )
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--baseline-limit", type=int, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        what, url, out, *rest = args.child
        if what == "export":
            print(json.dumps(child_export(url, Path(out))))
        else:
            print(json.dumps(child_naive(url, Path(out), int(rest[0]) if rest else None)))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    small_url = build_graph(args.workdir / f"sft-{args.small}.db", args.small)
    large_url = build_graph(args.workdir / f"sft-{args.large}.db", args.large)
    out = args.workdir / "out"
    try:
        small = _run_child("export", small_url, str(out / "small"))
        print(
            f"export {small['rows']:,} rows: {small['seconds']:.1f}s, peak RSS {small['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        large = _run_child("export", large_url, str(out / "large"))
        print(
            f"export {large['rows']:,} rows: {large['seconds']:.1f}s, peak RSS {large['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        naive_args = ["naive", large_url, str(out / "naive")]
        if args.baseline_limit:
            naive_args.append(str(args.baseline_limit))
        naive = _run_child(*naive_args)
        print(
            f"naive {naive['rows']:,} rows: {naive['seconds']:.1f}s, peak RSS {naive['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)

    rate, naive_rate = large["rows"] / large["seconds"], naive["rows"] / naive["seconds"]
    results = [
        {
            "metric": "export_rows_per_s",
            "value": round(rate, 1),
            "unit": "rows/s",
            "baseline": "naive per-trajectory store reads -> pandas DataFrame -> to_parquet",
            "baseline_value": round(naive_rate, 1),
            "ratio": round(rate / naive_rate, 2),
            "rows": large["rows"],
            "baseline_rows": naive["rows"],
            "baseline_peak_rss_mib": round(naive["peak_rss_mib"], 1),
        },
        {
            "metric": "export_memory_flatness",
            "value": round(large["peak_rss_mib"], 1),
            "unit": "MiB peak RSS",
            "baseline": f"peak RSS of the same export at {small['rows']:,} rows",
            "baseline_value": round(small["peak_rss_mib"], 1),
            "ratio": round(small["peak_rss_mib"] / large["peak_rss_mib"], 3),
            "rows": large["rows"],
            "baseline_rows": small["rows"],
        },
    ]
    for r in results:
        print("RESULT " + json.dumps(r))
    print(f"cpu count {os.cpu_count()}", file=sys.stderr)


if __name__ == "__main__":
    main()
