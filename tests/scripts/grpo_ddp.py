"""Two GRPO steps with ``ConstitutionalReward`` on 2 CPU processes, recording what each process's reward call saw.

    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 grpo_ddp.py POLICY REWARD_MODEL OUT

Three sequences per process and two generations per prompt: TRL deals the six completions of a step out in order,
so the second prompt's pair is split between the processes. Each process writes ``OUT/rank<i>.json``: per reward
call, its prompts, completions and the rewards it returned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_exit import exit_together  # noqa: E402
from synthetic_cai import split_prompts  # noqa: E402


def main(policy_dir: str, reward_model_dir: str, output_dir: str) -> None:
    import torch.distributed as dist
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import ConstitutionalReward

    calls: list[dict] = []

    class Recorded(ConstitutionalReward):
        def __call__(self, prompts, completions, **kwargs):
            rewards = super().__call__(prompts, completions, **kwargs)
            calls.append({"prompts": prompts, "completions": completions, "rewards": rewards})
            return rewards

    reward = Recorded(ConstitutionalReward.from_reward_model(reward_model_dir).judge)
    reward.judge.model.float()  # float32 on every CPU, so that the test can recompute the scores to 1e-6
    prompts, _ = split_prompts(6, 0)
    trainer = GRPOTrainer(
        model=policy_dir,
        reward_funcs=reward,
        args=GRPOConfig(
            output_dir=output_dir,
            max_steps=2,
            per_device_train_batch_size=3,
            num_generations=2,
            max_completion_length=6,
            learning_rate=1e-3,
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            seed=3,
        ),
        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts]),
        processing_class=load_tokenizer(policy_dir),
    )
    trainer.train()
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    Path(output_dir, f"rank{dist.get_rank()}.json").write_text(json.dumps(calls))
    exit_together()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
