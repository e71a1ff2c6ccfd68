"""The Neo4j launcher's options a user tunes: neo4j.conf settings and JVM options.

These tests start private servers (small heap and page cache) and read back what took effect.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kag.neo4j_server import LauncherConfig, LauncherError
from kag.stores.neo4j import Neo4jStore


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_settings_and_a_garbage_collector_reach_the_server():
    config = LauncherConfig(
        heap="512m",
        pagecache="64m",
        settings=(
            ("db.relationship_grouping_threshold", "77"),
            ("db.transaction.timeout", "7m"),
        ),
        jvm_options=("-XX:+UseSerialGC",),
    )
    server = config.start()
    try:
        store = Neo4jStore(server.url)
        records = store.read(
            "SHOW SETTINGS YIELD name, value WHERE name IN $names RETURN name, value",
            names=["db.relationship_grouping_threshold", "db.transaction.timeout"],
        )
        store.close()
        assert {r["name"]: r["value"] for r in records} == {
            "db.relationship_grouping_threshold": "77",
            "db.transaction.timeout": "7m",
        }
        # a collector named in jvm_options replaces the default (two would not start)
        cmdline = _cmdline(server.process.pid)
        assert "-XX:+UseSerialGC" in cmdline and "-XX:+UseParallelGC" not in cmdline
    finally:
        server.stop()


@pytest.mark.parametrize(
    "setting", [("db.relationship_grouping_threshold", "many"), ("db.no_such_setting", "1")]
)
def test_a_bad_setting_stops_the_start_with_one_line_naming_it(setting):
    config = LauncherConfig(heap="512m", pagecache="64m", settings=(setting,))
    with pytest.raises(LauncherError) as err:
        config.start().stop()
    message = str(err.value)
    assert setting[0] in message and "start-up failed" in message
    assert "\tat org.neo4j" not in message  # the cause, not a stack trace


@pytest.mark.parametrize(
    "pair, wanted",
    [
        (("", "1"), "is not a neo4j.conf setting name"),
        (("a=b", "1"), "is not a neo4j.conf setting name"),
        ((" db.x", "1"), "is not a neo4j.conf setting name"),
        (("db.x", "1\nserver.bolt.enabled=false"), "spans lines"),
    ],
)
def test_settings_that_would_bend_the_config_file_are_refused_at_once(pair, wanted):
    with pytest.raises(ValueError, match=wanted):
        LauncherConfig(settings=(pair,))


def test_the_command_line_refuses_a_setting_without_a_value(capsys):
    from kag.neo4j_server import main

    with pytest.raises(SystemExit) as exit_:
        main(["--set", "db.transaction.timeout"])
    assert exit_.value.code == 2
    assert "--set wants KEY=VALUE" in capsys.readouterr().err
