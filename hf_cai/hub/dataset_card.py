"""The dataset card of a published SL-CAI or RL-CAI dataset: Hub metadata, data layout and provenance.

Metadata: ``license`` (checked), ``pretty_name`` (what the data is), ``language`` (``en``), ``tags``
(``constitutional-ai``, ``hf-cai``, ``sl-cai`` or ``rl-cai``, ``synthetic``), ``annotations_creators`` and
``language_creators`` (``machine-generated``), ``task_categories``, ``size_categories``, ``configs`` (so
``datasets.load_dataset`` finds the parquet files of each split) and ``constitution: {name, version, sha256}``. The
body comes from ``model_cards/dataset_card.md.j2``: a summary, the splits (for SL-CAI data, how many rows of each are
revisions and how many unrevised helpful replies), the columns, the data's quality, its provenance (the models that
wrote and labelled it, the sampling settings and seed: :mod:`hf_cai.hub.dataset_provenance`), the constitution and
examples. A preference card also says what the two option orders' probabilities show of the judge's position bias.

What the card says about the data's quality: an SL-CAI card has a "Quality" section (the quality gates' counts by
reason, from the run's ``quality.json``, else the ``quality_flags`` column, else the gates run on the rows as the card
is written); a preference card has a "Judge quality" section (how well the feedback model judged calibration
questions, from the run's ``judge_quality.json``), or says that nothing measured it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution
from hf_cai.hub.dataset_provenance import MODEL_ROLES, dataset_provenance
from hf_cai.hub.licenses import validate_license
from hf_cai.hub.templates import render_card
from hf_cai.hub.training_data import (
    dataset_kind,
    load_dataset_dict,
    message_text,
    principle_row_counts,
    revision_rounds,
    sample_revision_chains,
    split_sizes,
    training_split,
    uses_soft_labels,
)

DATASET_CARD_TEMPLATE = "dataset_card.md.j2"
QUALITY_FILE = "quality.json"
"""The quality gates' record the pipeline's ``sl_data`` stage writes beside its ``dataset/`` folder."""
JUDGE_QUALITY_FILE = "judge_quality.json"
"""The judge check's report the pipeline's ``pref_data`` stage writes beside its ``dataset/`` folder."""
QUALITY_COLUMN = "quality_flags"
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
COLUMN_DOCS = {
    "prompt": "the conversation up to the red-team (or helpful) request",
    "messages": "the request and the final revision, as a chat (SFT target)",
    "chosen": "preferred reply (as chat messages)",
    "rejected": "dispreferred reply (as chat messages)",
    "initial_response": "the model's first reply, before any critique",
    "revisions": "critique → revision rounds: round, principle_id, critique, revision",
    "chosen_prob": "soft label: probability the feedback model gave to `chosen`, averaged over option orders and principles",
    "chosen_prob_as_a": "that probability from the questions that showed `chosen` as option (A), averaged over principles",
    "chosen_prob_as_b": "that probability from the questions that showed `chosen` as option (B); the mean of the two is "
    "`chosen_prob`, their difference the judge's position bias",
    "principle_ids": "principles the feedback question was asked under",
    "completion": "the final revision, as a one-message list (prompt-completion format)",
    "kind": "`revised` (critiqued and revised), or `helpful`: a benign prompt answered once, without critique "
    "(`chosen` equals `rejected`; SFT splits only)",
    "principle_probs": "the probability of `chosen` under each principle of `principle_ids`",
    "constitution_sha256": "sha256 of the constitution the row was generated under",
    "quality_flags": "why the quality gates flagged the row (`truncated`, `degenerate`, `echo`, `too_short`, "
    "`role_header`); empty: it passed",
    "initial_finish_reason": "why the first reply ended: `stop` (end of turn), `length` (cut at max_new_tokens)",
}


def data_file_path(split: str) -> str:
    """Where a split's parquet file goes in the dataset repository."""
    return f"data/{split}-00000-of-00001.parquet"


def _size_category(rows: int) -> str:
    return next((label for bound, label in _SIZE_CATEGORIES if rows < bound), "n>1M")


def _preference_examples(dataset, k: int) -> list[dict[str, Any]]:
    split = training_split(dataset, "rl-cai")
    if split is None:
        return []
    examples = []
    for row in split.select(range(min(k, split.num_rows))):
        examples.append(
            {
                "prompt": message_text(row.get("prompt")),
                "chosen": message_text(row.get("chosen")),
                "rejected": message_text(row.get("rejected")),
                "chosen_prob": row.get("chosen_prob"),
                "principle_ids": list(row.get("principle_ids") or ()),
            }
        )
    return examples


def quality_records(source: str | Path | None) -> dict[str, Any]:
    """``{"quality": ..., "judge_quality": ...}`` read from the pipeline's records beside a dataset folder: its
    ``quality.json`` / ``judge_quality.json`` in the folder or the folder above it (a run's stage folder holds
    ``dataset/`` and the record). Missing or unreadable records are left out."""
    if source is None or not isinstance(source, (str, Path)):
        return {}
    folder = Path(source)
    found = {}
    for key, name in (("quality", QUALITY_FILE), ("judge_quality", JUDGE_QUALITY_FILE)):
        for candidate in (folder / name, folder.parent / name):
            try:
                found[key] = json.loads(candidate.read_text(encoding="utf-8"))
                break
            except (OSError, ValueError):
                continue
    return found


def _record(value: Mapping[str, Any] | str | Path | None) -> Mapping[str, Any] | None:
    if value is None or isinstance(value, Mapping):
        return value
    return json.loads(Path(value).read_text(encoding="utf-8"))


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _sl_quality(dataset, record: Mapping[str, Any] | None, constitution: Constitution) -> dict[str, Any] | None:
    """What the card's "Quality" section shows: the gates' counts over the SFT rows, with where they come from."""
    from hf_cai.builders.quality_gates import QUALITY_FLAG_MEANINGS, QUALITY_FLAGS, gate_sl_dataset

    if record is not None and "counts" not in record:  # {split: record}
        record = record.get("train_sft")
    splits = [dataset[name] for name in ("train_sft", "test_sft") if name in dataset] or list(dataset.values())
    example = None
    if record is not None:
        counts, source = record["counts"], "recorded"
        exclude = record.get("exclude_flagged", True)
        examples = record.get("examples") or {}
        if examples:
            flag = max(examples, key=lambda f: counts.get(f, 0))
            example = {"flag": flag, **examples[flag]}
    else:
        if all(QUALITY_COLUMN in split.column_names for split in splits):
            flags = [list(f or ()) for split in splits if split.num_rows for f in split[QUALITY_COLUMN]]
            source = "column"
        else:
            flags = [f for split in splits if split.num_rows for f in gate_sl_dataset(split, constitution).flags]
            source = "computed"
        counts = {flag: sum(flag in row for row in flags) for flag in QUALITY_FLAGS}
        counts |= {"flagged": sum(1 for row in flags if row), "total": len(flags)}
        exclude = None
    total, flagged = counts.get("total", 0), counts.get("flagged", 0)
    return {
        "source": source,
        "total": total,
        "passed": total - flagged,
        "share": _percent((total - flagged) / total) if total else "–",
        "exclude_flagged": exclude,
        "reasons": [(flag, counts.get(flag, 0), QUALITY_FLAG_MEANINGS[flag]) for flag in QUALITY_FLAGS],
        "example": example,
    }


def _judge_quality(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the card's "Judge quality" section shows, from a ``JudgeQualityReport.to_dict()``."""
    if record is None:
        return None

    def with_interval(value: float | None, interval: Sequence[float] | None) -> str:
        if value is None:
            return "–"
        low, high = interval or (None, None)
        return _percent(value) + (f" [{_percent(low)}, {_percent(high)}]" if low is not None else "")

    entropy = record.get("label_entropy")
    mass = record.get("option_mass")
    return {
        "n": record.get("n"),
        "accuracy": with_interval(record.get("accuracy"), record.get("accuracy_ci95")),
        "order_consistency": with_interval(record.get("order_consistency"), record.get("order_consistency_ci95")),
        "order_consistency_n": record.get("order_consistency_n"),
        "option_mass": "–" if mass is None else _percent(mass),
        "label_entropy": "–" if entropy is None else f"{entropy:.2f} bits",
        "near_chance": bool(record.get("near_chance")),
        "sources": dict(record.get("sources") or {}),
        "warnings": list(record.get("warnings") or ()),
    }


def _kind_counts(dataset) -> list[dict[str, Any]]:
    """Per split of SL-CAI data: rows that are revisions and rows that are unrevised helpful replies."""
    rows = []
    for name, split in dataset.items():
        kinds = split["kind"] if split.num_rows and "kind" in split.column_names else []
        rows.append(
            {
                "split": name,
                "rows": split.num_rows,
                "revised": sum(kind == "revised" for kind in kinds),
                "helpful": sum(kind == "helpful" for kind in kinds),
            }
        )
    return rows


def _order_summary(dataset) -> dict[str, Any] | None:
    """What the two option orders' probabilities say about the judge's position bias, over every split."""
    pairs = []
    for split in dataset.values():
        if split.num_rows and {"chosen_prob_as_a", "chosen_prob_as_b"} <= set(split.column_names):
            pairs += [(a, b) for a, b in zip(split["chosen_prob_as_a"], split["chosen_prob_as_b"]) if a is not None and b is not None]
    total = sum(split.num_rows for split in dataset.values())
    if not pairs:
        return {"n": 0, "total": total}
    mean_a = sum(a for a, _ in pairs) / len(pairs)
    mean_b = sum(b for _, b in pairs) / len(pairs)
    return {
        "n": len(pairs),
        "total": total,
        "mean_as_a": f"{mean_a:.3f}",
        "mean_as_b": f"{mean_b:.3f}",
        "bias": f"{(mean_a - mean_b) / 2:+.3f}",
        "agree": sum((a >= 0.5) == (b >= 0.5) for a, b in pairs),
    }


_PROVENANCE_LINES = {"prompts": "Prompts", "builder": "Built by", "hf_cai_version": "hf_cai version"}


def _provenance_rows(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The card's view of a provenance record."""
    settings = dict(provenance.get("settings") or {})
    if provenance.get("seed") is not None:
        settings = {"seed": provenance["seed"], **settings}
    return {
        "models": [(role, name, MODEL_ROLES.get(role, "")) for role, name in (provenance.get("models") or {}).items()],
        "settings": [(key, json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else value)
                     for key, value in settings.items()],
        "other": [(label, provenance[key]) for key, label in _PROVENANCE_LINES.items() if provenance.get(key)],
    }


def build_dataset_card(
    dataset,
    *,
    repo_id: str,
    constitution: Constitution,
    license: str | None,
    license_name: str | None = None,
    license_link: str | None = None,
    models: Sequence[str] = (),
    template: str | Path | None = None,
    num_examples: int = 3,
    seed: int = 0,
    source: str | Path | None = None,
    quality: Mapping[str, Any] | str | Path | None = None,
    judge_quality: Mapping[str, Any] | str | Path | None = None,
    provenance: Mapping[str, Any] | None = None,
    description: str | None = None,
):
    """Generate the card (a ``huggingface_hub.DatasetCard``) of a CAI ``DatasetDict`` published as parquet.

    Args:
        dataset: The ``DatasetDict`` being published (a ``Dataset`` is the split ``train``), or its ``save_to_disk``
            folder.
        repo_id: The dataset repository (used in the loading snippet).
        constitution: The constitution the rows were generated under.
        license: Hub license id of the data (required).
        license_name: Short name of the license when ``license="other"``.
        license_link: Link to the license text when ``license="other"``.
        models: Hub ids of models trained on this data, linked from the card.
        template: A Jinja template file to use instead of ``model_cards/dataset_card.md.j2``.
        num_examples: How many examples to show.
        seed: Seed of the example sampling.
        source: The folder the dataset was read from, when ``dataset`` is already loaded: the pipeline's records
            beside it (:func:`quality_records`) go into the card. A ``dataset`` given as a folder is its own source.
        quality: The quality gates' record (``quality.json``'s content or path) instead of the one beside ``source``.
        judge_quality: The judge check's report (``judge_quality.json``'s content or path) instead of the one beside
            ``source``.
        provenance: Where the data came from (:func:`~hf_cai.hub.dataset_provenance.dataset_provenance`); by default
            read from the builder's record beside ``source``.
        description: One sentence saying what the data is (the card's ``pretty_name`` and first line); by default
            written from the kind of data and the constitution.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    license_id = validate_license(license, license_name=license_name, license_link=license_link)
    origin = source if source is not None else dataset
    found = quality_records(origin)
    if provenance is None:
        provenance = dataset_provenance(origin, constitution=constitution)
    quality = _record(quality) if quality is not None else found.get("quality")
    judge_quality = _record(judge_quality) if judge_quality is not None else found.get("judge_quality")
    dataset = load_dataset_dict(dataset)
    kind = dataset_kind(dataset)
    sizes = split_sizes(dataset)
    counts = principle_row_counts(dataset)
    column_names = next(iter(dataset.values())).column_names if sizes else []
    name = repo_id.split("/")[-1]
    if description is None:
        description = {
            "sl-cai": f"SL-CAI critique and revision data under the {constitution.name} constitution",
            "rl-cai": f"RL-CAI preference pairs labelled by AI feedback under the {constitution.name} constitution",
        }.get(kind, f"Constitutional AI data under the {constitution.name} constitution")
    card_data = DatasetCardData(
        license=license_id,
        license_name=license_name if license_id == "other" else None,
        license_link=license_link if license_id == "other" else None,
        language=["en"],
        tags=["constitutional-ai", "hf-cai", *([kind] if kind != "other" else []), "synthetic"],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        task_categories=["text-generation"],
        size_categories=[_size_category(sum(sizes.values()))],
        pretty_name=f"{name}: {description}",
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": data_file_path(s)} for s in sizes]}],
        constitution={"name": constitution.name, "version": constitution.version, "sha256": constitution.sha256},
    )
    context = {
        "repo_id": repo_id,
        "description": description,
        "kind": kind,
        "kinds": _kind_counts(dataset) if kind == "sl-cai" else [],
        "orders": _order_summary(dataset) if kind == "rl-cai" else None,
        "provenance": _provenance_rows(provenance) if provenance else None,
        "splits": list(sizes.items()),
        "columns": [(name, COLUMN_DOCS.get(name, "")) for name in column_names],
        "constitution": constitution,
        "principles": [
            {
                "id": p.id,
                "rows": counts.get(p.id, 0),
                "text": p.critique if kind == "sl-cai" else (p.preference or p.critique),
            }
            for p in constitution.principles
        ],
        "rounds": revision_rounds(dataset) if kind == "sl-cai" else None,
        "soft_labels": uses_soft_labels(dataset) if kind == "rl-cai" else False,
        "chains": sample_revision_chains(dataset, num_examples, seed=seed) if kind == "sl-cai" else [],
        "pairs": _preference_examples(dataset, num_examples) if kind == "rl-cai" else [],
        "models": list(models),
        "quality": _sl_quality(dataset, quality, constitution) if kind == "sl-cai" else None,
        "judge": _judge_quality(judge_quality) if kind == "rl-cai" else None,
    }
    return render_card(DatasetCard, card_data, DATASET_CARD_TEMPLATE, context, template=template)
