"""Training MoE causal LMs from the exported Parquet datasets: data, models, losses, SFT, GRPO, OPD."""
