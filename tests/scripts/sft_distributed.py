"""A few QLoRA SFT steps of CAISFTTrainer on 2 CPU processes (DDP over gloo).

    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 sft_ddp.py MODEL OUT

``accelerate launch --cpu`` starts a single process (accelerate runs several CPU processes only through mpirun), so
the processes are started by accelerate's torchrun launcher and ``use_cpu=True`` puts them on CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_exit import exit_together  # noqa: E402
from synthetic_cai import sl_cai_rows, split_prompts  # noqa: E402


def main(model_dir: str, output_dir: str) -> None:
    from datasets import Dataset

    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import CAISFTConfig, CAISFTTrainer

    prompts, _ = split_prompts(16, 0)
    config = CAISFTConfig(
        output_dir=output_dir,
        qlora_profile="cpu",
        assistant_only_loss=True,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        constitution="harmless",
    )
    trainer = CAISFTTrainer(
        model=model_dir,
        args=config,
        train_dataset=Dataset.from_list(sl_cai_rows(prompts)),
        processing_class=load_tokenizer(model_dir),
    )
    trainer.train()
    trainer.save_model()
    exit_together()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
