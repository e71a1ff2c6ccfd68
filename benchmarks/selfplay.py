"""Self-play agent loop throughput on the tiny model: batched multi-turn loop vs raw vLLM and vs one-at-a-time.

| metric                                | value                                         | baseline                                      |
|---------------------------------------|-----------------------------------------------|-----------------------------------------------|
| `selfplay_tokens_per_s_vs_raw_vllm`   | generated tokens/s of `Solver` over 64 3-hop  | one batched `engine.generate` call producing  |
|                                       | trajectories (all in flight, tools between    | the same number of tokens from the same 64     |
|                                       | turns, parsing, context checks)               | first-turn prompts                            |
| `selfplay_tokens_per_s_vs_sequential` | the same                                      | the same loop run one trajectory at a time    |

Everything runs in one process on one `VLLMEngine` (the tiny random Qwen3-MoE, built locally), on
tasks proposed from a synthetic world in a temporary SQLite graph. The random model writes
garbage, so each trajectory runs every turn the budget allows (reminders, then the final "answer
now" turn): the loop is exercised over `--max-turns + 1` engine calls. The sequential baseline
runs `--sequential` trajectories (tokens/s is a rate, so a sample suffices).

    python benchmarks/selfplay.py [--trajectories 64] [--hops 3] [--max-turns 2] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _result(metric: str, value: float, baseline: str, baseline_value: float, **extra) -> dict:
    return {
        "metric": metric,
        "value": round(value, 2),
        "unit": "tokens/s",
        "baseline": baseline,
        "baseline_value": round(baseline_value, 2),
        "ratio": round(value / baseline_value, 3) if baseline_value else None,
        **extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument("--hops", type=int, default=3)
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--sequential", type=int, default=4, help="trajectories in the baseline")
    parser.add_argument("--world-size", type=int, default=600)
    args = parser.parse_args()

    import kag
    from kag.world import generate_world, write_world
    from selfplay.engines.base import SamplingConfig
    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig
    from selfplay.graph_tools import default_registry
    from selfplay.proposer import Proposer
    from selfplay.solver import EnginePolicy, Solver, SolverConfig
    from trainer.models import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="kag-bench-selfplay-"))
    model_dir = build_tiny_model(work / "tiny")
    graph = kag.open(f"sqlite:///{work / 'kag.db'}")
    write_world(graph, *generate_world(seed=0, size=args.world_size))
    tasks = Proposer(graph).propose(args.trajectories, hops=args.hops, seed=0).tasks
    if len(tasks) < args.trajectories:
        raise SystemExit(f"the world gave only {len(tasks)} {args.hops}-hop tasks")
    registry = default_registry(graph, sandbox=None)
    config = SolverConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        max_context_tokens=4096,
        seed=0,
    )
    engine = VLLMEngine(
        model_dir,
        config=VLLMEngineConfig(
            max_model_len=4096,
            kv_cache_gib=1.0,
            max_num_seqs=256,
            # seeded requests whose prefill is split crash vLLM's CPU sampler (the CPU torch
            # generator has no offset to rewind): prefill every prompt whole
            engine_kwargs={"enable_chunked_prefill": False, "max_num_batched_tokens": 16384},
        ),
    )
    try:
        policy = EnginePolicy(engine)
        solver = Solver(policy, registry, config=config)
        # warm-up: the first requests pay for lazy initialisation
        solver.solve(tasks[:2], run_id="warmup")

        started = time.perf_counter()
        rollouts = solver.solve(tasks, run_id="batched")
        loop_s = time.perf_counter() - started
        loop_tokens = sum(r.n_generated for r in rollouts)
        loop_rate = loop_tokens / loop_s
        turns = sum(r.n_turns for r in rollouts)

        # raw vLLM: one batched call over the same first-turn prompts, same number of tokens
        per_prompt = max(1, round(loop_tokens / len(tasks)))
        prompts = [solver.start(t, run_id="raw").messages for t in tasks]
        # one seed per prompt, as the loop samples every trajectory with its own seed
        sampling = [SamplingConfig(max_tokens=per_prompt, seed=k) for k in range(len(tasks))]
        started = time.perf_counter()
        raw = engine.chat(prompts, tools=registry.specs(), sampling=sampling)
        raw_s = time.perf_counter() - started
        raw_tokens = sum(len(c[0].token_ids) for c in raw)
        raw_rate = raw_tokens / raw_s

        # one trajectory at a time, through the same loop
        started = time.perf_counter()
        seq_tokens = 0
        for task in tasks[: args.sequential]:
            seq_tokens += sum(r.n_generated for r in solver.solve([task], run_id="sequential"))
        seq_s = time.perf_counter() - started
        seq_rate = seq_tokens / seq_s
    finally:
        engine.close()
        graph.close()

    common = {
        "trajectories": len(tasks),
        "hops": args.hops,
        "turns": turns,
        "loop_tokens": loop_tokens,
        "loop_seconds": round(loop_s, 3),
    }
    results = [
        _result(
            "selfplay_tokens_per_s_vs_raw_vllm",
            loop_rate,
            "vllm_raw_batched_generation",
            raw_rate,
            raw_tokens=raw_tokens,
            raw_seconds=round(raw_s, 3),
            **common,
        ),
        _result(
            "selfplay_tokens_per_s_vs_sequential",
            loop_rate,
            "one_trajectory_at_a_time",
            seq_rate,
            sequential_trajectories=args.sequential,
            sequential_tokens=seq_tokens,
            sequential_seconds=round(seq_s, 3),
            **common,
        ),
    ]
    for r in results:
        print("RESULT " + json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
