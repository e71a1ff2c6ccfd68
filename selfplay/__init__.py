"""Self-play: walks to tasks, a multi-turn tool-using solver, verification and write-back.

| name                | module                 | what it is                                        |
|---------------------|------------------------|---------------------------------------------------|
| `run`               | `selfplay.runner`      | run or resume a self-play run on a graph          |
| `SelfPlayConfig`    | `selfplay.config`      | the run's settings (solver, proposer, curriculum) |
| `JudgeConfig`       | `selfplay.config`      | the LLM judge: its engine, required or not        |
| `RunSummary`        | `selfplay.runner`      | what a run did                                    |
| `RolloutSource`     | `selfplay.generation`  | solve, score and write back rollouts of a Run     |
| `evaluate`          | `selfplay.evaluation`  | held-out accept rate and pass@k: an eval Run      |
| `EvalConfig`        | `selfplay.evaluation`  | the evaluation's model, tasks, samples, budgets   |
| `Proposer`          | `selfplay.proposer`    | walks -> tasks                                    |
| `Solver`            | `selfplay.solver`      | the multi-turn loop over a `Policy`               |
| `OraclePolicy`      | `selfplay.oracle`      | gold trajectories along the hidden path           |
| `ToolRegistry`      | `selfplay.tools`       | tools the model may call                          |

>>> import selfplay
>>> summary = selfplay.run("sqlite:///kag.db", config=selfplay.SelfPlayConfig(tasks=8))  # doctest: +SKIP

Names are imported on first use, so `import selfplay` never loads vLLM or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "run",
    "SelfPlayConfig",
    "CurriculumConfig",
    "JudgeConfig",
    "RunSummary",
    "RolloutSource",
    "evaluate",
    "EvalConfig",
    "EvalReport",
    "Proposer",
    "ProposerConfig",
    "Solver",
    "SolverConfig",
    "EnginePolicy",
    "OraclePolicy",
    "ToolRegistry",
]

_HOMES = {
    "run": "selfplay.runner",
    "SelfPlayConfig": "selfplay.config",
    "CurriculumConfig": "selfplay.config",
    "JudgeConfig": "selfplay.config",
    "RolloutSource": "selfplay.generation",
    "evaluate": "selfplay.evaluation",
    "EvalConfig": "selfplay.evaluation",
    "EvalReport": "selfplay.evaluation",
    "RunSummary": "selfplay.runner",
    "Proposer": "selfplay.proposer",
    "ProposerConfig": "selfplay.proposer",
    "Solver": "selfplay.solver",
    "SolverConfig": "selfplay.solver",
    "EnginePolicy": "selfplay.solver",
    "OraclePolicy": "selfplay.oracle",
    "ToolRegistry": "selfplay.tools",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'selfplay' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
