"""How often our BFCL checker (`selfplay.bfcl.check_calls`) agrees with BFCL's own (`bfcl-eval`).

For every row of the six BFCL sets in shared data it builds the gold calls, the gold calls
reversed, one wrong answer of each kind (`selfplay.bfcl.wrong_calls`) and the gold calls with
dots written as underscores, then asks both checkers. `bfcl-eval` is far too heavy for the
project's environment (it pulls its own torch, transformers and a dozen API clients), so it runs
in a Python of its own, given with `--peer-python` (`benchmarks/bfcl_peer.py` reads the cases).

    python benchmarks/bfcl_agreement.py --peer-python /tmp/bfclvenv/bin/python

Prints `RESULT {"metric": "bfcl_checker_agreement", ...}`: the share of cases where the verdicts
agree (baseline: bfcl-eval's own verdicts, ratio = the share), and the first disagreements.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BFCL = REPO.parent / "shared" / "data" / "bfcl"
CATEGORIES = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
)


def cases() -> list[dict[str, Any]]:
    """Gold, reversed, wrong and renamed calls of every row."""
    from kag.bfclfiles import read_bfcl_files
    from selfplay.bfcl import gold_calls, wrong_calls

    out = []
    for category in CATEGORIES:
        for row in read_bfcl_files([BFCL / f"BFCL_v4_{category}.json"]):
            base = {
                "functions": list(row.functions),
                "answers": list(row.ground_truth),
                "category": row.category,
            }
            gold = gold_calls(row.functions, row.ground_truth)
            variants = [
                gold,
                gold[::-1],
                *wrong_calls(row.functions, row.ground_truth, gold).values(),
            ]
            out += [{**base, "calls": calls} for calls in variants]
            underscored = [{n.replace(".", "_"): a for n, a in c.items()} for c in gold]
            out.append({**base, "calls": underscored, "underscore_to_dot": True})
            if underscored != gold:
                out.append({**base, "calls": underscored})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="a Python that has bfcl-eval")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from selfplay.bfcl import check_calls

    built = cases()
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "cases.jsonl", Path(tmp) / "verdicts.jsonl"
        source.write_text("".join(json.dumps(c) + "\n" for c in built), encoding="utf-8")
        peer = Path(__file__).with_name("bfcl_peer.py")
        subprocess.run([args.peer_python, str(peer), str(source), str(target)], check=True)
        theirs = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    if len(theirs) != len(built):
        raise SystemExit(f"bfcl-eval gave {len(theirs)} verdicts for {len(built)} cases")
    disagreements = []
    for case, verdict in zip(built, theirs, strict=True):
        ours = check_calls(
            case["functions"],
            case["calls"],
            case["answers"],
            category=case["category"],
            underscore_to_dot=case.get("underscore_to_dot", False),
        )
        if ours.valid != verdict["valid"]:
            disagreements.append({"calls": case["calls"], "ours": ours.valid, **verdict})
    share = 1 - len(disagreements) / len(built)
    for d in disagreements[:5]:
        print("disagreement:", json.dumps(d)[:300])
    result = {
        "metric": "bfcl_checker_agreement",
        "value": share,
        "unit": "share of cases",
        "baseline": "bfcl-eval ast_checker (its own verdicts)",
        "baseline_value": 1.0,
        "ratio": share,
        "cases": len(built),
        "disagreements": len(disagreements),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
