"""Where an OPD step's time goes on the tiny setup, and teacher scoring against a plain forward.

The path `kag train opd` takes, in one process on the embedded default: a synthetic world,
oracle demonstrations (`kag selfplay run --engine oracle`), `kag export opd`, the tiny Qwen3-MoE
as the student and the same architecture and tokenizer with other random weights as the teacher
of every family; then `trainer.opd.train_opd` with the in-process `VLLMEngine` configured as the
command configures it. Every batch `trainer.opd.score_tokens` scores is recorded; afterwards the
same batches are scored again by it and by a plain transformers forward of the teacher (logits
only, no log-softmax, top-k or gather), interleaved, best of 3: the baseline of the scoring rate.

Prints each step's seconds split into student rollout, teacher scoring (tokenising the rollouts
included), training, weight sync and the rest (checkpoint, metrics), then `RESULT` lines:

| metric                     | value                                                     |
|----------------------------|-----------------------------------------------------------|
| `opd_useful_time_fraction` | (rollout + teacher + training) / step                      |
| `opd_scoring_tokens_per_s` | real tokens scored per second; baseline: the plain forward |

The first step pays for lazy initialisation: figures are over the steps after `--warmup-steps`.

    python benchmarks/opd.py [--steps 3] [--prompts-per-step 4] [--samples 2] [--max-turns 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# `python benchmarks/opd.py` puts benchmarks/ first on sys.path, where benchmarks/selfplay.py
# would shadow the selfplay package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PHASES = ("rollout", "teacher", "train", "sync", "other")


def _kag(argv: list[str]) -> None:
    from kag.cli import main as kag_main

    rc = kag_main(argv)
    if rc != 0:
        raise SystemExit(f"opd benchmark: `kag {' '.join(argv)}` failed with exit code {rc}")


def _teacher(student: Path, out: Path, seed: int) -> Path:
    """The student's tokenizer and architecture with other random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shutil.copytree(student, out, dirs_exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(student))
    model.save_pretrained(out, safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--world-size", type=int, default=300)
    parser.add_argument("--prompts", type=int, default=24, help="oracle tasks (the opd prompts)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-context-tokens", type=int, default=2048)
    parser.add_argument("--kv-cache-gib", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup_steps:
        raise SystemExit("--steps must be larger than --warmup-steps")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="kag-bench-opd-"))
    work.mkdir(parents=True, exist_ok=True)
    graph_url = f"sqlite:///{(work / 'kag.db').resolve()}"
    g = ["--graph", graph_url]
    _kag(["db", "upgrade", *g])
    _kag(["generate", "world", "--seed", str(args.seed), "--size", str(args.world_size), *g])
    _kag(["selfplay", "run", "--engine", "oracle", "--tasks", str(args.prompts), "--hops", "2"]
         + ["--run-id", "oracle-demos", "--no-progress", *g])  # fmt: skip
    data = work / "opd"
    _kag(["export", "opd", str(data), "--overwrite", *g])
    student = work / "student"
    _kag(["model", "tiny", str(student), "--seed", str(args.seed)])
    teacher = _teacher(student, work / "teacher", args.seed + 1)

    import torch
    from transformers import AutoTokenizer

    import kag
    import trainer.opd as opd_module
    from kag.schema import Run
    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig
    from selfplay.generation import RolloutSource
    from selfplay.graph_tools import default_registry
    from selfplay.solver import EnginePolicy, SolverConfig
    from trainer.grpo_train import read_prompt_ids
    from trainer.opd import OPDConfig, OPDStepConfig, OPDTrainConfig, read_routes, train_opd
    from trainer.opd_loss import OPDLossConfig
    from trainer.sft import load_causal_lm

    routes = read_routes(data)
    teacher_model = load_causal_lm(teacher).eval().requires_grad_(False)
    teachers = dict.fromkeys(set(routes.values()), teacher_model)
    # every batch the trainer's teacher scoring sees, recorded for the plain-forward baseline
    scored: list[tuple[Any, Any]] = []
    score_tokens = opd_module.score_tokens

    def recorded(model, input_ids, attention_mask, *, top_k):
        scored.append((input_ids, attention_mask))
        return score_tokens(model, input_ids, attention_mask, top_k=top_k)

    opd_module.score_tokens = recorded  # type: ignore[assignment]
    config = OPDTrainConfig(
        data_dir=str(data),
        out_dir=str(work / "opd-run"),
        steps=args.steps,
        seed=args.seed,
        tensorboard=False,
        opd=OPDConfig(
            prompts_per_step=args.prompts_per_step,
            samples=args.samples,
            step=OPDStepConfig(loss=OPDLossConfig(top_k=args.top_k)),
        ),
    )
    solver = SolverConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        max_context_tokens=args.max_context_tokens,
        seed=args.seed,
    )
    engine_config = VLLMEngineConfig(
        max_model_len=max(args.max_context_tokens, 256),
        kv_cache_gib=args.kv_cache_gib,
        engine_kwargs={
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(args.max_context_tokens, 16384),
        },
    )
    with kag.open(graph_url) as graph:
        store = graph.store
        tasks = {t.id: t for t in store.get_nodes("Task", read_prompt_ids(data))}
        tools = default_registry(store, sandbox=None)
        with VLLMEngine(student, config=engine_config) as engine:
            policy = EnginePolicy(engine, logprobs=True, continue_tokens=True)

            def rollouts_for(run_id: str) -> tuple[Any, Any]:
                source = RolloutSource(store, policy, tools=tools, run_id=run_id, solver=solver)
                return source, Run(id=run_id, kind="train", config={"stage": "opd"})

            result = train_opd(
                load_causal_lm(student),
                AutoTokenizer.from_pretrained(student),
                config=config,
                teachers=teachers,
                route=lambda task: routes[task.id],
                engine=engine,
                task_of=tasks.__getitem__,
                rollouts_for=rollouts_for,
            )
    opd_module.score_tokens = score_tokens  # type: ignore[assignment]
    steps: list[dict[str, Any]] = []
    for m in result.metrics:
        row = {
            "rollout": m.get("time_rollout_s") or 0.0,
            "teacher": m.get("time_score_s") or 0.0,
            "train": m.get("time_train_s") or 0.0,
            "sync": m.get("time_sync_s") or 0.0,
            "step": m.get("time_step_s") or 0.0,
        }
        row["other"] = max(0.0, row["step"] - sum(row[k] for k in PHASES if k != "other"))
        steps.append(row)
        print(
            f"opd: step {m['step']}: " + " ".join(f"{k} {row[k]:.2f}s" for k in row)
            + f"; coverage {m.get('coverage')}, tokens {m.get('n_tokens')}",
            flush=True,
        )  # fmt: skip
    measured = steps[args.warmup_steps :]
    totals = {k: sum(r[k] for r in measured) for k in (*PHASES, "step")}
    for k in PHASES:
        print(f"opd: {k}: {totals[k]:.2f}s ({totals[k] / totals['step']:.1%})")
    useful = (totals["rollout"] + totals["teacher"] + totals["train"]) / totals["step"]

    # the recorded batches again: the trainer's scoring and a plain forward of the teacher
    # interleaved (best of 3 each, so neither pays a warm-up or another process's burst)
    per_step = max(1, len(scored) // max(1, len(result.metrics)))
    later = scored[args.warmup_steps * per_step :] or scored
    tokens = sum(int(attention.sum()) for _, attention in later)
    pool_s = plain_s = 0.0
    with torch.no_grad():
        for ids, attention in later:
            best_pool = best_plain = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                score_tokens(teacher_model, ids, attention, top_k=args.top_k)
                best_pool = min(best_pool, time.perf_counter() - start)
                start = time.perf_counter()
                teacher_model(input_ids=ids, attention_mask=attention.long())
                best_plain = min(best_plain, time.perf_counter() - start)
            pool_s += best_pool
            plain_s += best_plain
    rate, plain = tokens / pool_s, tokens / plain_s
    for line in (
        {"metric": "opd_useful_time_fraction", "value": round(useful, 4), "baseline": 1.0,
         "ratio": round(useful, 4)},
        {"metric": "opd_scoring_tokens_per_s", "value": round(rate, 1),
         "baseline": round(plain, 1), "ratio": round(rate / plain, 4)},
    ):  # fmt: skip
        print("RESULT " + json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
