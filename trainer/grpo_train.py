"""The GRPO training loop: prompts of an `rl` dataset, one `GRPOTrainer.step` after another, resumable.

| name               | what it gives                                                             |
|--------------------|---------------------------------------------------------------------------|
| `read_prompt_ids`  | the task ids of an `rl` dataset split (Parquet `task_id`, first-seen order) |
| `PromptSchedule`   | the seeded per-epoch order of the prompts and the cursor into it          |
| `GRPOTrainConfig`  | steps, seed, checkpointing, the step's `GRPOConfig`                       |
| `train_grpo`       | the loop: rollouts -> step -> sync -> log -> checkpoint; resumes from OUT |
| `METRIC_KEYS`      | the keys of every `metrics.jsonl` line                                    |

The loop reads Parquet, never the graph: its caller (the `kag train grpo` command) gives it the
task of an id (`task_of`) and the rollout source and Run of a run id (`rollouts_for`), so
`trainer` imports no other package of the project. Each step rolls out under a Run of its own,
`train:<name>:step-<n>`: trajectory ids are fixed per (run, task, sample), so steps never
overwrite each other and a step redone after a resume overwrites only its own rollouts.

Outputs in `out_dir`: `metrics.jsonl` (one line per step), `prompts.jsonl` (the task ids each
step drew, refills included), `reward.png`, `tensorboard/` (when installed),
`checkpoints/step-NNNNNNN/` (model, optimizer, RNG, `state.json` with the prompt cursor) and
`model/` (Hugging Face safetensors + tokenizer, which transformers and vLLM load).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.grpo import GRPOConfig, GRPOTrainer
from trainer.metrics import MetricsLogger, read_metrics
from trainer.state import jsonable, rng_state, seed_everything, set_rng_state

__all__ = [
    "METRIC_KEYS",
    "save_checkpoint",
    "save_final_model",
    "latest_checkpoint",
    "load_checkpoint",
    "truncate_jsonl",
    "drawn_tasks",
    "PromptSchedule",
    "GRPOTrainConfig",
    "GRPOTrainResult",
    "read_prompt_ids",
    "train_grpo",
    "run_id_of_step",
]

#: keys of every `metrics.jsonl` line (values null where a step trained nothing)
METRIC_KEYS = (
    "step",
    "epoch",
    "run_id",
    "prompts",
    "trained",
    "reward_mean",
    "reward_std",
    "verifier_reward_mean",
    "accept_rate",
    "groups_kept",
    "groups_dropped",
    "refills",
    "clip_frac",
    "kl",
    "entropy",
    "mismatch_abs_logp",
    "mismatch_k3",
    "tokens",
    "weight_version",
    "time_rollout_s",
    "time_logprobs_s",
    "time_train_s",
    "time_sync_s",
    "time_other_s",
    "time_step_s",
)


def read_prompt_ids(data_dir: str | Path, *, split: str = "train") -> list[str]:
    """The distinct task ids of `data_dir/data/{split}-*.parquet`, in row order (shards sorted).

    >>> read_prompt_ids("rl-dataset", split="train")[:2]  # doctest: +SKIP
    ['task:search:0f3a...', 'task:search:91bc...']
    """
    import pyarrow.parquet as pq

    root = Path(data_dir)
    shards = sorted((root / "data").glob(f"{split}-*.parquet"))
    if not shards:
        found = sorted(p.name for p in (root / "data").glob("*.parquet"))
        raise ValueError(
            f"{root}/data has no {split}-*.parquet shard (found: {found or 'none'}): pass a "
            "directory written by `kag export rl` and one of its splits"
        )
    ids: dict[str, None] = {}
    for shard in shards:
        columns = pq.read_schema(shard).names
        if "task_id" not in columns:
            raise ValueError(f"{shard} has no task_id column: it is not an rl dataset shard")
        for task_id in pq.read_table(shard, columns=["task_id"]).column("task_id").to_pylist():
            ids.setdefault(task_id)
    return list(ids)


class PromptSchedule:
    """Which prompt comes next: epoch e visits `task_ids` in the order of a permutation seeded by
    (seed, e); `epoch` and `position` are the cursor, advanced as each id is handed out.

    >>> s = PromptSchedule(["a", "b", "c"], seed=0)
    >>> ids = s.draw(); first = [next(ids), next(ids)]; s.epoch, s.position
    (0, 2)
    >>> t = PromptSchedule.from_state(["a", "b", "c"], s.state())
    >>> next(t.draw()) == s.order(0)[2]
    True
    """

    def __init__(
        self, task_ids: Sequence[str], *, seed: int, epoch: int = 0, position: int = 0
    ) -> None:
        if not task_ids:
            raise ValueError("the prompt schedule needs at least one task id")
        if len(set(task_ids)) != len(task_ids):
            raise ValueError("task ids of the prompt schedule must be distinct")
        if epoch < 0 or not 0 <= position <= len(task_ids):
            raise ValueError(f"bad cursor: epoch {epoch}, position {position}")
        self.task_ids = list(task_ids)
        self.seed = seed
        self.epoch = epoch
        self.position = position

    def fingerprint(self) -> str:
        """sha256 of the ids in dataset order: a resume on other data is refused."""
        return hashlib.sha256("\n".join(self.task_ids).encode()).hexdigest()

    def order(self, epoch: int) -> list[str]:
        """The ids in the order epoch `epoch` visits them (the same for the same seed)."""
        rng = np.random.default_rng([self.seed, epoch])
        return [self.task_ids[i] for i in rng.permutation(len(self.task_ids))]

    def draw(self) -> Iterator[str]:
        """The ids from the cursor on, epoch after epoch, without end; the cursor moves as each
        id is handed out, so an id drawn and not yet trained is never drawn again."""
        while True:
            if self.position == len(self.task_ids):
                self.epoch, self.position = self.epoch + 1, 0
            order = self.order(self.epoch)
            while self.position < len(order):
                task_id = order[self.position]
                self.position += 1
                yield task_id

    def peek(self) -> str:
        """The id `draw` hands out next, without moving the cursor.

        >>> s = PromptSchedule(["a", "b"], seed=0)
        >>> s.peek() == next(s.draw())
        True
        """
        if self.position == len(self.task_ids):
            return self.order(self.epoch + 1)[0]
        return self.order(self.epoch)[self.position]

    def state(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "fingerprint": self.fingerprint(),
            "n_prompts": len(self.task_ids),
        }

    @classmethod
    def from_state(cls, task_ids: Sequence[str], state: dict[str, Any]) -> PromptSchedule:
        """The schedule `state()` saved, on the same ids (else a `ValueError`)."""
        schedule = cls(task_ids, seed=int(state["seed"]))
        if state["fingerprint"] != schedule.fingerprint():
            raise ValueError(
                f"the saved prompt schedule was over other prompts ({state['n_prompts']} then, "
                f"{len(task_ids)} now, or another order): resume with the same dataset and split"
            )
        schedule.epoch, schedule.position = int(state["epoch"]), int(state["position"])
        return schedule


@dataclass(frozen=True, kw_only=True, slots=True)
class GRPOTrainConfig:
    """A GRPO run: which prompts, how many steps, where its outputs and checkpoints go.

    >>> GRPOTrainConfig(data_dir="rl", out_dir="run").save_every
    1
    """

    #: an `rl` dataset directory (`kag export rl`); its `task_id` column gives the prompts
    data_dir: str | Path
    #: run directory: metrics.jsonl, prompts.jsonl, reward.png, checkpoints/, model/
    out_dir: str | Path
    #: the dataset split the prompts come from
    split: str = "train"
    #: optimizer steps in total (a resumed run trains the ones left)
    steps: int = 10
    #: seeds the prompt order of every epoch and the torch/python/numpy RNGs
    seed: int = 0
    #: save a checkpoint every N steps (and after the last); 1 makes a kill cost at most the
    #: step under way, larger values redo the steps since the last checkpoint on resume
    save_every: int = 1
    #: checkpoints kept (oldest removed first)
    keep_checkpoints: int = 2
    #: the run's name in its Run ids (`train:<name>:step-<n>`); None: the out_dir's name
    name: str | None = None
    #: samples per prompt, prompts per step, refills, shaping, the optimizer step
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    #: mirror metrics to TensorBoard; None: when the tensorboard package is installed
    tensorboard: bool | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "save_every", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def run_name(self) -> str:
        return self.name or Path(self.out_dir).resolve().name


def run_id_of_step(name: str, step: int) -> str:
    """The Run id of step `step` (1-based) of run `name`.

    >>> run_id_of_step("grpo-film", 3)
    'train:grpo-film:step-000003'
    """
    return f"train:{name}:step-{step:06d}"


@dataclass(frozen=True, slots=True)
class GRPOTrainResult:
    """What a `train_grpo` call did: the step reached, the steps it trained itself (a resumed
    call starts after its checkpoint), the final model's directory and the reward plot (None
    when matplotlib is not installed)."""

    out_dir: Path
    steps: int
    resumed_from: int
    model_dir: Path
    reward_png: Path | None
    metrics: list[dict[str, Any]]


def train_grpo(
    model: Any,
    tokenizer: Any,
    *,
    config: GRPOTrainConfig,
    engine: Any,
    task_of: Callable[[str], Any],
    rollouts_for: Callable[[str], tuple[Any, Any]],
    ref_model: Any = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> GRPOTrainResult:
    """Train `model` with GRPO on the prompts of `config.data_dir`, resuming from `out_dir`.

    `task_of(task_id)` is the task to roll out; `rollouts_for(run_id)` the rollout source and
    Run (kind "train") of one step (see `GRPOTrainer`). `engine` starts on the weights `model`
    starts from; after a resume the checkpoint's weights are pushed into it first. With
    `kl_coef` > 0 and no `ref_model`, the reference is a frozen copy of `model` as given (the
    start checkpoint, also after a resume). `on_step(step, metrics)` runs after each step is
    saved (an exception there stops the run; the next call resumes it).

    >>> result = train_grpo(model, tok, config=cfg, engine=engine, task_of=graph_task,
    ...                     rollouts_for=source_of_run)  # doctest: +SKIP
    """
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schedule = PromptSchedule(
        read_prompt_ids(config.data_dir, split=config.split), seed=config.seed
    )
    if ref_model is None and config.grpo.step.loss.kl_coef > 0:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    trainer = GRPOTrainer(
        model,
        tokenizer,
        source=None,
        engine=engine,
        run=None,
        config=config.grpo,
        ref_model=ref_model,
    )
    logger = MetricsLogger(out_dir, tensorboard=config.tensorboard, curve="reward")
    step = 0
    latest = latest_checkpoint(out_dir)
    if latest is not None:
        step, schedule = load_checkpoint(latest, trainer, schedule.task_ids)
        engine.update_weights(model)
    else:
        seed_everything(config.seed)
    resumed_from = step
    logger.truncate_after(step)
    truncate_jsonl(out_dir / "prompts.jsonl", step)
    _write_run_info(out_dir, config, schedule)

    while step < config.steps:
        step += 1
        started = time.perf_counter()
        run_id = run_id_of_step(config.run_name, step)
        trainer.source, trainer.run = rollouts_for(run_id)
        drawn: list[str] = []
        epoch = schedule.epoch if schedule.position < len(schedule.task_ids) else schedule.epoch + 1

        raw = trainer.step(drawn_tasks(schedule, task_of, drawn))
        metrics = _step_metrics(raw, step=step, epoch=epoch, run_id=run_id, prompts=len(drawn))
        metrics["time_step_s"] = time.perf_counter() - started
        metrics["time_other_s"] = max(
            0.0,
            metrics["time_step_s"]
            - sum(metrics[k] for k in ("time_rollout_s", "time_logprobs_s", "time_train_s"))
            - metrics["time_sync_s"],
        )
        with (out_dir / "prompts.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "run_id": run_id, "task_ids": drawn}) + "\n")
        logger.log(step, {k: v for k, v in metrics.items() if k != "step"})
        if step % config.save_every == 0 or step == config.steps:
            save_checkpoint(out_dir, step, trainer, schedule, keep=config.keep_checkpoints)
        if on_step is not None:
            on_step(step, metrics)

    model_dir = save_final_model(model, tokenizer, out_dir)
    reward_png = logger.close()
    return GRPOTrainResult(
        out_dir=out_dir,
        steps=step,
        resumed_from=resumed_from,
        model_dir=model_dir,
        reward_png=reward_png,
        metrics=read_metrics(logger.path),
    )


def drawn_tasks(
    schedule: PromptSchedule, task_of: Callable[[str], Any], drawn: list[str]
) -> Iterator[Any]:
    """The tasks of the schedule from its cursor on, for one step; each id handed out is logged in
    `drawn`. It ends before any id comes round again (a dataset with fewer prompts than a step and
    its refills ask for), so a step never rolls out one prompt twice; the id stays next in the
    schedule."""
    ids = schedule.draw()
    seen: set[str] = set()
    while schedule.peek() not in seen:
        task_id = next(ids)
        seen.add(task_id)
        drawn.append(task_id)
        yield task_of(task_id)


def _step_metrics(
    raw: dict[str, float], *, step: int, epoch: int, run_id: str, prompts: int
) -> dict[str, Any]:
    """The documented keys (`METRIC_KEYS`) from `GRPOTrainer.step`'s metrics, plus the rest."""
    trained = raw.get("trained", 0.0) == 1.0
    metrics: dict[str, Any] = {
        "step": step,
        "epoch": epoch,
        "run_id": run_id,
        "prompts": prompts,
        "trained": trained,
        "reward_mean": raw.get("reward_mean"),
        "reward_std": raw.get("reward_std"),
        "refills": max(0, int(raw.get("rollout_rounds", 0)) - 1),
        "tokens": int(raw["n_tokens"]) if "n_tokens" in raw else 0,
        "time_logprobs_s": raw.get("time_tokenize_s", 0.0) + raw.get("time_ref_s", 0.0),
        "time_train_s": raw.get("time_train_s", 0.0),
        "time_sync_s": raw.get("time_sync_s", 0.0),
    }
    for key in METRIC_KEYS:
        metrics.setdefault(key, raw.get(key))
    for key, value in raw.items():
        metrics.setdefault(key, value)
    return metrics


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    out_dir: Path, step: int, trainer: GRPOTrainer, schedule: PromptSchedule, *, keep: int
) -> Path:
    """`checkpoints/step-NNNNNNN/`: model, optimizer, RNG and the prompt cursor, written to a
    temporary directory first so a kill mid-save leaves the previous checkpoint intact."""
    root = out_dir / "checkpoints"
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(trainer.model.state_dict(), tmp / "model.pt")
    torch.save(trainer.optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    state = {"step": step, "schedule": schedule.state(), "trainer_steps": trainer.steps}
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_final_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """`out_dir/model/` (safetensors + tokenizer), written beside it first so a kill mid-save
    never leaves a half-written model."""
    model_dir = out_dir / "model"
    tmp = out_dir / ".tmp-model"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)
    return model_dir


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest `checkpoints/step-*` of `out_dir`, or None."""
    found = sorted(p for p in (out_dir / "checkpoints").glob("step-*") if p.is_dir())
    return found[-1] if found else None


def load_checkpoint(
    path: Path, trainer: GRPOTrainer, task_ids: Sequence[str]
) -> tuple[int, PromptSchedule]:
    """Restore the model, optimizer, RNGs and step count of `trainer` (any trainer with
    `.model`, `.optimizer` and `.steps`) from `path`; returns the step and the prompt schedule."""
    state = json.loads((path / "state.json").read_text())
    schedule = PromptSchedule.from_state(task_ids, state["schedule"])
    trainer.model.load_state_dict(torch.load(path / "model.pt", weights_only=True))
    trainer.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    trainer.steps = int(state["trainer_steps"])
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return int(state["step"]), schedule


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop the lines of steps after `step` (a resumed run redoes them)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _write_run_info(out_dir: Path, config: GRPOTrainConfig, schedule: PromptSchedule) -> None:
    info = {"config": jsonable(asdict(config)), "prompts": len(schedule.task_ids)}
    (out_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")
