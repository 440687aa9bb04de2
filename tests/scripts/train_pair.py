"""A small TRL training script, run unchanged with TRL's trainer/config pair or with hf_cai's (the drop-in test).

    python train_pair.py --pair trl|cai|swap --stage sft|dpo|reward|grpo --model DIR --output DIR

Only the import of the pair differs; everything below it is plain TRL usage. ``swap`` is a TRL user's script with
only the trainer class swapped: TRL's config with hf_cai's trainer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_cai import preference_rows, sl_cai_rows, split_prompts  # noqa: E402

PAIRS = {
    ("trl", "sft"): ("trl", "SFTConfig", "SFTTrainer"),
    ("trl", "dpo"): ("trl", "DPOConfig", "DPOTrainer"),
    ("trl", "reward"): ("trl", "RewardConfig", "RewardTrainer"),
    ("trl", "grpo"): ("trl", "GRPOConfig", "GRPOTrainer"),
    ("cai", "sft"): ("hf_cai.trainers", "CAISFTConfig", "CAISFTTrainer"),
    ("cai", "dpo"): ("hf_cai.trainers", "CAIDPOConfig", "CAIDPOTrainer"),
    ("cai", "reward"): ("hf_cai.trainers", "CAIRewardConfig", "CAIRewardTrainer"),
    ("cai", "grpo"): ("hf_cai.trainers", "CAIGRPOConfig", "CAIGRPOTrainer"),
}
SWAPPED_TRAINERS = {"sft": "CAISFTTrainer", "dpo": "CAIDPOTrainer", "reward": "CAIRewardTrainer", "grpo": "CAIGRPOTrainer"}


def shorter_is_better(completions, **kwargs):
    """GRPO's reward: minus each completion's length in characters."""
    return [-float(len(completion[0]["content"])) for completion in completions]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pair", choices=["trl", "cai", "swap"], required=True)
    parser.add_argument("--stage", choices=["sft", "dpo", "reward", "grpo"], required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    import importlib

    module, config_name, trainer_name = PAIRS[("trl" if args.pair == "swap" else args.pair, args.stage)]
    Config = getattr(importlib.import_module(module), config_name)
    Trainer = getattr(importlib.import_module(module), trainer_name)
    if args.pair == "swap":
        Trainer = getattr(importlib.import_module("hf_cai.trainers"), SWAPPED_TRAINERS[args.stage])

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer

    prompts, _ = split_prompts(8, 0)
    stage_arguments = {}
    if args.stage == "sft":
        rows = [{"messages": row["messages"]} for row in sl_cai_rows(prompts)]
    elif args.stage == "grpo":
        rows = [{"prompt": row["prompt"]} for row in preference_rows(prompts)]
        stage_arguments = {"num_generations": 2, "max_completion_length": 8}
    else:
        rows = preference_rows(prompts)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    config = Config(
        output_dir=args.output,
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        seed=7,
        **stage_arguments,
    )
    rewards = {"reward_funcs": shorter_is_better} if args.stage == "grpo" else {}
    trainer = Trainer(
        model=args.model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules="all-linear",
            task_type="SEQ_CLS" if args.stage == "reward" else "CAUSAL_LM",
        ),
        **rewards,
    )
    result = trainer.train()
    trainer.save_model()
    summary = {"train_loss": result.training_loss, "log_history": trainer.state.log_history}
    Path(args.output, "summary.json").write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
