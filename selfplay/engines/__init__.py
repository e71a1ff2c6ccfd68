"""Model engines behind one interface (`Engine`): sample chat completions with tools, in batches.

| engine         | runs the model                                    | module                    |
|----------------|---------------------------------------------------|---------------------------|
| `VLLMEngine`   | in this process, vLLM's async engine              | `selfplay.engines.vllm`   |
| `OpenAIEngine` | on any OpenAI-compatible server (`vllm serve`)    | `selfplay.engines.openai` |

Importing this package does not import vLLM or the openai client; the engine modules do.
"""

from selfplay.engines.base import CONTEXT_LENGTH, Completion, Engine, SamplingConfig

__all__ = ["CONTEXT_LENGTH", "Completion", "Engine", "SamplingConfig", "VLLMEngine", "OpenAIEngine"]


def __getattr__(name: str):  # lazy, so `import selfplay.engines` stays light
    if name in ("VLLMEngine", "VLLMEngineConfig"):
        from selfplay.engines import vllm

        return getattr(vllm, name)
    if name in ("OpenAIEngine", "OpenAIEngineConfig"):
        from selfplay.engines import openai

        return getattr(openai, name)
    raise AttributeError(f"module 'selfplay.engines' has no attribute {name!r}")
