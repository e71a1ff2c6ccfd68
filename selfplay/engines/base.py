"""The one interface every model engine offers, and the records it speaks.

| name             | what it is                                                            |
|------------------|-----------------------------------------------------------------------|
| `SamplingConfig` | temperature, top_p, max_tokens, n, seed, logprobs, stop, regex/choice |
| `Completion`     | one sampled continuation: text, token ids, logprobs, finish reason    |
| `Engine`         | `chat` / `achat` / `generate`, `tokenizer`, `count_tokens`, `close`   |

Conversations are lists of DESIGN section 4 messages; tools are OpenAI function specs. An engine
returns one list of `n` completions per conversation, in order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "SamplingConfig",
    "Completion",
    "Engine",
    "check_conversations",
    "check_tools",
    "per_conversation",
    "CONTEXT_LENGTH",
    "DEFAULT_SAMPLING",
]

#: `Completion.finish_reason` when the prompt alone fills the model's context; nothing is generated
CONTEXT_LENGTH = "context_length"
_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, kw_only=True, slots=True)
class SamplingConfig:
    """How to sample; the same fields mean the same thing on every engine.

    >>> SamplingConfig(temperature=0.7, max_tokens=64, n=4, seed=1).n
    4
    """

    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    max_tokens: int = 256  # new tokens per completion
    n: int = 1  # completions per conversation
    seed: int | None = None  # the same seed on the same prompt gives the same completions
    logprobs: bool = False  # return the sampled tokens' log-probabilities
    stop: tuple[str, ...] = ()  # extra stop strings (end-of-turn tokens always stop)
    #: structured output: the whole completion must match this regular expression (vLLM's
    #: structured outputs; an engine that cannot constrain decoding raises a ValueError)
    regex: str | None = None
    #: structured output: the completion is exactly one of these strings
    choice: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            raise ValueError(
                f"SamplingConfig.stop must be a list of strings, got the string {self.stop!r}"
            )
        object.__setattr__(self, "stop", tuple(self.stop))
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or self.max_tokens < 1
        ):
            raise ValueError(
                f"SamplingConfig.max_tokens must be a positive integer, got {self.max_tokens!r}"
            )
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"SamplingConfig.n must be a positive integer, got {self.n!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"SamplingConfig.seed must be an integer or None, got {self.seed!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"SamplingConfig.stop must hold non-empty strings, got {self.stop!r}")
        if self.regex is not None and self.choice is not None:
            raise ValueError("SamplingConfig takes regex or choice, not both")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except (re.error, TypeError) as err:
                raise ValueError(
                    f"SamplingConfig.regex is not a regular expression: {self.regex!r}: {err}"
                ) from None
        if self.choice is not None:
            if isinstance(self.choice, str):
                raise ValueError(
                    f"SamplingConfig.choice must be a list of strings, got the string {self.choice!r}"
                )
            object.__setattr__(self, "choice", tuple(self.choice))
            if not self.choice or not all(isinstance(c, str) and c for c in self.choice):
                raise ValueError(
                    f"SamplingConfig.choice must hold non-empty strings, got {self.choice!r}"
                )

    @property
    def structured(self) -> dict[str, Any] | None:
        """The structured-output constraint as vLLM names it (`{"regex": ...}` or `{"choice":
        [...]}`), None when decoding is free.

        >>> SamplingConfig(choice=["yes", "no"]).structured
        {'choice': ['yes', 'no']}
        """
        if self.regex is not None:
            return {"regex": self.regex}
        if self.choice is not None:
            return {"choice": list(self.choice)}
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Completion:
    """One sampled continuation of a prompt.

    `logprobs` has one entry per token in `token_ids` when asked for, else None. `tool_calls` holds
    DESIGN section 4 tool-call dicts when the server parsed them (then `text` is the content without
    the calls), and None when the engine returns the raw text for `selfplay.parsing` to read.
    `finish_reason` is "stop", "length" or `CONTEXT_LENGTH` (prompt too long, nothing generated).
    `text` is vLLM's detokenization of `token_ids`: when the last tokens end inside a multi-byte
    UTF-8 character (a sample cut by `max_tokens`), vLLM leaves that partial character out, where
    `tokenizer.decode(token_ids)` would end in U+FFFD. Train on `token_ids`, never on re-encoded
    text.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None  # server-parsed reasoning, when the server splits it off


#: the default of every engine call: one sample, temperature 1, up to 256 tokens
DEFAULT_SAMPLING = SamplingConfig()


@runtime_checkable
class Engine(Protocol):
    """What the solver loop needs from a model engine (`VLLMEngine`, `OpenAIEngine`)."""

    def chat(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        """One list of `sampling.n` completions per conversation, in order (blocking)."""
        ...

    async def achat(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        """`chat` for asyncio callers; concurrent calls are batched by the engine."""
        ...

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        *,
        sampling: SamplingConfig | Sequence[SamplingConfig] = DEFAULT_SAMPLING,
    ) -> list[list[Completion]]:
        """Raw continuation of text or token-id prompts, no chat template."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (with its chat template)."""
        ...

    def count_tokens(
        self, conversation: list[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        """Prompt tokens of `conversation` rendered with the generation prompt."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...


def check_conversations(conversations: Any) -> list[list[dict[str, Any]]]:
    """Validate DESIGN section 4 conversations; the error names the conversation and message index.

    >>> check_conversations([[{"role": "user", "content": "hi"}]])[0][0]["role"]
    'user'
    """
    if isinstance(conversations, (str, Mapping)) or not isinstance(conversations, Sequence):
        raise ValueError("conversations must be a list of conversations (each a list of messages)")
    out = []
    for i, conversation in enumerate(conversations):
        if (
            isinstance(conversation, (str, Mapping))
            or not isinstance(conversation, Sequence)
            or not conversation
        ):
            raise ValueError(f"conversation {i} must be a non-empty list of messages")
        for j, message in enumerate(conversation):
            where = f"conversation {i} message {j}"
            if not isinstance(message, Mapping):
                raise ValueError(f"{where} must be a dict, got {type(message).__name__}")
            if message.get("role") not in _ROLES:
                raise ValueError(
                    f"{where}: role must be one of {list(_ROLES)}, got {message.get('role')!r}"
                )
            if message.get("content") is not None and not isinstance(message["content"], str):
                raise ValueError(f"{where}: content must be a string or null")
            for call in message.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, Mapping) else None
                if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                    raise ValueError(
                        f"{where}: tool_calls entries need function.name, got {call!r:.120}"
                    )
        out.append([dict(m) for m in conversation])
    return out


def check_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Validate OpenAI function specs; the error names the tool index."""
    if tools is None:
        return None
    if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
        raise ValueError("tools must be a list of OpenAI function specs")
    for i, spec in enumerate(tools):
        fn = spec.get("function") if isinstance(spec, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(
                f"tool {i} must be {{'type': 'function', 'function': {{'name', 'description', 'parameters'}}}}, "
                f"got {spec!r:.120}"
            )
    return [dict(t) for t in tools] or None


def per_conversation(
    sampling: SamplingConfig | Sequence[SamplingConfig], count: int
) -> list[SamplingConfig]:
    """One `SamplingConfig` per prompt: the same one for all, or one each (lengths must match)."""
    if isinstance(sampling, SamplingConfig):
        return [sampling] * count
    configs = list(sampling)
    if len(configs) != count or not all(isinstance(s, SamplingConfig) for s in configs):
        raise ValueError(
            f"sampling must be one SamplingConfig or a list of {count} (one per prompt)"
        )
    return configs
