"""`kag query trajectories|datasets|models|single-policy-tasks`: provenance questions (kag.provenance)."""

from __future__ import annotations

import argparse
import json

from kag.cli import add_graph_argument

__all__ = ["main"]

_SUBCOMMANDS = ("trajectories", "datasets", "models", "single-policy-tasks")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kag query", description="Provenance queries.")
    sub = parser.add_subparsers(dest="what", required=True, metavar="|".join(_SUBCOMMANDS))
    t = sub.add_parser("trajectories", help="trajectories by entity, tool, verifier, run, verdict")
    t.add_argument("--touched-entity", default=None)
    t.add_argument("--used-tool", default=None, help="name@version, or a name with one version")
    t.add_argument("--failed-verifier", default=None)
    t.add_argument("--passed-verifier", default=None)
    t.add_argument("--run", dest="run_id", default=None)
    t.add_argument("--verdict", default=None, help="accepted or rejected")
    t.add_argument("--policy", default=None)
    t.add_argument("--limit", type=int, default=None)
    d = sub.add_parser("datasets", help="datasets that contain trajectories of a run")
    d.add_argument("--run", dest="run_id", required=True)
    m = sub.add_parser("models", help="models trained on data that touched an entity")
    m.add_argument("--touched-entity", dest="entity_id", required=True)
    sub.add_parser("single-policy-tasks", help="tasks whose accepted trajectories share a policy")
    for p in (t, d, m, *[sub.choices["single-policy-tasks"]]):
        add_graph_argument(p)
        p.add_argument("--json", action="store_true", help="print one JSON object")
    args = vars(parser.parse_args(argv))
    what, url, as_json = args.pop("what"), args.pop("graph"), args.pop("json")
    import kag
    from kag import provenance

    with kag.open(url, upgrade=False) as graph:  # a read: never creates a graph
        if what == "trajectories":
            result: object = provenance.trajectories(graph.store, **args)
        elif what == "datasets":
            result = provenance.datasets_with_run(graph.store, **args)
        elif what == "models":
            result = provenance.models_touching(graph.store, **args)
        else:
            result = provenance.single_policy_tasks(graph.store)
    if as_json:
        print(json.dumps({what: result}, sort_keys=True))
    elif isinstance(result, dict):
        for task, policy in result.items():
            print(f"{task}\t{policy}")
    else:
        for row in result:
            print(row if isinstance(row, str) else json.dumps(row, sort_keys=True))
    return 0
