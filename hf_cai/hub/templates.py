"""Rendering the Jinja card templates of ``model_cards/`` (shipped as the package ``hf_cai.model_cards``).

Templates render with undefined variables as errors, so a template that asks for data we do not have fails loudly
with the template name and line instead of publishing a card with holes.
"""

from __future__ import annotations

import html
import math
import traceback
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from hf_cai.hub.errors import ModelCardError


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


def render_template(name: str, context: dict[str, Any], *, template: str | Path | None = None) -> str:
    """Render the built-in template ``name`` (e.g. ``"model_card.md.j2"``), or the file ``template`` instead.

    Raises:
        ModelCardError: the template is missing, has a syntax error, or fails while rendering; the message names the
            template and line.
    """
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
        raise ModelCardError(f"card template {label}, line {error.lineno}: syntax error: {error.message}") from None
    except Exception as error:  # any failure inside the template is reported with its line
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == label]
        where = f", line {lines[-1]}" if lines else ""
        raise ModelCardError(f"card template {label}{where}: {type(error).__name__}: {error}") from None
