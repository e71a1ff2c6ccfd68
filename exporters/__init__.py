"""Exporters: verified trajectories from the graph to Parquet datasets (DESIGN section 5), with lineage.

| module      | offers                                                          |
|-------------|-----------------------------------------------------------------|
| `exporter`  | `export(kind, out_dir, ...)`: the whole pipeline                |
| `select`    | `Selection` filters, streaming readers over any store           |
| `dedup`     | `DedupConfig`: exact messages, walk signatures, cap per domain  |
| `splits`    | `SplitConfig`: splits by hash of the task id                    |
| `writer`    | sharded zstd Parquet written aside, then renamed into place     |
| `manifest`  | `manifest.json` and `verify_dataset`                            |
| `card`      | `README.md` dataset card with length histograms                 |
| `lineage`   | Dataset node, CONTAINS and PRODUCED_BY edges                    |
| `snapshot`  | `export_graph` / `import_graph`: lossless Parquet graph snapshot|

>>> import exporters
>>> exporters.export("sft", "out/sft", graph="sqlite:///kag.db",
...                  selection=exporters.Selection(domain="film", min_turns=2))  # doctest: +SKIP
"""

from exporters.dedup import DedupConfig
from exporters.exporter import EmptySelectionError, ExportResult, export
from exporters.manifest import verify_dataset
from exporters.rows import OPDConfig
from exporters.schema import DATASET_KINDS, SCHEMA_VERSION, dataset_schema
from exporters.select import Selection
from exporters.splits import SplitConfig
from exporters.writer import WriterConfig

__all__ = [
    "export",
    "ExportResult",
    "EmptySelectionError",
    "Selection",
    "DedupConfig",
    "SplitConfig",
    "WriterConfig",
    "OPDConfig",
    "verify_dataset",
    "dataset_schema",
    "DATASET_KINDS",
    "SCHEMA_VERSION",
]
