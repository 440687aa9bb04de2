"""The model card of the run's final model, with the files it links to (the evaluation's chart and results)."""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult


def run_card(context: RunContext, directory: Path) -> StageResult:
    """The model card, rendered from the run (published as the repository's README.md); the chart and results it
    links to are written beside it as the publication ships them, so ``card/`` previews as the repository will show
    it. When the recipe publishes, the card lists the dataset repositories the publication creates."""
    from hf_cai.hub import build_model_card, locate_training_output
    from hf_cai.hub.model_card import card_files
    from hf_cai.pipeline.stages.publish import run_datasets

    training = locate_training_output(context.final_model())
    repo_id = context.publish_repo_id()
    datasets = [d.repo_id for d in run_datasets(context)] if context.recipe.publish else []
    card = build_model_card(
        training,
        repo_id=repo_id,
        license=context.card_license(),
        base_model_id=context.base_model_hub_id(),
        merged=bool(context.recipe.publish.get("merge", False)),
        constitution=context.constitution,
        datasets=datasets,
    )
    path = directory / "README.md"
    path.write_text(str(card), encoding="utf-8")
    outputs = {"card": context.relative(path)}
    for path_in_repo, source in card_files(training, repo_id=repo_id).items():
        target = directory / path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
        if target.suffix == ".png":
            outputs["chart"] = context.relative(target)
    return StageResult(outputs=outputs)
