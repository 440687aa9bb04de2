"""The side-by-side chat Space of the published model."""

from __future__ import annotations

import json
from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.errors import PipelineError


def run_space(context: RunContext, directory: Path) -> StageResult:
    """The side-by-side chat Space for the published model."""
    from hf_cai.hub.space import create_space

    settings = context.recipe.space
    model_repo = context.recipe.publish.get("repo_id")
    if not model_repo:
        raise PipelineError("stage 'space' needs publish.repo_id: the Space loads the published model from the Hub")
    info = create_space(
        settings.get("repo_id") or f"{model_repo}-chat",
        base_model=context.base_model_hub_id(),
        cai_model=model_repo,
        constitution=context.constitution,
        private=bool(settings.get("private", False)),
        hardware=settings.get("hardware"),
        hf_cai_requirement=settings.get("hf_cai_requirement"),
        cai_is_adapter=not context.recipe.publish.get("merge", False),
    )
    path = directory / "space.json"
    path.write_text(json.dumps({"space_url": str(info.repo_url)}, indent=2) + "\n", encoding="utf-8")
    return StageResult(outputs={"space": context.relative(path)})
