"""The dataset card of a published SL-CAI or RL-CAI dataset: Hub metadata, data layout and provenance.

Metadata: ``license`` (checked), ``tags`` (``constitutional-ai``, ``hf-cai``, ``sl-cai`` or ``rl-cai``, ``synthetic``),
``task_categories``, ``size_categories``, ``configs`` (so ``datasets.load_dataset`` finds the parquet files of each
split) and ``constitution: {name, version, sha256}``. The body comes from ``model_cards/dataset_card.md.j2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution
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
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
COLUMN_DOCS = {
    "prompt": "the conversation up to the red-team (or helpful) request",
    "messages": "the request and the final revision, as a chat (SFT target)",
    "chosen": "preferred reply (as chat messages)",
    "rejected": "dispreferred reply (as chat messages)",
    "initial_response": "the model's first reply, before any critique",
    "revisions": "critique → revision rounds: round, principle_id, critique, revision",
    "chosen_prob": "soft label: probability the feedback model gave to `chosen`, averaged over option orders and principles",
    "principle_ids": "principles the feedback question was asked under",
    "completion": "the final revision, as a one-message list (prompt-completion format)",
    "kind": "`revised`, or `helpful` for benign prompts answered without critique",
    "principle_probs": "the probability of `chosen` under each principle of `principle_ids`",
    "constitution_sha256": "sha256 of the constitution the row was generated under",
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
):
    """Generate the card (a ``huggingface_hub.DatasetCard``) of a CAI ``DatasetDict`` published as parquet.

    Args:
        dataset: The ``DatasetDict`` being published (a ``Dataset`` is the split ``train``).
        repo_id: The dataset repository (used in the loading snippet).
        constitution: The constitution the rows were generated under.
        license: Hub license id of the data (required).
        license_name: Short name of the license when ``license="other"``.
        license_link: Link to the license text when ``license="other"``.
        models: Hub ids of models trained on this data, linked from the card.
        template: A Jinja template file to use instead of ``model_cards/dataset_card.md.j2``.
        num_examples: How many examples to show.
        seed: Seed of the example sampling.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    license_id = validate_license(license, license_name=license_name, license_link=license_link)
    dataset = load_dataset_dict(dataset)
    kind = dataset_kind(dataset)
    sizes = split_sizes(dataset)
    counts = principle_row_counts(dataset)
    column_names = next(iter(dataset.values())).column_names if sizes else []
    card_data = DatasetCardData(
        license=license_id,
        license_name=license_name if license_id == "other" else None,
        license_link=license_link if license_id == "other" else None,
        tags=["constitutional-ai", "hf-cai", *([kind] if kind != "other" else []), "synthetic"],
        task_categories=["text-generation"],
        size_categories=[_size_category(sum(sizes.values()))],
        pretty_name=f"{repo_id.split('/')[-1]} ({constitution.name} constitution)",
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": data_file_path(s)} for s in sizes]}],
        constitution={"name": constitution.name, "version": constitution.version, "sha256": constitution.sha256},
    )
    context = {
        "repo_id": repo_id,
        "kind": kind,
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
    }
    return render_card(DatasetCard, card_data, DATASET_CARD_TEMPLATE, context, template=template)
