"""Does GRPO make a better agent than the SFT checkpoint it starts from? Greedy held-out accept rate.

Stage two of the recipe on the tiny setup, from the workdir `benchmarks/learning.py` leaves (its
world, its held-out tasks under Run `heldout`, its oracle demonstrations under Run
`oracle-demos` and its SFT model), every stage a `kag` command a user would run:

1. `kag eval --tasks run:heldout`: the SFT model greedily on the held-out tasks (before), plus
   `--samples` sampled trajectories per task, whose pass@k says how many of the failures lie in
   the model's own sampling support (RL sharpens what the model can sample, it rarely adds more);
2. `kag eval --tasks run:oracle-demos`: the SFT model greedily on its own training tasks, which
   are disjoint from the held-out ones by construction;
3. `kag export rl --include-eval --verdict rejected`: the training tasks it fails, as prompts
   (`--prompts all`: every training task; dynamic sampling then drops the groups it always
   solves);
4. `kag train grpo` on those prompts (K rollouts each through the solver, tools and verifiers on
   the in-process vLLM engine, weights synced in place after every step);
5. `kag eval --tasks run:heldout` with the GRPO model (after): the same tasks, engine and turns.

Prints `RESULT {"metric": "grpo_heldout_gain_points", ...}`: after minus before, in points, with
the SFT model's rate as the baseline. The issue's bar is +10 points.

    python benchmarks/learning.py --workdir W
    python benchmarks/grpo_learning.py --workdir W [--steps 45]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: held-out tasks and training demonstrations as benchmarks/learning.py names them
HELDOUT_RUN = "heldout"
DEMOS_RUN = "oracle-demos"


def _kag(argv: list[str], *, json_out: bool = False) -> dict:
    """One `kag` command in a process of its own (each vLLM engine's memory goes with it).

    With `json_out`, the command runs with `--json` and its report (the last stdout line) is
    returned; otherwise an empty dict.
    """
    cmd = [sys.executable, "-c", "from kag.cli import main; raise SystemExit(main())", *argv]
    cmd += ["--json"] if json_out else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if json_out else None, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"grpo_learning: `kag {' '.join(argv)}` failed ({proc.returncode})")
    print(
        f"grpo_learning: kag {argv[0]} {argv[1]} ... {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    if not json_out:
        return {}
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"grpo_learning: `kag {' '.join(argv)} --json` printed no report")
    return json.loads(lines[-1])


def _heldout(graph: list[str], model: Path, run_id: str, args: argparse.Namespace) -> dict:
    report = _kag(
        ["eval", *graph, "--model", str(model), "--tasks", f"run:{HELDOUT_RUN}"]
        + ["--samples", str(args.eval_samples), "--temperature", str(args.eval_temperature)]
        + ["--max-turns", str(args.max_turns), "--run-id", run_id, "--no-progress"],
        json_out=True,
    )
    return {
        "greedy_accepted": report["greedy_accepted"],
        "tasks": report["tasks"],
        "greedy_accept_rate": report["greedy_accepted"] / report["tasks"],
        f"pass@{args.eval_samples}": report["pass_at_k"][str(args.eval_samples)],
        "sampled_accept_rate": report["pass_at_k"]["1"],
        "malformed_rate": report["malformed_rate"],
    }


def main(argv: list[str] | None = None) -> int:
    from trainer.grpo import REWARD_BASES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="benchmarks/learning.py's")
    parser.add_argument("--model", type=Path, default=None, help="default: WORKDIR/sft-run/model")
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--samples", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--groups-per-step", type=int, default=8)
    # measured on the learning world: 1e-4 leaves greedy unmoved in 40 steps, 1e-3 collapses it
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--kl-coef", type=float, default=0.0)
    parser.add_argument(
        "--mini-batches",
        type=int,
        default=1,
        help="`kag train grpo --mini-batches`: optimizer steps per batch of rollouts",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.6,
        help="of the GRPO rollouts (measured: 0.6 moves the greedy rate, 1.0 mostly pass@k)",
    )
    parser.add_argument(
        "--reward-base",
        choices=REWARD_BASES,
        default="verifier",
        help="`kag train grpo --reward-base`: graded verifier reward or 1/0 by the verdict",
    )
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--eval-samples", type=int, default=16, help="k of the held-out pass@k")
    parser.add_argument("--eval-temperature", type=float, default=1.0)
    parser.add_argument(
        "--prompts",
        choices=("failed", "all"),
        default="failed",
        help="training tasks as GRPO prompts: those the SFT model fails greedily, or all",
    )
    parser.add_argument(
        "--probe-limit",
        type=int,
        default=None,
        help="probe only the first N training tasks (by id) for the failed prompts (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="teacher", help="prefix of this run's ids and dirs")
    args = parser.parse_args(argv)

    work = args.workdir.resolve()
    model = (args.model or work / "sft-run" / "model").resolve()
    if not (work / "kag.db").exists() or not (model / "config.json").exists():
        raise SystemExit(
            f"grpo_learning: {work} has no kag.db or {model} no model: run "
            f"`python benchmarks/learning.py --workdir {work}` first"
        )
    graph = ["--graph", f"sqlite:///{work / 'kag.db'}"]
    name, t0 = args.name, time.perf_counter()

    before = _heldout(graph, model, f"{name}-before", args)
    probe = _kag(
        ["eval", *graph, "--model", str(model), "--tasks", f"run:{DEMOS_RUN}"]
        + ["--max-turns", str(args.max_turns), "--run-id", f"{name}-probe", "--no-progress"]
        + ([] if args.probe_limit is None else ["--limit", str(args.probe_limit)]),
        json_out=True,
    )
    rl_dir = work / f"{name}-rl"
    _kag(
        ["export", "rl", str(rl_dir), "--overwrite", *graph, "--run", f"{name}-probe"]
        + ["--include-eval", "--verdict", "rejected" if args.prompts == "failed" else "any"]
        + ["--splits", "train=1.0"]
    )
    # what the export wrote (its filters drop more than the probe's failures alone say)
    rl_prompts = json.loads((rl_dir / "manifest.json").read_text())["counts"]["rows"]
    out = work / f"{name}-grpo"
    grpo = _kag(
        ["train", "grpo", *graph, "--data", str(rl_dir), "--model", str(model), "--out", str(out)]
        + ["--steps", str(args.steps), "--samples", str(args.samples)]
        + ["--groups-per-step", str(args.groups_per_step), "--lr", str(args.lr)]
        + ["--kl-coef", str(args.kl_coef), "--temperature", str(args.temperature)]
        + ["--reward-base", args.reward_base, "--mini-batches", str(args.mini_batches)]
        + ["--max-turns", str(args.max_turns), "--seed", str(args.seed), "--name", name],
        json_out=True,
    )
    after = _heldout(graph, out / "model", f"{name}-after", args)
    gain = 100 * (after["greedy_accept_rate"] - before["greedy_accept_rate"])
    print(
        "RESULT "
        + json.dumps(
            {
                "metric": "grpo_heldout_gain_points",
                "value": round(gain, 1),
                "unit": "points of greedy held-out accept rate, GRPO model minus its SFT start",
                "baseline": "the SFT model GRPO starts from, same held-out tasks, engine, turns",
                "baseline_value": before["greedy_accept_rate"],
                "ratio": after["greedy_accept_rate"] / before["greedy_accept_rate"]
                if before["greedy_accept_rate"]
                else None,
                "before": before,
                "after": after,
                "probe_train_accept_rate": probe["accept_rate"],
                "probe_tasks": probe["tasks"],
                "rl_prompts": rl_prompts,
                "grpo": {
                    "prompts": args.prompts,
                    "steps": args.steps,
                    "samples": args.samples,
                    "groups_per_step": args.groups_per_step,
                    "lr": args.lr,
                    "kl_coef": args.kl_coef,
                    "mini_batches": args.mini_batches,
                    "temperature": args.temperature,
                    "reward_base": args.reward_base,
                    "max_turns": args.max_turns,
                    "summary": grpo,
                },
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
