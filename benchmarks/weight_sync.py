"""Benchmark: new weights into the in-process vLLM engine, in place vs a restart.

GRPO pushes the trainer's weights to the rollout engine after every optimizer step. This
measures, on the tiny Qwen3-MoE (float32, CPU), the seconds of `VLLMEngine.update_weights`
(tensors over vLLM's RPC, loaded in place), of `VLLMEngine.reload()` (in place from the
checkpoint on disk) and of `VLLMEngine.reload(restart=True)` (a new engine), each `--repeats`
times (the best run counts), and checks after each that greedy output follows the weights.

Figures (`RESULT` lines, DESIGN section 7):
- `weight_sync_seconds`: in-place push of the whole state dict; baseline an engine restart.
- `weight_reload_seconds`: in-place reload from the checkpoint; baseline an engine restart.

Run: `python benchmarks/weight_sync.py [--repeats 3] [--model DIR]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/weight_sync.py` puts benchmarks/ first on sys.path, where
# benchmarks/selfplay.py would shadow the selfplay package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: tiny)")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from selfplay.engines.base import SamplingConfig
    from selfplay.engines.vllm import VLLMEngine, VLLMEngineConfig
    from trainer.models import build_tiny_model

    workdir = Path(tempfile.mkdtemp(prefix="kag-weight-sync-"))
    model_dir = args.model or build_tiny_model(workdir / "tiny")
    greedy = SamplingConfig(temperature=0.0, max_tokens=8)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = VLLMEngineConfig(max_model_len=512, kv_cache_gib=0.25)

    started = time.perf_counter()
    engine = VLLMEngine(model_dir, config=config)
    start_seconds = time.perf_counter() - started
    try:
        prompt = engine.tokenizer.encode("The film was directed by")
        original = engine.generate([prompt], sampling=greedy)[0][0].token_ids
        sync, reload, restart = [], [], []
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        for _ in range(args.repeats):
            sync.append(engine.update_weights(model).seconds)
            changed = engine.generate([prompt], sampling=greedy)[0][0].token_ids
            reload.append(engine.reload().seconds)
            restored = engine.generate([prompt], sampling=greedy)[0][0].token_ids
            if changed == original or restored != original:
                raise SystemExit("greedy output did not follow the weights")
        for _ in range(args.repeats):
            restart.append(engine.reload(restart=True).seconds)
    finally:
        engine.close()
    restart_s = min(restart)
    n_bytes = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
    for metric, seconds in (
        ("weight_sync_seconds", min(sync)),
        ("weight_reload_seconds", min(reload)),
    ):
        line = {
            "metric": metric,
            "value": round(seconds, 4),
            "unit": "s",
            "baseline": "engine restart (VLLMEngine.reload(restart=True))",
            "baseline_value": round(restart_s, 2),
            "ratio": round(restart_s / seconds, 1),
            "first_start_s": round(start_seconds, 2),
            "weights_bytes": n_bytes,
            "repeats": args.repeats,
        }
        print("RESULT " + json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
