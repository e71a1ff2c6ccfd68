"""Supervised fine-tuning of Mixture-of-Experts causal LMs on packed, assistant-masked SFT data.

`SFTConfig` holds every knob with its default and the reason for it; `config.build().train()` (or
`train_sft(config)`) runs the loop in `SFTTrainer.train`, readable top to bottom: batch, forward,
loss, backward, clip, step, log, checkpoint. Everything else is a called function:

| piece                       | home                  |
|-----------------------------|-----------------------|
| rendering + loss masks      | `trainer.data`        |
| best-fit-decreasing packing | `trainer.packing`     |
| document-masked attention   | `trainer.attention`   |
| router losses, expert load  | `trainer.moe`         |
| torchrun, DDP, FSDP2        | `trainer.distributed` |
| JSONL, PNG, TensorBoard     | `trainer.metrics`     |

Outputs in `out_dir`: `metrics.jsonl`, `loss.png`, `checkpoints/step-NNNNNNN/` (model, optimizer,
scheduler, data position, RNG of every rank) and `model/` (Hugging Face safetensors + tokenizer,
which transformers and vLLM load).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from checkpoints import check_model_dir
from trainer.attention import (
    attention_kwargs,
    flatten_rows,
    prepare_model_attention,
    resolve_attention_backend,
)
from trainer.data import tokenize_dataset
from trainer.distributed import (
    DistributedContext,
    all_reduce_sum,
    init_distributed,
    resolve_strategy,
    unwrap,
    wrap_model,
)
from trainer.metrics import MetricsLogger
from trainer.moe import router_stats
from trainer.packing import (
    IGNORE_INDEX,
    PackedBatch,
    PackedRow,
    PackingReport,
    collate_rows,
    pack_documents,
)
from trainer.state import jsonable, rng_state, seed_everything, set_rng_state

__all__ = [
    "SFTConfig",
    "SFTTrainer",
    "SFTResult",
    "PackedCausalLM",
    "PackedDataPlan",
    "train_sft",
    "load_causal_lm",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class SFTConfig:
    """Everything an SFT run needs. Defaults follow the paper's SFT stage where it names one.

    >>> SFTConfig(data_dir="ds", model_dir="tiny", out_dir="runs/sft").learning_rate
    1e-05
    """

    data_dir: str  # dataset directory with data/{split}-{shard:05d}.parquet (DESIGN section 5)
    model_dir: str  # Hugging Face MoE causal LM directory (config, safetensors, tokenizer)
    out_dir: str  # run directory: metrics, checkpoints, final model
    split: str = "train"

    # --- data
    max_seq_len: int = 4096  # tokens per packed row; long tool trajectories need several thousand
    overflow: str = (
        "truncate"  # "truncate" (keep the start) or "drop" conversations longer than a row
    )
    micro_batch_rows: int = 1  # packed rows per forward pass per process
    grad_accum_steps: int = 1  # micro-batches per optimizer step per process
    shuffle: bool = True  # shuffle packed rows each epoch (seeded), so BFD's long-first order is not a curriculum

    # --- optimisation (paper's SFT stage: lr 1e-5, warmup 5%, weight decay 0.1, one epoch)
    learning_rate: float = 1e-5
    warmup_ratio: float = 0.05  # linear warmup over this share of the steps, then cosine decay
    min_lr_ratio: float = 0.0  # cosine decays to learning_rate * min_lr_ratio
    weight_decay: float = 0.1  # AdamW, on matrices only (norm weights and biases are not decayed)
    adam_betas: tuple[float, float] = (0.9, 0.95)  # beta2 0.95 is the usual choice for LLM training
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # clip the global gradient norm; 0 disables
    num_epochs: int = 1
    max_steps: int | None = None  # cap on optimizer steps; when set it is also the schedule length

    # --- MoE
    router_aux_loss_coef: float = 0.001  # Qwen3-MoE's router_aux_loss_coef; 0 disables
    router_z_loss_coef: float = 0.0  # ST-MoE router z-loss (1e-3 in that paper); off by default

    # --- execution
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA if present), "cpu" or "cuda"
    mixed_precision: str = "auto"  # "auto" = bf16 autocast on GPU, fp32 on CPU; or "bf16" / "no"
    attention: str = "auto"  # see trainer.attention.BACKENDS
    parallel: str = (
        "auto"  # "auto" = FSDP2 on GPU, DDP on CPU, nothing for one process; or none/ddp/fsdp
    )
    experts_implementation: str | None = (
        None  # transformers experts kernel ("eager", "grouped_mm", ...)
    )

    # --- outputs
    log_every_steps: int = 1
    checkpoint_every_steps: int = 0  # 0 = no intermediate checkpoints
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    resume: bool = False  # continue from the newest checkpoint in out_dir/checkpoints
    save_final_model: bool = True  # write out_dir/model in safetensors format
    #: also write the model (Hugging Face format, loadable by vLLM) to out_dir/models/step-NNNNNNN
    #: every this many steps, for learning curves; 0 = never
    save_model_every_steps: int = 0
    tensorboard: bool | None = None  # None = when the tensorboard package is installed

    def __post_init__(self) -> None:
        positive = ("max_seq_len", "micro_batch_rows", "grad_accum_steps", "num_epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"SFTConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"SFTConfig.max_steps must be at least 1, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"SFTConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.overflow not in ("truncate", "drop"):
            raise ValueError(
                f"SFTConfig.overflow must be 'truncate' or 'drop', got {self.overflow!r}"
            )
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(
                f"SFTConfig.mixed_precision must be auto, bf16 or no, got {self.mixed_precision!r}"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"SFTConfig.learning_rate must be positive, got {self.learning_rate}")

    def build(self) -> SFTTrainer:
        """Load the model and data and set up the optimiser; `.train()` runs it."""
        return SFTTrainer(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class SFTResult:
    """What a finished run left behind."""

    out_dir: Path
    model_dir: Path | None  # the saved final model (None when save_final_model=False)
    steps: int
    losses: list[
        float
    ]  # per optimizer step, this run only (a resumed run starts after the checkpoint)
    packing: PackingReport


# --------------------------------------------------------------------------- model


def load_causal_lm(model_dir: str | Path, *, experts_implementation: str | None = None) -> Any:
    """A Hugging Face causal LM from a local directory, with fp32 weights for training."""
    from transformers import AutoModelForCausalLM

    path = check_model_dir(model_dir)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if experts_implementation is not None:
        kwargs["experts_implementation"] = experts_implementation
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


class PackedCausalLM(nn.Module):
    """Wraps a Hugging Face MoE causal LM to train on `PackedBatch`es.

    `forward` returns the *summed* cross-entropy over target tokens (so the caller normalises by
    the target count of the whole optimizer step, across micro-batches and processes), the number
    of targets, and the router statistics over real tokens. Logits are computed for target
    positions only: the LM head over the full vocabulary is the largest matmul of a small MoE.
    """

    def __init__(self, model: Any, *, attention: str) -> None:
        super().__init__()
        self.model = model
        self.attention = attention
        config = model.config
        self.top_k = int(getattr(config, "num_experts_per_tok", 0) or 0)
        self.is_moe = self.top_k > 0

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor,
        document_ids: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        batch = PackedBatch(input_ids, labels, position_ids, document_ids)
        if self.attention == "flash_varlen":
            batch = flatten_rows(batch)
        extra = {"output_router_logits": True} if self.is_moe else {}
        out = self.model.get_decoder()(
            input_ids=batch.input_ids, **attention_kwargs(batch, self.attention), **extra
        )
        # shift before selecting: position t predicts labels[t + 1]
        targets = batch.labels[:, 1:]
        selected = targets != IGNORE_INDEX
        hidden = out.last_hidden_state[:, :-1][selected]
        logits = self.model.get_output_embeddings()(hidden).float()
        ce_sum = F.cross_entropy(logits, targets[selected], reduction="sum")
        result = {"ce_sum": ce_sum, "n_targets": selected.sum()}
        if self.is_moe:
            stats = router_stats(out.router_logits, top_k=self.top_k, token_mask=batch.real_tokens)
            result.update(
                aux_loss=stats.aux_loss, z_loss=stats.z_loss, expert_load=stats.expert_load
            )
        return result


# --------------------------------------------------------------------------- data


class PackedDataPlan:
    """The packed rows of a dataset and which of them each process trains on at each step.

    Step `s` of epoch `e` takes the next `rows_per_step = micro_batch_rows * grad_accum_steps *
    world_size` rows of that epoch's (seeded) order; micro-batch `a` of rank `r` is slice
    `a * world_size + r` of them, so two processes see exactly what one process with twice the
    accumulation sees. A short last step is topped up with empty padding rows that train nothing.
    """

    def __init__(
        self,
        rows: list[PackedRow],
        report: PackingReport,
        *,
        micro_batch_rows: int,
        grad_accum_steps: int,
        world_size: int,
        seed: int,
        shuffle: bool,
        pad_token_id: int,
    ) -> None:
        if not rows:
            raise ValueError("the dataset packed into zero rows: nothing to train on")
        self.rows, self.report = rows, report
        self.micro_batch_rows, self.grad_accum_steps = micro_batch_rows, grad_accum_steps
        self.world_size, self.seed, self.shuffle = world_size, seed, shuffle
        self.pad_token_id = pad_token_id
        self.rows_per_step = micro_batch_rows * grad_accum_steps * world_size
        self.steps_per_epoch = math.ceil(len(rows) / self.rows_per_step)
        self._empty = PackedRow(
            np.array([pad_token_id]), np.array([IGNORE_INDEX]), np.array([0]), np.array([-1])
        )

    def fingerprint(self) -> str:
        """Changes when the packed data changes; a checkpoint refuses to resume on other data."""
        digest = hashlib.sha256()
        for row in self.rows:
            digest.update(row.input_ids.tobytes())
            digest.update(row.labels.tobytes())
        return digest.hexdigest()[:16]

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.rows))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))

    def micro_batches(self, step: int, rank: int) -> list[PackedBatch]:
        """The `grad_accum_steps` micro-batches rank `rank` trains on at optimizer step `step`."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        start = within * self.rows_per_step
        batches = []
        for micro in range(self.grad_accum_steps):
            offset = start + (micro * self.world_size + rank) * self.micro_batch_rows
            picked = [
                self.rows[order[i]]
                if i < min(start + self.rows_per_step, len(order))
                else self._empty
                for i in range(offset, offset + self.micro_batch_rows)
            ]
            batches.append(collate_rows(picked, pad_token_id=self.pad_token_id))
        return batches


def plan_data(config: SFTConfig, tokenizer: Any, *, world_size: int) -> PackedDataPlan:
    """Tokenise, mask and pack the whole split (every rank does the same, deterministically)."""
    documents = list(tokenize_dataset(tokenizer, config.data_dir, config.split))
    rows, report = pack_documents(
        documents, max_seq_len=config.max_seq_len, overflow=config.overflow
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError(f"tokenizer in {config.model_dir} has neither a pad nor an eos token")
    return PackedDataPlan(
        rows,
        report,
        micro_batch_rows=config.micro_batch_rows,
        grad_accum_steps=config.grad_accum_steps,
        world_size=world_size,
        seed=config.seed,
        shuffle=config.shuffle,
        pad_token_id=int(pad),
    )


# --------------------------------------------------------------------------- optimisation


def build_optimizer(module: nn.Module, config: SFTConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (decaying norm gains and biases only hurts)."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=config.adam_betas, eps=config.adam_eps
    )


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine to `min_ratio` at `total_steps`.

    >>> [round(warmup_cosine(s, warmup_steps=2, total_steps=6, min_ratio=0.0), 3) for s in range(6)]
    [0.5, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps + 1) / max(1, total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------- the trainer


class SFTTrainer:
    """Built by `SFTConfig.build()`: model, data plan, optimiser and schedule, ready to `train()`."""

    def __init__(self, config: SFTConfig) -> None:
        from transformers import AutoTokenizer

        _check_inputs(config)
        self.config = config
        self.ctx: DistributedContext = init_distributed(device=config.device)
        seed_everything(config.seed + self.ctx.rank)
        self.out_dir = Path(config.out_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_dir)
        self.data = plan_data(config, self.tokenizer, world_size=self.ctx.world_size)

        self.model = load_causal_lm(
            config.model_dir, experts_implementation=config.experts_implementation
        )
        self.attention = resolve_attention_backend(config.attention, self.ctx.device)
        prepare_model_attention(self.model, self.attention)
        self.model.to(self.ctx.device).train()
        self.strategy = resolve_strategy(config.parallel, self.ctx)
        self.module = wrap_model(
            PackedCausalLM(self.model, attention=self.attention),
            strategy=self.strategy,
            ctx=self.ctx,
        )
        self.optimizer = build_optimizer(self.module, config)
        epoch_steps = self.data.steps_per_epoch * config.num_epochs
        self.total_steps = min(epoch_steps, config.max_steps) if config.max_steps else epoch_steps
        warmup = math.ceil(config.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(
                s, warmup_steps=warmup, total_steps=self.total_steps, min_ratio=config.min_lr_ratio
            ),
        )
        self.step = 0
        self.logger = MetricsLogger(
            self.out_dir, enabled=self.ctx.is_main, tensorboard=config.tensorboard
        )

    def train(self) -> SFTResult:
        """Run the optimizer steps left; return the losses and where the model was saved."""
        config, ctx = self.config, self.ctx
        if config.resume:
            self._resume_from_latest()
        self._write_run_info()
        losses = []
        while self.step < self.total_steps:
            started = time.perf_counter()
            batches = [b.to(ctx.device) for b in self.data.micro_batches(self.step, ctx.rank)]
            # normalise by the targets of the whole step on every rank, so micro-batches and
            # processes with more assistant tokens weigh more, exactly as one big batch would
            step_targets = all_reduce_sum(
                torch.tensor(float(sum(b.n_targets for b in batches))), ctx
            )
            step_targets = step_targets.clamp_min(1.0).to(ctx.device)
            totals = torch.zeros(4, device=ctx.device)  # ce_sum, aux, z, real tokens
            loads = []
            self.optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(batches):
                with self._sync_gradients(last=i == len(batches) - 1), self._autocast():
                    out = self.module(*batch.tensors())
                    loss = out["ce_sum"] * ctx.world_size / step_targets
                    if "aux_loss" in out:
                        router = (
                            config.router_aux_loss_coef * out["aux_loss"]
                            + config.router_z_loss_coef * out["z_loss"]
                        )
                        loss = loss + router / len(batches)
                        loads.append(out["expert_load"])
                loss.backward()
                totals += torch.stack(
                    [
                        out["ce_sum"].detach(),
                        out.get("aux_loss", torch.zeros(())).detach().to(ctx.device),
                        out.get("z_loss", torch.zeros(())).detach().to(ctx.device),
                        batch.real_tokens.sum().to(totals.dtype),
                    ]
                )
            grad_norm = self._clip_gradients()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1

            totals = all_reduce_sum(totals, ctx)
            loss_value = float(totals[0] / step_targets)
            losses.append(loss_value)
            elapsed = time.perf_counter() - started
            n_micro = len(batches) * ctx.world_size
            capacity = sum(b.input_ids.numel() for b in batches) * ctx.world_size
            if self.step % config.log_every_steps == 0 or self.step == self.total_steps:
                self.logger.log(
                    self.step,
                    {
                        "epoch": (self.step - 1) // self.data.steps_per_epoch,
                        "loss": loss_value,
                        "aux_loss": float(totals[1]) / n_micro,
                        "z_loss": float(totals[2]) / n_micro,
                        "lr": self.scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "tokens": int(totals[3]),
                        "target_tokens": int(step_targets),
                        "tokens_per_s": float(totals[3]) / elapsed,
                        "padding_fraction": 1.0 - float(totals[3]) / capacity,
                        "expert_load": _mean_load(loads, ctx),
                        "step_time_s": elapsed,
                        "wall_time": time.time(),
                    },
                )
            if config.checkpoint_every_steps and self.step % config.checkpoint_every_steps == 0:
                self.save_checkpoint()
            if config.save_model_every_steps and self.step % config.save_model_every_steps == 0:
                self.save_final_model(self.out_dir / "models" / f"step-{self.step:07d}")

        model_dir = self.save_final_model() if config.save_final_model else None
        self.logger.close()
        ctx.barrier()
        return SFTResult(
            out_dir=self.out_dir,
            model_dir=model_dir,
            steps=self.step,
            losses=losses,
            packing=self.data.report,
        )

    def close(self) -> None:
        """Leave the process group (call once the trainer is no longer needed)."""
        self.ctx.close()

    # ----------------------------------------------------------------------- step helpers

    def _sync_gradients(self, *, last: bool) -> contextlib.AbstractContextManager[Any]:
        # all-reduce gradients once per optimizer step, on the last micro-batch only
        if self.strategy == "ddp" and not last:
            return self.module.no_sync()
        if self.strategy == "fsdp":
            self.module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        mode = self.config.mixed_precision
        use_bf16 = mode == "bf16" or (mode == "auto" and self.ctx.device.type == "cuda")
        if not use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=torch.bfloat16)

    def _clip_gradients(self) -> float:
        params = [p for p in self.module.parameters() if p.grad is not None]
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm)

    # ----------------------------------------------------------------------- checkpoints

    def _write_run_info(self) -> None:
        if not self.ctx.is_main:
            return
        info = {
            "config": jsonable(asdict(self.config)),
            "world_size": self.ctx.world_size,
            "attention": self.attention,
            "parallel": self.strategy,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.data.steps_per_epoch,
            "packing": asdict(self.data.report),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")

    def save_checkpoint(self) -> Path:
        """Write `checkpoints/step-NNNNNNN/`: model, optimizer, scheduler, data position, RNG."""
        from safetensors.torch import save_file
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.module, options=options)
        optim_state = get_optimizer_state_dict(self.module, self.optimizer, options=options)
        root = self.out_dir / "checkpoints"
        final = root / f"step-{self.step:07d}"
        tmp = root / f".tmp-step-{self.step:07d}"
        if self.ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.ctx.barrier()
        torch.save(rng_state(), tmp / f"rng-rank{self.ctx.rank:05d}.pt")
        if self.ctx.is_main:
            save_file(_distinct_tensors(model_state), tmp / "model.safetensors")
            torch.save(optim_state, tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            state = {
                "step": self.step,
                "rows_consumed": self.step * self.data.rows_per_step,
                "world_size": self.ctx.world_size,
                "data_fingerprint": self.data.fingerprint(),
                "total_steps": self.total_steps,
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
        self.ctx.barrier()
        if self.ctx.is_main:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in sorted(root.glob("step-*"))[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.ctx.barrier()
        return final

    def _resume_from_latest(self) -> None:
        checkpoints = sorted((self.out_dir / "checkpoints").glob("step-*"))
        if not checkpoints:
            raise ValueError(
                f"resume asked for, but {self.out_dir}/checkpoints has no step-* checkpoint"
            )
        self.load_checkpoint(checkpoints[-1])

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything `save_checkpoint` wrote; training continues exactly where it stopped."""
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        path = Path(path)
        state = json.loads((path / "trainer_state.json").read_text())
        if state["world_size"] != self.ctx.world_size:
            raise ValueError(
                f"checkpoint {path} was written by {state['world_size']} processes; resume with the "
                f"same number (got {self.ctx.world_size}) so the data order stays the same"
            )
        if state["data_fingerprint"] != self.data.fingerprint():
            raise ValueError(
                f"checkpoint {path} was trained on other data (packed-data fingerprint differs); "
                "resume with the same dataset, model tokenizer and packing settings"
            )
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        set_model_state_dict(self.module, load_file(path / "model.safetensors"), options=options)
        optim_state = torch.load(path / "optimizer.pt", weights_only=False)
        set_optimizer_state_dict(self.module, self.optimizer, optim_state, options=options)
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        self.step = int(state["step"])
        rng_file = path / f"rng-rank{self.ctx.rank:05d}.pt"
        set_rng_state(torch.load(rng_file, weights_only=False))
        self.logger.truncate_after(self.step)

    def save_final_model(self, target: Path | None = None) -> Path:
        """Save the model as Hugging Face safetensors (plus tokenizer) in `target` (`out_dir/model`)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        target = target or self.out_dir / "model"
        inner = unwrap(self.module).model
        if self.strategy == "fsdp":
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full = get_model_state_dict(inner, options=options)
        if self.ctx.is_main:
            model = inner
            if self.strategy == "fsdp":
                from transformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_config(inner.config, dtype=torch.float32)
                model.load_state_dict(full)
            model.save_pretrained(target, safe_serialization=True)
            self.tokenizer.save_pretrained(target)
        self.ctx.barrier()
        return target


def _distinct_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every tensor in storage of its own: tied weights (an LM head that is the input
    embedding) share storage, which safetensors refuses to write, so the second name gets a copy."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        out[name] = tensor.contiguous() if ptr not in seen else tensor.clone().contiguous()
        seen.add(ptr)
    return out


def train_sft(config: SFTConfig) -> SFTResult:
    """Build and run an SFT job, leaving the process group when done.

    >>> train_sft(SFTConfig(data_dir="ds", model_dir="tiny", out_dir="run"))  # doctest: +SKIP
    """
    trainer = config.build()
    try:
        return trainer.train()
    finally:
        trainer.close()


# --------------------------------------------------------------------------- small helpers


def _check_inputs(config: SFTConfig) -> None:
    """Name a missing model or dataset directory before transformers reads it as a hub id."""
    check_model_dir(config.model_dir)
    data_dir = Path(config.data_dir)
    if not data_dir.is_dir():
        raise ValueError(
            f"dataset directory {data_dir} does not exist: pass a directory written by `kag export sft`"
        )


def _mean_load(loads: list[torch.Tensor], ctx: DistributedContext) -> list[list[float]]:
    if not loads:
        return []
    total = all_reduce_sum(torch.stack(loads).sum(0), ctx)
    return [[round(x, 4) for x in row] for row in (total / (len(loads) * ctx.world_size)).tolist()]
