"""Standard benchmarks through EleutherAI's lm-evaluation-harness: the base and the CAI model on the same tasks, in one
paired table.

:func:`run_benchmarks` runs lm-eval (``lm_eval.simple_evaluate`` with its ``hf`` model) once for the base model and
once for the CAI model, the adapter applied through lm-eval's ``peft=`` argument, and returns a plain dict for
``results.json``'s ``benchmarks``: per task and metric, the base value ± its standard error, the CAI value ± its
standard error, and the difference ± the standard error of the difference. Any lm-eval task works: its own tasks by
name (``truthfulqa_mc2``, ``bbq``, ``toxigen``, ``arc_easy``, ...) and local task files read through
``include_path``. lm-eval is an optional extra: ``pip install 'hf-cai[eval]'``.

How the difference's standard error is computed: both models score the same items (with a ``limit``, the same random
draw of items), and lm-eval reports each item's score. Where a metric is the mean of its per-item scores (accuracy,
MC2), the standard error of the difference is that of the mean per-item difference, which counts the pairing: the
models' scores on one item move together, so it is usually much smaller than the unpaired one. Otherwise (a metric
aggregated another way, such as BBQ's bias scores, or a group of tasks) it is ``sqrt(se_base² + se_cai²)``, which
treats the two as independent samples and overstates the uncertainty; each row says which it is (``paired``).

Quantised runs: lm-eval 0.4.13 passes its ``load_in_4bit`` argument to ``from_pretrained`` as a bare keyword, which
transformers 5 refuses, so with ``load_in_4bit`` the models are loaded here, as the run loaded them (NF4, its compute
dtype, the adapter on top; :func:`~hf_cai.modeling.load_causal_lm`), and handed to lm-eval as ``pretrained=``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import gc
import logging
import math
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.errors import InputError, MissingExtraError
from hf_cai.gguf import resolve_model

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hf-cai[eval]'"

_AUTO_BATCH = re.compile(r"^auto(:\d+)?$")
# Dataset builders of the `datasets` library that read files rather than a Hub repository: a task whose
# `dataset_path` is one of them (or a local folder) is a local task, with no Hub dataset id.
_FILE_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas", "xml", "sql", "webdataset",
                            "imagefolder", "audiofolder", "videofolder"})
# lm-eval warns about what `pretrained=<loaded model>` implies (other model arguments ignored, one process), which is
# how the 4-bit path works, and that a chat model is scored without its chat template, which is `apply_chat_template`'s
# documented default here: the warnings tell the user nothing. {logger: parts of the messages dropped}
_EXPECTED_WARNINGS = {
    "lm_eval.models.huggingface": ("`pretrained` model kwarg is not of type `str`",
                                   "Passed an already-initialized model through `pretrained`"),
    "lm_eval.evaluator": ("appears to be an instruct or chat variant but chat template is not applied",),
}


@dataclass
class BenchmarkConfig:
    """Standard benchmarks run for both models (the recipe's ``eval.benchmarks:``; ``hf-cai eval --benchmarks``).

    Args:
        tasks: lm-eval task or group names (``truthfulqa_mc2``, ``bbq``, ``toxigen``, ``arc_easy``, ``hellaswag``,
            ``mmlu_college_biology``; ``lm-eval ls tasks`` lists them), or local tasks defined in ``include_path``.
            Empty: no benchmark runs.
        limit: Items per task, drawn at random (seeded by the evaluation's ``seed``), the same items for both models;
            ``None``: every item of each task.
        num_fewshot: Solved examples put before each item (``None``: each task's own default, usually 0).
        batch_size: Items per forward pass: a number, or ``"auto"`` for lm-eval to find the largest that fits.
        include_path: Folder, or list of folders, of local lm-eval task files (YAML), read beside lm-eval's own tasks.
        apply_chat_template: Put each item in the model's chat template. Off by default, as in most published lm-eval
            figures (and the first Open LLM Leaderboard), so that the numbers compare with theirs.
    """

    tasks: Sequence[str] = ()
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int | str = 8
    include_path: str | Sequence[str] | None = None
    apply_chat_template: bool = False

    def __post_init__(self):
        tasks = self.tasks.split(",") if isinstance(self.tasks, str) else list(self.tasks or ())
        self.tasks = [str(task).strip() for task in tasks if str(task).strip()]
        for name, low in (("limit", 1), ("num_fewshot", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise InputError(f"benchmarks.{name} must be an integer >= {low} or null, got {value!r}")
        size = self.batch_size
        if not ((isinstance(size, int) and not isinstance(size, bool) and size >= 1)
                or (isinstance(size, str) and _AUTO_BATCH.match(size))):
            raise InputError(f"benchmarks.batch_size must be a positive integer or 'auto', got {size!r}")
        paths = [self.include_path] if isinstance(self.include_path, (str, Path)) else list(self.include_path or ())
        for path in paths:
            if not Path(path).is_dir():
                raise InputError(f"benchmarks.include_path: '{path}' is not a folder (of lm-eval task YAML files)")
        self.include_path = [str(path) for path in paths] or None

    @classmethod
    def from_settings(cls, settings: BenchmarkConfig | Mapping[str, Any] | None) -> BenchmarkConfig:
        """A config from the recipe's ``eval.benchmarks`` mapping (or one already made; ``None``: no benchmarks);
        ``ValueError`` naming an unknown key and the closest known one."""
        if isinstance(settings, cls):
            return settings
        if settings is None:
            return cls()
        if not isinstance(settings, Mapping):
            raise InputError(f"benchmarks must be a mapping of settings ({', '.join(_FIELDS)}), got {settings!r}")
        for key in settings:
            if key not in _FIELDS:
                close = difflib.get_close_matches(str(key), _FIELDS, n=1)
                hint = f"; did you mean 'benchmarks.{close[0]}'?" if close else f"; known: {', '.join(_FIELDS)}"
                raise InputError(f"benchmarks: unknown key '{key}'{hint}")
        return cls(**settings)

    @property
    def enabled(self) -> bool:
        """Whether any task is to run."""
        return bool(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``results.json`` records them."""
        return dataclasses.asdict(self)


_FIELDS = [item.name for item in dataclasses.fields(BenchmarkConfig)]


def _lm_eval():
    try:
        import lm_eval
    except ImportError as error:
        raise MissingExtraError(f"the benchmarks need lm-evaluation-harness, which is not installed: {INSTALL_HINT}") from error
    return lm_eval


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: tuple[str, ...]):
    """One index of the task files per set of folders and process: building it reads every task YAML lm-eval has."""
    _lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_path) or None)


def task_manager(config: BenchmarkConfig):
    """lm-eval's ``TaskManager`` over its own tasks and ``config.include_path``; ``ValueError`` naming each task it
    does not know (with the closest known name)."""
    manager = _task_manager(tuple(str(Path(folder).resolve()) for folder in config.include_path or ()))
    known = set(manager.all_tasks)
    unknown = [task for task in config.tasks if task not in known]
    if unknown:
        described = []
        for task in unknown:
            close = difflib.get_close_matches(task, known, n=1)
            described.append(f"'{task}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        where = f" or in {', '.join(config.include_path)}" if config.include_path else ""
        raise InputError(f"benchmarks.tasks: lm-eval has no task {', '.join(described)}{where}; "
                         "`lm-eval ls tasks` lists its tasks")
    return manager


def _item_selection(manager, config: BenchmarkConfig, seed: int) -> dict[str, list[int]] | None:
    """With a limit, the items each task runs: ``limit`` indices drawn at random per task (lm-eval's own ``limit``
    takes the first items, and many datasets are sorted by category)."""
    if config.limit is None:
        return None
    chosen = {}
    for name, task in manager.load(list(config.tasks))["tasks"].items():
        total = len(task.eval_docs)
        indices = range(total) if total <= config.limit else random.Random(f"{seed}/{name}").sample(range(total), config.limit)
        chosen[name] = sorted(indices)
    return chosen


@contextlib.contextmanager
def _lm_eval_quiet() -> Iterator[None]:
    """lm-eval's information lines off (its warnings stay) unless hf_cai logs debug lines, and the warnings it gives
    about what hf_cai chose on purpose (:data:`_EXPECTED_WARNINGS`) dropped."""
    lm_logger = logging.getLogger("lm_eval")
    level = lm_logger.level
    if not logger.isEnabledFor(logging.DEBUG):
        lm_logger.setLevel(max(level, logging.WARNING))
    filters = {}
    for name, parts in _EXPECTED_WARNINGS.items():
        def unexpected(record: logging.LogRecord, parts=parts) -> bool:
            return not any(part in str(record.msg) for part in parts)

        filters[name] = unexpected
        logging.getLogger(name).addFilter(unexpected)
    try:
        yield
    finally:
        for name, unexpected in filters.items():
            logging.getLogger(name).removeFilter(unexpected)
        lm_logger.setLevel(level)


def _release_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _model_args(pretrained: str, adapter: str | None, load_in_4bit: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """lm-eval's ``model_args`` for one model, and the same as ``results.json`` records them."""
    import torch

    from hf_cai.modeling import compute_dtype, load_causal_lm, load_tokenizer

    dtype = str(compute_dtype()).removeprefix("torch.")
    recorded = {"pretrained": pretrained, "peft": adapter, "dtype": dtype, "load_in_4bit": load_in_4bit}
    if not load_in_4bit:
        args = {"pretrained": pretrained, "dtype": dtype, "device": "cuda" if torch.cuda.is_available() else "cpu"}
        return ({**args, "peft": adapter} if adapter else args), recorded
    model = load_causal_lm(pretrained, adapter=adapter, load_in_4bit=True)
    return {"pretrained": model, "tokenizer": load_tokenizer(pretrained, require_chat_template=False)}, recorded


def _evaluate(manager, config: BenchmarkConfig, model_args: dict[str, Any], samples, seed: int) -> dict[str, Any]:
    """One lm-eval run, reduced to what the table needs (the raw output holds the model when it was passed in)."""
    lm_eval = _lm_eval()
    with _lm_eval_quiet():
        output = lm_eval.simple_evaluate(
            model="hf", model_args=model_args, tasks=list(config.tasks), num_fewshot=config.num_fewshot,
            batch_size=config.batch_size, samples=samples, task_manager=manager, log_samples=True,
            apply_chat_template=config.apply_chat_template,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
    kept = {key: output.get(key) or {} for key in ("results", "configs", "versions", "n-shot", "n-samples",
                                                     "higher_is_better")}
    kept["per_item"] = {task: [_item_scores(sample) for sample in logged]
                        for task, logged in (output.get("samples") or {}).items()}
    kept["lm_eval_version"] = output.get("lm_eval_version") or getattr(lm_eval, "__version__", "")
    return kept


def _item_scores(sample: Mapping[str, Any]) -> dict[str, Any]:
    """One logged item: its id, content hash, filter, and its numeric scores (a right/wrong score as 1/0)."""
    scores = {name: sample.get(name) for name in sample.get("metrics", ())}
    return {"doc_id": sample.get("doc_id"), "doc_hash": sample.get("doc_hash"), "filter": sample.get("filter", "none"),
            "scores": {name: float(value) for name, value in scores.items()
                       if isinstance(value, bool) or _is_number(value)}}


def run_benchmarks(
    base_model: str, cai_model: str, config: BenchmarkConfig, *, load_in_4bit: bool = False, seed: int = 0
) -> dict[str, Any]:
    """Run ``config.tasks`` with lm-eval for the base model and the CAI model; their paired table
    (:func:`paired_table`).

    Args:
        base_model: The base model: Hub id, folder, embedded alias or ``.gguf`` file (converted to a folder first).
        cai_model: The CAI model: a PEFT adapter folder or Hub id (applied to ``base_model`` with lm-eval's
            ``peft=``), or a full checkpoint.
        config: The tasks and how many of their items to run.
        load_in_4bit: Load both models in 4-bit NF4, as the run trained and generated with them.
        seed: Seed of the item draw (with ``limit``) and of lm-eval's own sampling.

    Raises:
        MissingExtraError: lm-eval is not installed (an ImportError).
        ValueError: A task is not known to lm-eval nor found in ``include_path``.
    """
    from hf_cai.modeling import is_peft_adapter

    manager = task_manager(config)
    samples = _item_selection(manager, config, seed)
    base_path = resolve_model(base_model)
    adapter = str(cai_model) if is_peft_adapter(cai_model) else None
    sides = {"base": (base_path, None), "cai": (base_path, adapter) if adapter else (resolve_model(cai_model), None)}
    runs, recorded = {}, {}
    for side, (pretrained, peft) in sides.items():
        _release_memory()
        logger.info("lm-eval: the %s model on %s", "CAI" if side == "cai" else "base", ", ".join(config.tasks))
        model_args, recorded[side] = _model_args(pretrained, peft, load_in_4bit)
        runs[side] = _evaluate(manager, config, model_args, samples, seed)
        del model_args
    _release_memory()
    settings = {**config.to_dict(), "seed": seed, "items": "all" if samples is None else
                f"at most {config.limit} per task, drawn at random with seed {seed}, the same for both models"}
    return paired_table(runs["base"], runs["cai"], settings=settings, models=recorded)


def paired_table(
    base: Mapping[str, Any], cai: Mapping[str, Any], *, settings: Mapping[str, Any], models: Mapping[str, Any]
) -> dict[str, Any]:
    """``results.json``'s ``benchmarks`` from the two runs (as :func:`run_benchmarks` reduces lm-eval's output)::

        {"harness": "lm-evaluation-harness", "lm_eval_version": str, "settings": {...}, "models": {"base", "cai"},
         "tasks": [{"task", "version", "output_type", "num_fewshot", "n", "n_total",
                    "dataset": {"path", "name", "split", "local"} | None,
                    "metrics": [{"metric", "filter", "higher_is_better",
                                 "base": {"value", "stderr"}, "cai": {"value", "stderr"},
                                 "difference": {"value", "stderr", "paired", "n"}}]}]}
    """
    tasks = []
    for task, base_row in base["results"].items():
        cai_row = cai["results"].get(task) or {}
        counts = base["n-samples"].get(task) or {}
        task_config = base["configs"].get(task)
        metrics = []
        for key, value in base_row.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr") or not _is_number(value):
                continue
            metrics.append(_metric_row(task, metric, filter_name, base, cai, base_row, cai_row))
        tasks.append({
            "task": task,
            "version": _plain(base["versions"].get(task)),
            "output_type": (task_config or {}).get("output_type"),
            "num_fewshot": base["n-shot"].get(task),
            "n": counts.get("effective", base_row.get("sample_len")),
            "n_total": counts.get("original"),
            "dataset": _dataset(task_config) if task_config else None,
            "metrics": metrics,
        })
    return {"harness": "lm-evaluation-harness", "lm_eval_version": base.get("lm_eval_version", ""),
            "settings": dict(settings), "models": dict(models), "tasks": tasks}


def _metric_row(task, metric, filter_name, base, cai, base_row, cai_row) -> dict[str, Any]:
    key, stderr_key = f"{metric},{filter_name}", f"{metric}_stderr,{filter_name}"
    sides = {name: {"value": _number(row.get(key)), "stderr": _number(row.get(stderr_key))}
             for name, row in (("base", base_row), ("cai", cai_row))}
    difference: dict[str, Any] = {"value": None, "stderr": None, "paired": False, "n": None}
    if sides["base"]["value"] is not None and sides["cai"]["value"] is not None:
        difference["value"] = sides["cai"]["value"] - sides["base"]["value"]
        paired = _paired_stderr(base["per_item"].get(task), cai["per_item"].get(task), metric, filter_name,
                                sides["base"]["value"], sides["cai"]["value"])
        if paired is not None:
            difference.update({"stderr": paired[0], "paired": True, "n": paired[1]})
        elif sides["base"]["stderr"] is not None and sides["cai"]["stderr"] is not None:
            difference["stderr"] = math.hypot(sides["base"]["stderr"], sides["cai"]["stderr"])
    higher = (base.get("higher_is_better").get(task) or {}).get(metric)
    return {"metric": metric, "filter": filter_name, "higher_is_better": higher, **sides, "difference": difference}


def _paired_stderr(base_items, cai_items, metric, filter_name, base_value, cai_value) -> tuple[float, int] | None:
    """``(standard error of the mean per-item difference, n)`` when both models scored the same items and the metric
    is the mean of its per-item scores; ``None`` otherwise."""
    def scores(items):
        return {(item["doc_id"], item["doc_hash"]): item["scores"][metric] for item in items or ()
                if item["filter"] == filter_name and metric in item["scores"]}

    before, after = scores(base_items), scores(cai_items)
    if len(before) < 2 or before.keys() != after.keys():
        return None
    keys = sorted(before, key=str)
    for values, reported in ((before, base_value), (after, cai_value)):
        if not math.isclose(sum(values[k] for k in keys) / len(keys), reported, rel_tol=1e-6, abs_tol=1e-9):
            return None  # not a per-item mean: the pairing cannot be used
    differences = [after[k] - before[k] for k in keys]
    mean = sum(differences) / len(differences)
    variance = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    return math.sqrt(variance / len(differences)), len(differences)


def _dataset(task_config: Mapping[str, Any]) -> dict[str, Any]:
    """Where a task's items come from: its Hub dataset id, configuration and split, or ``local`` for files."""
    path = task_config.get("dataset_path")
    split = task_config.get("test_split") or task_config.get("validation_split")
    local = not path or path in _FILE_BUILDERS or Path(str(path)).exists()
    return {"path": None if local else path, "name": None if local else task_config.get("dataset_name"),
            "split": split, "local": local}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float)) or value is None else str(value)


def format_value(side: Mapping[str, Any] | None) -> str:
    """``0.412 ± 0.017`` (value ± standard error), ``0.412`` without one, ``–`` without a value."""
    if not side or side.get("value") is None:
        return "–"
    text = _short(side["value"])
    return f"{text} ± {_short(side['stderr'])}" if side.get("stderr") is not None else text


def format_difference(difference: Mapping[str, Any]) -> str:
    """``+0.018 ± 0.006 (paired)``: the CAI value minus the base value, ± the standard error of the difference."""
    if difference.get("value") is None:
        return "–"
    text = f"{'+' if difference['value'] >= 0 else ''}{_short(difference['value'])}"
    if difference.get("stderr") is None:
        return f"{text} (no standard error)"
    return f"{text} ± {_short(difference['stderr'])} ({'paired' if difference.get('paired') else 'unpaired'})"


def _short(value: float) -> str:
    return f"{value:.3f}" if value == 0 or 0.001 <= abs(value) < 100 else f"{value:.3g}"


def benchmark_lines(benchmarks: Mapping[str, Any] | None) -> list[str]:
    """One line per task and metric: base and CAI with their standard errors, and the difference."""
    if not benchmarks:
        return []
    lines = []
    for task in benchmarks.get("tasks", ()):
        shots = "" if task.get("num_fewshot") is None else f", {task['num_fewshot']}-shot"
        for row in task.get("metrics", ()):
            metric = row["metric"] if row.get("filter") in (None, "none") else f"{row['metric']} ({row['filter']})"
            lines.append(f"{task['task']} {metric} (n={task.get('n')}{shots}): base {format_value(row['base'])}, "
                         f"CAI {format_value(row['cai'])}, difference {format_difference(row['difference'])}")
    return lines


__all__ = ["BenchmarkConfig", "INSTALL_HINT", "benchmark_lines", "format_difference", "format_value", "paired_table",
           "run_benchmarks", "task_manager"]
