"""Training metrics: one JSON object per step in `metrics.jsonl`, a PNG loss curve, TensorBoard.

`MetricsLogger(out_dir)` appends a line per `log(step, values)` (so a resumed run continues the same
file), mirrors scalar values to TensorBoard when the `tensorboard` package is installed, and
`close()` draws `loss.png` (SFT) or `reward.png` (GRPO, `curve="reward"`) from the whole file with
matplotlib; without matplotlib installed it draws nothing and returns None.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "read_metrics", "plot_loss_curve", "plot_reward_curve"]


class MetricsLogger:
    """Writes metrics on the main process only (`enabled=False` elsewhere makes every call a no-op).

    >>> log = MetricsLogger("/tmp/run")                        # doctest: +SKIP
    >>> log.log(1, {"loss": 2.3, "lr": 1e-5}); log.close()      # doctest: +SKIP
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool | None = None,
        curve: str = "loss",
    ) -> None:
        if curve not in ("loss", "reward"):
            raise ValueError(f"curve must be 'loss' or 'reward', got {curve!r}")
        self.out_dir = Path(out_dir)
        self.curve = curve
        self.enabled = enabled
        self.path = self.out_dir / "metrics.jsonl"
        self._writer: Any = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard is None:
            tensorboard = importlib.util.find_spec("tensorboard") is not None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step` (a resumed run re-logs them)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> Path | None:
        """Flush TensorBoard and draw `loss.png` or `reward.png`; returns the PNG path (None when
        disabled or matplotlib is not installed)."""
        if not self.enabled:
            return None
        if self._writer is not None:
            self._writer.close()
        if importlib.util.find_spec("matplotlib") is None:
            return None
        if self.curve == "reward":
            return plot_reward_curve(self.path, self.out_dir / "reward.png")
        return plot_loss_curve(self.path, self.out_dir / "loss.png")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` file, in order."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Draw training loss (and the router aux loss, if logged) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(metrics_path) if "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label="loss")
    if records and "aux_loss" in records[0]:
        twin = ax.twinx()
        twin.plot(
            [r["step"] for r in records],
            [r["aux_loss"] for r in records],
            color="tab:orange",
            alpha=0.6,
            label="router aux loss",
        )
        twin.set_ylabel("router aux loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (assistant tokens)")
    ax.set_title("SFT loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def plot_reward_curve(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Draw the GRPO reward (mean and one std band, steps that trained) and the accept rate
    against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    trained = [r for r in records if r.get("reward_mean") is not None]
    steps = [r["step"] for r in trained]
    mean = [r["reward_mean"] for r in trained]
    std = [r.get("reward_std") or 0.0 for r in trained]
    ax.plot(steps, mean, label="reward (trained groups)")
    ax.fill_between(
        steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2
    )
    ax.plot(
        [r["step"] for r in records],
        [r.get("accept_rate", 0.0) for r in records],
        label="accept rate (all rollouts)",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("reward / accept rate")
    ax.set_title("GRPO reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
