"""The model card of the run's final model."""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult


def run_card(context: RunContext, directory: Path) -> StageResult:
    """The model card, rendered from the run (published as the repository's README.md)."""
    from hf_cai.hub import build_model_card, locate_training_output

    training = locate_training_output(context.final_model())
    card = build_model_card(
        training,
        repo_id=context.publish_repo_id(),
        license=context.card_license(),
        base_model_id=context.base_model_hub_id(),
        merged=bool(context.recipe.publish.get("merge", False)),
        constitution=context.constitution,
    )
    path = directory / "README.md"
    path.write_text(str(card), encoding="utf-8")
    return StageResult(outputs={"card": context.relative(path)})
