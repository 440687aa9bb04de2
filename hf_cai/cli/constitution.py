"""``hf-cai constitution list | show | validate | convert | export``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hf_cai.cli import CommandError
from hf_cai.constitution import Constitution
from hf_cai.constitution.importers import FILE_FORMATS
from hf_cai.constitution.model import looks_like_name


def _list(args: argparse.Namespace) -> int:
    for name in Constitution.list_builtin():
        constitution = Constitution.builtin(name)
        print(f"{name:<20} v{constitution.version:<6} {len(constitution.principles):>3} principles  {constitution.description}")
    return 0


def _show(args: argparse.Namespace) -> int:
    constitution = Constitution.resolve(args.constitution)
    print(f"name:        {constitution.name}")
    print(f"version:     {constitution.version}")
    print(f"license:     {constitution.license}")
    print(f"sha256:      {constitution.sha256}")
    print(f"description: {constitution.description}")
    print(f"few-shot:    {len(constitution.critique_revision_examples)} critique/revision, "
          f"{len(constitution.preference_examples)} preference")
    print()
    for principle in constitution.principles:
        stages = "+".join(s for s, ok in (("SL", principle.has_critique), ("RL", principle.has_preference)) if ok)
        print(f"[{principle.id}] ({stages}, weight {principle.weight:g})")
        for label in ("critique", "revision", "preference"):
            text = getattr(principle, label)
            if text:
                print(f"  {label}: {text}")
    return 0


def _read(reference: str, format: str) -> Constitution:
    """The constitution ``reference`` names: a built-in name, a file or a folder; ``format`` applies to files."""
    if format == "auto" or (not Path(reference).exists() and looks_like_name(reference)):
        return Constitution.resolve(reference)
    return Constitution.load(reference, format=format)


def _validate(args: argparse.Namespace) -> int:
    constitution = _read(args.constitution, args.format)
    print(f"{args.constitution}: OK ({constitution.name} v{constitution.version}, {len(constitution.principles)} "
          f"principles, sha256 {constitution.sha256})")
    return 0


def _convert(args: argparse.Namespace) -> int:
    constitution = _read(args.input, args.format)
    constitution.save(args.output)
    print(f"wrote {args.output} (sha256 {constitution.sha256})")
    return 0


def _export(args: argparse.Namespace) -> int:
    constitution = Constitution.builtin(args.name)
    output = Path(args.file)
    if output.exists() and not args.force:
        raise CommandError(f"{output} already exists; pass --force to overwrite it")
    constitution.save(output)
    print(f"wrote {output}: the built-in constitution '{args.name}' v{constitution.version} "
          f"({len(constitution.principles)} principles). Edit it (give it a name of its own), then check it with "
          f"`hf-cai constitution validate {output}`.")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "constitution",
        help="list, show, validate, convert and export constitutions",
        description="Constitutions are the principles a model is aligned to. Wherever a command takes one, it takes a "
        "built-in name (see `hf-cai constitution list`), a YAML/JSON file (the hf_cai schema, an llm-swarm file or "
        "the paper's CritiqueRevisionInstructions.json) or a folder holding constitution.yaml.",
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    commands.add_parser(
        "list", help="list the built-in constitutions", description="The built-in constitutions, with their size."
    ).set_defaults(handler=_list)
    reference = "built-in name, YAML/JSON file or folder holding constitution.yaml"
    show = commands.add_parser(
        "show",
        help="print a constitution: its identity and every principle",
        description="Print a constitution: name, version, license, sha256, and the texts of every principle.",
    )
    show.add_argument("constitution", help=reference)
    show.set_defaults(handler=_show)
    formats = ["auto", *FILE_FORMATS]
    format_help = "format of a file: auto-detected, or one of hf_cai, llm-swarm, anthropic-paper"
    validate = commands.add_parser(
        "validate",
        help="check a constitution and print its sha256",
        description="Check a constitution against the schema and list every problem found, each with its field "
        "(principles[2].revision); print its canonical sha256 when it is valid.",
    )
    validate.add_argument("constitution", help=reference)
    validate.add_argument("--format", default="auto", choices=formats, help=format_help)
    validate.set_defaults(handler=_validate)
    convert = commands.add_parser(
        "convert",
        help="convert or import a constitution (output .yaml or .json)",
        description="Write a constitution in the hf_cai schema, as YAML or JSON by the extension of OUTPUT: import "
        "an llm-swarm file or the paper's instruction files (the files read are logged), or copy a built-in one.",
    )
    convert.add_argument("input", help=reference)
    convert.add_argument("output", help="file to write: .yaml, .yml or .json")
    convert.add_argument("--format", default="auto", choices=formats, help=format_help)
    convert.set_defaults(handler=_convert)
    export = commands.add_parser(
        "export",
        help="write a built-in constitution to a file, to start your own",
        description="Write a built-in constitution to a YAML or JSON file (by its extension), to edit into your own. "
        "An existing file is kept unless --force.",
    )
    export.add_argument("name", help="built-in constitution name (see `hf-cai constitution list`)")
    export.add_argument("file", help="file to write: .yaml, .yml or .json")
    export.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    export.set_defaults(handler=_export)
