"""``hf-cai hub list`` (CAI models on the Hub and their constitutions) and ``hf-cai hub compare A B``.

Hub commands take the token from ``HF_TOKEN`` or the saved login only (see :func:`hf_cai.cli.refuse_token`).
"""

from __future__ import annotations

import argparse
from typing import Any

from hf_cai.cli import CommandError, add_token_option, refuse_token
from hf_cai.hub.errors import HubError


def _list(args: argparse.Namespace) -> int:
    from hf_cai.hub.discovery import list_cai_models

    refuse_token(args)
    try:
        models = list_cai_models(
            tags=args.tag or ["constitutional-ai"], author=args.author, search=args.search, limit=args.limit
        )
    except HubError as error:
        raise CommandError(str(error)) from error
    if not models:
        print("no models found")
        return 0
    rows = [
        (
            m.repo_id,
            ", ".join(m.base_model) if isinstance(m.base_model, list) else (m.base_model or "?"),
            f"{m.constitution_name} v{m.constitution_version}" if m.constitution_name else "?",
            (m.constitution_sha256 or "?")[:16],
        )
        for m in models
    ]
    header = ("MODEL", "BASE MODEL", "CONSTITUTION", "SHA256")
    widths = [max(len(row[i]) for row in (*rows, header)) for i in range(3)]
    for row in (header, *rows):
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)) + "  " + row[3])
    return 0


def _compare(args: argparse.Namespace) -> int:
    from hf_cai.hub.discovery import compare_constitutions

    refuse_token(args)
    try:
        diff = compare_constitutions(args.a, args.b)
    except HubError as error:
        raise CommandError(str(error)) from error
    print(diff.to_text())
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hub",
        help="find CAI models on the Hub and compare their constitutions",
        description="Find CAI models on the Hub and compare constitutions. The token comes from HF_TOKEN or "
        "`hf auth login`, never from the command line. With offline mode on (HF_HUB_OFFLINE=1), `list` cannot run "
        "and `compare` reads local constitutions and the Hub cache only.",
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = commands.add_parser(
        "list",
        help="list CAI models with their base model and constitution",
        description="List the models on the Hub that carry all the given tags, with their base model and the name, "
        "version and sha256 of their constitution (models with the same sha256 share a constitution).",
    )
    listing.add_argument("--tag", action="append", help="required tag (repeatable; default: constitutional-ai)")
    listing.add_argument("--author", help="only models of this user or organisation")
    listing.add_argument("--search", help="only models whose id contains this text")
    listing.add_argument("--limit", type=int, default=50, help="at most this many models")
    add_token_option(listing)
    listing.set_defaults(handler=_list)
    compare = commands.add_parser(
        "compare",
        help="principle-level difference of two constitutions",
        description="Show how constitution B differs from A, principle by principle: added, removed, renamed and "
        "changed principles, with word diffs. Principles pair by their text as well as by their id. A and B are "
        "built-in names, constitution files (hf_cai, llm-swarm or the paper's), local folders holding "
        "constitution.yaml (a trained model, a publication folder), or Hub repositories (owner/name, "
        "datasets/owner/name, spaces/owner/name).",
    )
    reference = "built-in name, constitution file, folder with constitution.yaml, or Hub repository id"
    compare.add_argument("a", help=reference)
    compare.add_argument("b", help=reference)
    add_token_option(compare)
    compare.set_defaults(handler=_compare)
