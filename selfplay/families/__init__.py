"""Task families beyond multi-hop search: each module proposes, solves, verifies and grows its own.

| module                       | family    | what its tasks need                                        |
|------------------------------|-----------|------------------------------------------------------------|
| `selfplay.families.compute`  | `compute` | arithmetic, comparison or aggregation over numeric facts    |
"""
