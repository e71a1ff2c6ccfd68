"""The dataset card: `README.md` with Hugging Face YAML metadata and a PNG of length distributions.

The YAML header lists the splits' files, so `datasets.load_dataset(DIR)` finds them too; the body
says what the rows are, where they came from (graph, filters, dedup) and how many there are, and
shows `lengths.png` (histograms of turns and tokens per row).

>>> LengthStats().add(n_turns=3, n_tokens=120).rows
1
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LengthStats", "write_card", "CARD_NAME", "PLOT_NAME"]

CARD_NAME = "README.md"
PLOT_NAME = "lengths.png"

_ROWS_ARE = {
    "sft": "one accepted, verified trajectory per row (full multi-turn conversation with tool calls)",
    "rl": "one task per row; `messages` is the prompt (system + user), `verifiers` the checks that score it",
    "opd": "one task per row with its domain teacher (`teacher`) and rollout protocol (`protocol`)",
}


@dataclass(slots=True)
class LengthStats:
    """Turn and token count histograms, exact and bounded by the number of distinct values."""

    turns: Counter[int] = field(default_factory=Counter)
    tokens: Counter[int] = field(default_factory=Counter)
    rows: int = 0

    def add(self, *, n_turns: int, n_tokens: int) -> LengthStats:
        self.turns[int(n_turns)] += 1
        self.tokens[int(n_tokens)] += 1
        self.rows += 1
        return self

    @staticmethod
    def _summary(counts: Counter[int]) -> dict[str, float]:
        n = sum(counts.values())
        if not n:
            return {}
        values = sorted(counts)
        total = sum(v * c for v, c in counts.items())

        def pct(q: float) -> int:
            seen, target = 0, q * n
            for v in values:
                seen += counts[v]
                if seen >= target:
                    return v
            return values[-1]

        return {
            "min": values[0],
            "median": pct(0.5),
            "p95": pct(0.95),
            "max": values[-1],
            "mean": round(total / n, 2),
        }

    def summary(self) -> dict[str, dict[str, float]]:
        return {"turns": self._summary(self.turns), "tokens": self._summary(self.tokens)}


def _plot(path: Path, stats: LengthStats, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    for ax, counts, label in (
        (axes[0], stats.turns, "turns per row"),
        (axes[1], stats.tokens, "tokens per row"),
    ):
        if counts:
            values = list(counts)
            weights = [counts[v] for v in values]
            bins = min(50, max(1, len(values)))
            ax.hist(values, bins=bins, weights=weights, color="#4477aa")
        ax.set_xlabel(label)
        ax.set_ylabel("rows")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None, "Creation Time": None})  # reproducible bytes
    plt.close(fig)


def write_card(root: Path, *, manifest: dict[str, Any], lengths: LengthStats) -> None:
    """Write `README.md` and `lengths.png` into the dataset directory `root`."""
    kind = manifest["kind"]
    counts = manifest["counts"]
    splits = sorted(counts["split"])
    _plot(root / PLOT_NAME, lengths, f"{manifest['dataset_id']} ({kind}, {counts['rows']:,} rows)")
    header = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        header += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    header += ["tags:", "- kag", f"- {kind}", "---", ""]
    summary = lengths.summary()

    def table(title: str, data: dict[str, int]) -> list[str]:
        lines = [f"| {title} | rows |", "|---|---:|"]
        lines += [f"| {k or '(none)'} | {v:,} |" for k, v in sorted(data.items())]
        return lines + [""]

    body = [
        f"# {manifest['dataset_id']}",
        "",
        f"A `{kind}` dataset exported from a knowledge-action graph (KAG): {_ROWS_ARE[kind]}.",
        "",
        f"- Source graph: `{manifest['source']['graph']}`",
        f"- Created: {manifest['created_at']}; export run `{manifest['run_id']}`",
        f"- Schema version: {manifest['schema_version']}; columns: {', '.join(f'`{c}`' for c in manifest['columns'])}",
        f"- Rows: {counts['rows']:,}; dropped: {json.dumps(counts['dropped'], sort_keys=True)}",
        f"- Selection: `{json.dumps(manifest['filters'], sort_keys=True)}`",
        f"- Dedup: `{json.dumps(manifest['dedup'], sort_keys=True)}`; splits by hash of task id: "
        f"`{json.dumps(manifest['splits']['ratios'])}`",
        "",
        "## Loading",
        "",
        "```python",
        "import datasets, polars as pl",
        'ds = datasets.load_dataset("parquet", data_dir="DIR/data")',
        'df = pl.scan_parquet("DIR/data/*.parquet")',
        "# each row renders with a chat template:",
        '# tok.apply_chat_template(row["messages"], tools=json.loads(row["tools"]))',
        "```",
        "",
        "## Counts",
        "",
        *table("split", counts["split"]),
        *table("domain", counts["domain"]),
        *table("verdict", counts["verdict"]),
        "## Lengths",
        "",
        f"Turns: `{json.dumps(summary['turns'])}`; tokens: `{json.dumps(summary['tokens'])}`.",
        "",
        f"![turn and token length distributions]({PLOT_NAME})",
        "",
        "`manifest.json` holds the sha256 of every file; `exporters.manifest.verify_dataset(DIR)` checks them.",
        "",
    ]
    (root / CARD_NAME).write_text("\n".join(header + body), encoding="utf-8")
