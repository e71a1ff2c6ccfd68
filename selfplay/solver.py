"""The multi-turn solver loop: many trajectories in flight, tools between turns, budgets, status.

Every turn gathers the next message of every active trajectory into ONE policy call (for an engine:
one batched `chat`), so the engine's batch stays full; then it runs the tool calls and decides which
trajectories go on. With `SolverConfig.overlap_turns` each trajectory instead goes on by itself,
its turns awaited one at a time while the engine batches whatever is in flight (`EnginePolicy.aact`).

| outcome     | when                                                                           |
|-------------|--------------------------------------------------------------------------------|
| `completed` | the policy wrote `<answer>...</answer>` in a turn without tool calls           |
| `truncated` | `max_turns` turns went by without an answer: one final "answer now" turn ran   |
| `aborted`   | the context budget (`max_context_tokens`) or the engine's context ran out       |

A turn with neither a tool call nor an answer gets a reminder message and counts as a turn. A
malformed tool call (bad JSON, no name, ...) becomes an error observation (a "tool" message) and is
counted in `Rollout.n_malformed`; a call the registry rejects is counted in `n_tool_errors`.

>>> solver = Solver(EnginePolicy(engine), default_registry(graph), config=SolverConfig())  # doctest: +SKIP
>>> rollouts = solver.solve(tasks, samples=4, run_id="r1")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from kag.messages import chat_message
from kag.schema import Task
from selfplay.parsing import extract_answer, parse_assistant
from selfplay.rollout import Rollout, ToolResult, trajectory_id
from selfplay.tools import ToolRegistry

__all__ = [
    "TurnBudget",
    "SolverConfig",
    "Solver",
    "TaskSetup",
    "Policy",
    "TurnRequest",
    "Action",
    "EnginePolicy",
    "DEFAULT_SYSTEM_PROMPT",
    "FAMILY_SYSTEM_PROMPTS",
    "REMINDER",
    "ANSWER_NOW",
]

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions about a knowledge graph with tools. Find the start entity with "
    "search_entities, then follow one relation per hop with get_relations (pass the entity id "
    "and the relation), using the ids each result gives you. When you know the answer, reply "
    "with the entity names inside <answer>...</answer>, separated by '; ' if there are several."
)
#: the system prompt of tasks of a family whose tools or answers differ from the default
#: prompt's (used while `SolverConfig.system_prompt` is the default)
FAMILY_SYSTEM_PROMPTS: dict[str, str] = {
    "compute": (
        "You answer questions about a knowledge graph that need arithmetic. Find the start "
        "entity with search_entities, follow relations with get_relations (pass the entity id "
        "and the relation), read an entity's numeric attributes (its props) with get_entity, and "
        "compute with the python tool (print the result). Reply with one number, or with the one "
        "entity name the question asks for, inside <answer>...</answer>."
    ),
}
REMINDER = (
    "Your reply had neither a tool call nor an answer. Call a tool, or give your final answer "
    "as <answer>...</answer>."
)
ANSWER_NOW = (
    "You have no turns left. Give your final answer now as <answer>...</answer>, without tool "
    "calls."
)
# parse errors that are about tool calls (others, e.g. an unterminated <think>, are not calls)
_CALL_ERROR_PREFIXES = ("tool call", "stray </tool_call>")


@dataclass(frozen=True, kw_only=True, slots=True)
class TurnBudget:
    """The protocol of a task family: turns before the final "answer now" turn and new tokens
    per turn (the context budget is the run's, which sizes the engine).

    >>> TurnBudget(max_turns=12, max_new_tokens=256).max_turns
    12
    """

    max_turns: int
    max_new_tokens: int

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TurnBudget.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SolverConfig:
    """Budgets and sampling of the solver loop."""

    #: regular turns (assistant messages) before the final "answer now" turn
    max_turns: int = 8
    #: new tokens per turn
    max_new_tokens: int = 256
    #: prompt + new tokens a trajectory may reach; a turn that would not fit aborts it
    max_context_tokens: int = 4096
    #: fewest new tokens worth a turn: with less room left the trajectory is aborted
    min_turn_tokens: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    #: base seed; each trajectory's turn t samples with a seed derived from (seed, trajectory id,
    #: t), so a resumed run regenerates the same trajectory. None: unseeded
    seed: int | None = 0
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    #: remind the policy when a turn has neither a tool call nor an answer (else such a turn ends
    #: the trajectory as completed without an answer)
    remind: bool = True
    #: tool calls executed per turn; later ones get an error observation
    max_calls_per_turn: int = 8
    #: per-task protocols, keyed `FAMILY/SHAPE` (the task's `path["shape"]`) or `FAMILY`; a task
    #: matching neither uses `max_turns` and `max_new_tokens` (see `budget_for`)
    budgets: Mapping[str, TurnBudget] = field(default_factory=dict)
    #: drive every rollout on its own (asyncio) when the policy can (`EnginePolicy.overlaps`):
    #: a rollout's next turn goes to the engine as soon as its tools have run, while the others'
    #: turns are still decoding, so the engine's batch never drains at a turn boundary (verl's
    #: agent loop does the same). It pays when tools are slow; with the graph tools on 2 CPU
    #: cores `benchmarks/grpo.py` measures it slower (3,760 against 4,208 tokens/s: staggered
    #: small prefills break the decode batch). Off by default: every turn is one batched call
    overlap_turns: bool = False

    def budget_for(self, task: Task) -> TurnBudget:
        """The turn and token budget of `task`.

        >>> cfg = SolverConfig(budgets={"tool_use": TurnBudget(max_turns=12, max_new_tokens=256)})
        >>> cfg.budget_for(Task(id="t", question="q", family="tool_use")).max_turns
        12
        """
        shape = (task.path or {}).get("shape")
        for key in (f"{task.family}/{shape}" if shape else None, task.family):
            if key and key in self.budgets:
                return self.budgets[key]
        return TurnBudget(max_turns=self.max_turns, max_new_tokens=self.max_new_tokens)

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_new_tokens", "max_context_tokens", "min_turn_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SolverConfig.{name} must be a positive integer, got {value!r}")
        if self.max_calls_per_turn < 1:
            raise ValueError("SolverConfig.max_calls_per_turn must be >= 1")
        if self.min_turn_tokens > self.max_context_tokens:
            raise ValueError("SolverConfig.min_turn_tokens must not exceed max_context_tokens")


@dataclass(frozen=True, kw_only=True, slots=True)
class TurnRequest:
    """What a policy is asked for: the next assistant message of one rollout."""

    rollout: Rollout
    max_tokens: int
    seed: int | None
    #: the final "answer now" turn (tool calls will not run)
    final: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Action:
    """A policy's next assistant message, as raw text (and server-parsed parts, if any)."""

    text: str
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None
    n_tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str | None = None
    #: the engine's sampled token ids and their log-probabilities, when the policy keeps them
    #: (`EnginePolicy(logprobs=True)`, for RL); None otherwise
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None


@runtime_checkable
class Policy(Protocol):
    """Produces the next assistant message of many rollouts at once (`EnginePolicy`, `OraclePolicy`)."""

    name: str

    def act(self, requests: Sequence[TurnRequest], *, tools: list[dict[str, Any]]) -> list[Action]:
        """One `Action` per request, in order."""
        ...

    def count_tokens(self, rollout: Rollout, *, tools: list[dict[str, Any]]) -> int:
        """Prompt tokens of the rollout's conversation as the policy would see it."""
        ...


class EnginePolicy:
    """A model engine (`VLLMEngine`, `OpenAIEngine`) as a policy: one batched call per turn.

    With `continue_tokens` (the default for an in-process `VLLMEngine`) a rollout's next prompt is
    its previous prompt's token ids + the tokens the model generated + the rendered new messages,
    sent as raw token ids: the model sees exactly what it sampled, and the engine's prefix cache
    reuses the whole history instead of prefilling a re-tokenised copy of it. This needs a chat
    template whose rendering of `messages[:k]` is a prefix of `messages[:k+1]` (the tiny
    model's is); where that does not hold, the turn falls back to rendering the whole chat.

    With `greedy_samples=g`, rollouts whose sample index is below g decode greedily (temperature
    0) and the others at `temperature`, in the same batched call: pass@k evaluation runs its
    greedy trajectory (sample 0) beside the k sampled ones.

    >>> EnginePolicy(engine, name="tiny").name  # doctest: +SKIP
    'tiny'
    """

    def __init__(
        self,
        engine: Any,
        *,
        name: str | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        continue_tokens: bool | None = None,
        greedy_samples: int = 0,
        logprobs: bool = False,
    ) -> None:
        if greedy_samples < 0:
            raise ValueError(f"greedy_samples must be >= 0, got {greedy_samples}")
        self.engine = engine
        #: keep every assistant message's sampled token ids and log-probabilities (GRPO's
        #: rollout log-probs); `Rollout.sampled_token_ids` / `sampled_logprobs` hold them
        self.logprobs = logprobs
        model = getattr(engine, "model_dir", None) or getattr(engine, "model", None) or "engine"
        self.name = name or f"model:{getattr(model, 'name', model)}"
        self.temperature = temperature
        self.top_p = top_p
        self.greedy_samples = greedy_samples
        if continue_tokens is None:
            continue_tokens = type(engine).__name__ == "VLLMEngine"
        self.continue_tokens = continue_tokens
        # rollout id -> (messages covered, their token ids including the last generation)
        self._ids: dict[str, tuple[int, list[int]]] = {}
        self._end_ids: list[int] | None = None

    @property
    def overlaps(self) -> bool:
        """True when the engine has the asyncio calls `aact` needs (`agenerate`, or `achat`
        without `continue_tokens`), so `SolverConfig.overlap_turns` can drive rollouts apart."""
        return hasattr(self.engine, "agenerate" if self.continue_tokens else "achat")

    def act(self, requests: Sequence[TurnRequest], *, tools: list[dict[str, Any]]) -> list[Action]:
        if not requests:
            return []
        sampling = self._sampling(requests)
        if self.continue_tokens:
            prompts = [self._prompt_ids(r.rollout, tools) for r in requests]
            results = self.engine.generate(prompts, sampling=sampling)
            self._remember(requests, prompts, results)
        else:
            results = self.engine.chat(
                [r.rollout.messages for r in requests], tools=tools or None, sampling=sampling
            )
        return self._actions(results)

    async def aact(
        self, requests: Sequence[TurnRequest], *, tools: list[dict[str, Any]]
    ) -> list[Action]:
        """`act` for asyncio callers: concurrent calls share the engine's batch.

        >>> actions = await policy.aact([request], tools=specs)  # doctest: +SKIP
        """
        if not requests:
            return []
        sampling = self._sampling(requests)
        if self.continue_tokens:
            prompts = [self._prompt_ids(r.rollout, tools) for r in requests]
            results = await self.engine.agenerate(prompts, sampling=sampling)
            self._remember(requests, prompts, results)
        else:
            results = await self.engine.achat(
                [r.rollout.messages for r in requests], tools=tools or None, sampling=sampling
            )
        return self._actions(results)

    def _sampling(self, requests: Sequence[TurnRequest]) -> list[Any]:
        from selfplay.engines.base import SamplingConfig

        return [
            SamplingConfig(
                temperature=0.0 if r.rollout.sample < self.greedy_samples else self.temperature,
                top_p=self.top_p,
                max_tokens=r.max_tokens,
                seed=r.seed,
                logprobs=self.logprobs,
            )
            for r in requests
        ]

    def _remember(
        self, requests: Sequence[TurnRequest], prompts: list[list[int]], results: list[Any]
    ) -> None:
        for r, prompt, completions in zip(requests, prompts, results, strict=True):
            ids = prompt + list(completions[0].token_ids)
            self._ids[r.rollout.id] = (len(r.rollout.messages) + 1, ids)

    def _actions(self, results: list[Any]) -> list[Action]:
        actions = []
        for completions in results:
            c = completions[0]
            actions.append(
                Action(
                    text=c.text,
                    tool_calls=c.tool_calls,
                    reasoning=c.reasoning,
                    n_tokens=len(c.token_ids),
                    prompt_tokens=c.prompt_tokens,
                    finish_reason=c.finish_reason,
                    token_ids=list(c.token_ids) if self.logprobs else None,
                    logprobs=list(c.logprobs) if self.logprobs and c.logprobs else None,
                )
            )
        return actions

    def forget(self, rollouts: Sequence[Rollout]) -> None:
        """Drop the token history of rollouts that ended."""
        for r in rollouts:
            self._ids.pop(r.id, None)

    def _render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], gen: bool
    ) -> str:
        return self.engine.tokenizer.apply_chat_template(
            messages, tools=tools or None, tokenize=False, add_generation_prompt=gen
        )

    def _end_of_turn(self, tools: list[dict[str, Any]]) -> list[int]:
        """Token ids the template writes after an assistant message's content (`<|im_end|>\n`)."""
        if self._end_ids is None:
            probe = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "Zq"}]
            text = self._render(probe, tools, False)
            tail = text[text.rindex("Zq") + 2 :]
            self._end_ids = self.engine.tokenizer.encode(tail, add_special_tokens=False)
        return self._end_ids

    def _prompt_ids(self, rollout: Rollout, tools: list[dict[str, Any]]) -> list[int]:
        tokenizer = self.engine.tokenizer
        messages = rollout.messages
        full = self._render(messages, tools, True)
        cached = self._ids.get(rollout.id)
        if cached is not None:
            n, ids = cached
            head = self._render(messages[:n], tools, False)
            if full.startswith(head):
                end = self._end_of_turn(tools)
                # a turn that stopped on the end-of-turn token already holds its first id
                if end and ids and ids[-1] == end[0]:
                    end = end[1:]
                suffix = tokenizer.encode(full[len(head) :], add_special_tokens=False)
                return ids + end + suffix
        return tokenizer.encode(full, add_special_tokens=False)

    def count_tokens(self, rollout: Rollout, *, tools: list[dict[str, Any]]) -> int:
        return int(self.engine.count_tokens(rollout.messages, tools or None))


def _turn_seed(base: int | None, rollout_id: str, turn: int) -> int | None:
    if base is None:
        return None
    digest = hashlib.sha256(f"{base}|{rollout_id}|{turn}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSetup:
    """The tools and system prompt of a task that brings its own (a BFCL function-calling task
    offers its functions, not the graph tools); see `Solver(setup=...)`."""

    tools: ToolRegistry
    system_prompt: str


class _Offer:
    """A registry as the solver offers it: its specs, tool ids and their size in bytes."""

    __slots__ = ("tools", "specs", "ids", "specs_bytes")

    def __init__(self, tools: ToolRegistry) -> None:
        self.tools = tools
        self.specs = tools.specs()
        self.ids = tuple(t.id for t in tools)
        self.specs_bytes = len(json.dumps(self.specs).encode()) + 64


class Solver:
    """Runs a policy over tasks with tools (see the module docstring).

    `setup(task)` may give a task tools and a system prompt of its own (`TaskSetup`; None: the
    solver's `tools` and prompt); rollouts with different tools are asked for in separate
    policy calls.
    """

    def __init__(
        self,
        policy: Policy,
        tools: ToolRegistry,
        *,
        config: SolverConfig | None = None,
        setup: Callable[[Task], TaskSetup | None] | None = None,
    ) -> None:
        self.policy = policy
        self.tools = tools
        self.config = config or SolverConfig()
        self.setup = setup
        self._default = _Offer(tools)
        # rollout id -> what it is offered, for rollouts whose task brings its own tools
        self._offers: dict[str, _Offer] = {}

    def _offer(self, r: Rollout) -> _Offer:
        return self._offers.get(r.id, self._default)

    def start(self, task: Task, *, run_id: str, sample: int = 0) -> Rollout:
        """A new rollout of `task`: the system prompt and the task's question."""
        own = self.setup(task) if self.setup is not None else None
        rid = trajectory_id(run_id, task.id, sample)
        offer = self._default
        if own is not None:
            offer = self._offers[rid] = _Offer(own.tools)
        rollout = Rollout(
            id=rid,
            task=task,
            run_id=run_id,
            policy=self.policy.name,
            sample=sample,
            tools=offer.ids,
        )
        prompt = own.system_prompt if own is not None else self.system_prompt(task)
        rollout.add(chat_message("system", prompt))
        rollout.add(chat_message("user", task.question))
        return rollout

    def system_prompt(self, task: Task) -> str:
        """The system prompt of `task`: its family's (`FAMILY_SYSTEM_PROMPTS`) unless the config
        sets a prompt of its own."""
        prompt = self.config.system_prompt
        if prompt == DEFAULT_SYSTEM_PROMPT:
            return FAMILY_SYSTEM_PROMPTS.get(task.family, prompt)
        return prompt

    def solve(
        self,
        tasks: Sequence[Task],
        *,
        run_id: str,
        samples: int = 1,
        on_finished: Callable[[list[Rollout]], None] | None = None,
        on_turn: Callable[[int, int], None] | None = None,
    ) -> list[Rollout]:
        """`samples` rollouts of every task, all in flight together; returns them in order.

        `on_finished(rollouts)` is called after every turn with the rollouts that ended in it (the
        runner writes them to the graph there); `on_turn(active, new_tokens)` after every turn.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        rollouts = [self.start(t, run_id=run_id, sample=k) for t in tasks for k in range(samples)]
        return self.run(rollouts, on_finished=on_finished, on_turn=on_turn)

    def run(
        self,
        rollouts: Sequence[Rollout],
        *,
        on_finished: Callable[[list[Rollout]], None] | None = None,
        on_turn: Callable[[int, int], None] | None = None,
    ) -> list[Rollout]:
        """Drive started rollouts (from `start`) to their end; see `solve`."""
        if self.config.overlap_turns and getattr(self.policy, "overlaps", False):
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: ours can run
                return self._run_overlapped(rollouts, on_finished=on_finished, on_turn=on_turn)
        active = [r for r in rollouts]
        final: set[str] = set()
        while active:
            requests: list[TurnRequest] = []
            ended: list[Rollout] = []
            for r in active:
                request = self._request(r, final=r.id in final)
                if request is None:
                    ended.append(r)
                else:
                    requests.append(request)
            actions = self._act(requests)
            if len(actions) != len(requests):
                raise RuntimeError(
                    f"policy {self.policy.name!r} returned {len(actions)} actions for "
                    f"{len(requests)} requests"
                )
            still: list[Rollout] = []
            new_tokens = 0
            for request, action in zip(requests, actions, strict=True):
                r = request.rollout
                new_tokens += action.n_tokens
                next_final = self._advance(r, action, final=request.final)
                if next_final is None:
                    ended.append(r)
                else:
                    still.append(r)
                    if next_final:
                        final.add(r.id)
            active = still
            if on_turn is not None:
                on_turn(len(active), new_tokens)
            if ended:
                self._ended(ended)
                if on_finished is not None:
                    on_finished(ended)
        return list(rollouts)

    def _request(self, r: Rollout, *, final: bool) -> TurnRequest | None:
        """The rollout's next turn, or None when its context budget is spent (then it ends
        as aborted)."""
        cfg = self.config
        context = self._context_tokens(r)
        room = cfg.max_context_tokens - context
        if room < cfg.min_turn_tokens:
            _end(r, "aborted", f"context budget: {context} prompt tokens leave {room}")
            return None
        return TurnRequest(
            rollout=r,
            max_tokens=min(cfg.budget_for(r.task).max_new_tokens, room),
            seed=_turn_seed(cfg.seed, r.id, r.n_turns),
            final=final,
        )

    def _advance(self, r: Rollout, action: Action, *, final: bool) -> bool | None:
        """Apply the turn's `action`: None when the rollout ended, else whether its next turn is
        the final one (the answer-now message is added when its turn budget is spent)."""
        if self.apply(r, action, final=final):
            return None
        if not final and r.n_turns >= self.config.budget_for(r.task).max_turns:
            r.add(chat_message("user", ANSWER_NOW))
            return True
        return final

    def _ended(self, rollouts: list[Rollout]) -> None:
        forget = getattr(self.policy, "forget", None)
        if forget is not None:
            forget(rollouts)
        for r in rollouts:
            self._offers.pop(r.id, None)

    def _run_overlapped(
        self,
        rollouts: Sequence[Rollout],
        *,
        on_finished: Callable[[list[Rollout]], None] | None,
        on_turn: Callable[[int, int], None] | None,
    ) -> list[Rollout]:
        """`run` with every rollout driven on its own (`SolverConfig.overlap_turns`).

        The same turns, budgets, seeds and endings as the lock-step loop; only the batching
        differs. Ended rollouts reach `on_finished` in chunks of an eighth of the rollouts (and
        the rest at the end), so graph writes stay batched; `on_turn(active, new_tokens)` follows
        every single turn.
        """
        pending: list[Rollout] = []
        chunk = max(1, len(rollouts) // 8)
        active = len(rollouts)

        def finish(r: Rollout) -> None:
            nonlocal active
            active -= 1
            pending.append(r)
            if len(pending) >= chunk or active == 0:
                done = pending[:]
                pending.clear()
                self._ended(done)
                if on_finished is not None:
                    on_finished(done)

        async def drive(r: Rollout) -> None:
            final = False
            while True:
                request = self._request(r, final=final)
                if request is None:
                    break
                actions = await self.policy.aact(  # type: ignore[attr-defined]
                    [request], tools=self._offer(r).specs
                )
                if len(actions) != 1:
                    raise RuntimeError(
                        f"policy {self.policy.name!r} returned {len(actions)} actions for 1 request"
                    )
                if on_turn is not None:
                    on_turn(active, actions[0].n_tokens)
                next_final = self._advance(r, actions[0], final=final)
                if next_final is None:
                    break
                final = next_final
            finish(r)

        async def drive_all() -> None:
            await asyncio.gather(*(drive(r) for r in rollouts))

        if rollouts:
            asyncio.run(drive_all())
        return list(rollouts)

    def _act(self, requests: list[TurnRequest]) -> list[Action]:
        """One policy call per distinct tool list (one call when every rollout has the same)."""
        if not requests:
            return []
        groups: dict[int, list[int]] = {}
        offers: dict[int, _Offer] = {}
        for i, request in enumerate(requests):
            offer = self._offer(request.rollout)
            groups.setdefault(id(offer), []).append(i)
            offers[id(offer)] = offer
        if len(groups) == 1:
            return self.policy.act(requests, tools=next(iter(offers.values())).specs)
        out: list[Action | None] = [None] * len(requests)
        for key, indexes in groups.items():
            actions = self.policy.act([requests[i] for i in indexes], tools=offers[key].specs)
            if len(actions) != len(indexes):
                return actions  # the caller names the mismatch
            for i, action in zip(indexes, actions, strict=True):
                out[i] = action
        return out  # type: ignore[return-value]

    def _context_tokens(self, r: Rollout) -> int:
        """Prompt tokens of the rollout's next turn; exact only when the budget is tight.

        After a turn the prompt is the last turn's prompt + its output + the messages added
        since; byte-level tokens never outnumber bytes, so bytes (+ template overhead) bound the
        new part from above and the tokenizer runs only when that bound is near the budget.
        """
        cfg = self.config
        added = sum(
            len((m.get("content") or "").encode()) + 32 for m in r.messages[r.context_messages :]
        )
        offer = self._offer(r)
        bound = r.n_context + added if r.n_context > 0 else offer.specs_bytes + added
        if bound + cfg.budget_for(r.task).max_new_tokens <= cfg.max_context_tokens:
            return bound
        return self.policy.count_tokens(r, tools=offer.specs)

    # ------------------------------------------------------------------ one turn

    def apply(self, r: Rollout, action: Action, *, final: bool = False) -> bool:
        """Apply one policy action to a rollout (its message, tool calls, answer); True when the
        rollout has ended. `run` calls it every turn; a caller that samples actions itself can too.

        >>> solver.apply(rollout, Action(text="<answer>Paris</answer>"))  # doctest: +SKIP
        True
        """
        cfg = self.config
        r.n_turns += 1
        r.n_generated += action.n_tokens
        r.n_context = action.prompt_tokens + action.n_tokens
        r.finish_reasons.append(action.finish_reason or "")
        from selfplay.engines.base import CONTEXT_LENGTH

        if action.finish_reason == CONTEXT_LENGTH:
            _end(r, "aborted", "the engine's context is full")
            r.n_turns -= 1  # no message was generated
            return True
        turn = parse_assistant(action.text, call_id_prefix=f"call_{r.n_turns}_")
        calls = list(action.tool_calls or []) + turn.tool_calls
        reasoning = action.reasoning or turn.reasoning
        errors = [e for e in turn.errors if e.startswith(_CALL_ERROR_PREFIXES)]
        message = chat_message("assistant", turn.content, reasoning=reasoning, tool_calls=calls)
        index = r.add(message, tokens=action.n_tokens)
        if action.token_ids is not None:
            r.sampled_token_ids[index] = list(action.token_ids)
            if action.logprobs is not None:
                r.sampled_logprobs[index] = list(action.logprobs)
        r.context_messages = len(r.messages)
        answer = extract_answer(action.text)
        if final:
            r.answer = answer
            _end(r, "truncated", f"turn limit ({cfg.budget_for(r.task).max_turns} turns)")
            return True
        if calls or errors:
            self._run_calls(r, calls, errors)
            return False
        if answer is not None:
            r.answer = answer
            _end(r, "completed", None)
            return True
        if not cfg.remind:
            _end(r, "completed", "no tool call and no answer")
            return True
        r.add(chat_message("user", REMINDER))
        return False

    def _run_calls(self, r: Rollout, calls: list[dict[str, Any]], errors: list[str]) -> None:
        for k, call in enumerate(calls):
            fn = call.get("function") or {}
            name, arguments = fn.get("name"), fn.get("arguments")
            r.n_tool_calls += 1
            if k >= self.config.max_calls_per_turn:
                observation_text = json.dumps(
                    {"error": f"only {self.config.max_calls_per_turn} tool calls run per turn"}
                )
                result = ToolResult(
                    call_name=name, arguments=arguments, tool_id=None, ok=False, error="skipped"
                )
                r.n_tool_errors += 1
            else:
                tools = self._offer(r).tools
                obs = tools.call(name, arguments)
                tool_id = tools.get(name).id if name in tools else None
                observation_text = obs.content
                result = ToolResult(
                    call_name=name,
                    arguments=arguments,
                    tool_id=tool_id,
                    ok=obs.ok,
                    error=obs.error,
                    touched_entity_ids=tuple(obs.touched_entity_ids),
                )
                r.n_tool_errors += not obs.ok
            idx = r.add(
                chat_message("tool", observation_text, tool_call_id=call.get("id"), name=name)
            )
            r.tool_results[idx] = result
        for k, error in enumerate(errors):
            r.n_malformed += 1
            idx = r.add(
                chat_message(
                    "tool",
                    json.dumps({"error": f"malformed tool call: {error}"}),
                    tool_call_id=f"malformed_{r.n_turns}_{k}",
                )
            )
            r.tool_results[idx] = ToolResult(
                call_name=None, arguments=None, tool_id=None, ok=False, error=error, malformed=True
            )


def _end(r: Rollout, status: str, reason: str | None) -> None:
    r.status = status
    r.stop_reason = reason
