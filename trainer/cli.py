"""Command-line handlers of the trainer package.

| command                     | handler      |
|-----------------------------|--------------|
| `kag model tiny OUT_DIR`    | `model_main` |
| `kag train sft ...`         | `main`       |
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["model_main", "main"]


def model_main(argv: list[str]) -> int:
    """`kag model tiny OUT_DIR [--seed S] [--vocab-size V] [--layers L] [--experts E] ...`."""
    from trainer.models import DIGIT_GROUPS, TinyModelConfig

    defaults = TinyModelConfig()
    parser = argparse.ArgumentParser(
        prog="kag model tiny",
        description="Build the tiny random-initialised Qwen3-MoE test model and its tokenizer "
        "(nothing is downloaded; the same seed gives the same files).",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the model into")
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="weights and tokenizer seed"
    )
    parser.add_argument(
        "--vocab-size", type=int, default=defaults.vocab_size, help="BPE vocabulary target"
    )
    parser.add_argument(
        "--digit-group",
        type=int,
        choices=DIGIT_GROUPS,
        default=defaults.digit_group,
        help="digits per number token: 1 (each digit a token) or 2-3 (numbers split left to "
        "right into groups of up to that many digits, each group a token added on top of "
        "--vocab-size; an id's digits, after its '/', stay one token each)",
    )
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    parser.add_argument(
        "--heads", type=int, default=defaults.num_attention_heads, help="attention heads"
    )
    parser.add_argument("--layers", type=int, default=defaults.num_hidden_layers)
    parser.add_argument("--experts", type=int, default=defaults.num_experts)
    parser.add_argument(
        "--top-k", type=int, default=defaults.num_experts_per_tok, help="experts per token"
    )
    parser.add_argument("--moe-intermediate-size", type=int, default=defaults.moe_intermediate_size)
    parser.add_argument(
        "--max-position-embeddings", type=int, default=defaults.max_position_embeddings
    )
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default=defaults.dtype
    )
    parser.add_argument(
        "--graph",
        metavar="URL",
        default=None,
        help="also train the tokenizer on this graph's names, ids and relation names "
        "(recommended: the graph the model works on)",
    )
    parser.add_argument(
        "--whole-word-names",
        action="store_true",
        help="with --graph: give each entity name, entity id and relation name a token of its own",
    )
    parser.add_argument(
        "--corpus",
        metavar="DATASET_DIR",
        action="append",
        default=[],
        help="also train the tokenizer on an exported dataset's text (repeatable)",
    )
    args = parser.parse_args(argv)

    from trainer.models import build_tiny_model, dataset_texts

    config = TinyModelConfig(
        seed=args.seed,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        num_hidden_layers=args.layers,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        moe_intermediate_size=args.moe_intermediate_size,
        max_position_embeddings=args.max_position_embeddings,
        dtype=args.dtype,
        digit_group=args.digit_group,
    )
    texts: list[str] = []
    vocabulary: list[str] = []
    if args.graph is not None:
        import kag
        from kag.corpus import graph_corpus, graph_vocabulary

        with kag.open(args.graph) as graph:
            texts = list(graph_corpus(graph))
            if args.whole_word_names:
                vocabulary = graph_vocabulary(graph)
    for data_dir in args.corpus:
        texts += dataset_texts(data_dir)
    path = build_tiny_model(args.out_dir, config=config, texts=texts, vocabulary=vocabulary)
    source = ""
    if texts or vocabulary:
        source = (
            f" (tokenizer also trained on {len(texts):,} lines of domain text, "
            f"{len(vocabulary):,} whole-word domain tokens)"
        )
    print(f"tiny model written to {path}{source}")
    return 0


# --------------------------------------------------------------------------- kag train

_SFT_HELP = {
    "data_dir": "dataset directory (data/{split}-NNNNN.parquet)",
    "model_dir": "Hugging Face MoE causal LM directory",
    "out_dir": "run directory: metrics.jsonl, loss.png, checkpoints/, model/",
    "max_seq_len": "tokens per packed row",
    "overflow": "what to do with conversations longer than a row: truncate or drop",
    "micro_batch_rows": "packed rows per forward pass per process",
    "grad_accum_steps": "micro-batches per optimizer step per process",
    "learning_rate": "peak learning rate (paper's SFT: 1e-5)",
    "warmup_ratio": "share of steps with linear warmup (paper: 0.05)",
    "weight_decay": "AdamW weight decay (paper: 0.1)",
    "num_epochs": "passes over the data (paper: 1)",
    "max_steps": "stop after this many optimizer steps (also the schedule length)",
    "attention": "auto, sdpa_block_mask, position_ids, flash_varlen or flex",
    "parallel": "auto, none, ddp or fsdp (under torchrun)",
    "checkpoint_every_steps": "save a resumable checkpoint every N steps (0: never)",
    "resume": "continue from the newest checkpoint in OUT/checkpoints",
}


def _sft_parser() -> argparse.ArgumentParser:
    import dataclasses
    import typing

    from trainer.sft import SFTConfig

    parser = argparse.ArgumentParser(
        prog="kag train sft",
        description="Supervised fine-tuning of an MoE causal LM on a packed, assistant-masked SFT "
        "dataset. Run under torchrun for several processes.",
    )
    hints = typing.get_type_hints(SFTConfig)
    for f in dataclasses.fields(SFTConfig):
        flag = "--" + f.name.replace("_", "-").removesuffix("-dir")
        required = f.default is dataclasses.MISSING
        default = None if required else f.default
        help_text = _SFT_HELP.get(f.name, f.name.replace("_", " "))
        if not required:
            help_text += f" (default: {default})"
        hint = hints[f.name]
        if hint is bool or hint == bool | None:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
        elif f.name == "adam_betas":
            parser.add_argument(
                flag,
                dest=f.name,
                type=float,
                nargs=2,
                default=default,
                metavar=("B1", "B2"),
                help=help_text,
            )
        else:
            kind = next((t for t in (int, float) if hint in (t, t | None)), str)
            parser.add_argument(
                flag,
                dest=f.name,
                type=kind,
                default=default,
                required=required,
                metavar=f.name.upper(),
                help=help_text,
            )
    parser.add_argument(
        "--graph",
        metavar="URL",
        default=None,
        help="record lineage in this graph after training: the Model (stage sft), PRODUCED_BY "
        "the training Run, TRAINED_ON the dataset, DERIVED_FROM the start model (default: none)",
    )
    return parser


def sft_main(argv: list[str]) -> int:
    """`kag train sft --data DIR --model DIR --out DIR [--max-seq-len N] ...`."""
    from trainer.sft import SFTConfig, train_sft

    args = vars(_sft_parser().parse_args(argv))
    graph_url = args.pop("graph")
    if args.get("adam_betas") is not None:
        args["adam_betas"] = tuple(args["adam_betas"])
    config = SFTConfig(**args)
    result = train_sft(config)
    report = result.packing
    if os.environ.get("RANK", "0") != "0":
        return 0
    print(
        f"trained {result.steps} steps on {report.n_rows} packed rows "
        f"({report.n_documents} conversations, {report.n_truncated} truncated, "
        f"{report.n_dropped} dropped, fill {report.fill_fraction:.3f}); "
        f"final loss {result.losses[-1] if result.losses else float('nan'):.4f}; "
        f"model: {result.model_dir}"
    )
    if graph_url is not None and result.model_dir is not None:
        _record_sft_lineage(graph_url, config=config, model_dir=result.model_dir)
    return 0


def _record_sft_lineage(graph_url: str, *, config: Any, model_dir: Any) -> None:
    # the trainer reads Parquet only; the CLI layer writes the graph once training is done
    import dataclasses
    import uuid

    import kag
    from kag.lineage import dataset_id_of, record_model

    with kag.open(graph_url) as graph:
        ds_id = dataset_id_of(config.data_dir)
        model = record_model(
            graph.store,
            path=model_dir,
            stage="sft",
            run_id=f"run:sft-{uuid.uuid4().hex[:12]}",
            run_config={k: str(v) for k, v in dataclasses.asdict(config).items()},
            datasets=[ds_id],
            parents=[config.model_dir],
        )
    print(f"lineage: {model.id} (sft) trained on {ds_id}, recorded in {graph_url}")


_TRAIN_COMMANDS = {"sft": sft_main}


def main(argv: list[str]) -> int:
    """`kag train sft|grpo|opd ...`: dispatch to the training stage."""
    from kag.cli import UserError

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: kag train {" + ",".join(_TRAIN_COMMANDS) + "} ...")
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in _TRAIN_COMMANDS:
        raise UserError(
            f"unknown training stage {stage!r}; available here: {', '.join(_TRAIN_COMMANDS)}"
        )
    return _TRAIN_COMMANDS[stage](rest)
