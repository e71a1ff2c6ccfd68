"""`VLLMEngine`: the model in this process through vLLM's async engine, with continuous batching.

Conversations are rendered with the model's own chat template (so reasoning and tool calls of earlier
turns reach the prompt exactly as training sees them) and sent as token ids. Every conversation is
its own request, so requests from many concurrent `achat` callers share the engine's batch.

>>> with VLLMEngine("/tmp/tiny", config=VLLMEngineConfig(max_model_len=2048)) as engine:  # doctest: +SKIP
...     [[c]] = engine.chat([[{"role": "user", "content": "Hi"}]], sampling=SamplingConfig(max_tokens=8))

Scripts that create an engine need an `if __name__ == "__main__":` guard: vLLM starts its engine
process with spawn.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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

__all__ = ["VLLMEngine", "VLLMEngineConfig", "render_chat"]


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
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                out.append(self._tokenizer(prompt).input_ids)
            elif isinstance(prompt, Sequence) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt
            ):
                if any(not 0 <= t < len(self._tokenizer) for t in prompt):
                    raise ValueError(
                        f"prompt {i} has token ids outside the vocabulary (size {len(self._tokenizer)})"
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

    @staticmethod
    async def _shutdown(engine: Any) -> None:
        # cancel the output handler first, or it logs the engine process's exit as a crash
        handler = getattr(engine, "output_handler", None)
        if handler is not None:
            handler.cancel()
        engine.shutdown()
