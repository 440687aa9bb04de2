"""The ``hf-cai`` command line. Each module of this package adds one command group through ``register(subparsers)``;
commands call the library, they never re-implement it."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from hf_cai import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-cai", description="Constitutional AI on one GPU, shared on the Hub.")
    parser.add_argument("--version", action="version", version=f"hf-cai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


class CommandError(Exception):
    """A user-facing failure: printed as one line on stderr, exit status 2."""


def _library_errors() -> tuple[type[Exception], ...]:
    """The library's user-facing error types (the rest are ValueError subclasses)."""
    from hf_cai.backends.base import BackendError
    from hf_cai.hub.errors import HubError
    from hf_cai.modeling import ModelLoadError
    from hf_cai.pipeline import PipelineError

    return BackendError, HubError, ModelLoadError, PipelineError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    accepts_overrides = getattr(args, "accepts_overrides", False)
    if extra and not accepts_overrides:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int((args.handler(args, extra) if accepts_overrides else args.handler(args)) or 0)
    except (CommandError, ValueError, FileNotFoundError, *_library_errors()) as error:
        print(f"hf-cai {args.command}: error: {error}", file=sys.stderr)
        return 2
