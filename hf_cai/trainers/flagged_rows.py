"""The rows the SL-CAI quality gates flagged, left out of training: the config fields and the filtering.

The SL-CAI builder marks each row in a ``quality_flags`` column (:mod:`hf_cai.builders.quality_gates`; ``[]`` for a
row that passed). The SFT, DPO and reward trainers train and evaluate only on the rows it did not flag, unless
``exclude_flagged_rows`` is off, and stop before the model loads when fewer than ``min_kept_share`` of the training
rows are kept. A dataset without the column trains as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from hf_cai.builders.quality_gates import (
    QUALITY_COLUMN,
    QualityGateConfig,
    QualityGateError,
    QualityGateResult,
    filter_for_training,
)
from hf_cai.errors import InputError
from hf_cai.trainers.data import column_names, named_splits

logger = logging.getLogger(__name__)


@dataclass(init=False, repr=False, eq=False)
class FlaggedRowsConfigMixin:
    """The fields that govern data with the quality gates' ``quality_flags`` column; put it before
    :class:`~hf_cai.trainers.config.CAIConfigMixin`, so that its fields come after TRL's and keep TRL's positional
    arguments as they are.

    Parameters:
        exclude_flagged_rows (`bool`, *optional*, defaults to `True`):
            Train (and evaluate) only on the rows the quality gates did not flag.
        min_kept_share (`float`, *optional*, defaults to `0.5`):
            Refuse to train (``QualityGateError``) when fewer than this share of the training rows are kept.
    """

    exclude_flagged_rows: bool = field(
        default=True,
        metadata={
            "help": f"For a dataset with a `{QUALITY_COLUMN}` column (the SL-CAI builder's quality gates): train and "
            "evaluate only on the rows the gates did not flag, and log how many that is. False trains on every row "
            "(still logging how many are flagged): at your own risk. A recipe's SFT stage takes `sl_quality.exclude_flagged`."
        },
    )
    min_kept_share: float = field(
        default=QualityGateConfig.min_kept_share,
        metadata={
            "help": f"For a dataset with a `{QUALITY_COLUMN}` column: stop with QualityGateError, before loading the "
            "model, when fewer than this share of the training rows are kept (the model that wrote the data is "
            "then not up to the task). 0 never stops, unless no row is left. A recipe's SFT stage takes "
            "`sl_quality.min_kept_share`."
        },
    )

    def __post_init__(self):
        if not 0 <= self.min_kept_share <= 1:
            raise InputError(f"min_kept_share must be in [0, 1], got {self.min_kept_share}")
        super().__post_init__()



def keep_unflagged_rows(arguments: dict[str, Any], splits: dict[str, Any]) -> QualityGateResult | None:
    """Replace the trainer's ``train_dataset`` and ``eval_dataset`` in ``arguments`` (and ``splits``, by name) with
    their rows the quality gates did not flag, as ``arguments["args"]`` says; return the training rows' flags
    (``None`` without a ``quality_flags`` column).

    Raises:
        QualityGateError: Fewer than ``min_kept_share`` of the training rows are kept, or none is.
    """
    args = arguments["args"]
    arguments["train_dataset"], result = _kept_training_rows(arguments["train_dataset"], args)
    eval_dataset = arguments["eval_dataset"]
    if isinstance(eval_dataset, dict):
        arguments["eval_dataset"] = {
            name: _kept_eval_rows(part, args, f"eval '{name}'") for name, part in eval_dataset.items()
        }
    else:
        arguments["eval_dataset"] = _kept_eval_rows(eval_dataset, args, "eval")
    splits.clear()
    splits.update(named_splits(arguments["train_dataset"], arguments["eval_dataset"]))
    return result


def _has_flags(dataset: Any) -> bool:
    return dataset is not None and QUALITY_COLUMN in (column_names(dataset) or [])


def _kept_training_rows(dataset: Any, args: Any) -> tuple[Any, QualityGateResult | None]:
    """The training rows the quality gates did not flag (all of them with ``exclude_flagged_rows`` off), logged, and
    their flags; raises :class:`QualityGateError` when too few are kept."""
    if not _has_flags(dataset):
        return dataset, None
    exclude = getattr(args, "exclude_flagged_rows", True)
    if not hasattr(dataset, "__len__"):  # a streamed dataset: its rows are counted only as they come
        if exclude:
            logger.info("training on the rows the quality gates did not flag (%s column), left out as they stream",
                        QUALITY_COLUMN)
            dataset = dataset.filter(lambda row: not row[QUALITY_COLUMN])
        return dataset, None
    config = QualityGateConfig(exclude_flagged=exclude, min_kept_share=getattr(args, "min_kept_share", 0.5))
    result = QualityGateResult(flags=[list(flags or ()) for flags in dataset[QUALITY_COLUMN]], config=config)
    kept = filter_for_training(dataset, result)
    if result.total and not result.kept:
        raise QualityGateError(
            f"the quality gates left none of the {result.total} training rows (min_kept_share is 0, so nothing else "
            "stopped the training). Generate the SL-CAI data with a larger or stronger model, or train on the flagged "
            "rows too (`exclude_flagged_rows=False` in CAISFTConfig; `exclude_flagged: false` in the recipe's "
            "`sl_quality` section).",
            result,
        )
    if not result.flagged:
        logger.info("training on all %d rows: the quality gates flagged none", result.total)
    elif exclude:
        logger.info(
            "training on %d of %d rows (%.0f%%): the quality gates flagged %d (%s; %s column); "
            "exclude_flagged_rows=False trains on them too",
            result.kept, result.total, 100 * result.kept_share, result.flagged, _reasons(result), QUALITY_COLUMN,
        )
    else:
        logger.warning(
            "training on all %d rows, %d of them flagged by the quality gates (%s): exclude_flagged_rows is off",
            result.total, result.flagged, _reasons(result),
        )
    return kept, result


def _kept_eval_rows(dataset: Any, args: Any, split: str) -> Any:
    """The evaluation rows the quality gates did not flag (``None`` when they flagged every one)."""
    if not _has_flags(dataset) or not getattr(args, "exclude_flagged_rows", True):
        return dataset
    if not hasattr(dataset, "__len__"):
        return dataset.filter(lambda row: not row[QUALITY_COLUMN])
    passed = [index for index, flags in enumerate(dataset[QUALITY_COLUMN]) if not flags]
    if len(passed) == len(dataset):
        return dataset
    if not passed:
        logger.warning("no %s rows to evaluate on: the quality gates flagged all %d of them", split, len(dataset))
        return None
    logger.info("evaluating on %d of %d %s rows: the quality gates flagged the others", len(passed), len(dataset), split)
    return dataset.select(passed)


def _reasons(result: QualityGateResult) -> str:
    return ", ".join(f"{flag.replace('_', ' ')} {count}" for flag, count in result.reason_counts.items() if count)
