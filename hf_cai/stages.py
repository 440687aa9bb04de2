"""The pipeline's stages: each calls the library on the outputs of the stages before it.

A stage function takes the :class:`~hf_cai.pipeline.Pipeline` and its own folder, and returns a
:class:`~hf_cai.pipeline.StageResult` naming its outputs relative to the run directory. Stages resume by relying on
the library's own resume: dataset builders reuse finished shards and steps, trainers restart from their last complete
checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_cai.gguf import resolve_model
from hf_cai.pipeline import Pipeline, PipelineError, StageResult

logger = logging.getLogger(__name__)

FINAL = "final"


# --------------------------------------------------------------------------- shared helpers
def _relative(pipeline: Pipeline, path: Path) -> str:
    return path.relative_to(pipeline.run_dir).as_posix()


def _generation_backend(pipeline: Pipeline, *, adapter: Path | None = None):
    """The base model (with ``adapter``, always local): served by the recipe's endpoint, or run locally."""
    recipe = pipeline.recipe
    if recipe.endpoint and adapter is None:
        return _endpoint_backend(pipeline, recipe.endpoint, recipe.endpoint_model or recipe.model)
    return _local_backend(pipeline, pipeline.base_model_path(), adapter=adapter)


def _endpoint_backend(pipeline: Pipeline, url: str, model: str):
    from hf_cai.backends import EndpointBackend

    variable = pipeline.recipe.endpoint_api_key_env
    return EndpointBackend(url, model, api_key=os.environ.get(variable) if variable else None)


def _local_backend(pipeline: Pipeline, model: str, *, adapter: Path | None = None):
    from hf_cai.backends import TransformersBackend

    recipe = pipeline.recipe
    return TransformersBackend(
        model,
        adapter=str(adapter) if adapter else None,
        load_in_4bit=recipe.load_in_4bit,
        batch_size=recipe.generation_batch_size,
        trust_remote_code=False,
    )


def _tuned_and_base_backends(pipeline: Pipeline, adapter: Path):
    """Backends of the base model with ``adapter`` and of the base model alone, sharing one copy of the base weights
    when both run locally (the base view switches the adapter off)."""
    tuned = _generation_backend(pipeline, adapter=adapter)
    base = _generation_backend(pipeline) if pipeline.recipe.endpoint else tuned.without_adapter()
    return tuned, base


def _feedback_backend(pipeline: Pipeline, base):
    """The judge: the recipe's feedback model (served by ``feedback_endpoint`` or ``endpoint`` when set, else run
    locally), or the base model (``base``, already loaded)."""
    recipe = pipeline.recipe
    if not recipe.feedback_model:
        return base
    endpoint = recipe.feedback_endpoint or recipe.endpoint
    if endpoint:
        return _endpoint_backend(pipeline, endpoint, recipe.feedback_model)
    return _local_backend(pipeline, resolve_model(recipe.feedback_model))


def _prompts(pipeline: Pipeline, *, held_out: bool = False):
    """The training prompts (the first ``max_prompts``), or with ``held_out`` the rest of the source."""
    from hf_cai.builders import load_prompts

    prompts = load_prompts(pipeline.recipe.prompts, column=pipeline.recipe.prompt_column)
    limit = pipeline.recipe.max_prompts or len(prompts)
    return prompts[limit:] if held_out else prompts[:limit]


def _held_out_texts(pipeline: Pipeline, source: Any, used: int | None) -> list[str] | None:
    """Last user turns of the prompts of ``source`` after the first ``used`` (``None`` when none are left)."""
    from hf_cai.builders import load_prompts, prompt_text

    if source is None or used is None:
        return None
    rest = load_prompts(source, column=pipeline.recipe.prompt_column)[used:]
    return [prompt_text(conversation) for conversation in rest] or None


def _load_dataset(path: Path):
    from datasets import load_from_disk

    return load_from_disk(str(path))


def _resume_checkpoint(directory: Path) -> str | None:
    """The newest complete ``checkpoint-N`` to resume from, or ``None`` to start from the beginning.

    A checkpoint is complete once its ``trainer_state.json`` is written (the Trainer writes it last); one that a kill
    or a full disk cut short is deleted, with a warning. A checkpoint at the last step is passed over for the one
    before it: resumed from there, the Trainer would run one step past the end.
    """
    checkpoints = sorted(
        (p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in checkpoints:
        try:
            state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("deleting %s: its saving was interrupted (no complete trainer_state.json)", checkpoint)
            shutil.rmtree(checkpoint)
            continue
        if state.get("max_steps", 0) > 0 and state.get("global_step", 0) >= state["max_steps"]:
            logger.info("%s holds the last step; resuming from the checkpoint before it", checkpoint.name)
            continue
        return str(checkpoint)
    return None


def _train(trainer, directory: Path) -> dict[str, Any]:
    """Train (from the last complete checkpoint in ``directory`` if any), save ``final/``, and return the figures."""
    checkpoint = _resume_checkpoint(directory) if directory.is_dir() else None
    if checkpoint:
        logger.info("resuming training from %s", checkpoint)
    metrics: dict[str, Any] = {}
    if trainer.eval_dataset is not None and checkpoint is None:
        metrics["eval_loss_before"] = trainer.evaluate()["eval_loss"]
    output = trainer.train(resume_from_checkpoint=checkpoint)
    metrics["train_loss"] = output.training_loss
    metrics["steps"] = output.global_step
    if checkpoint:
        metrics["resumed_from"] = Path(checkpoint).name
    if trainer.eval_dataset is not None:
        metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]
    trainer.save_model(str(directory / FINAL))
    return metrics


def _training_args(config_class, pipeline: Pipeline, directory: Path, section: dict[str, Any], **defaults: Any):
    settings = {
        "output_dir": str(directory),
        "qlora_profile": pipeline.qlora_profile(),
        "seed": pipeline.recipe.seed,
        "load_in_4bit": pipeline.recipe.load_in_4bit,
        "report_to": "none",
        "save_strategy": "steps",
        "logging_steps": 1,
        **defaults,
        **section,
    }
    return config_class(**settings)


def _split(dataset, name: str):
    return dataset[name] if name in dataset and len(dataset[name]) else None


# --------------------------------------------------------------------------- data stages
def run_sl_data(pipeline: Pipeline, directory: Path) -> StageResult:
    """SL-CAI: initial replies, then critique → revision rounds with the base model."""
    from hf_cai.builders import CritiqueRevisionBuilder, CritiqueRevisionConfig

    recipe = pipeline.recipe
    config = CritiqueRevisionConfig(**{"seed": recipe.seed, "helpful_prompts": recipe.helpful_prompts, **recipe.sl_data})
    builder = CritiqueRevisionBuilder(_generation_backend(pipeline), pipeline.constitution, config)
    # The stage owns its folder: shards of other settings are replaced (the builder logs which).
    dataset = builder.build(_prompts(pipeline), output_dir=directory, overwrite=True)
    return StageResult(
        outputs={"dataset": _relative(pipeline, directory / "dataset")},
        metrics={"rows": sum(len(split) for name, split in dataset.items() if name.endswith("_sft"))},
    )


def run_pref_data(pipeline: Pipeline, directory: Path) -> StageResult:
    """RL-CAI: pairs of replies from the SFT model, labelled by the feedback model against the constitution."""
    from hf_cai.builders import AIFeedbackBuilder, AIFeedbackConfig

    policy, base = _tuned_and_base_backends(pipeline, pipeline.output("sft", "model"))
    config = AIFeedbackConfig(**{"seed": pipeline.recipe.seed, **pipeline.recipe.pref_data})
    builder = AIFeedbackBuilder(policy, _feedback_backend(pipeline, base), pipeline.constitution, config)
    dataset = builder.build(_prompts(pipeline), output_dir=directory, overwrite=True)
    splits = dataset.values() if hasattr(dataset, "values") else [dataset]
    probabilities = [p for split in splits for p in split["chosen_prob"]]
    return StageResult(
        outputs={"dataset": _relative(pipeline, directory / "dataset")},
        metrics={
            "pairs": len(probabilities),
            "mean_chosen_prob": sum(probabilities) / len(probabilities) if probabilities else float("nan"),
        },
    )


# --------------------------------------------------------------------------- training stages
def run_sft(pipeline: Pipeline, directory: Path) -> StageResult:
    """QLoRA SFT of the base model on the final revisions (assistant-only loss)."""
    from hf_cai.trainers import CAISFTConfig, CAISFTTrainer

    data = _load_dataset(pipeline.output("sl_data", "dataset"))
    args = _training_args(CAISFTConfig, pipeline, directory, pipeline.recipe.sft, assistant_only_loss=True)
    trainer = CAISFTTrainer(
        model=pipeline.base_model_path(),
        args=args,
        train_dataset=data["train_sft"],
        eval_dataset=_split(data, "test_sft"),
        constitution=pipeline.constitution,
    )
    metrics = _train(trainer, directory)
    return StageResult(outputs={"model": _relative(pipeline, directory / FINAL)}, metrics=metrics)


def _policy_for_preference_training(pipeline: Pipeline, profile: str):
    """The SFT model as a trainable adapter on the base (4-bit where the recipe asks); TRL keeps a frozen copy as the
    DPO reference."""
    from hf_cai.trainers import load_model_for_training

    adapter = str(pipeline.output("sft", "model"))
    return load_model_for_training(adapter, profile, load_in_4bit=pipeline.recipe.load_in_4bit)


def run_dpo(pipeline: Pipeline, directory: Path) -> StageResult:
    """DPO on the AI-labelled pairs, with soft labels, continuing the SFT adapter."""
    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import CAIDPOConfig, CAIDPOTrainer

    data = _load_dataset(pipeline.output("pref_data", "dataset"))
    profile = pipeline.qlora_profile()
    args = _training_args(CAIDPOConfig, pipeline, directory, pipeline.recipe.dpo)
    trainer = CAIDPOTrainer(
        model=_policy_for_preference_training(pipeline, profile),
        args=args,
        train_dataset=data["train"] if "train" in data else data,
        eval_dataset=_split(data, "test") if "test" in data else None,
        processing_class=load_tokenizer(pipeline.output("sft", "model")),
        constitution=pipeline.constitution,
    )
    metrics = _train(trainer, directory)
    return StageResult(outputs={"model": _relative(pipeline, directory / FINAL)}, metrics=metrics)


def run_reward(pipeline: Pipeline, directory: Path) -> StageResult:
    """A preference (reward) model on the AI-labelled pairs, with the soft Bradley–Terry target."""
    from hf_cai.trainers import CAIRewardConfig, CAIRewardTrainer

    data = _load_dataset(pipeline.output("pref_data", "dataset"))
    args = _training_args(CAIRewardConfig, pipeline, directory, pipeline.recipe.reward)
    trainer = CAIRewardTrainer(
        model=pipeline.base_model_path(),
        args=args,
        train_dataset=data["train"] if "train" in data else data,
        eval_dataset=_split(data, "test") if "test" in data else None,
        constitution=pipeline.constitution,
    )
    metrics = _train(trainer, directory)
    return StageResult(outputs={"model": _relative(pipeline, directory / FINAL)}, metrics=metrics)


def run_grpo(pipeline: Pipeline, directory: Path) -> StageResult:
    """GRPO of the SFT adapter with the trained preference model as ``ConstitutionalReward``."""
    from trl import GRPOConfig, GRPOTrainer

    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import ConstitutionalReward
    from hf_cai.trainers.artifacts import training_record, write_training_artifacts
    from hf_cai.trainers.qlora import precision_arguments

    prompts = [{"prompt": conversation} for conversation in _prompts(pipeline)]
    from datasets import Dataset

    reward_dir = pipeline.output("reward", "model")
    trained = json.loads((reward_dir / "cai_training.json").read_text(encoding="utf-8"))
    # The judge is loaded as the reward stage trained it: NF4 exactly when that stage quantised its base.
    reward = ConstitutionalReward.from_reward_model(
        str(reward_dir),
        load_in_4bit=trained.get("quantization") is not None,
        max_length=trained.get("hyperparameters", {}).get("max_length") or 1024,
    )
    precision = precision_arguments()
    settings = {
        "output_dir": str(directory),
        "seed": pipeline.recipe.seed,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "steps",
        **precision,
        # TrainingArguments accepts bf16 without a bf16 GPU only when told to train on the CPU.
        **({"use_cpu": True} if precision["bf16"] and not _cuda_bf16() else {}),
        **pipeline.recipe.grpo,
    }
    trainer = GRPOTrainer(
        model=_policy_for_preference_training(pipeline, pipeline.qlora_profile()),
        reward_funcs=[reward],
        args=GRPOConfig(**settings),
        train_dataset=Dataset.from_list(prompts),
        processing_class=load_tokenizer(pipeline.output("sft", "model")),
    )
    metrics = _train(trainer, directory)
    record = training_record(
        trainer,
        stage="grpo",
        constitution=pipeline.constitution,
        hyperparameters=("beta", "num_generations", "max_completion_length", "loss_type", "temperature"),
    )
    write_training_artifacts(directory / FINAL, pipeline.constitution, record)
    return StageResult(outputs={"model": _relative(pipeline, directory / FINAL)}, metrics=metrics)


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# --------------------------------------------------------------------------- evaluation and sharing
def _final_model(pipeline: Pipeline) -> Path:
    return pipeline.output(pipeline._final_training_stage(), "model")


def run_eval(pipeline: Pipeline, directory: Path) -> StageResult:
    """Base vs CAI win rates judged by the feedback model, evasive refusals, multiple-choice judge accuracy."""
    from hf_cai.evaluation import EvaluationConfig, evaluate_models

    recipe = pipeline.recipe
    held_out = {
        "harmful_prompts": _held_out_texts(pipeline, recipe.prompts, recipe.max_prompts),
        "helpful_prompts": _held_out_texts(pipeline, recipe.helpful_prompts, recipe.sl_data.get("num_helpful_prompts")),
    }
    if not held_out["harmful_prompts"] and "harmful_prompts" not in recipe.eval:
        logger.warning("no red-team prompt is held out from training (max_prompts covers them all): the evaluation "
                       "uses prompts the model was trained on; set max_prompts or eval.harmful_prompts")
    if recipe.helpful_prompts and not held_out["helpful_prompts"] and "helpful_prompts" not in recipe.eval:
        logger.warning("no helpful prompt is held out from training (set sl_data.num_helpful_prompts below the size "
                       "of the helpful set, or eval.helpful_prompts): helpfulness is judged on training prompts")
    settings = {"seed": recipe.seed, **{k: v for k, v in held_out.items() if v}, **recipe.eval}
    config = EvaluationConfig(**settings)
    cai, base = _tuned_and_base_backends(pipeline, _final_model(pipeline))
    report = evaluate_models(base, cai, _feedback_backend(pipeline, base), pipeline.constitution, config)
    report.save(directory)
    metrics = {
        "harmless_win": report.harmlessness_win_rate.value,
        "helpful_win": report.helpfulness_win_rate.value,
        "evasive_base": report.evasive_rate_base.value,
        "evasive_cai": report.evasive_rate_cai.value,
    }
    metrics.update({f"judge_acc[{name}]": p.value for name, p in report.feedback_accuracy.items()})
    return StageResult(
        outputs={"results": _relative(pipeline, directory / "results.json"), "chart": _relative(pipeline, directory / "chart.png")},
        metrics=metrics,
    )


def run_card(pipeline: Pipeline, directory: Path) -> StageResult:
    """The model card, rendered from the run (published as the repository's README.md)."""
    from hf_cai.hub import build_model_card, locate_training_output

    training = locate_training_output(_final_model(pipeline))
    card = build_model_card(
        training,
        repo_id=pipeline.publish_repo_id(),
        license=pipeline.card_license(),
        base_model_id=pipeline.base_model_hub_id(),
        merged=bool(pipeline.recipe.publish.get("merge", False)),
        constitution=pipeline.constitution,
    )
    path = directory / "README.md"
    path.write_text(str(card), encoding="utf-8")
    return StageResult(outputs={"card": _relative(pipeline, path)})


def run_publish(pipeline: Pipeline, directory: Path) -> StageResult:
    """Publish the final model with its card, constitution and training record to the Hub or a local folder."""
    from hf_cai.hub.publish import publish, publish_to_folder

    settings = dict(pipeline.recipe.publish)
    common = {
        "base_model_id": pipeline.base_model_hub_id(),
        "license": pipeline.card_license(),
        "merge": bool(settings.get("merge", False)),
        "constitution": pipeline.constitution,
    }
    folder = settings.get("folder")
    if folder:
        files = publish_to_folder(_final_model(pipeline), folder, repo_id=pipeline.publish_repo_id(), **common)
        record = {"folder": str(folder), "files": list(files)}
    else:
        result = publish(
            _final_model(pipeline),
            settings["repo_id"],
            private=bool(settings.get("private", False)),
            revision=settings.get("revision"),
            create_pr=bool(settings.get("create_pr", False)),
            **common,
        )
        files = result.files
        record = {"repo_url": result.repo_url, "commit": result.commit_oid, "files": list(files)}
    path = directory / "publication.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return StageResult(outputs={"publication": _relative(pipeline, path)}, metrics={"files": len(files)})


def run_space(pipeline: Pipeline, directory: Path) -> StageResult:
    """The side-by-side chat Space for the published model."""
    from hf_cai.hub.space import create_space

    settings = pipeline.recipe.space
    model_repo = pipeline.recipe.publish.get("repo_id")
    if not model_repo:
        raise PipelineError("stage 'space' needs publish.repo_id: the Space loads the published model from the Hub")
    info = create_space(
        settings.get("repo_id") or f"{model_repo}-chat",
        base_model=pipeline.base_model_hub_id(),
        cai_model=model_repo,
        constitution=pipeline.constitution,
        private=bool(settings.get("private", False)),
        hardware=settings.get("hardware"),
        hf_cai_requirement=settings.get("hf_cai_requirement"),
        cai_is_adapter=not pipeline.recipe.publish.get("merge", False),
    )
    path = directory / "space.json"
    path.write_text(json.dumps({"space_url": str(info.repo_url)}, indent=2) + "\n", encoding="utf-8")
    return StageResult(outputs={"space": _relative(pipeline, path)})


STAGE_FUNCTIONS: dict[str, Callable[[Pipeline, Path], StageResult]] = {
    "sl_data": run_sl_data,
    "sft": run_sft,
    "pref_data": run_pref_data,
    "dpo": run_dpo,
    "reward": run_reward,
    "grpo": run_grpo,
    "eval": run_eval,
    "card": run_card,
    "publish": run_publish,
    "space": run_space,
}
