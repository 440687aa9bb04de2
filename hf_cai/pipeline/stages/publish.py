"""Publishing the run: its SL-CAI and preference datasets, then the final model, to the Hub or to local folders.

The datasets go to dataset repositories beside the model's, ``<repo_id>-sl-cai`` and ``<repo_id>-prefs`` (with
``publish.folder``, into the folders ``<folder>-sl-cai`` and ``<folder>-prefs`` beside the model's), each with its
card, ``constitution.yaml`` and ``provenance.json``: the models that wrote and labelled the rows by their Hub ids, the
sampling settings and the seed. They are published first, so that the model card, which lists them in its
``datasets`` metadata and links them, never points at a repository that does not exist yet. The model is published by
:func:`hf_cai.hub.publish` (or :func:`hf_cai.hub.publish_to_folder`), with the evaluation's chart and results the card
links to.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

DATASET_SUFFIXES = {"sl_data": "-sl-cai", "pref_data": "-prefs"}
"""The name of each dataset's repository (and folder), after the model's."""


@dataclass(frozen=True)
class RunDataset:
    """A dataset of the run as it is published: the stage that made it, its folder, its repository id."""

    stage: str
    path: Path
    repo_id: str


def run_datasets(context: RunContext) -> list[RunDataset]:
    """The run's datasets that a publication carries: the SL-CAI data and the preference pairs, where their stages
    made them with at least one row (a dataset without rows could not be loaded back from the Hub)."""
    from hf_cai.hub.training_data import load_dataset_dict

    found = []
    for stage, suffix in DATASET_SUFFIXES.items():
        try:
            path = context.output(stage, "dataset")
        except PipelineError:
            continue
        if sum(split.num_rows for split in load_dataset_dict(path).values()) == 0:
            logger.info("not publishing the %s dataset: it has no rows", stage)
            continue
        found.append(RunDataset(stage, path, context.publish_repo_id() + suffix))
    return found


def run_publish(context: RunContext, directory: Path) -> StageResult:
    """Publish the SL-CAI and preference datasets, then the final model with its card, constitution, training record
    and evaluation chart, to the Hub or to local folders."""
    settings = dict(context.recipe.publish)
    repo_id = context.publish_repo_id()
    datasets = run_datasets(context)
    common: dict[str, Any] = {
        "base_model_id": context.base_model_hub_id(),
        "license": context.card_license(),
        "merge": bool(settings.get("merge", False)),
        "constitution": context.constitution,
        "datasets": [d.repo_id for d in datasets],
    }
    folder = settings.get("folder")
    published = [_publish_dataset(context, dataset, settings) for dataset in datasets]
    if folder:
        from hf_cai.hub import publish_to_folder

        files = list(publish_to_folder(context.final_model(), Path(folder), repo_id=repo_id, **common))
        record: dict[str, Any] = {"folder": str(folder), "files": files}
    else:
        from hf_cai.hub import publish

        result = publish(
            context.final_model(),
            repo_id,
            private=bool(settings.get("private", False)),
            revision=settings.get("revision"),
            create_pr=bool(settings.get("create_pr", False)),
            **common,
        )
        files = list(result.files)
        record = {"repo_url": result.repo_url, "commit": result.commit_oid, "files": files}
    record["datasets"] = published
    path = directory / "publication.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    notes = [f"published the {d['stage']} dataset as {d['repo_id']}" for d in published]
    return StageResult(
        outputs={"publication": context.relative(path)},
        metrics={"files": len(files), "datasets": len(published)},
        notes=notes,
    )


def _publish_dataset(context: RunContext, dataset: RunDataset, settings: dict[str, Any]) -> dict[str, Any]:
    """Publish one dataset of the run (to the Hub, or into the folder beside the model's) with its provenance."""
    from hf_cai.hub import publish_dataset, publish_dataset_to_folder
    from hf_cai.hub.dataset_provenance import dataset_provenance

    provenance = dataset_provenance(
        dataset.path,
        constitution=context.constitution,
        models=_models(context, dataset.stage),
        extra=_prompts(context, dataset.stage),
    )
    options = {
        "license": context.card_license(),
        "models": [context.publish_repo_id()],
        "provenance": provenance,
    }
    folder = settings.get("folder")
    if folder:
        target = Path(folder)
        target = target.parent / f"{target.name}{DATASET_SUFFIXES[dataset.stage]}"
        files = publish_dataset_to_folder(
            dataset.path, target, repo_id=dataset.repo_id, constitution=context.constitution, **options
        )
        return {"stage": dataset.stage, "repo_id": dataset.repo_id, "folder": str(target), "files": list(files)}
    result = publish_dataset(
        dataset.path,
        dataset.repo_id,
        context.constitution,
        private=bool(settings.get("private", False)),
        revision=settings.get("revision"),
        create_pr=bool(settings.get("create_pr", False)),
        **options,
    )
    return {
        "stage": dataset.stage,
        "repo_id": dataset.repo_id,
        "repo_url": result.repo_url,
        "commit": result.commit_oid,
        "files": list(result.files),
    }


def _models(context: RunContext, stage: str) -> dict[str, str]:
    """The models that wrote (and labelled) a dataset of the run, by their Hub ids."""
    from hf_cai.hub.local_paths import readable_model_id

    recipe = context.recipe
    base = readable_model_id(context.base_model_hub_id()) or "the base model"
    if stage == "sl_data":
        return {"generator": base}
    judge = readable_model_id(recipe.feedback_model) if recipe.feedback_model else f"{base} (the base model)"
    sl_data = context.publish_repo_id() + DATASET_SUFFIXES["sl_data"]
    return {"policy": f"{base} with this run's SFT LoRA adapter (trained on {sl_data})", "feedback": judge}


def _prompts(context: RunContext, stage: str) -> dict[str, Any]:
    """Where a dataset's prompts came from, without a path of this machine."""
    from hf_cai.hub.local_paths import is_local_path

    def name(source: str | None) -> str | None:
        return Path(source).name if source and is_local_path(source) else source

    recipe = context.recipe
    prompts = name(recipe.prompts) or ""
    if recipe.max_prompts is not None:
        prompts += f" (the first {recipe.max_prompts})"
    if stage == "sl_data" and recipe.helpful_prompts:
        prompts += f"; helpful prompts: {name(recipe.helpful_prompts)}"
    return {"prompts": prompts}
