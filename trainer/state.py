"""Training-run state that a resumed run must restore: RNG streams, and configs as plain JSON.

| function         | what it does                                                         |
|------------------|----------------------------------------------------------------------|
| `seed_everything`| seeds Python's, NumPy's and torch's generators                       |
| `rng_state`      | the state of every generator (CUDA's too, when present), to save     |
| `set_rng_state`  | restores what `rng_state` saved                                      |
| `jsonable`       | a config (dicts, lists, numbers, strings) as JSON-ready data          |

SFT and GRPO checkpoints save `rng_state()` beside the model, so a resumed run draws the same
random numbers the uninterrupted one would have.

>>> seed_everything(0); a = random.random(); state = rng_state(); b = random.random()
>>> set_rng_state(state); random.random() == b
True
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["jsonable", "rng_state", "seed_everything", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy takes 32-bit seeds only
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The state of every random generator, as `torch.save` stores it."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from `rng_state()`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def jsonable(value: Any) -> Any:
    """`value` with anything that is not a dict, list, number, string or None as its `str`.

    >>> jsonable({"path": __import__("pathlib").Path("x"), "n": (1, 2)})
    {'path': 'x', 'n': [1, 2]}
    """
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)
