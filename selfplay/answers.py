"""Answer text: one normalisation, one matcher and one shortcut check for proposer and verifiers.

| function             | what it gives                                                          |
|----------------------|------------------------------------------------------------------------|
| `normalize_answer`   | text for comparison (accents, case, punctuation, leading article gone) |
| `answers_match`      | whether two answers name the same thing after normalising              |
| `answer_items`       | the items a final answer lists: a JSON list, a bullet list, or text    |
|                      | split where the split matches best                                     |
| `score_answer`       | precision and recall of a final answer against every valid answer      |
| `leaked_answer`      | the first answer a question names (a shortcut), else None              |

The proposer drops a task when `leaked_answer` finds one and the `no_shortcut` verifier rejects
the same tasks, so no proposed task is unacceptable by construction.

Symbols that carry meaning stay ("C++" is not "C", "C#" is not "C") and dotted initials close up
("A.I." is "ai", not the article "a" and "i"):

>>> normalize_answer("C++"), normalize_answer("A.I."), normalize_answer("The Beatles!")
('c++', 'ai', 'beatles')
>>> score_answer("Paris; Lyon; Nice", ["Paris", "Lyon"])
AnswerScore(precision=0.6666666666666666, recall=1.0, items=3, matched=2)
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "AnswerScore",
    "answer_items",
    "answers_match",
    "leaked_answer",
    "normalize_answer",
    "score_answer",
]

# dotted initials such as "A.I." or "U.S.A": letters only, so "3.14" keeps its digits apart
_INITIALS = re.compile(r"(?<![^\W\d_])((?:[^\W\d_]\.){1,}[^\W\d_])\.?(?![^\W\d_])")
# every character that is not a word character, a space or a meaningful symbol (+, #, and the
# decimal point of a number: "3.14" is not "314")
_PUNCT = re.compile(r"[^\w\s+#.]|_|(?<!\d)\.|\.(?!\d)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LEADING_ARTICLE = re.compile(r"^(?:a|an|the)\s+(?=\S)")
_LIST_SEPARATORS = (";", "\n", "|", ",")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_JSON_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)


@functools.lru_cache(maxsize=1 << 16)  # the same answers are compared again and again
def normalize_answer(text: str) -> str:
    """Answer text for comparison.

    Accents and case are dropped, `&` reads as "and", dotted initials close up, thousands
    separators go, punctuation becomes space (`+`, `#` and a decimal point stay: they tell
    "C++" and "C#" from "C", and "3.14" from "314"), a leading article
    ("a", "an", "the") and the article after a subtitle colon are dropped, spaces are squeezed.

    >>> normalize_answer("  The Beatles! ")
    'beatles'
    >>> normalize_answer("Zoë_Saldaña")
    'zoe saldana'
    >>> normalize_answer("The Lord of the Rings: The Two Towers")
    'lord of the rings two towers'
    >>> normalize_answer("Vitamin A"), normalize_answer("A")
    ('vitamin a', 'a')
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = _THOUSANDS.sub("", text.replace("&", " and "))
    text = _INITIALS.sub(lambda m: m.group(1).replace(".", ""), text)
    parts = [_PUNCT.sub(" ", p) for p in text.split(":")]
    parts = [_LEADING_ARTICLE.sub("", " ".join(p.split())) for p in parts]
    return " ".join(" ".join(parts).split())


def answers_match(candidate: str, gold: str) -> bool:
    """Whether two answers are the same after `normalize_answer` (spaces ignored, so
    "Jean-Paul" and "JeanPaul" match).

    >>> answers_match("the united states", "United States"), answers_match("C", "C++")
    (True, False)
    """
    a, b = normalize_answer(candidate), normalize_answer(gold)
    return bool(a) and (a == b or a.replace(" ", "") == b.replace(" ", ""))


def answer_items(answer: str, golds: Sequence[str] = ()) -> list[str]:
    """The items a final answer lists.

    The whole answer is one item when it matches a valid answer (names may hold commas:
    "Salò, or the 120 Days of Sodom"). Else a JSON list of strings or numbers (in a ```json
    fence or not) gives its items, and so does a bullet list (every line starts with `- `,
    `* `, `• ` or a number), one item a line whatever the item holds; otherwise the answer is
    split at one kind of separator (`;`, new line, `|`, `,`), the one whose items match the
    most valid answers, list bullets and numbers dropped. Blank and repeated items are dropped.

    >>> answer_items("1. Paris\\n2. Lyon"), answer_items("Salò, or the 120 Days", ["Salò, or the 120 Days"])
    (['Paris', 'Lyon'], ['Salò, or the 120 Days'])
    >>> answer_items('["Paris", "Lyon; Rhône"]'), answer_items("- Lyon, Rhône\\n- Paris")
    (['Paris', 'Lyon; Rhône'], ['Lyon, Rhône', 'Paris'])
    """
    whole = answer.strip()
    if not whole:
        return []
    if any(answers_match(whole, g) for g in golds):
        return [whole]
    listed = _json_items(whole)
    if listed is None:
        lines = [line for line in whole.splitlines() if line.strip()]
        if all(_BULLET.match(line) for line in lines):
            listed = [_BULLET.sub("", line) for line in lines]
    if listed is not None:
        return _distinct(item.strip() for item in listed)
    best, best_hits = [whole], -1
    for sep in _LIST_SEPARATORS:
        parts = _distinct(_BULLET.sub("", p).strip() for p in whole.split(sep))
        if len(parts) < 2:
            continue
        hits = sum(any(answers_match(p, g) for g in golds) for p in parts)
        if hits > best_hits:
            best, best_hits = parts, hits
    return best


def _json_items(text: str) -> list[str] | None:
    """The items of a JSON list of strings or numbers, else None (an object, nested lists, prose)."""
    fenced = _JSON_FENCE.match(text)
    body = fenced.group(1) if fenced else text
    if not body.startswith("["):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
    ):
        return None
    return [v if isinstance(v, str) else json.dumps(v) for v in value]


def _distinct(items: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        key = normalize_answer(item)
        if key and key not in seen:
            seen[key] = item
    return list(seen.values())


@dataclass(frozen=True, slots=True)
class AnswerScore:
    """How a final answer compares with the valid answers of its task.

    `precision`: share of listed items that are valid answers; `recall`: share of valid answers
    listed; `f1` combines them.
    """

    precision: float
    recall: float
    items: int
    matched: int

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score_answer(answer: str, golds: Sequence[str], *, as_list: bool = True) -> AnswerScore:
    """Precision and recall of `answer` (a list, or one item when `as_list` is False) against
    `golds`.

    >>> s = score_answer("Paris", ["Paris", "Lyon"]); (s.precision, s.recall, round(s.f1, 3))
    (1.0, 0.5, 0.667)
    """
    items = answer_items(answer, golds) if as_list else _distinct([answer])
    gold_keys = _distinct(golds)
    matched_items = [i for i in items if any(answers_match(i, g) for g in gold_keys)]
    covered = [g for g in gold_keys if any(answers_match(i, g) for i in items)]
    return AnswerScore(
        precision=len(matched_items) / len(items) if items else 0.0,
        recall=len(covered) / len(gold_keys) if gold_keys else 0.0,
        items=len(items),
        matched=len(matched_items),
    )


def leaked_answer(question: str, answers: Iterable[str]) -> str | None:
    """The first answer the question names as whole words after `normalize_answer`, else None.

    >>> leaked_answer('Start from "Ethelbert_of_Wessex" and follow "realm".', ["Wessex"])
    'Wessex'
    >>> leaked_answer('Start from "Parisian".', ["Paris"]) is None
    True
    >>> leaked_answer('Who wrote "C++ Primer"?', ["C"]) is None
    True
    """
    text = f" {normalize_answer(question)} "
    for answer in answers:
        key = normalize_answer(answer)
        if key and f" {key} " in text:
            return answer
    return None
