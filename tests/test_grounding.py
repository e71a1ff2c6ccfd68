"""Which literals of a python call are data, and whether the trajectory had seen them."""

from __future__ import annotations

import pytest

from selfplay.grounding import data_literals, ungrounded_literals


@pytest.mark.parametrize(
    ("code", "literals"),
    [
        # the oracle's compute code, one per operation
        ("print(sum([161, 75]))", [161, 75]),
        ("print(1999 - 1987)", [1999, 1987]),
        ("values = [3.25, 12]\nprint(round(sum(values) / len(values), 2))", [3.25, 12]),
        (
            "values = [('Ada', 1815), ('Bo', 9)]\nprint(max(values, key=lambda i: i[1])[0])",
            ["Ada", 1815, "Bo"],
        ),
        ("items = ['Ada', 'Bo']\nprint(len(items))", ["Ada", "Bo"]),
        # signs and nested constant arithmetic
        ("print(-(12 - 40) + 2)", [12, 40]),
        ("x = [-20, +15]", [-20, 15]),
        ("d = {'pop': 4500}", ["pop", 4500]),
        # parameters of the code, not data: small numbers, call arguments, names, format strings
        ("print(round(x * 100, 2))", []),
        ("print('%.2f' % x)", []),
        ("print([0, 1, True, None])", []),
    ],
)
def test_data_literals_are_the_values_the_code_computes_on(code, literals):
    assert data_literals(code) == literals


def test_a_literal_is_grounded_by_the_same_number_or_the_exact_string():
    seen = '{"name": "Saliria", "props": {"population": 24430058, "area": 3.50}}'
    assert ungrounded_literals("print(sum([24430058, 3.5]))", seen) == []
    assert ungrounded_literals("print(sum([24430085, 3.5]))", seen) == [24430085]
    assert ungrounded_literals("v = [('Saliria', 24430058)]", seen) == []
    assert ungrounded_literals("v = [('Salria', 24430058)]", seen) == ["Salria"]
    # a number inside a longer one is not seen: 2443 is not 24430058
    assert ungrounded_literals("print(2443 + 10)", seen) == [2443, 10]


def test_code_with_nothing_to_decide_is_undecided():
    assert ungrounded_literals("print('hello')", "") is None
    assert ungrounded_literals("print(sum([1, 2", "1 2") is None


def test_a_sum_longer_than_the_recursion_limit_is_checked_not_raised():
    # model output: 1,100 terms nest deeper than Python's default recursion limit of 1,000
    code = "print(" + " + ".join(["12"] * 1_100) + ")"
    assert data_literals(code) == [12] * 1_100
    assert ungrounded_literals(code, "12") == []
    assert ungrounded_literals(code, "13") == [12] * 1_100
    # nesting too deep for the parser itself: undecided, not an exception
    assert ungrounded_literals("print(" + " + ".join(["12"] * 5_000) + ")", "12") is None
