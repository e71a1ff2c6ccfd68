"""`kag demo`: the whole loop on the embedded default, with the tiny model, in one command.

Part of the command-line layer (it drives every package through its own `kag` command):

| stage       | command                                                        |
|-------------|----------------------------------------------------------------|
| curate      | `kag generate world` into `WORKDIR/kag.db`                     |
| model       | `kag model tiny WORKDIR/model`                                 |
| self-play   | `kag selfplay run` with the oracle, then the tiny model (vLLM) |
| export      | `kag export sft` and `kag export rl`                           |
| train       | `kag train sft` on the exported dataset                        |

Each stage prints what it did; `kag stats` closes the demo.
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
    parser.add_argument("--size", type=int, default=400, help="entities in the synthetic world")
    parser.add_argument("--tasks", type=int, default=24, help="tasks per self-play run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete the workdir first")
    args = parser.parse_args(argv)

    work: Path = args.workdir
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    graph = f"sqlite:///{(work / 'kag.db').resolve()}"
    g = ["--graph", graph]
    model = work / "model"
    seed = str(args.seed)

    _stage("schema", ["db", "upgrade", *g])
    _stage("curate", ["generate", "world", "--seed", seed, "--size", str(args.size), "--merge", *g])
    if not (model / "config.json").exists():
        _stage("model", ["model", "tiny", str(model), "--seed", seed])
    _stage(
        "self-play (oracle)",
        [
            "selfplay",
            "run",
            "--engine",
            "oracle",
            "--tasks",
            str(args.tasks),
            "--hops",
            "2-3",
            "--run-id",
            "demo-oracle",
            "--seed",
            seed,
            *g,
        ],
    )
    _stage(
        "self-play (tiny model on vLLM)",
        [
            "selfplay",
            "run",
            "--engine",
            "vllm",
            "--model",
            str(model),
            "--tasks",
            str(max(4, args.tasks // 3)),
            "--samples",
            "2",
            "--hops",
            "2",
            "--run-id",
            "demo-vllm",
            "--seed",
            seed,
            *g,
        ],
    )
    sft_dir, rl_dir = work / "datasets" / "sft", work / "datasets" / "rl"
    _stage("export sft", ["export", "sft", str(sft_dir), "--overwrite", *g])
    _stage("export rl", ["export", "rl", str(rl_dir), "--overwrite", *g])
    _stage(
        "train sft",
        [
            "train",
            "sft",
            "--data",
            str(sft_dir),
            "--model",
            str(model),
            "--out",
            str(work / "sft-model"),
            "--max-seq-len",
            "4096",
            "--learning-rate",
            "1e-3",
            "--num-epochs",
            "2",
        ],
    )
    _stage("stats", ["stats", "--coverage", *g])
    print(f"\nkag demo: everything is in {work.resolve()}")
    return 0
