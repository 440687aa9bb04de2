"""``hf-cai publish`` (a model: adapter or merged) and ``hf-cai publish-dataset`` (an SL-CAI / RL-CAI dataset).

The token comes from ``HF_TOKEN`` or ``hf auth login``, never from the command line, where other users can read it
in the process list and the shell keeps it in its history. A pipeline run directory supplies its own base model id
and license. Errors name the command-line flags, not the library's parameter names.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from hf_cai.cli import CommandError, add_token_option, refuse_token
from hf_cai.hub.errors import HubError

_PARAMETER = re.compile(
    r"\b(base_model_id|license_name|license_link|license|constitution|card_template|merge_dtype|eval_results)"
    r"(?:=(?:'([^']*)'|\.\.\.)?|\b(?=[^=]))"
)
_BARE_PARAMETERS = {"base_model_id", "license_name", "license_link", "card_template", "merge_dtype", "eval_results"}


def _in_flag_terms(message: str) -> str:
    """A library message with its parameter names as this command's flags (``base_model_id='org/name'`` →
    ``--base-model-id org/name``); no token parameter, since the command takes none."""
    message = re.sub(r"(pass )?token=\.\.\.,\s*", "", message)

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if "=" not in match.group(0) and name not in _BARE_PARAMETERS:
            return match.group(0)  # "license" and "constitution" are ordinary words too
        return f"--{name.replace('_', '-')}" + (f" {value}" if value else "")

    return _PARAMETER.sub(flag, message)


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except (HubError, ValueError) as error:
        raise CommandError(_in_flag_terms(str(error))) from error


def _run_defaults(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The base model id and license: the flags, else what the pipeline run ``args.source`` belongs to recorded."""
    from hf_cai.hub import locate_training_output
    from hf_cai.pipeline import recorded_run

    run_dir = _call(locate_training_output, args.source).run_dir
    recorded = recorded_run(run_dir) if run_dir is not None else {}
    license = args.license or recorded.get("license")
    if not license:
        raise CommandError(
            "give --license: the Hub license id of the fine-tune (usually the base model's, e.g. apache-2.0, mit, "
            "llama3.1)"
        )
    return args.base_model_id or recorded.get("base_model_id"), license


def _commit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The library arguments of the commit options both publish commands share (declared by :func:`_common`)."""
    return {
        "private": args.private,
        "revision": args.revision,
        "create_pr": args.create_pr,
        "commit_message": args.message,
        "card_template": args.card_template,
    }


def _publish(args: argparse.Namespace) -> int:
    from hf_cai.hub import build_model_card, publish

    refuse_token(args)
    base_model_id, license = _run_defaults(args)
    # What shapes the model card, named alike by build_model_card and publish.
    card_options = {
        "base_model_id": base_model_id,
        "license": license,
        "datasets": args.dataset,
        "eval_results": args.eval_results,
        "license_name": args.license_name,
        "license_link": args.license_link,
        "constitution": args.constitution,
    }
    if args.dry_run:
        card = _call(
            build_model_card,
            args.source,
            repo_id=args.repo_id,
            merged=args.merge,
            template=args.card_template,
            **card_options,
        )
        print(card)
        return 0
    result = _call(
        publish,
        args.source,
        args.repo_id,
        merge=args.merge,
        merge_dtype=args.merge_dtype,
        space=args.space,
        **card_options,
        **_commit_options(args),
    )
    _report(result)
    return 0


def _publish_dataset(args: argparse.Namespace) -> int:
    from hf_cai.hub import publish_dataset

    refuse_token(args)
    if not args.license:
        raise CommandError("give --license: the Hub license id of the dataset (e.g. cc-by-4.0, apache-2.0, mit)")
    result = _call(
        publish_dataset,
        args.dataset,
        args.repo_id,
        args.constitution,
        license=args.license,
        license_name=args.license_name,
        license_link=args.license_link,
        models=args.model,
        **_commit_options(args),
    )
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
    parser.add_argument(
        "--license", help="Hub license id, e.g. apache-2.0, mit, llama3.1, other (default for a run: the run's)"
    )
    parser.add_argument("--license-name", help="short name of the license when --license other")
    parser.add_argument("--license-link", help="link to the license text when --license other")
    # Declared only to refuse it with a clear message; the token comes from HF_TOKEN or `hf auth login`.
    add_token_option(parser)
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to publish to (created from main when missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--card-template", help="Jinja template file replacing the built-in card template")


def register(subparsers: Any) -> None:
    model = subparsers.add_parser(
        "publish",
        help="publish a CAI model (adapter or merged) with its constitution and a generated model card",
        description="Publish a trainer output folder or a run directory to a Hub model repository.",
    )
    model.add_argument("source", help="trainer output folder, stage folder (run/dpo) or run directory")
    _common(model)
    model.add_argument(
        "--base-model-id",
        help="Hub id of the base model (default for a run: the run's; needed when the base was a local folder)",
    )
    model.add_argument("--merge", action="store_true", help="publish the adapter merged into a 16-bit base")
    model.add_argument(
        "--merge-dtype", default="bfloat16", choices=["bfloat16", "float16"], help="dtype of the merged weights"
    )
    model.add_argument("--dataset", action="append", default=[], help="Hub id of a training dataset (repeatable)")
    model.add_argument("--eval-results", help="results.json of the evaluation (default: the run's eval/results.json)")
    model.add_argument("--constitution", help="constitution to publish instead of the one beside the model")
    model.add_argument("--space", action="store_true", help="also create the side-by-side chat Space <repo_id>-chat")
    model.add_argument("--dry-run", action="store_true", help="print the model card and publish nothing")
    model.set_defaults(handler=_publish)

    dataset = subparsers.add_parser(
        "publish-dataset",
        help="publish an SL-CAI or RL-CAI dataset as parquet with its constitution and a dataset card",
        description="Publish a dataset saved by a builder (DatasetDict.save_to_disk) to a Hub dataset repository: "
        "each split as parquet, the constitution it was generated with, and a dataset card.",
    )
    dataset.add_argument("dataset", help="folder written by DatasetDict.save_to_disk (e.g. run/sl_data/dataset)")
    _common(dataset)
    dataset.add_argument("--constitution", required=True, help="built-in name or file the data was generated with")
    dataset.add_argument("--model", action="append", default=[], help="Hub id of a model trained on it (repeatable)")
    dataset.set_defaults(handler=_publish_dataset)
