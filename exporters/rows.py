"""Dataset rows of each kind, built from selected graph records (columns of `exporters.schema`).

| kind | `messages`               | `verdict` / `reward`                          |
|------|--------------------------|-----------------------------------------------|
| sft  | the whole trajectory     | the trajectory's                              |
| rl   | system + user prompt     | "accepted" if any matching trajectory was; mean reward over them |
| opd  | as rl, plus `teacher` and `protocol`                                     |

>>> OPDConfig().teacher_for(family="search", domain="film")
'search'
>>> OPDConfig(teachers={"film": "teachers/film"}).teacher_for(family="search", domain="film")
'teachers/film'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporters.select import SelectedTask, SelectedTrajectory, dumps

__all__ = ["OPDConfig", "sft_row", "task_row"]


@dataclass(frozen=True, kw_only=True, slots=True)
class OPDConfig:
    """Domain routing and rollout protocol of on-policy distillation rows.

    - `teachers`: task family or domain -> teacher key (a model name or path the trainer
      resolves); a task whose family and domain are not listed routes to a teacher named after
      its family (one GRPO teacher per family, as `kag loop` trains them).
    - `max_turns` (8), `max_tokens` (1024 new tokens per turn) and `finalisation` ("answer_now":
      at the turn limit the student gets one final "answer now" turn, as in self-play).
    """

    teachers: Mapping[str, str] = field(default_factory=dict)
    max_turns: int = 8
    max_tokens: int = 1024
    finalisation: str = "answer_now"

    def __post_init__(self) -> None:
        teachers = dict(self.teachers)
        for domain, key in teachers.items():
            if not isinstance(domain, str) or not isinstance(key, str) or not key:
                raise ValueError(
                    f"teacher for domain {domain!r} must be a non-empty string, got {key!r}"
                )
        object.__setattr__(self, "teachers", teachers)
        for name in ("max_turns", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"opd {name} must be a positive integer, got {value!r}")

    def teacher_for(self, *, family: str, domain: str) -> str:
        """The routing key of a task: its family's teacher, else its domain's, else the family."""
        return self.teachers.get(family) or self.teachers.get(domain) or family or "default"

    def protocol(self) -> dict[str, Any]:
        return {
            "max_turns": self.max_turns,
            "max_tokens": self.max_tokens,
            "finalisation": self.finalisation,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"teachers": dict(self.teachers), **self.protocol()}


def sft_row(sel: SelectedTrajectory) -> dict[str, Any]:
    """The row of one selected trajectory (also the common part of task rows)."""
    t, task = sel.trajectory, sel.task
    return {
        "id": t.id,
        "task_id": task.id,
        "trajectory_id": t.id,
        "family": task.family,
        "domain": task.domain,
        "messages": sel.messages,
        "tools": sel.tools,
        "answers": list(task.answers),
        "verdict": t.verdict,
        "reward": float(t.reward),
        "n_turns": t.n_turns,
        "n_tokens": t.n_tokens,
        "policy": t.policy,
        "run_id": t.run_id,
        "entity_ids": sel.entity_ids,
        "tool_ids": sel.tool_ids,
        "verification_ids": sel.verification_ids,
    }


def task_row(sel: SelectedTask, *, kind: str, opd: OPDConfig | None = None) -> dict[str, Any]:
    """The rl or opd row of a selected task; `entity_ids` are the task's evidence (SUPPORTS)."""
    row = sft_row(sel.source)
    task = sel.task
    row.update(
        id=task.id,
        verdict="accepted" if sel.n_accepted else "rejected",
        reward=sel.mean_reward,
        entity_ids=sel.evidence_ids,
        tool_ids=sorted(set(_tool_ids(sel))),
        verifiers=dumps(sel.verifiers),
        hops=task.hops,
    )
    if kind == "opd":
        opd = opd or OPDConfig()
        row["teacher"] = opd.teacher_for(family=task.family, domain=task.domain)
        row["protocol"] = dumps(opd.protocol())
    return row


def _tool_ids(sel: SelectedTask) -> list[str]:
    # The tools offered in the prompt, by id; falls back to the ones the source trajectory used.
    offered = sel.source.trajectory.props.get("tools")
    if isinstance(offered, list):
        return [str(i) for i in offered]
    return sel.source.tool_ids
