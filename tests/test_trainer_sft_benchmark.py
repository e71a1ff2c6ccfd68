"""The SFT benchmark compares like with like: TRL trains without gradient checkpointing, as ours."""

from __future__ import annotations

import argparse

from benchmarks.sft import trl_changes, trl_config


def test_trl_baseline_does_not_checkpoint_and_reports_every_option_it_changes(tmp_path):
    args = argparse.Namespace(max_seq_len=2048, rows_per_step=2, steps=14)
    changed = trl_changes(trl_config(args, tmp_path / "trl"))
    assert changed["gradient_checkpointing"] is False  # TRL 1.16 checkpoints by default
    assert changed["use_cpu"] is True and changed["bf16"] is False
    assert changed["max_length"] == 2048 and changed["gradient_accumulation_steps"] == 2
    assert changed["lr_scheduler_type"] == "cosine" and changed["save_strategy"] == "no"
    # options left at TRL's defaults (set only to pin them) are not reported as changes
    assert not {"packing_strategy", "max_grad_norm", "report_to", "output_dir"} & changed.keys()
