"""Versioned Cypher migrations for the Neo4j backend: `migrations/neo4j/V0001__name.cypher`.

Files are applied in version order, each statement in its own auto-commit transaction (Neo4j
refuses schema and data changes in one transaction), and recorded in the graph as
`(:KagMigration {version, name, checksum, applied_at})`. Re-running applies nothing; a file whose
checksum differs from the recorded one stops the upgrade before anything runs.

>>> [m.name for m in load_migrations(MIGRATIONS_DIR)][:1]  # doctest: +SKIP
['V0001__constraints']
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from kag.stores.base import StoreError

__all__ = [
    "MIGRATIONS_DIR",
    "Migration",
    "load_migrations",
    "apply_migrations",
    "applied_migrations",
]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations" / "neo4j"
_FILE_NAME = re.compile(r"^V(\d{4})__([A-Za-z0-9_]+)\.cypher$")
# The bookkeeping constraint is not in a file: it must exist before the first file is recorded.
_BOOTSTRAP = (
    "CREATE CONSTRAINT kag_migration_version IF NOT EXISTS "
    "FOR (m:KagMigration) REQUIRE m.version IS UNIQUE"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One migration file: `V0001__constraints.cypher` -> version 1, name `V0001__constraints`."""

    version: int
    name: str
    path: Path
    checksum: str
    statements: tuple[str, ...]


def split_statements(text: str) -> list[str]:
    """Cypher statements of a migration file: `//` comment lines dropped, split at `;` line ends.

    >>> split_statements("// c\\nCREATE INDEX a IF NOT EXISTS FOR (n:A) ON (n.x);\\n")
    ['CREATE INDEX a IF NOT EXISTS FOR (n:A) ON (n.x)']
    """
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    parts = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return [" ".join(p.split()) for p in parts if p.strip()]


def load_migrations(directory: Path | str = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of `directory`, in version order; misnamed or duplicate files are errors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StoreError(f"Neo4j migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".cypher":
            continue
        match = _FILE_NAME.match(path.name)
        if not match:
            raise StoreError(f"{path}: migration files must be named V0001__what_it_does.cypher")
        version = int(match.group(1))
        if version in found:
            raise StoreError(
                f"{path}: version {version} is also used by {found[version].path.name}"
            )
        data = path.read_bytes()
        try:
            statements = tuple(split_statements(data.decode("utf-8")))
        except UnicodeDecodeError as err:
            raise StoreError(f"{path}: not UTF-8 ({err})") from None
        if not statements:
            raise StoreError(f"{path}: no Cypher statement in the file")
        found[version] = Migration(
            version=version,
            name=path.stem,
            path=path,
            checksum=hashlib.sha256(data).hexdigest(),
            statements=statements,
        )
    return [found[v] for v in sorted(found)]


def applied_migrations(session) -> dict[int, tuple[str, str]]:
    """version -> (name, checksum) of the migrations recorded in the graph."""
    result = session.run(
        "MATCH (m:KagMigration) RETURN m.version AS v, m.name AS n, m.checksum AS c"
    )
    return {r["v"]: (r["n"], r["c"]) for r in result}


def apply_migrations(session, directory: Path | str = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations of `directory` through `session`; return their names.

    Refuses (StoreError, nothing run) when an applied file changed or is missing.
    """
    migrations = load_migrations(directory)
    by_version = {m.version: m for m in migrations}
    session.run(_BOOTSTRAP).consume()
    applied = applied_migrations(session)
    for version, (name, checksum) in sorted(applied.items()):
        known = by_version.get(version)
        if known is None:
            raise StoreError(
                f"the graph has migration {name} applied, which is not in {Path(directory)}; "
                "this kag is older than the graph: upgrade kag"
            )
        if known.checksum != checksum:
            raise StoreError(
                f"migration file {known.path} changed after it was applied to this graph "
                f"(recorded sha256 {checksum[:12]}..., file now {known.checksum[:12]}...); "
                "restore the file and put the change in a new V####__name.cypher migration"
            )
    done: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            try:
                session.run(statement).consume()
            except Exception as err:  # the driver's error names the Cypher problem
                raise StoreError(
                    f"{migration.path}: statement failed: {statement!r}: {err}"
                ) from err
        session.run(
            "MERGE (m:KagMigration {version: $version}) "
            "SET m.name = $name, m.checksum = $checksum, m.applied_at = $applied_at",
            version=migration.version,
            name=migration.name,
            checksum=migration.checksum,
            applied_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        ).consume()
        done.append(migration.name)
    return done
