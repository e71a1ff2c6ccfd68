"""Duplicate removal while streaming: exact messages, walk signatures across runs, a cap per domain.

| rule      | a row is dropped when                                                          |
|-----------|--------------------------------------------------------------------------------|
| `exact`   | its normalised messages equal an earlier row's (ids and whitespace ignored)    |
| `walk`    | its task has the `walk_signature` of an earlier, different task (another run   |
|           | proposed the same walk again); every trajectory of the first task is kept      |
| `cap`     | its domain already has `cap_per_domain` rows                                   |

Rows are judged in stream order (trajectory or task id order), so the same graph always keeps the
same rows. Memory: 8 bytes per distinct row for `exact`, one entry per signature for `walk`.

>>> d = DedupConfig(exact=True).build()
>>> m = [{"role": "user", "content": "Who  directed Heat?"}]
>>> d.check(messages=m, task_id="q1", walk_signature="", domain="film")
>>> d.check(messages=[{"role": "user", "content": "Who directed Heat? "}], task_id="q2", walk_signature="", domain="film")
'duplicate_messages'
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DedupConfig",
    "Deduplicator",
    "normalise_messages",
    "messages_fingerprint",
    "DEDUP_RULES",
]

DEDUP_RULES = ("exact", "walk")


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _arguments(text: Any) -> Any:
    # The same call written with other spacing or key order is the same call.
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return _text(text)


def normalise_messages(messages: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Messages reduced to what makes two trajectories the same: roles, whitespace-collapsed text,
    tool names and parsed arguments; tool-call ids (random per run) are dropped.

    >>> normalise_messages([{"role": "user", "content": " hi  there "}])
    [['user', 'hi there', '', [], '']]
    """
    out = []
    for m in messages:
        calls = [
            [c["function"]["name"], _arguments(c["function"]["arguments"])]
            for c in (m.get("tool_calls") or ())
        ]
        out.append(
            [
                m["role"],
                _text(m.get("content")),
                _text(m.get("reasoning_content")),
                calls,
                m.get("name") or "",
            ]
        )
    return out


def messages_fingerprint(messages: Sequence[Mapping[str, Any]]) -> int:
    """A 64-bit fingerprint of the normalised messages."""
    h = hashlib.blake2b(digest_size=8)
    for role, content, reasoning, calls, name in normalise_messages(messages):
        h.update(f"\x1e{role}\x1f{content}\x1f{reasoning}\x1f{name}".encode())
        for call_name, args in calls:
            h.update(f"\x1d{call_name}\x1f".encode())
            h.update(
                args.encode()
                if isinstance(args, str)
                else json.dumps(args, sort_keys=True).encode()
            )
    return int.from_bytes(h.digest(), "little")


@dataclass(frozen=True, kw_only=True, slots=True)
class DedupConfig:
    """Which duplicates an export drops.

    - `exact` (default True): identical normalised messages.
    - `walk` (default False): tasks sharing a `walk_signature` across runs; only the first task
      (in stream order) of each signature keeps its rows.
    - `cap_per_domain` (default None: no cap): at most this many rows per domain.
    """

    exact: bool = True
    walk: bool = False
    cap_per_domain: int | None = None

    def __post_init__(self) -> None:
        cap = self.cap_per_domain
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"cap_per_domain must be a positive integer, got {cap!r}")

    @classmethod
    def parse(cls, rules: str, *, cap_per_domain: int | None = None) -> DedupConfig:
        """From the CLI's `--dedup exact,walk` (or `none`).

        >>> DedupConfig.parse("walk").walk
        True
        """
        names = [r.strip() for r in rules.split(",") if r.strip()]
        if names == ["none"]:
            names = []
        bad = [n for n in names if n not in DEDUP_RULES]
        if bad:
            raise ValueError(
                f"unknown dedup rule {bad[0]!r}; use a comma list of {', '.join(DEDUP_RULES)} or 'none'"
            )
        return cls(exact="exact" in names, walk="walk" in names, cap_per_domain=cap_per_domain)

    def to_dict(self) -> dict[str, Any]:
        return {"exact": self.exact, "walk": self.walk, "cap_per_domain": self.cap_per_domain}

    def build(self) -> Deduplicator:
        return Deduplicator(self)


class Deduplicator:
    """Streaming state of one export's dedup; `check` returns None (keep) or the drop reason."""

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self._seen: set[int] = set()
        self._walk_owner: dict[str, str] = {}
        self._per_domain: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    def check(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        task_id: str,
        walk_signature: str,
        domain: str,
    ) -> str | None:
        reason = self._reason(messages, task_id, walk_signature, domain)
        if reason is None:
            self._per_domain[domain] += 1
        else:
            self.dropped[reason] += 1
        return reason

    def _reason(
        self, messages: Sequence[Mapping[str, Any]], task_id: str, signature: str, domain: str
    ) -> str | None:
        cfg = self.config
        if cfg.walk and signature:
            owner = self._walk_owner.setdefault(signature, task_id)
            if owner != task_id:
                return "duplicate_walk"
        if cfg.cap_per_domain is not None and self._per_domain[domain] >= cfg.cap_per_domain:
            return "domain_cap"
        if cfg.exact:
            fp = messages_fingerprint(messages)
            if fp in self._seen:
                return "duplicate_messages"
            self._seen.add(fp)
        return None
