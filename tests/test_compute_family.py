"""The compute family: numeric facts in the world and in imported files, compute tasks the oracle
solves through the real solver, python sandbox and verifiers, wrong answers rejected, and graph
growth (derived facts with PRODUCES and DEPENDS_ON) on every backend."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace

import pytest

import kag
from kag.importer import import_triples
from kag.schema import Run
from kag.stores.base import GraphBatch
from kag.world import NUMERIC_ATTRIBUTES, generate_world, write_world
from selfplay.answers import leaked_answer
from selfplay.config import SelfPlayConfig
from selfplay.families.compute import (
    COMPUTE_SYSTEM_PROMPT,
    TEMPLATES,
    ComputeConfig,
    ComputeOraclePolicy,
    ComputeProposer,
    NumericMatch,
    compute_suite,
    derived_entity_id,
    growth_batch,
    parse_number,
)
from selfplay.graph_tools import default_registry
from selfplay.proposer import Proposer, ProposerConfig
from selfplay.scoring import Scorer
from selfplay.solver import Solver, SolverConfig
from selfplay.writeback import write_rollouts, write_tasks

# sha256 of the names, types, domains, descriptions, relations and phrases that seeds gave
# before entities had numeric attributes (the learning benchmark and the demo depend on them)
WORLD_BEFORE_NUMBERS = {
    (7, 500): "d2cd08c41ee6898eded396ef05b46fde2f90f7e9279bbf599de573cf258bcbe8",
    (3, 2000): "a39e2b0700a48f47879c506f40e53b974bc23ab33d0f2d91621e5963bc0b1b15",
}


def _world_digest(entities, relations, phrases) -> str:
    blob = json.dumps(
        [[e.id, e.name, e.type, e.domain, e.description] for e in entities]
        + [[r.source, r.type, r.target] for r in relations]
        + [sorted(phrases.items())]
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _graph_with_world(graph, *, size: int = 300, seed: int = 4):
    write_world(graph, *generate_world(seed=seed, size=size))
    return graph


def _solve(graph, tasks, *, run_id: str = "compute-1", policy=None):
    """Solve tasks with the oracle (or `policy`) through the real solver and python sandbox."""
    suite = compute_suite()
    suite.persist(graph.store)
    tools = default_registry(graph.store)
    tools.persist(graph.store)
    write_tasks(graph.store, tasks)
    solver = Solver(
        policy or ComputeOraclePolicy(),
        tools,
        config=SolverConfig(system_prompt=COMPUTE_SYSTEM_PROMPT),
    )
    rollouts = solver.solve(tasks, run_id=run_id)
    return Scorer(tools, suite=suite, store=graph.store).score(rollouts), tools, suite


def _one_per_template(graph, *, seed: int = 0):
    tasks = ComputeProposer(graph).propose(len(TEMPLATES), seed=seed).tasks
    assert {t.props["template"] for t in tasks} == set(TEMPLATES)
    return tasks


# --------------------------------------------------------------------------- numeric facts


def test_world_numbers_leave_names_relations_and_phrases_as_they_were():
    for (seed, size), digest in WORLD_BEFORE_NUMBERS.items():
        entities, relations, phrases = generate_world(seed=seed, size=size)
        assert _world_digest(entities, relations, phrases) == digest
        for e in entities:
            expected = {name for name, *_ in NUMERIC_ATTRIBUTES[e.type]}
            assert set(e.props) == expected, e
            for name, low, high, _ in NUMERIC_ATTRIBUTES[e.type]:
                assert isinstance(e.props[name], int) and low <= e.props[name] <= high
    a, b = generate_world(seed=7, size=500)[0], generate_world(seed=7, size=500)[0]
    assert [e.props for e in a] == [e.props for e in b]
    c = generate_world(seed=8, size=500)[0]
    assert [e.props for e in a] != [e.props for e in c]


def test_world_numbers_come_back_as_numbers_from_the_store(graph):
    _graph_with_world(graph, size=120)
    films = graph.find_entities(type="film", limit=5)
    assert films
    for film in films:
        assert isinstance(film.props["release_year"], int)
        assert isinstance(film.props["runtime_min"], int)
    tools = default_registry(graph.store, sandbox=None)
    obs = json.loads(tools.call("get_entity", {"entity_id": films[0].id}).content)
    assert obs["props"] == dict(films[0].props)


def test_imported_entity_files_keep_numeric_props_as_numbers(sqlite_url, tmp_path):
    triples = tmp_path / "kb.tsv"
    triples.write_text("f1\tdirected_by\td1\nf2\tdirected_by\td1\n")
    tsv = tmp_path / "entities.tsv"
    tsv.write_text(
        "id\tname\ttype\trelease_year\trating\tnote\n"
        "f1\tFirst Film\tfilm\t1999\t7.5\tcult\n"
        "f2\tSecond Film\tfilm\t2004\t\t\n"
    )
    jsonl = tmp_path / "people.jsonl"
    jsonl.write_text(
        json.dumps({"id": "d1", "name": "Ada", "born": 1950, "props": {"height_cm": 171.5}}) + "\n"
    )
    with kag.open(sqlite_url) as g:
        import_triples(g, [triples], entities_file=tsv, progress=False)
        import_triples(g, [triples], entities_file=jsonl, progress=False)
        f1, f2, d1 = (g.get_entity(i) for i in ("f1", "f2", "d1"))
    assert f1.name == "First Film" and f1.type == "film"
    assert f1.props == {"release_year": 1999, "rating": 7.5, "note": "cult"}
    assert f2.props == {"release_year": 2004}, "empty cells are left out"
    assert d1.name == "Ada" and d1.props == {"born": 1950, "height_cm": 171.5}


def test_a_bad_entity_file_row_names_its_line_and_nothing_is_written(sqlite_url, tmp_path):
    triples = tmp_path / "kb.tsv"
    triples.write_text("f1\tdirected_by\td1\n")
    bad = tmp_path / "entities.tsv"
    bad.write_text("id\tname\tyear\nf1\tFirst\t1999\nd1\tAda\n")
    with kag.open(sqlite_url) as g, pytest.raises(ValueError, match="line 3.*2 fields"):
        import_triples(g, [triples], entities_file=bad, progress=False)
    bad_props = tmp_path / "entities.jsonl"
    bad_props.write_text('{"id": "f1", "name": "First"}\n{"id": "d1", "props": [1999]}\n')
    with kag.open(sqlite_url) as g:
        with pytest.raises(ValueError, match="line 2, field 'props': must be an object"):
            import_triples(g, [triples], entities_file=bad_props, progress=False)
        assert g.get_entity("f1") is None, "nothing is written"


# --------------------------------------------------------------------------- proposing


def _direct_answer(store, task):
    """The task's answer computed from the store's own relations and props (not the CSR)."""
    p = task.props
    name = lambda i: store.get_nodes("Entity", [i])[0].name  # noqa: E731

    def follow(entity_id, relation):
        return sorted(o.id for _, o in store.neighbors(entity_id, relation=relation))

    def props(entity_id):
        """Entity props, and numbers named by a relation's one target (`-release_year-> 1999`)."""
        out = {}
        for rel, other in store.neighbors(entity_id):
            try:
                out[rel.type] = json.loads(other.name)
            except ValueError:
                continue
        return {**out, **store.get_nodes("Entity", [entity_id])[0].props}

    template = p["template"]
    if template == "difference":
        node = task.path["entities"][0]
        for relation in p["relations"]:
            (node,) = follow(node, relation)
        assert node == task.path["entities"][-1]
        a1, a2 = p["facts"][0]["attribute"], p["facts"][1]["attribute"]
        return props(task.path["entities"][0])[a1] - props(node)[a2]
    if template == "compare":
        (x, rel), (y, _) = p["expand"]
        (tx,), (ty,) = follow(x, rel), follow(y, rel)
        attr = p["facts"][0]["attribute"]
        pick = max if p["operation"] == "max" else min
        return name(pick([tx, ty], key=lambda i: props(i)[attr]))
    items = follow(p["subject"], p["relations"][0])
    if template == "count":
        return len(items)
    attr = p["facts"][0]["attribute"]
    values = {i: props(i)[attr] for i in items}
    if template == "sum":
        return sum(values.values())
    if template == "mean":
        return sum(values.values()) / len(values)
    pick = max if template == "argmax" else min
    return name(pick(values, key=values.get))


def test_proposed_answers_equal_a_direct_computation_from_the_graph(sqlite_url):
    with kag.open(sqlite_url) as g:
        _graph_with_world(g)
        proposal = ComputeProposer(g).propose(70, seed=3)
        tasks = proposal.tasks
        assert len(tasks) == 70
        assert Counter(t.props["template"] for t in tasks) == {t: 10 for t in TEMPLATES}
        for task in tasks:
            expected = _direct_answer(g.store, task)
            assert task.family == "compute"
            assert task.props["value"] == pytest.approx(expected), task.question
            if task.props["answer_kind"] == "entity":
                assert task.answers == (expected,)
                assert task.answer_ids and task.answer_ids[0] in task.path["entities"]
            else:
                assert parse_number(task.answers[0]) == pytest.approx(expected, abs=0.005)
            assert leaked_answer(task.question, task.answers) is None
            facts = {f["entity_id"] for f in task.props["facts"]}
            assert facts <= set(task.path["entities"]), "every fact's entity must be acted on"
            assert task.props["verifiers"] == compute_suite().ids
        assert len({t.id for t in tasks}) == len(tasks)
        sums = [t for t in tasks if t.props["template"] == "sum"]
        assert not any(t.props["facts"][0]["attribute"] in ("born", "founded") for t in sums)


def test_proposals_are_deterministic_and_never_repeat_a_known_task(sqlite_url):
    with kag.open(sqlite_url) as g:
        _graph_with_world(g)
        first = ComputeProposer(g).propose(20, seed=1)
        again = ComputeProposer(g).propose(20, seed=1)
        assert [t.to_dict() for t in first.tasks] == [t.to_dict() for t in again.tasks]
        compute_suite().persist(g.store)
        write_tasks(g.store, first.tasks)
        later = ComputeProposer(g).propose(20, seed=1)
        assert not {t.id for t in later.tasks} & {t.id for t in first.tasks}
        assert later.dropped["known"] > 0
        two_hop = ComputeProposer(g).propose(5, seed=0, hops=2).tasks
        assert two_hop and {(t.props["template"], t.hops) for t in two_hop} == {("difference", 2)}
        with pytest.raises(ValueError, match="no compute template makes 3-hop"):
            ComputeProposer(g).propose(1, hops=3)
    with pytest.raises(ValueError, match="unknown compute templates"):
        ComputeConfig(templates=("median",))


def test_a_graph_without_numbers_still_gives_count_tasks(sqlite_url):
    triples = [(f"film{i}", "directed_by", f"director{i % 3}") for i in range(9)]
    triples += [(f"director{i % 3}", "directed", f"film{i}") for i in range(9)]
    with kag.open(sqlite_url) as g:
        g.upsert_relations(triples, create_entities=True)
        proposal = ComputeProposer(g).propose(10, seed=0)
        assert {t.props["template"] for t in proposal.tasks} == {"count"}
        assert sorted(t.answers for t in proposal.tasks) == [("3",)] * 3
        assert proposal.dropped["no_attribute"] > 0
        scored, _, _ = _solve(g, proposal.tasks)
    assert {s.verdict for s in scored} == {"accepted"}


# --------------------------------------------------------------------------- solving and verifying


def test_the_oracle_is_accepted_on_every_template_through_the_python_tool(sqlite_url):
    with kag.open(sqlite_url) as g:
        _graph_with_world(g)
        tasks = ComputeProposer(g).propose(21, seed=5).tasks
        scored, _, _ = _solve(g, tasks)
    assert Counter(s.verdict for s in scored) == {"accepted": 21}
    assert {s.reward for s in scored} == {1.0}
    on_steps = [v for s in scored for v in s.verifications if v.subject_kind == "Step"]
    assert on_steps and {(v.verifier_id, v.passed) for v in on_steps} == {("tool_step@2", True)}
    for s in scored:
        calls = [
            c["function"]["name"]
            for m in s.rollout.messages
            if m["role"] == "assistant"
            for c in m.get("tool_calls") or ()
        ]
        assert "python" in calls and "get_relations" in calls
        if s.rollout.task.props["template"] != "count":
            assert "get_entity" in calls
        task = s.rollout.task
        if task.props["answer_kind"] == "entity":
            assert s.rollout.answer == task.answers[0]
        else:  # the python tool's output, e.g. "184.0" for a mean of 184
            assert parse_number(s.rollout.answer) == pytest.approx(task.props["value"], abs=0.01)


def _with_answer(scored_rollout, answer: str):
    r = scored_rollout.rollout
    messages = [*r.messages[:-1], {**r.messages[-1], "content": f"<answer>{answer}</answer>"}]
    return replace(r, messages=messages, answer=answer)


def test_wrong_answers_are_rejected_and_near_misses_score_between(sqlite_url):
    with kag.open(sqlite_url) as g:
        _graph_with_world(g)
        tasks = _one_per_template(g, seed=2)
        scored, tools, suite = _solve(g, tasks)
        by_template = {s.rollout.task.props["template"]: s for s in scored}
        scorer = Scorer(tools, suite=suite, store=g.store)

        def verdict(template: str, answer: str):
            (result,) = scorer.score([_with_answer(by_template[template], answer)])
            return result

        sum_task = by_template["sum"].rollout.task
        value = sum_task.props["value"]
        assert verdict("sum", f"{value:,}").verdict == "accepted"
        assert verdict("sum", f"{value} minutes").verdict == "accepted"
        off_by_one = verdict("sum", str(value + 1))
        far = verdict("sum", str(value * 3))
        assert off_by_one.verdict == far.verdict == "rejected"
        assert 0 < far.reward < off_by_one.reward < 0.5
        assert verdict("sum", f"{value} or {value + 1}").verdict == "rejected"
        assert verdict("sum", "I do not know").verdict == "rejected"

        mean = by_template["mean"].rollout.task.props["value"]
        assert verdict("mean", f"{mean + 0.004:.4f}").verdict == "accepted"
        assert verdict("mean", f"{mean + 0.05:.2f}").verdict == "rejected"

        diff = by_template["difference"].rollout.task.props["value"]
        assert verdict("difference", str(-diff if diff else 1)).verdict == "rejected"

        for template in ("argmax", "argmin", "compare"):
            task = by_template[template].rollout.task
            right = task.answers[0]
            others = [
                g.get_entity(e).name for e in task.path["entities"] if e not in task.answer_ids
            ]
            assert verdict(template, right.upper()).verdict == "accepted"
            assert verdict(template, others[-1]).verdict == "rejected"
            assert verdict(template, f"{right}; {others[-1]}").verdict == "rejected"


def test_an_answer_without_walking_the_facts_is_rejected(sqlite_url):
    class Guesser(ComputeOraclePolicy):
        """Knows every answer (it reads the task) and calls no tool."""

        def _next(self, request):
            return f"<answer>{request.rollout.task.answers[0]}</answer>"

    with kag.open(sqlite_url) as g:
        _graph_with_world(g)
        tasks = _one_per_template(g, seed=4)
        scored, _, _ = _solve(g, tasks, run_id="guess", policy=Guesser(name="guesser"))
    assert {s.verdict for s in scored} == {"rejected"}
    for s in scored:
        failed = {v.verifier_id for v in s.verifications if v.passed is False}
        assert "evidence_coverage@2" in failed and "numeric_match@1" not in failed


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("311", 311.0),
        ("1,234", 1234.0),
        ("1,234,567.5", 1234567.5),
        ("12.5 km", 12.5),
        ("-3", -3.0),
        ("\u221212", -12.0),
        ("+7", 7.0),
        (".5", 0.5),
        ("1.2e3", 1200.0),
        ("The answer is 42.", 42.0),
        ("42 (42 years)", 42.0),
        ("$1,000", 1000.0),
        ("12%", 12.0),
        ("1,2", None),
        ("12 or 13", None),
        ("1999-1987", None),
        ("twelve", None),
        ("km2", None),
        ("", None),
        ("inf", None),
    ],
)
def test_parse_number_reads_the_one_number_of_an_answer(text, number):
    assert parse_number(text) == number


def test_numeric_match_reads_tolerances_from_the_task():
    from kag.schema import Task

    task = Task(
        id="t",
        family="compute",
        question="q",
        answers=("100",),
        props={"value": 100, "tolerance": 0.0, "rel_tolerance": 0.05},
    )
    msg = lambda a: [{"role": "assistant", "content": f"<answer>{a}</answer>"}]  # noqa: E731
    assert NumericMatch().verify(task, msg("104.9")).passed is True
    assert NumericMatch().verify(task, msg("105.1")).passed is False
    assert NumericMatch().verify(task, msg("no idea")).score == 0.0
    untolerant = Task(id="u", family="compute", question="q", answers=("3",), props={"value": 3})
    assert NumericMatch().verify(untolerant, msg("3.0")).passed is True
    assert NumericMatch(abs_tolerance=0.5).verify(untolerant, msg("3.4")).passed is True
    assert NumericMatch().verify(untolerant, msg("3.4")).passed is False
    with pytest.raises(ValueError, match="partial_credit"):
        NumericMatch(partial_credit=1.0)


def test_the_compute_suite_requires_the_numeric_answer_and_takes_a_judge():
    from selfplay.families.compute import suite
    from selfplay.verifiers import LLMJudge

    plain = suite()
    assert [v.id for v in plain.required] == [
        "numeric_match@1",
        "evidence_coverage@2",
        "no_shortcut@1",
        "tool_call_validity@1",
    ]
    assert plain.reward.outcome == "numeric_match" and compute_suite().ids == plain.ids
    assert "llm_judge@1" in suite(judge=LLMJudge()).ids


# --------------------------------------------------------------------------- graph growth


def test_accepted_compute_trajectories_grow_the_graph_on_every_backend(graph):
    _graph_with_world(graph, size=200)
    tasks = ComputeProposer(graph).propose(14, seed=7).tasks
    scored, _, _ = _solve(graph, tasks)
    assert {s.verdict for s in scored} == {"accepted"}
    run = Run(id="compute-1", kind="selfplay")
    write_rollouts(graph.store, scored, grow=growth_batch, run=run)
    growing = [s for s in scored if s.rollout.task.props["template"] != "compare"]
    derived = [graph.get_entity(derived_entity_id(s.rollout.task.id)) for s in growing]
    assert all(d is not None for d in derived)
    for s, d in zip(growing, derived, strict=True):
        task = s.rollout.task
        assert d.type == "derived_fact" and d.props["derived"] is True
        assert d.props["value"] == task.props["value"] and d.props["task_id"] == task.id
        assert d.props["attribute"] == task.props["attribute"]
        (produces,) = graph.edges("PRODUCES", target=d.id)
        producer = graph.get("Step", produces.source)
        assert producer.trajectory_id == s.rollout.id and producer.name == "python"
        assert s.rollout.answer in producer.content
        depends = graph.edges("DEPENDS_ON", source=producer.id)
        sources = [graph.get("Step", e.target) for e in depends]
        assert sources and all(x.role == "tool" and x.idx < producer.idx for x in sources)
        read = {e for x in sources for e in _acted_on(s.rollout, x.idx)}
        assert {f["entity_id"] for f in task.props["facts"]} <= read
        target = task.answer_ids[0] if task.props["answer_kind"] == "entity" else d.id
        linked = graph.neighbors(task.props["subject"], relation=task.props["attribute"])
        assert [(rel.type, other.id) for rel, other in linked] == [
            (task.props["attribute"], target)
        ]
    assert not graph.edges(
        "PRODUCES",
        target=[
            derived_entity_id(s.rollout.task.id)
            for s in scored
            if s.rollout.task.props["template"] == "compare"
        ],
    )
    phrases = graph.relation_phrases()
    assert all("{x}" in phrases[s.rollout.task.props["attribute"]] for s in growing)
    before = graph.stats()
    write_rollouts(graph.store, scored, grow=growth_batch, run=run)
    after = graph.stats()
    assert after["nodes"] == before["nodes"] and after["edges"] == before["edges"]
    assert after["edges"]["PRODUCES"] == len(growing)
    assert after["relation_types"] == before["relation_types"]


def _acted_on(rollout, idx):
    from selfplay.verifiers import tool_steps

    return next(s.acted_on for s in tool_steps(rollout.messages) if s.index == idx)


def test_rejected_trajectories_grow_nothing(graph):
    _graph_with_world(graph, size=200)
    tasks = _one_per_template(graph, seed=1)
    scored, tools, suite = _solve(graph, tasks)
    wrong = Scorer(tools, suite=suite, store=graph.store).score(
        [_with_answer(s, "-999999") for s in scored]
    )
    assert {s.verdict for s in wrong} == {"rejected"}
    assert all(len(growth_batch(s)) == 0 for s in wrong)
    relations = graph.stats()["relation_types"]
    write_rollouts(graph.store, wrong, grow=growth_batch, run=Run(id="compute-1", kind="selfplay"))
    stats = graph.stats()
    assert stats["edges"].get("PRODUCES", 0) == stats["edges"].get("DEPENDS_ON", 0) == 0
    assert graph.count("Entity", where={"type": "derived_fact"}) == 0
    assert stats["relation_types"] == relations
    assert stats["nodes"]["Trajectory"] == len(tasks), "the rejected trajectories are kept"


def test_a_later_proposal_walks_a_grown_relation(graph):
    _graph_with_world(graph, size=200)
    tasks = ComputeProposer(graph, config=ComputeConfig(templates=("sum",))).propose(4, seed=0)
    scored, _, _ = _solve(graph, tasks.tasks)
    write_rollouts(graph.store, scored, grow=growth_batch, run=Run(id="compute-1", kind="selfplay"))
    grown = sorted({t.props["attribute"] for t in tasks.tasks})
    later = Proposer(graph, config=ProposerConfig(relation_types=tuple(grown))).propose(
        4, hops=1, seed=0
    )
    assert later.tasks
    for task in later.tasks:
        (answer,) = task.answer_ids
        fact = graph.get_entity(answer)
        assert fact.props["derived"] is True and task.path["relations"][0] in grown
        assert task.question.startswith('What is the total "')
    # and compute tasks read the derived values as numeric facts of their own
    later_compute = ComputeProposer(graph)
    index = {e: i for i, e in enumerate(later_compute.csr.entity_ids)}
    for s in scored:
        fact = derived_entity_id(s.rollout.task.id)
        assert later_compute.values[index[fact]] == {"value": s.rollout.task.props["value"]}


def test_metaqa_numbers_held_as_relation_targets_make_compute_tasks(sqlite_url, data_dir):
    """MetaQA keeps release years as entities (`film -release_year-> 1999`): they are numeric
    attributes read with `get_relations`, and the oracle solves every task on them."""
    kb = data_dir / "metaqa" / "kb_subset_keallm" / "kb_subset_named.txt"
    lines = kb.read_text(encoding="utf-8").splitlines()[:40000]
    triples = [tuple(line.split("|")) for line in lines if line.count("|") == 2]
    # the inverse person relations MetaQA's own questions assume ("films directed by X")
    inverse = {"directed_by": "directed", "written_by": "wrote", "starred_actors": "starred_in"}
    triples += [(o, inverse[r], s) for s, r, o in triples if r in inverse]
    with kag.open(sqlite_url) as g:
        g.upsert_relations(triples, create_entities=True)
        tasks = ComputeProposer(g).propose(30, seed=0).tasks
        assert len(tasks) == 30
        assert {"count", "mean", "argmax", "argmin", "compare"} <= {
            t.props["template"] for t in tasks
        }
        for task in tasks:
            assert task.props["value"] == pytest.approx(_direct_answer(g.store, task))
            for fact in task.props["facts"]:
                assert fact["attribute"] == fact["relation"] == "release_year"
        scored, _, _ = _solve(g, tasks)
    assert Counter(s.verdict for s in scored) == {"accepted": 30}


def test_one_oracle_and_one_writer_serve_a_run_that_mixes_families(sqlite_url):
    from selfplay.rewards import VerifierSuite

    with kag.open(sqlite_url) as g:
        _graph_with_world(g, size=200)
        search = Proposer(g, config=ProposerConfig(verifiers=tuple(VerifierSuite.default().ids)))
        search_tasks = search.propose(3, hops=2, seed=0).tasks
        compute_tasks = ComputeProposer(g).propose(3, seed=0).tasks
        VerifierSuite.default().persist(g.store)
        tools = default_registry(g.store)
        tools.persist(g.store)
        compute_suite().persist(g.store)
        write_tasks(g.store, [*search_tasks, *compute_tasks])
        rollouts = Solver(ComputeOraclePolicy(), tools).solve(
            [*search_tasks, *compute_tasks], run_id="mixed"
        )
        by_family = {
            "search": Scorer(tools, store=g.store),
            "compute": Scorer(tools, suite=compute_suite(), store=g.store),
        }
        scored = [by_family[r.task.family].score([r])[0] for r in rollouts]
        assert [s.verdict for s in scored] == ["accepted"] * 6
        write_rollouts(g.store, scored, grow=growth_batch, run=Run(id="mixed", kind="selfplay"))
        produced = {e.target for e in g.edges("PRODUCES")}
        growing = [t for t in compute_tasks if t.props["template"] != "compare"]
        assert produced == {derived_entity_id(t.id) for t in growing}


def test_a_run_with_no_grow_leaves_the_graph_as_it_was(sqlite_url, capsys):
    """`kag selfplay run --no-grow` (held-out tasks): accepted compute trajectories add no derived
    fact, so no later search shows a held-out answer; the default run grows the graph."""
    from kag.cli import main as kag_main

    with kag.open(sqlite_url) as g:
        _graph_with_world(g, size=200)
        before = g.count("Entity")
    run = ["selfplay", "run", "--engine", "oracle", "--family", "compute", "--tasks", "6"]
    run += ["--graph", sqlite_url, "--no-progress"]
    assert kag_main([*run, "--run-id", "heldout", "--no-grow"]) == 0
    with kag.open(sqlite_url) as g:
        heldout = [t for t in g.iter_nodes("Trajectory") if t.run_id == "heldout"]
        assert len(heldout) == 6 and all(t.verdict == "accepted" for t in heldout)
        assert g.count("Entity") == before
    # resuming the run with growth on is refused with a message naming the setting
    capsys.readouterr()
    assert kag_main([*run, "--run-id", "heldout"]) != 0
    assert "different settings for grow" in capsys.readouterr().err
    assert kag_main([*run, "--run-id", "demos", "--seed", "1"]) == 0
    with kag.open(sqlite_url) as g:
        assert g.count("Entity", where={"type": "derived_fact"}) > 0


def test_a_run_stored_before_families_and_grow_resumes_as_a_growing_search_run(sqlite_url):
    """A Run whose stored config predates `families` and `grow` resumes with the defaults and
    refuses a compute or no-grow resume (the settings it ran with were search, growing)."""
    from selfplay.runner import run as run_selfplay

    with kag.open(sqlite_url) as g:
        _graph_with_world(g, size=200)
        run_selfplay(g.store, config=SelfPlayConfig(run_id="old", tasks=2, progress=False))
        (old,) = g.store.get_nodes("Run", ["old"])
        legacy = {k: v for k, v in old.config.items() if k not in ("families", "grow")}
        g.store.write(GraphBatch().add(replace(old, config=legacy)))
        again = run_selfplay(g.store, config=SelfPlayConfig(run_id="old", tasks=2, progress=False))
        assert again.status == "completed"
        for changed in ({"families": ("compute",)}, {"grow": False}):
            config = SelfPlayConfig(run_id="old", tasks=2, progress=False, **changed)
            with pytest.raises(ValueError, match=f"different settings for {next(iter(changed))}"):
                run_selfplay(g.store, config=config)
