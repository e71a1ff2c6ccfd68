"""Where a GRPO step's time goes on the tiny setup, against a restart and against raw vLLM.

The path `kag train grpo` takes, in one process on the embedded default:

1. a synthetic world (`kag generate world`), oracle demonstrations of 2-hop tasks (`kag selfplay
   run --engine oracle`), exported as an `rl` dataset (`kag export rl`), and the tiny Qwen3-MoE
   (`kag model tiny`, random weights);
2. `trainer.grpo_train.train_grpo` on those prompts with the in-process `VLLMEngine` configured as
   the command configures it (K rollouts per prompt through the self-play solver, tools and
   verifiers, a Run of kind "train" per step, the new weights pushed in place after each step,
   a checkpoint after each step);
3. in the same process afterwards: the first-turn prompts of every measured step through the
   same engine alone (`engine.generate`, same samples, temperature, log-probs and seeds, as many
   tokens per rollout as the step generated); the rollouts' own engine calls (every turn's
   prompts) replayed back to back; then `VLLMEngine.reload(restart=True)`.

Prints every step's seconds split into rollout, old/reference log-probs (tokenising and the
reference model), training, weight sync and the rest (checkpoint, metrics), then `RESULT` lines:

| metric                             | value                                 | target |
|------------------------------------|---------------------------------------|--------|
| `grpo_useful_time_fraction`        | (rollout + training) / step           | >= 0.75 |
| `grpo_weight_sync_vs_restart`      | engine restart s / in-place sync s    | >= 20  |
| `rollout_tokens_per_s_vs_raw_vllm` | GRPO rollout tokens/s / raw vLLM's    | >= 0.9 |

The raw baseline decodes from the short first-turn prompts; a rollout's later turns decode over
the whole conversation so far, and on CPU vLLM's tokens/s falls as contexts grow. The replayed
turns (`vs_replayed_turns` in the last line) separate that from the loop's own overhead (tools,
parsing, scoring, graph writes, rendering).

The first step pays for vLLM's and torch's lazy initialisation: the figures are over the steps
after it (`--warmup-steps`). The random model's verifier reward is 0 everywhere, so groups would
all be uniform and dropped; the defaults turn on the efficiency and repetition penalties (turns
vary between samples) so that steps train.

    python benchmarks/grpo.py [--steps 4] [--samples 8] [--groups-per-step 4] [--max-turns 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# `python benchmarks/grpo.py` puts benchmarks/ first on sys.path, where benchmarks/selfplay.py
# would shadow the selfplay package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PHASES = ("rollout", "logprobs", "train", "sync", "other")


def _kag(argv: list[str]) -> None:
    from kag.cli import main as kag_main

    rc = kag_main(argv)
    if rc != 0:
        raise SystemExit(f"grpo benchmark: `kag {' '.join(argv)}` failed with exit code {rc}")


def _data(work: Path, args: argparse.Namespace) -> tuple[str, Path, Path]:
    """Graph URL, rl dataset and tiny model directory, built through the CLI."""
    graph = f"sqlite:///{(work / 'kag.db').resolve()}"
    g = ["--graph", graph]
    seed = str(args.seed)
    _kag(["db", "upgrade", *g])
    _kag(["generate", "world", "--seed", seed, "--size", str(args.world_size), *g])
    _kag(
        ["selfplay", "run", "--engine", "oracle", "--tasks", str(args.prompts), "--hops", "2"]
        + ["--run-id", "oracle-demos", "--seed", seed, "--no-progress", *g]
    )
    rl = work / "rl"
    _kag(["export", "rl", str(rl), "--overwrite", *g])
    model = work / "model"
    _kag(["model", "tiny", str(model), "--seed", seed])
    return graph, rl, model


def _row(step: dict[str, Any]) -> dict[str, float]:
    return {
        "rollout": step["time_rollout_s"],
        "logprobs": step["time_logprobs_s"],
        "train": step["time_train_s"],
        "sync": step["time_sync_s"],
        "other": step["wall_s"]
        - sum(step[k] for k in ("time_rollout_s", "time_logprobs_s", "time_train_s"))
        - step["time_sync_s"],
        "step": step["wall_s"],
    }


def _raw_vllm(engine: Any, solver_config: Any, tools: Any, tasks: list, steps: list, args) -> dict:
    """The first-turn prompts of each measured step's tasks, K samples each, through the engine
    alone: one `generate` call per step, as many tokens per rollout as that step generated."""
    from selfplay.engines.base import SamplingConfig
    from selfplay.engines.vllm import render_chat
    from selfplay.solver import EnginePolicy, Solver

    solver = Solver(EnginePolicy(engine), tools, config=solver_config)  # renders first turns
    specs = tools.specs()
    tokens = seconds = 0.0
    for step in steps:
        drawn = [tasks[t] for t in step["task_ids"]]
        per_rollout = max(1, round(step["generated_tokens"] / step["rollouts_total"]))
        prompts, sampling = [], []
        for task in drawn:
            messages = solver.start(task, run_id="raw").messages
            ids = render_chat(engine.tokenizer, messages, specs)
            for k in range(args.samples):
                prompts.append(ids)
                sampling.append(
                    SamplingConfig(
                        temperature=args.temperature,
                        max_tokens=per_rollout,
                        seed=args.seed * 1000 + k,
                        logprobs=True,
                    )
                )
        started = time.perf_counter()
        out = engine.generate(prompts, sampling=sampling)
        seconds += time.perf_counter() - started
        tokens += sum(len(c[0].token_ids) for c in out)
    return {"tokens": tokens, "seconds": seconds}


def _turn_batches(calls: list[tuple[int, list, list]]) -> list[tuple[int, list, list]]:
    """Single-prompt calls of overlapped rollouts regrouped into one call per step and turn.

    A rollout's turn-t prompt extends its turn t-1 prompt (`continue_tokens`), so a prompt's turn
    is the number of earlier prompts of the same step that are prefixes of it. Batched calls
    (the lock-step loop's) are returned as they are.
    """
    if any(len(prompts) != 1 for _, prompts, _ in calls):
        return calls
    batches: dict[tuple[int, int], tuple[int, list, list]] = {}
    seen: dict[int, list[list[int]]] = {}
    for step, [prompt], [sampling] in calls:
        earlier = seen.setdefault(step, [])
        turn = sum(1 for q in earlier if len(q) < len(prompt) and prompt[: len(q)] == q)
        earlier.append(prompt)
        batch = batches.setdefault((step, turn), (step, [], []))
        batch[1].append(prompt)
        batch[2].append(sampling)
    return [batches[k] for k in sorted(batches)]


def _replay(engine: Any, calls: list[tuple[int, list, list]]) -> dict:
    """The rollouts' own engine calls (each turn's prompts, token budgets and seeds) again, one
    batched call per step and turn, back to back with nothing between them: the engine's share
    of the rollout phase as the lock-step loop would batch it."""
    tokens = seconds = 0.0
    calls = _turn_batches(calls)
    for _, prompts, sampling in calls:
        started = time.perf_counter()
        out = engine.generate(prompts, sampling=sampling)
        seconds += time.perf_counter() - started
        tokens += sum(len(c[0].token_ids) for c in out)
    return {"tokens": tokens, "seconds": seconds, "calls": len(calls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--world-size", type=int, default=300)
    parser.add_argument("--prompts", type=int, default=48, help="oracle tasks (the rl prompts)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup-steps", type=int, default=1, help="steps left out of figures")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--groups-per-step", type=int, default=4)
    parser.add_argument("--max-refills", type=int, default=3)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-context-tokens", type=int, default=2048)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--kl-coef", type=float, default=1e-3, help="as `kag train grpo`")
    parser.add_argument("--free-turns", type=int, default=1)
    parser.add_argument("--turn-penalty", type=float, default=0.1)
    parser.add_argument("--repetition-penalty", type=float, default=0.05)
    parser.add_argument("--save-every", type=int, default=1)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overlap-turns",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="rollouts driven apart (`kag train grpo --overlap-turns`; default: off, as there)",
    )
    args = parser.parse_args(argv)
    if args.steps <= args.warmup_steps:
        raise SystemExit("--steps must be larger than --warmup-steps")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="kag-bench-grpo-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    graph_url, rl, model_dir = _data(work, args)
    data_s = time.perf_counter() - t0

    from transformers import AutoTokenizer

    import kag
    from kag.schema import Run
    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig
    from selfplay.generation import RolloutSource
    from selfplay.graph_tools import default_registry
    from selfplay.solver import EnginePolicy, SolverConfig
    from trainer.grpo import GRPOConfig, GRPOStepConfig, RewardShaping
    from trainer.grpo_loss import GRPOLossConfig
    from trainer.grpo_train import GRPOTrainConfig, read_prompt_ids, train_grpo
    from trainer.sft import load_causal_lm

    config = GRPOTrainConfig(
        data_dir=rl,
        out_dir=work / "grpo-run",
        steps=args.steps,
        seed=args.seed,
        save_every=args.save_every,
        tensorboard=False,
        grpo=GRPOConfig(
            samples=args.samples,
            groups_per_step=args.groups_per_step,
            max_refills=args.max_refills,
            shaping=RewardShaping(
                free_turns=args.free_turns,
                turn_penalty=args.turn_penalty,
                repetition_penalty=args.repetition_penalty,
            ),
            step=GRPOStepConfig(
                learning_rate=args.lr,
                temperature=args.temperature,
                loss=GRPOLossConfig(kl_coef=args.kl_coef),
            ),
        ),
    )
    solver_config = SolverConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        max_context_tokens=args.max_context_tokens,
        temperature=args.temperature,
        seed=args.seed,
        overlap_turns=args.overlap_turns,
    )
    # as `kag train grpo` configures its engine
    engine_config = VLLMEngineConfig(
        max_model_len=max(args.max_context_tokens, 256),
        kv_cache_gib=args.kv_cache_gib,
        logprobs_mode="processed_logprobs",
        engine_kwargs={
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(args.max_context_tokens, 16384),
        },
    )
    steps: list[dict[str, Any]] = []
    with kag.open(graph_url) as graph:
        store = graph.store
        task_ids = read_prompt_ids(rl)
        tasks = {t.id: t for t in store.get_nodes("Task", task_ids)}
        tools = default_registry(store, sandbox=None)
        engine = VLLMEngine(model_dir, config=engine_config)
        try:
            policy = EnginePolicy(
                engine, temperature=args.temperature, logprobs=True, continue_tokens=True
            )

            def rollouts_for(run_id: str) -> tuple[RolloutSource, Any]:
                source = RolloutSource(
                    store, policy, tools=tools, run_id=run_id, solver=solver_config
                )
                return source, Run(id=run_id, kind="train", config={"stage": "grpo"})

            # every engine call of the rollouts, to replay them without the loop afterwards
            calls: list[tuple[int, list, list]] = []
            generate = engine.generate

            def recorded(prompts, *, sampling):
                calls.append((len(steps) + 1, [list(p) for p in prompts], list(sampling)))
                return generate(prompts, sampling=sampling)

            engine.generate = recorded
            agenerate = engine.agenerate

            async def arecorded(prompts, *, sampling):
                calls.append((len(steps) + 1, [list(p) for p in prompts], list(sampling)))
                return await agenerate(prompts, sampling=sampling)

            engine.agenerate = arecorded
            last = [time.perf_counter()]

            def on_step(step: int, metrics: dict[str, Any]) -> None:
                now = time.perf_counter()
                # the step's whole wall time: its checkpoint and metrics lines too
                steps.append({**metrics, "wall_s": now - last[0]})
                last[0] = now
                row = _row(steps[-1])
                print(
                    f"grpo: step {step}: "
                    + " ".join(f"{k} {row[k]:.2f}s" for k in (*PHASES, "step"))
                    + f"; trained {metrics['trained']}, groups kept "
                    f"{metrics['groups_kept']:.0f} dropped {metrics['groups_dropped']:.0f}, "
                    f"{metrics['generated_tokens']:.0f} tokens generated",
                    file=sys.stderr,
                    flush=True,
                )

            started = time.perf_counter()
            train_grpo(
                load_causal_lm(model_dir),
                AutoTokenizer.from_pretrained(model_dir),
                config=config,
                engine=engine,
                task_of=tasks.__getitem__,
                rollouts_for=rollouts_for,
                on_step=on_step,
            )
            train_s = time.perf_counter() - started
            prompts = [
                json.loads(line)
                for line in (config.out_dir / "prompts.jsonl").read_text().splitlines()
            ]
            for step, drawn in zip(steps, prompts, strict=True):
                step["task_ids"] = drawn["task_ids"]
            engine.generate, engine.agenerate = generate, agenerate
            measured = steps[args.warmup_steps :]
            raw = _raw_vllm(engine, solver_config, tools, tasks, measured, args)
            replay = _replay(engine, [c for c in calls if c[0] > args.warmup_steps])
            restart_s = min(engine.reload(restart=True).seconds for _ in range(2))
        finally:
            engine.close()

    rows = [_row(s) for s in measured]
    totals = {k: sum(r[k] for r in rows) for k in (*PHASES, "step")}
    trained = [s for s in measured if s["trained"]]
    setting = {
        "steps": args.steps,
        "warmup_steps_left_out": args.warmup_steps,
        "samples": args.samples,
        "groups_per_step": args.groups_per_step,
        "max_refills": args.max_refills,
        "max_turns": args.max_turns,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "overlap_turns": args.overlap_turns,
        "kl_coef": args.kl_coef,
        "save_every": args.save_every,
        "shaping": {
            "free_turns": args.free_turns,
            "turn_penalty": args.turn_penalty,
            "repetition_penalty": args.repetition_penalty,
        },
        "engine": "in-process VLLMEngine, chunked prefill off (as kag train grpo)",
        "model": "tiny Qwen3-MoE, random weights, float32, CPU",
    }
    split = {k: round(totals[k] / totals["step"], 3) for k in PHASES}
    useful = (totals["rollout"] + totals["train"]) / totals["step"]
    results = [
        {
            "metric": "grpo_useful_time_fraction",
            "value": round(useful, 3),
            "unit": "(rollout + training) seconds / step seconds",
            "baseline": "target 0.75",
            "baseline_value": 0.75,
            "ratio": round(useful / 0.75, 3),
            "split": split,
            "step_s_mean": round(totals["step"] / len(rows), 2),
            "steps_measured": len(rows),
            "steps_trained": len(trained),
            **setting,
        }
    ]
    if trained:
        sync_s = statistics.median(s["time_sync_s"] for s in trained)
        results.append(
            {
                "metric": "grpo_weight_sync_vs_restart",
                "value": round(restart_s / sync_s, 1),
                "unit": "engine restart seconds / in-place sync seconds",
                "baseline": "VLLMEngine.reload(restart=True), best of 2, same run",
                "baseline_value": round(restart_s, 2),
                "ratio": round(restart_s / sync_s, 1),
                "sync_s_median": round(sync_s, 4),
                "target": 20,
                "syncs": len(trained),
            }
        )
    tokens = sum(s["generated_tokens"] for s in measured)
    rate = tokens / totals["rollout"]
    raw_rate = raw["tokens"] / raw["seconds"]
    results.append(
        {
            "metric": "rollout_tokens_per_s_vs_raw_vllm",
            "value": round(rate / raw_rate, 3),
            "unit": "GRPO rollout tokens/s / raw vLLM tokens/s",
            "baseline": "the same first-turn prompts x samples through engine.generate alone, "
            "same sampling, one call per step",
            "baseline_value": round(raw_rate, 1),
            "ratio": round(rate / raw_rate, 3),
            "grpo_tokens_per_s": round(rate, 1),
            "grpo_tokens": int(tokens),
            "raw_tokens": int(raw["tokens"]),
            "target": 0.9,
            # the same engine calls the rollouts made (every turn's prompt, budget and seed),
            # replayed back to back: what vLLM alone does with multi-turn contexts
            "replayed_turns_tokens_per_s": round(replay["tokens"] / replay["seconds"], 1),
            "vs_replayed_turns": round(rate / (replay["tokens"] / replay["seconds"]), 3),
            "replayed_calls": replay["calls"],
        }
    )
    print(
        f"grpo: data {data_s:.0f}s, training {train_s:.0f}s; per-phase share of the measured "
        f"steps: {split}",
        file=sys.stderr,
    )
    for line in results:
        print("RESULT " + json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
