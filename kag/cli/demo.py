"""`kag demo`: `kag loop` at tiny scale on the embedded default, visibly, with its report.

The same stages as `kag loop` (curate, held-out tasks, oracle demonstrations, SFT, one GRPO
teacher per family, OPD, evaluation of every model, self-play with the student, a second round),
sized to finish in about 15 minutes on 2 CPU cores. Everything goes to `--workdir` (default
`demo/`): the graph `kag.db`, datasets, models, run directories and `report.md` with its plots.
Rerun the same command to resume a demo that was stopped; `--fresh` starts over.

>>> DEMO_DEFAULTS["rounds"]
2
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["DEMO_DEFAULTS", "main"]

#: `kag loop` settings of the demo (each can still be given on the command line)
DEMO_DEFAULTS = {
    "workdir": Path("demo"),
    "loop_id": "demo",
    "rounds": 2,
    "world_size": 400,
    "heldout": 16,
    # about 1,700 SFT steps in round 0 (benchmarks/learning.py reaches 11/32 after 3,044)
    "demos": 1600,
    "sft_epochs": 3,
    "grpo_steps": 4,
    "grpo_samples": 4,
    "grpo_groups": 4,
    "opd_steps": 4,
    "student_tasks": 32,
}


def main(argv: list[str]) -> int:
    """`kag demo [--workdir DIR] [--fresh] [any kag loop option]`."""
    from kag.cli.loop import loop_parser, run_loop

    parser = loop_parser(prog="kag demo")
    parser.description = __doc__.splitlines()[0]
    parser.set_defaults(**DEMO_DEFAULTS)
    parser.add_argument("--fresh", action="store_true", help="delete the workdir first")
    args = parser.parse_args(argv)
    work: Path = args.workdir
    if args.fresh and work.exists():
        shutil.rmtree(work)
    return run_loop(args)
