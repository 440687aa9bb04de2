"""The model card of a CAI fine-tune: Hub metadata plus a body generated from the run's own records.

Metadata (the YAML block the Hub indexes): ``base_model`` (a Hub id), ``datasets`` (the published training datasets'
ids, when given; none is made up), ``language`` (``en``: the prompts and the constitution), ``library_name`` (``peft`` for an
adapter, ``transformers`` for a merged model), ``license`` (checked against the Hub's list), ``tags``
(``constitutional-ai``, ``hf-cai``, ``trl``, ``qlora`` or ``lora``, one per training stage), ``pipeline_tag``,
``model-index`` when an evaluation ran (only this model's own results: its refusal rates, see
:mod:`hf_cai.evaluation.card_section`), and ``constitution: {name, version, sha256}`` so that CAI models can be found
and compared by the constitution they were aligned to.

The body comes from ``model_cards/model_card.md.j2``: the stages and methods, the SL-CAI quality gates' counts, the
constitution with the number of training rows each principle produced, sampled critique → revision chains,
hyperparameters and hardware, the base weights when they are a GGUF file's (:func:`base_weights`), the evaluation (the comparison with the base model, the judge's quality, the chart,
sample replies behind a content warning), loading snippets, limitations written from the evaluation's numbers and the
citation of the CAI paper. :func:`card_assets` names the files the card links to (``eval/chart.png``,
``eval/results.json``), which a publication ships beside it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import CONSTITUTION_FILE, TRAINING_RECORD
from hf_cai.constitution import Constitution, ConstitutionError
from hf_cai.evaluation.card_section import evaluation_section
from hf_cai.gguf import hub_id_of
from hf_cai.hub.errors import ModelCardError
from hf_cai.hub.licenses import validate_license
from hf_cai.hub.local_paths import is_local_path, readable_model_id, strip_local_paths
from hf_cai.hub.repo_id import repo_id_problem
from hf_cai.hub.source import TrainingOutput, locate_training_output, read_json
from hf_cai.hub.templates import render_card
from hf_cai.hub.training_data import (
    constitution_hashes,
    dataset_kind,
    load_dataset_dict,
    principle_row_counts,
    revision_rounds,
    sample_revision_chains,
    uses_soft_labels,
)

logger = logging.getLogger(__name__)

MODEL_CARD_TEMPLATE = "model_card.md.j2"
BASE_TAGS = ("constitutional-ai", "hf-cai", "trl")
_STAGE_TAGS = {"sft": "sft", "dpo": "dpo", "grpo": "grpo", "reward": "reward-model"}
_METHODS = {
    "sft": "supervised fine-tuning on the final revisions (SL-CAI)",
    "dpo": "direct preference optimisation on AI-labelled pairs (RL-CAI)",
    "reward": "reward model trained on AI-labelled pairs (RL-CAI)",
    "grpo": "GRPO against the AI-feedback reward model (RL-CAI)",
}


def resolve_base_model(training: TrainingOutput, base_model_id: str | None = None) -> str:
    """The Hub id of the base model: ``base_model_id`` if given, else the one recorded by the training.

    Raises:
        ModelCardError: the recorded base is a local folder (the Hub id it came from must be named) or no id is known.
    """
    if base_model_id is not None:
        problem = repo_id_problem(base_model_id)
        if problem is not None:
            raise ModelCardError(
                f"base_model_id '{base_model_id}' is not a Hub repository id like 'org/name' ({problem})"
            )
        return base_model_id
    recorded = _recorded_base_model(training)
    if recorded is None:
        raise ModelCardError(
            f"{training.model_dir}: the base model is not recorded (no base_model in {TRAINING_RECORD} or "
            "adapter_config.json); pass base_model_id='org/name', the Hub repository it came from"
        )
    if Path(recorded).expanduser().exists() or repo_id_problem(recorded) is not None:
        hub_id = hub_id_of(recorded)  # a folder converted from a GGUF file knows the Hub model it came from
        if hub_id is not None:
            return hub_id
        raise ModelCardError(
            f"the base model was loaded from the local path '{recorded}', which means nothing to readers of the card; "
            "pass base_model_id='org/name', the Hub repository that folder came from"
        )
    return recorded


def _recorded_base_model(training: TrainingOutput) -> str | None:
    base = training.record.get("base_model")
    if isinstance(base, Mapping):
        base = base.get("name_or_path") or base.get("id")
    if isinstance(base, str) and base:
        return base
    config_file = "adapter_config.json" if training.is_adapter else "config.json"
    config = read_json(training.model_dir / config_file)
    value = config.get("base_model_name_or_path" if training.is_adapter else "_name_or_path")
    return value or None


def load_constitution(training: TrainingOutput, constitution: Constitution | str | Path | None = None) -> Constitution:
    """The constitution of the run: ``constitution`` if given, else the ``constitution.yaml`` saved with it."""
    try:
        if constitution is not None:
            return Constitution.resolve(constitution)
        if training.constitution_path is None:
            raise ModelCardError(
                f"{training.model_dir}: no {CONSTITUTION_FILE} beside the model; pass constitution= (a built-in "
                "name, a file, or a Constitution)"
            )
        return Constitution.load(training.constitution_path)
    except ConstitutionError as error:
        raise ModelCardError(f"the constitution could not be read: {error}") from error


def load_eval_results(results: Any) -> dict[str, Any] | None:
    """Evaluation results as ``results.json`` holds them (``{"refusal", "win_rates", ..., "metrics": [...]}``; the
    first format, ``{"metrics": [...]}``, is read too).

    Accepts an ``hf_cai.evaluation.EvaluationReport``, its ``to_dict()``, or the path of its ``results.json``.
    """
    if results is None:
        return None
    if hasattr(results, "to_dict"):
        results = results.to_dict()
    elif isinstance(results, (str, Path)):
        results = read_json(Path(results))
    if not isinstance(results, Mapping) or not isinstance(results.get("metrics"), list):
        raise ModelCardError(
            "eval_results: expected the evaluation's results.json ({'metrics': [...]}), an "
            "EvaluationReport, or its path"
        )
    for index, metric in enumerate(results["metrics"]):
        if not isinstance(metric, Mapping) or "name" not in metric or "value" not in metric:
            raise ModelCardError(f"eval_results: metrics[{index}] needs at least 'name' and 'value'")
    return dict(results)


def _eval_results_metadata(results: Mapping[str, Any]):
    """``model-index`` entries: this model's own results only (see :mod:`hf_cai.evaluation.card_section`)."""
    from huggingface_hub import EvalResult

    from hf_cai.evaluation.card_section import model_index_entries

    return [EvalResult(**entry) for entry in model_index_entries(results)] or None


CHART_IN_REPO = "eval/chart.png"
RESULTS_IN_REPO = "eval/results.json"


def card_assets(training: TrainingOutput, eval_results: Any = None) -> dict[str, Path]:
    """Files the card links to, by their path in the repository: the evaluation's chart and ``results.json``, when
    the run's ``eval/`` folder (or the folder of an ``eval_results`` path) holds them. A publication ships them
    beside the card."""
    if eval_results is None:
        results_path = training.eval_results_path
    elif isinstance(eval_results, (str, Path)):
        results_path = Path(eval_results)
    else:
        return {}
    if results_path is None or not results_path.is_file():
        return {}
    assets = {RESULTS_IN_REPO: results_path}
    chart = results_path.parent / "chart.png"
    if chart.is_file():
        assets[CHART_IN_REPO] = chart
    return assets


def published_eval_results(results: Mapping[str, Any] | None, training: TrainingOutput, repo_id: str):
    """Evaluation results as a publication shows them: the evaluated model named by the repository it is published
    to rather than by the folder it was evaluated from, the other models by their Hub ids, and no path of this
    machine anywhere (:func:`~hf_cai.hub.local_paths.strip_local_paths`)."""
    if results is None:
        return None
    models = dict(results.get("models") or {})
    cai = models.get("cai")
    if isinstance(cai, str) and (is_local_path(cai) or repo_id_problem(cai) is not None):
        models["cai"] = repo_id
    for key in ("base", "judge"):
        if isinstance(models.get(key), str) and is_local_path(models[key]):
            models[key] = readable_model_id(models[key])
    published = {**results, **({"models": models} if "models" in results else {})}
    return strip_local_paths(published, root=training.run_dir)


def card_files(training: TrainingOutput, eval_results: Any = None, *, repo_id: str) -> dict[str, Path | bytes]:
    """The files of :func:`card_assets` as a publication ships them: the chart as it is, ``results.json`` as
    :func:`published_eval_results` writes it (the content, in bytes)."""
    assets: dict[str, Path | bytes] = dict(card_assets(training, eval_results))
    if RESULTS_IN_REPO in assets:
        results = published_eval_results(load_eval_results(assets[RESULTS_IN_REPO]), training, repo_id)
        assets[RESULTS_IN_REPO] = (json.dumps(results, indent=2, default=str) + "\n").encode()
    return assets


def quality_gates(training: TrainingOutput) -> dict[str, Any] | None:
    """The SL-CAI quality gates' counts of the run: from ``sl_data/quality.json`` (one record per split, each with
    ``counts`` and ``summary``), else the manifest's ``stages.sl_data.metrics.quality`` (the counts alone).
    Returns ``{"rows": [{"split", "total", "kept", "flagged", <reason>: n, ...}], "summary": [str]}`` (the summary of
    ``train_sft``, the split SFT trains on), or ``None`` when the run has no record of them."""
    if training.run_dir is None:
        return None
    path = training.run_dir / "sl_data" / "quality.json"
    record = read_json(path) if path.is_file() else None
    if isinstance(record, Mapping) and isinstance(record.get("counts"), Mapping):
        record = {"all": record}
    if isinstance(record, Mapping):
        splits = {k: v for k, v in record.items() if isinstance(v, Mapping) and isinstance(v.get("counts"), Mapping)}
        if splits:
            trained = splits.get("train_sft") or next(iter(splits.values()))  # the split SFT trains on
            return {"rows": [{"split": name, **value["counts"]} for name, value in splits.items()],
                    "summary": list(trained.get("summary") or [])}
    manifest = training.run_dir / "manifest.json"
    if manifest.is_file():
        stage = (read_json(manifest).get("stages") or {}).get("sl_data") or {}
        counts = (stage.get("metrics") or {}).get("quality")
        if isinstance(counts, Mapping) and "total" in counts:
            return {"rows": [{"split": "all", **counts}], "summary": []}
    return None


def _stage_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """One training stage as the card shows it, from its ``cai_training.json`` (keys in :mod:`hf_cai.trainers`)."""
    stage = str(record.get("stage") or "").lower()
    sizes = record.get("dataset_sizes") or {}
    metrics = record.get("metrics") or {}
    settings = dict(record.get("hyperparameters") or {})
    for key in ("effective_batch_size", "global_step", "qlora_profile", "soft_labels", "quantization"):
        if record.get(key) is not None:
            settings[key] = record[key]
    tables = [
        (title, list(value.items()))
        for title, value in (("Hyperparameters", settings), ("LoRA", record.get("lora")), ("Training metrics", metrics))
        if isinstance(value, Mapping) and value
    ]
    method = _METHODS.get(stage, "–")
    if stage == "reward" and "initial_adapter" in record:
        start = "the base model" if record["initial_adapter"] is None else "a saved adapter"
        method = f"reward model trained from {start} on AI-labelled pairs (RL-CAI)"
    return {
        "stage": stage or "training",
        "method": method,
        "adapter": record.get("method"),
        "rows": sizes.get("train") if isinstance(sizes, Mapping) else None,
        "steps": record.get("global_step"),
        "loss": metrics.get("train_loss") if isinstance(metrics, Mapping) else None,
        "tables": tables,
    }


def base_weights(training: TrainingOutput, results: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The GGUF file the run's base weights were de-quantised from (:func:`hf_cai.gguf.weights_source`), as the
    training records name it, else the evaluation's ``results.json``, else the converted folder the adapter was trained
    on when it is on this machine; ``None`` for a base loaded as it is (a Hub checkpoint, a plain folder)."""
    from hf_cai.gguf import weights_source

    for record in (training.record, *training.stage_records):
        if isinstance(record.get("base_weights"), Mapping):
            return dict(record["base_weights"])
    recorded = ((results or {}).get("models") or {}).get("base_weights")
    if isinstance(recorded, Mapping):
        return dict(recorded)
    local = _recorded_base_model(training)
    return weights_source(local) if local and Path(local).is_dir() else None


def _weights_text(source: Mapping[str, Any]) -> dict[str, Any]:
    """``source`` with ``tensors``: its tensor types as the card lists them ("210 Q4_1, 61 F32, 1 Q8_0")."""
    types = source.get("tensor_types") or {}
    ordered = sorted(types.items(), key=lambda item: (-item[1], item[0]))
    return {**source, "tensors": ", ".join(f"{count} {name}" for name, count in ordered)}


def _uses_quantization(records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any stage trained on a quantised base (QLoRA)."""
    return any(r.get("method") == "qlora" or r.get("quantization") not in (None, "", "none") for r in records)


def build_model_card(
    source: str | Path | TrainingOutput,
    *,
    repo_id: str,
    license: str | None,
    base_model_id: str | None = None,
    datasets: Sequence[str] = (),
    training_data: Sequence[Any] = (),
    eval_results: Any = None,
    merged: bool = False,
    license_name: str | None = None,
    license_link: str | None = None,
    constitution: Constitution | str | Path | None = None,
    template: str | Path | None = None,
    num_examples: int = 3,
    seed: int = 0,
):
    """Generate the model card (a ``huggingface_hub.ModelCard``) of a CAI trainer output or run directory.

    Args:
        source: Trainer output folder, stage folder or run directory (see :mod:`hf_cai.hub.source`).
        repo_id: The repository the card is for (used in the loading snippets).
        license: Hub license id of the fine-tune (required; typos are refused with suggestions).
        base_model_id: Hub id of the base model, required when the training loaded it from a local folder.
        datasets: Hub ids of the published training datasets, linked from the card.
        training_data: Local datasets (``Dataset``, ``DatasetDict`` or ``save_to_disk`` folders) to count principle
            usage and sample examples from; a run directory's ``sl_data``/``pref_data`` datasets are added.
        eval_results: ``EvaluationReport``, its dict, or ``results.json`` path; a run's ``eval/results.json`` is used
            when not given. The chart beside a ``results.json`` is embedded (publish it as :func:`card_assets` says).
        merged: The card describes the merged 16-bit model rather than the adapter (merged as
            :func:`~hf_cai.hub.merge.merge_base` says).
        license_name: Short name of the license when ``license="other"``.
        license_link: Link to the license text when ``license="other"``.
        constitution: Overrides the run's ``constitution.yaml``.
        template: A Jinja template file to use instead of ``model_cards/model_card.md.j2``.
        num_examples: How many critique → revision chains to show.
        seed: Seed of the example sampling.

    Raises:
        ModelCardError: missing license or base model id, unreadable records, data from another constitution,
            template errors.
    """
    from huggingface_hub import ModelCard, ModelCardData

    training = source if isinstance(source, TrainingOutput) else locate_training_output(source)
    license_id = validate_license(license, license_name=license_name, license_link=license_link)
    base_model = resolve_base_model(training, base_model_id)
    constitution = load_constitution(training, constitution)
    assets = card_assets(training, eval_results)
    if eval_results is None and training.eval_results_path is not None:
        eval_results = training.eval_results_path
    results = published_eval_results(load_eval_results(eval_results), training, repo_id)

    local_data = [load_dataset_dict(item) for item in training_data]
    local_data += [load_dataset_dict(p) for p in (training.sl_dataset_path, training.preference_dataset_path) if p]
    for data in local_data:
        foreign = constitution_hashes(data) - {constitution.sha256}
        if foreign:
            raise ModelCardError(
                f"training data was generated under constitution sha256 {sorted(foreign)[0]}, but the constitution "
                f"being published ({constitution.name} v{constitution.version}) has sha256 {constitution.sha256}; "
                "publish the constitution the data was built with (constitution=...)"
            )
    sl_data = [d for d in local_data if dataset_kind(d) == "sl-cai"]
    rl_data = [d for d in local_data if dataset_kind(d) == "rl-cai"]

    recorded = training.record.get("constitution")
    if isinstance(recorded, Mapping) and recorded.get("sha256") not in (None, constitution.sha256):
        logger.warning(
            "the training record names constitution sha256 %s, the published constitution.yaml has %s",
            recorded.get("sha256"),
            constitution.sha256,
        )

    sl_counts, rl_counts = _sum_counts(sl_data), _sum_counts(rl_data)
    principles = [
        {
            "id": p.id,
            "stages": "+".join(s for s, ok in (("SL", p.has_critique), ("RL", p.has_preference)) if ok),
            "sl_rows": sl_counts.get(p.id, 0),
            "rl_rows": rl_counts.get(p.id, 0),
            "text": p.critique or p.preference,
        }
        for p in constitution.principles
    ]
    unknown_ids = sorted((set(sl_counts) | set(rl_counts)) - {p.id for p in constitution.principles})

    stage_records = list(training.stage_records) or [training.record]
    stages = [_stage_summary(r) for r in stage_records if r]
    stage_names = [s["stage"] for s in stages if s["stage"] in _STAGE_TAGS]
    quantized = _uses_quantization(stage_records)
    reward_record = next((r for r in stage_records if str(r.get("stage") or "").lower() == "reward"), {})
    adapter_tag = ["qlora" if quantized else "lora"] if training.is_adapter else []
    tags = [*BASE_TAGS, *adapter_tag, *(_STAGE_TAGS[s] for s in stage_names)]
    if merged:
        tags.append("merge")

    weights = base_weights(training, results)
    merged_into_weights = None
    if merged and weights is not None:
        from hf_cai.gguf import weights_source
        from hf_cai.hub.merge import merge_base

        merged_into_weights = weights_source(merge_base(training.model_dir, base_model))

    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        base_model=base_model,
        datasets=list(datasets) or None,
        library_name="peft" if training.is_adapter and not merged else "transformers",
        license=license_id,
        license_name=license_name if license_id == "other" else None,
        license_link=license_link if license_id == "other" else None,
        tags=tags,
        pipeline_tag="text-generation",
        language="en",
        model_name=model_name if results else None,
        eval_results=_eval_results_metadata(results) if results else None,
        constitution={"name": constitution.name, "version": constitution.version, "sha256": constitution.sha256},
    )
    from hf_cai import __version__

    context = {
        "repo_id": repo_id,
        "model_name": model_name,
        "base_model": base_model,
        "is_adapter": training.is_adapter and not merged,
        "merged": merged,
        "quantized": quantized,
        # The GGUF file the base weights came from, and whether the merge used its de-quantised weights.
        "base_weights": _weights_text(weights) if weights else None,
        "merged_into_base_weights": merged_into_weights is not None,
        "stages": stages,
        "stage_names": stage_names,
        "rounds": max((revision_rounds(d) or 0 for d in sl_data), default=None) or training.record.get("rounds"),
        "soft_labels": any(uses_soft_labels(d) for d in rl_data) or bool(training.record.get("soft_labels")),
        # Whether the reward model started from the base model (``None``: not recorded, or no reward stage).
        "reward_from_base": reward_record["initial_adapter"] is None if "initial_adapter" in reward_record else None,
        "constitution": constitution,
        "principles": principles,
        "unknown_principle_ids": unknown_ids,
        "has_data": bool(local_data),
        "chains": sample_revision_chains(sl_data[0], num_examples, seed=seed) if sl_data else [],
        "hardware": _mapping(training.record.get("hardware")),
        "versions": _mapping(training.record.get("versions") or training.record.get("library_versions")),
        "datasets": list(datasets),
        "evaluation": evaluation_section(results, merged=merged),
        "chart": CHART_IN_REPO if CHART_IN_REPO in assets else None,
        "results_file": RESULTS_IN_REPO if RESULTS_IN_REPO in assets else None,
        "quality": quality_gates(training),
        "hf_cai_version": __version__,
    }
    return render_card(ModelCard, card_data, MODEL_CARD_TEMPLATE, context, template=template)


def _sum_counts(datasets: Sequence[Any]):
    from collections import Counter

    total: Counter[str] = Counter()
    for data in datasets:
        total.update(principle_row_counts(data))
    return total


def _mapping(value: Any) -> list[tuple[str, Any]]:
    return list(value.items()) if isinstance(value, Mapping) else ([("value", value)] if value else [])
