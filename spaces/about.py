"""What the two panels of the Space serve, named for people: model names, and links to what exists about them.

The base model is named after its Hub id (``SmolLM2-135M-Instruct``), found from the configured id, the
``hf_cai_source.json`` of a converted folder (:func:`hf_cai.gguf.hub_id_of`), the training record of the CAI model or
the run's manifest; the CAI model is "<base> + CAI (<constitution> v<version>)". Links are made only to what exists:
Hub pages for Hub ids (a published Space), and for a local run the model card and evaluation files it wrote, served by
Gradio from exactly those files (:func:`local_files` lists them for ``gr.set_static_paths``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from hf_cai.artifact_files import TRAINING_RECORD
from hf_cai.constitution import Constitution
from hf_cai.hub.space_config import SpaceConfig

logger = logging.getLogger(__name__)

HUB = "https://huggingface.co"
PAPER_URL = "https://arxiv.org/abs/2212.08073"
"""Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback"."""


@dataclass(frozen=True)
class Link:
    """A link shown beside a panel; ``path`` is set for a local file that the app serves itself."""

    text: str
    url: str
    path: Path | None = None


@dataclass(frozen=True)
class PanelAbout:
    """The name of one panel's model, a few words on what it is, and links to its card, evaluation, paper."""

    name: str
    detail: str = ""
    links: tuple[Link, ...] = ()

    def markdown(self, role: str) -> str:
        """One line: ``**role** — detail · [link](url) · ...``."""
        parts = [self.detail] if self.detail else []
        parts += [f"[{link.text}]({link.url})" for link in self.links]
        return f"**{role}**" + (" — " + " · ".join(parts) if parts else "")


def _hub_id(name_or_path: str | None) -> str | None:
    """The Hub id behind a configured model: the id itself, an embedded alias's id, or a converted folder's."""
    from hf_cai.gguf import hub_id_of
    from hf_cai.hub.repo_id import repo_id_problem

    if not name_or_path:
        return None
    try:
        known = hub_id_of(name_or_path)
    except (OSError, ValueError) as error:  # an unreadable hf_cai_source.json
        logger.warning("cannot read the Hub id of %s: %s", name_or_path, error)
        known = None
    if known:
        return known
    if not Path(name_or_path).exists() and repo_id_problem(name_or_path, owner_required=True) is None:
        return name_or_path
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("ignoring %s: %s", path, error)
        return {}
    return data if isinstance(data, dict) else {}


def _local_training(cai_model: str | None):
    """The located training output of a local CAI model folder (record, run directory, evaluation), or ``None``."""
    from hf_cai.hub.errors import PublishError
    from hf_cai.hub.source import locate_training_output

    if not cai_model or not Path(cai_model).is_dir():
        return None
    try:
        return locate_training_output(cai_model)
    except PublishError as error:
        logger.warning("no training record found for %s: %s", cai_model, error)
        return None


def _file_link(text: str, path: Path) -> Link:
    """A link to a local file, through Gradio's file route (relative, so it works under any root path)."""
    path = path.resolve()
    return Link(text, f"gradio_api/file={quote(str(path))}", path)


def describe_models(config: SpaceConfig, constitution: Constitution, *, cai_is_adapter: bool) -> dict[str, PanelAbout]:
    """``{"base": ..., "cai": ...}`` (``"cai"`` only when a CAI model is configured) for the panel labels and links."""
    training = _local_training(config.cai_model)
    record = training.record if training is not None else {}
    if not record and config.cai_model and Path(config.cai_model, TRAINING_RECORD).is_file():
        record = _read_json(Path(config.cai_model, TRAINING_RECORD))
    manifest = {}
    if training is not None and training.run_dir is not None and (training.run_dir / "manifest.json").is_file():
        manifest = _read_json(training.run_dir / "manifest.json")

    base_id = (
        _hub_id(config.base_model)
        or _hub_id(record.get("base_model"))
        or _hub_id((manifest.get("run") or {}).get("base_model_id"))
    )
    base_name = base_id.split("/")[-1] if base_id else Path(config.base_model).name or config.base_model
    base_links = (Link("model card", f"{HUB}/{base_id}"),) if base_id else ()
    base_detail = "" if base_id else f"local folder `{Path(config.base_model).name}`"
    panels = {"base": PanelAbout(base_name, base_detail, base_links)}
    if not config.cai_model:
        return panels

    trained_with = record.get("constitution") if isinstance(record.get("constitution"), dict) else {}
    name = trained_with.get("name") or constitution.name
    version = trained_with.get("version") or constitution.version
    cai_name = f"{base_name} + CAI ({name} v{version})"
    links: list[Link] = []
    if training is not None:
        run_dir = training.run_dir
        card = run_dir / "card" / "README.md" if run_dir is not None else None
        if card is not None and card.is_file():
            links.append(_file_link("model card", card))
        chart = run_dir / "eval" / "chart.png" if run_dir is not None else None
        if chart is not None and chart.is_file():
            links.append(_file_link("evaluation", chart))
        elif training.eval_results_path is not None:
            links.append(_file_link("evaluation", training.eval_results_path))
    elif _hub_id(config.cai_model) == config.cai_model:
        # Model cards written by hf-cai always have an "Evaluation" section (saying so when none was run).
        links += [Link("model card", f"{HUB}/{config.cai_model}"),
                  Link("evaluation", f"{HUB}/{config.cai_model}#evaluation")]
    links.append(Link("paper", PAPER_URL))
    detail = "LoRA adapter on the base model" if cai_is_adapter else "merged model"
    panels["cai"] = PanelAbout(cai_name, detail, tuple(links))
    return panels


def local_files(panels: dict[str, PanelAbout]) -> list[Path]:
    """The local files the panels link to (to be served by Gradio, and nothing else)."""
    return [link.path for panel in panels.values() for link in panel.links if link.path is not None]
