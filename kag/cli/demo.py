"""`kag demo`: the whole loop on the embedded default, with the tiny model, in one command.

Part of the command-line layer (it drives every package through its own `kag` command):

| stage       | command                                                        |
|-------------|----------------------------------------------------------------|
| curate      | `kag generate world` into `WORKDIR/kag.db`                           |
| self-play   | `kag selfplay run --engine oracle`: verified demonstrations           |
| export      | `kag export sft`                                                      |
| model       | `kag model tiny --graph --corpus`: tokenizer trained on graph + data  |
| self-play   | the untrained model on vLLM, greedy, on fresh 2-hop tasks            |
| train       | `kag train sft` on the exported dataset                               |
| self-play   | the trained model on vLLM, greedy, on other fresh tasks: accept rate  |
| export      | `kag export rl`                                                       |

Each stage prints what it did (the self-play summaries give the accept rates before and after
training); `kag stats` closes the demo.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from kag.cli import main as kag_main

__all__ = ["main"]


def _stage(title: str, argv: list[str]) -> None:
    print(f"\n== {title}: kag {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    rc = kag_main(argv)
    if rc != 0:  # the stage printed why; its exit code says whose fault it was (2 or 1)
        print(f"kag demo: stage {title!r} failed with exit code {rc}", file=sys.stderr)
        raise SystemExit(rc)
    print(f"== {title}: done in {time.perf_counter() - start:.1f} s", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kag demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path("demo"), help="where everything goes (default: demo/)"
    )
    parser.add_argument("--size", type=int, default=800, help="entities in the synthetic world")
    parser.add_argument(
        "--demos",
        type=int,
        default=3000,
        # the 800-entity world holds about 3,400 2-hop tasks: leave fresh ones for the two
        # evaluation runs (a run proposes only tasks the graph does not hold yet)
        help="oracle demonstrations to train on (default 3000)",
    )
    parser.add_argument(
        "--tasks", type=int, default=32, help="fresh tasks the model is run on (default 32)"
    )
    parser.add_argument("--epochs", type=int, default=4, help="SFT epochs (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete the workdir first")
    args = parser.parse_args(argv)

    work: Path = args.workdir
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    graph = f"sqlite:///{(work / 'kag.db').resolve()}"
    g = ["--graph", graph]
    model, trained = work / "model", work / "sft" / "model"
    seed = str(args.seed)
    sft_dir, rl_dir = work / "datasets" / "sft", work / "datasets" / "rl"

    def selfplay(title: str, run_id: str, engine: list[str], tasks: int) -> None:
        _stage(
            title,
            ["selfplay", "run", *engine, "--tasks", str(tasks), "--hops", "2", "--run-id", run_id]
            + ["--seed", seed, "--no-progress", *g],
        )

    _stage("schema", ["db", "upgrade", *g])
    _stage("curate", ["generate", "world", "--seed", seed, "--size", str(args.size), "--merge", *g])
    selfplay("self-play (oracle demonstrations)", "demo-oracle", ["--engine", "oracle"], args.demos)
    _stage("export sft", ["export", "sft", str(sft_dir), "--overwrite", *g])
    if not (model / "config.json").exists():
        # the tokenizer learns the graph's text, and each entity name, id and relation name
        # becomes one token, so the tiny model copies them between question, calls and answers
        _stage(
            "model",
            ["model", "tiny", str(model), "--seed", seed, *g, "--corpus", str(sft_dir)],
        )
    greedy = ["--engine", "vllm", "--temperature", "0", "--max-turns", "6"]
    selfplay(
        "self-play (untrained model on vLLM)",
        "demo-untrained",
        [*greedy, "--model", str(model)],
        args.tasks,
    )
    _stage(
        "train sft",
        ["train", "sft", "--data", str(sft_dir), "--model", str(model), "--out", str(work / "sft")]
        + ["--max-seq-len", "1024", "--micro-batch-rows", "4", "--learning-rate", "3e-3"]
        + ["--num-epochs", str(args.epochs), "--weight-decay", "0", "--log-every-steps", "25"],
    )
    selfplay(
        "self-play (trained model on vLLM, fresh tasks)",
        "demo-sft",
        [*greedy, "--model", str(trained)],
        args.tasks,
    )
    _stage("export rl", ["export", "rl", str(rl_dir), "--overwrite", *g])
    _stage("stats", ["stats", "--coverage", *g])
    print(f"\nkag demo: everything is in {work.resolve()}")
    return 0
