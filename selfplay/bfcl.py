"""BFCL's AST rules for single-turn function calls: is a list of calls one the answer key allows?

The rules of the Berkeley Function-Calling Leaderboard's AST checker (`bfcl_eval`'s
`ast_checker`, Python categories), written anew here so the project needs none of its
dependencies; `tests/test_bfcl.py` shows the two agree on every row of the six sets.

| function             | what it gives                                                           |
|----------------------|-------------------------------------------------------------------------|
| `check_calls`        | a `BfclVerdict` (valid, error, error_type) of calls against an answer key |
| `checker_kind`       | which rule a category takes: `"parallel"`, `"multiple"` or `"simple"`    |
| `standardize_string` | `"April 1, 2024"` -> `"april12024"`: the form strings are compared in    |
| `gold_calls`         | one call per expected call, built from the first allowed values          |
| `call_text`          | `{"f": {"x": 1}}` -> `'f(x=1)'`, a readable call                         |

Calls and answer keys have BFCL's shapes: a call is `{name: {param: value}}` (one key), an answer
key is a list of `{name: {param: [allowed values]}}`, where an allowed `""` marks a parameter
that may be left out. The rules, for one call against one expected call:

- the name is the function's (`underscore_to_dot`: its dots written as `_`, as BFCL does for
  models whose APIs forbid dots in names);
- every `required` parameter of the function is given, and no parameter that the function or
  the answer key does not name;
- each value has the parameter's type (`integer`, `float` (an int is taken as a float),
  `string`, `boolean`, `array`/`tuple` (items of the item type), `dict`, `any` (a string)) or
  the type of the first allowed value (a "variable", then compared by `==` as it is), and is
  allowed: strings after `standardize_string`, lists item by item, dicts key by key (one level),
  other values by `==`;
- a parameter the call leaves out must allow `""`.

`simple` categories take exactly one call, checked against the first function; `multiple`
ones one call of the expected function among several offered; `parallel` ones (and
`parallel_multiple`) as many calls as expected, in any order: each expected call, in turn,
takes the first unmatched call that passes it (greedy, as BFCL matches: an expected call that
allows several values may take the call a later one needed).

>>> functions = [{"name": "area", "parameters": {"type": "dict", "required": ["base"],
...     "properties": {"base": {"type": "float"}, "unit": {"type": "string"}}}}]
>>> key = [{"area": {"base": [10.0], "unit": ["cm", ""]}}]
>>> check_calls(functions, [{"area": {"base": 10, "unit": "CM"}}], key, category="simple").valid
True
>>> check_calls(functions, [{"area": {"unit": "cm"}}], key, category="simple").error_type
'simple_function_checker:missing_required'
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "wrong_calls",
    "BFCL_TYPES",
    "BfclVerdict",
    "call_text",
    "check_calls",
    "checker_kind",
    "gold_calls",
    "standardize_string",
]

#: BFCL's parameter type names (and the JSON Schema names `number`, `object`) -> the Python type
#: a value must have; `any` takes a string, as BFCL's checker does
BFCL_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
    "any": str,
}
_LIST_TYPES = ("array", "tuple")
# the characters BFCL drops before comparing strings: "April 1, 2024" == "april 1 2024"
_DROPPED = str.maketrans("", "", " ,./-_*^")
_OMIT = object()


@dataclass(frozen=True, kw_only=True, slots=True)
class BfclVerdict:
    """Whether calls pass an answer key; `error_type` names the rule that failed (BFCL's labels,
    e.g. `simple_function_checker:missing_required`), `error` says how."""

    valid: bool
    error: str = ""
    error_type: str = ""


_VALID = BfclVerdict(valid=True)


def _fail(error_type: str, error: str) -> BfclVerdict:
    return BfclVerdict(valid=False, error=error, error_type=error_type)


def standardize_string(text: str) -> str:
    """The form BFCL compares strings in: spaces and `,./-_*^` dropped, lower case, `'` as `"`.

    >>> standardize_string("New York, NY"), standardize_string("it's")
    ('newyorkny', 'it"s')
    """
    return text.translate(_DROPPED).lower().replace("'", '"')


def checker_kind(category: str) -> str:
    """The rule a BFCL category is checked by, as BFCL picks it from the category's name.

    >>> checker_kind("parallel_multiple"), checker_kind("live_multiple"), checker_kind("simple_python")
    ('parallel', 'multiple', 'simple')
    """
    if "parallel" in category:
        return "parallel"
    if "multiple" in category:
        return "multiple"
    return "simple"


def _std(value: Any) -> Any:
    return standardize_string(value) if type(value) is str else value


def _first_type(allowed: Sequence[Any]) -> type | None:
    """The type of the first allowed value that is not the "may be left out" marker."""
    return next((type(a) for a in allowed if a != ""), None)


def _python_type(schema: Mapping[str, Any], where: str) -> type:
    name = schema.get("type", "any")
    if not isinstance(name, str) or name not in BFCL_TYPES:
        raise ValueError(f"{where}: BFCL checks no parameter type {name!r}")
    return BFCL_TYPES[name]


# --------------------------------------------------------------------------- one value


def _type_ok(value: Any, allowed: Sequence[Any], expected: type, item: type | None) -> bool | None:
    """None when the value's type is wrong; else whether it is a "variable" (typed as the first
    allowed value rather than as the parameter)."""
    first = _first_type(allowed)
    variable = first is not None and first is not expected
    if type(value) is expected:
        if item is None:
            return variable
        for candidate in allowed:
            # a candidate that is no list (the "" marker) puts no constraint on the items
            if type(candidate) is not list or all(
                _type_ok(v, candidate, item, None) is not None for v in value
            ):
                return variable
        return None
    if first is not None and type(value) is first:
        return True
    return None


def _dict_ok(value: Mapping[str, Any], allowed: Sequence[Any]) -> tuple[bool, str]:
    why = "no allowed dict"
    for candidate in allowed:
        if candidate == "":
            continue
        if not isinstance(candidate, Mapping):
            why = f"allowed value {candidate!r} is not a dict"
            continue
        bad = next((k for k in value if k not in candidate), None)
        if bad is not None:
            why = f"unexpected dict key {bad!r}"
            continue
        bad = next(
            (
                k
                for k, v in value.items()
                if _std(v) not in [_std(a) for a in _listed(candidate[k])]
            ),
            None,
        )
        if bad is not None:
            why = f"dict value {value[bad]!r} of {bad!r} is not one of {candidate[bad]!r}"
            continue
        missing = next(
            (k for k, v in candidate.items() if k not in value and "" not in _listed(v)), None
        )
        if missing is not None:
            why = f"dict key {missing!r} is missing"
            continue
        return True, ""
    return False, why


def _listed(values: Any) -> list[Any]:
    return list(values) if isinstance(values, list | str) else [values]


def _list_of_dicts_ok(value: Sequence[Any], allowed: Sequence[Any]) -> tuple[bool, str]:
    why = "no allowed list of dicts"
    for candidate in allowed:
        if not isinstance(candidate, list | str) or len(candidate) != len(value):
            why = "wrong number of dicts in the list"
            continue
        for got, want in zip(value, candidate, strict=True):
            ok, why = _dict_ok(got, [want]) if isinstance(got, Mapping) else (False, "not a dict")
            if not ok:
                break
        else:
            return True, ""
    return False, why


def _value_verdict(
    param: str, value: Any, allowed: Sequence[Any], schema: Mapping[str, Any], where: str
) -> BfclVerdict:
    """Whether one parameter's value has its type and is allowed."""
    kind = schema.get("type", "any")
    expected = _python_type(schema, where)
    item: type | None = None
    if kind in _LIST_TYPES and isinstance(schema.get("items"), Mapping):
        item = _python_type(schema["items"], f"{where} items")
    if type(value) is tuple:
        value = list(value)
    if expected is float and type(value) is int:
        value = float(value)
    variable = _type_ok(value, allowed, expected, item)
    if variable is None:
        return _fail(
            "type_error:nested"
            if item is not None and type(value) is expected
            else "type_error:simple",
            f"parameter {param!r}: {value!r} is not of type {kind}"
            + (f" with {schema['items'].get('type')} items" if item is not None else ""),
        )
    if not variable:
        if expected is dict:
            ok, why = _dict_ok(value, allowed)
            return _VALID if ok else _fail("value_error:dict_value", f"parameter {param!r}: {why}")
        if expected is list and item is dict:
            ok, why = _list_of_dicts_ok(value, allowed)
            return _VALID if ok else _fail("value_error:list_dict", f"parameter {param!r}: {why}")
        if expected is str:
            if standardize_string(value) in [
                standardize_string(a) for a in allowed if type(a) is str
            ]:
                return _VALID
            return _fail(
                "value_error:string",
                f"parameter {param!r}: {value!r} is not one of {list(allowed)!r} (case and "
                "spacing aside)",
            )
        if expected is list:
            got = [_std(v) for v in value]
            if any(got == [_std(a) for a in c] for c in allowed if isinstance(c, list | str)):
                return _VALID
            return _fail(
                "value_error:list/tuple",
                f"parameter {param!r}: {value!r} is not one of {list(allowed)!r}",
            )
    if value not in allowed:
        return _fail(
            "value_error:others", f"parameter {param!r}: {value!r} is not one of {list(allowed)!r}"
        )
    return _VALID


# --------------------------------------------------------------------------- one call


def _call_verdict(
    function: Mapping[str, Any],
    call: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    underscore_to_dot: bool,
) -> BfclVerdict:
    """One call against one expected call (`{name: {param: [allowed]}}`) of `function`."""
    allowed_by_param = next(iter(expected.values()))
    name = str(function["name"])
    if underscore_to_dot:
        name = name.replace(".", "_")
    if name not in call:
        got = next(iter(call), None)
        return _fail(
            "simple_function_checker:wrong_func_name", f"called {got!r}, expected {name!r}"
        )
    arguments = call[name]
    if not isinstance(arguments, Mapping):
        return _fail("simple_function_checker:unclear", f"arguments of {name!r} are no object")
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    for param in parameters.get("required") or ():
        if param not in arguments:
            return _fail(
                "simple_function_checker:missing_required", f"missing required parameter {param!r}"
            )
    for param, value in arguments.items():
        if param not in properties or param not in allowed_by_param:
            return _fail(
                "simple_function_checker:unexpected_param", f"unexpected parameter {param!r}"
            )
        verdict = _value_verdict(
            param,
            value,
            allowed_by_param[param],
            properties[param],
            f"function {name!r} parameter {param!r}",
        )
        if not verdict.valid:
            return verdict
    for param, allowed in allowed_by_param.items():
        if param not in arguments and "" not in allowed:
            return _fail(
                "simple_function_checker:missing_optional",
                f"parameter {param!r} is left out, but the answer key does not allow that",
            )
    return _VALID


def _described(functions: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for f in functions:
        if f.get("name") == name:
            return f
    raise ValueError(f"the answer key calls {name!r}, which none of the functions describes")


def check_calls(
    functions: Sequence[Mapping[str, Any]],
    calls: Sequence[Mapping[str, Any]],
    possible_answers: Sequence[Mapping[str, Any]],
    *,
    category: str,
    underscore_to_dot: bool = False,
) -> BfclVerdict:
    """Whether `calls` pass the answer key of a BFCL row of `category` (see the module docstring).

    `functions` are the row's definitions as BFCL gives them (BFCL type names); a function the
    answer key names but none describes, or a type BFCL does not check, is a `ValueError` (the
    row is wrong, not the calls).

    >>> functions = [{"name": "play", "parameters": {"type": "dict", "required": ["artist"],
    ...     "properties": {"artist": {"type": "string"}}}}]
    >>> key = [{"play": {"artist": ["Taylor Swift"]}}, {"play": {"artist": ["Maroon 5"]}}]
    >>> calls = [{"play": {"artist": "maroon 5"}}, {"play": {"artist": "Taylor Swift"}}]
    >>> check_calls(functions, calls, key, category="parallel").valid
    True
    >>> check_calls(functions, calls[:1], key, category="parallel").error_type
    'parallel_function_checker_no_order:wrong_count'
    """
    kind = checker_kind(category)
    for k, call in enumerate(calls):
        if not isinstance(call, Mapping) or len(call) != 1:
            return _fail(
                "ast_decoder:decoder_wrong_output_format", f"call {k} is not {{name: arguments}}"
            )
    if kind == "simple":
        if len(calls) != 1:
            return _fail("simple_function_checker:wrong_count", f"{len(calls)} calls, expected 1")
        return _call_verdict(
            functions[0], calls[0], possible_answers[0], underscore_to_dot=underscore_to_dot
        )
    if len(calls) != len(possible_answers):
        label = (
            "parallel_function_checker_no_order"
            if kind == "parallel"
            else f"{kind}_function_checker"
        )
        return _fail(
            f"{label}:wrong_count", f"{len(calls)} calls, expected {len(possible_answers)}"
        )
    if kind == "multiple":
        expected = possible_answers[0]
        function = _described(functions, next(iter(expected)))
        return _call_verdict(function, calls[0], expected, underscore_to_dot=underscore_to_dot)
    matched: set[int] = set()
    for i, expected in enumerate(possible_answers):
        name = next(iter(expected))
        function = _described(functions, name)
        last = _VALID
        for j, call in enumerate(calls):
            if j in matched:
                continue
            last = _call_verdict(function, call, expected, underscore_to_dot=underscore_to_dot)
            if last.valid:
                matched.add(j)
                break
        else:
            return _fail(
                "parallel_function_checker_no_order:cannot_find_match",
                f"no call matches expected call {i} of {name!r}: {last.error}",
            )
    return _VALID


# --------------------------------------------------------------------------- gold calls


def gold_calls(
    functions: Sequence[Mapping[str, Any]],
    possible_answers: Sequence[Mapping[str, Any]],
    *,
    accepts: Callable[[str, str, Any], bool] | None = None,
) -> list[dict[str, dict[str, Any]]]:
    """One call per expected call, each parameter given its first allowed value: `""` first
    leaves the parameter out (unless the function requires it), and so does a parameter the
    function does not have (BFCL's answer keys name a few) when `""` is allowed at all. An
    allowed dict lists allowed values per key; the call takes the first of each.

    `accepts(function, parameter, value)` (default: any value) lets a caller pass over values
    its tool schema would reject, such as the `None` that BFCL allows for some `string`
    parameters; a parameter with no value it accepts and no `""` takes its first value anyway.
    The calls are not checked here: `check_calls` says whether they pass.

    >>> props = {"base": {"type": "integer"}, "unit": {"type": "string"}, "z": {"type": "integer"}}
    >>> f = [{"name": "area", "parameters": {"required": ["base"], "properties": props}}]
    >>> gold_calls(f, [{"area": {"base": [10], "unit": ["units", ""], "z": ["", 0]}}])
    [{'area': {'base': 10, 'unit': 'units'}}]
    """
    out = []
    for expected in possible_answers:
        ((name, allowed_by_param),) = expected.items()
        parameters = next(
            (f.get("parameters") or {} for f in functions if f.get("name") == name), {}
        )
        required = set(parameters.get("required") or ())
        properties = parameters.get("properties") or {}
        arguments: dict[str, Any] = {}
        for param, allowed in allowed_by_param.items():
            choice: Any = _OMIT
            for value in allowed:
                if value == "":
                    if param not in required:
                        break
                elif param in properties and (accepts is None or accepts(name, param, value)):
                    choice = value
                    break
            else:
                # nothing better: BFCL reads a required "" as an empty string or an empty list
                values = [v for v in allowed if v != ""]
                kind = BFCL_TYPES.get((properties.get(param) or {}).get("type", "any"))
                choice = values[0] if values else [] if kind is list else ""
            if choice is not _OMIT:
                arguments[param] = _gold_value(choice, properties.get(param) or {})
        out.append({name: arguments})
    return out


def _gold_value(value: Any, schema: Mapping[str, Any]) -> Any:
    """An allowed value as a call gives it: an allowed dict lists allowed values per key
    (`{"k": ["v", ""]}` -> `{"k": "v"}`), and so does each dict of an allowed list of dicts."""
    kind = BFCL_TYPES.get(schema.get("type", "any"))
    items = schema.get("items") if isinstance(schema.get("items"), Mapping) else {}
    if kind is dict and isinstance(value, Mapping):
        return _gold_dict(value)
    if (
        kind is list
        and BFCL_TYPES.get(items.get("type", "any")) is dict
        and isinstance(value, list)
    ):
        return [_gold_dict(v) if isinstance(v, Mapping) else v for v in value]
    return value


def _gold_dict(allowed_by_key: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, allowed in allowed_by_key.items():
        if not isinstance(allowed, list):
            out[key] = allowed
        elif allowed and allowed[0] != "":
            out[key] = allowed[0]
        elif not allowed or all(v == "" for v in allowed):
            continue
        # "" first: the key may be left out
    return out


def call_text(call: Mapping[str, Mapping[str, Any]]) -> str:
    """A call as Python text: `call_text({"f": {"x": 1, "s": "a"}})` -> `"f(x=1, s='a')"`."""
    ((name, arguments),) = call.items()
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"


def wrong_calls(
    functions: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]],
    gold: list[dict[str, dict[str, Any]]],
) -> dict[str, list[dict[str, Any]]]:
    """One wrong answer of each kind to a BFCL row whose right answer is `gold`
    (`gold_calls(functions, ground_truth)`): negative examples for training data and for
    testing a checker. A kind that cannot be made for the row is left out.

    | kind               | the wrong answer                                              |
    |--------------------|---------------------------------------------------------------|
    | `wrong_name`       | the first call to a function that does not exist              |
    | `other_function`   | the first call's arguments given to another offered function |
    | `unknown_param`    | an argument the function does not have                        |
    | `extra_call`       | one call too many                                             |
    | `missing_call`     | one call too few (rows of several calls)                      |
    | `missing_required` | a required (or not optional) argument left out                |
    | `not_allowed`      | a value of the right type the answer key does not allow       |
    | `wrong_type`       | a value wrapped in a list                                     |

    >>> sorted(wrong_calls([{"name": "f", "parameters": {"required": ["x"]}}],
    ...     [{"f": {"x": [1]}}], [{"f": {"x": 1}}]))[:3]
    ['extra_call', 'missing_required', 'not_allowed']
    """
    out: dict[str, list[dict]] = {}
    names = [f["name"] for f in functions]
    first_name, first_args = next(iter(gold[0].items()))
    out["wrong_name"] = [{first_name + "_v2": first_args}, *gold[1:]]
    others = [n for n in names if n != first_name]
    if others:
        out["other_function"] = [{others[0]: first_args}, *gold[1:]]
    out["unknown_param"] = [{first_name: {**first_args, "zz_not_a_parameter": 1}}, *gold[1:]]
    out["extra_call"] = [*gold, gold[0]]
    if len(gold) > 1:
        out["missing_call"] = gold[:-1]
    required = {
        f["name"]: set((f.get("parameters") or {}).get("required") or ()) for f in functions
    }
    for k, expected in enumerate(ground_truth):
        ((name, allowed_by_param),) = expected.items()
        args = gold[k][name]
        for param, value in args.items():
            allowed = allowed_by_param[param]
            if "missing_required" not in out and (param in required[name] or "" not in allowed):
                out["missing_required"] = _replace_call(
                    gold, k, name, {p: v for p, v in args.items() if p != param}
                )
            if "not_allowed" not in out:
                wrong = _not_allowed(value, allowed)
                if wrong is not None:
                    out["not_allowed"] = _replace_call(gold, k, name, {**args, param: wrong})
            if "wrong_type" not in out and not isinstance(value, list | dict):
                out["wrong_type"] = _replace_call(gold, k, name, {**args, param: [value]})
    return out


def _replace_call(gold: list[dict], k: int, name: str, args: dict[str, Any]) -> list[dict]:
    calls = copy.deepcopy(gold)
    calls[k] = {name: args}
    return calls


def _not_allowed(value: Any, allowed: list[Any]) -> Any:
    """A value of the same type as `value` that the answer key does not allow, or None."""
    if isinstance(value, bool):
        wrong: Any = not value
    elif isinstance(value, int | float):
        wrong = value + 1000003
    elif isinstance(value, str):
        wrong = value + " and more"
        if standardize_string(wrong) in {
            standardize_string(a) for a in allowed if isinstance(a, str)
        }:
            return None
    elif isinstance(value, list) and value:
        wrong = [*value, value[0]]
    elif isinstance(value, dict):
        wrong = {**value, "zz_extra_key": 1}
    else:
        return None
    return None if wrong in allowed else wrong
