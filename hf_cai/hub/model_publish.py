"""Publishing a CAI model to the Hugging Face Hub.

:func:`publish` pushes a trainer output or run directory to a model repository: the LoRA adapter (or, with
``merge=True``, the adapter merged into a 16-bit copy of the base), the tokenizer and chat template,
``constitution.yaml``, the training record and a generated model card (the files of :mod:`hf_cai.hub.model_files`).

It makes a single commit holding only the files that changed, so re-running after an interruption, or with nothing
changed, is safe (no new commit). Files of the other format (the adapter when publishing a merged model, and the other
way round) are deleted in that same commit. Every file is checked for access tokens before anything is sent. Nothing
in the source folder is written, moved or deleted; the merged model is built in a temporary folder.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution
from hf_cai.hub.errors import PublishError, hub_errors
from hf_cai.hub.model_files import MODEL_FORMAT_FILES, model_publication
from hf_cai.hub.publication import PublishResult, commit_publication, resolve_token
from hf_cai.hub.repo_id import check_repo_id
from hf_cai.hub.space import check_installable, create_space


def publish(
    source: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    base_model_id: str | None = None,
    license: str | None = None,
    merge: bool = False,
    merge_dtype: str = "bfloat16",
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    datasets: Sequence[str] | None = None,
    training_data: Sequence[Any] = (),
    eval_results: Any = None,
    constitution: Constitution | str | Path | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    card_template: str | Path | None = None,
    space: bool = False,
) -> PublishResult:
    """Publish a CAI fine-tune to a model repository, with its constitution and a generated model card.

    Args:
        source: Trainer output folder, stage folder or pipeline run directory (see :mod:`hf_cai.hub.source`).
        repo_id: Target repository, ``owner/name``; created (``private`` as given) when missing.
        token: Hub token with write access; defaults to ``HF_TOKEN`` or the saved login. Never logged or written.
        base_model_id: Hub id of the base model; required when the training loaded it from a local folder.
        license: Hub license id of the fine-tune (required), e.g. the base model's license.
        merge: Publish the adapter merged into a 16-bit copy of the base (``transformers`` model) instead of the
            adapter (``peft``). The base is loaded unquantised even when training used 4-bit QLoRA.
        merge_dtype: ``"bfloat16"`` or ``"float16"`` for the merged weights.
        private: Create the repository private (an existing repository keeps its visibility).
        revision: Branch to publish to (created from ``main`` when missing); ``main`` by default.
        create_pr: Open a pull request against ``revision`` instead of committing to it.
        commit_message: Summary of the commit; a description of the publication by default.
        datasets: Hub ids of the published training datasets (see
            :func:`~hf_cai.hub.dataset_publish.publish_dataset`), linked from the card.
        training_data: Local datasets to compute the card's principle statistics and examples from (a run
            directory's own datasets are always used).
        eval_results: Evaluation results (``EvaluationReport``, its dict, or ``results.json``); a run directory's
            ``eval/results.json`` is used when not given.
        constitution: Overrides the ``constitution.yaml`` found beside the model.
        license_name: Short name of the license when ``license="other"``.
        license_link: Link to the license text when ``license="other"``.
        card_template: A Jinja template file replacing ``model_cards/model_card.md.j2``.
        space: Also create the side-by-side chat Space ``<repo_id>-chat`` comparing the base model with this one
            (see :func:`hf_cai.hub.space.create_space`); not with ``private=True``, whose Space could not install
            the hf_cai wheel it ships (create it with ``create_space(..., hf_cai_requirement=...)`` instead).

    Returns:
        :class:`PublishResult` with the repository URL, the new commit (``None`` when nothing changed) and the files.

    Raises:
        PublishError: bad repo id, no token, missing files, or a Hub failure (401/403/409/5xx/...), each with what to
            do. ``ModelCardError``: missing license or base model id, data from another constitution, template errors.
    """
    from hf_cai import __version__

    check_repo_id(repo_id)
    token = resolve_token(token)
    if space:
        # Refused before the model is pushed, so that a refused Space leaves nothing half published.
        check_installable(private, None)
    with tempfile.TemporaryDirectory(prefix="hf-cai-publish-") as staging:
        publication = model_publication(
            source,
            repo_id,
            Path(staging),
            base_model_id=base_model_id,
            license=license,
            merge=merge,
            merge_dtype=merge_dtype,
            datasets=datasets,
            training_data=training_data,
            eval_results=eval_results,
            constitution=constitution,
            license_name=license_name,
            license_link=license_link,
            card_template=card_template,
        )
        aligned = publication.constitution
        kind = "merged model" if merge else ("LoRA adapter" if publication.training.is_adapter else "model")
        result = commit_publication(
            repo_id,
            publication.files,
            repo_type="model",
            token=token,
            commit_message=commit_message
            or f"Publish CAI {kind} aligned to {aligned.name} v{aligned.version} (hf_cai {__version__})",
            replaces=MODEL_FORMAT_FILES,
            private=private,
            revision=revision or "main",
            create_pr=create_pr,
        )
    if not space:
        return result
    space_repo_id = f"{repo_id}-chat"
    with hub_errors(f"creating the demo Space {space_repo_id}", token, PublishError):
        demo = create_space(
            space_repo_id,
            base_model=publication.base_model,
            cai_model=repo_id,
            constitution=aligned,
            token=token,
            private=private,
            cai_is_adapter=publication.training.is_adapter and not merge,
        )
    return dataclasses.replace(result, space_url=demo.repo_url)
