"""A real Neo4j 5.26 server on this machine, for tests and for users without one.

The server is the Java launcher in `neo4j-launcher/` (embedded Neo4j Community with the Bolt
connector), built with Maven on first use. It listens on a free loopback port with a generated
password and keeps its data in a temporary directory (or `data_dir`).

>>> with LauncherConfig().start() as server:  # doctest: +SKIP
...     print(server.url)
neo4j://neo4j:Kx...@127.0.0.1:40123

From the shell (`make neo4j`):
`python -m kag.neo4j_server [--data DIR] [--port N] [--set db.transaction.timeout=10m ...]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["LAUNCHER_DIR", "LauncherConfig", "Neo4jServer", "build_launcher", "main"]

LAUNCHER_DIR = Path(__file__).resolve().parents[1] / "neo4j-launcher"
_READY = "KAG_NEO4J_READY "


#: JVM options that pick a garbage collector; one in `jvm_options` replaces the default
_GC_OPTIONS = frozenset(
    f"-XX:+Use{name}GC" for name in ("Serial", "Parallel", "G1", "Z", "Shenandoah", "Epsilon")
)


def _check_setting(key: str, value: str) -> None:
    """Refuse a neo4j.conf setting that one `key=value` line cannot hold."""
    if not key or any(c in key for c in "=\n\r#") or key != key.strip():
        raise ValueError(f"LauncherConfig.settings: {key!r} is not a neo4j.conf setting name")
    if any(c in value for c in "\n\r"):
        raise ValueError(f"LauncherConfig.settings: the value of {key} spans lines: {value!r}")


class LauncherError(RuntimeError):
    """The launcher could not be built or started; the message says what to install or check."""


def _launcher_jar(launcher_dir: Path) -> Path:
    return launcher_dir / "target" / "kag-neo4j-launcher.jar"


def build_launcher(launcher_dir: Path = LAUNCHER_DIR, *, force: bool = False) -> Path:
    """Build the launcher with Maven unless its jar is newer than its sources; return the jar.

    Needs `mvn` and a JDK 17+ on PATH; Maven downloads Neo4j's artifacts from Maven Central once.
    """
    jar = _launcher_jar(launcher_dir)
    sources = [launcher_dir / "pom.xml", *(launcher_dir / "src").rglob("*.java")]
    built = jar.exists() and (launcher_dir / "target" / "lib").is_dir()
    if not force and built and jar.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LauncherError(
            "Maven (`mvn`) is not installed, and it is needed to build the Neo4j launcher in "
            f"{launcher_dir}; install Maven and a JDK 17 (apt-get install maven openjdk-17-jdk-headless), "
            "or point KAG_NEO4J_URI at an existing server"
        )
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(launcher_dir / "pom.xml"), "package"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not jar.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise LauncherError(
            f"building the Neo4j launcher failed (mvn exit {proc.returncode}):\n{tail}"
        )
    jar.touch()
    return jar


@dataclass(frozen=True, kw_only=True, slots=True)
class LauncherConfig:
    """How to start the server; `LauncherConfig(data_dir=path).start()` gives a `Neo4jServer`.

    data_dir: where the database lives; None for a temporary directory removed at `stop()`.
    port: Bolt port on 127.0.0.1; 0 (the default) picks a free one.
    password: None generates one (Neo4j wants at least 8 characters).
    heap: JVM heap (`-Xmx`), kept modest because tests share the machine.
    pagecache: Neo4j's page cache for the store files.
    startup_timeout: seconds to wait for the ready line.
    jvm_options: more options for the `java` command, e.g. `("-XX:+UseG1GC",)`; one that
        picks a garbage collector replaces the default, ParallelGC.
    settings: neo4j.conf settings as `(key, value)` pairs, e.g.
        `(("db.relationship_grouping_threshold", "100"),)`; the launcher's own options (port,
        authentication, page cache) take precedence.
    """

    data_dir: Path | None = None
    port: int = 0
    password: str | None = None
    heap: str = "1g"
    pagecache: str = "256m"
    startup_timeout: float = 180.0
    jvm_options: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()
    launcher_dir: Path = LAUNCHER_DIR

    def __post_init__(self) -> None:
        for key, value in self.settings:
            _check_setting(str(key), str(value))

    def start(self) -> Neo4jServer:
        jar = build_launcher(self.launcher_dir)
        java = shutil.which("java")
        if java is None:
            raise LauncherError("Java is not installed; Neo4j 5.26 needs a JDK or JRE 17 on PATH")
        log_dir = Path(tempfile.mkdtemp(prefix="kag-neo4j-log-"))
        cmd = [
            java,
            f"-Xmx{self.heap}",
            # throughput collector: FB15k-237 imports ran 10% faster than with G1 on 2 cores,
            # and its pauses stay short at these heap sizes
            *(() if _GC_OPTIONS.intersection(self.jvm_options) else ("-XX:+UseParallelGC",)),
            "-XX:+ExitOnOutOfMemoryError",
            # what Neo4j's own start script opens, for its off-heap page cache and direct I/O
            "--add-opens=java.base/java.nio=ALL-UNNAMED",
            "--add-opens=java.base/java.io=ALL-UNNAMED",
            "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
            "--add-opens=java.base/java.lang=ALL-UNNAMED",
            "--enable-native-access=ALL-UNNAMED",
            "-Dlog4j2.disable.jmx=true",
            *self.jvm_options,
            "-jar",
            str(jar),
            "--port",
            str(self.port),
            "--pagecache",
            self.pagecache,
            "--exit-on-stdin-eof",
        ]
        if self.data_dir is not None:
            cmd += ["--data", str(Path(self.data_dir).resolve())]
        if self.password is not None:
            cmd += ["--password", self.password]
        if self.settings:
            conf = log_dir / "neo4j.conf"
            conf.write_text("".join(f"{k}={v}\n" for k, v in self.settings))
            cmd += ["--config", str(conf)]
        stdout = (log_dir / "stdout.log").open("wb")
        stderr = (log_dir / "stderr.log").open("wb")
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, start_new_session=True
        )
        stdout.close()
        stderr.close()
        server = Neo4jServer(process=proc, log_dir=log_dir)
        try:
            server._wait_ready(self.startup_timeout)
        except BaseException:
            server.kill()
            raise
        return server


class Neo4jServer:
    """A running launcher: `uri`, `user`, `password`, `url` (with credentials), `stop()`, `kill()`."""

    def __init__(self, *, process: subprocess.Popen, log_dir: Path) -> None:
        self.process = process
        self.log_dir = log_dir
        self.uri = ""
        self.user = ""
        self.password = ""
        self.home = ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        out = self.log_dir / "stdout.log"
        while time.monotonic() < deadline:
            for line in out.read_text(errors="replace").splitlines():
                if line.startswith(_READY):
                    fields = line[len(_READY) :].split()
                    self.uri = fields[0]
                    values = dict(f.split("=", 1) for f in fields[1:])
                    self.user, self.password, self.home = (
                        values["user"],
                        values["password"],
                        values["home"],
                    )
                    return
            if self.process.poll() is not None:
                raise LauncherError(
                    f"the Neo4j launcher exited with code {self.process.returncode} before it was ready:\n"
                    + (self._launcher_lines() or self._log_tail())
                )
            time.sleep(0.1)
        raise LauncherError(
            f"the Neo4j launcher was not ready after {timeout:.0f} s:\n{self._log_tail()}"
        )

    def _launcher_lines(self) -> str:
        """The launcher's own one-line messages (what failed and why), without stack traces."""
        path = self.log_dir / "stderr.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(
            line for line in text.splitlines() if line.startswith("kag-neo4j-launcher:")
        )

    def _log_tail(self) -> str:
        text = ""
        for name in ("stdout.log", "stderr.log"):
            path = self.log_dir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.strip().splitlines()[-20:])

    @property
    def port(self) -> int:
        return int(self.uri.rsplit(":", 1)[1])

    def url_for(self, scheme: str = "neo4j") -> str:
        """The graph URL with credentials, e.g. `neo4j://neo4j:pw@127.0.0.1:40123`."""
        return f"{scheme}://{quote(self.user, safe='')}:{quote(self.password, safe='')}@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.url_for("neo4j")

    def stop(self, timeout: float = 60.0) -> None:
        """Shut the database down cleanly (closing stdin asks the launcher to exit)."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def kill(self) -> None:
        """Kill the server at once, as a crash would (no shutdown; the data dir needs recovery)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def __enter__(self) -> Neo4jServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kag.neo4j_server",
        description="Start a local Neo4j 5.26 server for KAG (Ctrl-C stops it).",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="data directory (default: temporary)"
    )
    parser.add_argument(
        "--port", type=int, default=7687, help="Bolt port (default 7687; 0 = any free port)"
    )
    parser.add_argument(
        "--password", default=None, help="password of user neo4j (default: generated)"
    )
    parser.add_argument("--heap", default="1g", help="JVM heap (default 1g)")
    parser.add_argument("--pagecache", default="256m", help="page cache (default 256m)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a neo4j.conf setting, e.g. --set db.transaction.timeout=10m (repeatable)",
    )
    args = parser.parse_args(argv)
    settings = []
    for pair in args.set:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            parser.error(f"--set wants KEY=VALUE, got {pair!r}")
        settings.append((key, value))
    try:
        server = LauncherConfig(
            data_dir=args.data,
            port=args.port,
            password=args.password,
            heap=args.heap,
            pagecache=args.pagecache,
            settings=tuple(settings),
        ).start()
    except (LauncherError, ValueError) as err:
        print(f"kag neo4j: error: {err}", file=sys.stderr)
        return 1
    print(f"Neo4j is ready at {server.uri} (user {server.user}, password {server.password})")
    print(f"data: {server.home}")
    print("use it with:")
    print(f"  export KAG_GRAPH='{server.url}'")
    print("  kag db upgrade")
    print("Ctrl-C stops the server.", flush=True)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print("stopping Neo4j...", flush=True)
    server.stop()
    return (
        0 if server.process.returncode in (0, None, -signal.SIGTERM) else server.process.returncode
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
