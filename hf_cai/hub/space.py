"""Generate the side-by-side chat Space of a CAI model and push it to the Hub (repo type ``space``).

The Space holds exactly these files: ``app.py`` (copied from :mod:`hf_cai.spaces.app`), ``requirements.txt`` pinned
to the versions installed here, a ``README.md`` with the Spaces front matter, ``space_config.json``, the
``constitution.yaml`` the model was trained with, and the wheel of the hf_cai that generated it
(``hf_cai-<version>-py3-none-any.whl``). A Space build sees only ``requirements.txt``, so that file names the wheel by
its download URL in the Space repository, with its sha256: pip installs that very file. Every file is checked for
access tokens before the push, and other files in the output folder are never uploaded.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from importlib import metadata, resources
from pathlib import Path

from hf_cai import __version__
from hf_cai.artifact_files import CONSTITUTION_FILE
from hf_cai.constitution import Constitution
from hf_cai.errors import InputError
from hf_cai.hub.commit import UploadFile
from hf_cai.hub.errors import PublishError, hub_errors
from hf_cai.hub.publication import PublishResult, commit_publication, resolve_token
from hf_cai.hub.repo_id import repo_id_problem
from hf_cai.hub.space_config import CONFIG_FILE_NAME, SpaceConfig
from hf_cai.hub.wheel import build_hf_cai_wheel

logger = logging.getLogger(__name__)

SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
MAX_SHORT_DESCRIPTION = 60
PINNED_PACKAGES = ("torch", "transformers", "peft", "accelerate", "huggingface_hub", "gradio")
SPACE_TAGS = ("constitutional-ai", "hf-cai", "chat", "side-by-side")
SPACE_FILES = ("app.py", "requirements.txt", "README.md", CONFIG_FILE_NAME, CONSTITUTION_FILE)
"""The files of every Space (the hf_cai wheel comes with them unless another requirement installs hf-cai)."""
SPACE_WHEELS = ("hf_cai-*.whl",)
"""Wheels of earlier pushes, deleted when a push ships another one."""


def _check_hub_ids(space_repo_id: str, base_model: str, cai_model: str) -> None:
    """Refuse a local path or a malformed id where the Space needs a Hub id (``ValueError``). The Space's own id must
    name its owner: ``requirements.txt`` downloads the wheel from that repository."""
    for value, what in ((space_repo_id, "space_repo_id"), (base_model, "base_model"), (cai_model, "cai_model")):
        if Path(value).exists():
            raise InputError(
                f"{what} '{value}' is a local path; the Space downloads its models from the Hub, so pass the Hub id "
                "(publish the model first with `hf-cai publish`)."
            )
        problem = repo_id_problem(value, owner_required=what == "space_repo_id")
        if problem is not None:
            raise InputError(f"{what} '{value}' is not a valid Hub repo id: {problem}")


def _pins(load_in_4bit: bool) -> list[tuple[str, str]]:
    names = [*PINNED_PACKAGES, *(("bitsandbytes",) if load_in_4bit else ())]
    # A local build tag ("2.13.0+cpu") names a wheel that only exists on this machine's index.
    return [(name, re.sub(r"\+.*$", "", metadata.version(name))) for name in names]


def _template(name: str):
    import jinja2

    source = (resources.files("hf_cai.spaces") / name).read_text(encoding="utf-8")
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return environment.from_string(source)


def _default_short_description(cai_model: str) -> str:
    text = f"Base vs CAI chat: {cai_model.split('/')[-1]}"
    return text if len(text) <= MAX_SHORT_DESCRIPTION else text[: MAX_SHORT_DESCRIPTION - 1] + "…"


def check_installable(private: bool, hf_cai_requirement: str | None) -> None:
    """Refuse a private Space that would install hf-cai from its own repository.

    A Space build downloads what ``requirements.txt`` names without a token, so it cannot fetch the wheel from a
    private Space; such a Space needs a requirement line that installs hf-cai from elsewhere.
    """
    if private and hf_cai_requirement is None:
        raise PublishError(
            "a private Space cannot install the hf_cai wheel it ships: its build downloads requirements.txt entries "
            "without a token. Pass hf_cai_requirement (for example "
            "'hf-cai @ git+https://github.com/OWNER/hf-cai@TAG'), or make the Space public."
        )


def _wheel_requirement(space_repo_id: str, wheel: Path) -> str:
    """The requirement line installing ``wheel`` from the Space repository, pinned by its sha256."""
    from huggingface_hub import hf_hub_url

    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return f"hf-cai @ {hf_hub_url(space_repo_id, wheel.name, repo_type='space')}#sha256={digest}"


def write_space_folder(
    folder: str | Path,
    *,
    space_repo_id: str,
    base_model: str,
    cai_model: str,
    constitution: Constitution | str | Path,
    cai_is_adapter: bool = True,
    title: str | None = None,
    short_description: str | None = None,
    emoji: str = "⚖️",
    color_from: str = "indigo",
    color_to: str = "green",
    license: str = "apache-2.0",
    tags: tuple[str, ...] = (),
    hardware: str | None = None,
    load_in_4bit: bool = False,
    hf_cai_requirement: str | None = None,
) -> list[str]:
    """Write the files of the chat Space into ``folder`` (created if needed) and return their names.

    The names are those of :data:`SPACE_FILES` and, unless ``hf_cai_requirement`` is given, of the hf_cai wheel.
    Other files already in ``folder`` are left alone and are not part of the Space.

    Args:
        folder: Where to write the Space files.
        space_repo_id: The Space's Hub id (``owner/name``), used in the README.
        base_model: Hub id of the base model.
        cai_model: Hub id of the CAI model: a LoRA adapter on ``base_model`` or a merged model.
        constitution: The constitution (object, built-in name or file) the CAI model was trained with.
        cai_is_adapter: Whether ``cai_model`` is a LoRA adapter (only changes the README wording; the app detects it).
        title: Space title; defaults to ``"<cai model name> vs base"``.
        short_description: One line of at most 60 characters shown on the Space card.
        emoji: Emoji of the Space card.
        color_from: Start colour of the card gradient (one of ``SPACE_COLORS``).
        color_to: End colour of the card gradient (one of ``SPACE_COLORS``).
        license: License of the Space's files (the app code is Apache-2.0).
        tags: Extra tags besides ``constitutional-ai``, ``hf-cai``, ...
        hardware: Suggested hardware (``suggested_hardware`` in the front matter), e.g. ``"zero-a10g"`` or
            ``"t4-small"``; the Space owner still picks the hardware in the Space settings.
        load_in_4bit: Load the base model in 4-bit NF4 in the Space (adds bitsandbytes to the requirements).
        hf_cai_requirement: The requirement line that installs hf-cai in the Space (e.g.
            ``hf-cai @ git+https://github.com/OWNER/hf-cai@vX.Y.Z``). By default the wheel of the running hf_cai is
            written into the folder and ``requirements.txt`` installs it from the Space repository.
    """
    from huggingface_hub import SpaceCard, SpaceCardData, SpaceHardware

    _check_hub_ids(space_repo_id, base_model, cai_model)
    for name, color in (("color_from", color_from), ("color_to", color_to)):
        if color not in SPACE_COLORS:
            raise InputError(f"{name} '{color}' is not a Space colour; choose one of {', '.join(SPACE_COLORS)}")
    short_description = short_description or _default_short_description(cai_model)
    if len(short_description) > MAX_SHORT_DESCRIPTION:
        raise InputError(
            f"short_description has {len(short_description)} characters; the Hub allows {MAX_SHORT_DESCRIPTION}: "
            f"{short_description!r}"
        )
    hardware_values = [h.value for h in SpaceHardware]
    if hardware is not None and hardware not in hardware_values:
        raise InputError(f"hardware '{hardware}' is unknown; choose one of {', '.join(hardware_values)}")
    constitution = Constitution.resolve(constitution)
    title = title or f"{cai_model.split('/')[-1]} vs base"
    config = SpaceConfig(
        base_model=base_model,
        cai_model=cai_model,
        constitution=CONSTITUTION_FILE,
        title=title,
        load_in_4bit=load_in_4bit,
    )

    card_data = SpaceCardData(
        title=title,
        emoji=emoji,
        colorFrom=color_from,
        colorTo=color_to,
        sdk="gradio",
        sdk_version=metadata.version("gradio"),
        app_file="app.py",
        pinned=False,
        license=license,
        short_description=short_description,
        models=[base_model, cai_model],
        tags=list(dict.fromkeys([*SPACE_TAGS, *tags])),
        suggested_hardware=hardware or None,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(SPACE_FILES)
    wheel = None
    if hf_cai_requirement is None:
        wheel = build_hf_cai_wheel(folder)
        hf_cai_requirement = _wheel_requirement(space_repo_id, wheel)
        names.append(wheel.name)
    (folder / "app.py").write_text(
        (resources.files("hf_cai.spaces") / "app.py").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (folder / "requirements.txt").write_text(
        _template("requirements.txt.j2").render(
            hf_cai_version=__version__,
            hf_cai_requirement=hf_cai_requirement,
            wheel_name=wheel.name if wheel else None,
            pins=_pins(load_in_4bit),
        ),
        encoding="utf-8",
    )
    readme = _template("README.md.j2").render(
        front_matter=card_data.to_yaml() + "\n",
        title=title,
        base_model=base_model,
        cai_model=cai_model,
        cai_is_adapter=cai_is_adapter,
        constitution=constitution,
        space_repo_id=space_repo_id,
        config=config,
    )
    SpaceCard(readme).save(folder / "README.md")
    config.save(folder / CONFIG_FILE_NAME)
    constitution.save(folder / CONSTITUTION_FILE)
    logger.info("wrote the Space files for %s in %s", space_repo_id, folder)
    return names


def create_space(
    space_repo_id: str,
    *,
    base_model: str,
    cai_model: str,
    constitution: Constitution | str | Path | None = None,
    token: str | None = None,
    private: bool = False,
    hardware: str | None = None,
    title: str | None = None,
    short_description: str | None = None,
    license: str = "apache-2.0",
    load_in_4bit: bool = False,
    hf_cai_requirement: str | None = None,
    cai_is_adapter: bool | None = None,
    output_dir: str | Path | None = None,
    commit_message: str | None = None,
) -> PublishResult:
    """Generate the chat Space of a CAI model and push it to ``space_repo_id`` in one commit.

    Only the Space's own files are pushed (see :data:`SPACE_FILES`), after a check that none holds an access token;
    a commit is made only when one of them changed.

    Args:
        space_repo_id: The Space's Hub id (``owner/name``); created (type ``space``, SDK gradio) if missing.
        base_model: Hub id of the base model.
        cai_model: Hub id of the published CAI model (adapter or merged).
        constitution: Constitution object, built-in name or file; defaults to the ``constitution.yaml`` published
            with ``cai_model``.
        token: Hub token with write access; defaults to ``HF_TOKEN`` or the saved login. Never logged.
        private: Create the Space as private (needs ``hf_cai_requirement``, see :func:`check_installable`).
        hardware: Suggested hardware written into the front matter (see :func:`write_space_folder`).
        title: Space title (see :func:`write_space_folder`).
        short_description: One line of at most 60 characters for the Space card.
        license: License of the Space's files.
        load_in_4bit: Load the base model in 4-bit NF4 in the Space.
        hf_cai_requirement: Requirement line that installs hf-cai in the Space instead of the shipped wheel.
        cai_is_adapter: Whether ``cai_model`` is a LoRA adapter; read from the Hub (``adapter_config.json``) when
            ``None``.
        output_dir: Keep the generated files there; a temporary folder is used otherwise.
        commit_message: Message of the commit; a default names the models.

    Returns:
        :class:`~hf_cai.hub.publication.PublishResult` of the Space (``repo_url``, ``commit_url``, the files pushed).

    Raises:
        ValueError: a local path or malformed id where a Hub id is needed, or a bad front-matter value.
        PublishError: no token, a private Space without ``hf_cai_requirement``, a file holding a token, or a Hub
            failure (401/403/409/5xx, ...), with what to do; the token is never shown.
    """
    from hf_cai.modeling import is_peft_adapter

    _check_hub_ids(space_repo_id, base_model, cai_model)
    check_installable(private, hf_cai_requirement)
    token = resolve_token(token)
    if constitution is None:
        with hub_errors(f"reading {CONSTITUTION_FILE} of {cai_model}", token, PublishError):
            constitution = Constitution.from_hub(cai_model, token=token)
    if cai_is_adapter is None:
        cai_is_adapter = is_peft_adapter(cai_model, token=token)

    def push(folder: Path) -> PublishResult:
        names = write_space_folder(
            folder,
            space_repo_id=space_repo_id,
            base_model=base_model,
            cai_model=cai_model,
            constitution=constitution,
            cai_is_adapter=cai_is_adapter,
            title=title,
            short_description=short_description,
            license=license,
            hardware=hardware,
            load_in_4bit=load_in_4bit,
            hf_cai_requirement=hf_cai_requirement,
        )
        return commit_publication(
            space_repo_id,
            [UploadFile(name, folder / name) for name in names],
            repo_type="space",
            token=token,
            commit_message=commit_message or f"Side-by-side chat: {base_model} vs {cai_model} (hf-cai {__version__})",
            replaces=SPACE_WHEELS,
            private=private,
            space_sdk="gradio",
        )

    if output_dir is not None:
        return push(Path(output_dir))
    with tempfile.TemporaryDirectory(prefix="hf-cai-space-") as folder:
        return push(Path(folder))
