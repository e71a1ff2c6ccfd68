"""The Neo4j ingest benchmark pairs like with like: warm import with warm MERGE, cold with cold."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.ingest_neo4j import SPLITS, bench_neo4j

pytestmark = pytest.mark.neo4j


def _tiny_fb15k(root: Path) -> Path:
    """FB15k-237's file layout with a 30-triple graph."""
    root.mkdir()
    triples = [(f"/m/{i}", f"/rel/{i % 3}", f"/m/{(i * 7 + 1) % 20}") for i in range(30)]
    for n, split in enumerate(SPLITS):
        lines = [f"{h}\t{r}\t{t}\n" for h, r, t in triples[n * 10 : (n + 1) * 10]]
        (root / split).write_text("".join(lines), encoding="utf-8")
    names = "".join(f"/m/{i}\tentity {i}\n" for i in range(20))
    (root / "entity2text.txt").write_text(names, encoding="utf-8")
    return root


def _ingest_lines(results: list[dict]) -> dict[str, dict]:
    lines = {r["metric"]: r for r in results if r["unit"] == "relations/s"}
    for line in lines.values():
        # the ratio is of the unrounded figures; the printed value and baseline are rounded to
        # one decimal, so their quotient may differ from it by a rounding step
        expected = line["value"] / line["baseline_value"]
        assert line["ratio"] == pytest.approx(expected, rel=0.05, abs=0.1)
    return lines


def test_each_ingest_figure_has_a_baseline_measured_in_the_same_server_state(tmp_path):
    results = bench_neo4j(data_dir=_tiny_fb15k(tmp_path / "fb"), baseline_rows=12, steady_imports=3)
    lines = _ingest_lines(results)
    assert lines.keys() == {"neo4j_relations_per_s", "neo4j_relations_per_s_first_import"}
    warm, cold = lines["neo4j_relations_per_s"], lines["neo4j_relations_per_s_first_import"]
    assert warm["server"].startswith("running") and "same server" in warm["server"]
    assert len(warm["runs"]) == len(warm["baseline_runs"]) == 3
    assert sorted(warm["baseline_runs"])[1] == warm["baseline_value"]  # the median, as the import
    assert cold["server"].startswith("just started") and "another just-started" in cold["server"]


def test_a_server_given_by_url_gets_only_the_running_pair(tmp_path, neo4j_url):
    results = bench_neo4j(
        data_dir=_tiny_fb15k(tmp_path / "fb"), url=neo4j_url, baseline_rows=12, steady_imports=1
    )
    assert _ingest_lines(results).keys() == {"neo4j_relations_per_s"}
    assert "neo4j_csr_projection_s" in {r["metric"] for r in results}
