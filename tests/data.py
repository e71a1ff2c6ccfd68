"""Where the tests find the real data sets (FB15k-237, MetaQA, BFCL): one place.

`$KAG_DATA_DIR` when set, else `../shared/data` next to the repository. Test modules use
`DATA_DIR` (paths built at import, e.g. for `parametrize`) or the `data_dir` fixture of
`tests/conftest.py`; when the directory is absent, collecting them fails with one line that
says where it looked and how to point the tests elsewhere.

>>> DATA_DIR / "fb15k-237" / "train.tsv"  # doctest: +SKIP
PosixPath('/work/shared/data/fb15k-237/train.tsv')
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["find_data_dir"]  # and DATA_DIR, looked up on import (`__getattr__`)

REPO = Path(__file__).resolve().parents[1]


def find_data_dir() -> Path:
    """The data directory; a clear test failure (not a traceback) when it is missing."""
    path = Path(os.environ.get("KAG_DATA_DIR") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        where = "KAG_DATA_DIR" if os.environ.get("KAG_DATA_DIR") else "the default"
        pytest.fail(
            f"test data directory {path} ({where}) does not exist: set KAG_DATA_DIR to the "
            "directory that holds fb15k-237/, metaqa/ and bfcl/",
            pytrace=False,
        )
    return path


def __getattr__(name: str) -> Path:
    # `from tests.data import DATA_DIR` looks the directory up then, so merely importing this
    # module (as conftest does) never fails a run that needs no data
    if name == "DATA_DIR":
        return find_data_dir()
    raise AttributeError(name)
