"""`kag train grpo`: GRPO on the prompts of an `rl` dataset, rolled out on the in-process vLLM engine.

The command wires the layers `trainer.grpo_train.train_grpo` keeps apart: the graph (tasks by id,
the tools, the default verifiers, a Run of kind "train" per step) and the engine (vLLM at the
checkpoint's dtype, kept in sync with the trained weights) on one side, the transformers model
being trained on the other.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from kag.cli import UserError, add_graph_argument

__all__ = ["main", "rollout_wiring", "record_training"]


def _parser() -> argparse.ArgumentParser:
    from trainer.grpo import REWARD_BASES

    parser = argparse.ArgumentParser(
        prog="kag train grpo",
        description=(
            "GRPO on the tasks of an rl dataset: K rollouts per prompt through the self-play "
            "solver on the in-process vLLM engine, rewards from the tasks' verifiers (plus the "
            "optional efficiency and repetition penalties), one optimizer step per batch of "
            "groups, weights pushed back into the engine. Rollouts are written to the graph as "
            "Runs of kind 'train'. The same command with the same --out resumes a killed run."
        ),
    )
    add_graph_argument(parser)
    parser.add_argument("--data", required=True, metavar="RL_DIR", help="`kag export rl` dataset")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--model", required=True, metavar="DIR", help="start checkpoint (SFT)")
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps (default: 10)")
    parser.add_argument("--samples", type=int, default=8, help="rollouts per prompt (default: 8)")
    parser.add_argument(
        "--groups-per-step", type=int, default=4, help="prompts per step (default: 4)"
    )
    parser.add_argument(
        "--max-refills", type=int, default=3, help="refill rounds for uniform groups (default: 3)"
    )
    parser.add_argument("--lr", type=float, default=1e-6, help="learning rate (default: 1e-6)")
    parser.add_argument("--kl-coef", type=float, default=1e-3, help="KL to the start model")
    parser.add_argument(
        "--micro-batch-rows",
        type=int,
        default=8,
        help="rollouts per forward/backward pass (gradients accumulate; default: %(default)s)",
    )
    parser.add_argument(
        "--mini-batches",
        type=int,
        default=1,
        help="optimizer steps per batch of rollouts, each on a consecutive slice of it (verl's "
        "ppo_mini_batch_size, TRL's steps_per_generation; default: 1)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="passes over each batch of rollouts (verl's ppo_epochs, TRL's num_iterations; "
        "default: 1)",
    )
    parser.add_argument("--free-turns", type=int, default=4, help="turns without penalty")
    parser.add_argument("--turn-penalty", type=float, default=0.0, help="reward per extra turn")
    parser.add_argument(
        "--repetition-penalty", type=float, default=0.0, help="reward per repeated tool call"
    )
    parser.add_argument(
        "--reward-base",
        choices=REWARD_BASES,
        default="verifier",
        help="verifier: the verifiers' graded reward (default; a rejected trajectory keeps up "
        "to 0.45 for valid calls and evidence); outcome: 1 accepted, 0 rejected, so only groups "
        "holding a success train",
    )
    parser.add_argument("--save-every", type=int, default=1, help="checkpoint every N steps")
    parser.add_argument("--seed", type=int, default=0, help="prompt order, RNGs, sampling")
    parser.add_argument("--name", default=None, help="run name in Run ids (default: OUT's name)")
    parser.add_argument("--max-turns", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="new tokens per turn")
    parser.add_argument("--max-context-tokens", type=int, default=4096)
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="rollout sampling temperature; the loss scores the same distribution (logits / T), "
        "so a --base-url server must run with --logprobs-mode processed_logprobs unless it is 1",
    )
    parser.add_argument(
        "--overlap-turns",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="send each rollout's next turn to the engine as soon as its tools have run, "
        "instead of one batched call per turn; pays when tools are slow (default: off: on "
        "2 CPU cores with the graph tools, benchmarks/grpo.py measures it slower)",
    )
    parser.add_argument(
        "--kv-cache-gib", type=float, default=1.0, help="vLLM KV cache in GiB (default: 1.0)"
    )
    parser.add_argument(
        "--engine",
        choices=("vllm", "openai"),
        default="vllm",
        help=(
            "vllm: the in-process engine (default); openai: a vLLM OpenAI-compatible server, "
            "started here on --model unless --base-url names a running one"
        ),
    )
    parser.add_argument(
        "--base-url",
        default=None,
        help=(
            "--engine openai: a running vLLM server (e.g. http://127.0.0.1:8000/v1) on --model, "
            "started with VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls "
            "selfplay.engines.vllm.WeightSyncWorker so it takes the new weights in place"
        ),
    )
    parser.add_argument(
        "--served-model", default=None, help="the model name --base-url serves (default: --model)"
    )
    parser.add_argument(
        "--weight-sync",
        choices=("file", "inline"),
        default="file",
        help=(
            "how new weights reach a --base-url server: file (it reads a file written here: "
            "same machine; default) or inline (in the request)"
        ),
    )
    parser.add_argument(
        "--python-tool", action="store_true", help="also offer the sandboxed python tool"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def _engine(args: argparse.Namespace) -> tuple[Any, Any]:
    """The rollout engine on --model and the server this command started for it (or None).

    Every engine takes the new weights in place after each step; an `--engine openai` server
    that cannot is refused here, before any rollout.
    """
    # vLLM's CPU sampler crashes on a seeded request whose prefill is split across steps:
    # prefill prompts whole (as `kag selfplay run` does)
    max_len = max(args.max_context_tokens, 256)
    batched = max(args.max_context_tokens, 16384)
    if args.engine == "vllm":
        from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig

        engine = VLLMEngine(
            args.model,
            config=VLLMEngineConfig(
                max_model_len=max_len,
                kv_cache_gib=args.kv_cache_gib,
                # the sampled tokens' log-probs after temperature, as the trainer computes them
                logprobs_mode="processed_logprobs",
                engine_kwargs={
                    "enable_chunked_prefill": False,
                    "max_num_batched_tokens": batched,
                },
            ),
        )
        return engine, None
    from selfplay.engines.openai import OpenAIEngine, OpenAIEngineConfig

    if args.base_url:
        engine = OpenAIEngine(
            args.base_url,
            args.served_model or args.model,
            config=OpenAIEngineConfig(
                weight_sync=args.weight_sync, checkpoint=args.model, tokenizer=args.model
            ),
        )
        try:
            engine.check_weight_sync()
        except (ValueError, ConnectionError) as err:
            engine.close()
            raise UserError(str(err)) from None
        return engine, None
    from selfplay.vllm_server import VLLMServer, VLLMServerConfig

    server = VLLMServer(
        args.model,
        config=VLLMServerConfig(
            max_model_len=max_len,
            kv_cache_gib=args.kv_cache_gib,
            weight_sync=True,
            tool_call_parser=None,  # the policy sends token ids; tool calls are parsed here
            extra_args=(
                "--no-enable-chunked-prefill",
                "--max-num-batched-tokens",
                str(batched),
                "--logprobs-mode",
                "processed_logprobs",
            ),
        ),
    ).start()
    return server.engine(), server


def record_training(
    store: Any,
    *,
    stage: str,
    model_dir: Any,
    run_id: str,
    data: str,
    parents: list[str],
    rollout_runs: Sequence[str] = (),
) -> str:
    """Record a trained checkpoint's lineage (`kag.lineage.record_model`): the Model, PRODUCED_BY
    the training Run, TRAINED_ON the dataset of `data`, DERIVED_FROM each parent; its id.
    `rollout_runs` (on-policy training's per-step rollout Runs, in step order) get USED_MODEL to
    the first parent, the model they started from."""
    from kag.lineage import dataset_id_of, record_model

    try:
        datasets = [dataset_id_of(data)]
    except (ValueError, OSError):  # a dataset written by hand: no Dataset node to point at
        datasets = []
    # exported from another graph: this one has no Dataset node for it
    datasets = [d.id for d in store.get_nodes("Dataset", datasets)] if datasets else []
    model = record_model(
        store,
        path=model_dir,
        stage=stage,
        run_id=run_id,
        datasets=datasets,
        parents=parents,
        rollout_runs=rollout_runs,
    )
    return model.id


def rollout_wiring(
    store: Any, task_ids: list[str], *, data: str, graph_url: str | None, python_tool: bool
) -> tuple[dict[str, Any], Any, Any, Any]:
    """What on-policy training (GRPO, OPD) rolls out with: the dataset's tasks from the graph,
    the tools (the sandboxed python too for compute tasks), per-task setups and the scorer with
    each family's verifier suite. A task missing from the graph is a `UserError`."""
    from selfplay.families import family_suite, task_setup
    from selfplay.graph_tools import default_registry
    from selfplay.sandbox import SandboxConfig
    from selfplay.scoring import Scorer

    tasks: dict[str, Any] = {t.id: t for t in store.get_nodes("Task", task_ids)}
    missing = [t for t in task_ids if t not in tasks]
    if missing:
        raise UserError(
            f"{len(missing)} task(s) of {data} are not in the graph {graph_url}, e.g. "
            f"{missing[0]!r}: pass the graph the dataset was exported from"
        )
    families = {t.family for t in tasks.values()}
    python = python_tool or "compute" in families
    tools = default_registry(store, sandbox=SandboxConfig() if python else None)
    setup = task_setup(store)
    scorer = Scorer(
        tools,
        suites={f: family_suite(f) for f in families | {"tool_use"} if f != "search"},
        store=store,
        setup=setup,
    )
    return tasks, tools, setup, scorer


def main(argv: list[str]) -> int:
    """`kag train grpo --data RL_DIR --model DIR --out DIR [--graph URL] [--steps N] ...`."""
    args = _parser().parse_args(argv)
    if args.base_url and args.engine != "openai":
        raise UserError("--base-url needs --engine openai")

    import kag
    from selfplay.generation import RolloutSource
    from selfplay.solver import EnginePolicy, SolverConfig
    from trainer.grpo import GRPOConfig, GRPOStepConfig, RewardShaping
    from trainer.grpo_loss import GRPOLossConfig
    from trainer.grpo_train import GRPOTrainConfig, read_prompt_ids, run_id_of_step, train_grpo
    from trainer.sft import load_causal_lm

    config = GRPOTrainConfig(
        data_dir=args.data,
        out_dir=args.out,
        split=args.split,
        steps=args.steps,
        seed=args.seed,
        save_every=args.save_every,
        name=args.name,
        grpo=GRPOConfig(
            samples=args.samples,
            groups_per_step=args.groups_per_step,
            max_refills=args.max_refills,
            shaping=RewardShaping(
                free_turns=args.free_turns,
                turn_penalty=args.turn_penalty,
                repetition_penalty=args.repetition_penalty,
                base=args.reward_base,
            ),
            step=GRPOStepConfig(
                learning_rate=args.lr,
                temperature=args.temperature,
                loss=GRPOLossConfig(kl_coef=args.kl_coef),
                micro_batch_rows=args.micro_batch_rows,
                mini_batches=args.mini_batches,
                epochs=args.epochs,
            ),
        ),
    )
    solver = SolverConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        max_context_tokens=args.max_context_tokens,
        temperature=args.temperature,
        seed=args.seed,
        overlap_turns=args.overlap_turns,
    )
    task_ids = read_prompt_ids(args.data, split=args.split)
    with kag.open(args.graph) as graph:
        store = graph.store
        tasks, tools, setup, scorer = rollout_wiring(
            store, task_ids, data=args.data, graph_url=args.graph, python_tool=args.python_tool
        )
        model = load_causal_lm(args.model)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        engine, server = _engine(args)
        # token ids in, token ids out on either engine: the model sees what it sampled
        policy = EnginePolicy(
            engine, temperature=args.temperature, logprobs=True, continue_tokens=True
        )

        def rollouts_for(run_id: str) -> tuple[RolloutSource, Any]:
            from kag.schema import Run

            run = Run(id=run_id, kind="train", config={"stage": "grpo", "model": args.model})
            source = RolloutSource(
                store, policy, tools=tools, run_id=run_id, solver=solver, scorer=scorer, setup=setup
            )
            return source, run

        try:
            result = train_grpo(
                model,
                tokenizer,
                config=config,
                engine=engine,
                task_of=tasks.__getitem__,
                rollouts_for=rollouts_for,
            )
        finally:
            engine.close()
            if server is not None:
                server.stop()
        lineage = record_training(
            store,
            stage="grpo",
            model_dir=result.model_dir,
            run_id=f"run:grpo-{config.run_name}",
            data=args.data,
            parents=[args.model],
            rollout_runs=[run_id_of_step(config.run_name, s) for s in range(1, result.steps + 1)],
        )
    last = result.metrics[-1] if result.metrics else {}
    summary = {
        "out_dir": str(result.out_dir),
        "model_dir": str(result.model_dir),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "trained_this_call": result.steps - result.resumed_from,
        "reward_mean": last.get("reward_mean"),
        "accept_rate": last.get("accept_rate"),
        "reward_png": str(result.reward_png) if result.reward_png else None,
        "model_id": lineage,
    }
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        plot = (
            f"plot: {result.reward_png}"
            if result.reward_png
            else "reward.png skipped: matplotlib is not installed"
        )
        print(
            f"GRPO: step {result.steps} of {config.steps} ({summary['trained_this_call']} this "
            f"call, resumed from {result.resumed_from}); last accept rate "
            f"{last.get('accept_rate', float('nan')):.3f}; model: {result.model_dir}; {plot}"
        )
    return 0
