"""Summary and argument descriptions of a docstring (Google `Args:` sections or Sphinx `:param:`).

>>> parse_docstring("Add.\\n\\nArgs:\\n    a: first.")
('Add.', {'a': 'first.'})
"""

from __future__ import annotations

import inspect
import re

__all__ = ["parse_docstring"]

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?)\s*:\s*$"
)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Summary and per-argument descriptions of a Google- or Sphinx-style docstring.

    >>> parse_docstring("Add.\\n\\nArgs:\\n    a: first.\\n    b: second.")
    ('Add.', {'a': 'first.', 'b': 'second.'})
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for raw in lines:
        line = raw.strip()
        header = _SECTION.match(line)
        sphinx = _SPHINX_PARAM.match(line)
        if header:
            section, current = header.group(1).lower(), None
        elif sphinx:
            section, current = "args", sphinx.group(1)
            params[current] = sphinx.group(2).strip()
        elif line.startswith(":"):
            section, current = "other", None
        elif section is None:
            if line or summary:
                summary.append(line)
        elif section in ("args", "arguments", "parameters", "params") and line:
            match = _ARG_LINE.match(line)
            if match and raw.startswith((" ", "\t")) and len(raw) - len(raw.lstrip()) <= 4:
                current = match.group(1).lstrip("*")
                params[current] = match.group(2).strip()
            elif current:
                params[current] = f"{params[current]} {line}".strip()
    text = "\n".join(summary).strip()
    return " ".join(text.split("\n\n")[0].split()), params
