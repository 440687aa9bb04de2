"""Rendering the cards from the Jinja templates of ``model_cards/`` (shipped as the package ``hf_cai.model_cards``).

:func:`render_card` does what ``ModelCard.from_template`` / ``DatasetCard.from_template`` of ``huggingface_hub`` do
(render a Jinja template given ``card_data`` as YAML, then parse the text as a card), and what they cannot: those
render with a bare ``jinja2.Template``, so a template cannot use this module's filters (``cell``, ``quote``,
``fmt``, ...) or block trimming, an undefined variable renders as nothing, and errors carry no template name. Here
undefined variables are errors, so a template that asks for data we do not have fails loudly with the template name
and line instead of publishing a card with holes.
"""

from __future__ import annotations

import html
import math
import traceback
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import jinja2

from hf_cai.hub.errors import ModelCardError

Card = TypeVar("Card")


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: one line, pipes and HTML escaped."""
    text = " ".join(_format(value).split())
    return html.escape(text, quote=False).replace("|", "\\|")


def _quote(value: Any, limit: int = 700) -> str:
    """Model-written text as a Markdown block quote, HTML escaped and shortened to ``limit`` characters."""
    text = _shorten(str(value or "").strip(), limit) or "(empty)"
    return "\n".join(f"> {html.escape(line, quote=False)}".rstrip() for line in text.splitlines())


def _shorten(value: Any, limit: int = 160) -> str:
    text = str(value or "")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _format(value: Any) -> str:
    """Numbers with four significant digits, lists comma-separated, ``None`` as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format(v)}" for k, v in value.items())
    return str(value)


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.1%}"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True
    )
    environment.filters.update(cell=_cell, quote=_quote, shorten=_shorten, fmt=_format, percent=_percent)
    return environment


def render_card(
    card_type: type[Card], card_data, name: str, context: dict[str, Any], *, template: str | Path | None = None
) -> Card:
    """A card of ``card_type`` (``huggingface_hub.ModelCard`` or ``DatasetCard``) rendered from the built-in template
    ``name`` (e.g. ``"model_card.md.j2"``), or from the file ``template`` instead.

    The template sees ``context`` and ``card_data`` (a ``CardData``) as the YAML of the metadata block.

    Raises:
        ModelCardError: the template is missing, has a syntax error, or fails while rendering (the message names the
            template and line), or the rendered metadata is not valid.
    """
    text = _render(name, {**context, "card_data": card_data.to_yaml()}, template=template)
    try:
        return card_type(text)
    except ValueError as error:
        raise ModelCardError(f"the rendered {card_type.repo_type} card has invalid metadata: {error}") from error


def _render(name: str, context: dict[str, Any], *, template: str | Path | None) -> str:
    if template is not None:
        path = Path(template)
        if not path.is_file():
            raise ModelCardError(f"card template {path}: no such file")
        label, source = str(path), path.read_text(encoding="utf-8")
    else:
        label, source = name, (resources.files("hf_cai.model_cards") / name).read_text(encoding="utf-8")
    environment = _environment()
    # A function loader (unlike a dict loader) gives the template a file name, which tracebacks then carry.
    environment.loader = jinja2.FunctionLoader(
        lambda requested: (source, label, lambda: True) if requested == label else None
    )
    try:
        return environment.get_template(label).render(**context)
    except jinja2.TemplateSyntaxError as error:
        raise ModelCardError(f"card template {label}, line {error.lineno}: syntax error: {error.message}") from error
    except Exception as error:  # any failure inside the template is reported with its line
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == label]
        where = f", line {lines[-1]}" if lines else ""
        raise ModelCardError(f"card template {label}{where}: {type(error).__name__}: {error}") from error
