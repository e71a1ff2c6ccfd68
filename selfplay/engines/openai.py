"""`OpenAIEngine`: any OpenAI-compatible server (`vllm serve`, SGLang, a hosted API), many requests in flight.

Each conversation is one `/v1/chat/completions` request (raw prompts go to `/v1/completions`); up to
`concurrency` requests are in flight at once, so the server's batch stays full. vLLM servers also
return token ids (`return_token_ids`); other servers give `token_ids == []`.

>>> engine = OpenAIEngine("http://127.0.0.1:8000/v1", "tiny")                  # doctest: +SKIP
>>> engine.chat([[{"role": "user", "content": "Hi"}]], sampling=SamplingConfig(n=2))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

__all__ = ["OpenAIEngine", "OpenAIEngineConfig", "to_wire_message"]

_CONTEXT_ERRORS = ("maximum context length", "max_model_len", "context length", "too long")


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenAIEngineConfig:
    """Client options.

    `tokenizer` (a local model directory) backs `count_tokens`; by default the `model` name is
    used when it is a local directory, as it is for `vllm serve DIR`.
    """

    concurrency: int = 64  # requests in flight at once
    api_key: str | None = None  # default: $OPENAI_API_KEY, else "EMPTY" (vLLM needs none)
    timeout_s: float = 600.0  # per request
    max_retries: int = 2  # on connection errors and 5xx, with backoff (the openai client's own)
    vllm_extensions: bool = True  # send vLLM's extra fields (return_token_ids, skip_special_tokens)
    tokenizer: str | None = None
    tool_choice: str | None = (
        None  # sent when set ("auto", "none", "required"); servers default to "auto"
    )

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")


def to_wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A DESIGN section 4 message as sent over the wire: no null fields; reasoning under both names.

    vLLM hands an assistant message's `reasoning` to the chat template (as `reasoning_content` too).

    >>> to_wire_message({"role": "assistant", "content": "x", "reasoning_content": "r", "tool_calls": None})
    {'role': 'assistant', 'content': 'x', 'reasoning_content': 'r', 'reasoning': 'r'}
    """
    out = {k: v for k, v in message.items() if v is not None}
    if out.get("role") == "assistant":
        out.setdefault("content", "")
        if out.get("reasoning_content"):
            out["reasoning"] = out["reasoning_content"]
        if not out.get("tool_calls"):
            out.pop("tool_calls", None)
    return out


class OpenAIEngine:
    """The `Engine` interface on an OpenAI-compatible HTTP server (see module docstring)."""

    def __init__(
        self, base_url: str, model: str, *, config: OpenAIEngineConfig = OpenAIEngineConfig()
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.config = config
        self._tokenizer: Any = None
        self._loop = BackgroundLoop("openai-engine")
        #: the `openai.AsyncOpenAI` client the requests go through (None once closed)
        self.client: Any = self._loop.run(self._make_client())
        self._semaphore: asyncio.Semaphore = self._loop.run(self._make_semaphore())

    async def _make_client(self) -> Any:
        from openai import AsyncOpenAI

        key = self.config.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        return AsyncOpenAI(
            base_url=self.base_url,
            api_key=key,
            timeout=self.config.timeout_s,
            max_retries=self.config.max_retries,
        )

    async def _make_semaphore(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.config.concurrency)

    # ------------------------------------------------------------------ interface

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            source = self.config.tokenizer or self.model
            if not Path(source).is_dir():
                raise ValueError(
                    f"no local tokenizer for model {self.model!r}: set OpenAIEngineConfig(tokenizer=DIR)"
                )
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(source)
        return self._tokenizer

    def count_tokens(
        self, conversation: list[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        from selfplay.engines.vllm import count_prompt_tokens

        return count_prompt_tokens(self.tokenizer, conversation, tools)

    def chat(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        """One list of n completions per conversation (blocking; requests run concurrently)."""
        return self._loop.run(self._chat_all(conversations, tools, sampling))

    async def achat(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        return await self._loop.wrap(self._chat_all(conversations, tools, sampling))

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        *,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        """Continue raw text or token-id prompts through `/v1/completions`."""
        return self._loop.run(self._generate_all(prompts, sampling))

    async def agenerate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        *,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        return await self._loop.wrap(self._generate_all(prompts, sampling))

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                self._loop.run(client.close(), timeout=30)
            finally:
                self._loop.stop()

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _extra_body(self, sampling: SamplingConfig) -> dict[str, Any] | None:
        structured = sampling.structured
        if not self.config.vllm_extensions:
            if structured:
                raise ValueError(
                    f"SamplingConfig.{next(iter(structured))} needs a server that takes vLLM's "
                    f"`structured_outputs` request field; {self.base_url} is used without vLLM "
                    "extensions (OpenAIEngineConfig(vllm_extensions=False))"
                )
            return None
        extra: dict[str, Any] = {"return_token_ids": True, "skip_special_tokens": True}
        if structured:
            extra["structured_outputs"] = structured
        return extra

    async def _chat_all(
        self, conversations: Any, tools: Any, sampling: Any
    ) -> list[list[Completion]]:
        conversations = check_conversations(conversations)
        tools = check_tools(tools)
        configs = per_conversation(sampling, len(conversations))
        tasks = [self._chat_one(c, tools, s) for c, s in zip(conversations, configs, strict=True)]
        return list(await asyncio.gather(*tasks))

    async def _chat_one(
        self,
        conversation: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        sampling: SamplingConfig,
    ) -> list[Completion]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [to_wire_message(m) for m in conversation],
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if tools:
            kwargs["tools"] = tools
            if self.config.tool_choice is not None:
                kwargs["tool_choice"] = self.config.tool_choice
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if sampling.logprobs:
            kwargs["logprobs"] = True
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        extra = self._extra_body(sampling)
        if extra:
            kwargs["extra_body"] = extra
        response = await self._request(self.client.chat.completions.create, kwargs, sampling)
        if isinstance(response, list):
            return response
        prompt_tokens = response.usage.prompt_tokens if response.usage else 0
        out = []
        for choice in sorted(response.choices, key=lambda c: c.index):
            message = choice.message
            calls = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in (message.tool_calls or ())
            ]
            extra_fields = message.model_extra or {}
            reasoning = extra_fields.get("reasoning_content") or extra_fields.get("reasoning")
            logprobs = None
            if (
                sampling.logprobs
                and choice.logprobs is not None
                and choice.logprobs.content is not None
            ):
                logprobs = [float(t.logprob) for t in choice.logprobs.content]
            out.append(
                Completion(
                    text=message.content or "",
                    token_ids=list((choice.model_extra or {}).get("token_ids") or []),
                    logprobs=logprobs,
                    finish_reason=choice.finish_reason,
                    prompt_tokens=prompt_tokens,
                    tool_calls=calls or None,
                    reasoning=reasoning,
                )
            )
        return out

    async def _generate_all(self, prompts: Any, sampling: Any) -> list[list[Completion]]:
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise ValueError("prompts must be a list of strings or a list of token-id lists")
        configs = per_conversation(sampling, len(prompts))
        return list(
            await asyncio.gather(
                *(self._generate_one(p, s) for p, s in zip(prompts, configs, strict=True))
            )
        )

    async def _generate_one(
        self, prompt: str | Sequence[int], sampling: SamplingConfig
    ) -> list[Completion]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt if isinstance(prompt, str) else list(prompt),
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if sampling.logprobs:
            kwargs["logprobs"] = 0 if self.config.vllm_extensions else 1
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        extra = self._extra_body(sampling)
        if extra:
            kwargs["extra_body"] = extra
        response = await self._request(self.client.completions.create, kwargs, sampling)
        if isinstance(response, list):
            return response
        prompt_tokens = response.usage.prompt_tokens if response.usage else 0
        out = []
        for choice in sorted(response.choices, key=lambda c: c.index):
            logprobs = None
            if (
                sampling.logprobs
                and choice.logprobs is not None
                and choice.logprobs.token_logprobs is not None
            ):
                logprobs = [float(x) for x in choice.logprobs.token_logprobs]
            out.append(
                Completion(
                    text=choice.text,
                    token_ids=list((choice.model_extra or {}).get("token_ids") or []),
                    logprobs=logprobs,
                    finish_reason=choice.finish_reason,
                    prompt_tokens=prompt_tokens,
                )
            )
        return out

    async def _request(self, create: Any, kwargs: dict[str, Any], sampling: SamplingConfig) -> Any:
        import openai

        if self.client is None:
            raise RuntimeError("the engine is closed")
        async with self._semaphore:
            try:
                return await create(**kwargs)
            except openai.BadRequestError as err:
                text = str(err).lower()
                if any(marker in text for marker in _CONTEXT_ERRORS):
                    return [
                        Completion(text="", finish_reason=CONTEXT_LENGTH) for _ in range(sampling.n)
                    ]
                raise ValueError(
                    f"{self.base_url} rejected the request: {_error_text(err)}"
                ) from None
            except openai.APIConnectionError as err:
                raise ConnectionError(
                    f"cannot reach the model server at {self.base_url}: {err}"
                ) from None


def _error_text(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        return json.dumps(body)[:500]
    return str(err)[:500]
