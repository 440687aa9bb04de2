"""The README's "A 5-minute tour in Python" as a script: SL-CAI data, QLoRA SFT, AI feedback, soft-label DPO,
evaluation and a publishable folder, through the library alone.

    python examples/tour.py          # a GPU and the Hub: Qwen2.5-1.5B-Instruct, the sizes of a real run
    python examples/tour.py --cpu    # offline on 2 CPU cores, the embedded SmolLM2-135M-Instruct, a few minutes

The CPU run takes the same steps at small sizes. A 135M model cannot critique or judge: what it prints (the quality
gates' counts, the judge's accuracy and the verdicts) says so, rather than claiming an aligned model.
"""

# The README shows the steps between the --8<-- markers as they are, imports included.
# ruff: noqa: E402, I001

import argparse
import logging

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--cpu", action="store_true", help="offline CPU sizes on the embedded SmolLM2-135M-Instruct")
parser.add_argument("--model", help="another model id, folder, alias or .gguf file (default: as the README)")
parser.add_argument("--prompts", type=int, help="red-team prompts per builder (default: 10 with --cpu, all otherwise)")
parser.add_argument("--out", default="runs/tour", help="folder of the tour's outputs (default: runs/tour)")
options = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(message)s")
cpu, out = options.cpu, options.out
model_id = options.model or ("smollm2-135m-instruct" if cpu else "Qwen/Qwen2.5-1.5B-Instruct")
max_prompts = options.prompts or (10 if cpu else None)

# --8<-- [start:tour]
from hf_cai import (AIFeedbackBuilder, AIFeedbackConfig, CAIDPOConfig, CAIDPOTrainer, CAISFTConfig, CAISFTTrainer,
                    Constitution, CritiqueRevisionBuilder, CritiqueRevisionConfig, EvaluationConfig, JudgeCheckConfig,
                    TransformersBackend, evaluate_models, load_causal_lm, publish_to_folder)

constitution = Constitution.builtin("harmless")            # or Constitution.load("mine.yaml")
profile = "cpu" if cpu else "8gb"                          # QLoRA memory profile: 8gb, 12gb, 16gb, 24gb or cpu
# On a CPU: short replies, and no few-shot demonstrations (they put ~2,000 tokens before every request).
generation = {"max_new_tokens": 48, "few_shot": False} if cpu else {}

# 1. SL-CAI data: initial reply, then critique → revision rounds under sampled principles (batched, resumable).
#    The quality gates check every row; the result carries their counts (`sl.quality`), and the SFT trainer below
#    trains only on the rows they kept.
base = TransformersBackend(model_id, load_in_4bit=True)
sl_config = CritiqueRevisionConfig(rounds=1 if cpu else 2, max_prompts=max_prompts, **generation)
sl = CritiqueRevisionBuilder(base, constitution, sl_config).build("builtin:red_team", f"{out}/sl")

# 2. QLoRA SFT on the revisions (a drop-in subclass of TRL's SFTTrainer; `qlora_profile` sizes it for your card).
#    SmolLM2-135M botches most revisions: on CPU the tour trains on the few kept rows (the default stops below 50%).
sft_args = CAISFTConfig(f"{out}/sft", qlora_profile=profile, assistant_only_loss=True,
                        **({"min_kept_share": 0.1, "max_steps": 10, "learning_rate": 2e-3} if cpu else {}))
sft = CAISFTTrainer(model=model_id, args=sft_args, train_dataset=sl["train_sft"], constitution=constitution)
sft.train()
sft.save_model(f"{out}/sft/final")

# 3. RL-CAI data: two replies of the SFT model per prompt, labelled by the feedback model (soft labels). The
#    builder first measures the feedback model on questions with known answers and warns when it is near chance.
policy = TransformersBackend(model_id, adapter=f"{out}/sft/final", load_in_4bit=True)
feedback_config = AIFeedbackConfig(num_principles=1 if cpu else 4, max_prompts=max_prompts,
                                   **({"max_new_tokens": 40, "few_shot": False} if cpu else {}))
judge_check = JudgeCheckConfig(max_items=24 if cpu else None)
prefs = AIFeedbackBuilder(policy, base, constitution, feedback_config, judge_check=judge_check).build(
    "builtin:red_team", f"{out}/prefs")

# 4. Soft-label DPO (same arguments as TRL's DPOTrainer; `chosen_prob` switches on the soft-label loss). The SFT
#    adapter keeps training; TRL keeps a frozen copy of it as the reference, so no second model is loaded.
sft_model = load_causal_lm(model_id, adapter=f"{out}/sft/final", load_in_4bit=True, is_trainable=True)
dpo_args = CAIDPOConfig(f"{out}/dpo", qlora_profile=profile, **({"max_steps": 4, "learning_rate": 1e-3} if cpu else {}))
dpo = CAIDPOTrainer(model=sft_model, args=dpo_args, train_dataset=prefs["train"], constitution=constitution)
dpo.train()
dpo.save_model(f"{out}/dpo/final")
# --8<-- [end:tour]

# --8<-- [start:evaluate]
# 5. Evaluate: both models loaded alike (4-bit), on held-out harmful and benign requests; the base model judges,
#    its accuracy as measured before labelling. The report (logged when done; print(report) shows it again) gives
#    every figure with its interval, the verdicts, and beside each judged figure the judge's warning.
cai = TransformersBackend(model_id, adapter=f"{out}/dpo/final", load_in_4bit=True)
eval_config = EvaluationConfig(max_prompts=8, max_new_tokens=48, principle_audit=False,
                               judge_few_shot=False) if cpu else EvaluationConfig()
report = evaluate_models(base, cai, base, constitution, eval_config, judge_quality=prefs.judge_quality)
results_file = report.save(f"{out}/eval")                  # results.json + chart.png

# 6. The repository, written to a folder (publish(...) with the same arguments pushes it to the Hub, HF_TOKEN set):
#    adapter, constitution, training records, evaluation and a generated card; space=True writes the side-by-side
#    chat Space beside it. The card's base_model is the Hub id, also for the embedded model.
publish_to_folder(f"{out}/dpo/final", f"{out}/hub-repo", license="apache-2.0", eval_results=results_file,
                  space=True)
# --8<-- [end:evaluate]
print(f"\nThe repository is in {out}/hub-repo, its Space in {out}/hub-repo-chat.")
