"""Whether the data a python call computes with came from what the trajectory saw.

A compute task is solved by reading values from tool observations and writing them into code
(`print(sum([161, 75]))`). A small model copies an id or a name right and then a value wrong
(`24430085` for `24430058`): the call runs, the answer is wrong, and nothing said which step
went wrong. `ungrounded_literals` names the data literals of the code that no earlier message
shows, so the `tool_step` check can fail that step (`check` "grounded").

Data literals are the constants the code computes on, not its own parameters:

| literal                                                    | checked | e.g.                      |
|------------------------------------------------------------|---------|---------------------------|
| a number or string inside a list, tuple, set or dict       | yes     | `[161, 75]`, `[("Ada", 3)]` |
| a number operand of arithmetic on constants only           | yes     | `1999 - 1987`             |
| a single-digit number, a bool, None                         | no      | `round(x, 2)`, `[0, 1]`   |
| any other constant (a call argument, a format string, ...) | no      | `x * 100`, `"%.2f"`       |

A number is grounded when an earlier message holds the same number (as a float, sign ignored:
`3.50` and `3.5` agree); a string when an earlier message holds it verbatim.

>>> ungrounded_literals("print(sum([161, 75]))", '{"props": {"population": 161}} 75')
[]
>>> ungrounded_literals("print(sum([161, 57]))", '{"props": {"population": 161}} 75')
[57]
>>> ungrounded_literals("print('hi')", "") is None  # no data literal: undecided
True
"""

from __future__ import annotations

import ast
import re

__all__ = ["data_literals", "ungrounded_literals"]

_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _is_number(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    )


def _arithmetic_numbers(node: ast.AST) -> list[tuple[ast.AST, int | float]] | None:
    """The numbers of `node` when it is a number or arithmetic (and unary signs) over numbers
    only, each with the node it came from (a signed number taken whole); else None.

    Iterative, so a model's 2,000-term sum does not exhaust Python's recursion limit.
    """
    numbers: list[tuple[ast.AST, int | float]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if _is_number(n):
            numbers.append((n, n.value))  # type: ignore[attr-defined]
        elif isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
            if _is_number(n.operand):
                value = n.operand.value  # type: ignore[attr-defined]
                numbers.append((n, -value if isinstance(n.op, ast.USub) else value))
            else:
                stack.append(n.operand)
        elif isinstance(n, ast.BinOp):
            stack += (n.right, n.left)  # popped left first: source order
        else:
            return None
    return numbers


def data_literals(code: str) -> list[int | float | str] | None:
    """The data literals of `code` in source order (see the module's table); None when the code
    does not parse.

    >>> data_literals("values = [('Ada', 1815), ('Bo', 9)]\\nprint(max(values, key=len))")
    ['Ada', 1815, 'Bo']
    >>> data_literals("print(1999 - 1987)")
    [1999, 1987]
    >>> data_literals("print(round(sum([12.5, -3]) / 2, 2))")
    [12.5]
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):  # RecursionError: nesting too deep to parse
        return None
    found: list[tuple[int, int, int | float | str]] = []
    taken: set[int] = set()  # a constant inside a list and a sum is met twice by the walk

    def take(node: ast.AST, value: int | float | str) -> None:
        if id(node) in taken:
            return
        taken.add(id(node))
        if isinstance(value, str):
            keep = bool(value.strip())
        else:
            keep = abs(value) >= 10 or (isinstance(value, float) and not value.is_integer())
        if keep:
            found.append((node.lineno, node.col_offset, value))

    for node in ast.walk(tree):  # nested containers are visited by the walk itself
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            elements = list(node.elts)
        elif isinstance(node, ast.Dict):
            elements = [e for e in (*node.keys, *node.values) if e is not None]
        elif isinstance(node, ast.BinOp):
            elements = [node]
        else:
            continue
        for e in elements:
            if isinstance(e, ast.Constant) and isinstance(e.value, str):
                take(e, e.value)
            else:
                for number, value in _arithmetic_numbers(e) or ():
                    take(number, value)
    return [v for _, _, v in sorted(found, key=lambda t: (t[0], t[1]))]


def ungrounded_literals(code: str, seen: str) -> list[int | float | str] | None:
    """The data literals of `code` that the text `seen` does not hold: `[]` when
    every one is grounded, None when the code does not parse or has no data literal (nothing to
    decide)."""
    literals = data_literals(code)
    if not literals:
        return None
    numbers = {float(m.group()) for m in _NUMBER.finditer(seen)}  # signs ignored
    missing: list[int | float | str] = []
    for value in literals:
        if isinstance(value, str):
            if value not in seen:
                missing.append(value)
        elif abs(float(value)) not in numbers:
            missing.append(value)
    return missing
