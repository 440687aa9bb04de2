"""The ``hf-cai`` command line. Each module of this package adds one command group through ``register(subparsers)``;
commands call the library, they never re-implement it."""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import logging
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from hf_cai import __version__
from hf_cai.errors import HFCAIError
from hf_cai.hub.errors import is_secret_name
from hf_cai.quiet import known_warnings_ignored
from hf_cai.redaction import TOKEN_PATTERN

VERBOSE_HELP = "log debug messages, and show third-party warnings and progress bars"


def _help_with_default(args: tuple[Any, ...], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``(default: ...)`` added to the help of an option that has a meaningful default and whose help
    does not already say it."""
    text, default = options.get("help"), options.get("default")
    optional = bool(args) and str(args[0]).startswith("-") or options.get("nargs") in ("?", "*")
    if not text or text == argparse.SUPPRESS or not optional or "default" in text:
        return options
    if default in (None, False, [], argparse.SUPPRESS):
        return options
    return {**options, "help": f"{text} (default: %(default)s)"}


class CommandParser(argparse.ArgumentParser):
    """The parser of ``hf-cai`` and of each of its commands. It keeps what argparse keeps privately: its commands
    (``commands``: name → parser and short help), its arguments (``arguments``) and its option strings (``options``),
    and shows each option's default in its help when it has a meaningful one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.commands: dict[str, tuple[CommandParser, str | None]] = {}
        self.arguments: list[argparse.Action] = []
        self.options: dict[str, argparse.Action] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._record(super().add_argument(*args, **_help_with_default(args, kwargs)))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        add_argument = group.add_argument

        def add_recorded(*names: Any, **options: Any) -> argparse.Action:
            return self._record(add_argument(*names, **_help_with_default(names, options)))

        group.add_argument = add_recorded
        return group

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", CommandParser)
        subparsers = super().add_subparsers(**kwargs)
        add_parser = subparsers.add_parser

        def add_command(name: str, **options: Any) -> CommandParser:
            parser = add_parser(name, **options)
            self.commands[name] = (parser, options.get("help"))
            return parser

        subparsers.add_parser = add_command
        return subparsers

    def _record(self, action: argparse.Action) -> argparse.Action:
        self.arguments.append(action)
        self.options.update(dict.fromkeys(action.option_strings, action))
        return action


def subcommands(parser: CommandParser) -> Iterator[tuple[str, CommandParser, str | None]]:
    """Every subcommand under ``parser``, depth first: its full name (``"constitution show"``), parser and short help."""
    for name, (subparser, short_help) in parser.commands.items():
        yield name, subparser, short_help
        for sub_name, sub_parser, sub_help in subcommands(subparser):
            yield f"{name} {sub_name}", sub_parser, sub_help


def build_parser() -> CommandParser:
    """The ``hf-cai`` parser, with the commands of every module of this package that has a ``register``."""
    parser = CommandParser(prog="hf-cai", description="Constitutional AI on one GPU, shared on the Hub.")
    parser.add_argument("--version", action="version", version=f"hf-cai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    for _, subparser, _ in subcommands(parser):
        if "--verbose" not in subparser.options:
            # Also after the command (`hf-cai demo --verbose`); unset unless given, so `hf-cai -v demo` keeps it.
            options = ["-v", "--verbose"] if "-v" not in subparser.options else ["--verbose"]
            subparser.add_argument(*options, action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def closest(name: str, candidates: Collection[str]) -> str | None:
    """The candidate ``name`` was most likely a typo of, or ``None`` when none is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def check_keys(
    data: Collection[str], allowed: Collection[str], where: str, *, error: type[Exception] | None = None
) -> None:
    """Refuse the keys of ``data`` that are not in ``allowed``, suggesting the closest valid key of each.

    The message lists the valid keys too when there are few enough to read. Raises ``error`` (default
    :class:`CommandError`).
    """
    unknown = sorted(set(data) - set(allowed))
    if not unknown:
        return
    described = []
    for key in unknown:
        suggestion = closest(str(key), [str(a) for a in allowed])
        described.append(f"{key} (did you mean '{suggestion}'?)" if suggestion else str(key))
    known = f"; known keys: {', '.join(sorted(allowed))}" if len(allowed) <= 40 else ""
    raise (error or CommandError)(f"{where}: unknown key(s) {', '.join(described)}{known}")


class CommandError(HFCAIError):
    """A user-facing failure: printed as one line on stderr, exit status 2."""


def refuse_command_line_secrets(tokens: Sequence[str]) -> None:
    """Refuse a token given on the command line, where other users can read it in the process list and the shell
    keeps it in its history: an option named like ``--token`` or ``--publish.token`` with a value, or any value
    shaped like a Hugging Face token. The message names the option, never the value."""
    for index, token in enumerate(tokens):
        name, has_value, value = token.partition("=")
        option = name if name.startswith("-") else None
        follows = tokens[index + 1] if index + 1 < len(tokens) else ""
        if (
            option
            and is_secret_name(option)
            and (value or (follows and not follows.startswith("--")))
        ):
            raise command_line_secret_error(option)
        if TOKEN_PATTERN.search(token):
            previous = tokens[index - 1] if index else ""
            raise command_line_secret_error(option or (previous if previous.startswith("-") else "an argument"))


def command_line_secret_error(where: str) -> CommandError:
    """The error for a token given on the command line at ``where`` (an option name, never the value)."""
    return CommandError(
        f"{where}: tokens are not taken on the command line, where other users can read them in the process list "
        "and the shell keeps them in its history. Set HF_TOKEN in the environment or run `hf auth login`."
    )


def add_token_option(parser: argparse.ArgumentParser) -> None:
    """A ``--token`` option that exists only to be refused by :func:`refuse_token` with a message saying where the
    token goes (argparse would otherwise echo an unknown option and its value)."""
    parser.add_argument(
        "--token", nargs="?", const="", metavar="TOKEN", help="not accepted: set HF_TOKEN or run `hf auth login`"
    )


def refuse_token(args: argparse.Namespace) -> None:
    """Raise :class:`CommandError` when the command line holds a token: ``--token``, or any value shaped like one."""
    if args.token is not None:
        raise command_line_secret_error("--token")
    values = [v for value in vars(args).values() for v in (value if isinstance(value, list) else [value])]
    refuse_command_line_secrets([str(v) for v in values if isinstance(v, (str, Path))])


def split_overrides(parser: CommandParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Split a command line into what ``parser`` reads and the ``--key value`` recipe overrides given to a command
    that accepts them (``set_defaults(accepts_overrides=True)``).

    argparse alone cannot: it would hand the value of ``--sft.learning_rate 1e-4`` to a positional argument. An
    option the command declares keeps its own value; any other ``--key`` takes the next token as its value, even one
    that starts with a single ``-`` (``--seed -1``).
    """
    commands = parser.commands
    position = next((i for i, token in enumerate(argv) if token in commands), None)
    if position is None or not commands[argv[position]][0].get_default("accepts_overrides"):
        return argv, []
    known = commands[argv[position]][0].options
    kept, overrides = argv[: position + 1], []
    index = position + 1
    while index < len(argv):
        token = argv[index]
        name, has_value, _ = token.partition("=")
        takes_value = not has_value and index + 1 < len(argv) and not argv[index + 1].startswith("--")
        if name in known:
            kept.append(token)
            if takes_value and known[name].nargs != 0:
                index += 1
                kept.append(argv[index])
        elif token.startswith("--") and token != "--":
            overrides.append(token)
            if takes_value:
                index += 1
                overrides.append(argv[index])
        else:
            kept.append(token)
        index += 1
    return kept, overrides


# ------------------------------------------------------------------ third-party output
QUIET_LOGGERS: tuple[str, ...] = ("bitsandbytes",)
"""Loggers whose warnings the command line hides unless ``--verbose`` (errors still show). bitsandbytes' CPU backend
warns at import, on every run, that the optional ``kernels`` package for a faster kernel is missing."""

KNOWN_LOG_MESSAGES: tuple[tuple[str, str], ...] = (
    # Deleting the oldest checkpoint (save_total_limit), transformers orders checkpoints by modification time, and
    # takes checkpoints written within a second of each other (a short run of a small model) for a filesystem without
    # reliable times; it then orders them by step, which is right.
    ("transformers.trainer_utils", r"mtime may not be reliable"),
)
"""Log messages of third-party libraries that tell a user of ``hf-cai`` nothing they can act on: ``(logger, regular
expression matching the start of the message)``. The command line hides them unless ``--verbose``; the other
messages of those loggers show."""


class _DropMessages(logging.Filter):
    """Drops the log records whose message starts with a match of one of ``patterns``."""

    def __init__(self, patterns: Collection[str]):
        super().__init__()
        self.patterns = [re.compile(pattern) for pattern in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


def _quiet_transformers(module: ModuleType) -> Callable[[], None]:
    """No progress bars of transformers' own (loading weights); the Hub's download bars and the trainers' bar stay.

    Its log level stays: ``TrainingArguments`` turns the training bar off (``disable_tqdm``) when transformers logs
    less than warnings.
    """
    if not module.is_progress_bar_enabled():
        return lambda: None
    from huggingface_hub import utils as hub_utils

    hub_bars = not hub_utils.are_progress_bars_disabled()
    module.disable_progress_bar()  # which turns the Hub's bars off too
    if hub_bars:
        hub_utils.enable_progress_bars()

    def restore() -> None:
        hub_bars_now = not hub_utils.are_progress_bars_disabled()
        module.enable_progress_bar()  # and the Hub's
        if not hub_bars_now:
            hub_utils.disable_progress_bars()

    return restore


def _quiet_datasets_logging(module: ModuleType) -> Callable[[], None]:
    level = module.get_verbosity()
    if not os.environ.get("DATASETS_VERBOSITY"):
        module.set_verbosity_error()
    return lambda: module.set_verbosity(level)


def _quiet_datasets_bars(module: ModuleType) -> Callable[[], None]:
    """No progress bars of datasets' own (map, filter, save_to_disk) unless HF_DATASETS_DISABLE_PROGRESS_BARS says."""
    if os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS") is not None or module.are_progress_bars_disabled():
        return lambda: None
    module.disable_progress_bars()
    return module.enable_progress_bars


QUIETERS: dict[str, Callable[[ModuleType], Callable[[], None]]] = {
    "transformers.utils.logging": _quiet_transformers,
    "datasets.utils.logging": _quiet_datasets_logging,
    "datasets.utils.tqdm": _quiet_datasets_bars,
}
"""Per library module: what quiets it through the library's public switches, returning what restores it. An
environment variable the user set (such as ``DATASETS_VERBOSITY``) wins."""

LIGHT_COMMANDS = frozenset({"constitution", "hub"})
"""Commands that load no model and no dataset: they skip importing transformers and datasets (seconds) to quiet
them."""


@contextmanager
def quiet_third_party(verbose: bool = False, *, libraries: bool = True) -> Iterator[None]:
    """The command line's output while a command runs: log lines written above progress bars rather than through
    them (``tqdm.contrib.logging``) and, unless ``verbose``, without the known third-party noise: the
    :data:`~hf_cai.quiet.KNOWN_WARNINGS` and :data:`KNOWN_LOG_MESSAGES`, warnings of the :data:`QUIET_LOGGERS`,
    datasets' log warnings, transformers' and datasets' own progress bars (:data:`QUIETERS`). With ``libraries=False``
    (a command that loads neither), only the libraries already imported are quieted, so that transformers and datasets
    are not imported for nothing. All is restored on exit: hf_cai used from Python is quieted only where its own calls
    make the noise (:mod:`hf_cai.quiet`).
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        if verbose:
            yield
            return
        with known_warnings_ignored():
            restores = [
                quieter(importlib.import_module(name) if libraries else sys.modules[name])
                for name, quieter in QUIETERS.items()
                if libraries or name in sys.modules
            ]
            levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
            for name in QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            filters = {
                name: _DropMessages([pattern for logger, pattern in KNOWN_LOG_MESSAGES if logger == name])
                for name in {logger for logger, _ in KNOWN_LOG_MESSAGES}
            }
            for name, dropper in filters.items():
                logging.getLogger(name).addFilter(dropper)
            try:
                yield
            finally:
                for restore in reversed(restores):
                    restore()
                for name, level in levels.items():
                    logging.getLogger(name).setLevel(level)
                for name, dropper in filters.items():
                    logging.getLogger(name).removeFilter(dropper)


class StoryFormatter(logging.Formatter):
    """Log lines that read as the run's story: an information line is its message alone ("stage sft: running"), a
    warning or an error says so ("warning: ..."); ``--verbose`` adds the level and logger to every line."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run ``hf-cai`` with ``argv`` (default: the process's arguments); the exit status (2 for a user-facing error)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, overrides = split_overrides(parser, argv)
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(StoryFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        with quiet_third_party(args.verbose, libraries=args.command not in LIGHT_COMMANDS):
            if getattr(args, "accepts_overrides", False):
                return int(args.handler(args, overrides) or 0)
            return int(args.handler(args) or 0)
    # hf_cai's own errors and a missing file the user named are the user's to fix: one line. Anything else is a bug
    # and propagates with its traceback.
    except (HFCAIError, FileNotFoundError) as error:
        print(f"hf-cai {args.command}: error: {error}", file=sys.stderr)
        return 2
