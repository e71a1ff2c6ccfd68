"""`kag train opd`: multi-teacher on-policy distillation on the prompts of an `opd` dataset.

Before any work it checks that every routing key of the dataset (its `teacher` column: the
task family unless the export said otherwise) has a `--teacher KEY=DIR`, and that every
teacher's tokenizer is the student's (vocabulary size, special tokens, chat template). Then the
student rolls out on the in-process vLLM engine through the self-play solver and tools (rollouts
written to the graph as Runs of kind "train"), each row's teacher scores the student's tokens
(a transformers forward), and `trainer.opd.train_opd` trains and keeps the engine in sync.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kag.cli import UserError, add_graph_argument

__all__ = ["main"]


def _teacher_spec(text: str) -> tuple[str, str]:
    key, sep, path = text.partition("=")
    if not sep or not key or not path:
        raise argparse.ArgumentTypeError(
            f"--teacher {text!r}: write KEY=DIR, e.g. --teacher search=runs/grpo-search/model"
        )
    return key, path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kag train opd",
        description=(
            "On-policy distillation: the student's rollouts (vLLM, the self-play solver and "
            "tools), scored token by token by each row's teacher, trained with salient "
            "vocabulary alignment (or the sampled-token reverse KL). The same command with the "
            "same --out resumes a killed run."
        ),
    )
    add_graph_argument(p)
    p.add_argument("--data", required=True, metavar="OPD_DIR", help="`kag export opd` dataset")
    p.add_argument("--split", default="train")
    p.add_argument("--student", required=True, metavar="DIR", help="start checkpoint (SFT)")
    p.add_argument(
        "--teacher",
        action="append",
        type=_teacher_spec,
        required=True,
        metavar="KEY=DIR",
        help="the teacher of a routing key (repeatable; a shared DIR is loaded once)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-6, help="learning rate (default: 1e-6)")
    p.add_argument("--objective", choices=("sva", "sampled_rkl", "topk_kl"), default="sva")
    p.add_argument("--top-k", type=int, default=16, help="teacher ids per position (default 16)")
    p.add_argument("--max-retries", type=int, default=2, help="retries of aborted rollouts")
    p.add_argument("--save-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="run name in Run ids (default: OUT's name)")
    p.add_argument("--max-turns", type=int, default=None, help="default: the dataset's protocol")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the protocol's")
    p.add_argument("--max-context-tokens", type=int, default=4096)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--kv-cache-gib", type=float, default=1.0)
    p.add_argument("--python-tool", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p


def _protocol(data: str, split: str) -> dict[str, Any]:
    from pathlib import Path

    import pyarrow.parquet as pq

    for f in sorted((Path(data) / "data").glob(f"{split}-*.parquet")):
        rows = pq.read_table(f, columns=["protocol"]).column(0).to_pylist()
        if rows:
            return json.loads(rows[0] or "{}")
    return {}


def main(argv: list[str]) -> int:
    """`kag train opd --data OPD_DIR --student DIR --teacher KEY=DIR ... --out DIR [--graph URL]`."""
    args = _parser().parse_args(argv)
    teachers = dict(args.teacher)
    if len(teachers) != len(args.teacher):
        raise UserError("a routing key is given two teachers: one --teacher per key")

    from transformers import AutoTokenizer

    from trainer.opd import check_routes, check_tokenizers, read_routes

    try:
        routes = read_routes(args.data, split=args.split)
        check_routes(list(routes.values()), teachers)
        student_tok = AutoTokenizer.from_pretrained(args.student)
        check_tokenizers(
            student_tok, {k: AutoTokenizer.from_pretrained(p) for k, p in teachers.items()}
        )
    except (ValueError, OSError) as err:
        raise UserError(str(err)) from None

    import kag
    from kag.cli.grpo import record_training, rollout_wiring
    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig
    from selfplay.generation import RolloutSource
    from selfplay.solver import EnginePolicy, SolverConfig
    from trainer.grpo_train import run_id_of_step
    from trainer.opd import OPDConfig, OPDStepConfig, OPDTrainConfig, load_teachers, train_opd
    from trainer.opd_loss import OPDLossConfig
    from trainer.sft import load_causal_lm

    protocol = _protocol(args.data, args.split)
    config = OPDTrainConfig(
        data_dir=args.data,
        out_dir=args.out,
        split=args.split,
        steps=args.steps,
        seed=args.seed,
        save_every=args.save_every,
        name=args.name,
        opd=OPDConfig(
            prompts_per_step=args.prompts_per_step,
            max_retries=args.max_retries,
            step=OPDStepConfig(
                learning_rate=args.lr,
                loss=OPDLossConfig(objective=args.objective, top_k=args.top_k),
            ),
        ),
    )
    solver = SolverConfig(
        max_turns=args.max_turns or int(protocol.get("max_turns", 8)),
        max_new_tokens=args.max_new_tokens or min(int(protocol.get("max_tokens", 256)), 256),
        max_context_tokens=args.max_context_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    with kag.open(args.graph) as graph:
        store = graph.store
        tasks, tools, setup, scorer = rollout_wiring(
            store, list(routes), data=args.data, graph_url=args.graph, python_tool=args.python_tool
        )
        model = load_causal_lm(args.student)
        loaded = load_teachers(teachers, load=load_causal_lm)
        engine = VLLMEngine(
            args.student,
            config=VLLMEngineConfig(
                max_model_len=max(args.max_context_tokens, 256),
                kv_cache_gib=args.kv_cache_gib,
                # vLLM's CPU sampler crashes on a seeded request whose prefill is split
                engine_kwargs={
                    "enable_chunked_prefill": False,
                    "max_num_batched_tokens": max(args.max_context_tokens, 16384),
                },
            ),
        )
        policy = EnginePolicy(
            engine, temperature=args.temperature, logprobs=True, continue_tokens=True
        )

        def rollouts_for(run_id: str) -> tuple[RolloutSource, Any]:
            from kag.schema import Run

            # the sampling the rollouts were made with, for their provenance
            sampling = {"temperature": solver.temperature, "max_turns": solver.max_turns}
            run = Run(
                id=run_id, kind="train", config={"stage": "opd", "model": args.student, **sampling}
            )
            source = RolloutSource(
                store, policy, tools=tools, run_id=run_id, solver=solver, scorer=scorer, setup=setup
            )
            return source, run

        try:
            result = train_opd(
                model,
                student_tok,
                config=config,
                teachers=loaded,
                route=lambda task: routes[task.id],
                engine=engine,
                task_of=tasks.__getitem__,
                rollouts_for=rollouts_for,
            )
        finally:
            engine.close()
        model_id = record_training(
            store,
            stage="opd",
            model_dir=result.model_dir,
            run_id=f"run:opd-{config.run_name}",
            data=args.data,
            parents=[args.student, *dict.fromkeys(teachers.values())],
            rollout_runs=[run_id_of_step(config.run_name, s) for s in range(1, result.steps + 1)],
        )
    last = result.metrics[-1] if result.metrics else {}
    summary = {
        "out_dir": str(result.out_dir),
        "model_dir": str(result.model_dir),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "teachers": {k: str(v) for k, v in teachers.items()},
        "shared_teacher_models": len({id(m) for m in loaded.values()}),
        "model_id": model_id,
        **{k: last.get(k) for k in ("loss", "coverage", "top1_agree", "accept_rate")},
    }
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"OPD: step {result.steps} of {config.steps} (resumed from {result.resumed_from}); "
            f"last loss {last.get('loss', float('nan')):.4f}, coverage "
            f"{last.get('coverage', float('nan')):.3f}, top-1 agreement "
            f"{last.get('top1_agree', float('nan')):.3f}; model: {result.model_dir}"
        )
    return 0
