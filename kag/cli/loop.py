"""`kag loop`: the Agents-A1 recipe as one resumable pipeline on the graph.

Every stage is a `kag` command (or, for the held-out set, the proposer those commands use), whose
own Runs are named `LOOP_ID-rR-STAGE`, and records a Run `loop:LOOP_ID:rR-STAGE` of kind
`loop-stage` when it finishes, with what it made in the Run's counters. A rerun with the same loop id skips finished stages and resumes the unfinished
one through that command's own resume (self-play and eval runs by their run id, training from
its newest checkpoint, exports by overwriting), so a loop killed anywhere and rerun ends with the
graph an uninterrupted loop makes.

| stage              | rounds | what runs                                                         |
|--------------------|--------|-------------------------------------------------------------------|
| `curate`           | 0      | `kag db upgrade`, `kag generate world`                            |
| `heldout`          | 0      | held-out tasks of every family, proposed before any training data |
| `demos`            | 0      | `kag selfplay run --engine oracle --family F ...`                 |
| `export-sft`       | each   | `kag export sft`: every accepted, valid, non-eval trajectory      |
| `model`            | 0      | `kag model tiny --graph --corpus`: the base model                 |
| `eval-base`        | 0      | `kag eval --tasks run:HELDOUT` with the base model                |
| `sft`              | each   | `kag train sft` from the base (round 0) or the last student       |
| `eval-sft`         | each   | `kag eval` of the SFT model                                       |
| `grpo-F`           | each   | `kag export rl --family F`, `kag train grpo`: the family's teacher |
|                    |        | (`grpo_prompts="failed"`: on the tasks a `kag eval` probe fails)   |
| `eval-grpo-F`      | each   | `kag eval` of the teacher                                         |
| `opd`              | each   | `kag export opd`, `kag train opd` from the SFT model, all teachers |
| `eval-opd`         | each   | `kag eval` of the OPD student                                     |
| `student`          | not    | `kag selfplay run` with the OPD student (sampled), steered to the |
|                    | last   | hop counts it fails at and to what accepted data has not covered  |

The accepted trajectories of round R's `student` stage are in round R+1's `export-sft`, and
round R+1's SFT starts from round R's student. Teachers are trained in round 0 (every round with
`retrain_teachers`); each OPD stage distils the newest teacher of every family.

>>> LoopConfig(workdir="demo").stages()[:3]
['r0-curate', 'r0-heldout', 'r0-demos']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kag.cli import UserError
from kag.cli import main as kag_main

__all__ = [
    "LoopConfig",
    "Loop",
    "STAGE_KIND",
    "LOOP_KIND",
    "loop_parser",
    "config_from_args",
    "run_loop",
    "propose_heldout",
    "steer_hops",
    "main",
]

#: kind of the Run each finished stage records
STAGE_KIND = "loop-stage"
#: kind of the Run that holds a loop's config
LOOP_KIND = "loop"
#: families the loop trains a teacher for
LOOP_FAMILIES = ("search", "compute", "instruction", "tool_use")
#: what a teacher's GRPO prompts may be (`LoopConfig.grpo_prompts`)
GRPO_PROMPTS = ("all", "failed")


@dataclass(frozen=True, kw_only=True, slots=True)
class LoopConfig:
    """What a loop makes and how big each stage is. The defaults are the tiny setup of
    `benchmarks/learning.py` (an 800-entity world, 2-hop search tasks) with short GRPO and OPD
    stages; `kag demo` shrinks them further to fit 15 minutes on 2 cores.

    >>> LoopConfig(workdir="w", rounds=1).stages()[-1]
    'r0-eval-opd'
    """

    #: where models, datasets, run directories and report.md go
    workdir: str
    #: the loop's id: Run ids are `LOOP_ID-rR-STAGE`; rerun with the same id to resume
    loop_id: str = "loop"
    #: graph URL (default: `WORKDIR/kag.db`, the embedded SQLite store)
    graph: str | None = None
    #: task families, one GRPO teacher each
    families: tuple[str, ...] = ("search", "compute")
    #: rounds of SFT -> teachers -> OPD -> student self-play
    rounds: int = 2
    #: entities of the synthetic world (`kag generate world --size`)
    world_size: int = 800
    #: held-out tasks per family, proposed before any training data and never trained on
    heldout: int = 16
    #: oracle demonstrations in round 0, split over the families
    demos: int = 1200
    #: hop count of search demonstrations and held-out tasks
    hops: int = 2
    #: let the oracle demonstrations grow the graph with their derived facts (False:
    #: `kag selfplay run --no-grow`, as `benchmarks/learning.py` does: a compute answer written
    #: back as a fact shows up in every later search's results)
    grow_demos: bool = True
    #: the base model's tokenizer (`kag model tiny --vocab-size --digit-group`): its BPE target
    #: and digits per number token. 4,096 and 1 are `kag model tiny`'s defaults; on the
    #: 800-entity world `benchmarks/learning.py` measured 1,024 better for search and digit
    #: groups of 3 for compute (README, "A tiny agent that learns")
    vocab_size: int = 4096
    digit_group: int = 1
    #: the base model's shape (`kag model tiny --hidden-size --heads --layers`, its defaults);
    #: vLLM's CPU attention needs hidden_size / heads >= 64
    hidden_size: int = 128
    heads: int = 2
    layers: int = 2
    #: SFT packed-row length and rows per optimizer step; compute demonstrations run to 1,850
    #: tokens, so give 2048 and 2 for them
    sft_max_seq_len: int = 1024
    sft_rows: int = 4
    #: SFT epochs and learning rate (the learning benchmark's 3e-3 for the tiny model)
    sft_epochs: int = 3
    sft_learning_rate: float = 3e-3
    #: SFT epochs of later rounds, which start from the last student (it has seen the older
    #: data already; the new rounds add its own accepted trajectories)
    later_sft_epochs: int = 1
    #: SFT learning rate of later rounds: a fine-tune of the last student, 10x lower (measured on
    #: the demo, one more epoch at 3e-3 took the held-out accept rate from 31% to 22%, at 3e-4
    #: it kept 30%)
    later_sft_learning_rate: float = 3e-4
    #: SFT steps at most (None: the epochs decide)
    sft_max_steps: int | None = None
    #: GRPO optimizer steps per teacher, rollouts per prompt, prompts per step, learning rate
    grpo_steps: int = 10
    grpo_samples: int = 8
    grpo_groups: int = 4
    grpo_learning_rate: float = 5e-5
    #: GRPO optimizer steps per batch of rollouts (`kag train grpo --mini-batches`)
    grpo_mini_batches: int = 1
    #: GRPO rollout temperature (`kag train grpo --temperature`; `benchmarks/grpo_learning.py`
    #: measured 0.6 better than 1.0 for the greedy rate) and reward base (`--reward-base`)
    grpo_temperature: float = 1.0
    grpo_reward_base: str = "verifier"
    #: a teacher's prompts: every training task of its family ("all") or those the SFT model
    #: fails greedily ("failed": a `kag eval` probe of them first, at most `grpo_probe_limit`,
    #: as `benchmarks/grpo_learning.py` does; measured there +12.5 points where "all" gave +3)
    grpo_prompts: str = "all"
    grpo_probe_limit: int | None = None
    #: OPD optimizer steps and learning rate (0 steps: no OPD stage; the SFT model is the student)
    opd_steps: int = 10
    opd_learning_rate: float = 5e-5
    #: OPD prompts rolled out per step and the student's sampling temperature (`kag train opd
    #: --prompts-per-step --temperature`; their defaults there)
    opd_prompts_per_step: int = 8
    opd_temperature: float = 1.0
    #: train new teachers every round from that round's SFT model (else round 0's teachers teach
    #: every round's OPD)
    retrain_teachers: bool = False
    #: tasks the student self-plays per round (their accepted trajectories feed the next round)
    student_tasks: int = 64
    #: turn budget of every rollout (evaluations included)
    max_turns: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.families:
            raise ValueError("a loop needs at least one family")
        unknown = [f for f in self.families if f not in LOOP_FAMILIES]
        if unknown:
            raise ValueError(
                f"the loop cannot propose {unknown} tasks; choose from {', '.join(LOOP_FAMILIES)}"
            )
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"a family is listed twice: {list(self.families)}")
        for name in (
            "rounds",
            "world_size",
            "heldout",
            "demos",
            "hops",
            "sft_epochs",
            "later_sft_epochs",
            "sft_max_seq_len",
            "sft_rows",
            "vocab_size",
            "opd_prompts_per_step",
            "grpo_mini_batches",
            "hidden_size",
            "heads",
            "layers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("grpo_steps", "opd_steps", "student_tasks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        from trainer.grpo import REWARD_BASES
        from trainer.models import DIGIT_GROUPS, TinyModelConfig

        for name, choices in (
            ("digit_group", DIGIT_GROUPS),
            ("grpo_prompts", GRPO_PROMPTS),
            ("grpo_reward_base", REWARD_BASES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name} must be one of {', '.join(map(str, choices))}, "
                    f"got {getattr(self, name)!r}"
                )
        try:  # the shape `kag model tiny` would refuse, refused before any stage runs
            TinyModelConfig(
                hidden_size=self.hidden_size,
                num_attention_heads=self.heads,
                num_key_value_heads=self.heads,
                num_hidden_layers=self.layers,
            )
        except ValueError as err:
            raise ValueError(
                f"model shape hidden_size {self.hidden_size}, heads {self.heads}, layers "
                f"{self.layers}: {err}"
            ) from None
        if self.grpo_probe_limit is not None and self.grpo_probe_limit < 1:
            raise ValueError(f"grpo_probe_limit must be >= 1, got {self.grpo_probe_limit}")
        for name in ("grpo_temperature", "opd_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.loop_id or any(c in self.loop_id for c in ":/ "):
            raise ValueError(f"loop id {self.loop_id!r} must be non-empty, without ':', '/' or ' '")

    @property
    def graph_url(self) -> str:
        return self.graph or f"sqlite:///{(Path(self.workdir) / 'kag.db').resolve()}"

    @property
    def ledger_id(self) -> str:
        """The id of the Run that holds the loop's config: `loop:LOOP_ID`."""
        return f"loop:{self.loop_id}"

    def stage_record_id(self, stage: str) -> str:
        """The id of the Run a finished stage records: `loop:LOOP_ID:STAGE`."""
        return f"loop:{self.loop_id}:{stage}"

    def run_id(self, stage: str) -> str:
        """The id of the Runs a stage's commands write (self-play, eval, GRPO steps), e.g.
        `loop-r0-eval-sft`."""
        return f"{self.loop_id}-{stage}"

    def stages(self) -> list[str]:
        """Every stage of the loop, in order."""
        out = ["r0-curate", "r0-heldout", "r0-demos"]
        for r in range(self.rounds):
            p = f"r{r}-"
            out.append(p + "export-sft")
            if r == 0:
                out += [p + "model", p + "eval-base"]
            out += [p + "sft", p + "eval-sft"]
            if self.grpo_steps and (r == 0 or self.retrain_teachers):
                for f in self.families:
                    out += [f"{p}grpo-{f}", f"{p}eval-grpo-{f}"]
            if self.opd_steps and self.grpo_steps:
                out += [p + "opd", p + "eval-opd"]
            # the last round's student data would feed no round
            if self.student_tasks and r < self.rounds - 1:
                out.append(p + "student")
        return out

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


#: settings that may differ between a loop and its rerun (where things go, not what is made)
_RESUMABLE_CHANGES = frozenset({"graph", "workdir"})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class StageRecord:
    """A finished stage: its Run id, outputs and wall time."""

    stage: str
    run_id: str
    outputs: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


class Loop:
    """Runs the stages of a `LoopConfig`, skipping the finished ones.

    >>> Loop(LoopConfig(workdir="demo")).run()  # doctest: +SKIP
    """

    def __init__(
        self, config: LoopConfig, *, stop_after: str | None = None, echo: bool = True
    ) -> None:
        self.config = config
        self.work = Path(config.workdir)
        self.stop_after = stop_after
        self.echo = echo
        if stop_after is not None and stop_after not in config.stages():
            raise ValueError(
                f"--stop-after {stop_after!r} is not a stage of this loop; its stages: "
                + ", ".join(config.stages())
            )

    # -- the ledger (finished stages, as Runs of the graph) ------------------------------------

    def _store(self) -> Any:
        import kag

        return kag.open(self.config.graph_url)

    def finished(self) -> dict[str, StageRecord]:
        """The finished stages of this loop, from the graph."""
        from kag.schema import Run

        ids = [self.config.stage_record_id(s) for s in self.config.stages()]
        graph = self._store()
        try:
            runs = graph.store.get_nodes("Run", ids)
        finally:
            graph.close()
        out: dict[str, StageRecord] = {}
        for run in runs:
            assert isinstance(run, Run)
            if run.kind == STAGE_KIND and run.status == "completed":
                stage = str(run.config.get("stage"))
                out[stage] = StageRecord(
                    stage=stage,
                    run_id=run.id,
                    outputs=dict(run.counters.get("outputs", {})),
                    wall_s=float(run.counters.get("wall_s", 0.0)),
                )
        return out

    def _check_config(self) -> None:
        """Record the loop's config once; a rerun must ask for the same loop."""
        from kag.schema import Run
        from kag.stores.base import GraphBatch

        graph = self._store()
        try:
            found = graph.store.get_nodes("Run", [self.config.ledger_id])
            want = self.config.to_dict()
            if found:
                have = dict(found[0].config)  # type: ignore[attr-defined]
                # a setting newer than the loop's record counts as its default
                defaults = LoopConfig(workdir=self.config.workdir).to_dict()
                changed = sorted(
                    k
                    for k in set(have) | set(want)
                    if k not in _RESUMABLE_CHANGES and have.get(k, defaults.get(k)) != want.get(k)
                )
                if changed:
                    raise UserError(
                        f"loop {self.config.loop_id!r} was started with other settings "
                        f"({', '.join(f'{k}: {have.get(k)!r} -> {want.get(k)!r}' for k in changed)}); "
                        "rerun with the same settings to resume it, or pass another --loop-id"
                    )
                return
            run = Run(id=self.config.ledger_id, kind=LOOP_KIND, config=want, started_at=_now())
            graph.store.write(GraphBatch().add(run))
        finally:
            graph.close()

    def _record(self, stage: str, outputs: dict[str, Any], wall_s: float, started: str) -> None:
        from kag.schema import Run
        from kag.stores.base import GraphBatch

        run = Run(
            id=self.config.stage_record_id(stage),
            kind=STAGE_KIND,
            config={"stage": stage, "loop_id": self.config.loop_id},
            started_at=started,
            finished_at=_now(),
            status="completed",
            counters={"outputs": outputs, "wall_s": round(wall_s, 3)},
        )
        graph = self._store()
        try:
            graph.store.write(GraphBatch().add(run))
        finally:
            graph.close()

    # -- running ------------------------------------------------------------------------------

    def run(self) -> dict[str, StageRecord]:
        """Run every unfinished stage; returns every finished stage's record."""
        self.work.mkdir(parents=True, exist_ok=True)
        if not self.config.graph:  # the schema must exist before the ledger is read
            self._kag("schema", ["db", "upgrade", "--graph", self.config.graph_url])
        self._check_config()
        done = self.finished()
        for stage in self.config.stages():
            if stage in done:
                self._say(f"== {stage}: finished earlier ({done[stage].run_id}), skipped")
            else:
                started, t0 = _now(), time.perf_counter()
                self._say(f"\n== {stage}")
                outputs = self._dispatch(stage, done)
                wall = time.perf_counter() - t0
                self._record(stage, outputs, wall, started)
                done[stage] = StageRecord(stage, self.config.stage_record_id(stage), outputs, wall)
                self._say(f"== {stage}: done in {wall:.1f} s")
            if stage == self.stop_after:
                self._say(f"kag loop: stopped after {stage} (--stop-after); rerun to go on")
                break
        return done

    def _say(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)

    def _kag(self, title: str, argv: list[str]) -> None:
        self._say(f"   kag {' '.join(argv)}")
        rc = kag_main(argv)
        if rc != 0:
            raise StageFailed(f"stage {title!r}: `kag {' '.join(argv)}` exited with {rc}")

    def _dispatch(self, stage: str, done: dict[str, StageRecord]) -> dict[str, Any]:
        rnd, _, name = stage.partition("-")
        r = int(rnd[1:])
        if name.startswith("eval-"):
            return self._eval(stage, name.removeprefix("eval-"), r, done)
        if name.startswith("grpo-"):
            return self._grpo(stage, name.removeprefix("grpo-"), r, done)
        handler: Callable[..., dict[str, Any]] = getattr(self, "_" + name.replace("-", "_"))
        return handler(stage, r, done)

    @property
    def _g(self) -> list[str]:
        return ["--graph", self.config.graph_url]

    @property
    def _tools(self) -> list[str]:
        """The tool set of every stage that runs a model, the demonstrations included: the python
        tool for every task when compute is a family. A teacher of another family then sees the
        tool list of its SFT prompts; the tiny model knows one prompt (measured: 0 of 1,500
        training search tasks solved without the python line, 84% with it)."""
        return ["--python-tool"] if "compute" in self.config.families else []

    def _path(self, *parts: str) -> Path:
        return (self.work / Path(*parts)).resolve()

    def _curate(self, stage: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        c = self.config
        argv = ["generate", "world", "--seed", str(c.seed), "--size", str(c.world_size)]
        self._kag(stage, [*argv, "--merge", *self._g])
        return {"world_size": c.world_size}

    def _heldout(self, stage: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        tasks = propose_heldout(
            self.config.graph_url,
            families=self.config.families,
            n=self.config.heldout,
            hops=self.config.hops,
            seed=10_000 + self.config.seed,
            run_id=self.config.run_id(stage),
        )
        self._say(f"   {sum(tasks.values())} held-out tasks: {tasks}")
        return {"tasks": tasks, "selection": f"run:{self.config.run_id(stage)}"}

    def _selfplay(self, stage: str, engine: list[str], tasks: int, hops: str) -> dict[str, Any]:
        run_id = self.config.run_id(stage)
        families = [a for f in self.config.families for a in ("--family", f)]
        argv = ["selfplay", "run", *engine, *families, "--tasks", str(tasks), "--hops", hops]
        argv += ["--run-id", run_id, "--seed", str(self.config.seed), "--no-progress"]
        argv += ["--max-turns", str(self.config.max_turns), *self._tools, *self._g]
        self._kag(stage, argv)
        counters = _run_counters(self.config.graph_url, run_id)
        return {
            "run_id": run_id,
            "trajectories": counters.get("trajectories"),
            "accepted": counters.get("accepted"),
            "coverage": _coverage(self.config.graph_url),
        }

    def _demos(self, stage: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        engine = ["--engine", "oracle"] + ([] if self.config.grow_demos else ["--no-grow"])
        return self._selfplay(stage, engine, self.config.demos, str(self.config.hops))

    def _export_sft(self, stage: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        out = self._path("datasets", f"r{r}", "sft")
        self._kag(stage, ["export", "sft", str(out), "--overwrite", *self._g])
        return {"path": str(out), **_manifest_rows(out)}

    def _model(self, stage: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        out = self._path("models", "base")
        corpus = done["r0-export-sft"].outputs["path"]
        argv = ["model", "tiny", str(out), "--seed", str(self.config.seed), "--corpus", corpus]
        argv += ["--vocab-size", str(self.config.vocab_size)]
        argv += ["--digit-group", str(self.config.digit_group)]
        argv += ["--hidden-size", str(self.config.hidden_size), "--heads", str(self.config.heads)]
        argv += ["--layers", str(self.config.layers)]
        if out.exists():  # a kill while it was written: build it again
            shutil.rmtree(out)
        self._kag(stage, [*argv, *self._g])
        return {"model": str(out)}

    def _student_model(self, r: int, done: dict[str, StageRecord]) -> str:
        """The model a round's student stage plays with: its OPD student, else its best stage."""
        p = f"r{r}-"
        for stage in (p + "opd", p + "sft"):
            if stage in done:
                return str(done[stage].outputs["model"])
        raise StageFailed(f"round {r} has no trained model yet")

    def _sft(self, stage: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        c = self.config
        start = done["r0-model"].outputs["model"] if r == 0 else self._student_model(r - 1, done)
        data = done[f"r{r}-export-sft"].outputs["path"]
        out = self._path("runs", f"r{r}-sft")
        argv = ["train", "sft", "--data", data, "--model", start, "--out", str(out)]
        argv += ["--max-seq-len", str(c.sft_max_seq_len), "--micro-batch-rows", str(c.sft_rows)]
        argv += ["--weight-decay", "0"]
        epochs = c.sft_epochs if r == 0 else c.later_sft_epochs
        lr = c.sft_learning_rate if r == 0 else c.later_sft_learning_rate
        argv += ["--learning-rate", str(lr), "--num-epochs", str(epochs)]
        argv += ["--seed", str(c.seed), "--log-every-steps", "25", "--no-tensorboard"]
        argv += ["--checkpoint-every-steps", "200", "--keep-checkpoints", "1", *self._g]
        if c.sft_max_steps:
            argv += ["--max-steps", str(c.sft_max_steps)]
        if (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("step-*")):
            argv.append("--resume")
        self._kag(stage, argv)
        return {"model": str(out / "model"), "run_dir": str(out), "start": start, "data": data}

    def _grpo(
        self, stage: str, family: str, r: int, done: dict[str, StageRecord]
    ) -> dict[str, Any]:
        c = self.config
        rl = self._path("datasets", f"r{r}", f"rl-{family}")
        self._kag(stage, ["export", "rl", str(rl), "--family", family, "--overwrite", *self._g])
        start = done[f"r{r}-sft"].outputs["model"]
        if c.grpo_prompts == "failed":
            rl = self._failed_prompts(stage, family, rl, start)
        out = self._path("runs", f"r{r}-grpo-{family}")
        argv = ["train", "grpo", "--data", str(rl), "--model", start, "--out", str(out)]
        argv += ["--steps", str(c.grpo_steps), "--samples", str(c.grpo_samples)]
        argv += ["--groups-per-step", str(c.grpo_groups), "--lr", str(c.grpo_learning_rate)]
        argv += ["--kl-coef", "0", "--max-turns", str(c.max_turns), "--seed", str(c.seed)]
        argv += ["--temperature", str(c.grpo_temperature), "--reward-base", c.grpo_reward_base]
        argv += ["--mini-batches", str(c.grpo_mini_batches)]
        argv += ["--name", self.config.run_id(stage), "--save-every", "5", *self._tools, *self._g]
        self._kag(stage, argv)
        return {"model": str(out / "model"), "run_dir": str(out), "start": start, "data": str(rl)}

    def _failed_prompts(self, stage: str, family: str, rl: Path, model: str) -> Path:
        """The `rl` dataset of the tasks of `rl` that `model` fails greedily (a `kag eval` probe
        of at most `grpo_probe_limit` of them, the Run `LOOP_ID-rR-grpo-F-probe`)."""
        c = self.config
        probe = f"{c.run_id(stage)}-probe"
        argv = ["eval", "--model", model, "--tasks", f"dataset:{rl}", "--run-id", probe]
        argv += ["--max-turns", str(c.max_turns), "--no-progress", *self._g]
        if c.grpo_probe_limit:
            argv += ["--limit", str(c.grpo_probe_limit)]
        argv += self._tools
        self._kag(stage, argv)
        if _run_counters(c.graph_url, probe).get("accept_rate") == 1.0:
            raise UserError(
                f"the SFT model solves every probed {family} task (Run {probe!r}), so there are "
                "no failed prompts to train a teacher on: rerun with --grpo-prompts all, a "
                "larger --grpo-probe-limit or another --loop-id"
            )
        failed = rl.with_name(rl.name + "-failed")
        argv = ["export", "rl", str(failed), "--run", probe, "--include-eval", "--family", family]
        argv += ["--verdict", "rejected", "--splits", "train=1.0", "--overwrite", *self._g]
        self._kag(stage, argv)
        return failed

    def _opd(self, stage: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        c = self.config
        data = self._path("datasets", f"r{r}", "opd")
        self._kag(stage, ["export", "opd", str(data), "--overwrite", *self._g])
        start = done[f"r{r}-sft"].outputs["model"]
        teachers = [
            a for f in c.families for a in ("--teacher", f"{f}={self._teacher(f, r, done)}")
        ]
        out = self._path("runs", f"r{r}-opd")
        argv = ["train", "opd", "--data", str(data), "--student", start, *teachers]
        argv += ["--out", str(out), "--steps", str(c.opd_steps), "--lr", str(c.opd_learning_rate)]
        argv += ["--prompts-per-step", str(c.opd_prompts_per_step)]
        argv += ["--temperature", str(c.opd_temperature)]
        argv += ["--max-turns", str(c.max_turns), "--seed", str(c.seed), *self._tools, *self._g]
        self._kag(stage, argv)
        return {"model": str(out / "model"), "run_dir": str(out), "start": start, "data": str(data)}

    def _teacher(self, family: str, r: int, done: dict[str, StageRecord]) -> str:
        """The newest teacher of `family` trained up to round `r`."""
        for k in range(r, -1, -1):
            if f"r{k}-grpo-{family}" in done:
                return str(done[f"r{k}-grpo-{family}"].outputs["model"])
        raise StageFailed(f"no {family} teacher trained by round {r}")

    def _eval(self, stage: str, of: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        model = done["r0-model" if of == "base" else f"r{r}-{of}"].outputs["model"]
        run_id = self.config.run_id(stage)
        selection = done["r0-heldout"].outputs["selection"]
        argv = ["eval", "--model", model, "--tasks", selection, "--run-id", run_id]
        argv += ["--max-turns", str(self.config.max_turns), "--no-progress", *self._tools]
        self._kag(stage, [*argv, *self._g])
        counters = _run_counters(self.config.graph_url, run_id)
        return {
            "run_id": run_id,
            "model": model,
            "accept_rate": counters.get("accept_rate"),
            "by_family": counters.get("by_family", {}),
            "by_hops": counters.get("by_hops", {}),
        }

    def _student(self, stage: str, r: int, done: dict[str, StageRecord]) -> dict[str, Any]:
        model = self._student_model(r, done)
        last_eval = next(done[s].outputs for s in (f"r{r}-eval-opd", f"r{r}-eval-sft") if s in done)
        hops = steer_hops(last_eval.get("by_hops", {}), base=self.config.hops)
        engine = ["--engine", "vllm", "--model", model, "--temperature", "1.0"]
        out = self._selfplay(stage, engine, self.config.student_tasks, hops)
        return {**out, "model": model, "hops": hops}


class StageFailed(RuntimeError):
    """A stage's command failed; the loop stops and a rerun resumes at that stage."""


def steer_hops(by_hops: dict[str, Any], *, base: int) -> str:
    """The hop range a student self-plays next: from the hop count it fails at most up to one more
    than the longest it was evaluated on (new lengths are where a curriculum grows).

    >>> steer_hops({"2": {"accept_rate": 0.8}}, base=2)
    '2-3'
    >>> steer_hops({"2": {"accept_rate": 0.1}, "3": {"accept_rate": 0.0}}, base=2)
    '3-4'
    >>> steer_hops({}, base=2)
    '2'
    """
    if not by_hops:
        return str(base)
    rates = {int(h): float(v.get("accept_rate") or 0.0) for h, v in by_hops.items()}
    worst = min(rates, key=lambda h: (rates[h], -h))
    longest = max(rates) + 1
    return f"{worst}-{max(longest, worst)}" if longest > worst else str(worst)


def propose_heldout(
    graph_url: str, *, families: Sequence[str], n: int, hops: int, seed: int, run_id: str
) -> dict[str, int]:
    """Propose `n` tasks of each family and write them with a Run `run_id` of kind `heldout`
    (the tasks are PRODUCED_BY it), solving none: later self-play skips tasks the graph holds,
    so no training data is ever made from them. Returns the tasks per family. Idempotent: the
    same call again writes the same tasks.
    """
    import kag
    from kag.schema import Run
    from kag.stores.base import GraphBatch
    from selfplay.config import SelfPlayConfig
    from selfplay.families import FamilyProposer, family_suite
    from selfplay.generation import build_tools
    from selfplay.proposer import Proposer, ProposerConfig
    from selfplay.scoring import Scorer
    from selfplay.writeback import write_tasks

    with kag.open(graph_url) as graph:
        store = graph.store
        tools = build_tools(store, SelfPlayConfig(engine="oracle"))
        suites = {f: family_suite(f) for f in families if f != "search"}
        scorer = Scorer(tools, suites=suites)
        scorer.persist(store)
        existing = [
            t.id
            for t in (
                store.get_nodes("Task", _produced_tasks(store, run_id))
                if store.get_nodes("Run", [run_id])
                else []
            )
        ]
        if existing:  # proposed before a kill: the tasks are in the graph already
            counts: dict[str, int] = {}
            for t in store.get_nodes("Task", existing):
                counts[t.family] = counts.get(t.family, 0) + 1  # type: ignore[attr-defined]
            return counts
        config = ProposerConfig(verifiers=tuple(scorer.verifier_ids))
        proposer = FamilyProposer(store, Proposer(store, config=config))
        counts = {}
        run = Run(
            id=run_id,
            kind="heldout",
            config={"families": list(families), "n": n},
            started_at=_now(),
        )
        tasks = []
        for i, family in enumerate(families):
            got = proposer.propose(
                family, n, hops=hops, seed=seed + i, exclude=[t.id for t in tasks]
            ).tasks
            if not got:
                raise UserError(f"the graph yields no {family} tasks to hold out")
            tasks.extend(got)
            counts[family] = len(got)
        finished = dataclasses.replace(run, status="completed", finished_at=_now(), counters=counts)
        store.write(GraphBatch().add(finished))
        write_tasks(store, tasks, run_id=run_id)
    return counts


def _produced_tasks(store: Any, run_id: str) -> list[str]:
    return [e.source for e in store.edges("PRODUCED_BY", target=run_id) if e.source_kind == "Task"]


def _run_counters(graph_url: str, run_id: str) -> dict[str, Any]:
    import kag

    with kag.open(graph_url) as graph:
        found = graph.store.get_nodes("Run", [run_id])
    return dict(found[0].counters) if found else {}  # type: ignore[attr-defined]


def _coverage(graph_url: str) -> dict[str, Any]:
    import kag
    from kag.coverage import coverage_stats

    with kag.open(graph_url) as graph:
        return coverage_stats(graph.store)


def _manifest_rows(path: Path) -> dict[str, Any]:
    manifest = path / "manifest.json"
    if not manifest.exists():
        return {}
    counts = json.loads(manifest.read_text()).get("counts", {})
    return {"rows": counts.get("rows"), "splits": counts.get("split")}


def loop_parser(
    prog: str = "kag loop", *, families: Sequence[str] | None = None
) -> argparse.ArgumentParser:
    """The arguments of `kag loop` (`kag demo` takes the same with its own defaults, and its own
    `families` when `--family` is not given)."""
    from trainer.grpo import REWARD_BASES
    from trainer.models import DIGIT_GROUPS

    d = LoopConfig(workdir=".")
    families = tuple(families or d.families)
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("loop"), help="where everything goes")
    p.add_argument("--loop-id", default=d.loop_id, help="rerun with the same id to resume")
    p.add_argument(
        "--graph", metavar="URL", default=None, help="graph URL (default: WORKDIR/kag.db)"
    )
    p.add_argument(
        "--family",
        action="append",
        choices=LOOP_FAMILIES,
        help=f"task family, one teacher each (repeatable; default: {' '.join(families)})",
    )
    # every other setting: (field, type, choices or None, help)
    options: tuple[tuple[str, type, Sequence[Any] | None, str], ...] = (
        ("rounds", int, None, "rounds of SFT, teachers, OPD and student self-play"),
        ("world_size", int, None, "entities of the synthetic world"),
        ("heldout", int, None, "held-out tasks per family"),
        ("demos", int, None, "oracle demonstrations in round 0"),
        ("hops", int, None, "hop count of demonstrations and held-out tasks"),
        ("sft_epochs", int, None, "SFT epochs of round 0"),
        ("later_sft_epochs", int, None, "SFT epochs of later rounds"),
        ("sft_max_steps", int, None, "SFT steps at most"),
        ("sft_max_seq_len", int, None, "SFT packed-row length (2048 for compute demonstrations)"),
        ("sft_rows", int, None, "SFT rows per optimizer step"),
        ("vocab_size", int, None, "tokenizer BPE target (1024 measured better)"),
        ("hidden_size", int, None, "base model width"),
        ("heads", int, None, "base model attention heads (hidden size / heads >= 64)"),
        ("layers", int, None, "base model layers"),
        ("grpo_steps", int, None, "GRPO steps per teacher (0: no teachers, no OPD)"),
        ("grpo_samples", int, None, "GRPO rollouts per prompt"),
        ("grpo_groups", int, None, "GRPO prompts per step"),
        ("grpo_mini_batches", int, None, "GRPO optimizer steps per batch of rollouts"),
        ("opd_steps", int, None, "OPD steps (0: no OPD; the SFT model is the student)"),
        ("opd_prompts_per_step", int, None, "OPD prompts rolled out per step"),
        ("student_tasks", int, None, "tasks the student self-plays per round"),
        ("max_turns", int, None, "turn budget of every rollout"),
        ("seed", int, None, "seed of every stage"),
        ("sft_learning_rate", float, None, "SFT learning rate of round 0"),
        ("later_sft_learning_rate", float, None, "SFT learning rate of later rounds"),
        ("grpo_learning_rate", float, None, "GRPO learning rate"),
        ("grpo_temperature", float, None, "GRPO rollout temperature"),
        ("opd_learning_rate", float, None, "OPD learning rate"),
        ("opd_temperature", float, None, "OPD student's sampling temperature"),
        ("digit_group", int, DIGIT_GROUPS, "digits per number token (3 for compute)"),
        ("grpo_reward_base", str, REWARD_BASES, "GRPO reward: the verifiers' graded one or 1/0"),
        (
            "grpo_prompts",
            str,
            GRPO_PROMPTS,
            "a teacher's prompts: all its family's training tasks, or those the SFT model "
            "fails greedily (a kag eval probe first)",
        ),
    )
    for name, kind, choices, help_text in options:
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            choices=choices,
            default=getattr(d, name),
            help=f"{help_text} (default: %(default)s)",
        )
    p.add_argument(
        "--grpo-probe-limit",
        type=int,
        default=d.grpo_probe_limit,
        help="with --grpo-prompts failed: probe at most N tasks per family (default: all)",
    )
    p.add_argument(
        "--no-grow-demos",
        dest="grow_demos",
        action="store_false",
        help="oracle demonstrations write no derived facts back (kag selfplay run --no-grow)",
    )
    p.add_argument("--retrain-teachers", action="store_true", help="train new teachers every round")
    p.add_argument("--stop-after", metavar="STAGE", help="stop after this stage (resume later)")
    p.add_argument("--no-report", action="store_true", help="do not write report.md")
    return p


def config_from_args(args: argparse.Namespace) -> LoopConfig:
    """The `LoopConfig` of parsed `kag loop` arguments."""
    fields = {f.name for f in dataclasses.fields(LoopConfig)} - {"workdir", "families", "graph"}
    values = {k: getattr(args, k) for k in fields}
    return LoopConfig(
        workdir=str(args.workdir),
        graph=args.graph,
        families=tuple(args.family) if args.family else LoopConfig(workdir=".").families,
        **values,
    )


def run_loop(args: argparse.Namespace) -> int:
    """Run (or resume) the loop of parsed arguments and write its report."""
    try:
        config = config_from_args(args)
        loop = Loop(config, stop_after=args.stop_after)
    except ValueError as err:
        raise UserError(str(err)) from None
    t0 = time.perf_counter()
    try:
        done = loop.run()
    except StageFailed as err:
        print(f"kag loop: {err}; rerun the same command to resume there", file=sys.stderr)
        return 1
    if not args.no_report and set(config.stages()) <= set(done):
        from kag.cli.report import write_report

        path = write_report(config, done)
        print(f"\nkag loop: report in {path}")
    print(
        f"kag loop: {len(done)} of {len(config.stages())} stages finished ({time.perf_counter() - t0:.0f} s this call)"
    )
    return 0


def main(argv: list[str]) -> int:
    """`kag loop [--workdir DIR] [--loop-id ID] [--family F ...] [--rounds N] ...`."""
    return run_loop(loop_parser().parse_args(argv))
