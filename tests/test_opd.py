"""`kag train opd`: routing and tokenizer checks before any work, and real OPD steps on CPU.

The dataset is a real `kag export opd` of oracle self-play on a generated world (search and
compute tasks, so two routing keys); the student is the tiny MoE on the in-process vLLM engine;
the teacher is the same architecture with other weights, sharing the student's tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kag.cli import main as kag_main
from trainer.opd import check_routes, check_tokenizers, load_teachers, read_routes


@pytest.fixture(scope="module")
def opd_setup(tmp_path_factory, tiny_model_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("opd")
    url = f"sqlite:///{root / 'kag.db'}"
    assert kag_main(["generate", "world", "--seed", "3", "--size", "200", "--graph", url]) == 0
    selfplay = ["selfplay", "run", "--engine", "oracle", "--tasks", "16", "--no-progress"]
    selfplay += ["--family", "search", "--family", "compute", "--graph", url]
    assert kag_main(selfplay) == 0
    data = root / "opd-data"
    assert kag_main(["export", "opd", str(data), "--graph", url]) == 0
    # the teacher: the student's architecture and tokenizer, other weights
    from transformers import AutoModelForCausalLM

    teacher = root / "teacher"
    shutil.copytree(tiny_model_dir, teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(teacher)
    return {"url": url, "data": data, "teacher": teacher, "root": root}


def _tokenizer_variant(src: Path, dst: Path, change) -> Path:
    from transformers import AutoTokenizer

    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    change(tok)
    tok.save_pretrained(dst)
    return dst


def test_routes_come_from_the_teacher_column_and_default_to_the_family(opd_setup):
    routes = read_routes(opd_setup["data"])
    assert set(routes.values()) == {"search", "compute"}
    check_routes(list(routes.values()), {"search": "a", "compute": "b"})
    with pytest.raises(ValueError, match="routing key 'compute' .* has no teacher"):
        check_routes(list(routes.values()), {"search": "a"})


def test_a_routing_key_without_a_teacher_is_refused_before_any_work(
    opd_setup, tiny_model_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = ["train", "opd", "--data", str(opd_setup["data"]), "--student", str(tiny_model_dir)]
    argv += ["--teacher", f"search={opd_setup['teacher']}", "--out", str(out)]
    assert kag_main([*argv, "--graph", opd_setup["url"]]) == 2
    err = capsys.readouterr().err
    assert "routing key 'compute'" in err and "--teacher compute=DIR" in err
    assert not out.exists()


def test_tokenizer_mismatches_are_named_before_any_work(
    opd_setup, tiny_model_dir, tmp_path, capsys
):
    from transformers import AutoTokenizer

    student = AutoTokenizer.from_pretrained(tiny_model_dir)
    variants = {
        "vocabulary of": lambda t: t.add_tokens(["<extra_token_a>", "<extra_token_b>"]),
        "special tokens": lambda t: setattr(t, "pad_token", t.convert_ids_to_tokens(5)),
        "chat template": lambda t: setattr(t, "chat_template", "{{ messages }}"),
    }
    for i, (message, change) in enumerate(variants.items()):
        bad = _tokenizer_variant(tiny_model_dir, tmp_path / f"t{i}", change)
        with pytest.raises(ValueError, match=message):
            check_tokenizers(student, {"compute": AutoTokenizer.from_pretrained(bad)})
        out = tmp_path / f"run{i}"
        argv = ["train", "opd", "--data", str(opd_setup["data"]), "--student", str(tiny_model_dir)]
        argv += ["--teacher", f"search={opd_setup['teacher']}", "--teacher", f"compute={bad}"]
        assert kag_main([*argv, "--out", str(out), "--graph", opd_setup["url"]]) == 2
        err = capsys.readouterr().err
        assert "teacher 'compute'" in err and message in err
        assert not out.exists()
    check_tokenizers(student, {"search": AutoTokenizer.from_pretrained(opd_setup["teacher"])})


def test_teachers_sharing_a_checkpoint_are_loaded_once(tmp_path):
    loads = []

    def load(path):
        loads.append(path)
        return torch.nn.Linear(1, 1)

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    teachers = load_teachers({"search": a, "compute": str(a), "tool_use": b}, load=load)
    assert len(loads) == 2 and teachers["search"] is teachers["compute"]
    assert not any(p.requires_grad for p in teachers["search"].parameters())


@pytest.mark.vllm
def test_opd_steps_train_the_student_keep_the_engine_in_sync_and_resume(
    opd_setup, tiny_model_dir, tmp_path, capsys
):
    from safetensors.torch import load_file

    out = tmp_path / "opd-run"
    argv = ["train", "opd", "--data", str(opd_setup["data"]), "--student", str(tiny_model_dir)]
    argv += ["--teacher", f"search={opd_setup['teacher']}"]
    argv += ["--teacher", f"compute={opd_setup['teacher']}", "--out", str(out)]
    argv += ["--prompts-per-step", "4", "--lr", "1e-2", "--top-k", "8", "--max-turns", "2"]
    argv += ["--max-new-tokens", "32", "--max-context-tokens", "2048", "--kv-cache-gib", "0.25"]
    argv += ["--seed", "3", "--json", "--graph", opd_setup["url"]]
    assert kag_main([*argv, "--steps", "1"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (first["steps"], first["resumed_from"], first["shared_teacher_models"]) == (1, 0, 1)
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)

    assert kag_main([*argv, "--steps", "2"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (second["steps"], second["resumed_from"]) == (2, 1)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    for r in lines:
        assert r["trained"] == 1.0 and r["n_tokens"] > 0
        assert 0 < r["coverage"] <= 1 and 0 < r["teacher_mass"] <= 1
        keys = {k.split("/", 1)[1] for k in r if k.startswith("loss/")}
        assert keys and keys <= {"search", "compute"}
        # the engine sampled with the weights the trainer had: step 2 after a resume too,
        # so the checkpoint's weights (lr 1e-2 moved them) reached the fresh engine
        assert r["mismatch_abs_logp"] < 1e-2
        assert r["time_score_s"] > 0 and r["time_rollout_s"] > 0
    steps = [json.loads(x) for x in (out / "prompts.jsonl").read_text().splitlines()]
    drawn = [t for s in steps for t in s["task_ids"]]
    assert len(drawn) == len(set(drawn)) == 8  # no prompt trained twice across the resume
    # lineage: the OPD student, trained on the dataset, derived from the student and the teacher
    import kag
    from kag.lineage import dataset_id_of, weights_sha256

    with kag.open(opd_setup["url"]) as g:
        model = g.store.get_nodes("Model", [second["model_id"]])[0]
        assert model.stage == "opd" and model.weights_sha256 == weights_sha256(out / "model")
        parents = {e.target for e in g.store.edges("DERIVED_FROM", source=model.id)}
        shas = {m.weights_sha256 for m in g.store.get_nodes("Model", sorted(parents))}
        assert shas == {weights_sha256(tiny_model_dir), weights_sha256(opd_setup["teacher"])}
        trained_on = {e.target for e in g.store.edges("TRAINED_ON", source=model.id)}
        assert trained_on == {dataset_id_of(opd_setup["data"])}
        # the rollout Runs of both steps used the student it started from
        (student,) = [m for m in g.store.get_nodes("Model", sorted(parents))
                      if m.weights_sha256 == weights_sha256(tiny_model_dir)]  # fmt: skip
        for s in steps:
            assert [e.target for e in g.store.edges("USED_MODEL", source=s["run_id"])] == [
                student.id
            ]
