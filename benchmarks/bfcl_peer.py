"""Run BFCL's own AST checker (the `bfcl-eval` package) on cases read from a JSON Lines file.

Not a benchmark of its own: `benchmarks/bfcl_agreement.py` runs it with the Python of an
environment that has `bfcl-eval` (`--peer-python`), since the package is far too heavy for the
project's own one (it pulls torch and a dozen API clients). Each input line is `{"functions", "calls", "answers",
"category", "underscore_to_dot"}`; each output line is `{"valid": bool, "error_type": str}`.

    python benchmarks/bfcl_peer.py cases.jsonl verdicts.jsonl
"""

from __future__ import annotations

import json
import sys

from bfcl_eval.constants.enums import Language
from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

# a model whose names BFCL leaves as they are, and one whose dots it writes as "_"
MODELS = {False: "gorilla-openfunctions-v2", True: "gpt-4.1-2025-04-14-FC"}


def main(source: str, target: str) -> None:
    with open(source, encoding="utf-8") as cases, open(target, "w", encoding="utf-8") as out:
        for line in cases:
            case = json.loads(line)
            try:
                result = ast_checker(
                    case["functions"],
                    case["calls"],
                    case["answers"],
                    Language.PYTHON,
                    case["category"],
                    MODELS[bool(case.get("underscore_to_dot"))],
                )
                verdict = {
                    "valid": bool(result["valid"]),
                    "error_type": result.get("error_type", ""),
                }
            except Exception as err:  # BFCL raises on some malformed calls; record it as a verdict
                verdict = {"valid": None, "error_type": f"raised {type(err).__name__}: {err}"}
            out.write(json.dumps(verdict) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
