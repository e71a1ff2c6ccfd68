"""Verifiable output constraints (IFEval-style): one checker per kind, and a reply that meets them.

| kind                 | params   | the reply must                                                  |
|----------------------|----------|-----------------------------------------------------------------|
| `json_list`          |          | be a JSON list of strings and nothing else (a ```json fence ok) |
| `bullet_list`        | `n`      | hold exactly `n` bullet lines (`- ` or `* `)                    |
| `min_words`          | `n`      | hold at least `n` words (runs of letters, digits or `_`)        |
| `max_words`          | `n`      | hold at most `n` words                                          |
| `min_sentences`      | `n`      | hold at least `n` sentences (ended by `.`, `!` or `?` + space)  |
| `max_sentences`      | `n`      | hold at most `n` sentences                                      |
| `required_keywords`  | `words`  | name every keyword as a whole word, in any case                 |
| `forbidden_keywords` | `words`  | name none of them as a whole word, in any case                  |
| `lowercase`          |          | have no capital letter (and some lowercase one)                 |
| `uppercase`          |          | have no lowercase letter (and some capital one)                 |
| `starts_with`        | `phrase` | start with the phrase, in any case                              |
| `ends_with`          | `phrase` | end with the phrase, in any case, nothing after it              |
| `no_commas`          |          | hold no comma (`,` or the full-width `，`)                       |
| `quotation`          |          | be wrapped in double quotation marks                            |
| `postscript`         | `marker` | hold a line that starts with the marker (default `P.S.`)        |

What is checked is the **reply** (`reply_text`): the content of the final assistant message with
reasoning (`<think>...</think>`) left out and the `<answer>` / `</answer>` tags dropped as markup,
their content kept. So format constraints shape the answer block (the whole reply of a
`json_list` task is `<answer>["A", "B"]</answer>`), prose constraints (start and end phrases,
keywords, word minimums, a postscript) are met by text around it, and the answer block keeps
what `answer_match` reads: `selfplay.answers.answer_items` reads JSON and bullet lists, and
answers compare case-insensitively, so `uppercase` and `lowercase` never hide an answer. As in
IFEval, words are `\\w+` runs ("Jean-Paul" is two) and keyword and phrase checks ignore case;
sentences are split without NLTK (after `.`, `!`, `?` followed by white space), so an
abbreviation such as "Dr. No" counts as two.

A constraint serialises as `{"kind": ..., **params}`; a task stores its list in
`props["constraints"]["instructions"]` (an object, as task import allows, so it can sit beside
other constraints such as `max_turns`); `parse_constraints` also takes a bare list.
`render_reply` writes a reply that meets a set of constraints for given answers: the oracle's
final message, and the witness `satisfiable` checks a set against, with `answer_match`, before
a task carries it.

>>> cs = parse_constraints([{"kind": "uppercase"}, {"kind": "max_words", "n": 12}])
>>> [c.instruction() for c in cs]
['Write your whole reply in capital letters.', 'Answer in at most 12 words.']
>>> reply = render_reply(["Paris", "Lyon"], cs); reply
'<answer>PARIS; LYON</answer>'
>>> [c.check(reply_text(reply)) for c in cs]
[(True, 'no lowercase letter'), (True, '2 words (at most 12)')]
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from selfplay.answers import score_answer
from selfplay.parsing import extract_answer

__all__ = [
    "CONSTRAINT_KINDS",
    "Constraint",
    "JsonList",
    "BulletList",
    "MinWords",
    "MaxWords",
    "MinSentences",
    "MaxSentences",
    "RequiredKeywords",
    "ForbiddenKeywords",
    "Lowercase",
    "Uppercase",
    "StartsWith",
    "EndsWith",
    "NoCommas",
    "Quotation",
    "Postscript",
    "ConstraintCheck",
    "check_reply",
    "constraint_from_spec",
    "constraint_specs",
    "count_sentences",
    "count_words",
    "parse_constraints",
    "render_reply",
    "reply_text",
    "satisfiable",
    "task_constraints",
]

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_TAG = re.compile(r"</?answer>")
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BULLET_LINE = re.compile(r"^\s*[-*]\s+\S", re.MULTILINE)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)
_COMMAS = (",", "\uff0c")
#: the key of `props["constraints"]` that holds the output constraints
INSTRUCTIONS_KEY = "instructions"


def reply_text(content: str) -> str:
    """The text constraints check: reasoning left out, answer tags dropped, ends stripped.

    >>> reply_text("<think>hm</think>My answer: <answer>Paris</answer>")
    'My answer: Paris'
    """
    return _ANSWER_TAG.sub("", _THINK.sub("", content or "")).strip()


def count_words(text: str) -> int:
    """Words as IFEval counts them: runs of `\\w` (letters, digits, `_`, any script).

    >>> count_words("Jean-Paul's café, 3.5 km")  # Jean, Paul, s, café, 3, 5, km
    7
    """
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    """Sentences: pieces split after `.`, `!` or `?` followed by white space that hold a word.

    >>> count_sentences("It is 3.5 km. Really? Yes"), count_sentences("Paris; Lyon"), count_sentences("")
    (3, 1, 0)
    """
    return sum(bool(_WORD.search(p)) for p in _SENTENCE_END.split(text.strip()))


def _has_word(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` as a whole word, ignoring case (full Unicode case folding)."""
    pattern = rf"(?<!\w){re.escape(word.casefold())}(?!\w)"
    return re.search(pattern, text.casefold()) is not None


def _json_body(text: str) -> str:
    fenced = _FENCE.match(text.strip())
    return fenced.group(1) if fenced else text.strip()


def _quote_list(words: Sequence[str]) -> str:
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else " and ".join([" ".join(quoted[:-1]), quoted[-1]])


# --------------------------------------------------------------------------- the checkers


class Constraint:
    """Base of constraint kinds: `kind`, `instruction()`, `check(text)`; fields are the params.

    `excludes` names the kinds a constraint is never composed with (it cannot hold with them,
    or only trivially); `prose` kinds need text outside the answer block.
    """

    __slots__ = ()
    kind: ClassVar[str] = ""
    excludes: ClassVar[frozenset[str]] = frozenset()
    prose: ClassVar[bool] = False

    def instruction(self) -> str:
        """The sentence added to the question."""
        raise NotImplementedError

    def check(self, text: str) -> tuple[bool, str]:
        """`(passed, why)` for a reply's text (`reply_text`)."""
        raise NotImplementedError

    def to_spec(self) -> dict[str, Any]:
        """`{"kind": ..., **params}`, the JSON form `constraint_from_spec` reads back."""
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {
            "kind": self.kind,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        }


def _positive(kind: str, n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"constraint {kind!r}: n must be a positive integer, got {n!r}")


def _words(kind: str, words: Any) -> tuple[str, ...]:
    if isinstance(words, str) or not isinstance(words, Sequence) or not words:
        raise ValueError(f"constraint {kind!r}: words must be a non-empty list of strings")
    out = tuple(words)
    for w in out:
        if not isinstance(w, str) or not _WORD.fullmatch(w):
            raise ValueError(
                f"constraint {kind!r}: each keyword must be one word (letters, digits), got {w!r}"
            )
    if len({w.casefold() for w in out}) != len(out):
        raise ValueError(f"constraint {kind!r}: a keyword appears twice in {list(out)}")
    return out


def _phrase(kind: str, phrase: Any) -> None:
    if not isinstance(phrase, str) or not phrase.strip() or _ANSWER_TAG.search(phrase):
        raise ValueError(f"constraint {kind!r}: phrase must be non-empty text, got {phrase!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class JsonList(Constraint):
    """The reply is a JSON list of strings, nothing before or after it (a ```json fence is ok)."""

    kind: ClassVar[str] = "json_list"
    excludes: ClassVar[frozenset[str]] = frozenset(
        {
            "bullet_list",
            "min_words",
            "min_sentences",
            "required_keywords",
            "starts_with",
            "ends_with",
            "quotation",
            "postscript",
        }
    )

    def instruction(self) -> str:
        return (
            'Write your whole reply as a JSON list of strings, one per answer (["A", "B"]), '
            "inside the answer tags, with nothing else."
        )

    def check(self, text: str) -> tuple[bool, str]:
        try:
            value = json.loads(_json_body(text))
        except ValueError as err:
            return False, f"not valid JSON: {str(err)[:80]}"
        if not isinstance(value, list):
            return False, f"JSON {type(value).__name__}, not a list"
        if not all(isinstance(v, str) for v in value):
            return False, "a JSON list, but not of strings"
        return True, f"a JSON list of {len(value)} strings"


@dataclass(frozen=True, kw_only=True, slots=True)
class BulletList(Constraint):
    """Exactly `n` bullet lines (a line that starts with `- ` or `* `), as IFEval counts them."""

    kind: ClassVar[str] = "bullet_list"
    excludes: ClassVar[frozenset[str]] = frozenset({"json_list"})
    n: int

    def __post_init__(self) -> None:
        _positive(self.kind, self.n)

    def instruction(self) -> str:
        item = "item" if self.n == 1 else "items"
        return (
            f"Write the answer as a bulleted list of exactly {self.n} {item}, one per line, "
            'each line starting with "- ".'
        )

    def check(self, text: str) -> tuple[bool, str]:
        found = len(_BULLET_LINE.findall(text))
        return found == self.n, f"{found} bullet lines ({self.n} asked for)"


@dataclass(frozen=True, kw_only=True, slots=True)
class MinWords(Constraint):
    """At least `n` words (`count_words`)."""

    kind: ClassVar[str] = "min_words"
    excludes: ClassVar[frozenset[str]] = frozenset({"json_list"})
    prose: ClassVar[bool] = True
    n: int

    def __post_init__(self) -> None:
        _positive(self.kind, self.n)

    def instruction(self) -> str:
        return f"Write at least {self.n} words."

    def check(self, text: str) -> tuple[bool, str]:
        found = count_words(text)
        return found >= self.n, f"{found} words (at least {self.n})"


@dataclass(frozen=True, kw_only=True, slots=True)
class MaxWords(Constraint):
    """At most `n` words (`count_words`)."""

    kind: ClassVar[str] = "max_words"
    n: int

    def __post_init__(self) -> None:
        _positive(self.kind, self.n)

    def instruction(self) -> str:
        return f"Answer in at most {self.n} words."

    def check(self, text: str) -> tuple[bool, str]:
        found = count_words(text)
        return found <= self.n, f"{found} words (at most {self.n})"


@dataclass(frozen=True, kw_only=True, slots=True)
class MinSentences(Constraint):
    """At least `n` sentences (`count_sentences`)."""

    kind: ClassVar[str] = "min_sentences"
    excludes: ClassVar[frozenset[str]] = frozenset({"json_list"})
    prose: ClassVar[bool] = True
    n: int

    def __post_init__(self) -> None:
        _positive(self.kind, self.n)

    def instruction(self) -> str:
        return f"Write at least {self.n} sentences."

    def check(self, text: str) -> tuple[bool, str]:
        found = count_sentences(text)
        return found >= self.n, f"{found} sentences (at least {self.n})"


@dataclass(frozen=True, kw_only=True, slots=True)
class MaxSentences(Constraint):
    """At most `n` sentences (`count_sentences`)."""

    kind: ClassVar[str] = "max_sentences"
    n: int

    def __post_init__(self) -> None:
        _positive(self.kind, self.n)

    def instruction(self) -> str:
        return f"Write at most {self.n} sentence{'' if self.n == 1 else 's'}."

    def check(self, text: str) -> tuple[bool, str]:
        found = count_sentences(text)
        return found <= self.n, f"{found} sentences (at most {self.n})"


@dataclass(frozen=True, kw_only=True, slots=True)
class RequiredKeywords(Constraint):
    """Every keyword appears as a whole word ("path" is not in "pathway"), in any case."""

    kind: ClassVar[str] = "required_keywords"
    excludes: ClassVar[frozenset[str]] = frozenset({"json_list"})
    prose: ClassVar[bool] = True
    words: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", _words(self.kind, self.words))

    def instruction(self) -> str:
        return (
            f"Include the keyword{'' if len(self.words) == 1 else 's'} {_quote_list(self.words)}."
        )

    def check(self, text: str) -> tuple[bool, str]:
        missing = [w for w in self.words if not _has_word(text, w)]
        if missing:
            return False, f"missing keyword {_quote_list(missing)}"
        return True, f"names {_quote_list(self.words)}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ForbiddenKeywords(Constraint):
    """No keyword appears as a whole word, in any case."""

    kind: ClassVar[str] = "forbidden_keywords"
    words: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", _words(self.kind, self.words))

    def instruction(self) -> str:
        return (
            f"Do not use the word{'' if len(self.words) == 1 else 's'} {_quote_list(self.words)}."
        )

    def check(self, text: str) -> tuple[bool, str]:
        found = [w for w in self.words if _has_word(text, w)]
        if found:
            return False, f"uses forbidden {_quote_list(found)}"
        return True, f"uses none of {_quote_list(self.words)}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Lowercase(Constraint):
    """No capital letter, and at least one lowercase one (`str.islower`, any script)."""

    kind: ClassVar[str] = "lowercase"
    excludes: ClassVar[frozenset[str]] = frozenset({"uppercase"})

    def instruction(self) -> str:
        return "Write your whole reply in lowercase letters, with no capital letters."

    def check(self, text: str) -> tuple[bool, str]:
        if text.islower():
            return True, "no capital letter"
        caps = [c for c in text if c.isupper() or c.istitle()]
        return False, f"capital letters {''.join(caps[:8])!r}" if caps else "no letters"


@dataclass(frozen=True, kw_only=True, slots=True)
class Uppercase(Constraint):
    """No lowercase letter, and at least one capital one (`str.isupper`, any script)."""

    kind: ClassVar[str] = "uppercase"
    excludes: ClassVar[frozenset[str]] = frozenset({"lowercase"})

    def instruction(self) -> str:
        return "Write your whole reply in capital letters."

    def check(self, text: str) -> tuple[bool, str]:
        if text.isupper():
            return True, "no lowercase letter"
        small = [c for c in text if c.islower() or c.istitle()]
        return False, f"lowercase letters {''.join(small[:8])!r}" if small else "no letters"


@dataclass(frozen=True, kw_only=True, slots=True)
class StartsWith(Constraint):
    """The reply starts with `phrase` (case ignored)."""

    kind: ClassVar[str] = "starts_with"
    excludes: ClassVar[frozenset[str]] = frozenset({"json_list", "quotation"})
    prose: ClassVar[bool] = True
    phrase: str

    def __post_init__(self) -> None:
        _phrase(self.kind, self.phrase)

    def instruction(self) -> str:
        return f'Start your reply with "{self.phrase}".'

    def check(self, text: str) -> tuple[bool, str]:
        ok = text.strip().casefold().startswith(self.phrase.strip().casefold())
        return ok, f"starts with {text.strip()[: len(self.phrase) + 10]!r}"


@dataclass(frozen=True, kw_only=True, slots=True)
class EndsWith(Constraint):
    """The reply ends with `phrase` (case ignored), nothing after it."""

    kind: ClassVar[str] = "ends_with"
    excludes: ClassVar[frozenset[str]] = frozenset({"json_list", "quotation"})
    prose: ClassVar[bool] = True
    phrase: str

    def __post_init__(self) -> None:
        _phrase(self.kind, self.phrase)

    def instruction(self) -> str:
        return f'End your reply with the exact phrase "{self.phrase}", with nothing after it.'

    def check(self, text: str) -> tuple[bool, str]:
        ok = text.strip().casefold().endswith(self.phrase.strip().casefold())
        return ok, f"ends with {text.strip()[-(len(self.phrase) + 10) :]!r}"


@dataclass(frozen=True, kw_only=True, slots=True)
class NoCommas(Constraint):
    """No comma anywhere (`,` or the full-width `，`)."""

    kind: ClassVar[str] = "no_commas"

    def instruction(self) -> str:
        return "Do not use any commas in your reply."

    def check(self, text: str) -> tuple[bool, str]:
        n = sum(text.count(c) for c in _COMMAS)
        return n == 0, f"{n} comma{'' if n == 1 else 's'}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Quotation(Constraint):
    """The whole reply is wrapped in double quotation marks."""

    kind: ClassVar[str] = "quotation"
    excludes: ClassVar[frozenset[str]] = frozenset({"json_list", "starts_with", "ends_with"})

    def instruction(self) -> str:
        return "Wrap your whole reply in double quotation marks."

    def check(self, text: str) -> tuple[bool, str]:
        t = text.strip()
        ok = len(t) > 1 and t.startswith('"') and t.endswith('"')
        return ok, "wrapped in double quotes" if ok else f"not wrapped in double quotes: {t[:20]!r}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Postscript(Constraint):
    """A line starts with `marker` (case ignored), as a postscript."""

    kind: ClassVar[str] = "postscript"
    excludes: ClassVar[frozenset[str]] = frozenset({"json_list"})
    prose: ClassVar[bool] = True
    marker: str = "P.S."

    def __post_init__(self) -> None:
        _phrase(self.kind, self.marker)

    def instruction(self) -> str:
        return f'At the end of your reply add a postscript starting with "{self.marker}".'

    def check(self, text: str) -> tuple[bool, str]:
        key = self.marker.strip().casefold()
        ok = any(line.strip().casefold().startswith(key) for line in text.splitlines())
        return (
            ok,
            f"a line starts with {self.marker!r}" if ok else f"no line starts with {self.marker!r}",
        )


#: kind -> class, to read constraints back from their JSON specs
CONSTRAINT_KINDS: dict[str, type[Constraint]] = {
    cls.kind: cls
    for cls in (
        JsonList,
        BulletList,
        MinWords,
        MaxWords,
        MinSentences,
        MaxSentences,
        RequiredKeywords,
        ForbiddenKeywords,
        Lowercase,
        Uppercase,
        StartsWith,
        EndsWith,
        NoCommas,
        Quotation,
        Postscript,
    )
}


# --------------------------------------------------------------------------- specs


def constraint_from_spec(spec: Mapping[str, Any]) -> Constraint:
    """A constraint from its JSON form `{"kind": ..., **params}`.

    >>> constraint_from_spec({"kind": "max_words", "n": 12})
    MaxWords(n=12)
    >>> constraint_from_spec({"kind": "shout"})
    Traceback (most recent call last):
    ...
    ValueError: unknown constraint kind 'shout'; known: json_list, bullet_list, min_words, max_words, min_sentences, max_sentences, required_keywords, forbidden_keywords, lowercase, uppercase, starts_with, ends_with, no_commas, quotation, postscript
    """
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ValueError(f'a constraint is an object with a "kind", got {spec!r:.80}')
    kind = spec["kind"]
    cls = CONSTRAINT_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown constraint kind {kind!r}; known: {', '.join(CONSTRAINT_KINDS)}")
    params = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return cls(**params)
    except TypeError:
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        raise ValueError(
            f"constraint {kind!r} takes {names or 'no params'}, got {sorted(params)}"
        ) from None


def parse_constraints(value: Any) -> list[Constraint]:
    """The output constraints of a `props["constraints"]` value: an object whose `instructions`
    is a list of specs (other keys are other kinds of constraint and left alone), or the list.

    >>> parse_constraints({"max_turns": 4, "instructions": [{"kind": "no_commas"}]})
    [NoCommas()]
    >>> parse_constraints({"max_turns": 4})
    []
    """
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = value.get(INSTRUCTIONS_KEY, [])
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(
            f"constraints.{INSTRUCTIONS_KEY} must be a list of constraints, got {value!r:.80}"
        )
    out = []
    for i, spec in enumerate(value):
        try:
            out.append(constraint_from_spec(spec))
        except ValueError as err:
            raise ValueError(f"constraints.{INSTRUCTIONS_KEY}[{i}]: {err}") from None
    return out


def constraint_specs(constraints: Sequence[Constraint]) -> list[dict[str, Any]]:
    """The JSON specs of constraints, in order.

    >>> constraint_specs([MaxWords(n=5), RequiredKeywords(words=("graph",))])
    [{'kind': 'max_words', 'n': 5}, {'kind': 'required_keywords', 'words': ['graph']}]
    """
    return [c.to_spec() for c in constraints]


def task_constraints(task: Any) -> list[Constraint]:
    """The output constraints a task carries (`props["constraints"]`); [] when none.

    Raises ValueError naming the task when they do not read.
    """
    try:
        return parse_constraints((task.props or {}).get("constraints"))
    except ValueError as err:
        raise ValueError(f"task {task.id!r}: {err}") from None


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True, kw_only=True, slots=True)
class ConstraintCheck:
    """One constraint's verdict on a reply."""

    constraint: Constraint
    passed: bool
    detail: str


def check_reply(constraints: Sequence[Constraint], content: str) -> list[ConstraintCheck]:
    """Each constraint's verdict on a final message's content (checked on `reply_text`).

    >>> [c.passed for c in check_reply([Lowercase(), NoCommas()], "<answer>Paris, Lyon</answer>")]
    [False, False]
    """
    text = reply_text(content)
    out = []
    for c in constraints:
        passed, detail = c.check(text)
        out.append(ConstraintCheck(constraint=c, passed=passed, detail=detail))
    return out


# --------------------------------------------------------------------------- a reply that meets them

#: neutral sentences added where a reply needs more words or sentences: no comma and no word of
#: `selfplay.instruction.FORBIDDEN_WORDS` (a test holds them to it)
FILLER = (
    "Each hop was followed with a tool call.",
    "The relations came from the knowledge graph.",
    "Every listed name was reached along the chain.",
    "No other entity fits the question.",
    "The start entity was found by its quoted name.",
)
POSTSCRIPT_TEXT = "Every hop was checked with a tool call."
#: separators of a plain list, in order of preference (answer_match reads each)
_SEPARATORS = ("; ", " | ", "\n", ", ")
_MAX_FILLER = 400


def render_reply(answers: Sequence[str], constraints: Sequence[Constraint] = ()) -> str:
    """A final message that lists `answers` in an `<answer>` block and meets `constraints`.

    Layout: start phrase, keyword sentence, the answer block (a JSON list, a bullet list, or the
    names joined by a separator no name holds), filler sentences up to the word and sentence
    minimums, postscript, end phrase; case applied to everything but the tags; quotes around it
    all. It is a witness, not a proof: `satisfiable` checks what it wrote.

    >>> print(render_reply(["Paris", "Lyon"], [BulletList(n=2), StartsWith(phrase="Here you go")]))
    Here you go.
    <answer>
    - Paris
    - Lyon
    </answer>
    """
    by = {c.kind: c for c in constraints}
    case: Callable[[str], str] = (
        str.upper if "uppercase" in by else str.lower if "lowercase" in by else str
    )
    items = [case(a) for a in dict.fromkeys(answers)]
    if "json_list" in by:
        return f"<answer>{json.dumps(items, ensure_ascii=False)}</answer>"
    if "bullet_list" in by:
        block = "\n" + "\n".join(f"- {i}" for i in items) + "\n"
    else:
        commas = "no_commas" in by
        seps = [s for s in _SEPARATORS if not (commas and "," in s)]
        sep = next((s for s in seps if not any((s.strip() or s) in i for i in items)), seps[0])
        block = sep.join(items)
    head: list[str] = []
    if isinstance(start := by.get("starts_with"), StartsWith):
        head.append(start.phrase.strip() + ("" if start.phrase.strip()[-1] in ".!?:" else "."))
    if isinstance(keywords := by.get("required_keywords"), RequiredKeywords):
        head.append(f"I checked the {' and the '.join(keywords.words)}.")
    tail: list[str] = []
    if isinstance(ps := by.get("postscript"), Postscript):
        tail.append(f"{ps.marker.strip()} {POSTSCRIPT_TEXT}")
    if isinstance(end := by.get("ends_with"), EndsWith):
        tail.append(end.phrase.strip())

    def assemble(filler: list[str]) -> str:
        lines = [case(" ".join(head))] if head else []
        lines.append(f"<answer>{block}</answer>")
        if filler:
            lines.append(case(" ".join(filler)))
        lines.extend(case(t) for t in tail)
        text = "\n".join(lines)
        return f'"{text}"' if "quotation" in by else text

    min_words = max((c.n for c in constraints if isinstance(c, MinWords)), default=0)
    min_sentences = max((c.n for c in constraints if isinstance(c, MinSentences)), default=0)
    filler: list[str] = []
    reply = assemble(filler)
    while len(filler) < _MAX_FILLER:
        text = reply_text(reply)
        if count_words(text) >= min_words and count_sentences(text) >= min_sentences:
            break
        filler.append(FILLER[len(filler) % len(FILLER)])
        reply = assemble(filler)
    return reply


def satisfiable(answers: Sequence[str], constraints: Sequence[Constraint]) -> list[str]:
    """Why `constraints` cannot be met together with naming `answers` ([] when they can).

    The witness is `render_reply`: every constraint must pass on it and `answer_match` must read
    exactly the answers from its `<answer>` block; kinds that exclude each other and repeated
    kinds are refused outright.

    >>> satisfiable(["Paris"], [Uppercase(), Lowercase()])
    ['uppercase and lowercase are never composed']
    >>> satisfiable(["Paris", "Lyon"], [MaxWords(n=1)])
    ['max_words: 2 words (at most 1)']
    """
    problems: list[str] = []
    kinds = [c.kind for c in constraints]
    for i, c in enumerate(constraints):
        if c.kind in kinds[:i]:
            problems.append(f"{c.kind} appears twice")
        for other in kinds[:i]:
            if other in c.excludes or c.kind in CONSTRAINT_KINDS[other].excludes:
                problems.append(f"{other} and {c.kind} are never composed")
    if problems:
        return problems
    reply = render_reply(answers, constraints)
    problems = [
        f"{r.constraint.kind}: {r.detail}" for r in check_reply(constraints, reply) if not r.passed
    ]
    answer = extract_answer(reply)
    golds = list(dict.fromkeys(answers))
    score = score_answer(answer or "", golds)
    if answer is None or score.precision < 1.0 or score.recall < 1.0:
        problems.append(f"answer_match does not read the answers from {answer!r:.120}")
    return problems
