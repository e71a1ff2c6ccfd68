"""Command-line handlers of the `selfplay` package (dispatched from `kag/cli.py`).

| command                        | handler              |
|--------------------------------|----------------------|
| `kag import tools FILE...`     | `import_tools_main`  |
| `kag import tasks FILE...`     | `import_tasks_main`  |
| `kag selfplay run ...`         | `main`               |
| `kag eval ...`                 | `eval_main`          |
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kag.cli import add_graph_argument
from selfplay.tooldefs import import_tools

if TYPE_CHECKING:
    from selfplay.config import JudgeConfig

__all__ = ["eval_main", "import_tasks_main", "import_tools", "import_tools_main", "main"]


def import_tools_main(argv: list[str]) -> int:
    """`kag import tools FILE... [--graph URL] [--version V] [--domain D] [--on-conflict ...] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="kag import tools",
        description=(
            "Import OpenAI- or BFCL-style function definitions (JSON or JSON Lines) as Tool nodes. "
            "All files are checked before anything is written."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="definition files")
    add_graph_argument(parser)
    parser.add_argument(
        "--version", default="1", help="version of tools that do not give one (default 1)"
    )
    parser.add_argument("--domain", default="", help="domain to record on every tool")
    parser.add_argument(
        "--on-conflict",
        choices=("version", "first", "error"),
        default="version",
        help=(
            "a name defined differently twice: give later definitions a content-hash version "
            "(default), keep the first, or fail"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import kag

    with kag.open(args.graph) as graph:
        report = import_tools(
            graph.store,
            args.files,
            version=args.version,
            domain=args.domain,
            on_conflict=args.on_conflict,
        )
        url = graph.url
    summary = {
        "graph": url,
        "files": report.files,
        "definitions": report.definitions,
        "tools": report.tools,
        "duplicates": report.duplicates,
        "conflicts": report.conflicts,
    }
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"{url}: imported {report.tools} tools from {report.definitions} definitions in "
            f"{report.files} file(s) ({report.duplicates} duplicates, {report.conflicts} conflicts)"
        )
    return 0


def import_tasks_main(argv: list[str]) -> int:
    """`kag import tasks FILE... [--family F] [--format F] [--hops N] [--domain D] [--run-id ID]
    [--answers FILE]... [--graph URL] [--json]`."""
    from kag.schema import TASK_FAMILIES
    from kag.taskfiles import TASK_FORMATS

    parser = argparse.ArgumentParser(
        prog="kag import tasks",
        description=(
            "Import user task sets (JSON Lines, CSV, Parquet, or MetaQA's question<TAB>answers "
            "lines) as tasks with SUPPORTS, CHECKED_BY and PRODUCED_BY edges to an import "
            "run. Every row of every file is checked before anything is written; topics that "
            "name no entity of the graph are counted, not imported. BFCL function-calling "
            "sets (--format bfcl, or found by their first line) import as tool_use tasks "
            "with their functions as tools."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="task files")
    add_graph_argument(parser)
    parser.add_argument(
        "--family", choices=TASK_FAMILIES, help="family of rows that give none (default search)"
    )
    parser.add_argument(
        "--format", choices=TASK_FORMATS, help="file format (default: by extension and content)"
    )
    parser.add_argument(
        "--hops",
        type=int,
        help="hop count of rows that give none (default: the path's, or an N-hop directory's)",
    )
    parser.add_argument(
        "--domain", default="", help="domain of rows that give none (default: the topic's)"
    )
    parser.add_argument(
        "--run-id", default=None, help="id of the import run (default: from the files' contents)"
    )
    parser.add_argument(
        "--answers",
        action="append",
        metavar="FILE",
        help="BFCL possible-answer file, once per task file in order (default: the file of the "
        "same name in possible_answer/ beside each)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import kag
    from selfplay.taskimport import import_tasks

    with kag.open(args.graph) as graph:
        report = import_tasks(
            graph.store,
            args.files,
            family=args.family,
            format=args.format,
            hops=args.hops,
            domain=args.domain,
            run_id=args.run_id,
            answers=args.answers,
        )
        url = graph.url
    if args.json:
        out = {"graph": url, **report.to_dict(task_ids=False), "seconds": round(report.seconds, 3)}
        print(json.dumps(out, sort_keys=True))
        return 0
    print(
        f"{url}: {report.lines} lines read from {len(report.files)} file(s): "
        f"{report.imported} tasks imported ({report.new} new, {report.updated} updated), "
        f"{report.unresolved} unresolved, {report.shortcut} shortcuts, "
        f"{report.duplicates} duplicates; run {report.run_id} in {report.seconds:.1f} s"
    )
    if report.tools:
        print(
            f"{report.tools} tools; {report.unsatisfiable} rows unsatisfiable by their answer "
            f"key, {report.schema_conflicts} whose answer key breaks their tools' schemas "
            "(neither imported)"
        )
    if report.unresolved_examples:
        print(
            f"kag import tasks: {report.unresolved} line(s) name no entity of the graph, e.g. "
            + ", ".join(repr(m) for m in report.unresolved_examples[:5]),
            file=sys.stderr,
        )
    return 0


def _hops_range(text: str) -> tuple[int, int]:
    """`"2-4"` -> (2, 4); `"3"` -> (3, 3)."""
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hops must be N or MIN-MAX, got {text!r}") from None
    if not 1 <= a <= b:
        raise argparse.ArgumentTypeError(f"--hops needs 1 <= MIN <= MAX, got {text!r}")
    return a, b


def _add_judge_arguments(p: argparse.ArgumentParser) -> None:
    """`--judge policy|MODEL [--judge-base-url URL] [--judge-required] [--judge-constrained]`."""
    p.add_argument(
        "--judge",
        default=None,
        metavar="policy|MODEL",
        help="add the LLM judge (llm_judge@1): 'policy' runs it on the policy's engine, a model "
        "directory on an in-process vLLM engine of its own, a served model name with "
        "--judge-base-url on that server; a reply without a VERDICT line is recorded as undecided",
    )
    p.add_argument(
        "--judge-base-url", default=None, help="OpenAI-compatible server of the --judge model"
    )
    p.add_argument(
        "--judge-required",
        action="store_true",
        help="accept a trajectory only when the judge says CORRECT (default: the verdict is "
        "recorded and decides nothing)",
    )
    p.add_argument(
        "--judge-constrained",
        action="store_true",
        help="constrain the judge's decoding to a reasoning line and the VERDICT line (vLLM "
        "structured outputs), so every verdict parses",
    )


def _judge_of(args: argparse.Namespace) -> JudgeConfig | None:
    """The `JudgeConfig` the judge arguments ask for (None without `--judge`), checked."""
    from kag.cli import UserError
    from selfplay.config import JudgeConfig

    if args.judge is None and (
        args.judge_base_url or args.judge_required or args.judge_constrained
    ):
        raise UserError(
            "--judge-base-url, --judge-required and --judge-constrained need --judge policy|MODEL"
        )
    if args.judge == "policy" and args.engine == "oracle":
        raise UserError(
            "--judge policy runs on the policy's engine and the oracle has none: give --judge "
            "a model directory (or a served name with --judge-base-url)"
        )
    if args.judge == "policy" and args.judge_base_url:
        raise UserError("--judge-base-url needs --judge NAME, the model the server serves")
    local_judge = args.judge not in (None, "policy") and not args.judge_base_url
    if local_judge and not os.path.isdir(args.judge):
        raise UserError(
            f"--judge {args.judge}: no such model directory (or give --judge-base-url URL "
            "for a served model)"
        )
    judge = None
    if args.judge is not None:
        judge = JudgeConfig(
            model=args.judge,
            base_url=args.judge_base_url,
            required=args.judge_required,
            constrained=args.judge_constrained,
        )
    return judge


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (file descriptor 1) to stderr, child processes included.

    vLLM logs to stdout, from this process and from the engine processes it spawns: redirecting
    the descriptor (not just `sys.stdout`) keeps stdout for the command's own output.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _budgets(args: argparse.Namespace) -> dict[str, Any]:
    """Each family's protocol, unless the command gave a budget for every task."""
    from selfplay.families import FAMILY_PROTOCOLS

    if args.max_turns is None and args.max_new_tokens is None:
        return dict(FAMILY_PROTOCOLS)
    return {}


def main(argv: list[str]) -> int:
    """`kag selfplay run --engine vllm|openai|oracle [--model DIR] [--base-url URL] [--tasks N]
    [--samples K] [--hops 2-4] [--run-id ID] [--seed S] [--workers N] [--graph URL] [--no-grow]
    [--rewrite-questions] [--directions out|both] [--shape chain|set|obfuscated] [--judge policy|MODEL [--judge-base-url URL] [--judge-required]
    [--judge-constrained]]`."""
    parser = argparse.ArgumentParser(
        prog="kag selfplay",
        description="Self-play: propose tasks from graph walks, solve them with tools, verify, "
        "and write every trajectory back into the graph. Rerun with the same --run-id to resume.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("run", help="run or resume a self-play run")
    add_graph_argument(p)
    p.add_argument("--engine", choices=("vllm", "openai", "oracle"), required=True)
    p.add_argument("--model", default=None, help="model directory (vllm) or served name (openai)")
    p.add_argument(
        "--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
    )
    p.add_argument("--tasks", type=int, default=16, help="tasks in the run (default 16)")
    p.add_argument("--samples", type=int, default=1, help="trajectories per task (default 1)")
    p.add_argument(
        "--hops", type=_hops_range, default=(2, 2), help="hop count or curriculum range, e.g. 2-4"
    )
    p.add_argument(
        "--promote-at", type=float, default=0.6, help="accept rate that moves the curriculum up"
    )
    p.add_argument("--run-id", default=None, help="run id; reuse it to resume a run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="Ray workers (0: run in this process)")
    p.add_argument("--tasks-per-round", type=int, default=32)
    p.add_argument(
        "--max-turns",
        type=int,
        default=None,
        help="turns before the final answer-now turn (default: each family's protocol; "
        "given, it holds for every task)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="new tokens per turn (default: each family's protocol; given, for every task)",
    )
    p.add_argument("--max-context-tokens", type=int, default=4096)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--dtype",
        default=None,
        help="weights dtype of the vllm engine (default: the dtype the model was saved in)",
    )
    p.add_argument("--no-coverage", action="store_true", help="sample start entities uniformly")
    p.add_argument(
        "--family",
        action="append",
        default=[],
        choices=("search", "instruction", "compute", "tool_use"),
        help="task family to propose (repeatable; default search): the round's tasks are "
        "shared out over them (tool_use: multi-turn edits of a scratch copy of a subgraph)",
    )
    p.add_argument(
        "--python-tool", action="store_true", help="also offer the sandboxed python tool"
    )
    p.add_argument(
        "--no-grow",
        action="store_true",
        help="do not add accepted trajectories' derived facts to the graph (compute tasks); "
        "for held-out tasks, whose facts would show their answers to later searches",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--rewrite-questions",
        action="store_true",
        help="ask the policy's engine to rewrite each templated question in fluent English; a "
        "rewrite that drops the quoted start name, names an answer or runs long is refused "
        "and the template stays (needs --engine vllm or openai)",
    )
    p.add_argument(
        "--directions",
        choices=("out", "both"),
        default="out",
        help="walk relations from source to target only (default), or both ways, inverse steps "
        'making questions such as "the genre of a film directed by X"',
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        choices=("chain", "set", "obfuscated"),
        help="search task shape (repeatable; default chain): chain (a walk), set (two "
        "constraints intersected: films directed by X of genre Y) or obfuscated (the start "
        "described by its relations, not named)",
    )
    _add_judge_arguments(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)

    from kag.cli import UserError
    from selfplay.config import CurriculumConfig, SelfPlayConfig
    from selfplay.proposer import ProposerConfig
    from selfplay.runner import run
    from selfplay.solver import SolverConfig

    if args.engine == "vllm" and not args.model:
        raise UserError("--engine vllm needs --model DIR (build one with `kag model tiny DIR`)")
    if args.engine == "openai" and not (args.base_url and args.model):
        raise UserError("--engine openai needs --base-url URL and --model NAME")
    if args.rewrite_questions and args.engine == "oracle":
        raise UserError("--rewrite-questions needs a model engine: --engine vllm or openai")
    judge = _judge_of(args)
    config = SelfPlayConfig(
        run_id=args.run_id,
        tasks=args.tasks,
        samples=args.samples,
        seed=args.seed,
        engine=args.engine,
        model=args.model,
        base_url=args.base_url,
        dtype=args.dtype,
        tasks_per_round=args.tasks_per_round,
        coverage=not args.no_coverage,
        workers=args.workers,
        families=tuple(args.family) or ("search",),
        python_tool=args.python_tool,
        grow=not args.no_grow,
        progress=not args.no_progress,
        judge=judge,
        proposer=ProposerConfig(
            rewrite=args.rewrite_questions,
            directions=args.directions,
            shapes=tuple(args.shape) or ("chain",),
        ),
        solver=SolverConfig(
            max_turns=args.max_turns or 8,
            max_new_tokens=args.max_new_tokens or 256,
            budgets=_budgets(args),
            max_context_tokens=args.max_context_tokens,
            temperature=args.temperature,
            seed=args.seed,
        ),
        curriculum=CurriculumConfig(
            min_hops=args.hops[0], max_hops=args.hops[1], promote_at=args.promote_at
        ),
    )
    # a server at --base-url that cannot be reached raises ConnectionError: the root prints it in
    # one line and exits 1 (a failure), as for an unreachable Neo4j
    with _stdout_to_stderr():
        summary = run(args.graph, config=config)
    if args.engine == "vllm":  # a local checkpoint: link the self-play Run to its Model
        import kag
        from kag.lineage import link_run_to_model

        with kag.open(args.graph) as graph:
            link_run_to_model(graph.store, run_id=summary.run_id, path=args.model)
    if args.json:
        print(json.dumps(summary.to_dict(), sort_keys=True))
    else:
        print(summary.render())
    return 0


def _hops_list(text: str) -> tuple[int, ...]:
    """`"2"` -> (2,); `"2,3"` -> (2, 3); `"2-4"` -> (2, 3, 4)."""
    hops: list[int] = []
    for part in text.split(","):
        lo, hi = _hops_range(part.strip())
        hops.extend(range(lo, hi + 1))
    return tuple(dict.fromkeys(hops))


def eval_main(argv: list[str]) -> int:
    """`kag eval --model DIR [--engine vllm|openai|oracle] [--tasks SELECTION] [--limit N]
    [--samples K] [--json] [--graph URL] ...`."""
    from selfplay.evaluation import DEFAULT_FRESH_TASKS

    parser = argparse.ArgumentParser(
        prog="kag eval",
        description=(
            "Evaluate a model on held-out tasks: greedy accept rate, pass@k, mean reward, turns "
            "and tokens per family, hops and domain. Writes a Run of kind 'eval' with its "
            "trajectories; the same command again resumes it (or just reports)."
        ),
    )
    add_graph_argument(parser)
    parser.add_argument(
        "--model", default=None, help="model directory (vllm) or served model name (openai)"
    )
    parser.add_argument("--engine", choices=("vllm", "openai", "oracle"), default="vllm")
    parser.add_argument(
        "--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
    )
    parser.add_argument(
        "--tasks",
        default=None,
        metavar="SELECTION",
        help=(
            "fresh (default: new tasks proposed from the graph, in no exported dataset), "
            "dataset:DIR[:SPLIT], run:RUN_ID, family=F,hops=H,domain=D, or a task file"
        ),
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help=f"at most N tasks of the selection (fresh: how many to propose, default "
        f"{DEFAULT_FRESH_TASKS})",
    )
    parser.add_argument(
        "--hops", type=_hops_list, default=(2,), help="hop counts of fresh tasks, e.g. 2 or 2,3"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=1,
        help="k of pass@k: 1 = greedy only (default); k > 1 adds k sampled trajectories",
    )
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="temperature of the sampled trajectories"
    )
    parser.add_argument(
        "--max-turns",
        type=int,
        default=None,
        help="turns before the final answer-now turn (default: each family's protocol; "
        "given, it holds for every task)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="new tokens per turn (default: each family's protocol; given, for every task)",
    )
    parser.add_argument("--max-context-tokens", type=int, default=4096)
    parser.add_argument(
        "--dtype",
        default=None,
        help="weights dtype of the vllm engine (default: the dtype the model was saved in)",
    )
    parser.add_argument(
        "--python-tool", action="store_true", help="also offer the sandboxed python tool"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-id", default=None, help="eval run id (default: derived, resumable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_judge_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)

    from kag.cli import UserError
    from selfplay.evaluation import EvalConfig, evaluate

    if args.engine == "vllm" and not args.model:
        raise UserError("--engine vllm needs --model DIR (build one with `kag model tiny DIR`)")
    if args.engine == "openai" and not (args.base_url and args.model):
        raise UserError("--engine openai needs --base-url URL and --model NAME")
    config = EvalConfig(
        model=args.model,
        engine=args.engine,
        base_url=args.base_url,
        dtype=args.dtype,
        tasks=args.tasks,
        limit=args.limit,
        hops=args.hops,
        samples=args.samples,
        temperature=args.temperature,
        max_turns=args.max_turns or 8,
        max_new_tokens=args.max_new_tokens or 256,
        budgets=_budgets(args),
        max_context_tokens=args.max_context_tokens,
        python_tool=args.python_tool,
        seed=args.seed,
        run_id=args.run_id,
        progress=not args.no_progress,
        judge=_judge_of(args),
    )
    with _stdout_to_stderr():
        report = evaluate(args.graph, config=config)
    if args.engine == "vllm":  # a local checkpoint: link the eval Run to its Model (USED_MODEL)
        import kag
        from kag.lineage import link_run_to_model

        with kag.open(args.graph) as graph:
            link_run_to_model(graph.store, run_id=report.run_id, path=args.model)
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    else:
        print(report.render())
    return 0
