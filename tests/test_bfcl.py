"""BFCL function calling as tool_use tasks: the import counts every row, BFCL's AST rules accept
the gold calls of every row and reject each kind of wrong call, and the oracle is accepted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import kag
from kag.bfclfiles import read_bfcl_files
from kag.cli import main as kag_main
from kag.schema import Task
from kag.taskfiles import TaskFileError
from selfplay.bfcl import check_calls, gold_calls, standardize_string, wrong_calls
from selfplay.families import tool_use
from selfplay.oracle import OraclePolicy
from selfplay.rollout import Rollout
from selfplay.scoring import Scorer
from selfplay.solver import Action, Solver, SolverConfig, TurnRequest
from selfplay.taskimport import import_tasks
from selfplay.verifiers import BfclAst
from tests.data import DATA_DIR

BFCL = DATA_DIR / "bfcl"
CATEGORIES = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
)
FILES = {c: BFCL / f"BFCL_v4_{c}.json" for c in CATEGORIES}
#: rows of the six sets, and what the import makes of them (lines = imported + unsatisfiable +
#: schema_conflict + duplicates)
COUNTS = {
    "simple_python": {"lines": 400, "imported": 400, "unsatisfiable": 0, "schema_conflict": 0},
    "multiple": {"lines": 200, "imported": 200, "unsatisfiable": 0, "schema_conflict": 0},
    "parallel": {"lines": 200, "imported": 200, "unsatisfiable": 0, "schema_conflict": 0},
    "parallel_multiple": {"lines": 200, "imported": 198, "unsatisfiable": 0, "schema_conflict": 2},
    "live_simple": {"lines": 258, "imported": 255, "unsatisfiable": 2, "schema_conflict": 1},
    "live_multiple": {"lines": 1053, "imported": 1037, "unsatisfiable": 2, "schema_conflict": 14},
}
#: the rows whose answer key no call passes, by BFCL's own checker too (bfcl-eval agrees): a
#: required list parameter allowed no value at all, a parameter the function lacks that may not
#: be left out, a required parameter the key never names
UNSATISFIABLE = {
    "live_simple_106-63-0",
    "live_simple_112-68-0",
    "live_multiple_862-181-3",
    "live_multiple_964-207-0",
}


def _rows(category: str) -> list[Any]:
    return read_bfcl_files([FILES[category]])


# --------------------------------------------------------------------------- the rules


FLOAT_FN = {
    "name": "geo.area",
    "parameters": {
        "type": "dict",
        "required": ["base", "shape"],
        "properties": {
            "base": {"type": "float"},
            "count": {"type": "integer"},
            "shape": {"type": "string"},
            "exact": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "options": {"type": "dict"},
        },
    },
}


def _check(args: dict[str, Any], key: dict[str, list[Any]], **kw: Any) -> Any:
    return check_calls(
        [FLOAT_FN], [{"geo.area": args}], [{"geo.area": key}], category="simple", **kw
    )


def test_strings_compare_without_case_spaces_and_bfcl_punctuation():
    assert standardize_string("New York, NY") == standardize_string("new york ny") == "newyorkny"
    assert standardize_string("a-b_c/d.e*f^g") == "abcdefg"
    key = {"base": [2.0], "shape": ["Right Triangle"]}
    assert _check({"base": 2.0, "shape": "right-triangle"}, key).valid
    assert not _check({"base": 2.0, "shape": "right triangles"}, key).valid


def test_an_int_is_taken_for_a_float_but_not_a_float_or_bool_for_an_int():
    assert _check({"base": 2, "shape": "s"}, {"base": [2.0], "shape": ["s"]}).valid
    key = {"base": [2.0], "shape": ["s"], "count": [3]}
    assert not _check({"base": 2.0, "shape": "s", "count": 3.0}, key).valid
    assert not _check({"base": 2.0, "shape": "s", "count": True}, key).valid
    assert _check({"base": 2.0, "shape": "s", "count": 3}, key).valid


def test_an_allowed_empty_string_lets_the_parameter_be_left_out():
    key = {"base": [1.0], "shape": ["s"], "exact": ["", True]}
    assert _check({"base": 1.0, "shape": "s"}, key).valid
    assert _check({"base": 1.0, "shape": "s", "exact": True}, key).valid
    assert not _check({"base": 1.0, "shape": "s", "exact": False}, key).valid
    strict = {"base": [1.0], "shape": ["s"], "exact": [True]}
    verdict = _check({"base": 1.0, "shape": "s"}, strict)
    assert verdict.error_type == "simple_function_checker:missing_optional"


def test_lists_compare_item_by_item_and_dicts_key_by_key():
    key = {
        "base": [1.0],
        "shape": ["s"],
        "tags": [["Red Fox", "b"], ""],
        "options": [{"k": ["V", ""]}, ""],
    }
    assert _check({"base": 1.0, "shape": "s", "tags": ["red fox", "B"]}, key).valid
    assert not _check({"base": 1.0, "shape": "s", "tags": ["b", "red fox"]}, key).valid
    assert _check({"base": 1.0, "shape": "s", "options": {"k": "v"}}, key).valid
    assert _check({"base": 1.0, "shape": "s", "options": {}}, key).valid
    assert not _check({"base": 1.0, "shape": "s", "options": {"k": "w"}}, key).valid
    assert not _check({"base": 1.0, "shape": "s", "options": {"x": "v"}}, key).valid


def test_unknown_and_missing_required_parameters_fail():
    key = {"base": [1.0], "shape": ["s"]}
    assert _check({"base": 1.0, "shape": "s", "colour": "red"}, key).error_type == (
        "simple_function_checker:unexpected_param"
    )
    assert _check({"base": 1.0}, key).error_type == "simple_function_checker:missing_required"


def test_dotted_names_are_compared_as_given_unless_underscore_to_dot():
    key = {"base": [1.0], "shape": ["s"]}
    call = {"base": 1.0, "shape": "s"}
    assert _check(call, key).valid
    renamed = [{"geo_area": call}]
    assert not check_calls([FLOAT_FN], renamed, [{"geo.area": key}], category="simple").valid
    assert check_calls(
        [FLOAT_FN], renamed, [{"geo.area": key}], category="simple", underscore_to_dot=True
    ).valid


def test_parallel_calls_match_in_any_order_and_multiple_picks_the_expected_function():
    play = {
        "name": "play",
        "parameters": {"required": ["artist"], "properties": {"artist": {"type": "string"}}},
    }
    stop = {"name": "stop", "parameters": {"required": [], "properties": {}}}
    key = [{"play": {"artist": ["A"]}}, {"play": {"artist": ["B"]}}]
    calls = [{"play": {"artist": "B"}}, {"play": {"artist": "A"}}]
    assert check_calls([play], calls, key, category="parallel").valid
    assert not check_calls([play], calls[:1], key, category="parallel").valid
    assert not check_calls([play], [*calls, calls[0]], key, category="parallel").valid
    one = [{"play": {"artist": ["A"]}}]
    assert check_calls([stop, play], [{"play": {"artist": "a"}}], one, category="multiple").valid
    assert not check_calls([stop, play], [{"stop": {}}], one, category="multiple").valid


# --------------------------------------------------------------------------- every row


#: rows of each set a wrong answer of each kind could be made for (every kind, every row it
#: applies to, fails)
MUTATIONS = {
    "simple_python": {
        "wrong_name": 400,
        "unknown_param": 400,
        "extra_call": 400,
        "missing_required": 400,
        "not_allowed": 400,
        "wrong_type": 395,
    },
    "multiple": {
        "wrong_name": 200,
        "other_function": 200,
        "unknown_param": 200,
        "extra_call": 200,
        "missing_required": 200,
        "not_allowed": 200,
        "wrong_type": 195,
    },
    "parallel": {
        "reversed_passes": 199,
        "wrong_name": 200,
        "unknown_param": 200,
        "extra_call": 200,
        "missing_call": 200,
        "missing_required": 200,
        "not_allowed": 200,
        "wrong_type": 198,
    },
    "parallel_multiple": {
        "reversed_passes": 200,
        "wrong_name": 200,
        "other_function": 200,
        "unknown_param": 200,
        "extra_call": 200,
        "missing_call": 200,
        "missing_required": 200,
        "not_allowed": 200,
        "wrong_type": 199,
    },
    "live_simple": {
        "wrong_name": 256,
        "unknown_param": 256,
        "extra_call": 256,
        "missing_required": 255,
        "not_allowed": 255,
        "wrong_type": 231,
    },
    "live_multiple": {
        "wrong_name": 1051,
        "other_function": 1051,
        "unknown_param": 1051,
        "extra_call": 1051,
        "missing_required": 1020,
        "not_allowed": 1022,
        "wrong_type": 1020,
    },
}


@pytest.mark.parametrize("category", CATEGORIES)
def test_gold_calls_of_every_row_pass_and_every_kind_of_wrong_call_fails(category):
    made: dict[str, int] = {}
    passed = 0
    for row in _rows(category):
        gold = gold_calls(row.functions, row.ground_truth)
        verdict = check_calls(row.functions, gold, row.ground_truth, category=row.category)
        assert verdict.valid is (row.id not in UNSATISFIABLE), (row.id, verdict)
        if not verdict.valid:
            continue
        passed += 1
        if len(gold) > 1:
            # mostly order-insensitive; BFCL matches greedily, so an expected call that allows
            # two values may take the call a later one needed (parallel_178 reversed fails)
            reversed_ok = check_calls(
                row.functions, gold[::-1], row.ground_truth, category=category
            )
            made["reversed_passes"] = made.get("reversed_passes", 0) + reversed_ok.valid
        for kind, calls in wrong_calls(row.functions, row.ground_truth, gold).items():
            made[kind] = made.get(kind, 0) + 1
            wrong = check_calls(row.functions, calls, row.ground_truth, category=category)
            assert not wrong.valid, (row.id, kind, calls)
    assert passed == COUNTS[category]["lines"] - len(
        [u for u in UNSATISFIABLE if u.startswith(category + "_")]
    )
    assert made == MUTATIONS[category]


# --------------------------------------------------------------------------- the import


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The six sets imported into one SQLite graph (about 5 s)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('bfcl') / 'kag.db'}"
    with kag.open(url) as graph:
        report = import_tasks(graph.store, [FILES[c] for c in CATEGORIES])
    return url, report


def test_import_counts_every_row_of_every_set_exactly(imported):
    url, report = imported
    for category in CATEGORIES:
        tally = report.per_file[str(FILES[category])]
        assert tally == {**COUNTS[category], "duplicates": 0}
        assert tally["lines"] == (
            tally["imported"]
            + tally["unsatisfiable"]
            + tally["schema_conflict"]
            + tally["duplicates"]
        )
    assert (report.lines, report.imported) == (2311, 2290)
    assert (report.unsatisfiable, report.schema_conflicts, report.tools) == (4, 17, 2340)
    assert report.new == 2290
    with kag.open(url) as graph:
        counts = (graph.store.count_nodes("Task"), graph.store.count_nodes("Tool"))
        run = graph.store.get_nodes("Run", [report.run_id])[0]
    assert counts == (2290, 2340)
    assert run.kind == "import" and run.counters["unsatisfiable"] == 4
    assert run.config["formats"] == ["bfcl"] * 6


def test_imported_tasks_hold_question_tools_answer_key_and_verifiers(imported):
    url, report = imported
    with kag.open(url) as graph:
        store = graph.store
        (task,) = store.get_nodes("Task", ["bfcl:parallel_0"])
        tools = store.get_nodes("Tool", list(task.props["tools"]))
        checked = {e.target for e in store.edges("CHECKED_BY", source=task.id)}
        produced = {e.target for e in store.edges("PRODUCED_BY", source=task.id)}
        (live,) = store.get_nodes("Task", ["bfcl:live_simple_0-0-0"])
    assert task.family == "tool_use" and task.domain == "bfcl" and task.hops == 2
    assert task.question.startswith("Play songs from the artists Taylor Swift and Maroon 5")
    assert task.answers == (
        "spotify.play(artist='Taylor Swift', duration=20)",
        "spotify.play(artist='Maroon 5', duration=15)",
    )
    assert [t.name for t in tools] == ["spotify.play"]
    assert tools[0].parameters["type"] == "object"  # BFCL's "dict", as JSON Schema
    assert task.props["ground_truth"][0] == {
        "spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}
    }
    assert task.props["bfcl"] == {"id": "parallel_0", "category": "parallel"}
    assert task.props["messages"][-1]["role"] == "user"
    assert checked == {"bfcl_ast@1", "tool_call_validity@1"} and produced == {report.run_id}
    assert live.props["source"]["line"] == 1


def test_importing_the_same_sets_again_writes_nothing(imported):
    url, first = imported
    with kag.open(url) as graph:
        again = import_tasks(graph.store, [FILES[c] for c in CATEGORIES])
        assert graph.store.count_nodes("Task") == 2290
    assert (again.new, again.updated, again.run_id) == (0, 0, first.run_id)


def test_kag_import_tasks_reads_bfcl_files_with_their_answer_files(sqlite_url, capsys, tmp_path):
    assert (
        kag_main(["import", "tasks", str(FILES["live_simple"]), "--graph", sqlite_url, "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert (out["lines"], out["imported"], out["unsatisfiable"], out["schema_conflicts"]) == (
        258,
        255,
        2,
        1,
    )
    # a copy elsewhere names its answer file explicitly; the format can be forced
    copy_dir = tmp_path / "elsewhere"
    copy_dir.mkdir()
    tasks = copy_dir / "subset.jsonl"
    tasks.write_text("".join(FILES["parallel"].read_text().splitlines(True)[:5]), encoding="utf-8")
    answers = BFCL / "possible_answer" / FILES["parallel"].name
    argv = ["import", "tasks", str(tasks), "--answers", str(answers), "--format", "bfcl"]
    assert kag_main([*argv, "--graph", sqlite_url]) == 0
    assert "5 lines read from 1 file(s): 5 tasks imported (5 new" in capsys.readouterr().out


def _bad(tmp_path: Path, rows: list[Any], answers: list[Any]) -> Path:
    path = tmp_path / "BFCL_v4_simple_python.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "possible_answer").mkdir(exist_ok=True)
    (tmp_path / "possible_answer" / path.name).write_text(
        "".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8"
    )
    return path


ROW = {
    "id": "simple_python_0",
    "question": [[{"role": "user", "content": "Area of a 10 by 5 triangle?"}]],
    "function": [FLOAT_FN],
}
KEY = {
    "id": "simple_python_0",
    "ground_truth": [{"geo.area": {"base": [10.0], "shape": ["triangle"]}}],
}


def test_bad_bfcl_rows_name_file_line_and_field_and_nothing_is_written(sqlite_url, tmp_path):
    cases = [
        (
            [ROW],
            [{**KEY, "id": "simple_python_9"}],
            "line 1, field 'id': 'simple_python_0' has no possible answer",
        ),
        (
            [ROW],
            [{**KEY, "ground_truth": [{"other": {}}]}],
            "field 'function': the possible answer",
        ),
        ([{**ROW, "question": [[], []]}], [KEY], "field 'question': holds 2 turns"),
        ([{**ROW, "involved_classes": ["GorillaFileSystem"]}], [KEY], "BFCL multi-turn row"),
        ([{**ROW, "function": [FLOAT_FN, FLOAT_FN]}], [KEY], "defines 'geo.area' twice"),
        (
            [ROW],
            [{**KEY, "ground_truth": [{"geo.area": {"base": 10}}]}],
            "allowed values must be a list",
        ),
    ]
    for rows, answers, message in cases:
        path = _bad(tmp_path, rows, answers)
        with kag.open(sqlite_url) as graph:
            with pytest.raises(TaskFileError, match=message):
                import_tasks(graph.store, [path])
            assert graph.store.count_nodes("Task") == graph.store.count_nodes("Tool") == 0
    (tmp_path / "possible_answer" / path.name).unlink()
    with kag.open(sqlite_url) as graph, pytest.raises(FileNotFoundError, match="possible_answer"):
        import_tasks(graph.store, [path])


def test_kag_import_tasks_names_a_missing_answer_file_in_one_line(sqlite_url, tmp_path, capsys):
    path = tmp_path / "BFCL_v4_parallel.json"
    path.write_text(FILES["parallel"].read_text(encoding="utf-8"), encoding="utf-8")
    assert kag_main(["import", "tasks", str(path), "--graph", sqlite_url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kag import: error: possible-answer file") and "\n" not in err


# --------------------------------------------------------------------------- the oracle


class ScriptedPolicy:
    """Writes the given assistant texts, one per turn (a wrong answer, for the suite to reject)."""

    name = "scripted"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def count_tokens(self, rollout: Rollout, *, tools: list[dict[str, Any]]) -> int:
        return 1

    def act(self, requests: list[TurnRequest], *, tools: list[dict[str, Any]]) -> list[Action]:
        out = []
        for r in requests:
            turn = sum(m["role"] == "assistant" for m in r.rollout.messages)
            out.append(Action(text=self.texts[min(turn, len(self.texts) - 1)]))
        return out


def _solve(store: Any, task: Task, policy: Any) -> Any:
    tools = tool_use.registry(store, task)
    config = SolverConfig(max_turns=4, system_prompt=tool_use.system_prompt(task))
    (rollout,) = Solver(policy, tools, config=config).solve([task], run_id="bfcl-oracle")
    (scored,) = Scorer(tools, suite=tool_use.suite()).score([rollout])
    return rollout, scored


def test_the_oracle_is_accepted_on_every_imported_task_of_every_set(imported):
    url, report = imported
    with kag.open(url) as graph:
        tasks = graph.store.get_nodes("Task", report.task_ids)
        verdicts: dict[str, list[float]] = {}
        for task in tasks[::5]:  # one task in five: 458 tasks, every set
            rollout, scored = _solve(graph.store, task, OraclePolicy())
            assert scored.verdict == "accepted", (task.id, [v.detail for v in scored.verifications])
            assert rollout.status == "completed" and rollout.n_tool_calls == task.hops
            verdicts.setdefault(task.props["bfcl"]["category"], []).append(scored.reward)
    assert set(verdicts) == set(CATEGORIES)
    assert all(r == 1.0 for rewards in verdicts.values() for r in rewards)


def _turn(*calls: tuple[str, dict[str, Any]]) -> str:
    return "\n".join(
        f"<tool_call>\n{json.dumps({'name': n, 'arguments': a})}\n</tool_call>" for n, a in calls
    )


def test_the_suite_rejects_each_kind_of_wrong_answer(imported):
    url, _ = imported
    with kag.open(url) as graph:
        (task,) = graph.store.get_nodes("Task", ["bfcl:parallel_0"])
        (a, args_a), (b, args_b) = tool_use.oracle_calls(task)
        answer = "<answer>done</answer>"
        wrong = {
            "a call missing": [_turn((a, args_a)), answer],
            "a value not allowed": [_turn((a, args_a), (b, {**args_b, "duration": 99})), answer],
            "a required parameter missing": [_turn((a, args_a), (b, {"duration": 15})), answer],
            "an unknown function": [_turn((a, args_a), ("spotify_play", args_b)), answer],
            "a wrong call before the right ones": [
                _turn((a, args_b)),
                _turn((a, args_a), (b, args_b)),
                answer,
            ],
            "a malformed call": ['<tool_call>{"name": "spotify.play", </tool_call>', answer],
            "no call at all": [answer],
        }
        for kind, texts in wrong.items():
            _, scored = _solve(graph.store, task, ScriptedPolicy(texts))
            assert scored.verdict == "rejected", kind
            assert scored.reward < 0.5, kind
        _, right = _solve(
            graph.store, task, ScriptedPolicy([_turn((b, args_b), (a, args_a)), answer])
        )
    assert right.verdict == "accepted"  # order does not matter


def test_bfcl_ast_is_undecided_on_tasks_without_an_answer_key():
    task = Task(id="t", question="q", family="tool_use")
    assert BfclAst().verify(task, [{"role": "user", "content": "q"}]).passed is None


def test_bfcl_tasks_round_trip_through_every_backend(graph_url):
    with kag.open(graph_url) as graph:
        report = import_tasks(graph.store, [FILES["parallel_multiple"]])
        assert (report.imported, report.schema_conflicts, report.new) == (198, 2, 198)
        (task,) = graph.store.get_nodes("Task", ["bfcl:parallel_multiple_0"])
        rows = {r.id: r for r in _rows("parallel_multiple")}
        row = rows["parallel_multiple_0"]
        assert task.props["ground_truth"] == list(row.ground_truth)
        assert task.props["functions"] == list(row.functions)
        assert len(graph.store.get_nodes("Tool", list(task.props["tools"]))) == len(row.functions)
        _, scored = _solve(graph.store, task, OraclePolicy())
        assert scored.verdict == "accepted"
        again = import_tasks(graph.store, [FILES["parallel_multiple"]])
        assert (again.new, again.updated) == (0, 0)


def test_a_row_read_twice_is_a_duplicate_and_an_id_reused_for_another_row_an_error(
    sqlite_url, tmp_path
):
    again = tmp_path / "again" / FILES["parallel"].name
    (again.parent / "possible_answer").mkdir(parents=True)
    again.write_text(FILES["parallel"].read_text(encoding="utf-8"), encoding="utf-8")
    answers = BFCL / "possible_answer" / FILES["parallel"].name
    (again.parent / "possible_answer" / again.name).write_bytes(answers.read_bytes())
    with kag.open(sqlite_url) as graph:
        report = import_tasks(graph.store, [FILES["parallel"], again])
        assert report.per_file[str(again)] == {
            "lines": 200,
            "imported": 0,
            "unsatisfiable": 0,
            "schema_conflict": 0,
            "duplicates": 200,
        }
        assert (report.lines, report.imported, report.duplicates) == (400, 200, 200)
        other = _bad(tmp_path, [{**ROW, "id": "parallel_0"}], [{**KEY, "id": "parallel_0"}])
        with pytest.raises(
            TaskFileError, match=r"'parallel_0' is also the id of .* a different row"
        ):
            import_tasks(graph.store, [FILES["parallel"], other])


def test_the_family_registry_scores_tool_use_tasks_with_the_tool_use_suite():
    from kag.schema import Task
    from selfplay.families import family_suite

    assert tool_use.suite().ids == ["bfcl_ast@1", "tool_call_validity@1"]
    suite = family_suite("tool_use")  # BFCL's checks and graph-edit's, picked by task
    assert suite.ids == ["bfcl_ast@1", "graph_state@1", "tool_call_validity@1"]
    bfcl = Task(id="t", question="q", family="tool_use", props={"functions": []})
    edit = Task(id="e", question="q", family="tool_use", props={"graph_edit": {}})
    assert suite.suite_for(bfcl).ids == tool_use.suite().ids
    assert suite.suite_for(edit).ids == ["graph_state@1", "tool_call_validity@1"]


def test_kag_eval_measures_a_policy_on_imported_bfcl_tasks(sqlite_url, tmp_path, capsys):
    # a small BFCL file: the first rows of two sets, with their answer files beside them
    (tmp_path / "possible_answer").mkdir()
    for name in ("BFCL_v4_simple_python.json", "BFCL_v4_parallel.json"):
        for sub in ("", "possible_answer/"):
            lines = (BFCL / sub / name).read_text(encoding="utf-8").splitlines()[:6]
            (tmp_path / sub / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    files = [str(tmp_path / "BFCL_v4_simple_python.json"), str(tmp_path / "BFCL_v4_parallel.json")]
    assert kag_main(["import", "tasks", *files, "--graph", sqlite_url]) == 0
    capsys.readouterr()
    argv = ["eval", "--engine", "oracle", "--tasks", "family=tool_use", "--graph", sqlite_url]
    assert kag_main([*argv, "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trajectories"] == 12 and report["accept_rate"] == 1.0
    assert set(report["by_family"]) == {"tool_use"}
    with kag.open(sqlite_url) as g:
        trajs = [t for b in g.store.iter_nodes("Trajectory") for t in b]
        for t in trajs:  # each was offered its own functions, not the graph tools
            (task,) = g.store.get_nodes("Task", [t.task_id])
            assert t.props["tools"] == list(task.props["tools"])
            ids = {e.source for e in g.store.edges("VERIFIES", target=t.id)}
            assert f"ver:{t.id}:bfcl_ast@1" in ids
