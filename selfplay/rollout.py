"""`Rollout`: one trajectory in memory, as the solver loop builds it and write-back stores it.

A rollout is the DESIGN section 4 message list of one attempt at a task, plus what the graph needs
beside the messages: per tool-result message the tool used and the entities touched, the token
counts, the status and the answer. `trajectory_id(run_id, task_id, sample)` is deterministic, so
a resumed run recognises what it already wrote.

>>> trajectory_id("run-1", "task:abc", 0)
'traj:run-1:task:abc:0'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kag.schema import Task

__all__ = ["ToolResult", "Rollout", "trajectory_id", "step_id"]


def trajectory_id(run_id: str, task_id: str, sample: int) -> str:
    """The id of sample `sample` of `task_id` in run `run_id`."""
    return f"traj:{run_id}:{task_id}:{sample}"


def step_id(trajectory: str, idx: int) -> str:
    """The id of message `idx` of a trajectory.

    >>> step_id("traj:r:t:0", 3)
    'traj:r:t:0#003'
    """
    return f"{trajectory}#{idx:03d}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolResult:
    """What one tool-result message came from: the call, the tool, and what it touched.

    `tool_id` is None for a call that named no registered tool or could not be parsed (then
    `malformed` tells the two apart); `error` is the error the model saw, if any.
    """

    call_name: str | None
    arguments: str | None
    tool_id: str | None
    ok: bool
    error: str | None = None
    touched_entity_ids: tuple[str, ...] = ()
    malformed: bool = False


@dataclass(kw_only=True, slots=True)
class Rollout:
    """One attempt at a task; `messages[i]` is a DESIGN section 4 message.

    `tool_results` maps the index of each tool-result message to its `ToolResult`;
    `message_tokens[i]` is the number of tokens the policy generated for message i (0 for
    system, user and tool messages). When the policy keeps them (RL), `sampled_token_ids[i]` and
    `sampled_logprobs[i]` are the engine's token ids and log-probabilities of assistant message i,
    exactly as sampled (end-of-turn token included when the engine returned it).
    """

    id: str
    task: Task
    run_id: str
    policy: str
    sample: int = 0
    #: ids of the tools offered in the prompt, in the order the prompt lists them
    tools: tuple[str, ...] = ()
    messages: list[dict[str, Any]] = field(default_factory=list)
    message_tokens: list[int] = field(default_factory=list)
    tool_results: dict[int, ToolResult] = field(default_factory=dict)
    sampled_token_ids: dict[int, list[int]] = field(default_factory=dict)
    sampled_logprobs: dict[int, list[float]] = field(default_factory=dict)
    status: str = "completed"
    answer: str | None = None
    n_turns: int = 0
    #: tokens the policy generated over all turns
    n_generated: int = 0
    #: prompt tokens of the last turn (the context the trajectory reached)
    n_context: int = 0
    #: messages covered by `n_context` (the solver's context estimate starts there)
    context_messages: int = 0
    n_tool_calls: int = 0
    n_malformed: int = 0
    n_tool_errors: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    #: why the rollout was aborted or truncated (None when completed)
    stop_reason: str | None = None

    def add(self, message: dict[str, Any], *, tokens: int = 0) -> int:
        """Append a message; returns its index."""
        self.messages.append(message)
        self.message_tokens.append(tokens)
        return len(self.messages) - 1

    @property
    def touched_entity_ids(self) -> list[str]:
        """Every entity a tool call of this rollout named or returned, in first-touch order."""
        seen: dict[str, None] = {}
        for idx in sorted(self.tool_results):
            for e in self.tool_results[idx].touched_entity_ids:
                seen.setdefault(e)
        return list(seen)

    @property
    def tool_calls(self) -> list[ToolResult]:
        """The tool results in message order (malformed calls included)."""
        return [self.tool_results[i] for i in sorted(self.tool_results)]

    def counters(self) -> dict[str, Any]:
        """The rollout's offered tools and tool-use counts, stored in the Trajectory's props.

        The exporters rebuild the prompt from `tools`, so a model trains on the tool list that
        self-play offers, in the same order.
        """
        return {
            "sample": self.sample,
            "tools": list(self.tools),
            "n_tool_calls": self.n_tool_calls,
            "n_malformed": self.n_malformed,
            "n_tool_errors": self.n_tool_errors,
            "n_context": self.n_context,
            "finish_reasons": list(self.finish_reasons),
            "stop_reason": self.stop_reason,
            "hops": self.task.hops,
        }
