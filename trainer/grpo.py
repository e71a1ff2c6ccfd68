"""One GRPO optimizer step on a transformers causal LM, readable top to bottom.

| name               | what it gives                                                          |
|--------------------|------------------------------------------------------------------------|
| `GRPOStepConfig`   | the loss (`GRPOLossConfig`) and the optimizer settings, with sources   |
| `token_logprobs`   | per-token log-probs, entropies and the MoE load-balancing loss         |
| `grpo_step`        | old/ref log-probs -> loss -> backward -> clip -> optimizer step(s)      |
| `RewardShaping`    | efficiency (turns past the free ones) and repeated-tool-call penalties |
| `GRPOConfig`       | samples per prompt, groups per step, dynamic-sampling refills, the step |
| `GRPOTrainer`      | `step(tasks)`: rollouts -> drop uniform groups -> batch -> step -> sync |

`grpo_step` knows no engine and no graph. `GRPOTrainer` drives a rollout source and an engine
it is given (duck-typed: `selfplay.generation.RolloutSource` and `selfplay.engines.vllm.
VLLMEngine` fit), so `trainer` still imports no other package of the project. By default one
optimizer step per batch of rollouts (verl's and TRL's default `ppo_epochs=1` /
`num_iterations=1`): the "old" policy is then the current one before the step, so the ratio
starts at 1 and the clipping acts only when `GRPOStepConfig.mini_batches` or `epochs` make
several steps of one batch; the mismatch against the engine is what `rollout_logp` corrects.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from trainer.grpo_data import GRPOBatch, build_batch, rollout_tokens
from trainer.grpo_loss import AGGREGATIONS, GRPOLossConfig, filter_uniform_groups, grpo_loss
from trainer.moe import router_stats

__all__ = [
    "GRPOStepConfig",
    "TokenLogprobs",
    "token_logprobs",
    "grpo_step",
    "REWARD_BASES",
    "RewardShaping",
    "repeated_tool_calls",
    "GRPOConfig",
    "GRPOTrainer",
    "step_scores",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class GRPOStepConfig:
    """How one GRPO step updates the model.

    >>> GRPOStepConfig().learning_rate
    1e-06
    """

    #: the objective (clipping, KL, entropy, TIS, process advantage, MoE aux)
    loss: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    #: AdamW learning rate; 1e-6 as verl's GRPO examples and TRL's `GRPOConfig`
    learning_rate: float = 1e-6
    #: the temperature the rollouts were sampled at: log-probs, ratios, KL and entropy are those
    #: of the distribution sampled from (logits / temperature), as verl's actor and TRL's
    #: `GRPOTrainer` compute them. Give the engine's log-probs after temperature too (vLLM's
    #: `logprobs_mode="processed_logprobs"`), or every ratio to the engine is off
    temperature: float = 1.0
    #: gradient-norm clip; 1.0 as verl's `grad_clip` and TRL's `max_grad_norm`
    max_grad_norm: float = 1.0
    #: AdamW weight decay; 0.01 as verl's actor optimizer (TRL: 0.0)
    weight_decay: float = 0.01
    #: rollouts per forward/backward pass; the gradients of a step's micro-batches add up to
    #: the whole batch's (each micro-batch's loss is weighted by its share of the trained tokens,
    #: or of the sequences under sequence-mean), so this bounds memory, not the update. As
    #: verl's `ppo_micro_batch_size_per_gpu` and TRL's `per_device_train_batch_size`; 8 keeps a
    #: step of 64 rollouts of 2,048 tokens under 4 GiB on the tiny model. None: one pass.
    micro_batch_rows: int | None = 8
    #: optimizer steps per pass over a batch of rollouts: the batch is cut into this many
    #: consecutive slices (verl's `train_batch_size / ppo_mini_batch_size`, TRL's
    #: `steps_per_generation`); 1, one step per batch, as both default to. More steps learn more
    #: from each batch's rollouts, whose generation is most of a step's time; the updates after
    #: the first are off-policy and the clipping bounds them
    mini_batches: int = 1
    #: passes over each batch (verl's `ppo_epochs`, TRL's `num_iterations`, the GRPO paper's mu);
    #: 1 as both
    epochs: int = 1

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.temperature > 0:
            raise ValueError(
                f"temperature must be positive, got {self.temperature} (greedy rollouts have "
                "no spread to learn from: sample them)"
            )
        if self.micro_batch_rows is not None and self.micro_batch_rows < 1:
            raise ValueError(f"micro_batch_rows must be >= 1 or None, got {self.micro_batch_rows}")
        for name in ("mini_batches", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=self.learning_rate,
            weight_decay=self.weight_decay,
        )


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """`logp[b, t]` = log p(ids[b, t] | ids[b, :t]) (0 at t = 0), `entropy[b, t]` of that
    prediction, and the MoE load-balancing loss over the real tokens (None for a dense model)."""

    logp: torch.Tensor
    entropy: torch.Tensor
    aux_loss: torch.Tensor | None


def token_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    with_entropy: bool = True,
    temperature: float = 1.0,
) -> TokenLogprobs:
    """Per-token log-probabilities of `input_ids` under `model`, aligned with the ids.

    Shifting happens here once: position t is scored by the logits at t - 1, so a loss mask over
    the ids (assistant tokens) applies to the result as is. With `temperature` the log-probs
    and entropies are those of softmax(logits / temperature), the distribution sampled from.

    >>> lp = token_logprobs(model, batch.input_ids, batch.attention_mask)  # doctest: +SKIP
    >>> lp.logp.shape == batch.input_ids.shape                            # doctest: +SKIP
    True
    """
    is_moe = getattr(model.config, "num_experts_per_tok", None) is not None
    extra = {"output_router_logits": True} if is_moe else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask.long(), **extra)
    logits = out.logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, 1:, None]
    if with_entropy:
        log_probs = torch.log_softmax(logits, dim=-1)
        picked = log_probs.gather(-1, targets)[..., 0]
        ent = -(log_probs.exp() * log_probs).sum(dim=-1)
        entropy = torch.cat([torch.zeros_like(ent[:, :1]), ent], dim=1)
    else:
        # the picked logit minus the log-normaliser: no (batch, time, vocab) log-softmax written
        picked = logits.gather(-1, targets)[..., 0] - torch.logsumexp(logits, dim=-1)
    logp = torch.cat([torch.zeros_like(picked[:, :1]), picked], dim=1)
    if not with_entropy:
        entropy = torch.zeros_like(logp)
    aux = None
    if is_moe and getattr(out, "router_logits", None):
        stats = router_stats(
            out.router_logits, top_k=model.config.num_experts_per_tok, token_mask=attention_mask
        )
        aux = stats.aux_loss
    return TokenLogprobs(logp, entropy, aux)


def grpo_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: GRPOBatch,
    *,
    config: GRPOStepConfig = GRPOStepConfig(),
    ref_model: Any = None,
    old_logp: torch.Tensor | None = None,
) -> dict[str, float]:
    """GRPO's optimizer steps on one `batch` of rollouts; returns the loss metrics plus
    `grad_norm`, `reward_mean`, `reward_std`, `updates` and seconds per phase (`time_ref_s`,
    `time_old_s`, `time_train_s`).

    With the defaults this is one optimizer step on the whole batch. `config.mini_batches`
    splits the batch into that many consecutive slices (whole groups stay together when they
    divide evenly), one optimizer step each, and `config.epochs` passes over them: verl's
    `ppo_mini_batch_size` and `ppo_epochs`, TRL's `steps_per_generation` and `num_iterations`.
    Every update after the first is off-policy, so the "old" log-probs are then taken once,
    before the first update, and the clipping bounds how far the later updates move
    (`clip_frac` > 0). Each update sends its rows through the model `config.micro_batch_rows` at
    a time, longest first, gradients accumulating: the same update as one pass over its rows.
    The loss metrics are the updates' means of their micro-batches' token-weighted means
    (`loss` is a whole update's, `n_tokens` the batch's trained tokens). `old_logp` defaults
    to the model's own log-probs before the first update. `ref_model` is needed when
    `config.loss.kl_coef` > 0 and is never run otherwise.
    """
    loss_config = config.loss
    if loss_config.kl_coef > 0 and ref_model is None:
        raise ValueError("kl_coef > 0 needs ref_model (the frozen reference policy)")
    rows = batch.n_rollouts
    n_slices = min(config.mini_batches, rows)
    bounds = [round(i * rows / n_slices) for i in range(n_slices + 1)]
    device = batch.input_ids.device
    slices = [torch.arange(a, b, device=device) for a, b in itertools.pairwise(bounds)]
    old_seconds = 0.0
    if old_logp is None and len(slices) * config.epochs > 1:
        started = time.perf_counter()
        old_logp = _logprobs_of(model, batch, config)
        old_seconds = time.perf_counter() - started
    updates = [
        _update(model, optimizer, batch, part, config, ref_model, old_logp)
        for _ in range(config.epochs)
        for part in slices
    ]
    out = {k: sum(u[k] for u in updates) / len(updates) for k in updates[0]}
    out.update(
        aggregation=float(AGGREGATIONS.index(loss_config.aggregation)),
        n_tokens=float(batch.loss_mask.sum()),
        micro_batches=float(sum(u["micro_batches"] for u in updates)),
        updates=float(len(updates)),
        reward_mean=float(batch.rewards.mean()),
        reward_std=float(batch.rewards.std()) if batch.n_rollouts > 1 else 0.0,
        rollout_known_frac=float(batch.rollout_known.sum() / batch.loss_mask.sum().clamp_min(1)),
        time_ref_s=sum(u["time_ref_s"] for u in updates),
        time_old_s=old_seconds,
        time_train_s=sum(u["time_train_s"] for u in updates),
    )
    return out


def _micro_chunks(
    batch: GRPOBatch, rows: torch.Tensor, size: int | None
) -> list[tuple[torch.Tensor, slice]]:
    """`rows` in micro-batches of `size`, longest first, each with the columns it needs."""
    # longest rows first and together: each micro-batch pads only to rows of its own length (as
    # verl balances micro-batches by sequence length), and the peak memory comes at the start
    lengths = batch.attention_mask[rows].sum(dim=-1)
    ordered = rows[torch.argsort(lengths, descending=True, stable=True)]
    size = size or len(ordered)
    out = []
    for a in range(0, len(ordered), size):
        chunk = ordered[a : a + size]
        # right-padded: the micro-batch needs only its own longest row's columns
        width = int(batch.attention_mask[chunk].sum(dim=-1).max().clamp_min(1))
        out.append((chunk, slice(0, width)))
    return out


def _logprobs_of(model: Any, batch: GRPOBatch, config: GRPOStepConfig) -> torch.Tensor:
    """The model's log-probs of every token of `batch` (0 past each row's columns), no grad."""
    device = batch.input_ids.device
    logp = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=device)
    every = torch.arange(batch.n_rollouts, device=device)
    model.train()
    with torch.no_grad():
        for chunk, cols in _micro_chunks(batch, every, config.micro_batch_rows):
            lp = token_logprobs(
                model,
                batch.input_ids[chunk, cols],
                batch.attention_mask[chunk, cols],
                with_entropy=False,
                temperature=config.temperature,
            ).logp
            logp[chunk, cols] = lp.float()
    return logp


def _update(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: GRPOBatch,
    rows: torch.Tensor,
    config: GRPOStepConfig,
    ref_model: Any,
    old_logp: torch.Tensor | None,
) -> dict[str, float]:
    """One optimizer step on the `rows` of `batch`, gradients accumulated over micro-batches."""
    loss_config = config.loss
    chunks = _micro_chunks(batch, rows, config.micro_batch_rows)
    # each micro-batch's share of the update's aggregate: trained tokens, or sequences
    per_row = batch.loss_mask.sum(dim=-1)
    if loss_config.aggregation == "sequence-mean":
        per_row = (per_row > 0).to(per_row.dtype)
    total = float(per_row[rows].sum().clamp_min(1))
    ref_seconds = train_seconds = 0.0
    sums: dict[str, float] = {}
    token_total = 0.0
    loss_total = 0.0
    optimizer.zero_grad(set_to_none=True)
    model.train()
    for chunk, cols in chunks:
        ids, attn = batch.input_ids[chunk, cols], batch.attention_mask[chunk, cols]
        mask = batch.loss_mask[chunk, cols]
        started = time.perf_counter()
        ref_logp = None
        if ref_model is not None and loss_config.kl_coef > 0:
            with torch.no_grad():
                ref_logp = token_logprobs(
                    ref_model, ids, attn, with_entropy=False, temperature=config.temperature
                ).logp
        ref_seconds += time.perf_counter() - started

        started = time.perf_counter()
        current = token_logprobs(model, ids, attn, temperature=config.temperature)
        old = current.logp.detach() if old_logp is None else old_logp[chunk, cols]
        # where the engine's log-prob is unknown, no correction: weight exp(0) = 1
        known = batch.rollout_known[chunk, cols]
        rollout = torch.where(known, batch.rollout_logp[chunk, cols], old)
        loss, metrics = grpo_loss(
            current.logp,
            old,
            batch.advantages[chunk, cols],
            mask,
            config=loss_config,
            ref_logp=ref_logp,
            rollout_logp=rollout,
            entropy=current.entropy,
            moe_aux_loss=current.aux_loss,
        )
        weight = float(per_row[chunk].sum()) / total
        (loss * weight).backward()
        train_seconds += time.perf_counter() - started
        loss_total += float(loss.detach()) * weight
        n = float(mask.sum())
        token_total += n
        for key, value in metrics.items():
            if key != "n_tokens":
                sums[key] = sums.get(key, 0.0) + value * n
    started = time.perf_counter()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    train_seconds += time.perf_counter() - started
    out = {k: v / max(token_total, 1.0) for k, v in sums.items()}
    out.update(
        micro_batches=float(len(chunks)),
        loss=loss_total,
        grad_norm=float(grad_norm),
        time_ref_s=ref_seconds,
        time_train_s=train_seconds,
    )
    return out


def repeated_tool_calls(messages: Sequence[dict[str, Any]]) -> int:
    """How many tool calls of a trajectory repeat an earlier one exactly (same name, same
    arguments as JSON, key order ignored).

    >>> call = lambda n, a: {"role": "assistant", "content": "", "tool_calls": [
    ...     {"id": "c", "type": "function", "function": {"name": n, "arguments": a}}]}
    >>> repeated_tool_calls([call("f", '{"x": 1, "y": 2}'), call("f", '{"y": 2, "x": 1}'),
    ...                      call("f", '{"x": 1, "y": 2}'), call("g", '{"x": 1, "y": 2}')])
    2
    """
    seen: set[tuple[str, str]] = set()
    repeats = 0
    for message in messages:
        if message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = function.get("arguments") or ""
            # the same call written with another key order or spacing is the same call
            with contextlib.suppress(TypeError, ValueError):
                arguments = json.dumps(json.loads(arguments), sort_keys=True)
            key = (str(function.get("name")), str(arguments))
            repeats += key in seen
            seen.add(key)
    return repeats


#: what `RewardShaping.base` may be
REWARD_BASES = ("verifier", "outcome")


@dataclass(frozen=True, kw_only=True, slots=True)
class RewardShaping:
    """The reward GRPO normalises: a base reward minus penalties.

    base - `turn_penalty` * max(0, assistant turns - `free_turns`)
         - `repetition_penalty` * (tool calls repeating an earlier identical one)

    The base (`base`) is the verifiers' reward ("verifier", the default: an accepted trajectory
    scores 0.5-1.0, a rejected one up to 0.45 for valid calls and evidence on the way) or the bare
    verdict ("outcome": 1 accepted, 0 rejected, DAPO's rule-based reward). With "outcome" a group
    without a success is uniform and dynamic sampling drops it, so every trained group holds a
    success; the failed-only process advantage still ranks its failures by their steps.

    Both penalties default to 0 (off): the reward is then exactly the base. The paper's
    efficiency term ("free turns, then a linear penalty") is this shape; its size is the
    user's call, small against the 0/1 outcome reward (e.g. 0.05 a turn) so that a correct
    long answer still beats a wrong short one.

    >>> shaping = RewardShaping(free_turns=2, turn_penalty=0.1, repetition_penalty=0.25)
    >>> round(shaping.shape(1.0, n_turns=5, n_repeated=1), 6)  # 1 - 3 * 0.1 - 0.25
    0.45
    >>> RewardShaping(base="outcome").base_reward(0.3, accepted=False)
    0.0
    """

    #: assistant turns that cost nothing; 4 covers a 2-3 hop search plus the answer
    free_turns: int = 4
    #: reward taken per assistant turn past `free_turns` (0: no efficiency penalty)
    turn_penalty: float = 0.0
    #: reward taken per tool call that repeats an earlier identical call (0: none)
    repetition_penalty: float = 0.0
    #: "verifier" (the suite's graded reward, the paper's) or "outcome" (1/0 by the verdict, DAPO)
    base: str = "verifier"

    def __post_init__(self) -> None:
        if self.base not in REWARD_BASES:
            raise ValueError(f"base must be one of {', '.join(REWARD_BASES)}, got {self.base!r}")
        if isinstance(self.free_turns, bool) or self.free_turns < 0:
            raise ValueError(f"free_turns must be >= 0, got {self.free_turns!r}")
        for name in ("turn_penalty", "repetition_penalty"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def base_reward(self, reward: float, *, accepted: bool) -> float:
        """The base of a trajectory the verifiers gave `reward` and accepted or not."""
        if self.base == "outcome":
            return 1.0 if accepted else 0.0
        return float(reward)

    def shape(self, reward: float, *, n_turns: int, n_repeated: int) -> float:
        """The shaped reward of a trajectory with `n_turns` assistant turns and `n_repeated`
        repeated tool calls."""
        extra_turns = max(0, n_turns - self.free_turns)
        return reward - self.turn_penalty * extra_turns - self.repetition_penalty * n_repeated

    def shape_messages(self, reward: float, messages: Sequence[dict[str, Any]]) -> float:
        """`shape` with the turns and repeats counted in a DESIGN section 4 conversation."""
        n_turns = sum(m.get("role") == "assistant" for m in messages)
        return self.shape(reward, n_turns=n_turns, n_repeated=repeated_tool_calls(messages))


@dataclass(frozen=True, kw_only=True, slots=True)
class GRPOConfig:
    """One GRPO training step: how many prompts, how many samples each, how hard to refill.

    >>> GRPOConfig(samples=4).groups_per_step
    4
    """

    #: rollouts per prompt (the group); 8 as TRL's `num_generations` (DAPO uses 16)
    samples: int = 8
    #: prompts (groups) whose rewards differ that one step trains on
    groups_per_step: int = 4
    #: extra rounds of rollouts to refill groups dropped for uniform reward (DAPO's dynamic
    #: sampling; verl's `max_num_gen_batches`); after them the step trains on what it has
    max_refills: int = 3
    #: efficiency and repetition penalties on the verifiers' reward (both off by default)
    shaping: RewardShaping = field(default_factory=RewardShaping)
    #: the optimizer step
    step: GRPOStepConfig = field(default_factory=GRPOStepConfig)

    def __post_init__(self) -> None:
        for name in ("samples", "groups_per_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.samples < 2:
            raise ValueError("samples must be at least 2: advantages compare rollouts of a group")
        if self.max_refills < 0:
            raise ValueError(f"max_refills must be >= 0, got {self.max_refills}")


def step_scores(scored: Any) -> tuple[list[float], list[int]]:
    """The per-step scores of one scored rollout and the assistant message that made each step.

    Step verifications (`subject_kind` "Step") name their Step `traj#NNN`, NNN the index of the
    tool-result message; the step was made by the last assistant message before it.
    """
    messages = scored.rollout.messages
    scores: list[float] = []
    turns: list[int] = []
    for v in sorted(
        (v for v in scored.verifications if v.subject_kind == "Step"),
        key=lambda v: v.subject_id,
    ):
        index = int(v.subject_id.rsplit("#", 1)[1])
        turn = next((i for i in range(index, -1, -1) if messages[i]["role"] == "assistant"), None)
        if turn is None:
            raise ValueError(f"step {v.subject_id} has no assistant message before it")
        scores.append(float(v.score))
        turns.append(turn)
    return scores, turns


class GRPOTrainer:
    """GRPO on a transformers model whose rollouts come from an engine it keeps in sync.

    `source.generate(tasks, run=run, samples=K)` returns scored rollouts (each with `.rollout`
    holding messages and the sampled ids/log-probs, `.reward`, `.verdict`, `.verifications`)
    and writes them under `run` (a Run of kind "train"); `source.tools.specs()` are the tools the
    prompts offered. After each optimizer step `engine.update_weights(model)` puts the new
    weights into the engine, so the next rollouts are on-policy.

    >>> trainer = GRPOTrainer(model, tok, source=source, engine=engine, run=run)  # doctest: +SKIP
    >>> trainer.step(iter(tasks))["accept_rate"]                                   # doctest: +SKIP
    0.25
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        source: Any,
        engine: Any,
        run: Any,
        config: GRPOConfig = GRPOConfig(),
        ref_model: Any = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.engine = engine
        self.run = run
        self.config = config
        self.ref_model = ref_model
        self.optimizer = config.step.build_optimizer(model)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        self.steps = 0

    def _draw(self, tasks: Iterator[Any], n: int) -> list[Any]:
        out = []
        for task in tasks:
            out.append(task)
            if len(out) == n:
                break
        return out

    def step(self, tasks: Iterator[Any]) -> dict[str, float]:
        """Roll out, drop uniform groups (refilling from `tasks`), train one step, sync weights.

        Returns the metrics: the loss's (see `grpo_loss`), `reward_mean`/`reward_std`,
        `accept_rate`, `groups_kept`, `groups_dropped`, `rollout_rounds`, `weight_version`, seconds per phase;
        `trained` is 0 when every drawn group was uniform (no update, no sync).
        """
        cfg = self.config
        started = time.perf_counter()
        kept: list[Any] = []
        shaped: list[float] = []
        all_raw: list[float] = []
        all_shaped: list[float] = []
        n_groups = dropped = rounds = n_rollouts = n_accepted = n_generated = 0
        while n_groups < cfg.groups_per_step and rounds <= cfg.max_refills:
            drawn = self._draw(tasks, cfg.groups_per_step - n_groups)
            if not drawn:
                break
            scored = self.source.generate(drawn, run=self.run, samples=cfg.samples)
            rounds += 1
            n_rollouts += len(scored)
            n_generated += sum(s.rollout.n_generated for s in scored)
            n_accepted += sum(s.verdict == "accepted" for s in scored)
            groups = [s.rollout.task.id for s in scored]
            rewards = [
                cfg.shaping.shape_messages(
                    cfg.shaping.base_reward(s.reward, accepted=s.verdict == "accepted"),
                    s.rollout.messages,
                )
                for s in scored
            ]
            all_raw += [float(s.reward) for s in scored]
            all_shaped += rewards
            keep = filter_uniform_groups(rewards, groups)
            dropped += keep.n_dropped
            n_groups += len(keep.kept)
            for s, r, ok in zip(scored, rewards, keep.rollout_mask, strict=True):
                if ok:
                    kept.append(s)
                    shaped.append(r)
        metrics: dict[str, float] = {
            "groups_kept": float(n_groups),
            "groups_dropped": float(dropped),
            "rollout_rounds": float(rounds),
            "accept_rate": n_accepted / max(n_rollouts, 1),
            "rollouts_total": float(n_rollouts),
            # tokens the engine generated this step, dropped groups included
            "generated_tokens": float(n_generated),
            # over every rollout of the step, dropped groups included
            "verifier_reward_mean": _mean(all_raw),
            "shaped_reward_mean": _mean(all_shaped),
            "time_rollout_s": time.perf_counter() - started,
        }
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
        steps = [step_scores(s) for s in kept]
        batch = build_batch(
            tokens,
            shaped,
            [s.rollout.task.id for s in kept],
            pad_id=self.pad_id,
            accepted=[s.verdict == "accepted" for s in kept],
            step_scores=[scores for scores, _ in steps],
            step_turns=[turns for _, turns in steps],
            process_weight=cfg.step.loss.process_weight,
            papo=cfg.step.loss.papo,
            eps=cfg.step.loss.eps,
        )
        metrics["time_tokenize_s"] = time.perf_counter() - started
        metrics.update(
            grpo_step(self.model, self.optimizer, batch, config=cfg.step, ref_model=self.ref_model)
        )
        started = time.perf_counter()
        sync = self.engine.update_weights(self.model)
        self.steps += 1
        metrics.update(
            trained=1.0,
            weight_version=float(sync.version),
            # the whole call: checking and converting the tensors too, not only the transfer
            time_sync_s=time.perf_counter() - started,
            n_rollouts=float(len(kept)),
        )
        return metrics


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
