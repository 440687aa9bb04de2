"""Multi-process training under ``accelerate launch`` with 2 processes (DDP over gloo on CPU): QLoRA SFT, and GRPO
with ``ConstitutionalReward`` ranking each prompt's group whole when TRL splits it between the processes; LoRA SFT
under the example FSDP config where accelerate runs FSDP (2 GPUs); and the example configs' settings."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_on_two_processes(
    script: str, *arguments: str, launch_options: tuple[str, ...] = ("--multi_gpu",), on_cpu: bool = True
) -> None:
    """Run ``script`` on 2 processes; ``on_cpu`` hides the GPUs (DDP over gloo), otherwise one GPU per process."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launch_options,
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
        str(SCRIPTS / script),
        *arguments,
    ]
    environment = os.environ | {"OMP_NUM_THREADS": "1"} | ({"CUDA_VISIBLE_DEVICES": ""} if on_cpu else {})
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_qlora_sft_trains_on_two_processes(tiny_model_dir, tmp_path):
    _launch_on_two_processes("sft_distributed.py", str(tiny_model_dir), str(tmp_path / "out"))
    record = json.loads((tmp_path / "out" / "cai_training.json").read_text())
    assert record["hardware"]["num_processes"] == 2
    assert record["effective_batch_size"] == 2 * 2, "the cpu profile's 2 sequences per process, on 2 processes"
    assert record["global_step"] == 3 and record["method"] == "qlora"
    ranks = [json.loads((tmp_path / "out" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [len(rank["losses"]) for rank in ranks] == [3, 3], "both processes trained to the end"
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "constitution.yaml").is_file()


@pytest.mark.slow
def test_grpo_ranks_each_prompt_group_whole_across_processes(tiny_model_dir, tiny_reward_model_dir, tmp_path):
    from hf_cai.trainers.rewards import RewardModelJudge

    _launch_on_two_processes("grpo_ddp.py", str(tiny_model_dir), str(tiny_reward_model_dir), str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2, "one reward call per process and step"
    judge = RewardModelJudge.load(tiny_reward_model_dir)
    judge.model.float()  # as in the script
    split_probabilities = []
    for first, second in zip(*ranks, strict=True):
        assert len(first["prompts"]) == len(second["prompts"]) == 3
        # The step's completions in TRL's order (rank 0's, then rank 1's), grouped by prompt.
        prompts = first["prompts"] + second["prompts"]
        replies = [completion[0]["content"] for completion in first["completions"] + second["completions"]]
        returned = first["rewards"] + second["rewards"]
        groups: dict[str, list[int]] = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(json.dumps(prompt), []).append(index)
        assert sorted(len(group) for group in groups.values()) == [2, 2, 2]
        for a, b in groups.values():
            r_a, r_b = judge.scores([prompts[a], prompts[b]], [replies[a], replies[b]])
            p = 1 / (1 + math.exp(r_b - r_a))  # the Bradley-Terry probability that a beats b
            assert [returned[a], returned[b]] == pytest.approx([p, 1 - p], abs=1e-6)
            if a < 3 <= b:
                split_probabilities.append(p)
    assert len(split_probabilities) == 2, "each step's middle prompt has one completion on each process"
    # Ranked apart, each half of a split group would get 0.5: the replies must differ enough to tell.
    assert max(abs(p - 0.5) for p in split_probabilities) > 1e-4


EXAMPLES = Path(__file__).parents[1] / "examples" / "accelerate"
FSDP_NEEDS_GPUS = (
    "accelerate 1.16 runs FSDP only on accelerators: AcceleratorState switches to DistributedType.FSDP for "
    "MULTI_GPU/NPU/XPU/... processes, so 2 CPU processes (MULTI_CPU, gloo) train with DDP whatever the config says "
    "(and with the example's fsdp_sync_module_states: true, its FSDP plugin first raises 'FSDP parameter "
    "initialization with `sync_module_states=True` is not supported on cpu.'); torch's own FSDP does run on CPU "
    "over gloo, but the trainers reach it only through accelerate"
)


@pytest.mark.slow
@pytest.mark.skipif("not __import__('torch').cuda.device_count() >= 2", reason=FSDP_NEEDS_GPUS)
def test_lora_sft_trains_under_the_example_fsdp_config(tiny_model_dir, tmp_path):
    output = tmp_path / "out"
    _launch_on_two_processes("sft_distributed.py", str(tiny_model_dir), str(output), "--lora",
                             launch_options=("--config_file", str(EXAMPLES / "fsdp.yaml")), on_cpu=False)
    ranks = [json.loads((output / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for record in ranks:  # both ranks trained to the end, sharded
        assert record["distributed_type"].endswith("FSDP") and record["world_size"] == 2
        assert len(record["losses"]) == 3 and all(math.isfinite(loss) for loss in record["losses"])
    assert (output / "adapter_model.safetensors").is_file() and (output / "adapter_config.json").is_file()


def test_the_example_fsdp_config_and_the_4bit_loading_are_what_qlora_under_fsdp_needs():
    from accelerate.commands.config.config_args import load_config_from_file

    from hf_cai.modeling import bnb_4bit_config

    fsdp = load_config_from_file(str(EXAMPLES / "fsdp.yaml")).fsdp_config
    # Weights read once on rank 0 and broadcast, not once per process; flat parameters of uniform dtype and
    # requires_grad (the Trainer wraps a PEFT model's LoRA layers in units of their own).
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is True and fsdp["fsdp_sync_module_states"] is True
    assert fsdp["fsdp_use_orig_params"] is False
    # FSDP flattens the 4-bit weights with the rest of a unit, so they must be stored in the compute dtype.
    config = bnb_4bit_config()
    assert config.bnb_4bit_quant_storage == config.bnb_4bit_compute_dtype


@pytest.mark.parametrize(
    ("name", "distributed_type"), [("ddp", "MULTI_GPU"), ("deepspeed_zero3", "DEEPSPEED"), ("fsdp", "FSDP")]
)
def test_example_accelerate_configs_load(name, distributed_type):
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).parents[1] / "examples" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert str(config.distributed_type).endswith(distributed_type)
    assert config.num_processes == 2 and config.mixed_precision == "bf16"
