"""The python tool's sandbox stops what model-written code must not do, and runs the rest."""

from __future__ import annotations

import json
import socket

import pytest

from selfplay.sandbox import PythonSandbox, SandboxConfig, python_tool
from selfplay.tools import ToolRegistry


@pytest.fixture(scope="module")
def sandbox() -> PythonSandbox:
    return SandboxConfig(timeout_s=5, cpu_s=3, memory_mb=256, max_output_chars=200).build()


def test_normal_code_runs_and_its_output_comes_back(sandbox):
    result = sandbox.run("import json, math\nprint(json.dumps({'pi': round(math.pi, 2)}))")
    assert result.ok and result.exit_code == 0
    assert json.loads(result.stdout) == {"pi": 3.14}
    assert result.stderr == "" and not result.truncated


def test_code_runs_in_a_fresh_working_directory_that_is_also_home_and_tmpdir(sandbox):
    code = (
        "import os, tempfile\n"
        "open('notes.txt', 'w').write('kept')\n"
        "print(open('notes.txt').read(), os.getcwd() == os.environ['HOME'] == tempfile.gettempdir())"
    )
    first = sandbox.run(code)
    assert first.ok, first.stderr
    assert first.stdout.split() == ["kept", "True"]
    # each run starts empty: nothing leaks from one run to the next
    second = sandbox.run("import os; print(sorted(os.listdir('.')))")
    assert second.stdout.strip() == "['main.py']"


def test_wall_clock_timeout_kills_a_sleeping_process():
    result = SandboxConfig(timeout_s=1, cpu_s=5).build().run("import time\ntime.sleep(60)")
    assert not result.ok
    assert result.error == "wall-clock timeout after 1s"
    assert result.duration_s < 5


def test_cpu_limit_stops_a_busy_loop():
    result = SandboxConfig(timeout_s=20, cpu_s=1).build().run("while True:\n    pass")
    assert result.error == "CPU time limit exceeded"
    assert result.duration_s < 10


def test_memory_bomb_fails_with_memory_error_not_the_host(sandbox):
    result = sandbox.run("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))")
    assert not result.ok
    assert result.error == "memory limit exceeded (256 MiB)"
    assert "MemoryError" in result.stderr


def test_network_connection_attempt_fails_and_reaches_nothing(sandbox):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        result = sandbox.run(code)
        assert not result.ok
        assert "connected" not in result.stdout
        assert "network access is disabled" in result.stderr
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_writes_outside_the_working_directory_are_refused(sandbox, tmp_path):
    target = tmp_path / "escape.txt"
    result = sandbox.run(f"open({str(target)!r}, 'w').write('pwned')")
    assert not result.ok
    assert "writing outside the working directory is not allowed" in result.error
    assert not target.exists()

    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = sandbox.run(f"import os\nos.remove({str(victim)!r})")
    assert "outside the working directory" in result.error
    assert victim.read_text() == "precious"

    # a relative path that climbs out is resolved before the check
    result = sandbox.run("open('../../escape.txt', 'a').write('x')")
    assert not result.ok and "outside the working directory" in result.error


def test_spawning_processes_is_refused(sandbox):
    result = sandbox.run("import subprocess\nsubprocess.run(['echo', 'hi'])")
    assert not result.ok
    assert "subprocess.Popen is not allowed" in result.error


def test_output_is_truncated_to_the_configured_size(sandbox):
    result = sandbox.run("print('x' * 10_000)")
    assert result.ok and result.truncated
    assert result.stdout.startswith("x" * 200)
    assert result.stdout.endswith("[output truncated]")
    assert len(result.stdout) < 250


def test_python_tool_reports_errors_as_observations_with_the_traceback_tail():
    registry = ToolRegistry([python_tool(SandboxConfig(timeout_s=5, max_output_chars=500))])
    good = registry.call("python", json.dumps({"code": "print(sum(range(10)))"}))
    assert good.ok and json.loads(good.content) == {"stdout": "45\n", "stderr": "", "exit_code": 0}

    bad = registry.call("python", json.dumps({"code": "1 / 0"}))
    assert not bad.ok
    assert bad.error == "exit code 1: ZeroDivisionError: division by zero"
    body = json.loads(bad.content)
    assert body["exit_code"] == 1 and 'File "main.py", line 1' in body["stderr"]


def test_bad_limits_are_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ValueError, match="cpu_s"):
        SandboxConfig(cpu_s=0)
