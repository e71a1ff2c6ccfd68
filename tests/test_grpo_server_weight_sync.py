"""Weight sync into an OpenAI-compatible vLLM server: new weights reach it in place, no restart.

One server (started by `VLLMServer` with `weight_sync=True`) on a copy of the tiny model serves
the whole module. Its greedy tokens and log-probabilities are compared with transformers running
the same float32 weights, before and after every push, through the file and the inline transport.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from selfplay.engines.base import SamplingConfig

GREEDY = SamplingConfig(temperature=0.0, max_tokens=12, logprobs=True)
PROMPT = "The film was directed by"
#: float32 on CPU: vLLM's kernels and transformers' differ by rounding only
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model_copy(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("server-sync") / "tiny"))


@pytest.fixture(scope="module")
def server(model_copy: Path):
    from selfplay.vllm_server import VLLMServer, VLLMServerConfig

    with VLLMServer(
        model_copy,
        config=VLLMServerConfig(
            max_model_len=512, kv_cache_gib=0.25, weight_sync=True, tool_call_parser=None
        ),
    ) as running:
        yield running


def _transformers(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _perturb(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def _greedy(engine, prompt_ids: list[int]) -> tuple[list[int], list[float]]:
    [[completion]] = engine.generate([prompt_ids], sampling=GREEDY)
    return completion.token_ids, completion.logprobs


def _assert_server_runs(engine, model, prompt_ids: list[int]) -> list[int]:
    """The server's greedy tokens are transformers' greedy picks, with the same log-probs."""
    tokens, logprobs = _greedy(engine, prompt_ids)
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + tokens])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]
    assert tokens == logp.argmax(dim=-1).tolist()
    reference = logp.gather(1, torch.tensor(tokens)[:, None])[:, 0].tolist()
    assert max(abs(a - b) for a, b in zip(logprobs, reference, strict=True)) < TOLERANCE
    return tokens


@pytest.mark.vllm
def test_pushed_weights_change_the_servers_outputs_to_those_of_the_new_weights(server, model_copy):
    from selfplay.engines.openai import OpenAIEngineConfig

    model = _transformers(model_copy)
    with server.engine() as engine:
        prompt_ids = engine.tokenizer.encode(PROMPT)
        before = _assert_server_runs(engine, model, prompt_ids)

        _perturb(model, seed=1)
        sync = engine.update_weights(model)  # through a file the server reads
        assert sync.version == engine.weight_version == 1
        after = _assert_server_runs(engine, model, prompt_ids)
        assert after != before

        _perturb(model, seed=2)
        with server.engine(OpenAIEngineConfig(weight_sync="inline")) as inline:
            inline.update_weights(model)  # base64 in the request, for a server elsewhere
            assert _assert_server_runs(inline, model, prompt_ids) != after

        # the fallback: in place from a checkpoint directory, here the one it started from
        engine.reload()
        assert _greedy(engine, prompt_ids)[0] == before
        assert engine.weight_version == 2


@pytest.mark.vllm
def test_bad_weights_are_refused_before_they_reach_the_server(server, model_copy):
    from selfplay.engines.vllm import checkpoint_state_dict

    model = _transformers(model_copy)
    with server.engine() as engine:
        prompt_ids = engine.tokenizer.encode(PROMPT)
        expected = _greedy(engine, prompt_ids)
        weights = checkpoint_state_dict(model)
        name = "model.layers.0.self_attn.q_proj.weight"
        with pytest.raises(ValueError, match=f"{name}.*shape"):
            engine.update_weights({**weights, name: weights[name][:, :-1]})
        with pytest.raises(ValueError, match="not given"):
            engine.update_weights({k: v for k, v in weights.items() if k != name})
        assert engine.weight_version == 0
        assert _greedy(engine, prompt_ids)[0] == expected[0]


def test_a_server_not_declared_to_take_weights_is_a_clear_error(tiny_model_dir: Path):
    from selfplay.engines.openai import OpenAIEngine, OpenAIEngineConfig

    # nothing listens there: the error comes before any request
    with OpenAIEngine("http://127.0.0.1:9/v1", str(tiny_model_dir)) as engine:
        with pytest.raises(ValueError, match='weight_sync="file"'):
            engine.update_weights({})
        with pytest.raises(ValueError, match="not declared to take new weights"):
            engine.reload()
    with pytest.raises(ValueError, match="weight_sync must be one of"):
        OpenAIEngineConfig(weight_sync="nccl")
