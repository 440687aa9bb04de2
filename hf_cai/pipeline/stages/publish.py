"""Publishing the final model, to the Hub or to a local folder."""

from __future__ import annotations

import json
from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult


def run_publish(context: RunContext, directory: Path) -> StageResult:
    """Publish the final model with its card, constitution and training record to the Hub or a local folder."""
    from hf_cai.hub import publish, publish_to_folder

    settings = dict(context.recipe.publish)
    common = {
        "base_model_id": context.base_model_hub_id(),
        "license": context.card_license(),
        "merge": bool(settings.get("merge", False)),
        "constitution": context.constitution,
    }
    folder = settings.get("folder")
    if folder:
        files = publish_to_folder(context.final_model(), folder, repo_id=context.publish_repo_id(), **common)
        record = {"folder": str(folder), "files": list(files)}
    else:
        result = publish(
            context.final_model(),
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
    return StageResult(outputs={"publication": context.relative(path)}, metrics={"files": len(files)})
