"""The model-directory check and the saved dtype, shared by trainer and selfplay."""

from __future__ import annotations

import json

import pytest

from checkpoints import check_model_dir, saved_dtype


def test_a_directory_without_config_json_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has no config.json.*kag model tiny DIR"):
        check_model_dir(tmp_path)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"torch_dtype": "float32"}, "float32"),
        ({"dtype": "bfloat16", "torch_dtype": "float32"}, "bfloat16"),
        ({"torch_dtype": "torch.float16"}, "float16"),
        ({}, None),
    ],
)
def test_saved_dtype_reads_the_dtype_the_checkpoint_was_saved_in(tmp_path, config, expected):
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert saved_dtype(tmp_path) == expected


def test_saved_dtype_names_the_file_of_a_broken_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: cannot read the model config"):
        saved_dtype(tmp_path)


def test_the_tiny_model_records_float32(tmp_path):
    from trainer.models import build_tiny_model

    build_tiny_model(tmp_path / "tiny")
    assert saved_dtype(tmp_path / "tiny") == "float32"


def test_the_vllm_server_serves_a_model_at_the_dtype_it_was_saved_in(tmp_path):
    from selfplay.vllm_server import VLLMServer, VLLMServerConfig

    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    command = VLLMServer(tmp_path).command()
    assert command[command.index("--dtype") + 1] == "float32"
    override = VLLMServer(tmp_path, config=VLLMServerConfig(dtype="bfloat16")).command()
    assert override[override.index("--dtype") + 1] == "bfloat16"
