"""The instruction family: output constraints composed onto tasks of the other families.

| name                 | what it gives                                                          |
|----------------------|------------------------------------------------------------------------|
| `compose`            | a Task of family "instruction": the base task + a satisfiable set of   |
|                      | constraints (`selfplay.constraints`), its id derived from both         |
| `compose_tasks`      | `compose` over many tasks with one seed (tasks nothing fits left out)  |
| `choose_constraints` | a random set of constraints that hold together with naming the answers |
| `suite`              | the default suite + `instruction_following@1` (required, in the reward)|
| `render_answer`      | the final message that meets a task's constraints (what the oracle     |
|                      | writes, through `selfplay.constraints.render_reply`)                   |
| `VERIFIER_ID`        | `"instruction_following@1"`                                            |

A self-play run of the family proposes tasks as usual, composes them (`compose_tasks`), and
scores with `suite()`; `OraclePolicy` meets the constraints of any task that carries them. The
graph holds the composed task, not its base, so the proposer does not know the walk: pass the
`base_task_id`s of the graph's instruction tasks as `Proposer.propose(exclude=...)` to keep
one composed task per walk.

A composed task keeps the base task's answers, answer ids, path, hops and walk signature, so
`answer_match` and `evidence_coverage` apply unchanged; its question is the base question and
one sentence per constraint; its props add `base_family`, `base_task_id` and
`constraints = {"instructions": [specs]}` (other keys of the base's `constraints` kept), and
`verifiers` gains `instruction_following@1`. A chosen set is never unsatisfiable: every
constraint is checked on the reply `render_reply` writes for the answers, `answer_match` must
read the answers back from it, and the new question must name no answer (`no_shortcut`).

>>> task = Task(id="task:1", question='Where was "Ada" born?', answers=("London",))
>>> composed = compose(task, [Uppercase(), MaxWords(n=10)])
>>> composed.family, composed.props["base_task_id"], composed.question.splitlines()[-1]
('instruction', 'task:1', 'Write your whole reply in capital letters. Answer in at most 10 words.')
>>> render_answer(composed, ["London"])
'<answer>LONDON</answer>'
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kag.schema import Task
from selfplay.answers import leaked_answer
from selfplay.constraints import (
    INSTRUCTIONS_KEY,
    BulletList,
    Constraint,
    EndsWith,
    ForbiddenKeywords,
    JsonList,
    Lowercase,
    MaxSentences,
    MaxWords,
    MinSentences,
    MinWords,
    NoCommas,
    Postscript,
    Quotation,
    RequiredKeywords,
    StartsWith,
    Uppercase,
    constraint_specs,
    count_sentences,
    count_words,
    render_reply,
    reply_text,
    satisfiable,
    task_constraints,
)
from selfplay.rewards import RewardConfig, VerifierSuite
from selfplay.verifiers import InstructionFollowing, LLMJudge

__all__ = [
    "FAMILY",
    "VERIFIER_ID",
    "KEYWORDS",
    "FORBIDDEN_WORDS",
    "START_PHRASES",
    "END_PHRASES",
    "choose_constraints",
    "compose",
    "compose_tasks",
    "instruction_task_id",
    "render_answer",
    "suite",
]

FAMILY = "instruction"
VERIFIER_ID = InstructionFollowing().id
#: words a `required_keywords` constraint asks for (one or two of them)
KEYWORDS = ("graph", "relation", "entity", "evidence", "path", "hop", "source", "result")
#: words a `forbidden_keywords` constraint bans (two or three): hedges and fillers, none of
#: which the oracle's own sentences use
FORBIDDEN_WORDS = (
    "maybe",
    "perhaps",
    "probably",
    "guess",
    "unsure",
    "sorry",
    "actually",
    "basically",
    "honestly",
    "likely",
)
START_PHRASES = ("Here is what I found", "Based on the tool results", "After following every hop")
END_PHRASES = (
    "Is there anything else I can help with?",
    "That is the complete answer.",
    "Let me know if you need more.",
)


def suite(*, judge: LLMJudge | None = None) -> VerifierSuite:
    """`VerifierSuite.default()` with `instruction_following@1` required and in the reward's
    process scores (a reply that meets more constraints scores higher, even when rejected).

    >>> suite().ids[:5]
    ['answer_match@2', 'evidence_coverage@2', 'no_shortcut@1', 'tool_call_validity@1', 'instruction_following@1']
    """
    base = VerifierSuite.default(judge=judge)
    default = RewardConfig()
    return VerifierSuite(
        required=[*base.required, InstructionFollowing()],
        optional=base.optional,
        steps=base.steps,
        reward=RewardConfig(process=(*default.process, InstructionFollowing.name)),
    )


def render_answer(task: Task, answers: Sequence[str]) -> str:
    """The final message that names `answers` and meets the task's output constraints (none:
    the names joined by "; " in an answer block). What `OraclePolicy` writes for its last turn.

    >>> render_answer(Task(id="t", question="q?", props={"constraints": {"instructions": [{"kind": "json_list"}]}}), ["A", "B"])
    '<answer>["A", "B"]</answer>'
    """
    return render_reply(answers, task_constraints(task))


def instruction_task_id(base_id: str, constraints: Sequence[Constraint]) -> str:
    """The deterministic id of a base task composed with constraints: `task:` + 32 hex digits.

    >>> instruction_task_id("task:1", [Uppercase()]) == instruction_task_id("task:1", [Uppercase()])
    True
    """
    key = json.dumps(
        {"base": base_id, "constraints": constraint_specs(constraints)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return "task:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def compose(
    task: Task,
    constraints: Sequence[Constraint] | None = None,
    *,
    rng: random.Random | int | None = None,
    n_constraints: int = 2,
) -> Task:
    """`task` with output constraints: the given ones, else `n_constraints` chosen with `rng`
    (a `random.Random`, or a seed: `random.Random(f"{seed}:{task.id}")`, default seed 0).

    Raises ValueError when the task has no answers, is already an instruction task, or the
    constraints cannot hold together with its answers (`satisfiable`) or name an answer in the
    question; chosen constraints always hold (fewer than `n_constraints` when fewer fit).

    >>> t = Task(id="task:1", question='Where was "Ada" born?', answers=("London",))
    >>> compose(t, rng=3).id == compose(t, rng=3).id
    True
    >>> compose(t, [Uppercase(), Lowercase()])
    Traceback (most recent call last):
    ...
    ValueError: task 'task:1': the constraints cannot hold together: uppercase and lowercase are never composed
    """
    if task.family == FAMILY:
        raise ValueError(f"task {task.id!r} is already an instruction task")
    if not task.answers:
        raise ValueError(f"task {task.id!r} has no answers to write under constraints")
    if constraints is None:
        if rng is None or isinstance(rng, int):
            rng = random.Random(f"{rng or 0}:{task.id}")
        constraints = choose_constraints(
            task.answers, rng=rng, n=n_constraints, question=task.question
        )
        if not constraints:
            raise ValueError(f"task {task.id!r}: no output constraint fits its answers")
    constraints = list(constraints)
    if not constraints:
        raise ValueError(f"task {task.id!r}: compose needs at least one constraint")
    problems = satisfiable(task.answers, constraints)
    if problems:
        raise ValueError(
            f"task {task.id!r}: the constraints cannot hold together: {'; '.join(problems)}"
        )
    question = _question(task.question, constraints)
    leaked = leaked_answer(question, task.answers)
    if leaked is not None:
        raise ValueError(f"task {task.id!r}: the instructions name the answer {leaked!r}")
    base = task.props.get("constraints")
    props: dict[str, Any] = dict(task.props)
    props.update(
        base_family=task.family,
        base_task_id=task.id,
        constraints={
            **(dict(base) if isinstance(base, dict) else {}),
            INSTRUCTIONS_KEY: constraint_specs(constraints),
        },
        verifiers=list(dict.fromkeys([*task.props.get("verifiers", ()), VERIFIER_ID])),
    )
    data = task.to_dict()
    data.update(
        id=instruction_task_id(task.id, constraints), family=FAMILY, question=question, props=props
    )
    return Task.from_dict(data)  # type: ignore[return-value]


def compose_tasks(tasks: Iterable[Task], *, seed: int = 0, n_constraints: int = 2) -> list[Task]:
    """`compose(task, rng=seed, n_constraints=...)` for each task; tasks no constraint fits (and
    instruction tasks) are left out.

    >>> len(compose_tasks([Task(id="t", question="q?", answers=("A",))]))
    1
    """
    out = []
    for task in tasks:
        try:
            out.append(compose(task, rng=seed, n_constraints=n_constraints))
        except ValueError:
            continue
    return out


def _question(question: str, constraints: Sequence[Constraint]) -> str:
    return question.rstrip() + "\n\n" + " ".join(c.instruction() for c in constraints)


# --------------------------------------------------------------------------- choosing


def _answer_words(answers: Sequence[str]) -> set[str]:
    return {w.casefold() for a in answers for w in _WORD.findall(a)}


def _current(answers: Sequence[str], chosen: Sequence[Constraint]) -> str:
    return reply_text(render_reply(answers, chosen))


_WORD = re.compile(r"\w+")


def _round_up(n: int, step: int = 5) -> int:
    return step * math.ceil(n / step)


# each maker: (answers, chosen so far, rng) -> a constraint of its kind, or None when none fits
_Answers = Sequence[str]
_Chosen = Sequence[Constraint]
_Maker = Callable[[_Answers, _Chosen, random.Random], Constraint | None]


def _max_words(answers: _Answers, chosen: _Chosen, rng: random.Random) -> Constraint:
    return MaxWords(n=_round_up(count_words(_current(answers, chosen)) + rng.randint(3, 12)))


def _min_words(answers: _Answers, chosen: _Chosen, rng: random.Random) -> Constraint:
    return MinWords(n=_round_up(count_words(_current(answers, chosen)) + rng.randint(8, 30)))


def _max_sentences(answers: _Answers, chosen: _Chosen, rng: random.Random) -> Constraint:
    return MaxSentences(n=max(1, count_sentences(_current(answers, chosen)) + rng.randint(0, 2)))


def _min_sentences(answers: _Answers, chosen: _Chosen, rng: random.Random) -> Constraint:
    return MinSentences(n=count_sentences(_current(answers, chosen)) + rng.randint(1, 3))


def _pick_words(
    vocabulary: Sequence[str], answers: _Answers, rng: random.Random, k: int
) -> tuple[str, ...] | None:
    """`k` words of `vocabulary` that no answer holds as a word, else None."""
    taken = _answer_words(answers)
    free = [w for w in vocabulary if w not in taken]
    return tuple(rng.sample(free, k)) if len(free) >= k else None


def _required(answers: _Answers, chosen: _Chosen, rng: random.Random) -> Constraint | None:
    words = _pick_words(KEYWORDS, answers, rng, rng.randint(1, 2))
    return RequiredKeywords(words=words) if words else None


def _forbidden(answers: _Answers, chosen: _Chosen, rng: random.Random) -> Constraint | None:
    words = _pick_words(FORBIDDEN_WORDS, answers, rng, rng.randint(2, 3))
    return ForbiddenKeywords(words=words) if words else None


_MAKERS: dict[str, _Maker] = {
    "json_list": lambda a, c, rng: JsonList(),
    "bullet_list": lambda a, c, rng: BulletList(n=len(dict.fromkeys(a))),
    "min_words": _min_words,
    "max_words": _max_words,
    "min_sentences": _min_sentences,
    "max_sentences": _max_sentences,
    "required_keywords": _required,
    "forbidden_keywords": _forbidden,
    "lowercase": lambda a, c, rng: Lowercase(),
    "uppercase": lambda a, c, rng: Uppercase(),
    "starts_with": lambda a, c, rng: StartsWith(phrase=rng.choice(START_PHRASES)),
    "ends_with": lambda a, c, rng: EndsWith(phrase=rng.choice(END_PHRASES)),
    "no_commas": lambda a, c, rng: NoCommas(),
    "quotation": lambda a, c, rng: Quotation(),
    "postscript": lambda a, c, rng: Postscript(),
}


def choose_constraints(
    answers: Sequence[str], *, rng: random.Random, n: int = 2, question: str = ""
) -> list[Constraint]:
    """Up to `n` constraints of distinct kinds that hold together with naming `answers`.

    Kinds are tried in a random order; each candidate's params are set from the reply the
    constraints chosen so far lead to (a word limit a few words above it), and it is kept only
    when the whole set stays `satisfiable` and the question with its instructions names no
    answer.

    >>> [c.kind for c in choose_constraints(["Paris"], rng=random.Random(1), n=3)]
    ['postscript', 'starts_with', 'required_keywords']
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    kinds = list(_MAKERS)
    rng.shuffle(kinds)
    chosen: list[Constraint] = []
    for kind in kinds:
        if len(chosen) >= n:
            break
        candidate = _MAKERS[kind](answers, chosen, rng)
        if candidate is None:
            continue
        trial = [*chosen, candidate]
        if satisfiable(answers, trial):
            continue
        if question and leaked_answer(_question(question, trial), answers) is not None:
            continue
        chosen = trial
    return chosen
