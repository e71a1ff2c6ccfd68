"""Train/validation/test splits decided by a hash of the task id.

Every trajectory of a task lands in the same split (no task leaks from train into test), and the
split of a task never depends on what else is exported, so re-exporting, or exporting a larger
graph later, keeps every earlier task where it was.

>>> s = SplitConfig().build()
>>> s.split_of("task-42") == s.split_of("task-42")
True
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SplitConfig", "Splitter", "SPLIT_NAMES"]

# The names `datasets.load_dataset("parquet", data_dir=...)` recognises in file names.
SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True, kw_only=True, slots=True)
class SplitConfig:
    """Split ratios (name, fraction) summing to 1, and the salt of the hash.

    Defaults: 90% train, 5% validation, 5% test. Changing `salt` reshuffles every task; keep it
    to keep splits stable across exports.
    """

    ratios: tuple[tuple[str, float], ...] = (("train", 0.9), ("validation", 0.05), ("test", 0.05))
    salt: str = "kag-split-v1"

    def __post_init__(self) -> None:
        ratios = tuple((str(n), float(r)) for n, r in self.ratios)
        object.__setattr__(self, "ratios", ratios)
        if not ratios:
            raise ValueError("splits: give at least one split, e.g. train=1")
        names = [n for n, _ in ratios]
        for name, ratio in ratios:
            if name not in SPLIT_NAMES:
                raise ValueError(f"split name {name!r} is not one of {list(SPLIT_NAMES)}")
            if not math.isfinite(ratio) or ratio < 0:
                raise ValueError(f"split {name!r} has ratio {ratio}; ratios must be >= 0")
        if len(set(names)) != len(names):
            raise ValueError(f"split names repeat: {names}")
        total = sum(r for _, r in ratios)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split ratios sum to {total:g}, not 1: {dict(ratios)}")

    @classmethod
    def parse(cls, text: str) -> SplitConfig:
        """From the CLI's `--splits train=0.8,validation=0.1,test=0.1`.

        >>> SplitConfig.parse("train=0.5,test=0.5").ratios
        (('train', 0.5), ('test', 0.5))
        """
        ratios = []
        for part in text.split(","):
            name, sep, value = part.partition("=")
            try:
                ratios.append((name.strip(), float(value)))
            except ValueError:
                raise ValueError(
                    f"bad split {part!r}: write NAME=FRACTION, e.g. train=0.9"
                ) from None
            if not sep:
                raise ValueError(f"bad split {part!r}: write NAME=FRACTION, e.g. train=0.9")
        return cls(ratios=tuple(ratios))

    def to_dict(self) -> dict[str, Any]:
        return {"ratios": dict(self.ratios), "salt": self.salt, "by": "sha256(salt:task_id)"}

    def build(self) -> Splitter:
        return Splitter(self)


class Splitter:
    """Maps a task id to its split name; cheap, stateless apart from the config."""

    def __init__(self, config: SplitConfig) -> None:
        self.config = config
        self._bounds: list[tuple[float, str]] = []
        acc = 0.0
        for name, ratio in config.ratios:
            acc += ratio
            if ratio > 0:
                self._bounds.append((acc, name))
        self._salt = config.salt.encode() + b":"

    def split_of(self, task_id: str) -> str:
        digest = hashlib.sha256(self._salt + task_id.encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for bound, name in self._bounds:
            if u < bound:
                return name
        return self._bounds[-1][1]  # rounding at the top end
