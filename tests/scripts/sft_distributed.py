"""Three SFT steps of CAISFTTrainer on 2 processes, as ``accelerate launch`` starts them:

    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 sft_distributed.py MODEL OUT   # DDP on CPU
    accelerate launch --config_file examples/accelerate/fsdp.yaml sft_distributed.py MODEL OUT --lora    # FSDP

QLoRA by default; ``--lora`` trains plain LoRA on an unquantised base. Without a GPU the processes run on CPU
(``accelerate launch --cpu`` starts a single process, so they are started by accelerate's torchrun launcher and
``use_cpu=True`` keeps them there). Each rank writes ``rank<N>.json`` (its logged losses, the distributed type it
trained under and the number of processes) once training and the adapter's save are done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_exit import exit_together  # noqa: E402
from synthetic_cai import sl_cai_rows, split_prompts  # noqa: E402


def main(model_dir: str, output_dir: str, *, lora: bool) -> None:
    import torch
    from datasets import Dataset

    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import CAISFTConfig, CAISFTTrainer

    prompts, _ = split_prompts(16, 0)
    config = CAISFTConfig(
        output_dir=output_dir,
        qlora_profile="cpu",
        load_in_4bit=not lora,
        assistant_only_loss=True,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
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
    record = {
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "distributed_type": str(trainer.accelerator.distributed_type),
        "world_size": trainer.accelerator.num_processes,
    }
    (Path(output_dir) / f"rank{trainer.accelerator.process_index}.json").write_text(json.dumps(record))
    exit_together()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], lora="--lora" in sys.argv[3:])
