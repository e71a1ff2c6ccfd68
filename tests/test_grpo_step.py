"""One real GRPO step on CPU: rollouts from vLLM, the loss on transformers, weights back to vLLM.

The engine samples K completions per prompt with their log-probabilities; a rule rewards them
(the share of even token ids, so groups never tie); `grpo_step` updates the transformers model;
`update_weights` pushes it, and the engine's greedy output changes to exactly what transformers
computes with the new weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from selfplay.engines.base import SamplingConfig
from trainer.grpo import GRPOStepConfig, grpo_step, token_logprobs
from trainer.grpo_data import build_batch, rollout_tokens
from trainer.grpo_loss import GRPOLossConfig

PROMPTS = ["Which film did Ada Lee direct?", "When was Heat released?"]
K = 4


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM

    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig

    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("grpo") / "tiny"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with VLLMEngine(model_dir, config=VLLMEngineConfig(max_model_len=2048, kv_cache_gib=0.25)) as e:
        yield e, model


def _greedy(engine, prompt_ids):
    greedy = SamplingConfig(temperature=0.0, max_tokens=10, logprobs=True)
    [[c]] = engine.generate([prompt_ids], sampling=greedy)
    return c.token_ids, c.logprobs


@pytest.mark.vllm
def test_one_grpo_step_changes_the_engine_to_the_trained_weights(setup):
    engine, model = setup
    tok = engine.tokenizer
    probe = tok.encode("The film was directed by")
    before, _ = _greedy(engine, probe)

    sampling = SamplingConfig(temperature=1.0, max_tokens=12, n=K, seed=0, logprobs=True)
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    results = engine.chat(conversations, sampling=sampling)
    rollouts, rewards, groups = [], [], []
    for g, (conversation, completions) in enumerate(zip(conversations, results, strict=True)):
        for k, c in enumerate(completions):
            messages = [*conversation, {"role": "assistant", "content": c.text}]
            rollouts.append(
                rollout_tokens(
                    tok,
                    messages,
                    sampled_token_ids={1: c.token_ids},
                    sampled_logprobs={1: c.logprobs},
                    row_id=f"p{g}-{k}",
                )
            )
            rewards.append(sum(t % 2 == 0 for t in c.token_ids) / len(c.token_ids))
            groups.append(g)
    batch = build_batch(
        rollouts, rewards, groups, pad_id=tok.convert_tokens_to_ids("<|endoftext|>")
    )
    assert batch.rollout_known.sum() == batch.loss_mask.sum()  # every trained token was sampled

    # before the step, the trainer and the engine agree on the sampled tokens' log-probs
    with torch.no_grad():
        mine = token_logprobs(model, batch.input_ids, batch.attention_mask).logp
    gap = (mine - batch.rollout_logp)[batch.rollout_known].abs().max().item()
    assert gap < 1e-3

    config = GRPOStepConfig(learning_rate=1e-2, loss=GRPOLossConfig(kl_coef=0.0))
    optimizer = config.build_optimizer(model)
    metrics = grpo_step(model, optimizer, batch, config=config)
    assert metrics["mismatch_abs_logp"] < 1e-3 and metrics["masked_frac"] == 0.0
    assert metrics["clip_frac"] == 0.0  # one step per batch: the ratio is 1
    assert metrics["grad_norm"] > 0 and metrics["moe_aux_loss"] > 0
    assert metrics["rollout_known_frac"] == 1.0

    sync = engine.update_weights(model)
    assert sync.version == 1
    after, logprobs = _greedy(engine, probe)
    assert after != before
    model.eval()
    ids = torch.tensor([probe + after])
    with torch.no_grad():
        expected = token_logprobs(model, ids, torch.ones_like(ids, dtype=torch.bool)).logp[0]
    expected = expected[len(probe) :].tolist()
    assert max(abs(a - b) for a, b in zip(logprobs, expected, strict=True)) < 1e-4


@pytest.mark.vllm
def test_solver_rollouts_keep_the_sampled_ids_and_logprobs_of_every_assistant_turn(
    vllm_engine, tiny_model_dir, sqlite_url
):
    """Multi-turn rollouts through the real solver: every trained token is one the engine
    sampled, and its log-prob is transformers' on the same weights."""
    from transformers import AutoModelForCausalLM

    import kag
    from kag.world import generate_world, write_world
    from selfplay.graph_tools import default_registry
    from selfplay.proposer import Proposer
    from selfplay.solver import EnginePolicy, Solver, SolverConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = vllm_engine.tokenizer
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=6, size=200))
        registry = default_registry(g, sandbox=None)
        tasks = Proposer(g).propose(2, hops=2, seed=4).tasks
        policy = EnginePolicy(vllm_engine, logprobs=True)
        solver = Solver(policy, registry, config=SolverConfig(max_turns=3, seed=0))
        rollouts = solver.solve(tasks, run_id="grpo-test")
    specs = registry.specs()
    for r in rollouts:
        assistant = [i for i, m in enumerate(r.messages) if m["role"] == "assistant"]
        assert sorted(r.sampled_token_ids) == assistant
        assert all(len(r.sampled_logprobs[i]) == len(r.sampled_token_ids[i]) for i in assistant)
        tokens = rollout_tokens(
            tok,
            r.messages,
            tools=specs,
            sampled_token_ids=r.sampled_token_ids,
            sampled_logprobs=r.sampled_logprobs,
            row_id=r.id,
        )
        known = ~torch.isnan(torch.from_numpy(tokens.rollout_logp))
        assert torch.equal(known, torch.from_numpy(tokens.loss_mask))
        ids = torch.from_numpy(tokens.input_ids)[None]
        with torch.no_grad():
            mine = token_logprobs(model, ids, torch.ones_like(ids, dtype=torch.bool)).logp[0]
        gap = (mine[known] - torch.from_numpy(tokens.rollout_logp)[known]).abs().max().item()
        assert gap < 1e-3


@pytest.mark.vllm
def test_grpo_trainer_step_rolls_out_through_the_solver_trains_and_syncs(setup, sqlite_url):
    """`GRPOTrainer.step`: real rollouts of graph tasks (a Run of kind "train"), scored by the
    default verifiers, uniform groups dropped and counted, one step, the engine in sync."""
    import kag
    from kag.schema import Run
    from kag.world import generate_world, write_world
    from selfplay.generation import RolloutSource
    from selfplay.graph_tools import default_registry
    from selfplay.proposer import Proposer
    from selfplay.solver import EnginePolicy, SolverConfig
    from selfplay.writeback import write_tasks
    from trainer.grpo import GRPOConfig, GRPOTrainer

    engine, model = setup
    tok = engine.tokenizer
    probe = tok.encode("The film was directed by")
    before, _ = _greedy(engine, probe)
    version = engine.weight_version
    with kag.open(sqlite_url) as g:
        write_world(g, *generate_world(seed=6, size=200))
        registry = default_registry(g, sandbox=None)
        tasks = Proposer(g).propose(6, hops=2, seed=4).tasks
        write_tasks(g.store, tasks)
        run = Run(id="grpo-train-1", kind="train")
        source = RolloutSource(
            g.store,
            EnginePolicy(engine, logprobs=True),
            tools=registry,
            run_id=run.id,
            solver=SolverConfig(max_turns=3, max_context_tokens=2048, max_new_tokens=48),
        )
        config = GRPOConfig(
            samples=4,
            groups_per_step=2,
            max_refills=3,
            step=GRPOStepConfig(learning_rate=1e-2, loss=GRPOLossConfig(kl_coef=0.0)),
        )
        trainer = GRPOTrainer(model, tok, source=source, engine=engine, run=run, config=config)
        metrics = trainer.step(iter(tasks))
        # every rollout, dropped groups included, is written back under the training Run
        assert g.get("Run", run.id).kind == "train"
        written = g.count("Trajectory", where={"run_id": run.id})
        generated = sum(
            t.n_tokens
            for b in g.store.iter_nodes("Trajectory", where={"run_id": run.id})
            for t in b
        )
    assert metrics["trained"] == 1.0, metrics
    # each round drew the groups still missing; the dropped ones were uniform in reward
    kept = metrics["groups_kept"]
    assert 1 <= kept <= 2 and metrics["rollout_rounds"] <= 1 + 3
    assert written == 4 * (kept + metrics["groups_dropped"])
    assert metrics["n_rollouts"] == 4 * kept
    # the engine's tokens of every rollout of the step, as the trajectories record them
    assert metrics["generated_tokens"] == generated > 0
    assert metrics["rollout_known_frac"] == 1.0
    assert metrics["mismatch_abs_logp"] < 1e-3
    assert metrics["weight_version"] == version + 1 == engine.weight_version
    after, _ = _greedy(engine, probe)
    assert after != before


def test_reference_logprobs_without_entropy_are_the_policy_passes_logprobs(tiny_model_dir):
    """The reference pass (no entropy, no (batch, time, vocab) log-softmax) scores every token
    as the policy pass does, padding rows included."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.randint(
        0, model.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0)
    )
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 11:] = False
    with torch.no_grad():
        full = token_logprobs(model, ids, mask)
        ref = token_logprobs(model, ids, mask, with_entropy=False)
    assert torch.allclose(ref.logp, full.logp, atol=1e-5)
    assert (ref.logp[:, 0] == 0).all() and (full.logp[:, 1:] < 0).all()
    assert (ref.entropy == 0).all() and (full.entropy[:, 1:] > 0).all()


@pytest.mark.parametrize("aggregation", ["token-mean", "sequence-mean"])
def test_micro_batches_give_the_update_of_one_pass_over_the_batch(tiny_model_dir, aggregation):
    """Rollouts of different lengths, 2 at a time or all at once: the same new weights (the
    micro-batches' losses weighted by their share of the tokens or sequences), KL and entropy
    included. (The MoE load-balancing loss is one per forward pass, as in Megatron and verl: not
    additive over micro-batches, so it is off here.)"""
    from transformers import AutoModelForCausalLM

    from trainer.grpo_data import GRPOBatch

    g = torch.Generator().manual_seed(3)
    rows, width = 5, 23
    lengths = [23, 9, 17, 4, 12]
    attn = torch.zeros(rows, width, dtype=torch.bool)
    loss_mask = torch.zeros(rows, width, dtype=torch.bool)
    for r, n in enumerate(lengths):
        attn[r, :n] = True
        loss_mask[r, n // 2 : n] = True  # the completion: the second half
    batch = GRPOBatch(
        input_ids=torch.randint(0, 200, (rows, width), generator=g) * attn,
        attention_mask=attn,
        loss_mask=loss_mask,
        advantages=torch.randn(rows, 1, generator=g).expand(rows, width) * loss_mask,
        rollout_logp=torch.zeros(rows, width),
        rollout_known=torch.zeros(rows, width, dtype=torch.bool),
        rewards=torch.rand(rows, generator=g),
    )
    loss = GRPOLossConfig(kl_coef=0.1, entropy_coef=0.01, moe_aux_coef=0.0, aggregation=aggregation)
    results = {}
    for micro in (None, 2):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        noise = torch.Generator().manual_seed(4)
        with torch.no_grad():  # a reference that differs from the policy, so the KL has a gradient
            for p in ref.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=noise))
        config = GRPOStepConfig(learning_rate=1.0, loss=loss, micro_batch_rows=micro)
        # plain SGD: the new weights are the gradient itself (Adam's first step, lr * sign(grad),
        # would magnify float noise in gradients near 0)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate)
        metrics = grpo_step(model, optimizer, batch, config=config, ref_model=ref)
        results[micro] = (metrics, [p.detach().clone() for p in model.parameters()])
    (whole, before), (micro, after) = results[None], results[2]
    assert (whole["micro_batches"], micro["micro_batches"]) == (1, 3)
    assert micro["n_tokens"] == whole["n_tokens"] == float(loss_mask.sum())
    assert micro["loss"] == pytest.approx(whole["loss"], rel=1e-4, abs=1e-6)
    assert micro["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-3)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after, strict=True))
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters()
    assert any(not torch.allclose(a, b) for a, b in zip(before, start, strict=True))  # it trained


@pytest.mark.vllm
def test_at_a_sampling_temperature_the_trainer_scores_what_the_engine_sampled_from(
    tiny_model_dir: Path,
):
    """`--temperature 0.5`: the engine's log-probs after temperature (`processed_logprobs`, as
    `kag train grpo` configures it) are the trainer's `token_logprobs(..., temperature=0.5)`,
    not the untempered ones, so ratios and importance weights start at 1."""
    from transformers import AutoModelForCausalLM

    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    config = VLLMEngineConfig(
        max_model_len=512, kv_cache_gib=0.25, logprobs_mode="processed_logprobs"
    )
    with VLLMEngine(tiny_model_dir, config=config) as engine:
        prompt = engine.tokenizer.encode("The film was directed by")
        sampling = SamplingConfig(temperature=0.5, max_tokens=12, n=3, seed=1, logprobs=True)
        [completions] = engine.generate([prompt], sampling=sampling)
    for c in completions:
        ids = torch.tensor([prompt + c.token_ids])
        attn = torch.ones_like(ids, dtype=torch.bool)
        with torch.no_grad():
            tempered = token_logprobs(model, ids, attn, temperature=0.5).logp[0, len(prompt) :]
            plain = token_logprobs(model, ids, attn).logp[0, len(prompt) :]
        engine_logp = torch.tensor(c.logprobs)
        assert (tempered - engine_logp).abs().max().item() < 1e-3
        assert (plain - engine_logp).abs().max().item() > 1e-2


def _slice(batch, rows: slice):
    from trainer.grpo_data import GRPOBatch

    return GRPOBatch(**{f: getattr(batch, f)[rows] for f in GRPOBatch.__dataclass_fields__})


def test_mini_batches_and_epochs_step_once_per_slice_against_the_policy_before_the_first(
    tiny_model_dir,
):
    """`mini_batches=2, epochs=2`: four optimizer steps, on the first half, the second, the
    first, the second, each scored against the log-probs of the model before the first step
    (the "old" policy), so the later steps are off-policy and their ratios move off 1."""
    from transformers import AutoModelForCausalLM

    from trainer.grpo_data import GRPOBatch

    g = torch.Generator().manual_seed(5)
    rows, width = 6, 19
    attn = torch.zeros(rows, width, dtype=torch.bool)
    loss_mask = torch.zeros(rows, width, dtype=torch.bool)
    for r, n in enumerate([19, 8, 14, 11, 5, 16]):
        attn[r, :n] = True
        loss_mask[r, n // 2 : n] = True
    batch = GRPOBatch(
        input_ids=torch.randint(0, 200, (rows, width), generator=g) * attn,
        attention_mask=attn,
        loss_mask=loss_mask,
        advantages=torch.randn(rows, 1, generator=g).expand(rows, width) * loss_mask,
        rollout_logp=torch.zeros(rows, width),
        rollout_known=torch.zeros(rows, width, dtype=torch.bool),
        rewards=torch.rand(rows, generator=g),
    )
    loss = GRPOLossConfig(kl_coef=0.0, moe_aux_coef=0.0)

    def fresh():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        return model, torch.optim.SGD(model.parameters(), lr=0.5)

    model, optimizer = fresh()
    config = GRPOStepConfig(learning_rate=0.5, loss=loss, mini_batches=2, epochs=2)
    metrics = grpo_step(model, optimizer, batch, config=config)

    by_hand, sgd = fresh()
    with torch.no_grad():
        old = token_logprobs(by_hand.train(), batch.input_ids, batch.attention_mask).logp
    one = GRPOStepConfig(learning_rate=0.5, loss=loss)
    steps = [
        grpo_step(by_hand, sgd, _slice(batch, part), config=one, old_logp=old[part])
        for _ in range(2)
        for part in (slice(0, 3), slice(3, 6))
    ]
    assert metrics["updates"] == 4
    assert metrics["n_tokens"] == float(loss_mask.sum())
    for a, b in zip(model.parameters(), by_hand.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert steps[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # the first step is on-policy
    assert abs(steps[-1]["ratio_mean"] - 1.0) > 1e-3  # the last is not
    assert metrics["ratio_mean"] == pytest.approx(sum(s["ratio_mean"] for s in steps) / 4)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters()
    assert any(not torch.allclose(a, b) for a, b in zip(model.parameters(), start, strict=True))


def test_step_counts_must_be_positive_integers():
    for field_name in ("mini_batches", "epochs"):
        with pytest.raises(ValueError, match=field_name):
            GRPOStepConfig(**{field_name: 0})
