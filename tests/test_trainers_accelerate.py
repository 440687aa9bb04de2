"""Multi-process training: CAISFTTrainer under ``accelerate launch`` with 2 processes (DDP over gloo on CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "sft_ddp.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_qlora_sft_trains_on_two_processes(tiny_model_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(SCRIPT),
        str(tiny_model_dir),
        str(tmp_path / "out"),
    ]
    environment = os.environ | {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "cai_training.json").read_text())
    assert record["hardware"]["num_processes"] == 2
    assert record["effective_batch_size"] == 2 * 2, "the cpu profile's 2 sequences per process, on 2 processes"
    assert record["global_step"] == 3 and record["method"] == "qlora"
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "constitution.yaml").is_file()


@pytest.mark.parametrize(
    ("name", "distributed_type"), [("ddp", "MULTI_GPU"), ("deepspeed_zero3", "DEEPSPEED"), ("fsdp", "FSDP")]
)
def test_example_accelerate_configs_load(name, distributed_type):
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).parents[1] / "examples" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert str(config.distributed_type).endswith(distributed_type)
    assert config.num_processes == 2 and config.mixed_precision == "bf16"
