"""Multi-teacher on-policy distillation (OPD): the student rolls out, its routed teacher scores
the student's own tokens, and the student moves toward the teacher on them.

| name                 | what it gives                                                           |
|----------------------|-------------------------------------------------------------------------|
| `OPDStepConfig`      | the loss (`trainer.opd_loss.OPDLossConfig`) and optimizer, with sources |
| `check_tokenizers`   | the student's and every teacher's tokenizer agree, or a ValueError      |
|                      | naming the mismatch (vocabulary size, special tokens, chat template)    |
| `check_routes`       | every routing key has a teacher, or a ValueError naming the key         |
| `read_routes`        | task id -> routing key (`teacher` column) of an `opd` dataset split     |
| `load_teachers`      | key -> teacher model, a checkpoint shared by several keys loaded once   |
| `score_tokens`       | a teacher's top-k ids and log-probs (and the sampled token's log-prob)  |
|                      | at every position: one transformers forward                             |
| `OPDConfig`          | rollouts per step, retries of aborted rollouts, the step                |
| `OPDTrainer`         | `step(tasks)`: rollouts -> teacher scores -> loss -> step -> sync       |
| `OPDTrainConfig`     | steps, seed, checkpoints                                                |
| `train_opd`          | the loop, resumable from its out dir (the GRPO loop's checkpoints)       |

Like GRPO, nothing here imports the graph or an engine: the caller hands over a rollout source
(`selfplay.generation.RolloutSource` fits) and an engine with `update_weights`.

Teacher scoring is a transformers forward of the teacher over the student's tokens (`top_k`
ids per position from the full softmax). vLLM's prompt log-probs would be the other route; they
are not wired yet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from trainer.grpo_data import build_batch, rollout_tokens
from trainer.grpo_train import (
    PromptSchedule,
    drawn_tasks,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_final_model,
    truncate_jsonl,
)
from trainer.metrics import MetricsLogger, read_metrics
from trainer.moe import router_stats
from trainer.opd_loss import OPDLossConfig, opd_loss
from trainer.state import jsonable, seed_everything

__all__ = [
    "OPDStepConfig",
    "check_tokenizers",
    "check_routes",
    "read_routes",
    "load_teachers",
    "TeacherScores",
    "score_tokens",
    "OPDConfig",
    "OPDTrainer",
    "OPDTrainConfig",
    "OPDTrainResult",
    "train_opd",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class OPDStepConfig:
    """How one OPD step updates the student.

    >>> OPDStepConfig().learning_rate
    1e-06
    """

    #: the objective (SVA by default, the sampled-token reverse KL as the baseline)
    loss: OPDLossConfig = field(default_factory=OPDLossConfig)
    #: AdamW learning rate; 1e-6 as GRPO here (verl, TRL); Thinking Machines' OPD uses LoRA
    #: rates, tiny models need more (the loop passes its own)
    learning_rate: float = 1e-6
    #: gradient-norm clip; 1.0 as verl's `grad_clip` and TRL's `max_grad_norm`
    max_grad_norm: float = 1.0
    #: AdamW weight decay; 0.01 as verl's actor optimizer
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


# --------------------------------------------------------------------------- before any work


def _special_tokens(tokenizer: Any) -> dict[str, Any]:
    return {
        "eos": tokenizer.eos_token,
        "pad": tokenizer.pad_token,
        "bos": tokenizer.bos_token,
        "specials": sorted(tokenizer.all_special_tokens),
        "ids": sorted(tokenizer.all_special_ids),
    }


def check_tokenizers(student: Any, teachers: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the first teacher whose tokenizer differs from the student's in
    vocabulary size, special tokens or chat template (distilling per token id needs one vocabulary).

    >>> check_tokenizers(student_tok, {"search": teacher_tok})  # doctest: +SKIP
    """
    size = len(student)
    specials = _special_tokens(student)
    template = getattr(student, "chat_template", None)
    for key, tok in teachers.items():
        if len(tok) != size:
            raise ValueError(
                f"teacher {key!r} has a vocabulary of {len(tok)} tokens, the student {size}: "
                "OPD compares distributions token id by token id, so every teacher must share "
                "the student's tokenizer"
            )
        theirs = _special_tokens(tok)
        if theirs != specials:
            diff = {k: (specials[k], theirs[k]) for k in specials if specials[k] != theirs[k]}
            raise ValueError(
                f"teacher {key!r} has other special tokens than the student "
                f"(student, teacher): {diff}"
            )
        if getattr(tok, "chat_template", None) != template:
            raise ValueError(
                f"teacher {key!r} has another chat template than the student: the teacher must "
                "score the conversation the student was prompted with"
            )


def check_routes(keys: Sequence[str], teachers: Mapping[str, Any]) -> None:
    """Every routing key must have exactly one teacher.

    >>> check_routes(["search"], {"search": "t1"})
    >>> check_routes(["compute"], {"search": "t1"})
    Traceback (most recent call last):
    ...
    ValueError: routing key 'compute' (1 rows) has no teacher; teachers given: search (pass --teacher compute=DIR)
    """
    missing: dict[str, int] = {}
    for k in keys:
        if k not in teachers:
            missing[k] = missing.get(k, 0) + 1
    if missing:
        key, n = next(iter(missing.items()))
        more = (
            f" (and {len(missing) - 1} more keys: {sorted(missing)[1:]})"
            if len(missing) > 1
            else ""
        )
        raise ValueError(
            f"routing key {key!r} ({n} rows) has no teacher{more}; teachers given: "
            f"{', '.join(sorted(teachers)) or 'none'} (pass --teacher {key}=DIR)"
        )


def read_routes(data_dir: str | Path, *, split: str = "train") -> dict[str, str]:
    """Task id -> routing key of an `opd` dataset split (its `teacher` column), in file order."""
    files = sorted((Path(data_dir) / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no data/{split}-*.parquet files (an opd export?)")
    routes: dict[str, str] = {}
    for f in files:
        names = pq.read_schema(f).names
        if "teacher" not in names:
            raise ValueError(f"{f}: no `teacher` column; export the dataset with `kag export opd`")
        table = pq.read_table(f, columns=["task_id", "teacher"]).to_pydict()
        for tid, key in zip(table["task_id"], table["teacher"], strict=True):
            routes.setdefault(str(tid), str(key))
    return routes


def load_teachers(paths: Mapping[str, str | Path], *, load: Callable[[str], Any]) -> dict[str, Any]:
    """Key -> frozen teacher model; keys naming the same checkpoint share one loaded model.

    >>> load_teachers({"search": "t", "compute": "t"}, load=lambda p: object())  # doctest: +SKIP
    """
    loaded: dict[str, Any] = {}
    out = {}
    for key, path in paths.items():
        real = str(Path(path).resolve())
        if real not in loaded:
            loaded[real] = load(real).eval().requires_grad_(False)
        out[key] = loaded[real]
    return out


@dataclass(frozen=True, slots=True)
class TeacherScores:
    """`topk_ids[b, t]` / `topk_logp[b, t]`: the teacher's k most likely ids for position t and
    their log-probs (first = top-1); `sampled_logp[b, t]`: its log-prob of the token at t."""

    topk_ids: torch.Tensor
    topk_logp: torch.Tensor
    sampled_logp: torch.Tensor


@torch.no_grad()
def score_tokens(
    teacher: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, top_k: int
) -> TeacherScores:
    """The teacher's top-k at every position of `input_ids` (aligned as `token_logprobs`:
    position t holds the prediction of token t; position 0 is zeros).

    >>> s = score_tokens(teacher, ids, mask, top_k=16)  # doctest: +SKIP
    >>> s.topk_ids.shape                               # doctest: +SKIP
    torch.Size([2, 57, 16])
    """
    out = teacher(input_ids=input_ids, attention_mask=attention_mask.long())
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    k = min(top_k, logp.shape[-1])
    top_logp, top_ids = logp.topk(k, dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:, None])[..., 0]
    b = input_ids.shape[0]
    return TeacherScores(
        torch.cat([torch.zeros((b, 1, k), dtype=torch.long), top_ids], dim=1),
        torch.cat([torch.zeros((b, 1, k)), top_logp], dim=1),
        torch.cat([torch.zeros((b, 1)), picked], dim=1),
    )


# --------------------------------------------------------------------------- the step


@dataclass(frozen=True, kw_only=True, slots=True)
class OPDConfig:
    """What one OPD step rolls out and how it trains.

    >>> OPDConfig().prompts_per_step
    8
    """

    #: prompts rolled out per step, one rollout each (OPD needs no group: the teacher's
    #: per-token scores are the signal; GKD and Thinking Machines sample one per prompt)
    prompts_per_step: int = 8
    #: rollouts per prompt
    samples: int = 1
    #: rounds of retrying `aborted` rollouts (the engine or a tool failed); `truncated` ones are
    #: kept: a cut-off prefix is still the student's own tokens
    max_retries: int = 2
    #: the step
    step: OPDStepConfig = field(default_factory=OPDStepConfig)

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


class OPDTrainer:
    """OPD of `model` (the student) from `teachers` (routing key -> model), its rollouts from an
    engine it keeps in sync. `route(task)` is the routing key of a task. `source` needs
    `generate(tasks, run=, samples=)` and `generate_samples(work, run=)` (retries of aborted
    rollouts as new samples), as `selfplay.generation.RolloutSource` has.

    >>> trainer = OPDTrainer(student, tok, teachers={"search": t}, route=lambda t: t.family,
    ...                      source=source, engine=engine, run=run)  # doctest: +SKIP
    >>> trainer.step(iter(tasks))["coverage"]                         # doctest: +SKIP
    0.93
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        teachers: Mapping[str, Any],
        route: Callable[[Any], str],
        source: Any,
        engine: Any,
        run: Any,
        config: OPDConfig = OPDConfig(),
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.teachers = dict(teachers)
        self.route = route
        self.source = source
        self.engine = engine
        self.run = run
        self.config = config
        step = config.step
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=step.learning_rate,
            weight_decay=step.weight_decay,
        )
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        self.steps = 0

    def _rollouts(self, tasks: list[Any]) -> tuple[list[Any], dict[str, float]]:
        cfg = self.config
        scored = list(self.source.generate(tasks, run=self.run, samples=cfg.samples))
        retried = 0
        next_sample = {t.id: cfg.samples for t in tasks}
        for _ in range(cfg.max_retries):
            aborted = [s for s in scored if s.rollout.status == "aborted"]
            if not aborted:
                break
            retried += len(aborted)
            # a retry is a new sample of its task: a trajectory id and seed not used before
            work = []
            for s in aborted:
                task = s.rollout.task
                work.append((task, next_sample[task.id]))
                next_sample[task.id] += 1
            again = self.source.generate_samples(work, run=self.run)
            keep = [s for s in scored if s.rollout.status != "aborted"]
            scored = keep + list(again)
        statuses = [s.rollout.status for s in scored]
        kept = [s for s in scored if s.rollout.status != "aborted"]
        return kept, {
            "rollouts": float(len(scored)),
            "retried": float(retried),
            "aborted": float(statuses.count("aborted")),
            "truncated": float(statuses.count("truncated")),
            "accept_rate": sum(s.verdict == "accepted" for s in scored) / max(len(scored), 1),
            "generated_tokens": float(sum(s.rollout.n_generated for s in scored)),
        }

    def step(self, tasks: Iterator[Any]) -> dict[str, float]:
        """Roll out, score with each row's teacher, take one optimizer step, sync the engine.

        Returns the loss metrics of `opd_loss` (overall and per routing key), the rollout
        counts (`rollouts`, `retried`, `aborted`, `truncated`, `accept_rate`) and seconds per
        phase (`time_rollout_s`, `time_score_s`, `time_train_s`, `time_sync_s`).
        """
        cfg = self.config
        started = time.perf_counter()
        drawn = [t for _, t in zip(range(cfg.prompts_per_step), tasks, strict=False)]
        if not drawn:
            return {"trained": 0.0}
        kept, metrics = self._rollouts(drawn)
        metrics["time_rollout_s"] = time.perf_counter() - started
        if not kept:
            return {**metrics, "trained": 0.0, "weight_version": float(self.engine.weight_version)}

        started = time.perf_counter()
        specs = self.source.tools.specs() or None
        tokens = [
            rollout_tokens(
                self.tokenizer,
                s.rollout.messages,
                tools=specs,
                sampled_token_ids=s.rollout.sampled_token_ids,
                sampled_logprobs=s.rollout.sampled_logprobs,
                row_id=s.rollout.id,
            )
            for s in kept
        ]
        batch = build_batch(tokens, [0.0] * len(kept), list(range(len(kept))), pad_id=self.pad_id)
        keys = [self.route(s.rollout.task) for s in kept]
        check_routes(keys, self.teachers)
        k = cfg.step.loss.top_k
        n, length = batch.input_ids.shape
        topk_ids = torch.zeros((n, length, k), dtype=torch.long)
        topk_logp = torch.zeros((n, length, k))
        sampled = torch.zeros((n, length))
        for key in dict.fromkeys(keys):
            rows = [i for i, x in enumerate(keys) if x == key]
            width = int(batch.attention_mask[rows].sum(-1).max())
            scores = score_tokens(
                self.teachers[key],
                batch.input_ids[rows, :width],
                batch.attention_mask[rows, :width],
                top_k=k,
            )
            kk = scores.topk_ids.shape[-1]
            topk_ids[rows, :width, :kk] = scores.topk_ids
            topk_logp[rows, :width, :kk] = scores.topk_logp
            sampled[rows, :width] = scores.sampled_logp
        metrics["time_score_s"] = time.perf_counter() - started

        started = time.perf_counter()
        self.model.train()
        student_logp, aux = _student_logprobs(self.model, batch.input_ids, batch.attention_mask)
        loss, loss_metrics = opd_loss(
            student_logp,
            batch.input_ids,
            batch.loss_mask,
            keys,
            topk_ids=topk_ids,
            topk_logp=topk_logp,
            teacher_sampled_logp=sampled,
            config=cfg.step.loss,
            aux_loss=aux,
        )
        with torch.no_grad():  # the engine sampled from the weights the trainer now scores
            picked = student_logp.gather(-1, batch.input_ids[..., None])[..., 0]
            known = batch.rollout_known
            if bool(known.any()):
                metrics["mismatch_abs_logp"] = float(
                    (picked - batch.rollout_logp)[known].abs().mean()
                )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.step.max_grad_norm)
        self.optimizer.step()
        metrics.update(loss_metrics)
        metrics["grad_norm"] = float(grad_norm)
        metrics["n_tokens"] = float(batch.loss_mask.sum())
        metrics["time_train_s"] = time.perf_counter() - started

        started = time.perf_counter()
        sync = self.engine.update_weights(self.model)
        self.steps += 1
        metrics.update(
            trained=1.0,
            weight_version=float(sync.version),
            time_sync_s=time.perf_counter() - started,
            n_rollouts=float(len(kept)),
        )
        return metrics


def _student_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The student's full log-softmax `[B, T, V]` aligned as `trainer.grpo.token_logprobs`
    (position 0 zeros),
    and the MoE load-balancing loss over the real tokens (None for a dense model)."""
    is_moe = getattr(model.config, "num_experts_per_tok", None) is not None
    extra = {"output_router_logits": True} if is_moe else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask.long(), **extra)
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    logp = torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)
    aux = None
    if is_moe and getattr(out, "router_logits", None):
        aux = router_stats(
            out.router_logits, top_k=model.config.num_experts_per_tok, token_mask=attention_mask
        ).aux_loss
    return logp, aux


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True, kw_only=True, slots=True)
class OPDTrainConfig:
    """An OPD run: the prompts of an `opd` dataset split, `steps` steps, checkpoints in `out_dir`.

    >>> OPDTrainConfig(data_dir="opd", out_dir="runs/opd").steps
    10
    """

    data_dir: str
    out_dir: str
    split: str = "train"
    steps: int = 10
    seed: int = 0
    #: checkpoint every N steps (and after the last)
    save_every: int = 1
    keep_checkpoints: int = 2
    #: run name in the rollout Runs' ids (`train:NAME:step-N`); default: the out dir's name
    name: str | None = None
    tensorboard: bool | None = None
    opd: OPDConfig = field(default_factory=OPDConfig)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.save_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("save_every and keep_checkpoints must be >= 1")

    @property
    def run_name(self) -> str:
        return self.name or Path(self.out_dir).name


@dataclass(frozen=True, slots=True)
class OPDTrainResult:
    out_dir: Path
    steps: int
    resumed_from: int
    model_dir: Path
    loss_png: Path | None
    metrics: list[dict[str, Any]]


def train_opd(
    model: Any,
    tokenizer: Any,
    *,
    config: OPDTrainConfig,
    teachers: Mapping[str, Any],
    route: Callable[[Any], str],
    engine: Any,
    task_of: Callable[[str], Any],
    rollouts_for: Callable[[str], tuple[Any, Any]],
) -> OPDTrainResult:
    """Distil `teachers` into `model` on the prompts of `config.data_dir`, resuming from
    `out_dir` (model, optimizer, RNGs and prompt cursor), as `trainer.grpo_train.train_grpo`.

    >>> train_opd(student, tok, config=cfg, teachers=t, route=lambda t: t.family, engine=e,
    ...           task_of=graph_task, rollouts_for=source_of_run)  # doctest: +SKIP
    """
    from trainer.grpo_train import read_prompt_ids, run_id_of_step

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schedule = PromptSchedule(
        read_prompt_ids(config.data_dir, split=config.split), seed=config.seed
    )
    trainer = OPDTrainer(
        model,
        tokenizer,
        teachers=teachers,
        route=route,
        source=None,
        engine=engine,
        run=None,
        config=config.opd,
    )
    logger = MetricsLogger(out_dir, tensorboard=config.tensorboard, curve="loss")
    step = 0
    latest = latest_checkpoint(out_dir)
    if latest is not None:
        step, schedule = load_checkpoint(latest, trainer, schedule.task_ids)  # type: ignore[arg-type]
        engine.update_weights(model)
    else:
        seed_everything(config.seed)
    resumed_from = step
    logger.truncate_after(step)
    truncate_jsonl(out_dir / "prompts.jsonl", step)
    info = {"config": jsonable(asdict(config)), "prompts": len(schedule.task_ids)}
    (out_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    while step < config.steps:
        step += 1
        started = time.perf_counter()
        run_id = run_id_of_step(config.run_name, step)
        trainer.source, trainer.run = rollouts_for(run_id)
        drawn: list[str] = []
        metrics: dict[str, Any] = {"run_id": run_id}
        metrics.update(trainer.step(drawn_tasks(schedule, task_of, drawn)))
        metrics["prompts"] = len(drawn)
        metrics["time_step_s"] = time.perf_counter() - started
        phases = ("time_rollout_s", "time_score_s", "time_train_s", "time_sync_s")
        metrics["time_other_s"] = max(
            0.0, metrics["time_step_s"] - sum(metrics.get(k, 0.0) for k in phases)
        )
        with (out_dir / "prompts.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "run_id": run_id, "task_ids": drawn}) + "\n")
        logger.log(step, metrics)
        if step % config.save_every == 0 or step == config.steps:
            save_checkpoint(out_dir, step, trainer, schedule, keep=config.keep_checkpoints)  # type: ignore[arg-type]
    model_dir = save_final_model(model, tokenizer, out_dir)
    loss_png = logger.close()
    return OPDTrainResult(
        out_dir=out_dir,
        steps=step,
        resumed_from=resumed_from,
        model_dir=model_dir,
        loss_png=loss_png,
        metrics=read_metrics(logger.path),
    )
