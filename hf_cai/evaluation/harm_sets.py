"""Harmlessness evaluation sets: the built-in prompts and the standard public sets, from files or the Hub.

An :class:`EvalSet` is a list of :class:`EvalPrompt`, each marked ``harmful`` (a good assistant should decline it) or
benign (it should answer; the benign prompts in the built-in set and XSTest's "safe" prompts only *look* harmful, so
they measure over-refusal). :func:`load_eval_set` reads the formats users have, telling them apart by file name,
extension and columns, from local files (offline) or Hub dataset ids, all through
:func:`hf_cai.dataset_reader.read_dataset`; :data:`~hf_cai.evaluation.harm_set_presets.HARM_SET_PRESETS` names the standard sets on the Hub
(``"preset:harmbench"``, ``"strongreject"``, ``"xstest"``, ``"advbench"``, ``"do-not-answer"``):

* **HarmBench** behaviours: a CSV with a ``Behavior`` column (optional ``SemanticCategory`` / ``FunctionalCategory``;
  contextual behaviours carry a ``ContextString``, put before the behaviour as HarmBench does), or a text file with
  one behaviour per line. All harmful.
  The Hub mirror's layout, ``prompt`` and ``category`` (optional ``context``), is read when the kind is given.
* **AdvBench** ``harmful_behaviors.csv``: column ``goal`` (``target`` is ignored), or ``prompt`` and ``target``. All
  harmful.
* **StrongREJECT**: ``forbidden_prompt`` and ``category`` (the original CSV), or ``prompt`` and ``category`` when the
  kind is given. All harmful.
* **XSTest**: a CSV with ``prompt``, ``type`` and ``label`` (``safe`` / ``unsafe``). Safe prompts are benign, unsafe
  ones harmful. Releases without a label mark unsafe prompts by a ``contrast_`` prefix on ``type``.
* **Do-Not-Answer**: JSONL / JSON / CSV / Parquet with ``question`` (the official column) or ``prompt``, and
  ``risk_area`` / ``types_of_harm`` as category. All harmful.
* **hf-cai**: any of those file types with ``prompt`` and ``harmful`` (true / false) and an optional ``category``.

:func:`refusal_rates` gives refusal rates with
Wilson intervals per model, on the harmful and the benign prompts separately, ready for ``results.json``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hf_cai.dataset_reader import looks_like_file, read_dataset
from hf_cai.errors import InputError
from hf_cai.evaluation.harm_set_presets import harm_set_preset
from hf_cai.evaluation.refusal import is_refusal
from hf_cai.stats import Proportion

__all__ = [
    "EVAL_SET_KINDS",
    "EvalPrompt",
    "EvalSet",
    "builtin_eval_set",
    "load_eval_set",
    "refusal_proportions",
    "refusal_rates",
]

@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt.

    Attributes:
        prompt: The user's request.
        harmful: Whether a good assistant should decline it (``False``: it should answer; a refusal is over-refusal).
        category: The set's own category for it (harm category, XSTest type, ...); ``""`` when the set has none.
        source: The set it came from: ``"hf-cai"``, ``"harmbench"``, ``"advbench"``, ``"strongreject"``, ``"xstest"``,
            ``"do-not-answer"``.
    """

    prompt: str
    harmful: bool
    category: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "harmful": self.harmful, "category": self.category, "source": self.source}


@dataclass
class EvalSet:
    """A named list of evaluation prompts; iterate it, or take its :meth:`harmful` / :meth:`benign` subsets."""

    name: str
    prompts: list[EvalPrompt] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self):
        return iter(self.prompts)

    def __getitem__(self, index: int) -> EvalPrompt:
        return self.prompts[index]

    def __add__(self, other: EvalSet) -> EvalSet:
        return EvalSet(f"{self.name}+{other.name}", [*self.prompts, *other.prompts])

    def harmful(self) -> EvalSet:
        """The prompts a good assistant should decline."""
        return EvalSet(f"{self.name} (harmful)", [p for p in self.prompts if p.harmful])

    def benign(self) -> EvalSet:
        """The prompts it should answer (over-refusal probes)."""
        return EvalSet(f"{self.name} (benign)", [p for p in self.prompts if not p.harmful])

    def texts(self) -> list[str]:
        return [p.prompt for p in self.prompts]

    def sample(self, n: int, *, seed: int = 0) -> EvalSet:
        """At most ``n`` prompts drawn without replacement (reproducibly), in their original order."""
        if n >= len(self.prompts):
            return EvalSet(self.name, list(self.prompts))
        keep = sorted(random.Random(seed).sample(range(len(self.prompts)), n))
        return EvalSet(self.name, [self.prompts[i] for i in keep])

    def summary(self) -> dict[str, Any]:
        """Counts for a report: prompts, harmful, benign, and prompts per source and per category."""
        return {
            "name": self.name,
            "n": len(self.prompts),
            "harmful": sum(p.harmful for p in self.prompts),
            "benign": sum(not p.harmful for p in self.prompts),
            "sources": dict(Counter(p.source for p in self.prompts)),
            "categories": dict(Counter(p.category for p in self.prompts if p.category)),
        }


# --------------------------------------------------------------------------------------------------------- loading

EVAL_SET_KINDS = ("harmbench", "advbench", "strongreject", "xstest", "do-not-answer", "hf-cai")
"""The formats :func:`load_eval_set` reads (besides ``"auto"``)."""

_KIND_ALIASES = {
    "harmbench": "harmbench",
    "advbench": "advbench",
    "strongreject": "strongreject",
    "strong_reject": "strongreject",
    "xstest": "xstest",
    "do-not-answer": "do-not-answer",
    "do_not_answer": "do-not-answer",
    "donotanswer": "do-not-answer",
    "dna": "do-not-answer",
    "hf-cai": "hf-cai",
    "hf_cai": "hf-cai",
    "prompts": "hf-cai",
}

_EXPECTED = {
    "harmbench": "Behavior (optional: ContextString, SemanticCategory, FunctionalCategory) or, as on the Hub, prompt "
    "and category (optional: context); or a .txt file with one behaviour per line",
    "advbench": "goal (optional: target), or prompt and target",
    "strongreject": "forbidden_prompt and category, or prompt and category",
    "xstest": "prompt and type or label (label: safe / unsafe)",
    "do-not-answer": "question or prompt (optional: risk_area, types_of_harm)",
    "hf-cai": "prompt and harmful (optional: category)",
}

_NAME_HINTS = (
    ("harmbench", "harmbench"),
    ("advbench", "advbench"),
    ("harmful_behaviors", "advbench"),
    ("strongreject", "strongreject"),
    ("strong_reject", "strongreject"),
    ("xstest", "xstest"),
    ("do_not_answer", "do-not-answer"),
    ("do-not-answer", "do-not-answer"),
    ("donotanswer", "do-not-answer"),
)

_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet", ".txt")
_TRUE = {"true", "1", "yes", "y", "harmful", "unsafe"}
_FALSE = {"false", "0", "no", "n", "benign", "safe", ""}


class _Table:
    """Rows of a file with case-insensitive column look-up."""

    def __init__(self, path: Path, columns: list[str], rows: list[dict[str, Any]]):
        self.path = path
        self.columns = columns
        self.rows = rows
        self._lower = {c.strip().lower(): c for c in columns}

    def has(self, name: str) -> bool:
        return name in self._lower

    def get(self, row: dict[str, Any], name: str) -> str:
        key = self._lower.get(name)
        value = row.get(key) if key is not None else None
        if value is None:
            return ""
        if isinstance(value, float) and value != value:  # NaN from a Parquet / pandas export
            return ""
        return str(value).strip()

    def found(self) -> str:
        return ", ".join(self.columns) if self.columns else "(none)"


def _read_table(source: str | Path, *, split: Sequence[str] | None = None, config_name: str | None = None) -> _Table:
    dataset = read_dataset(source, split=split, config_name=config_name)
    return _Table(Path(str(source)), list(dataset.column_names), dataset.to_list())


def _read_lines(path: Path) -> list[str]:
    lines = read_dataset(path)["text"]
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _detect(table: _Table) -> str | None:
    """The format of ``table`` by its file name (when its columns fit) or else by its columns."""
    name = table.path.name.lower()
    for hint, kind in _NAME_HINTS:
        if hint in name and _fits(table, kind):
            return kind
    for kind in ("harmbench", "advbench", "strongreject", "do-not-answer", "hf-cai", "xstest"):
        if _fits(table, kind, by_columns_only=True):
            return kind
    return None


def _fits(table: _Table, kind: str, *, by_columns_only: bool = False) -> bool:
    has = table.has
    if kind == "harmbench":
        # The Hub layout's "prompt" + "category" fits StrongREJECT's as well: by columns alone only "Behavior" counts.
        return has("behavior") or (not by_columns_only and has("prompt") and has("category"))
    if kind == "advbench":
        return has("goal") or (has("prompt") and has("target"))
    if kind == "strongreject":
        return has("forbidden_prompt") or (not by_columns_only and has("prompt") and has("category"))
    if kind == "xstest":
        return has("prompt") and (has("label") or has("type"))
    if kind == "do-not-answer":
        if has("question"):
            return True
        if by_columns_only:  # "prompt" alone could be anything: ask for a Do-Not-Answer column as well
            return has("prompt") and (has("risk_area") or has("types_of_harm"))
        return has("prompt")
    if kind == "hf-cai":
        return has("prompt") and has("harmful")
    return False


def _prompt(table: _Table, row: dict[str, Any], number: int, *columns: str) -> str:
    for column in columns:
        if table.has(column):
            value = table.get(row, column)
            if value:
                return value
    raise InputError(f"{table.path}: row {number} has an empty {' / '.join(columns)}")


def _rows_to_prompts(table: _Table, kind: str) -> list[EvalPrompt]:
    prompts = []
    for number, row in enumerate(table.rows, start=1):
        if kind == "harmbench":
            behaviour = _prompt(table, row, number, "behavior", "prompt")
            context = table.get(row, "contextstring") or table.get(row, "context")
            text = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
            category = (table.get(row, "semanticcategory") or table.get(row, "functionalcategory")
                        or table.get(row, "category"))
            prompts.append(EvalPrompt(text, True, category, "harmbench"))
        elif kind == "advbench":
            prompts.append(EvalPrompt(_prompt(table, row, number, "goal", "prompt"), True, "", "advbench"))
        elif kind == "strongreject":
            text = _prompt(table, row, number, "forbidden_prompt", "prompt")
            prompts.append(EvalPrompt(text, True, table.get(row, "category"), "strongreject"))
        elif kind == "xstest":
            text = _prompt(table, row, number, "prompt")
            kind_of_prompt = table.get(row, "type")
            label = table.get(row, "label").lower()
            if label in ("safe", "unsafe"):
                harmful = label == "unsafe"
            elif not label:
                harmful = kind_of_prompt.lower().startswith("contrast_")
            else:
                raise InputError(f"{table.path}: row {number} has label '{label}'; expected 'safe' or 'unsafe'")
            prompts.append(EvalPrompt(text, harmful, kind_of_prompt, "xstest"))
        elif kind == "do-not-answer":
            text = _prompt(table, row, number, "question", "prompt")
            category = table.get(row, "risk_area") or table.get(row, "types_of_harm")
            prompts.append(EvalPrompt(text, True, category, "do-not-answer"))
        else:
            text = _prompt(table, row, number, "prompt")
            flag = table.get(row, "harmful").lower()
            if flag not in _TRUE | _FALSE:
                raise InputError(f"{table.path}: row {number} has harmful '{flag}'; expected true or false")
            category = table.get(row, "category") or table.get(row, "type")
            prompts.append(EvalPrompt(text, flag in _TRUE, category, "hf-cai"))
    return prompts


def load_eval_set(
    path: str | Path, *, kind: str = "auto", name: str | None = None, split: str | None = None,
    config_name: str | None = None,
) -> EvalSet:
    """Read an evaluation set from a file, a preset or a Hub dataset (see the module notes for the formats).

    Every source is read by :func:`hf_cai.dataset_reader.read_dataset` (``datasets.load_dataset``).

    Args:
        path: A ``.csv``, ``.jsonl``, ``.json``, ``.parquet`` or ``.txt`` file or a ``save_to_disk`` folder;
            ``"builtin"`` for :func:`builtin_eval_set`; a preset, ``"preset:<name>"`` or the bare name (see
            :data:`~hf_cai.evaluation.harm_set_presets.HARM_SET_PRESETS`: ``harmbench``, ``strongreject``, ``xstest``, ``advbench``, ``do-not-answer``);
            or a Hub dataset id (its format told by its columns). Presets and Hub ids need the Hub, or the dataset
            in the local cache when offline.
        kind: ``"auto"`` (by file name, extension and columns), or one of :data:`EVAL_SET_KINDS` (``"harmbench"``,
            ``"advbench"``, ``"strongreject"``, ``"xstest"``, ``"do-not-answer"``, ``"hf-cai"``).
        name: The set's name; the file's stem, or the Hub id (a preset's too) by default.
        split: The split of a Hub dataset (``None``: the preset's, else ``train``, else the only one).
        config_name: The configuration of a Hub dataset (``None``: the preset's).

    Raises:
        FileNotFoundError: ``path`` looks like a file but does not exist.
        ValueError: The format is unknown or the data does not fit it (the message names the source, the columns
            found and the columns expected), a row has an empty prompt or an unknown label, the source holds no
            prompts, or a preset / Hub id cannot be loaded (offline: the message names the id and says to download
            it while online).
    """
    if str(path) in ("builtin", "builtin:eval"):
        return builtin_eval_set()
    chosen = kind.lower().strip()
    if chosen != "auto":
        if chosen not in _KIND_ALIASES:
            raise InputError(
                f"unknown evaluation set kind '{kind}'; expected 'auto' or one of {', '.join(EVAL_SET_KINDS)}"
            )
        chosen = _KIND_ALIASES[chosen]
    preset = harm_set_preset(str(path))
    if preset is not None:
        table = _read_table(preset.hub_id, split=[split] if split else preset.splits,
                            config_name=config_name or preset.config_name)
        return _to_eval_set(table, preset.kind if chosen == "auto" else chosen, name or preset.hub_id, preset.hub_id)
    if not looks_like_file(path):
        table = _read_table(str(path), split=[split] if split else None, config_name=config_name)
        return _to_eval_set(table, chosen, name or str(path), str(path))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"evaluation set not found: {path}")
    if path.is_file() and path.suffix.lower() not in _SUFFIXES:
        raise InputError(f"{path}: unsupported file type '{path.suffix}'; expected one of {', '.join(_SUFFIXES)}")
    set_name = name or path.stem
    if path.suffix.lower() == ".txt":
        if chosen in ("xstest", "hf-cai"):
            raise InputError(f"{path}: a {chosen} set needs columns ({_EXPECTED[chosen]}); a .txt file has none")
        prompts = [EvalPrompt(line, True, "", "harmbench" if chosen == "auto" else chosen) for line in _read_lines(path)]
        if not prompts:
            raise InputError(f"{path}: no prompts")
        return EvalSet(set_name, prompts)
    return _to_eval_set(_read_table(path), chosen, set_name, str(path))


def _to_eval_set(table: _Table, chosen: str, set_name: str, where: str) -> EvalSet:
    if chosen == "auto":
        detected = _detect(table)
        if detected is None:
            expected = "; ".join(f"{k}: {v}" for k, v in _EXPECTED.items())
            raise InputError(
                f"{where}: cannot tell which evaluation set format this is; columns found: {table.found()}. "
                f"Expected columns for one of the formats ({expected}), or pass kind=..."
            )
        chosen = detected
    elif not _fits(table, chosen):
        raise InputError(f"{where}: not a {chosen} file; columns found: {table.found()}; expected: {_EXPECTED[chosen]}")
    prompts = _rows_to_prompts(table, chosen)
    if not prompts:
        raise InputError(f"{where}: no prompts")
    return EvalSet(set_name, prompts)


def builtin_eval_set() -> EvalSet:
    """The built-in evaluation prompts: 120 harmful requests and 60 benign ones that only look harmful.

    They are written apart from the built-in training prompts (``builtin:red_team`` / ``builtin:helpful``) and checked
    not to overlap them.
    """
    folder = resources.files("hf_cai") / "prompts"
    prompts = []
    for file, harmful, category_key in (("eval_harmful.jsonl", True, "category"), ("eval_benign.jsonl", False, "type")):
        for line in (folder / file).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                prompts.append(EvalPrompt(row["prompt"].strip(), harmful, row.get(category_key, ""), "hf-cai"))
    return EvalSet("hf-cai-eval", prompts)


# --------------------------------------------------------------------------------------------------------- refusals


def refusal_proportions(
    replies_by_model: Mapping[str, Sequence[str]],
    prompts: Sequence[EvalPrompt],
    *,
    classifier: Callable[[str], bool] = is_refusal,
) -> dict[str, dict[str, Proportion]]:
    """Refusal rate of each model on the harmful and on the benign prompts: ``{"harmful": {model: Proportion}, ...}``.

    ``replies_by_model[model][i]`` is that model's reply to ``prompts[i]``. ``classifier`` decides what a refusal is
    (:func:`~hf_cai.evaluation.refusal.is_refusal` by default, an estimate: see its measured precision and recall).

    Raises:
        ValueError: A model's replies do not line up with the prompts.
    """
    prompts = list(prompts)
    result: dict[str, dict[str, Proportion]] = {"harmful": {}, "benign": {}}
    for model, replies in replies_by_model.items():
        replies = list(replies)
        if len(replies) != len(prompts):
            raise InputError(f"model '{model}' has {len(replies)} replies for {len(prompts)} prompts")
        for group, want_harmful in (("harmful", True), ("benign", False)):
            chosen = [reply for reply, prompt in zip(replies, prompts) if bool(prompt.harmful) == want_harmful]
            result[group][model] = Proportion(
                f"refusals on {group} prompts ({model})", sum(bool(classifier(r)) for r in chosen), len(chosen)
            )
    return result


def refusal_rates(
    replies_by_model: Mapping[str, Sequence[str]],
    prompts: Sequence[EvalPrompt],
    *,
    classifier: Callable[[str], bool] = is_refusal,
) -> dict[str, Any]:
    """Refusal rates with 95% Wilson intervals, on harmful and benign prompts separately, shaped for ``results.json``.

    Returns ``{"harmful": {"n": N, "<model>": {"rate", "ci95", "refusals", "n"}, ...}, "benign": {...}}``, for any
    model names (``"base"``, ``"cai"``, ...). On harmful prompts a higher rate is better; on benign ones
    (over-refusal) lower is better. ``rate`` is ``None`` when a group has no prompts. See :func:`refusal_proportions`
    for the arguments.
    """
    reserved = {"n"} & set(replies_by_model)
    if reserved:
        raise InputError("a model cannot be called 'n': that key holds the number of prompts")
    proportions = refusal_proportions(replies_by_model, prompts, classifier=classifier)
    out: dict[str, Any] = {}
    for group, by_model in proportions.items():
        n = sum(1 for p in prompts if bool(p.harmful) == (group == "harmful"))
        entry: dict[str, Any] = {"n": n}
        for model, proportion in by_model.items():
            low, high = proportion.interval
            entry[model] = {
                "rate": proportion.value if proportion.total else None,
                "ci95": [low, high],
                "refusals": int(proportion.successes),
                "n": proportion.total,
            }
        out[group] = entry
    return out
