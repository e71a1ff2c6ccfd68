"""Bulk import: the real datasets load with their exact counts; bad input changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kag
from kag.cli import main as kag_main
from kag.importer import ImportFileError, import_triples
from tests.data import DATA_DIR

FB = DATA_DIR / "fb15k-237"
METAQA_KB = DATA_DIR / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt"


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _snapshot(graph) -> tuple:
    """Everything an import could change."""
    entities = sorted(
        (e.id, e.name, e.type, e.domain)
        for batch in graph.store.iter_nodes("Entity")
        for e in batch
    )
    relations = sorted(r.key for batch in graph.store.iter_relations() for r in batch)
    return entities, relations, graph.relation_phrases()


@pytest.fixture
def sqlite_graph(sqlite_url):
    with kag.open(sqlite_url) as g:
        yield g


@pytest.fixture
def seeded(sqlite_graph):
    """A graph that already holds something, to show a failed import leaves it as it was."""
    sqlite_graph.upsert_entities(
        [
            {"id": "ada", "name": "Ada Lovelace", "type": "person"},
            {"id": "london", "name": "London"},
        ]
    )
    sqlite_graph.upsert_relations([("ada", "born_in", "london")])
    sqlite_graph.set_relation_phrases({"born_in": "the city where {x} was born"})
    return sqlite_graph


def test_fb15k_237_loads_all_splits_with_names_and_exact_counts(sqlite_graph):
    report = import_triples(
        sqlite_graph,
        [FB / "train.tsv", FB / "dev.tsv", FB / "test.tsv"],
        entities_file=FB / "entity2text.txt",
        relations_file=FB / "relation2text.txt",
        progress=False,
    )
    assert report.rows == 272_115 + 17_535 + 20_466 == 310_116
    assert (report.entities_new, report.relations_new, report.duplicates) == (14_541, 310_116, 0)
    assert report.relation_types == 237 and report.phrases == 237
    stats = sqlite_graph.stats()
    assert stats["nodes"]["Entity"] == 14_541
    assert stats["edges"]["RELATION"] == 310_116
    assert len(stats["relation_types"]) == 237
    assert sqlite_graph.get_entity("/m/027rn").name == "Dominican Republic"
    assert sqlite_graph.get_entity("/m/0118v") is None, (
        "entity-file rows no triple uses are skipped"
    )
    assert sqlite_graph.relation_phrases()["/music/artist/origin"] == "music artist origin"
    first = sqlite_graph.neighbors("/m/027rn", relation="/location/country/form_of_government")
    assert "/m/06cx9" in {e.id for _, e in first}

    # importing a split again adds nothing and keeps the names
    again = import_triples(sqlite_graph, FB / "dev.tsv", progress=False)
    assert (again.rows, again.entities_new, again.relations_new, again.duplicates) == (
        17_535,
        0,
        0,
        17_535,
    )
    assert sqlite_graph.get_entity("/m/027rn").name == "Dominican Republic"


def test_metaqa_kb_loads_from_the_command_line_with_its_pipe_delimiter(sqlite_url, capsys):
    code = kag_main(
        [
            "import",
            "triples",
            str(METAQA_KB),
            "--delimiter",
            "|",
            "--domain",
            "movies",
            "--json",
            "--graph",
            sqlite_url,
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rows"], report["relations_new"], report["duplicates"]) == (129_235, 129_235, 0)
    assert (report["relation_types"], report["entities_new"]) == (9, 42_778)
    with kag.open(sqlite_url) as graph:
        assert graph.relation_types()["starred_actors"] == 32_534
        assert graph.get_entity("Emily Giffin").domain == "movies"
        written = {e.id for _, e in graph.neighbors("Something Borrowed", relation="written_by")}
        assert "Emily Giffin" in written


def test_the_pipe_delimiter_is_found_without_being_told(sqlite_graph, tmp_path):
    path = _write(
        tmp_path / "kb.txt",
        "Kismet|directed_by|William Dieterle\nKismet|written_by|Edward Knoblock\n",
    )
    report = import_triples(sqlite_graph, path, progress=False)
    assert report.rows == 2 and sqlite_graph.relation_types() == {"directed_by": 1, "written_by": 1}


def test_every_format_gives_the_same_graph(tmp_path, sqlite_url):
    triples = [("a", "knows", "b"), ("b", "lives in", "c, the city"), ("a", "knows", "b")]
    tsv = _write(tmp_path / "t.tsv", "".join(f"{s}\t{r}\t{o}\r\n" for s, r, o in triples))
    csv_path = _write(
        tmp_path / "t.csv", "head,rel,tail\n" + "".join(f'{s},{r},"{o}"\n' for s, r, o in triples)
    )
    jsonl = _write(
        tmp_path / "t.jsonl",
        "".join(
            json.dumps({"subject": s, "relation": r, "object": o}) + "\n" for s, r, o in triples
        ),
    )
    parquet = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "source": [t[0] for t in triples],
                "type": [t[1] for t in triples],
                "target": [t[2] for t in triples],
            }
        ),
        parquet,
    )
    expected = {("a", "knows", "b"), ("b", "lives in", "c, the city")}
    for k, (path, kwargs) in enumerate(
        [(tsv, {}), (csv_path, {"columns": ("head", "rel", "tail")}), (jsonl, {}), (parquet, {})]
    ):
        with kag.open(sqlite_url.replace("kag.db", f"kag{k}.db")) as graph:
            report = import_triples(graph, path, progress=False, **kwargs)
            assert (report.rows, report.relations_new, report.duplicates) == (3, 2, 1), path.suffix
            assert {r.key for batch in graph.store.iter_relations() for r in batch} == expected
            assert graph.get_entity("c, the city").name == "c, the city"


def test_entity_file_names_entities_and_bare_ids_never_overwrite_existing_names(seeded, tmp_path):
    triples = _write(tmp_path / "t.tsv", "ada\twrote\tnotes\nnotes\tabout\tengine\n")
    entities = _write(
        tmp_path / "e.tsv",
        "id\tname\ttype\tdescription\nnotes\tNotes on the Engine\twork\tthe 1843 notes\nunused\tUnused\n",
    )
    report = import_triples(
        seeded, triples, entities_file=entities, domain="history", progress=False
    )
    assert report.entities_new == 2
    assert seeded.get_entity("ada").name == "Ada Lovelace" and seeded.get_entity("ada").domain == ""
    notes = seeded.get_entity("notes")
    assert (notes.name, notes.type, notes.description, notes.domain) == (
        "Notes on the Engine",
        "work",
        "the 1843 notes",
        "history",
    )
    assert seeded.get_entity("engine").name == "engine"
    assert seeded.get_entity("unused") is None
    import_triples(seeded, triples, entities_file=entities, all_entities=True, progress=False)
    assert seeded.get_entity("unused").name == "Unused"
    assert seeded.get_entity("id") is None, "the header row is not an entity"


def test_relation_file_sets_phrases(sqlite_graph, tmp_path):
    triples = _write(tmp_path / "t.tsv", "a\tborn_in\tb\n")
    phrases = _write(
        tmp_path / "r.tsv", "born_in\tthe city where {x} was born\nfounded\tthe founder of {x}\n"
    )
    report = import_triples(sqlite_graph, triples, relations_file=phrases, progress=False)
    # `founded` names no relation type of the file or the graph: reported, not applied
    assert sqlite_graph.relation_phrases() == {"born_in": "the city where {x} was born"}
    assert (report.phrases, report.phrases_unmatched) == (1, ["founded"])


BAD_INPUTS = [
    ("t.tsv", b"a\tr\tb\nc\td\ne\tf\tg\n", "line 2", "expected 3 fields"),
    ("t.tsv", b"a\tr\tb\nc\t \td\n", "line 2, field 'relation'", "must not be empty"),
    ("t.tsv", b"a\tr\tb\n\tr\td\n", "line 2, field 'subject'", "must not be empty"),
    ("t.tsv", b"a\tr\tb\nc\tr\td\ne\tr\t\xff\xfe\n", "line 3", "not valid UTF-8"),
    ("t.tsv", b"a\tr\tb\nc\tr\x01x\td\n", "line 2, field 'relation'", "control character"),
    ("t.csv", b"subject,relation,tail\na,r,b\n", "field 'object'", "column 'object' is missing"),
    (
        "t.jsonl",
        b'{"subject": "a", "relation": "r", "object": "b"}\n{"subject": "a", "relation": "r"}\n',
        "line 2, field 'object'",
        "missing",
    ),
    (
        "t.jsonl",
        b'{"subject": "a", "relation": "r", "object": "b"}\n{"subject": "a", "relation": "r", "object": 3}\n',
        "line 2, field 'object'",
        "must be a string",
    ),
    (
        "t.jsonl",
        b'{"subject": "a", "relation": "r", "object": "b"}\nnot json\n',
        "line 2",
        "not valid JSON",
    ),
]


@pytest.mark.parametrize(("name", "content", "where", "what"), BAD_INPUTS)
def test_malformed_input_names_file_line_and_field_and_changes_nothing(
    seeded, tmp_path, name, content, where, what
):
    if name.endswith(".csv"):
        good = _write(tmp_path / "good.csv", "subject,relation,object\nx,r,y\n")
        kwargs = {"columns": ("subject", "relation", "object")}
    else:
        good, kwargs = _write(tmp_path / "good.tsv", "x\tr\ty\n" * 3), {}
    bad = _write(tmp_path / name, content)
    before = _snapshot(seeded)
    with pytest.raises(ImportFileError) as err:
        import_triples(seeded, [good, bad], progress=False, **kwargs)
    message = str(err.value)
    assert str(bad) in message and where in message and what in message
    assert _snapshot(seeded) == before


def test_null_in_a_parquet_column_names_the_row(seeded, tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"subject": ["a", "b"], "relation": ["r", "r"], "object": ["c", None]}), path
    )
    before = _snapshot(seeded)
    with pytest.raises(ImportFileError, match=r"t.parquet line 2, field 'object'"):
        import_triples(seeded, path, progress=False)
    assert _snapshot(seeded) == before


def test_a_bad_entity_file_stops_the_import_before_anything_is_written(seeded, tmp_path):
    triples = _write(tmp_path / "t.tsv", "x\tr\ty\n")
    entities = _write(tmp_path / "e.tsv", "x\tX\n\ty\tY\n")
    before = _snapshot(seeded)
    with pytest.raises(ImportFileError, match=r"e.tsv line 2, field 'id'"):
        import_triples(seeded, triples, entities_file=entities, progress=False)
    assert _snapshot(seeded) == before


def test_cli_reports_bad_input_as_one_line_error(sqlite_url, tmp_path, capsys):
    bad = _write(tmp_path / "bad.tsv", "a\tr\tb\nc\td\n")
    assert kag_main(["import", "triples", str(bad), "--graph", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert "bad.tsv line 2" in err and "Traceback" not in err
    assert (
        kag_main(["import", "triples", str(tmp_path / "missing.tsv"), "--graph", sqlite_url]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_import_works_on_every_backend(graph, tmp_path):
    triples = _write(
        tmp_path / "t.tsv",
        "ada\tborn_in\tlondon\nlondon\tlocated_in\tengland\nada\tborn_in\tlondon\n",
    )
    names = _write(tmp_path / "e.tsv", "ada\tAda Lovelace\tperson\n")
    report = import_triples(graph, triples, entities_file=names, batch_size=1, progress=False)
    assert (report.rows, report.entities_new, report.relations_new, report.duplicates) == (
        3,
        3,
        2,
        1,
    )
    assert (
        graph.get_entity("ada").name == "Ada Lovelace"
        and graph.get_entity("england").name == "england"
    )
    assert graph.relation_types() == {"born_in": 1, "located_in": 1}


def test_blank_lines_and_a_header_row_are_not_triples(sqlite_graph, tmp_path):
    path = _write(tmp_path / "t.tsv", "\nsubject\trelation\tobject\na\tr\tb\n\n   \nb\tr\tc\n")
    report = import_triples(sqlite_graph, path, header=True, progress=False)
    assert report.rows == 2
    assert {r.key for batch in sqlite_graph.store.iter_relations() for r in batch} == {
        ("a", "r", "b"),
        ("b", "r", "c"),
    }
    bad = _write(tmp_path / "bad.tsv", "\nsubject\trelation\tobject\na\tr\tb\n\nb\tr\n")
    with pytest.raises(ImportFileError, match=r"bad.tsv line 5: expected 3 fields"):
        import_triples(sqlite_graph, bad, header=True, progress=False)
