"""Constitutional AI end to end: SL-CAI data, QLoRA SFT, AI-feedback DPO, evaluation, model card, publication, Space.

Run on a GPU with a Hub token in HF_TOKEN. To try the same pipeline offline on CPU, run `hf-cai demo` instead.
"""

from hf_cai import Pipeline, load_recipe

recipe = load_recipe(overrides={
    "model": "Qwen/Qwen2.5-1.5B-Instruct",      # any chat model with a chat template
    "constitution": "harmless",                 # a built-in name or your own YAML file
    "prompts": "builtin:red_team",              # a JSONL/CSV file, a list, or a Hub dataset id
    "run_dir": "runs/quickstart",               # rerun the script to resume after a crash
    "card": {"license": "apache-2.0"},
    "publish": {"repo_id": "your-name/qwen2.5-1.5b-cai-harmless"},
    "space": {"repo_id": "your-name/qwen2.5-1.5b-cai-harmless-chat"},
})
results = Pipeline(recipe).run()
print({stage: result.metrics for stage, result in results.items()})
