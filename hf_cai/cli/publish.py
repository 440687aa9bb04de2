"""``hf-cai publish`` (a model: adapter or merged) and ``hf-cai publish-dataset`` (an SL-CAI / RL-CAI dataset).

The token comes from ``--token``, ``HF_TOKEN`` or ``hf auth login``; prefer the environment variable, since a
command-line argument can end up in the shell history.
"""

from __future__ import annotations

import argparse

from hf_cai.cli import CommandError
from hf_cai.hub.errors import HubError


def _publish(args: argparse.Namespace) -> int:
    if args.dry_run:
        from hf_cai.hub.model_card import build_model_card

        card = build_model_card(
            args.source,
            repo_id=args.repo_id,
            license=args.license,
            base_model_id=args.base_model_id,
            datasets=args.dataset,
            eval_results=args.eval_results,
            merged=args.merge,
            license_name=args.license_name,
            license_link=args.license_link,
            constitution=args.constitution,
            template=args.card_template,
        )
        print(card)
        return 0
    from hf_cai.hub.publish import publish

    try:
        result = publish(
            args.source,
            args.repo_id,
            token=args.token,
            base_model_id=args.base_model_id,
            license=args.license,
            merge=args.merge,
            merge_dtype=args.merge_dtype,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            commit_message=args.message,
            datasets=args.dataset,
            eval_results=args.eval_results,
            constitution=args.constitution,
            license_name=args.license_name,
            license_link=args.license_link,
            card_template=args.card_template,
            space=args.space,
        )
    except HubError as error:
        raise CommandError(str(error)) from None
    _report(result)
    return 0


def _publish_dataset(args: argparse.Namespace) -> int:
    from hf_cai.hub.publish import publish_dataset

    try:
        result = publish_dataset(
            args.dataset,
            args.repo_id,
            args.constitution,
            token=args.token,
            license=args.license,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            commit_message=args.message,
            models=args.model,
            license_name=args.license_name,
            license_link=args.license_link,
            card_template=args.card_template,
        )
    except HubError as error:
        raise CommandError(str(error)) from None
    _report(result)
    return 0


def _report(result) -> None:
    if result.commit_oid is None:
        print(f"{result.repo_url}: already up to date ({len(result.files)} files), no commit made")
    else:
        print(f"{result.repo_url}: committed {len(result.uploaded)} of {len(result.files)} files")
        print(f"commit: {result.commit_url}")
    if result.pr_url:
        print(f"pull request: {result.pr_url}")
    if result.space_url:
        print(f"space: {result.space_url}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo_id", help="target repository, owner/name")
    parser.add_argument("--license", required=True, help="Hub license id, e.g. apache-2.0, mit, llama3.1, other")
    parser.add_argument("--license-name", help="short name of the license when --license other")
    parser.add_argument("--license-link", help="link to the license text when --license other")
    parser.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to publish to (created from main when missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--card-template", help="Jinja template file replacing the built-in card template")


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser(
        "publish",
        help="publish a CAI model (adapter or merged) with its constitution and a generated model card",
        description="Publish a trainer output folder or a run directory to a Hub model repository.",
    )
    model.add_argument("source", help="trainer output folder, stage folder (run/dpo) or run directory")
    _common(model)
    model.add_argument("--base-model-id", help="Hub id of the base model (required when it was loaded from a folder)")
    model.add_argument("--merge", action="store_true", help="publish the adapter merged into a 16-bit base")
    model.add_argument("--merge-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    model.add_argument("--dataset", action="append", default=[], help="Hub id of a training dataset (repeatable)")
    model.add_argument("--eval-results", help="results.json of the evaluation (default: the run's eval/results.json)")
    model.add_argument("--constitution", help="constitution to publish instead of the one beside the model")
    model.add_argument("--space", action="store_true", help="also create the side-by-side chat Space <repo_id>-chat")
    model.add_argument("--dry-run", action="store_true", help="print the model card and publish nothing")
    model.set_defaults(handler=_publish)

    dataset = subparsers.add_parser(
        "publish-dataset",
        help="publish an SL-CAI or RL-CAI dataset as parquet with its constitution and a dataset card",
    )
    dataset.add_argument("dataset", help="folder written by DatasetDict.save_to_disk (e.g. run/sl_data/dataset)")
    _common(dataset)
    dataset.add_argument("--constitution", required=True, help="built-in name or file the data was generated with")
    dataset.add_argument("--model", action="append", default=[], help="Hub id of a model trained on it (repeatable)")
    dataset.set_defaults(handler=_publish_dataset)
