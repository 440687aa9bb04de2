"""``hf-cai space create`` (generate and push the side-by-side chat Space) and ``hf-cai chat`` (run it locally)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import CONSTITUTION_FILE
from hf_cai.cli import CommandError, add_token_option, refuse_token


def find_run_model(run_dir: Path) -> Path:
    """The CAI model a run produced: the output of its last training stage (GRPO, DPO, then SFT)."""
    from hf_cai.hub import PublishError, locate_training_output

    if not run_dir.is_dir():
        raise CommandError(f"run directory '{run_dir}' not found")
    try:
        return locate_training_output(run_dir).model_dir
    except PublishError as error:
        raise CommandError(f"no trained model in '{run_dir}' (run `hf-cai run` first, or pass --model): {error}") from error


def _adapter_base(adapter: str) -> str | None:
    from hf_cai.modeling import adapter_base_model, is_peft_adapter

    if Path(adapter).is_dir() and not is_peft_adapter(adapter):
        return None
    try:
        return adapter_base_model(adapter)
    except Exception:  # not an adapter (a merged model), or not reachable
        return None


def chat_config(args: argparse.Namespace):
    """The :class:`~hf_cai.hub.space_config.SpaceConfig` that ``hf-cai chat`` serves, from a run dir or model ids."""
    from hf_cai.hub.space_config import SpaceConfig

    model, base, constitution = args.model, args.base, args.constitution
    if args.run_dir is not None:
        if model is not None:
            raise CommandError("pass either --run-dir or --model, not both")
        run_dir = Path(args.run_dir)
        model = str(find_run_model(run_dir))
        if base is None and (run_dir / "base_model").is_dir():
            base = str(run_dir / "base_model")
    if model is None and base is None:
        raise CommandError("nothing to chat with: pass --run-dir RUN, or --model CAI_MODEL (and --base BASE_MODEL)")
    if base is None:
        base = _adapter_base(model)
        if base is None:
            raise CommandError(f"'{model}' is not a LoRA adapter, so its base model is unknown: pass --base")
    if constitution is None and model is not None and (Path(model) / CONSTITUTION_FILE).is_file():
        constitution = str(Path(model) / CONSTITUTION_FILE)
    return SpaceConfig(
        base_model=base,
        cai_model=model,
        constitution=constitution,
        max_new_tokens=args.max_new_tokens,
        max_new_tokens_limit=max(args.max_new_tokens, 1024),
        temperature=args.temperature,
        max_prompt_chars=args.max_prompt_chars,
        load_in_4bit=args.load_in_4bit,
    )


def _port_taken(host: str, port: int, reason: object) -> CommandError:
    return CommandError(
        f"cannot serve on {host}:{port}: the port is already in use ({reason}). Another program is listening there "
        f"(perhaps another `hf-cai chat`): stop it, or pick a free port with --port, e.g. --port {port + 1}."
    )


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`CommandError` naming the port and ``--port`` when ``host:port`` cannot be served on.

    Checked before the models load, so a taken port fails in a second rather than after minutes of loading.
    """
    if not 0 < port < 65536:
        raise CommandError(f"--port {port} is not a port number: use 1-65535 (default 7860)")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise CommandError(f"--host {host}: not an address of this machine ({error})") from error
    with socket.socket(family, kind, protocol) as probe:
        # As the server binds (SO_REUSEADDR): a port left in TIME_WAIT by a stopped server counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except PermissionError as error:
            raise CommandError(
                f"cannot serve on {host}:{port}: {error.strerror}. Ports below 1024 need administrator rights: pick "
                "another with --port (default 7860)."
            ) from error
        except OSError as error:
            raise _port_taken(host, port, error.strerror or error) from error


def _chat(args: argparse.Namespace) -> int:
    from hf_cai.modeling import ModelLoadError
    from hf_cai.spaces.app import create_app

    check_port_free(args.host, args.port)
    config = chat_config(args)
    try:
        demo = create_app(config)
    except ModelLoadError as error:
        raise CommandError(str(error)) from error
    try:
        demo.launch(server_name=args.host, server_port=args.port, inbrowser=args.open_browser)
    except OSError as error:  # taken while the models loaded
        raise _port_taken(args.host, args.port, "taken while the models loaded") from error
    return 0


def _create(args: argparse.Namespace) -> int:
    from hf_cai.hub.errors import HubError
    from hf_cai.hub.space import create_space, write_space_folder

    refuse_token(args)
    options = {
        "base_model": args.base,
        "cai_model": args.model,
        "title": args.title,
        "short_description": args.short_description,
        "license": args.license,
        "hardware": args.hardware,
        "load_in_4bit": args.load_in_4bit,
        "hf_cai_requirement": args.hf_cai_requirement,
    }
    if args.no_push:
        if args.output_dir is None or args.constitution is None:
            raise CommandError("--no-push needs --output-dir (where to write) and --constitution")
        names = write_space_folder(
            args.output_dir, space_repo_id=args.repo_id, constitution=args.constitution, **options
        )
        print(f"wrote the Space files to {args.output_dir}: {', '.join(names)}")
        return 0
    try:
        result = create_space(
            args.repo_id, constitution=args.constitution, private=args.private, output_dir=args.output_dir, **options
        )
    except HubError as error:
        raise CommandError(str(error)) from error
    if result.commit_url:
        print(f"pushed {args.repo_id}: {result.commit_url}")
    else:
        print(f"{args.repo_id} is already up to date: {result.repo_url}")
    return 0


def register(subparsers: Any) -> None:
    space = subparsers.add_parser(
        "space",
        help="generate and publish the side-by-side chat Space",
        description="Generate the Gradio Space that chats with the base and the CAI model side by side, and push it "
        "to the Hub.",
    )
    actions = space.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="write the Space (app, pinned requirements, README, config, constitution, hf_cai wheel) and push it",
        description="The token comes from the HF_TOKEN environment variable or `hf auth login`, never from the "
        "command line. Only the Space's own files are pushed, never other files of --output-dir.",
    )
    create.add_argument("repo_id", help="the Space's Hub id, owner/name")
    create.add_argument("--base", required=True, help="Hub id of the base model")
    create.add_argument("--model", required=True, help="Hub id of the CAI model (LoRA adapter or merged)")
    create.add_argument("--constitution", help="built-in name or file; default: constitution.yaml of --model on the Hub")
    create.add_argument("--private", action="store_true", help="create the Space as private")
    create.add_argument("--hardware", help="suggested hardware, e.g. cpu-basic, zero-a10g, t4-small")
    create.add_argument("--title", help="title shown at the top of the Space (default: '<model name> vs base')")
    create.add_argument("--short-description", help="at most 60 characters")
    create.add_argument("--license", default="apache-2.0", help="license of the Space's files")
    create.add_argument("--load-in-4bit", action="store_true", help="load the base model in 4-bit in the Space")
    create.add_argument(
        "--hf-cai-requirement",
        help="requirement line installing hf-cai in the Space instead of the shipped wheel (e.g. a git+https URL); "
        "needed for a --private Space",
    )
    add_token_option(create)
    create.add_argument("--output-dir", help="keep the generated files in this folder")
    create.add_argument("--no-push", action="store_true", help="only write the files (needs --output-dir)")
    create.set_defaults(handler=_create)

    chat = subparsers.add_parser(
        "chat",
        help="chat with the base and the CAI model side by side in the browser",
        description="Serve the side-by-side chat app on this machine: the same prompt goes to the base and the CAI "
        "model, with the constitution shown beside them. Give a run directory, or the models.",
    )
    chat.add_argument("--run-dir", help="a run directory of `hf-cai run`: serves its last trained model")
    chat.add_argument("--model", help="the CAI model: adapter or merged model, local folder or Hub id")
    chat.add_argument("--base", help="the base model (default: the base of the --model adapter)")
    chat.add_argument("--constitution", help="built-in name or file (default: constitution.yaml beside the model)")
    chat.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1, this machine only)")
    chat.add_argument("--port", type=int, default=7860, help="port to serve on")
    chat.add_argument("--max-new-tokens", type=int, default=256, help="starting value of the reply length slider")
    chat.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 decodes greedily)")
    chat.add_argument("--max-prompt-chars", type=int, default=2000, help="longest prompt accepted, in characters")
    chat.add_argument("--load-in-4bit", action="store_true", help="load the base model in 4-bit (for big models)")
    chat.add_argument("--open-browser", action="store_true", help="open the page in the default browser")
    chat.set_defaults(handler=_chat)
