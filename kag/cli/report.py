"""The report of a `kag loop`: `report.md` and its PNG plots, every number read back from the graph.

| section                 | where its numbers come from                                        |
|-------------------------|--------------------------------------------------------------------|
| accept rate per stage   | the counters of each eval Run (`kag eval`), per family and hops    |
| training curves         | `metrics.jsonl` of each SFT, GRPO and OPD run directory            |
| coverage                | `kag.coverage.coverage_stats` after each self-play stage           |
| throughput              | each stage's Run: wall time, and trajectories or optimizer steps   |
| provenance              | three queries of `kag.provenance` on the loop's own graph          |

`report_numbers(config, done)` is the same content as plain data (`report.json`), so a test can
check every figure against the graph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["report_numbers", "provenance_queries", "write_report", "STAGE_LABELS"]

#: how each evaluated stage is named in the report
STAGE_LABELS = {"base": "base (untrained)", "sft": "SFT", "opd": "OPD student"}


def _label(of: str, r: int) -> str:
    if of.startswith("grpo-"):
        name = f"teacher {of.removeprefix('grpo-')}"
    else:
        name = STAGE_LABELS.get(of, of)
    return name if of == "base" else f"r{r} {name}"


def _read_metrics(run_dir: str | None) -> list[dict[str, Any]]:
    if not run_dir:
        return []
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _slice(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "tasks": metrics.get("tasks"),
        "accepted": metrics.get("greedy_accepted"),
        "accept_rate": metrics.get("accept_rate"),
    }


def report_numbers(config: Any, done: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, read from the graph (eval Runs, stage Runs) and run dirs."""
    import kag

    evals: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    with kag.open(config.graph_url) as graph:
        store = graph.store
        for stage in config.stages():
            rec = done[stage]
            rnd, _, name = stage.partition("-")
            run = store.get_nodes("Run", [rec.run_id])[0]
            wall = float(run.counters.get("wall_s", 0.0))  # type: ignore[attr-defined]
            row: dict[str, Any] = {"stage": stage, "wall_s": wall}
            outputs = dict(run.counters.get("outputs", {}))  # type: ignore[attr-defined]
            if "trajectories" in outputs:
                row["trajectories"] = outputs["trajectories"]
                row["per_s"] = round(outputs["trajectories"] / wall, 3) if wall else None
                row["unit"] = "trajectories"
            if name.startswith("eval-"):
                eval_run = store.get_nodes("Run", [outputs["run_id"]])[0]
                c = dict(eval_run.counters)  # type: ignore[attr-defined]
                of = name.removeprefix("eval-")
                evals.append(
                    {
                        "stage": stage,
                        "label": _label(of, int(rnd[1:])),
                        "run_id": eval_run.id,
                        "model": outputs["model"],
                        "tasks": c.get("tasks"),
                        "accepted": c.get("greedy_accepted"),
                        "accept_rate": c.get("accept_rate"),
                        "by_family": {
                            f: _slice(v) for f, v in sorted(c.get("by_family", {}).items())
                        },
                        "by_hops": {h: _slice(v) for h, v in sorted(c.get("by_hops", {}).items())},
                    }
                )
                row["trajectories"] = c.get("trajectories")
                row["per_s"] = (
                    round(c["trajectories"] / wall, 3) if wall and c.get("trajectories") else None
                )
                row["unit"] = "trajectories"
            metrics = _read_metrics(outputs.get("run_dir"))
            if metrics:
                row["steps"] = metrics[-1].get("step")
                row["per_s"] = round(row["steps"] / wall, 3) if wall else None
                row["unit"] = "optimizer steps"
            stages.append(row)
        coverage = {
            s["stage"]: done[s["stage"]].outputs.get("coverage")
            for s in stages
            if done[s["stage"]].outputs.get("coverage")
        }
    return {"loop_id": config.loop_id, "evals": evals, "stages": stages, "coverage": coverage}


def _fmt(rate: Any) -> str:
    return "-" if rate is None else f"{rate:.3f}"


def _plots(work: Path, numbers: dict[str, Any], done: dict[str, Any]) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    out: dict[str, str] = {}
    evals = numbers["evals"]
    families = sorted({f for e in evals for f in e["by_family"]})
    if evals:
        fig, ax = plt.subplots(figsize=(max(6, len(evals) * 0.9), 3.6))
        width = 0.8 / max(1, len(families))
        for i, fam in enumerate(families):
            ys = [e["by_family"].get(fam, {}).get("accept_rate") or 0.0 for e in evals]
            ax.bar([x + i * width for x in range(len(evals))], ys, width, label=fam)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(evals))])
        ax.set_xticklabels([e["label"] for e in evals], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("held-out accept rate (greedy)")
        ax.set_ylim(0, 1)
        ax.legend()
        fig.tight_layout()
        fig.savefig(work / "accept_rate.png", dpi=110)
        plt.close(fig)
        out["accept_rate"] = "accept_rate.png"
    curves = {"loss": [], "reward": []}
    for stage, rec in done.items():
        metrics = _read_metrics(rec.outputs.get("run_dir"))
        if not metrics:
            continue
        key = "reward" if "grpo" in stage else "loss"
        ys = [(m["step"], m.get("reward_mean" if key == "reward" else "loss")) for m in metrics]
        ys = [(s, y) for s, y in ys if y is not None]
        if ys:
            curves[key].append((stage, ys))
    for key, series in curves.items():
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for stage, ys in series:
            ax.plot([s for s, _ in ys], [y for _, y in ys], label=stage)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss" if key == "loss" else "mean rollout reward")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(work / f"{key}.png", dpi=110)
        plt.close(fig)
        out[key] = f"{key}.png"
    return out


def _newest(store: Any, kind: str, name: str) -> str:
    """The newest version of a tool or verifier, e.g. `answer_match@2`."""
    ids = [n.id for b in store.iter_nodes(kind) for n in b if n.id.split("@")[0] == name]
    if not ids:
        return name
    return max(ids, key=lambda i: int(i.split("@")[1]) if i.split("@")[1].isdigit() else 0)


def provenance_queries(config: Any) -> list[dict[str, Any]]:
    """Three questions users ask of the loop's graph, answered with `kag.provenance` (the same
    as `kag query`): the datasets holding the student's self-play, the models trained on data
    that touched the most-covered entity, and the student's trajectories that touched it
    through `get_relations` and failed `answer_match`."""
    import kag
    from kag import provenance
    from kag.coverage import coverage_counts

    g = f"--graph {config.graph_url}"
    out: list[dict[str, Any]] = []
    with kag.open(config.graph_url) as graph:
        store = graph.store
        student = config.run_id("r0-student")
        run = student if store.get_nodes("Run", [student]) else config.run_id("r0-demos")
        found = provenance.datasets_with_run(store, run_id=run)
        out.append(
            {
                "question": f"Which datasets contain trajectories of run {run}?",
                "command": f"kag query datasets --run {run} {g}",
                "answer": json.dumps(found, indent=1),
            }
        )
        top = coverage_counts(store).entities.most_common(1)
        if top:
            entity = top[0][0]
            models = provenance.models_touching(store, entity_id=entity)
            out.append(
                {
                    "question": f"Which models were trained on data that touched entity {entity}?",
                    "command": f"kag query models --touched-entity {entity} {g}",
                    "answer": json.dumps(
                        [{k: m[k] for k in ("id", "stage", "datasets")} for m in models], indent=1
                    ),
                }
            )
            tool = _newest(store, "Tool", "get_relations")
            verifier = _newest(store, "Verifier", "answer_match")
            failed = provenance.trajectories(
                store, touched_entity=entity, used_tool=tool, failed_verifier=verifier
            )
            out.append(
                {
                    "question": (
                        f"Which trajectories touched {entity} through {tool} and failed {verifier}?"
                    ),
                    "command": (
                        f"kag query trajectories --touched-entity {entity} --used-tool "
                        f"{tool} --failed-verifier {verifier} {g}"
                    ),
                    "answer": json.dumps(failed, indent=1),
                }
            )
    return out


def write_report(
    config: Any, done: dict[str, Any], *, queries: list[dict[str, Any]] | None = None
) -> Path:
    """Write `report.md`, `report.json` and the plots into the loop's workdir; returns report.md."""
    work = Path(config.workdir)
    numbers = report_numbers(config, done)
    numbers["queries"] = provenance_queries(config) if queries is None else queries
    plots = _plots(work, numbers, done)
    families = sorted({f for e in numbers["evals"] for f in e["by_family"]})
    hops = sorted({h for e in numbers["evals"] for h in e["by_hops"]}, key=int)
    lines = [
        f"# kag loop `{config.loop_id}`",
        "",
        f"Graph: `{config.graph_url}`. Families: {', '.join(config.families)}; "
        f"{config.rounds} round(s); {config.heldout} held-out tasks per family, "
        "proposed before any training data and never trained on; greedy decoding.",
        "",
        "## Held-out accept rate per stage",
        "",
        "| stage | eval run | "
        + " | ".join(families)
        + " | "
        + " | ".join(f"{h}-hop" for h in hops)
        + " | all |",
        "|---|---|" + "---|" * (len(families) + len(hops) + 1),
    ]
    for e in numbers["evals"]:
        cells = [_fmt(e["by_family"].get(f, {}).get("accept_rate")) for f in families]
        cells += [_fmt(e["by_hops"].get(h, {}).get("accept_rate")) for h in hops]
        lines.append(
            f"| {e['label']} | `{e['run_id']}` | "
            + " | ".join(cells)
            + f" | {_fmt(e['accept_rate'])} |"
        )
    if "accept_rate" in plots:
        lines += ["", f"![accept rate per stage]({plots['accept_rate']})"]
    lines += ["", "## Training curves", ""]
    for key, text in (("loss", "SFT and OPD loss"), ("reward", "GRPO mean reward")):
        if key in plots:
            lines.append(f"![{text}]({plots[key]})")
    if not plots:
        lines.append("(matplotlib is not installed: no plots)")
    lines += ["", "## Coverage of the graph by accepted tasks", ""]
    lines += [
        "| after stage | accepted tasks | entities covered | entity coverage | relation types covered |"
    ]
    lines += ["|---|---|---|---|---|"]
    for stage, c in numbers["coverage"].items():
        lines.append(
            f"| {stage} | {c['accepted_tasks']} | {c['entities_covered']} | "
            f"{c['entity_coverage']:.3f} | {c['relation_types_covered']} |"
        )
    lines += ["", "## Throughput of every stage", ""]
    lines += ["| stage | wall s | work | per s |", "|---|---|---|---|"]
    for s in numbers["stages"]:
        work_done = f"{s.get('steps') or s.get('trajectories')} {s['unit']}" if "unit" in s else "-"
        per_s = "-" if s.get("per_s") is None else f"{s['per_s']:.3f}"
        lines.append(f"| {s['stage']} | {s['wall_s']:.1f} | {work_done} | {per_s} |")
    if numbers["queries"]:
        lines += ["", "## Provenance queries", ""]
        for q in numbers["queries"]:
            lines += [
                f"**{q['question']}**",
                "",
                f"`{q['command']}`",
                "",
                "```",
                q["answer"],
                "```",
                "",
            ]
    path = work / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (work / "report.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    return path
