"""`manifest.json`: what a dataset directory holds, where it came from, and how to check it.

A manifest records the schema version, dataset kind, creation time, the source graph URL (password
removed), the selection filters and dedup/split settings, row counts per split, domain and verdict,
and the sha256 and size of every other file in the directory. `verify_dataset(dir)` re-hashes
them and names any file that is missing, changed or unlisted.

>>> sha256_file  # doctest: +ELLIPSIS
<function sha256_file at ...>
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_NAME",
    "sha256_file",
    "file_entries",
    "write_manifest",
    "read_manifest",
    "verify_dataset",
]

MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _listed_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )


def file_entries(root: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """`{relative path: {"sha256", "bytes"}}` for every file under `root` but the manifest."""
    root = Path(root)
    return {
        rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
        for rel in _listed_files(root)
    }


def write_manifest(root: str | os.PathLike[str], manifest: dict[str, Any]) -> str:
    """Write `manifest` (with `files` filled in from the directory) and return the manifest's sha256."""
    root = Path(root)
    manifest = {**manifest, "files": file_entries(root)}
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (root / MANIFEST_NAME).write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{path} does not exist: {root} is not an exported dataset or snapshot")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def verify_dataset(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file against the manifest; return the manifest, or raise `ValueError` naming the
    files that are missing, changed or not listed."""
    root = Path(root)
    manifest = read_manifest(root)
    listed = manifest.get("files", {})
    problems = []
    for rel, entry in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest")
    problems += [
        f"{rel}: not listed in the manifest" for rel in _listed_files(root) if rel not in listed
    ]
    if problems:
        raise ValueError(f"{root} does not match its manifest: " + "; ".join(problems))
    return manifest
