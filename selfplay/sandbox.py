"""Run untrusted Python in a separate process with limits: the engine of the `python` tool.

| limit              | how                                                                 |
|--------------------|---------------------------------------------------------------------|
| wall clock         | the parent kills the child's process group after `timeout_s`        |
| CPU time           | `RLIMIT_CPU` (the kernel sends SIGXCPU)                              |
| memory             | `RLIMIT_AS` (allocations fail with `MemoryError`)                    |
| file size          | `RLIMIT_FSIZE`, so a runaway write cannot fill the disk             |
| network            | a new, empty network namespace (`unshare -n`, when allowed) and an   |
|                    | audit hook that refuses to create sockets                           |
| files              | a fresh temporary working directory (also HOME and TMPDIR); an      |
|                    | audit hook refuses writes, renames and deletes outside it           |
| processes          | the audit hook refuses `subprocess.Popen`, `os.system`, `exec`, `fork`, |
|                    | `kill` of other processes and `ctypes`                              |

Output (stdout and stderr) is truncated to `max_output_chars`.

>>> PythonSandbox().run("print(6 * 7)").stdout  # doctest: +SKIP
'42\\n'

`python_tool(config)` offers the sandbox to a model as the `python` tool.

Audit hooks stop honest mistakes and the usual escapes of model-written code; they are not a
security boundary against code written to break out. Run self-play on machines you can lose.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from kag.schema import Tool
from selfplay.tools import FunctionTool, Observation, compact_json

__all__ = ["SandboxConfig", "SandboxResult", "PythonSandbox", "python_tool"]


# Runs in the child before the user's code: limits first, then the audit hook, then the code.
# Kept as source text because it must run inside `python -I -B -c`, with no access to this package.
_BOOTSTRAP = r"""
import os, resource, sys

cpu_s, mem_bytes, fsize_bytes = (int(a) for a in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
if mem_bytes > 0:
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_bytes, fsize_bytes))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

_ROOT = os.path.realpath(os.getcwd())
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PID = os.getpid()
_realpath, _fsdecode, _sep = os.path.realpath, os.fsdecode, os.sep
_PATH_EVENTS = {
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
    "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,),
    "os.chown": (0,), "os.utime": (0,), "os.mkfifo": (0,), "os.mknod": (0,),
    "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (1,),
}
_BLOCKED = {
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "pty.spawn", "os.startfile", "ctypes.dlopen", "ctypes.dlsym",
    "ctypes.cdata", "sys.remote_exec", "os.setuid", "os.setgid",
}
_NO_IMPORT = {"ctypes", "_ctypes", "cffi"}
_NET = ("socket.", "_socket.")


def _inside(path):
    if path is None or isinstance(path, int):
        return True  # an already open file descriptor
    try:
        real = _realpath(_fsdecode(path))
    except Exception:
        return False
    return real == _ROOT or real.startswith(_ROOT + _sep)


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = bool(flags & _WRITE_FLAGS) if isinstance(flags, int) else False
        if mode and any(c in mode for c in "wax+"):
            writing = True
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {path!r}")
    elif event in _PATH_EVENTS:
        for i in _PATH_EVENTS[event]:
            if len(args) > i and not _inside(args[i]):
                raise PermissionError(f"sandbox: {event} outside the working directory is not allowed: {args[i]!r}")
    elif event.startswith(_NET):
        raise PermissionError("sandbox: network access is disabled")
    elif event in _BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    elif event == "import" and args[0] in _NO_IMPORT:
        raise ImportError(f"sandbox: importing {args[0]} is not allowed")
    elif event in ("os.kill", "os.killpg") and args[0] not in (_PID, 0):
        raise PermissionError("sandbox: signalling other processes is not allowed")


sys.addaudithook(_hook)
del os, resource
with open("main.py", encoding="utf-8") as _f:
    _code = compile(_f.read(), "main.py", "exec")
del _f
try:
    exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit:
    raise
except BaseException as _e:
    # Drop this bootstrap's frame so the traceback starts at the user's main.py.
    import traceback
    traceback.print_exception(type(_e), _e, _e.__traceback__.tb_next)
    sys.exit(1)
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class SandboxConfig:
    """Limits of one sandboxed run; `build()` gives the `PythonSandbox`.

    >>> SandboxConfig(timeout_s=2.0, memory_mb=256).build().config.memory_mb
    256
    """

    #: wall-clock seconds before the process group is killed
    timeout_s: float = 10.0
    #: CPU seconds (RLIMIT_CPU); a busy loop is stopped at min(timeout_s, cpu_s)
    cpu_s: int = 10
    #: address-space limit in MiB (RLIMIT_AS); 0 disables it
    memory_mb: int = 1024
    #: the largest file the code may write, in MiB (RLIMIT_FSIZE)
    max_file_mb: int = 64
    #: characters kept of stdout and of stderr each; the rest is cut with a marker
    max_output_chars: int = 4000
    #: run in a new empty network namespace when `unshare -n` works here (root or user namespaces)
    network_namespace: bool = True
    #: the interpreter; defaults to the one running this process (same installed packages)
    python: str = sys.executable

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"SandboxConfig.timeout_s must be > 0, got {self.timeout_s!r}")
        if self.cpu_s < 1:
            raise ValueError(f"SandboxConfig.cpu_s must be >= 1, got {self.cpu_s!r}")
        if self.memory_mb < 0 or self.max_file_mb < 1 or self.max_output_chars < 1:
            raise ValueError(
                "SandboxConfig.memory_mb must be >= 0, max_file_mb >= 1 and max_output_chars >= 1"
            )

    def build(self) -> PythonSandbox:
        return PythonSandbox(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class SandboxResult:
    """What one run did. `error` says why it failed (timeout, limit, exception), else None."""

    stdout: str
    stderr: str
    exit_code: int | None
    error: str | None
    truncated: bool
    duration_s: float
    network_isolated: bool

    @property
    def ok(self) -> bool:
        return self.error is None


def _read_output(path: str, limit: int, *, keep: str) -> tuple[str, bool]:
    """`limit` characters of a captured stream (its head or its tail), and whether any were cut.

    stdout keeps its head (what the code printed first); stderr keeps its tail, where a
    traceback's last line says what went wrong.
    """
    # Bytes are read with headroom for multi-byte characters; the cut is made on characters.
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if keep == "tail":
            f.seek(max(0, size - limit * 4))
        data = f.read(limit * 4)
    text = data.decode("utf-8", errors="replace")
    if len(text) <= limit and len(data) == size:
        return text, False
    if keep == "tail":
        return "[output truncated] ...\n" + text[-limit:], True
    return text[:limit] + "\n... [output truncated]", True


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """The command prefix that puts the child in an empty network namespace, or () if none works."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    candidates = [(exe, "-n")] if os.geteuid() == 0 else []
    candidates.append((exe, "-r", "-n"))
    for prefix in candidates:
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return ()


_SIGNALS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
    signal.SIGSEGV: "crashed (segmentation fault; often the memory limit)",
    signal.SIGKILL: "killed",
}


class PythonSandbox:
    """Runs code strings in fresh child processes under `SandboxConfig` limits; thread-safe.

    >>> r = PythonSandbox(SandboxConfig(timeout_s=1)).run("while True: pass")  # doctest: +SKIP
    >>> r.error  # doctest: +SKIP
    'wall-clock timeout after 1s'
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()

    def run(self, code: str) -> SandboxResult:
        """Run `code` as `main.py` in a new temporary directory and return what happened."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a string, got {type(code).__name__}")
        cfg = self.config
        prefix = _unshare_prefix() if cfg.network_namespace else ()
        with tempfile.TemporaryDirectory(prefix="kag-sandbox-") as top:
            work = os.path.join(top, "work")
            os.mkdir(work)
            with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
                f.write(code)
            out_path, err_path = os.path.join(top, "stdout"), os.path.join(top, "stderr")
            env = {
                "PATH": "/usr/bin:/bin",
                "HOME": work,
                "TMPDIR": work,
                "LANG": "C.UTF-8",
                "PYTHONIOENCODING": "utf-8",
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
            }
            argv = [
                *prefix,
                cfg.python,
                "-I",
                "-B",
                "-c",
                _BOOTSTRAP,
                str(cfg.cpu_s),
                str(cfg.memory_mb * 2**20),
                str(cfg.max_file_mb * 2**20),
            ]
            start = time.monotonic()
            timed_out = False
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    argv,
                    cwd=work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
                try:
                    proc.wait(timeout=cfg.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    self._kill(proc)
                finally:
                    if proc.poll() is None:
                        self._kill(proc)
            duration = time.monotonic() - start
            stdout, cut_out = _read_output(out_path, cfg.max_output_chars, keep="head")
            stderr, cut_err = _read_output(err_path, cfg.max_output_chars, keep="tail")
        code_ = proc.returncode
        error: str | None = None
        if timed_out:
            error = f"wall-clock timeout after {cfg.timeout_s:g}s"
        elif code_ is not None and code_ < 0:
            sig = -code_
            error = _SIGNALS.get(sig, f"killed by signal {sig}")
        elif "MemoryError" in stderr:
            error = f"memory limit exceeded ({cfg.memory_mb} MiB)"
        elif code_:
            last = [line for line in stderr.strip().splitlines() if line.strip()]
            error = f"exit code {code_}" + (f": {last[-1].strip()}" if last else "")
        return SandboxResult(
            stdout=stdout,
            stderr=stderr,
            exit_code=code_,
            error=error,
            truncated=cut_out or cut_err,
            duration_s=duration,
            network_isolated=bool(prefix),
        )

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def python_tool(config: SandboxConfig | None = None) -> FunctionTool:
    """The `python` tool: runs code in a fresh sandboxed process and returns its output as JSON.

    >>> python_tool()("print(1 + 1)")  # doctest: +SKIP
    Observation(content='{"stdout":"2\\n","stderr":"","exit_code":0}', ok=True, ...)
    """
    sandbox = PythonSandbox(config or SandboxConfig())
    limits = sandbox.config

    def python(code: str) -> Observation:
        result = sandbox.run(code)
        out: dict[str, Any] = {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exit_code": result.exit_code,
        }
        if result.error:
            out["error"] = result.error
        return Observation(content=compact_json(out), ok=result.ok, error=result.error)

    description = (
        "Run Python 3 code in a fresh sandbox and return its stdout and stderr; print what you "
        f"need to see. Limits: {limits.timeout_s:g}s wall clock, {limits.cpu_s}s CPU, "
        f"{limits.memory_mb} MiB memory, no network, files only in the working directory."
    )
    record = Tool.create(
        name="python",
        version="1",
        description=description,
        kind="sandbox",
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string", "description": "the Python source to run"}},
            "required": ["code"],
            "additionalProperties": False,
        },
    )
    return FunctionTool(record, python)
