"""Choosing what an evaluation asks: :func:`select_prompts` draws the harmful and benign prompts of an
:class:`~hf_cai.evaluation.comparison.EvaluationConfig` from its evaluation sets (or the user's own prompts), and checks
them against the training prompts."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hf_cai.errors import InputError
from hf_cai.evaluation.harm_sets import EvalPrompt, EvalSet, load_eval_set
from hf_cai.evaluation.prompt_overlap import check_disjoint

logger = logging.getLogger(__name__)

_USER_SET = "user prompts"


@dataclass
class EvalPrompts:
    """The prompts an evaluation asks, as :func:`select_prompts` chose them.

    Attributes:
        harmful: Requests a good assistant declines.
        benign: Requests it answers.
        sets: The sets they came from: ``{"name", "source", "harmful", "benign"}`` (counts before sampling).
        datasets: ``{"harmful" | "benign": {"type", "name"}}``: how a model card names each group.
        overlap: What the train/eval overlap check found: ``{"checked", "training_prompts", "overlapping", "allowed"}``.
    """

    harmful: list[EvalPrompt]
    benign: list[EvalPrompt]
    sets: list[dict[str, Any]] = field(default_factory=list)
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)
    overlap: dict[str, Any] = field(default_factory=dict)

    @property
    def all(self) -> list[EvalPrompt]:
        return [*self.harmful, *self.benign]


def _sample(prompts: list[EvalPrompt], limit: int | None, seed: int) -> list[EvalPrompt]:
    return EvalSet("", prompts).sample(limit, seed=seed).prompts if limit is not None else prompts


def _dataset_name(sets: list[EvalSet], group: str, own: bool) -> dict[str, str]:
    """How a model card names a group's prompts: plain names, never made-up Hub ids (see ``hf_cai.hub.model_card``)."""
    if own:
        return {"type": "hf-cai-user-prompts", "name": f"held-out {group} prompts given in eval.{group}_prompts"}
    chosen = [s for s in sets if (s.harmful() if group == "harmful" else s.benign()).prompts]
    if chosen and all(s.name == "hf-cai-eval" for s in chosen):
        return {"type": "hf-cai-eval", "name": f"hf-cai built-in evaluation set, {group} requests"}
    names = "+".join(s.name for s in chosen) or "none"
    return {"type": names, "name": f"{', '.join(s.name for s in chosen)} ({group} requests)"}


def select_prompts(config: Any, training_prompts: Iterable[Any] | None = None) -> EvalPrompts:
    """The harmful and benign prompts ``config`` (an ``EvaluationConfig``) asks for, at most ``max_prompts`` of each, checked against
    ``training_prompts`` when given.

    Raises:
        PromptOverlapError: Evaluation prompts are among the training prompts and ``allow_train_overlap`` is off.
        FileNotFoundError, ValueError: An evaluation set cannot be read.
    """
    sets = [load_eval_set(source) for source in config.eval_sets]
    pooled = [p for s in sets for p in s]
    own_harmful, own_benign = config.harmful_prompts is not None, config.helpful_prompts is not None
    harmful = ([EvalPrompt(str(p), True, "", _USER_SET) for p in config.harmful_prompts] if own_harmful
               else [p for p in pooled if p.harmful])
    benign = ([EvalPrompt(str(p), False, "", _USER_SET) for p in config.helpful_prompts] if own_benign
              else [p for p in pooled if not p.harmful])
    harmful = _sample(harmful, config.max_prompts, config.seed)
    benign = _sample(benign, config.max_prompts, config.seed)
    if not harmful and not benign:
        raise InputError("the evaluation has no prompts: check eval.eval_sets / eval.harmful_prompts / "
                         "eval.helpful_prompts and eval.max_prompts")
    overlap: dict[str, Any] = {"checked": False, "training_prompts": 0, "overlapping": [],
                               "allowed": config.allow_train_overlap}
    if training_prompts is not None:
        training = list(training_prompts)
        found = check_disjoint([*harmful, *benign], training, allow=config.allow_train_overlap)
        overlap.update({"checked": True, "training_prompts": len(training), "overlapping": found})
        if found:
            logger.warning(
                "%d of %d evaluation prompts are also training prompts; evaluating anyway because "
                "eval.allow_train_overlap is true: the rates on them flatter the model",
                len(found), len(harmful) + len(benign),
            )
    summaries = [{"name": s.name, "source": ",".join(sorted({p.source for p in s})),
                  "harmful": len(s.harmful()), "benign": len(s.benign())} for s in sets]
    if own_harmful or own_benign:
        summaries.append({"name": _USER_SET, "source": "eval settings",
                          "harmful": len(config.harmful_prompts or ()), "benign": len(config.helpful_prompts or ())})
    return EvalPrompts(
        harmful=harmful,
        benign=benign,
        sets=summaries,
        datasets={"harmful": _dataset_name(sets, "harmful", own_harmful),
                  "benign": _dataset_name(sets, "benign", own_benign)},
        overlap=overlap,
    )
