"""Local Hugging Face checkpoints, as every package sees them before loading one.

| function          | what it tells                                                    |
|-------------------|------------------------------------------------------------------|
| `check_model_dir` | the directory as a Path, or a ValueError saying what to pass     |
| `saved_dtype`     | the dtype the weights were saved in (`config.json`), or None      |

The bottom of the stack: `trainer` and `selfplay` both import it; it imports neither (nor torch).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["check_model_dir", "saved_dtype"]


def check_model_dir(model_dir: str | Path) -> Path:
    """`model_dir` as a Path, if it holds a Hugging Face model; else a ValueError saying what to pass.

    Checked before transformers or vLLM read it, which would take a missing path for a hub id.

    >>> check_model_dir("/nonexistent")
    Traceback (most recent call last):
    ValueError: model directory /nonexistent has no config.json: pass a local Hugging Face model directory (`kag model tiny DIR` builds one)
    """
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"model directory {path} has no config.json: pass a local Hugging Face model "
            "directory (`kag model tiny DIR` builds one)"
        )
    return path


def saved_dtype(model_dir: str | Path) -> str | None:
    """The dtype a checkpoint was saved in: `config.json`'s `dtype` (or older `torch_dtype`).

    None when the config names none. Engines serve a model at this dtype unless told otherwise:
    vLLM's `dtype="auto"` would downcast a float32 checkpoint to bfloat16 on CPU.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / "config.json").write_text('{"torch_dtype": "float32"}')
    >>> saved_dtype(d)
    'float32'
    """
    path = check_model_dir(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the model config: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the model config is not a JSON object")
    dtype = config.get("dtype") or config.get("torch_dtype")
    if dtype is None:
        return None
    if not isinstance(dtype, str):
        raise ValueError(f"{path}: 'dtype' must be a string such as 'float32', got {dtype!r}")
    return dtype.removeprefix("torch.")
