"""Benchmark: `trainer.sft` against TRL's `SFTTrainer` with packing, same tiny MoE, same data.

Both trainers get the same tiny Qwen3-MoE (fp32, CPU), the same tokenised MetaQA tool-use
trajectories with the same assistant-only labels, the same row length, one packed row per forward
pass and `--rows-per-step` rows per optimizer step (gradient accumulation), the same optimiser
settings and number of steps, in this one process, run alternately (`--repeats` times each; the
best run of each counts, since other work on the machine only ever slows a run down).

Figures (`RESULT` lines, DESIGN section 7):
- `sft_tokens_per_s`: real (non-padding) tokens trained per second over the steps after
  `--warmup-steps`, wall clock from the end of one step to the end of the last; baseline TRL.
- `sft_real_token_fraction`: real tokens / tokens in the batch tensors; baseline TRL's fraction.
Both lines carry `trl_changed_options`: every TRL option the benchmark sets away from TRL's
defaults (a diff against a default-constructed `trl.SFTConfig`), among them
`gradient_checkpointing=False` (TRL's default is on; ours never checkpoints). It also prints the
loss both trainers compute on the first identical batch (one packed row, before any update), which
should agree to float precision.

Run: `python benchmarks/sft.py [--docs 240] [--max-seq-len 2048] [--steps 14]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trainer.metrics import read_metrics  # noqa: E402
from trainer.packing import IGNORE_INDEX, collate_rows  # noqa: E402
from trainer.sft import SFTConfig  # noqa: E402
from trainer.synthetic import metaqa_rows, write_sft_dataset  # noqa: E402

METAQA_DIR = REPO.parent / "shared" / "data" / "metaqa"


def build_inputs(work: Path, n_docs: int, metaqa_dir: Path) -> tuple[Path, Path]:
    from trainer.models import build_tiny_model

    model_dir = build_tiny_model(work / "tiny")
    per_hop = n_docs // 3
    rows = metaqa_rows(per_hop, metaqa_dir=metaqa_dir, hops=1)
    rows += metaqa_rows(per_hop, metaqa_dir=metaqa_dir, hops=2)
    rows += metaqa_rows(n_docs - 2 * per_hop, metaqa_dir=metaqa_dir, hops=3)
    return model_dir, write_sft_dataset(work / "ds", rows, rows_per_shard=100)


def run_ours(
    args: argparse.Namespace, model_dir: Path, data_dir: Path, out: Path
) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    config = SFTConfig(
        data_dir=str(data_dir),
        model_dir=str(model_dir),
        out_dir=str(out),
        max_seq_len=args.max_seq_len,
        micro_batch_rows=1,
        grad_accum_steps=args.rows_per_step,
        max_steps=args.steps,
        tensorboard=False,
        save_final_model=False,
        seed=0,
    )
    trainer = config.build()
    # the first identical batch: the first packed row, before any update
    first_row = trainer.data.rows[int(trainer.data.order(0)[0])]
    batch = collate_rows([first_row], pad_token_id=trainer.data.pad_token_id)
    with torch.no_grad():
        out_first = trainer.module(*batch.tensors())
    first = {
        "ce": float(out_first["ce_sum"] / out_first["n_targets"]),
        "aux": float(out_first["aux_loss"]),
    }
    trainer.train()
    trainer.close()
    records = read_metrics(out / "metrics.jsonl")
    steady = records[args.warmup_steps :]
    seconds = steady[-1]["wall_time"] - records[args.warmup_steps - 1]["wall_time"]
    tokens = sum(r["tokens"] for r in steady)
    capacity = sum(r["tokens"] / (1.0 - r["padding_fraction"]) for r in records)
    return {
        "tokens_per_s": tokens / seconds,
        "real_fraction": sum(r["tokens"] for r in records) / capacity,
        "first_batch": first,
        "first_row": first_row,
        "losses": [r["loss"] for r in records],
        "fill": trainer.data.report.fill_fraction,
    }


def trl_config(args: argparse.Namespace, out: Path) -> Any:
    """TRL's `SFTConfig` set up to train as ours does (see `trl_changes` for what that changes)."""
    from trl import SFTConfig as TRLConfig

    return TRLConfig(
        output_dir=str(out),
        max_length=args.max_seq_len,
        packing=True,
        packing_strategy="bfd",
        per_device_train_batch_size=1,
        gradient_accumulation_steps=args.rows_per_step,
        max_steps=args.steps,
        learning_rate=1e-5,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(0.05 * args.steps),  # ours: warmup_ratio 0.05 of the steps
        weight_decay=0.1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        # TRL turns it on by default; ours keeps every activation, so TRL must too
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,  # ours trains the tiny model in float32
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def trl_changes(config: Any) -> dict[str, Any]:
    """Every option of the TRL `config` that differs from a default-constructed TRL `SFTConfig`.

    >>> trl_changes(trl_config(args, out))["gradient_checkpointing"]
    False
    """
    from trl import SFTConfig as TRLConfig

    # TRL's default bf16=True refuses to construct without a bf16 GPU unless use_cpu is set, so the
    # reference shares use_cpu (and the same output_dir, which paths such as logging_dir follow)
    # and use_cpu is compared with its declared default instead
    reference = TRLConfig(output_dir=config.output_dir, use_cpu=config.use_cpu).to_dict()
    changed = {k: v for k, v in config.to_dict().items() if v != reference[k]}
    declared = {f.name: f.default for f in dataclasses.fields(TRLConfig)}
    if config.use_cpu != declared["use_cpu"]:
        changed["use_cpu"] = config.use_cpu
    return dict(sorted(changed.items()))


def run_trl(
    args: argparse.Namespace, model_dir: Path, documents: list[Any], first_row: Any, out: Path
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTTrainer as TRLTrainer

    shutil.rmtree(out, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.output_router_logits = True  # TRL then adds the router aux loss, as ours does
    dataset = Dataset.from_list(
        [
            {"input_ids": d.input_ids.tolist(), "assistant_masks": d.loss_mask.astype(int).tolist()}
            for d in documents
        ]
    )
    config = trl_config(args, out)
    trainer = TRLTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer
    )

    # the same first batch in TRL's own padding-free format, through TRL's own loss
    examples = []
    for doc in sorted(set(first_row.document_ids.tolist())):
        where = first_row.document_ids == doc
        labels = first_row.labels[where].tolist()
        examples.append({"input_ids": first_row.input_ids[where].tolist(), "labels": labels})
    inputs = trainer.data_collator(examples)
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
    aux = float(outputs.aux_loss)
    first = {"ce": float(loss) - model.config.router_aux_loss_coef * aux, "aux": aux}

    counts: list[tuple[int, int]] = []
    collate = trainer.data_collator

    def counting_collator(batch_examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(batch_examples)
        real = sum(len(e["input_ids"]) for e in batch_examples)
        counts.append((real, int(batch["input_ids"].numel())))
        return batch

    trainer.data_collator = counting_collator
    ends: list[float] = []
    losses: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            ends.append(time.time())

        def on_log(
            self, _args: Any, _state: Any, _control: Any, logs: Any = None, **__: Any
        ) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer.add_callback(StepClock())
    trainer.train()
    w, a = args.warmup_steps, args.rows_per_step  # the collator runs once per micro-batch
    tokens = sum(real for real, _ in counts[w * a : len(ends) * a])
    return {
        "tokens_per_s": tokens / (ends[-1] - ends[w - 1]),
        "real_fraction": sum(r for r, _ in counts) / sum(c for _, c in counts),
        "first_batch": first,
        "losses": losses,
        "options": trl_changes(config),
    }


def result_line(metric: str, value: float, unit: str, baseline_value: float, **extra: Any) -> str:
    payload = {
        "metric": metric,
        "value": round(value, 4),
        "unit": unit,
        "baseline": "trl.SFTTrainer(packing=True, packing_strategy='bfd')",
        "baseline_value": round(baseline_value, 4),
        "ratio": round(value / baseline_value, 4),
        **extra,
    }
    return "RESULT " + json.dumps(payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=240, help="MetaQA trajectories (1/2/3-hop)")
    parser.add_argument("--metaqa", type=Path, default=METAQA_DIR, help="MetaQA directory")
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--rows-per-step", type=int, default=2)
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="keep inputs and runs here")
    args = parser.parse_args(argv)
    if args.warmup_steps < 1 or args.steps <= args.warmup_steps:
        parser.error("need 1 <= --warmup-steps < --steps")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="kag-bench-sft-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir, data_dir = build_inputs(work, args.docs, args.metaqa)

    from transformers import AutoTokenizer

    from trainer.data import tokenize_dataset

    documents = list(tokenize_dataset(AutoTokenizer.from_pretrained(model_dir), data_dir))
    n_tokens = sum(len(d) for d in documents)
    print(
        f"data: {len(documents)} MetaQA trajectories, {n_tokens} tokens, "
        f"{sum(d.n_targets for d in documents)} assistant targets; torch threads "
        f"{torch.get_num_threads()}"
    )
    ours_runs, trl_runs = [], []
    for repeat in range(args.repeats):
        ours_runs.append(run_ours(args, model_dir, data_dir, work / f"ours-{repeat}"))
        trl_runs.append(
            run_trl(args, model_dir, documents, ours_runs[0]["first_row"], work / "trl")
        )
        print(
            f"repeat {repeat}: ours {ours_runs[-1]['tokens_per_s']:.0f} tok/s, "
            f"TRL {trl_runs[-1]['tokens_per_s']:.0f} tok/s"
        )
    ours = max(ours_runs, key=lambda r: r["tokens_per_s"])
    trl = max(trl_runs, key=lambda r: r["tokens_per_s"])
    print(
        "first identical batch (one packed row, before any update): "
        f"ours ce={ours['first_batch']['ce']:.6f} aux={ours['first_batch']['aux']:.6f} | "
        f"TRL ce={trl['first_batch']['ce']:.6f} aux={trl['first_batch']['aux']:.6f}"
    )
    print(f"losses per step: ours {[round(x, 4) for x in ours['losses']]}")
    print(f"                 TRL  {[round(x, 4) for x in trl['losses']]}")
    common = {
        "max_seq_len": args.max_seq_len,
        "rows_per_step": args.rows_per_step,
        "steps": args.steps,
        "device": "cpu",
    }
    print(
        result_line(
            "sft_tokens_per_s",
            ours["tokens_per_s"],
            "tokens/s",
            trl["tokens_per_s"],
            runs=[round(r["tokens_per_s"]) for r in ours_runs],
            baseline_runs=[round(r["tokens_per_s"]) for r in trl_runs],
            trl_changed_options=trl["options"],
            **common,
        )
    )
    print(
        result_line(
            "sft_real_token_fraction",
            ours["real_fraction"],
            "fraction",
            trl["real_fraction"],
            bfd_row_fill=round(ours["fill"], 4),
            first_batch_loss=ours["first_batch"]["ce"],
            baseline_first_batch_loss=trl["first_batch"]["ce"],
            trl_changed_options=trl["options"],
            **common,
        )
    )
    assert IGNORE_INDEX == -100  # TRL's ignore index; the labels above rely on it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
