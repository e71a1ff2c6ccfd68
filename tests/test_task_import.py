"""`kag import tasks`: user task sets become Tasks with their edges; counts add up; bad rows
change nothing."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kag
from kag.cli import main as kag_main
from kag.importer import import_triples
from kag.taskfiles import TaskFileError, read_task_files, resolve_entities
from selfplay.answers import leaked_answer
from selfplay.rewards import VerifierSuite
from selfplay.taskimport import import_tasks

DEFAULT_VERIFIERS = VerifierSuite.default().ids

# --------------------------------------------------------------------------- a small graph

ROWS = [
    {  # topic by id, a gold path with relations, constraints, its own family and domain
        "question": "Where was the birthplace of [Ada Lovelace] located?",
        "answers": ["England"],
        "topic": "ada",
        "path": {"entities": ["ada", "london", "england"], "relations": ["born_in", "located_in"]},
        "family": "search",
        "domain": "history",
        "constraints": {"max_turns": 4},
    },
    {  # topic by name, answers by name, hops given
        "question": "Which city was Ada Lovelace born in?",
        "answers": ["London"],
        "topic_entity": "Ada Lovelace",
        "hops": 1,
    },
    {  # topic from the [mention], two answers, its own id
        "id": "q-london",
        "question": "What country is [London] in, and which river crosses it?",
        "answers": ["England", "Thames"],
    },
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            cells = []
            for c in columns:
                v = r.get(c)
                if v is None:
                    cells.append("")
                elif c == "answers":
                    cells.append("|".join(v))
                elif isinstance(v, dict):
                    cells.append(json.dumps(v))
                else:
                    cells.append(str(v))
            writer.writerow(cells)
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    data = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        if c in ("path", "constraints"):  # JSON text, the portable spelling of an object
            values = [json.dumps(v) if v is not None else None for v in values]
        data[c] = values
    pq.write_table(pa.table(data), path)
    return path


WRITERS = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}


def _seed(graph) -> None:
    graph.upsert_entities(
        [
            {"id": "ada", "name": "Ada Lovelace", "type": "person", "domain": "people"},
            {"id": "london", "name": "London", "domain": "places"},
            {"id": "england", "name": "England", "domain": "places"},
            {"id": "thames", "name": "Thames"},
        ]
    )
    graph.upsert_relations([("ada", "born_in", "london"), ("london", "located_in", "england")])


def _snapshot(graph) -> tuple:
    """Everything an import could write."""
    nodes = {
        kind: sorted(
            json.dumps(n.to_dict(), sort_keys=True) for b in graph.store.iter_nodes(kind) for n in b
        )
        for kind in ("Task", "Run", "Verifier", "Entity")
    }
    edges = {
        kind: sorted((e.source, e.target) for b in graph.store.iter_edges(kind) for e in b)
        for kind in ("SUPPORTS", "CHECKED_BY", "PRODUCED_BY")
    }
    return nodes, edges


@pytest.fixture
def seeded(graph):
    """A small graph on each backend."""
    _seed(graph)
    return graph


@pytest.fixture
def small(sqlite_url):
    """The same small graph on SQLite only."""
    with kag.open(sqlite_url) as g:
        _seed(g)
        yield g


def _edges(graph, kind: str, **where) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in graph.edges(kind, **where)}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_every_format_imports_the_same_tasks_with_their_edges(fmt, tmp_path, sqlite_url):
    path = WRITERS[fmt](tmp_path / f"tasks.{fmt}", ROWS)
    with kag.open(sqlite_url) as graph:
        _seed(graph)
        report = import_tasks(graph, [path])
        assert (report.lines, report.imported, report.unresolved, report.new) == (3, 3, 0, 3)
        assert report.per_file == {
            str(path): {"lines": 3, "imported": 3, "unresolved": 0, "shortcut": 0, "duplicates": 0}
        }
        tasks = {t.id: t for t in graph.get_many("Task", report.task_ids)}
        first, second, third = (tasks[i] for i in report.task_ids)

        assert first.question == 'Where was the birthplace of "Ada Lovelace" located?'
        assert first.answers == ("England",) and first.answer_ids == ("england",)
        assert first.path == {
            "entities": ["ada", "london", "england"],
            "relations": ["born_in", "located_in"],
        }
        assert (first.hops, first.family, first.domain) == (2, "search", "history")
        assert first.props["constraints"] == {"max_turns": 4}
        assert first.props["start_name"] == "Ada Lovelace"
        assert first.props["source"] == {"file": str(path), "line": 2 if fmt == "csv" else 1}
        assert first.props["verifiers"] == DEFAULT_VERIFIERS

        # a topic named by its name resolves to its id; the domain is then the topic's
        assert second.path == {"entities": ["ada"]} and second.answer_ids == ("london",)
        assert (second.hops, second.domain) == (1, "people")
        # the [mention] is the topic; the row's own id is the task id
        assert third.id == "q-london" and third.path == {"entities": ["london"]}
        assert third.question == 'What country is "London" in, and which river crosses it?'
        assert set(third.answer_ids) == {"england", "thames"} and third.hops == 0

        assert _edges(graph, "SUPPORTS", target=first.id) == {
            ("ada", first.id),
            ("london", first.id),
            ("england", first.id),
        }
        assert _edges(graph, "SUPPORTS", target=third.id) == {("london", third.id)}
        assert _edges(graph, "CHECKED_BY", source=second.id) == {
            (second.id, v) for v in DEFAULT_VERIFIERS
        }
        assert {v.id for b in graph.store.iter_nodes("Verifier") for v in b} == set(
            DEFAULT_VERIFIERS
        )
        assert _edges(graph, "PRODUCED_BY", target=report.run_id) == {
            (t, report.run_id) for t in report.task_ids
        }
        run = graph.get("Run", report.run_id)
        assert run.kind == "import" and run.status == "completed"
        assert run.config["files"] == [str(path)] and run.config["formats"] == [fmt]
        assert run.counters["imported"] == 3 and run.counters["lines"] == 3


def test_jsonl_import_on_each_backend_and_again_changes_nothing(seeded, tmp_path):
    path = _write_jsonl(tmp_path / "tasks.jsonl", ROWS)
    report = import_tasks(seeded, [path], family="search")
    assert report.run_id.startswith("import:") and report.imported == 3
    assert seeded.count("Task") == 3
    assert len(seeded.edges("PRODUCED_BY", target=report.run_id)) == 3
    assert len(seeded.edges("SUPPORTS")) == 3 + 1 + 1
    assert len(seeded.edges("CHECKED_BY")) == 3 * len(DEFAULT_VERIFIERS)
    before = _snapshot(seeded)

    again = import_tasks(seeded, [path], family="search")
    assert (again.run_id, again.task_ids) == (report.run_id, report.task_ids)
    assert (again.imported, again.new, again.updated) == (3, 0, 0)
    assert _snapshot(seeded) == before


def test_unresolved_topics_shortcuts_and_duplicates_are_counted_not_imported(small, tmp_path):
    rows = [
        {"question": "Who lived in [London]?", "answers": ["Ada Lovelace"]},
        {"question": "Who lived in [London]?", "answers": ["Ada Lovelace"]},  # duplicate
        {"question": "Where was [Nobody] born?", "answers": ["London"]},  # unresolved topic
        {"question": "Is [London] in England?", "answers": ["England"]},  # names its answer
        {  # a gold path through an entity the graph lacks
            "question": "Where is [Ada Lovelace]?",
            "answers": ["England"],
            "path": {"entities": ["ada", "atlantis"]},
        },
    ]
    path = _write_jsonl(tmp_path / "t.jsonl", rows)
    report = import_tasks(small, [path])
    assert (report.lines, report.imported, report.duplicates) == (5, 1, 1)
    assert (report.unresolved, report.shortcut) == (2, 1)
    assert report.lines == report.imported + report.unresolved + report.shortcut + report.duplicates
    assert report.unresolved_examples == ["Nobody", "atlantis"]
    assert report.shortcut_examples == [f"{path} line 4: answer 'England'"]
    assert small.count("Task") == 1
    assert small.get("Task", report.task_ids[0]).question == 'Who lived in "London"?'


def test_a_name_several_entities_share_takes_the_smallest_id_and_is_counted(small, tmp_path):
    small.upsert_entities(
        [{"id": "paris-tx", "name": "Paris"}, {"id": "paris-fr", "name": "Paris"}]
    )
    path = _write_jsonl(
        tmp_path / "t.jsonl",
        [{"question": "What is [Paris] the capital of?", "answers": ["France"]}],
    )
    report = import_tasks(small, [path])
    assert (report.imported, report.ambiguous, report.answers_unresolved) == (1, 1, 1)
    task = small.get("Task", report.task_ids[0])
    assert task.path == {"entities": ["paris-fr"]} and task.answer_ids == ()


def test_names_resolve_alike_by_query_and_by_one_scan(small):
    small.upsert_entities(
        [{"id": "paris-tx", "name": "Paris"}, {"id": "paris-fr", "name": "Paris"}]
    )
    keys = ["ada", "London", "Paris", "nobody"]
    by_query = resolve_entities(small, keys, scan_above=64)
    assert by_query == resolve_entities(small, keys, scan_above=0)
    assert {k: (m.id, m.candidates) for k, m in by_query.items()} == {
        "ada": ("ada", 1),
        "London": ("london", 1),
        "Paris": ("paris-fr", 2),
    }


# --------------------------------------------------------------------------- bad input


BAD_ROWS = [
    ("jsonl", '{"answers": ["x"], "topic": "ada"}\n', 1, "question", "is missing"),
    ("jsonl", '{"question": "  ", "answers": ["x"], "topic": "ada"}\n', 1, "question", "is empty"),
    (
        "jsonl",
        '{"question": "q", "answers": "x", "topic": "ada"}\n',
        1,
        "answers",
        "list of strings",
    ),
    ("jsonl", '{"question": "q", "answers": [], "topic": "ada"}\n', 1, "answers", "is empty"),
    (
        "jsonl",
        '{"question": "q", "answers": ["x"], "topic": "ada"}\n{"question": \n',
        2,
        None,
        "not valid JSON",
    ),
    (
        "jsonl",
        '{"question": "q", "answers": ["x"], "topic": "ada", "family": "chess"}\n',
        1,
        "family",
        "'chess' is not one of",
    ),
    (
        "jsonl",
        '{"question": "q", "answers": ["x"], "topic": "ada", "hops": -1}\n',
        1,
        "hops",
        "integer >= 0",
    ),
    (
        "jsonl",
        '{"question": "q", "answers": ["x"], "topic": "ada", "hops": "two"}\n',
        1,
        "hops",
        "integer >= 0",
    ),
    (
        "jsonl",
        '{"question": "q", "answers": ["x"], "topic": "ada", "level": 3}\n',
        1,
        "level",
        "unknown key",
    ),
    ("jsonl", '{"question": "q", "answers": ["x"]}\n', 1, "topic", "is missing"),
    (
        "jsonl",
        '{"question": "q", "answers": ["x"], "topic": "ada", "path": "{not json"}\n',
        1,
        "path",
        "not valid JSON",
    ),
    (
        "jsonl",
        '{"question": "q", "answers": ["x"], "topic": "ada", "hops": 1, "path": {"entities": ["ada", "london", "england"], "relations": ["a", "b"]}}\n',
        1,
        "hops",
        "the path has 2",
    ),
    (
        "jsonl",
        '{"question": "q", "answers": ["x"], "topic": "ada", "constraints": [1]}\n',
        1,
        "constraints",
        "JSON object",
    ),
    (
        "jsonl",
        '{"id": "t1", "question": "q", "answers": ["x"], "topic": "ada"}\n'
        '{"id": "t1", "question": "r", "answers": ["x"], "topic": "ada"}\n',
        2,
        "id",
        "'t1' is also the id of",
    ),
    ("csv", "question,answers,topic,level\nq,x,ada,3\n", 1, "level", "unknown column"),
    ("csv", "question,topic\nq,ada\n", 1, "answers", "column is missing"),
    ("csv", "question,answers,topic,hops\nq,x,ada,1.5\n", 2, "hops", "integer >= 0"),
    ("metaqa", "what does [Ada Lovelace] do\tx\nno tab here [x]\n", 2, None, "found no tab"),
    ("metaqa", "what does Ada do\tx\n", 1, "question", "no [bracketed] topic"),
    ("metaqa", "what does [Ada Lovelace] do\tx||y\n", 1, "answers", "answer 2 is empty"),
]


@pytest.mark.parametrize(("fmt", "text", "line", "field", "what"), BAD_ROWS)
def test_a_bad_row_names_file_line_and_field_and_nothing_is_written(
    fmt, text, line, field, what, sqlite_url, tmp_path
):
    directory = tmp_path / "1-hop"
    directory.mkdir()
    if fmt == "metaqa":  # --format applies to every file: the good one is MetaQA too
        good = directory / "good.txt"
        good.write_text("where was [Ada Lovelace] born\tLondon\n", encoding="utf-8")
    else:
        good = _write_jsonl(tmp_path / "good.jsonl", ROWS)
    bad = directory / {"jsonl": "bad.jsonl", "csv": "bad.csv", "metaqa": "bad.txt"}[fmt]
    bad.write_text(text, encoding="utf-8")
    with kag.open(sqlite_url) as graph:
        _seed(graph)
        before = _snapshot(graph)
        with pytest.raises(TaskFileError) as info:
            import_tasks(graph, [good, bad], format="metaqa" if fmt == "metaqa" else None)
        where = f"{bad} line {line}" + (f", field {field!r}" if field else "")
        assert str(info.value).startswith(where), str(info.value)
        assert what in str(info.value)
        assert _snapshot(graph) == before


def test_a_gold_path_that_does_not_start_at_the_topic_is_an_error(small, tmp_path):
    path = _write_jsonl(
        tmp_path / "t.jsonl",
        [{"question": "q", "answers": ["x"], "topic": "london", "path": {"entities": ["ada"]}}],
    )
    before = _snapshot(small)
    with pytest.raises(TaskFileError, match=r"t\.jsonl line 1, field 'path': starts at 'ada'"):
        import_tasks(small, [path])
    assert _snapshot(small) == before


def test_many_bad_rows_show_the_first_few_and_count_the_rest(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "answers": "x"}] * 8)
    with pytest.raises(TaskFileError) as info:
        read_task_files([path])
    assert info.value.count == 8 and len(info.value.errors) == 5
    assert [e.line for e in info.value.errors] == [1, 2, 3, 4, 5]
    assert "and 3 more bad row(s); nothing imported" in str(info.value)


def test_missing_files_unknown_formats_and_unknown_verifiers_are_refused(small, tmp_path):
    good = _write_jsonl(tmp_path / "good.jsonl", ROWS)
    before = _snapshot(small)
    with pytest.raises(FileNotFoundError, match=r"task file .*missing\.jsonl does not exist"):
        import_tasks(small, [good, tmp_path / "missing.jsonl"])
    notes = tmp_path / "notes.txt"
    notes.write_text("just some text\n")
    with pytest.raises(ValueError, match=r"cannot tell the task format of .*notes\.txt.*--format"):
        import_tasks(small, [notes])
    with pytest.raises(ValueError, match=r"verifier\(s\) \['judge@9'\] are not in the graph"):
        import_tasks(small, [good], verifiers=["judge@9"])
    metaqa = tmp_path / "qa.txt"
    metaqa.write_text("what does [London] hold\tThames\n")
    with pytest.raises(TaskFileError, match=r"qa\.txt line 1, field 'hops': is unknown.*--hops"):
        import_tasks(small, [metaqa])
    assert _snapshot(small) == before
    # told the hops, the same file imports
    assert import_tasks(small, [metaqa], hops=1).imported == 1


# --------------------------------------------------------------------------- the command line


def test_the_command_line_prints_one_json_object_and_fails_with_exit_2(
    sqlite_url, tmp_path, capsys
):
    path = _write_jsonl(tmp_path / "tasks.jsonl", ROWS)
    with kag.open(sqlite_url) as graph:
        _seed(graph)
    code = kag_main(
        ["import", "tasks", str(path), "--family", "search", "--graph", sqlite_url, "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["lines"], out["imported"], out["new"], out["unresolved"]) == (3, 3, 3, 0)
    assert out["graph"] == sqlite_url and out["run_id"].startswith("import:")
    assert "task_ids" not in out
    with kag.open(sqlite_url) as graph:
        assert graph.count("Task") == 3
        assert graph.get("Run", out["run_id"]).counters["imported"] == 3

    assert (
        kag_main(["import", "tasks", str(path), "--graph", sqlite_url, "--family", "search"]) == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{sqlite_url}: 3 lines read from 1 file(s): 3 tasks imported (0 new, ")
    assert f"0 unresolved, 0 shortcuts, 0 duplicates; run {out['run_id']} in " in line
    assert "\n" not in line

    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answers": [1], "topic": "ada"}])
    assert kag_main(["import", "tasks", str(bad), "--graph", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kag import: error: ") and "bad.jsonl line 1, field 'answers'" in err


# --------------------------------------------------------------------------- MetaQA


@pytest.fixture(scope="module")
def metaqa_kb(tmp_path_factory, data_dir) -> Path:
    """A SQLite graph of the MetaQA KB subset (ids are the entity names), built once."""
    db = tmp_path_factory.mktemp("metaqa") / "kb.db"
    with kag.open(f"sqlite:///{db}") as graph:
        kb = data_dir / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt"
        import_triples(graph, kb, delimiter="|", domain="movies", progress=False)
    return db


def _expected_metaqa(path: Path, kb_names: set[str], seen: set) -> dict[str, int]:
    """The counts of one MetaQA file, worked out from the file and the KB alone."""
    counts = dict.fromkeys(("lines", "imported", "unresolved", "shortcut", "duplicates"), 0)
    counts["answers_unresolved"] = 0  # answers of imported lines that name no KB entity
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        counts["lines"] += 1
        question, answers = line.split("\t")
        topic = re.search(r"\[([^\]]+)\]", question).group(1)
        if topic not in kb_names:
            counts["unresolved"] += 1
            continue
        quoted = question.replace("[", '"').replace("]", '"')
        if leaked_answer(quoted, answers.split("|")) is not None:
            counts["shortcut"] += 1
            continue
        key = (quoted, topic, frozenset(answers.split("|")))
        counts["duplicates" if key in seen else "imported"] += 1
        if key not in seen:
            counts["answers_unresolved"] += len(set(answers.split("|")) - kb_names)
        seen.add(key)
    return counts


def test_metaqa_dev_sets_import_against_the_kb_with_the_counts_adding_up(
    metaqa_kb, data_dir, tmp_path
):
    db = tmp_path / "kag.db"
    shutil.copy(metaqa_kb, db)
    files = [data_dir / "metaqa" / f"{h}-hop" / "vanilla" / "qa_dev.txt" for h in (1, 2, 3)]
    kb_names = set()
    kb_text = (data_dir / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt").read_text("utf-8")
    for row in kb_text.splitlines():
        head, _, tail = row.split("|")
        kb_names.update((head, tail))
    seen: set = set()
    expected = {str(f): _expected_metaqa(f, kb_names, seen) for f in files}
    answers_unresolved = sum(c.pop("answers_unresolved") for c in expected.values())

    with kag.open(f"sqlite:///{db}") as graph:
        report = import_tasks(graph, files)
        assert report.per_file == expected
        for counts in report.per_file.values():
            assert counts["lines"] == sum(v for k, v in counts.items() if k != "lines")
        assert report.lines == 9_992 + 14_872 + 14_274  # the upstream README's dev split sizes
        assert report.lines == (
            report.imported + report.unresolved + report.shortcut + report.duplicates
        )
        assert report.new == report.imported == len(report.task_ids)
        assert report.ambiguous == 0  # the KB's ids are its names
        assert report.answers_unresolved == answers_unresolved > 0  # the KB is a subset

        assert graph.count("Task") == report.imported
        for h, f in zip((1, 2, 3), files, strict=True):
            assert graph.count("Task", where={"hops": h}) == expected[str(f)]["imported"]
        stats = graph.stats()["edges"]
        assert stats["SUPPORTS"] == report.imported
        assert stats["CHECKED_BY"] == report.imported * len(DEFAULT_VERIFIERS)
        assert len(graph.edges("PRODUCED_BY", target=report.run_id)) == report.imported
        run = graph.get("Run", report.run_id)
        assert run.kind == "import" and run.counters == report.counters()

        first = graph.get("Task", report.task_ids[0])
        assert first.question == 'what movies did "Temuera Morrison" act in'
        assert first.answers == ("Once Were Warriors", "Tracker", "River Queen")
        assert first.answer_ids == first.answers  # every answer is a KB entity
        assert first.path == {"entities": ["Temuera Morrison"]} and first.hops == 1
        assert first.domain == "movies" and first.family == "search"
        assert first.props["source"] == {"file": str(files[0]), "line": 1}
        before = (graph.stats(), run.to_dict())

        again = import_tasks(graph, files)
        assert (again.new, again.updated, again.run_id) == (0, 0, report.run_id)
        assert again.per_file == expected and again.task_ids == report.task_ids
        assert (graph.stats(), graph.get("Run", report.run_id).to_dict()) == before
