"""Weight sync into the in-process vLLM engine: new weights reach it in place, without a restart.

The engine runs on a copy of the tiny model (the session `vllm_engine` is never touched). Its
greedy tokens and their log-probabilities are compared with transformers running the same float32
weights on the same token ids, before and after every change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from selfplay.engines.base import SamplingConfig

pytestmark = pytest.mark.vllm

GREEDY = SamplingConfig(temperature=0.0, max_tokens=12, logprobs=True)
PROMPT = "The film was directed by"
#: float32 on CPU: vLLM's kernels and transformers' differ by rounding only
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model_copy(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("sync") / "tiny"))


@pytest.fixture(scope="module")
def engine(model_copy: Path):
    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig

    with VLLMEngine(model_copy, config=VLLMEngineConfig(max_model_len=512, kv_cache_gib=0.25)) as e:
        yield e


def _transformers(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _greedy(engine, prompt_ids: list[int]):
    [[completion]] = engine.generate([prompt_ids], sampling=GREEDY)
    return completion.token_ids, completion.logprobs


def _reference(model, prompt_ids: list[int], generated: list[int]):
    """transformers' log-probabilities of `generated` after `prompt_ids`, and its greedy picks."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + generated])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]
    picked = logp.gather(1, torch.tensor(generated)[:, None])[:, 0]
    return picked.tolist(), logp.argmax(dim=-1).tolist()


def _assert_engine_runs(engine, model, prompt_ids):
    tokens, logprobs = _greedy(engine, prompt_ids)
    reference, argmax = _reference(model, prompt_ids, tokens)
    assert tokens == argmax  # the engine's greedy path is transformers' greedy path
    assert max(abs(a - b) for a, b in zip(logprobs, reference, strict=True)) < TOLERANCE
    return tokens, logprobs


def _perturb(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def test_pushed_weights_change_the_engines_outputs_to_those_of_the_new_weights(engine, model_copy):
    from selfplay.engines.vllm import checkpoint_shapes

    prompt_ids = engine.tokenizer.encode(PROMPT)
    model = _transformers(model_copy)
    before = _assert_engine_runs(engine, model, prompt_ids)

    _perturb(model, seed=1)
    sync = engine.update_weights(model)
    assert sync.version == engine.weight_version == 1
    assert sync.n_tensors == len(checkpoint_shapes(model_copy))  # every weight, tied head aside
    after = _assert_engine_runs(engine, model, prompt_ids)
    assert after != before  # the new weights are what the engine now runs

    # a second step from the trainer: the engine follows again
    _perturb(model, seed=2)
    engine.update_weights(model)
    assert _assert_engine_runs(engine, model, prompt_ids) != after

    # the fallback: in place from the checkpoint on disk gives back the starting outputs
    engine.reload()
    assert _greedy(engine, prompt_ids)[0] == before[0]
    assert engine.weight_version == 3


def test_reload_from_a_saved_checkpoint_directory(engine, model_copy, tmp_path):
    prompt_ids = engine.tokenizer.encode(PROMPT)
    model = _transformers(model_copy)
    _perturb(model, seed=3)
    saved = tmp_path / "step-1"
    model.save_pretrained(saved)
    engine.reload(saved)
    _assert_engine_runs(engine, model, prompt_ids)
    engine.reload(model_copy)


def test_bad_weights_are_refused_before_they_reach_the_engine(engine, model_copy):
    from selfplay.engines.vllm import checkpoint_state_dict

    prompt_ids = engine.tokenizer.encode(PROMPT)
    model = _transformers(model_copy)
    expected = _greedy(engine, prompt_ids)
    weights = checkpoint_state_dict(model)
    version = engine.weight_version

    with pytest.raises(ValueError, match="not in the checkpoint.*pass the transformers model"):
        engine.update_weights(model.state_dict())  # transformers' fused in-memory expert names
    name = "model.layers.0.self_attn.q_proj.weight"
    with pytest.raises(ValueError, match=f"{name}.*shape"):
        engine.update_weights({**weights, name: weights[name][:, :-1]})
    with pytest.raises(ValueError, match="NaN or inf"):
        engine.update_weights({**weights, name: torch.full_like(weights[name], float("nan"))})
    with pytest.raises(ValueError, match="not given"):
        engine.update_weights({k: v for k, v in weights.items() if k != name})
    # nothing was pushed: same weights, same outputs, same version
    assert engine.weight_version == version
    tokens, logprobs = _greedy(engine, prompt_ids)
    assert tokens == expected[0] and logprobs == pytest.approx(expected[1], abs=1e-6)
