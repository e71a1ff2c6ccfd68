"""`kag import triples` says what is wrong with a path or a phrase file before writing anything."""

from __future__ import annotations

from pathlib import Path

import pytest

import kag
from kag.cli import main as kag_main
from kag.importer import ImportFileError, import_triples


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _import(url: str, *args: str) -> int:
    return kag_main(["import", "triples", *args, "--no-progress", "--graph", url])


def test_a_directory_given_as_a_triple_file_is_called_a_directory(sqlite_url, tmp_path, capsys):
    (tmp_path / "kb").mkdir()
    assert _import(sqlite_url, str(tmp_path / "kb")) == 2
    err = capsys.readouterr().err
    assert f"triple file {tmp_path / 'kb'} is a directory" in err and "does not exist" not in err
    good = _write(tmp_path / "t.tsv", "a\tr\tb\n")
    assert _import(sqlite_url, str(good), "--relations", str(tmp_path / "kb")) == 2
    assert "relation file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "why"), [("", "the file is empty"), ("\n\n", "only a header or blank lines")]
)
def test_a_triple_file_without_triples_is_an_error_and_nothing_is_written(
    sqlite_url, tmp_path, capsys, content, why
):
    good = _write(tmp_path / "good.tsv", "a\tr\tb\n")
    empty = _write(tmp_path / "empty.tsv", content)
    assert _import(sqlite_url, str(good), str(empty)) == 2
    err = capsys.readouterr().err
    assert f"{empty}: holds no triples ({why})" in err
    with kag.open(sqlite_url) as graph:
        assert graph.stats()["edges"]["RELATION"] == 0, "all or nothing"


def test_phrases_are_reported_as_applied_and_unmatched_keys_are_named(sqlite_url, tmp_path, capsys):
    triples = _write(tmp_path / "t.tsv", "a\tborn_in\tb\nb\tlocated_in\tc\n")
    phrases = _write(
        tmp_path / "r.tsv",
        "born_in\tthe city where {x} was born\nfounded_by\tthe founder of {x}\n"
        "wrote\tthe writer of {x}\n",
    )
    assert _import(sqlite_url, str(triples), "--relations", str(phrases)) == 0
    out, err = capsys.readouterr()
    assert "1 phrases applied" in out
    assert "2 phrase(s)" in err and "founded_by, wrote" in err
    with kag.open(sqlite_url) as graph:
        assert graph.relation_phrases() == {"born_in": "the city where {x} was born"}


def test_a_phrase_matching_a_relation_already_in_the_graph_is_applied(sqlite_url, tmp_path):
    with kag.open(sqlite_url) as graph:
        graph.upsert_entities([{"id": "x", "name": "X"}, {"id": "y", "name": "Y"}])
        graph.upsert_relations([("x", "wrote", "y")])
        triples = _write(tmp_path / "t.tsv", "a\tborn_in\tb\n")
        phrases = _write(tmp_path / "r.tsv", "wrote\tthe writer of {x}\n")
        report = import_triples(graph, triples, relations_file=phrases, progress=False)
        assert (report.phrases, report.phrases_unmatched) == (1, [])
        assert graph.relation_phrases() == {"wrote": "the writer of {x}"}


def test_a_phrase_file_matching_no_relation_is_an_error_and_nothing_is_written(
    sqlite_url, tmp_path
):
    triples = _write(tmp_path / "t.tsv", "a\tborn_in\tb\n")
    phrases = _write(tmp_path / "r.tsv", "directed_by\tthe director of {x}\n")
    with kag.open(sqlite_url) as graph:
        with pytest.raises(ImportFileError, match="none of its 1 relation names"):
            import_triples(graph, triples, relations_file=phrases, progress=False)
        assert graph.stats()["edges"]["RELATION"] == 0
