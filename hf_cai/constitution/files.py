"""Constitution files: YAML and JSON read and written with errors that name the line, and the built-in files.

The built-in constitutions are the ``hf_cai/constitutions/*.yaml`` files shipped with the package.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hf_cai.constitution.errors import ConstitutionError

_BUILTIN_FOLDER = "constitutions"


def parse_yaml(text: str, source: str) -> Any:
    """Parsed YAML; a syntax error becomes a :class:`ConstitutionError` naming ``source``, the line and the column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConstitutionError(f"YAML syntax error{where}: {problem}", source=source) from error


def _parse_json(text: str, source: str) -> Any:
    """Parsed JSON; a syntax error becomes a :class:`ConstitutionError` naming ``source``, the line and the column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConstitutionError(
            f"JSON syntax error at line {error.lineno}, column {error.colno}: {error.msg}", source=source
        ) from error


def read_json_file(path: Path) -> Any:
    """Parsed JSON file (see :func:`parse_yaml` for the errors)."""
    return _parse_json(path.read_text(encoding="utf-8"), str(path))


def read_data_file(path: Path) -> Any:
    """Parsed ``.json``, ``.yaml`` or ``.yml`` file."""
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _parse_json(text, str(path))
    if suffix in (".yaml", ".yml"):
        return parse_yaml(text, str(path))
    raise _unknown_extension(path)


def dump_yaml(data: Any) -> str:
    """``data`` as YAML, keys in their given order."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


def dump_json(data: Any) -> str:
    """``data`` as indented JSON ending in a newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


_DUMPERS: dict[str, Callable[[Any], str]] = {".yaml": dump_yaml, ".yml": dump_yaml, ".json": dump_json}


def write_data_file(path: Path, data: Any) -> Path:
    """Write ``data`` as YAML or JSON, chosen by the extension of ``path``; creates the parent folders."""
    dump = _DUMPERS.get(path.suffix.lower())
    if dump is None:
        raise _unknown_extension(path)
    text = dump(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _unknown_extension(path: Path) -> ConstitutionError:
    return ConstitutionError(
        f"unknown file extension '{path.suffix.lower()}'; use .yaml, .yml or .json", source=str(path)
    )


def builtin_names() -> list[str]:
    """Names of the constitutions shipped with hf_cai."""
    folder = resources.files("hf_cai") / _BUILTIN_FOLDER
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def closest_builtin(name: str) -> str | None:
    """The built-in constitution name ``name`` is most likely a typo of, or ``None``."""
    match = difflib.get_close_matches(name, builtin_names(), n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_builtin_error(name: str, *, problem: str | None = None) -> ConstitutionError:
    """The error for a built-in name that does not exist: ``problem`` (default: no such built-in constitution), the
    closest built-in name when one is close (``did you mean 'harmless'?``) and the available names."""
    suggestion = closest_builtin(name)
    hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
    problem = problem or f"no built-in constitution '{name}'"
    return ConstitutionError(f"{problem}{hint}; available: {', '.join(builtin_names())}")


def read_builtin(name: str) -> tuple[Any, str]:
    """The parsed data of the built-in constitution ``name`` and the source its errors name (``builtin:<name>``)."""
    if name not in builtin_names():
        raise unknown_builtin_error(name)
    source = f"builtin:{name}"
    resource = resources.files("hf_cai") / _BUILTIN_FOLDER / f"{name}.yaml"
    return parse_yaml(resource.read_text(encoding="utf-8"), source), source
