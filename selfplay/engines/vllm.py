"""`VLLMEngine`: the model in this process through vLLM's async engine, with continuous batching.

Conversations are rendered with the model's own chat template (so reasoning and tool calls of earlier
turns reach the prompt exactly as training sees them) and sent as token ids. Every conversation is
its own request, so requests from many concurrent `achat` callers share the engine's batch.

>>> with VLLMEngine("/tmp/tiny", config=VLLMEngineConfig(max_model_len=2048)) as engine:  # doctest: +SKIP
...     [[c]] = engine.chat([[{"role": "user", "content": "Hi"}]], sampling=SamplingConfig(max_tokens=8))

Scripts that create an engine need an `if __name__ == "__main__":` guard: vLLM starts its engine
process with spawn.

Weights change without a restart (GRPO pushes them after every optimizer step):

| method                          | what it does                                                |
|---------------------------------|-------------------------------------------------------------|
| `update_weights(state_dict)`    | new tensors into the running model, in place (RPC)           |
| `reload(model_dir)`             | in place from a checkpoint directory (the fallback)          |
| `reload(model_dir, restart=True)` | a fresh engine on the directory (architecture changed)     |

In-place updates go through vLLM's `collective_rpc` to `WeightSyncWorker`, a worker extension
this engine installs: the tensors travel as one safetensors blob (vLLM's RPC decodes bare tensors
nested in lists as lists) and the worker loads them with its own `reload_weights`, so vLLM's
checkpoint-name mapping (fused QKV, stacked experts) applies. Generation is paused around the
load and the prefix cache is cleared, so no KV block computed with the old weights is reused.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkpoints import check_model_dir, saved_dtype
from selfplay.engines.base import (
    CONTEXT_LENGTH,
    DEFAULT_SAMPLING,
    Completion,
    SamplingConfig,
    check_conversations,
    check_tools,
    per_conversation,
)
from selfplay.engines.loop import BackgroundLoop

__all__ = [
    "VLLMEngine",
    "VLLMEngineConfig",
    "WeightSync",
    "WEIGHT_SYNC_EXTENSION",
    "WeightSyncWorker",
    "checkpoint_shapes",
    "checkpoint_state_dict",
    "checkpoint_tensors",
    "render_chat",
]

#: the worker extension `VLLMEngine` installs (vLLM imports it by this name in its worker process)
WEIGHT_SYNC_EXTENSION = "selfplay.engines.vllm.WeightSyncWorker"


@dataclass(frozen=True, kw_only=True, slots=True)
class VLLMEngineConfig:
    """Options of the in-process engine (the defaults suit the tiny model on a CPU).

    On CPU the KV cache lives in host memory: `kv_cache_gib` reserves exactly that much (vLLM's
    own default reserves most of the machine). Set it to None to size the cache by
    `gpu_memory_utilization` instead, as usual on a GPU.
    """

    max_model_len: int = 4096  # context length: prompt plus generated tokens
    kv_cache_gib: float | None = 1.0
    gpu_memory_utilization: float = 0.9  # used only when kv_cache_gib is None
    #: weights dtype; None: the dtype the checkpoint was saved in (`config.json`), else vLLM's
    #: "auto" (whose float32 -> bfloat16 downcast on CPU would change what a model computes)
    dtype: str | None = None
    enforce_eager: bool = True  # no CUDA graphs / torch.compile: fast start, fine for small models
    seed: int = 0  # engine seed; requests without a seed draw from it
    tensor_parallel_size: int = 1
    max_num_seqs: int = 256  # sequences decoded together
    # "raw_logprobs" (vLLM's default: before temperature) or "processed_logprobs" (what was sampled from)
    logprobs_mode: str | None = None
    engine_kwargs: Mapping[str, Any] = field(
        default_factory=dict
    )  # any other vllm EngineArgs field

    def __post_init__(self) -> None:
        if self.max_model_len < 16:
            raise ValueError(f"max_model_len must be at least 16, got {self.max_model_len}")
        if self.kv_cache_gib is not None and self.kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib must be positive or None, got {self.kv_cache_gib}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )

    def build(self, model_dir: str | os.PathLike[str]) -> VLLMEngine:
        return VLLMEngine(model_dir, config=self)


@dataclass(frozen=True, slots=True)
class WeightSync:
    """What one weight update did: the tensors and bytes pushed, the seconds it took, and the
    engine's weight version after it (0 is the checkpoint it started from, +1 per update)."""

    n_tensors: int
    n_bytes: int
    seconds: float
    version: int


class WeightSyncWorker:
    """vLLM worker extension (mixed into the worker class): loads weights sent by `VLLMEngine`.

    Runs in vLLM's worker process. Errors are returned as text, not raised: a method that raises
    inside `collective_rpc` takes the whole engine down.
    """

    def kag_load_weights(self, blob: bytes) -> str | None:
        """Load a safetensors blob of checkpoint-named tensors in place; None, or the error."""
        try:
            from safetensors.torch import load

            tensors = load(blob)
            self.reload_weights(weights_iterator=iter(tensors.items()), is_checkpoint_format=True)
            refresh_cpu_kernels(self.model_runner.get_model())
        except Exception as exc:  # reported to the caller, who raises it
            return f"{type(exc).__name__}: {exc}"
        return None

    def kag_load_weights_file(self, path: str) -> str | None:
        """`kag_load_weights` from a safetensors file (a server's `/collective_rpc` passes only
        strings: `OpenAIEngine` writes the blob where the server can read it)."""
        try:
            blob = Path(path).read_bytes()
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        return self.kag_load_weights(blob)

    def kag_load_weights_b64(self, text: str) -> str | None:
        """`kag_load_weights` from the blob in base64 (for a server on another machine)."""
        import base64

        try:
            blob = base64.b64decode(text, validate=True)
        except ValueError as exc:
            return f"{type(exc).__name__}: {exc}"
        return self.kag_load_weights(blob)

    def kag_reload_weights(self, path: str) -> str | None:
        """Reload every weight in place from the checkpoint directory `path`."""
        try:
            self.reload_weights(weights_path=path, is_checkpoint_format=True)
            refresh_cpu_kernels(self.model_runner.get_model())
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


def refresh_cpu_kernels(model: Any) -> int:
    """Rebuild the CPU kernels' private weight copies after an in-place reload; the layers fixed.

    On CPU, vLLM 0.32 hands some layers' weights to kernels that keep their own packed copy, and
    `reload_weights` leaves two of them stale (wrong outputs, no error):

    - the MoE experts: `UnquantizedFusedMoEMethod._setup_kernel` runs the experts' own
      `process_weights_after_loading` (the grouped-GEMM prepacking) only on the first load, so
      the kernel would read checkpoint-layout data as if it were prepacked;
    - a tied `lm_head`: it loads nothing itself (its weight is the embedding's), so it is never
      processed again and its `cpu_linear` keeps multiplying by the old embedding.

    Nothing to do off CPU.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return 0
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts

    owners: dict[int, int] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is not None and not weight.is_meta and weight.numel():
            owners[weight.data_ptr()] = owners.get(weight.data_ptr(), 0) + 1
    fixed = 0
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        experts = getattr(getattr(method, "moe_kernel", None), "fused_experts", None)
        if isinstance(experts, CPUUnquantizedExperts):
            if module.w13_weight.shape[1] != 2 * experts.moe_config.intermediate_size_per_partition:
                # the kernel padded the expert size; the reload already copied unpadded data
                raise RuntimeError(
                    "the CPU MoE kernel pads this model's expert size, which in-place reloads "
                    "do not support; use VLLMEngine.reload(model_dir, restart=True)"
                )
            experts.process_weights_after_loading(module)
            fixed += 1
            continue
        weight = getattr(module, "weight", None)
        shared = weight is not None and owners.get(weight.data_ptr(), 0) > 1
        if shared and hasattr(module, "cpu_linear") and method is not None:
            method.process_weights_after_loading(module)  # a tied head: new packed copy
            fixed += 1
    return fixed


def checkpoint_state_dict(model: Any) -> dict[str, Any]:
    """A transformers model's tensors under the names `save_pretrained` writes (and vLLM loads).

    transformers 5 keeps some weights in another layout in memory than on disk (Qwen3-MoE's
    experts are fused into `mlp.experts.gate_up_proj`); this reverts that conversion, as saving
    does, without touching the disk.

    >>> sorted(checkpoint_state_dict(model))[:1]  # doctest: +SKIP
    ['model.embed_tokens.weight']
    """
    from transformers.core_model_loading import revert_weight_conversion

    return dict(revert_weight_conversion(model, model.state_dict()))


def checkpoint_tensors(
    weights: Mapping[str, Any] | Iterable[tuple[str, Any]],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    dtype: str,
    model_dir: str | os.PathLike[str],
) -> dict[str, Any]:
    """The tensors `update_weights` sends, checked against the checkpoint's `shapes`.

    `weights` is a transformers model, its state dict, or (name, tensor) pairs under checkpoint
    names; every tensor of `shapes` must be given (a tied `lm_head.weight` may be and is
    skipped). Tensors come back on the CPU, contiguous, in `dtype` (e.g. "float32"). A bad name,
    shape or value is a ValueError, raised before anything is sent.

    >>> checkpoint_tensors({"w": torch.zeros(2)}, {"w": (2,)}, dtype="float32", model_dir="m")  # doctest: +SKIP
    {'w': tensor([0., 0.])}
    """
    import torch

    if isinstance(weights, torch.nn.Module):
        weights = checkpoint_state_dict(weights)
    named = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
    torch_dtype = getattr(torch, dtype)
    tensors: dict[str, Any] = {}
    for name, tensor in named:
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(
                f"weights must map names to torch tensors, got {name!r}: {type(tensor).__name__}"
            )
        if name not in shapes:
            if name == "lm_head.weight" and "model.embed_tokens.weight" in shapes:
                continue  # tied to the embedding, which carries it
            raise ValueError(
                f"weight {name!r} is not in the checkpoint {model_dir} "
                f"(it has {len(shapes)} tensors, e.g. {next(iter(shapes))!r}); "
                "pass the transformers model itself, or `checkpoint_state_dict(model)`"
            )
        if tuple(tensor.shape) != shapes[name]:
            raise ValueError(
                f"weight {name!r} has shape {tuple(tensor.shape)}, the checkpoint's is "
                f"{shapes[name]}"
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"weight {name!r} holds NaN or inf values")
        tensors[name] = tensor.detach().to(device="cpu", dtype=torch_dtype).contiguous()
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise ValueError(
            f"{len(missing)} weight(s) of the checkpoint not given, e.g. {missing[:3]}; "
            "update_weights takes the whole state dict"
        )
    return tensors


def checkpoint_shapes(model_dir: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a directory's `*.safetensors` files (headers only).

    >>> checkpoint_shapes("/tmp/tiny")["model.embed_tokens.weight"]  # doctest: +SKIP
    (1459, 64)
    """
    shapes: dict[str, tuple[int, ...]] = {}
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ValueError(f"model directory {model_dir} has no *.safetensors weights")
    for path in files:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(info["shape"])
    return shapes


def render_chat(
    tokenizer: Any,
    conversation: list[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of `conversation` rendered with the tokenizer's chat template."""
    text = tokenizer.apply_chat_template(
        conversation,
        tools=list(tools) if tools else None,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    return tokenizer.encode(text, add_special_tokens=False)


def count_prompt_tokens(
    tokenizer: Any,
    conversation: list[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
) -> int:
    """Prompt tokens of `conversation` (with the generation prompt), checked first; every
    engine's `count_tokens`."""
    (conversation,) = check_conversations([conversation])
    return len(render_chat(tokenizer, conversation, check_tools(tools)))


class VLLMEngine:
    """The `Engine` interface on vLLM's `AsyncLLM`, running in this process (see module docstring)."""

    def __init__(
        self, model_dir: str | os.PathLike[str], *, config: VLLMEngineConfig = VLLMEngineConfig()
    ) -> None:
        from transformers import AutoTokenizer

        self.model_dir = check_model_dir(model_dir)
        self.config = config
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self._loop = BackgroundLoop("vllm-engine")
        self._engine: Any = None
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._version = 0
        try:
            self._engine = self._loop.run(self._start())
        except BaseException:
            self._loop.stop()
            raise

    async def _start(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cfg = self.config
        kwargs: dict[str, Any] = {
            "model": str(self.model_dir),
            "max_model_len": cfg.max_model_len,
            "dtype": cfg.dtype or saved_dtype(self.model_dir) or "auto",
            "enforce_eager": cfg.enforce_eager,
            "seed": cfg.seed,
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "max_num_seqs": cfg.max_num_seqs,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "disable_log_stats": True,
        }
        if cfg.kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * (1 << 30))
        if cfg.logprobs_mode is not None:
            kwargs["logprobs_mode"] = cfg.logprobs_mode
        kwargs["worker_extension_cls"] = WEIGHT_SYNC_EXTENSION
        kwargs.update(cfg.engine_kwargs)
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))

    # ------------------------------------------------------------------ interface

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def model_dtype(self) -> str:
        """The dtype vLLM runs the model in, e.g. "float32" (what `dtype` resolved to)."""
        if self._engine is None:
            raise RuntimeError("the engine is closed")
        return str(self._engine.model_config.dtype).removeprefix("torch.")

    def count_tokens(
        self, conversation: list[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        """Prompt tokens of `conversation` (with the generation prompt), as the engine will see them."""
        return count_prompt_tokens(self._tokenizer, conversation, tools)

    def chat(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        """One list of n completions per conversation; all conversations run in one batch."""
        prompts, configs = self._chat_prompts(conversations, tools, sampling)
        return self._loop.run(self._run_all(prompts, configs))

    async def achat(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        """`chat` for asyncio callers; concurrent calls share the engine's batch."""
        prompts, configs = self._chat_prompts(conversations, tools, sampling)
        return await self._loop.wrap(self._run_all(prompts, configs))

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        *,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        """Continue raw text or token-id prompts (no chat template)."""
        ids = self._raw_prompts(prompts)
        return self._loop.run(self._run_all(ids, per_conversation(sampling, len(ids))))

    async def agenerate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        *,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        ids = self._raw_prompts(prompts)
        return await self._loop.wrap(self._run_all(ids, per_conversation(sampling, len(ids))))

    @property
    def weight_version(self) -> int:
        """0 for the weights the engine started with; +1 per `update_weights` / `reload`."""
        return self._version

    def update_weights(self, weights: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> WeightSync:
        """Put new weights into the running model, in place, without a restart.

        `weights` maps checkpoint names (those of the model directory's safetensors, e.g. a
        transformers `model.state_dict()`) to tensors; every weight of the checkpoint must be
        given (vLLM rebuilds each layer from its tensors). A tied `lm_head.weight` may be given
        and is skipped. Names and shapes are checked here first: a bad name is a ValueError and
        the engine keeps its weights. Requests in flight finish on the old weights; later ones
        use the new.

        >>> sync = engine.update_weights(model.state_dict())  # doctest: +SKIP
        >>> sync.version, sync.n_tensors                       # doctest: +SKIP
        (1, 67)
        """
        from safetensors.torch import save

        if self._engine is None:
            raise RuntimeError("the engine is closed")
        if self._shapes is None:
            self._shapes = checkpoint_shapes(self.model_dir)
        tensors = checkpoint_tensors(
            weights, self._shapes, dtype=self.model_dtype, model_dir=self.model_dir
        )
        start = time.perf_counter()
        blob = save(tensors)
        self._loop.run(self._rpc("kag_load_weights", blob))
        self._version += 1
        return WeightSync(len(tensors), len(blob), time.perf_counter() - start, self._version)

    def reload(
        self, model_dir: str | os.PathLike[str] | None = None, *, restart: bool = False
    ) -> WeightSync:
        """Load weights from a checkpoint directory (default: the engine's own), the fallback
        when tensors cannot be pushed. In place by default; `restart=True` closes the engine
        and starts a new one on `model_dir` (needed when the architecture or tokenizer changed).
        """
        path = check_model_dir(model_dir if model_dir is not None else self.model_dir)
        if self._engine is None:
            raise RuntimeError("the engine is closed")
        start = time.perf_counter()
        if restart:
            engine, self._engine = self._engine, None
            self._loop.run(self._shutdown(engine), timeout=120)
            self.model_dir = path
            self._engine = self._loop.run(self._start())
        else:
            shapes = checkpoint_shapes(path)
            if self._shapes is not None and shapes != self._shapes:
                raise ValueError(
                    f"checkpoint {path} does not have the running model's tensors and shapes; "
                    "use reload(..., restart=True)"
                )
            self._loop.run(self._rpc("kag_reload_weights", str(path)))
        self._shapes = checkpoint_shapes(path)
        self._version += 1
        n_bytes = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
        return WeightSync(len(self._shapes), n_bytes, time.perf_counter() - start, self._version)

    def close(self) -> None:
        """Stop the engine process and the background loop; safe to call twice."""
        engine, self._engine = self._engine, None
        if engine is not None:
            try:
                self._loop.run(self._shutdown(engine), timeout=120)
            finally:
                self._loop.stop()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _chat_prompts(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        tools: Sequence[dict[str, Any]] | None,
        sampling: SamplingConfig | Sequence[SamplingConfig],
    ) -> tuple[list[list[int]], list[SamplingConfig]]:
        conversations = check_conversations(conversations)
        tools = check_tools(tools)
        configs = per_conversation(sampling, len(conversations))
        return [render_chat(self._tokenizer, c, tools) for c in conversations], configs

    def _raw_prompts(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise ValueError("prompts must be a list of strings or a list of token-id lists")
        out = []
        # len(tokenizer) costs a call into the tokenizer: once per batch, not once per token
        vocab = len(self._tokenizer)
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                out.append(self._tokenizer(prompt).input_ids)
            elif isinstance(prompt, Sequence) and all(
                type(t) is int or (isinstance(t, int) and not isinstance(t, bool)) for t in prompt
            ):
                if prompt and not (min(prompt) >= 0 and max(prompt) < vocab):
                    raise ValueError(
                        f"prompt {i} has token ids outside the vocabulary (size {vocab})"
                    )
                out.append(list(prompt))
            else:
                raise ValueError(
                    f"prompt {i} must be a string or a list of token ids, got {type(prompt).__name__}"
                )
            if not out[-1]:
                raise ValueError(f"prompt {i} is empty")
        return out

    def _params(self, sampling: SamplingConfig, max_tokens: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = sampling.structured
        return SamplingParams(
            structured_outputs=StructuredOutputsParams(**structured) if structured else None,
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=max_tokens,
            seed=sampling.seed,
            logprobs=0 if sampling.logprobs else None,
            stop=list(sampling.stop) or None,
            skip_special_tokens=True,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def _run_all(
        self, prompts: list[list[int]], configs: list[SamplingConfig]
    ) -> list[list[Completion]]:
        return list(
            await asyncio.gather(
                *(self._run_one(p, s) for p, s in zip(prompts, configs, strict=True))
            )
        )

    async def _run_one(self, prompt: list[int], sampling: SamplingConfig) -> list[Completion]:
        if self._engine is None:
            raise RuntimeError("the engine is closed")
        room = self.config.max_model_len - len(prompt)
        if room < 1:
            return [
                Completion(
                    text="", finish_reason=CONTEXT_LENGTH, prompt_tokens=len(prompt), logprobs=None
                )
                for _ in range(sampling.n)
            ]
        # vLLM rejects prompt + max_tokens beyond the context; capping ends the turn with "length"
        params = self._params(sampling, min(sampling.max_tokens, room))
        final = None
        async for output in self._engine.generate(
            {"prompt_token_ids": prompt}, params, uuid.uuid4().hex
        ):
            final = output
        assert final is not None
        return [self._completion(c, len(prompt), sampling.logprobs) for c in final.outputs]

    @staticmethod
    def _completion(output: Any, prompt_tokens: int, want_logprobs: bool) -> Completion:
        token_ids = list(output.token_ids)
        logprobs = None
        if want_logprobs and output.logprobs is not None:
            logprobs = [
                float(step[tid].logprob)
                for tid, step in zip(token_ids, output.logprobs, strict=True)
            ]
        return Completion(
            text=output.text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=output.finish_reason,
            prompt_tokens=prompt_tokens,
            tool_calls=None,
        )

    async def _rpc(self, method: str, argument: Any) -> None:
        engine = self._engine
        # "wait": requests in flight finish on the old weights; the cache holds their KV blocks
        await engine.pause_generation(mode="wait", clear_cache=True)
        try:
            errors = [e for e in await engine.collective_rpc(method, args=(argument,)) if e]
        finally:
            await engine.resume_generation()
        await engine.reset_prefix_cache()
        if errors:
            raise RuntimeError(
                f"vLLM could not load the new weights ({errors[0]}); the engine may hold a mix "
                "of old and new weights: reload(model_dir) from a checkpoint"
            )

    @staticmethod
    async def _shutdown(engine: Any) -> None:
        # cancel the output handler first, or it logs the engine process's exit as a crash
        handler = getattr(engine, "output_handler", None)
        if handler is not None:
            handler.cancel()
        engine.shutdown()
