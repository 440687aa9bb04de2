"""Publishing the final model, to the Hub or to a local folder, with the files its card links to.

The card embeds the evaluation's chart and links its ``results.json`` (:func:`hf_cai.hub.model_card.card_assets`):
they are published beside it, in the same commit, so the card never shows a broken image.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult


def run_publish(context: RunContext, directory: Path) -> StageResult:
    """Publish the final model with its card, constitution, training record and evaluation chart to the Hub or a
    local folder."""
    settings = dict(context.recipe.publish)
    common = {
        "base_model_id": context.base_model_hub_id(),
        "license": context.card_license(),
        "merge": bool(settings.get("merge", False)),
        "constitution": context.constitution,
    }
    folder = settings.get("folder")
    if folder:
        files = _publish_to_folder(context, Path(folder), common)
        record = {"folder": str(folder), "files": list(files)}
    else:
        result = _publish_to_hub(context, settings, common)
        files = result.files
        record = {"repo_url": result.repo_url, "commit": result.commit_oid, "files": list(files)}
    path = directory / "publication.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return StageResult(outputs={"publication": context.relative(path)}, metrics={"files": len(files)})


def _assets(context: RunContext) -> dict[str, Path]:
    from hf_cai.hub import locate_training_output
    from hf_cai.hub.model_card import card_assets

    return card_assets(locate_training_output(context.final_model()))


def _publish_to_folder(context: RunContext, folder: Path, common: dict) -> list[str]:
    from hf_cai.hub import publish_to_folder

    files = list(publish_to_folder(context.final_model(), folder, repo_id=context.publish_repo_id(), **common))
    for path_in_repo, source in _assets(context).items():
        target = folder / path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        files.append(path_in_repo)
    return files


def _publish_to_hub(context: RunContext, settings: dict, common: dict):
    """What :func:`hf_cai.hub.publish` does, with the card's assets in the same commit."""
    from hf_cai import __version__
    from hf_cai.hub.commit import UploadFile
    from hf_cai.hub.model_files import MODEL_FORMAT_FILES, model_publication
    from hf_cai.hub.publication import commit_publication, resolve_token
    from hf_cai.hub.repo_id import check_repo_id

    repo_id = settings["repo_id"]
    check_repo_id(repo_id)
    token = resolve_token(None)
    with tempfile.TemporaryDirectory(prefix="hf-cai-publish-") as staging:
        publication = model_publication(context.final_model(), repo_id, Path(staging), **common)
        assets = [UploadFile(path, source) for path, source in _assets(context).items()]
        files = [*publication.files[:-1], *assets, publication.files[-1]]  # the card (README.md) stays last
        aligned = publication.constitution
        kind = "merged model" if common["merge"] else ("LoRA adapter" if publication.training.is_adapter else "model")
        return commit_publication(
            repo_id,
            files,
            repo_type="model",
            token=token,
            commit_message=f"Publish CAI {kind} aligned to {aligned.name} v{aligned.version} (hf_cai {__version__})",
            replaces=MODEL_FORMAT_FILES,
            private=bool(settings.get("private", False)),
            revision=settings.get("revision") or "main",
            create_pr=bool(settings.get("create_pr", False)),
        )
