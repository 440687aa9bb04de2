"""``hf-cai constitution list | show | validate | convert``."""

from __future__ import annotations

import argparse

from hf_cai.constitution import Constitution


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


def _validate(args: argparse.Namespace) -> int:
    constitution = Constitution.load(args.file, format=args.format)
    print(f"{args.file}: OK ({constitution.name} v{constitution.version}, {len(constitution.principles)} principles, "
          f"sha256 {constitution.sha256})")
    return 0


def _convert(args: argparse.Namespace) -> int:
    constitution = Constitution.load(args.input, format=args.format)
    constitution.save(args.output)
    print(f"wrote {args.output} (sha256 {constitution.sha256})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("constitution", help="list, show, validate and convert constitutions")
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    commands.add_parser("list", help="list the built-in constitutions").set_defaults(handler=_list)
    show = commands.add_parser("show", help="print a built-in constitution or a file")
    show.add_argument("constitution", help="built-in name or path to a YAML/JSON file")
    show.set_defaults(handler=_show)
    formats = ["auto", "hf_cai", "llm-swarm", "anthropic-paper"]
    validate = commands.add_parser("validate", help="check a constitution file and print its sha256")
    validate.add_argument("file")
    validate.add_argument("--format", default="auto", choices=formats)
    validate.set_defaults(handler=_validate)
    convert = commands.add_parser("convert", help="convert or import a constitution file (output .yaml or .json)")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--format", default="auto", choices=formats, help="format of the input")
    convert.set_defaults(handler=_convert)
