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
import time
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
from selfplay.engines.vllm import WEIGHT_SYNC_EXTENSION

__all__ = ["OpenAIEngine", "OpenAIEngineConfig", "to_wire_message"]

#: `OpenAIEngineConfig.weight_sync` values
WEIGHT_SYNC_MODES = (None, "file", "inline")

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
    #: how `update_weights` reaches the server; None: the server takes no weights (an error).
    #: "file": a safetensors file in `weight_sync_dir` the server reads (same machine or a
    #: shared filesystem); "inline": base64 in the request (any vLLM server, slower). Both
    #: need a vLLM server with `VLLM_SERVER_DEV_MODE=1` and `--worker-extension-cls
    #: selfplay.engines.vllm.WeightSyncWorker` (what `VLLMServerConfig(weight_sync=True)` starts)
    weight_sync: str | None = None
    #: where "file" writes the weights; None: /dev/shm when it exists (no disk write), else the
    #: temporary directory
    weight_sync_dir: str | None = None
    #: the model directory the server runs (names and shapes of its tensors, the default of
    #: `reload`); None: `tokenizer`, else the `model` name when it is a local directory
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.weight_sync not in WEIGHT_SYNC_MODES:
            raise ValueError(
                f"weight_sync must be one of {WEIGHT_SYNC_MODES}, got {self.weight_sync!r}"
            )
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

        self._version = 0
        self._server_dtype: str | None = None  # known once check_weight_sync has run

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

    # ------------------------------------------------------------------ weights

    @property
    def weight_version(self) -> int:
        """0 for the weights the server started with; +1 per `update_weights` / `reload`."""
        return self._version

    @property
    def checkpoint(self) -> Path:
        """The model directory the server runs (`OpenAIEngineConfig.checkpoint`)."""
        source = self.config.checkpoint or self.config.tokenizer or self.model
        if not Path(source).is_dir():
            raise ValueError(
                f"weight sync needs the model directory the server at {self.base_url} runs "
                f"(model {self.model!r} is not a local directory): set "
                "OpenAIEngineConfig(checkpoint=DIR)"
            )
        return Path(source)

    def check_weight_sync(self) -> None:
        """Raise a ValueError unless the server can take new weights in place: `weight_sync` is
        set, the server has vLLM's development endpoints, and its workers run
        `WeightSyncWorker`. `update_weights` and `reload` run it once themselves.

        >>> OpenAIEngine(url, "tiny").check_weight_sync()  # doctest: +SKIP
        ValueError: ... OpenAIEngineConfig(weight_sync="file") ...
        """
        if self._server_dtype is not None:
            return
        how = (
            "start it with selfplay.vllm_server.VLLMServer(config=VLLMServerConfig("
            "weight_sync=True)), or run `VLLM_SERVER_DEV_MODE=1 python -m "
            "vllm.entrypoints.openai.api_server ... --worker-extension-cls "
            f"{WEIGHT_SYNC_EXTENSION}` with this project on its PYTHONPATH"
        )
        if self.config.weight_sync is None:
            raise ValueError(
                f"the server at {self.base_url} is not declared to take new weights: pass "
                'OpenAIEngineConfig(weight_sync="file") (same machine) or "inline" for a vLLM '
                f"server that supports it ({how}); otherwise restart the server on the new "
                "checkpoint"
            )
        response = self._http("GET", "/server_info", params={"config_format": "json"})
        if response.status_code == 404:
            raise ValueError(
                f"the server at {self.base_url} has no development endpoints (/server_info, "
                f"/collective_rpc), so it cannot take new weights in place: {how}"
            )
        response.raise_for_status()
        vllm_config = response.json().get("vllm_config") or {}
        extension = (vllm_config.get("parallel_config") or {}).get("worker_extension_cls")
        if extension != WEIGHT_SYNC_EXTENSION:
            raise ValueError(
                f"the server at {self.base_url} runs worker extension {extension!r}, not "
                f"{WEIGHT_SYNC_EXTENSION!r}, so it cannot load pushed weights: {how}"
            )
        dtype = str((vllm_config.get("model_config") or {}).get("dtype") or "float32")
        self._server_dtype = dtype.removeprefix("torch.")

    def update_weights(self, weights: Any) -> Any:
        """Put new weights into the server's running model, in place, without a restart.

        `weights` is a transformers model or its state dict under checkpoint names (as for
        `VLLMEngine.update_weights`; checked against `checkpoint` first, a bad name is a
        ValueError and the server keeps its weights). Generation pauses while the weights load
        (requests in flight finish on the old ones) and the server's prefix cache is cleared.
        Returns a `selfplay.engines.vllm.WeightSync`.

        >>> engine = server.engine()                  # doctest: +SKIP
        >>> engine.update_weights(model).version      # doctest: +SKIP
        1
        """
        import base64
        import tempfile

        from safetensors.torch import save

        from selfplay.engines.vllm import WeightSync, checkpoint_shapes, checkpoint_tensors

        if self.client is None:
            raise RuntimeError("the engine is closed")
        self.check_weight_sync()
        assert self._server_dtype is not None
        checkpoint = self.checkpoint
        tensors = checkpoint_tensors(
            weights,
            checkpoint_shapes(checkpoint),
            dtype=self._server_dtype,
            model_dir=checkpoint,
        )
        start = time.perf_counter()
        blob = save(tensors)
        if self.config.weight_sync == "inline":
            self._server_rpc("kag_load_weights_b64", base64.b64encode(blob).decode("ascii"))
        else:
            shm = Path("/dev/shm")
            where = self.config.weight_sync_dir or (str(shm) if shm.is_dir() else None)
            with tempfile.NamedTemporaryFile(
                dir=where, prefix="kag-weights-", suffix=".safetensors"
            ) as fh:
                fh.write(blob)
                fh.flush()
                self._server_rpc("kag_load_weights_file", fh.name)
        self._version += 1
        return WeightSync(len(tensors), len(blob), time.perf_counter() - start, self._version)

    def reload(self, model_dir: str | os.PathLike[str] | None = None) -> Any:
        """Reload every weight in place from a checkpoint directory the server can read
        (default: `checkpoint`), the fallback when tensors cannot be pushed. The directory must
        hold the running model's tensors and shapes; another architecture needs a new server.
        """
        from checkpoints import check_model_dir
        from selfplay.engines.vllm import WeightSync, checkpoint_shapes

        if self.client is None:
            raise RuntimeError("the engine is closed")
        self.check_weight_sync()
        path = check_model_dir(model_dir if model_dir is not None else self.checkpoint)
        shapes = checkpoint_shapes(path)
        if shapes != checkpoint_shapes(self.checkpoint):
            raise ValueError(
                f"checkpoint {path} does not have the served model's tensors and shapes; start "
                "a new server on it"
            )
        start = time.perf_counter()
        self._server_rpc("kag_reload_weights", str(path.resolve()))
        self._version += 1
        n_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        return WeightSync(len(shapes), n_bytes, time.perf_counter() - start, self._version)

    def _http(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request to the server's root (the development endpoints are not under /v1)."""
        import httpx

        root = self.base_url.removesuffix("/v1")
        try:
            return httpx.request(method, root + path, timeout=self.config.timeout_s, **kwargs)
        except httpx.TransportError as err:
            raise ConnectionError(f"cannot reach the model server at {root}: {err}") from None

    def _server_rpc(self, method: str, argument: str) -> None:
        """`method` of `WeightSyncWorker` on every worker, generation paused around it."""

        def post(path: str, **kwargs: Any) -> Any:
            response = self._http("POST", path, **kwargs)
            if response.status_code != 200:
                raise RuntimeError(
                    f"{self.base_url.removesuffix('/v1')}{path} answered "
                    f"{response.status_code}: {response.text[:300]}"
                )
            return response

        # "wait": requests in flight finish on the old weights
        post("/pause", params={"mode": "wait", "clear_cache": "true"})
        try:
            results = post("/collective_rpc", json={"method": method, "args": [argument]}).json()[
                "results"
            ]
        finally:
            post("/resume")
        # no KV block computed with the old weights may be reused
        post("/reset_prefix_cache")
        errors = [r for r in results if r]
        if errors:
            raise RuntimeError(
                f"the server at {self.base_url} could not load the new weights ({errors[0]}); it "
                "may hold a mix of old and new weights: reload(model_dir) from a checkpoint"
            )

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
