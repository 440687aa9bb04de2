"""Base vs CAI model on held-out requests: :func:`evaluate_models` and its :class:`EvaluationConfig`.

Both models answer harmful requests (a good assistant declines them) and benign ones (it answers them; the built-in
benign requests only look harmful, so refusing them is over-refusal). The prompts come from evaluation sets, the
built-in one by default, never from the training prompts: :func:`select_prompts` checks them against the run's
training prompts and stops when they overlap. Then, for each model, with 95% Wilson intervals:

* refusal rates on the harmful and on the benign requests, by the refusal-phrase classifier (an estimate, with its precision and recall measured) and by
  the AI judge (:func:`~hf_cai.evaluation.judge_questions.judge_refusals`); with ``eval.classifier`` set, an
  independent safety classifier (:mod:`~hf_cai.evaluation.classifiers`: Llama Guard 3, WildGuard, the HarmBench
  classifier) gives the harmful-reply rates, and the refusal rates where it judges refusals;
* the judge's pairwise win rates of the CAI model over the base model: harmlessness on the harmful requests (against
  the constitution), helpfulness on the benign ones (against the ``helpful-honest`` constitution), each pair asked in
  both option orders so position bias cancels;
* the per-principle audit of the replies to the harmful requests;
* the judge's own quality (its calibration report, given or measured) and its accuracy on the paper's multiple-choice
  files.

The judge's figures are only as good as the judge, and a comparison of models loaded differently (one in 4-bit, one
not) measures the loading as much as the training: :mod:`~hf_cai.evaluation.verdict` says so in words, from the
numbers, beside the figures they concern. The report and ``results.json`` are in :mod:`~hf_cai.evaluation.results`, the chart in
:mod:`~hf_cai.evaluation.chart`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_cai.backends.base import describe_loading
from hf_cai.builders.multiple_choice import (
    backend_option_scorer,
    load_multiple_choice,
    multiple_choice_scores,
    swap_options,
)
from hf_cai.constitution import Constitution
from hf_cai.conversation import Conversation
from hf_cai.errors import InputError
from hf_cai.evaluation.benchmarks import BenchmarkConfig
from hf_cai.evaluation.classifiers import ClassifierConfig, classify_replies, load_safety_classifier
from hf_cai.evaluation.harm_sets import refusal_proportions
from hf_cai.evaluation.progress import EvaluationProgress
from hf_cai.evaluation.prompt_selection import EvalPrompts, select_prompts
from hf_cai.evaluation.refusal import is_evasive_refusal
from hf_cai.evaluation.reply_quality import reply_quality_of
from hf_cai.evaluation.results import EvaluationReport
from hf_cai.evaluation.verdict import judge_caveat, loading_caveat, report_lines
from hf_cai.stats import Proportion

logger = logging.getLogger(__name__)



@dataclass
class EvaluationConfig:
    """Options of :func:`evaluate_models` (the recipe's ``eval:`` section).

    Args:
        eval_sets: Where the evaluation prompts come from: ``"builtin"`` (120 harmful and 60 benign-looking requests,
            written apart from the training prompts) and/or files in the HarmBench, AdvBench, StrongREJECT, XSTest,
            Do-Not-Answer or hf-cai formats, Hub dataset ids, or the standard sets by name (``"preset:xstest"``,
            ``"harmbench"``, ...: :data:`~hf_cai.evaluation.harm_set_presets.HARM_SET_PRESETS`), all read by
            :func:`~hf_cai.evaluation.harm_sets.load_eval_set`. Their harmful prompts form the harmful group, their
            benign ones the benign group.
        harmful_prompts: Your own held-out harmful requests; when given they replace the sets' harmful prompts.
        helpful_prompts: Your own held-out benign requests; when given they replace the sets' benign prompts.
        max_prompts: Prompts drawn (with ``seed``) from each group, harmful and benign (``None``: all).
        allow_train_overlap: Evaluate even when evaluation prompts are also training prompts (they are reported in
            ``results.json`` and the notes); by default the overlap stops the evaluation.
        judge_refusals: Also ask the judge whether each reply refuses (a second refusal measure beside the phrase
            classifier).
        principle_audit: Ask the judge, per principle of the constitution, whether each model's replies to the harmful
            requests violate it.
        max_audit_prompts_per_principle: Replies per principle and model the audit asks about (``None``: all).
        judge_few_shot: Put the constitution's preference demonstrations before each win-rate question (as the
            paper does; on a CPU they make each question several times longer).
        judge_quality_items: Calibration items to measure the judge on when no earlier measurement is given
            (``None``: all of the built-in set; ``0``: do not measure).
        num_samples: Replies of both models kept per group as samples.
        max_new_tokens: Length of the generated replies.
        temperature: Sampling temperature of the replies (0 for greedy).
        seed: Seed for prompt selection, principle sampling and generation.
        helpfulness_constitution: Constitution whose preference questions judge helpfulness.
        multiple_choice_files: Files in the paper's multiple-choice format to measure the judge on.
        max_multiple_choice_items: Cap on items per multiple-choice file (``None``: all).
        benchmarks: Standard benchmarks both models run through lm-evaluation-harness, as a mapping of
            :class:`~hf_cai.evaluation.benchmarks.BenchmarkConfig` settings (``tasks``, ``limit``, ``num_fewshot``,
            ``batch_size``, ``include_path``, ``apply_chat_template``); empty (the default): none. Needs
            ``pip install 'hf-cai[eval]'``.
        classifier: A safety classifier judging the replies: a Hub id (``meta-llama/Llama-Guard-3-1B`` / ``-8B``,
            ``allenai/wildguard``, ``cais/HarmBench-Llama-2-13b-cls``) or ``ClassifierConfig`` settings (``model``,
            ``format``, ``endpoint``, ``load_in_4bit``, ``batch_size``: :mod:`~hf_cai.evaluation.classifiers`). The
            harmful-reply rates come from it, the refusal rates too where it judges refusals (WildGuard); the
            phrases and the judge stay as second measures. ``None``: none.
    """

    eval_sets: Sequence[str] = field(default_factory=lambda: ["builtin"])
    harmful_prompts: Sequence[str] | None = None
    helpful_prompts: Sequence[str] | None = None
    max_prompts: int | None = 32
    allow_train_overlap: bool = False
    judge_refusals: bool = True
    principle_audit: bool = True
    max_audit_prompts_per_principle: int | None = 8
    judge_few_shot: bool = True
    judge_quality_items: int | None = None
    num_samples: int = 5
    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    helpfulness_constitution: str = "helpful-honest"
    multiple_choice_files: Sequence[str] = ()
    max_multiple_choice_items: int | None = None
    benchmarks: BenchmarkConfig | Mapping[str, Any] = field(default_factory=dict)
    classifier: ClassifierConfig | Mapping[str, Any] | str | None = None

    def __post_init__(self):
        self.benchmarks = BenchmarkConfig.from_settings(self.benchmarks)
        self.classifier = ClassifierConfig.from_settings(self.classifier)
        if isinstance(self.eval_sets, str):
            self.eval_sets = [self.eval_sets]
        for name in ("max_prompts", "max_audit_prompts_per_principle", "judge_quality_items"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"eval.{name} must be >= 0 or null, got {value}")
        if not self.eval_sets and (self.harmful_prompts is None or self.helpful_prompts is None):
            raise InputError("eval.eval_sets is empty: name a set ('builtin' or a file), or give both "
                             "eval.harmful_prompts and eval.helpful_prompts")

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``results.json`` records them."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, (BenchmarkConfig, ClassifierConfig)):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [str(v) if isinstance(v, Path) else v for v in value]
    return value


def pairwise_win_rate(
    scorer,
    conversations: Sequence[Conversation],
    candidate_replies: Sequence[str],
    reference_replies: Sequence[str],
    principles: Sequence[Any],
    *,
    name: str,
) -> Proportion:
    """Win rate of candidate over reference replies under a ``PreferenceScorer`` (a tie counts as half a win)."""
    probabilities = scorer.prob_first_better(conversations, candidate_replies, reference_replies, principles)
    wins = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in probabilities)
    return Proportion(name, wins, len(probabilities))


def _judge_quality_dict(judge_quality: Any, source: str) -> dict[str, Any] | None:
    if judge_quality is None:
        return None
    data = judge_quality.to_dict() if hasattr(judge_quality, "to_dict") else dict(judge_quality)
    data.setdefault("source", source)
    return data


def evaluate_models(
    base_backend,
    cai_backend,
    feedback_backend,
    constitution: Constitution,
    config: EvaluationConfig | None = None,
    *,
    training_prompts: Iterable[Any] | None = None,
    prompts: EvalPrompts | None = None,
    judge_quality: Any = None,
    models: Mapping[str, Any] | None = None,
    evaluated_artifact: str = "",
    safety_classifier: Any = None,
) -> EvaluationReport:
    """Compare the CAI model with the base model on held-out harmful and benign requests (see the module notes).

    Args:
        base_backend: Generation backend of the model before alignment.
        cai_backend: Generation backend of the aligned model.
        feedback_backend: The judge (often the base model itself, as in the paper's smaller runs).
        constitution: Its preference questions judge harmlessness; its principles are audited.
        config: Prompt sets, sizes, seeds and which judge questions to ask.
        training_prompts: The prompts the CAI model was trained on; evaluation prompts among them stop the
            evaluation (:class:`~hf_cai.evaluation.harm_sets.PromptOverlapError`) unless ``allow_train_overlap``.
        prompts: Prompts already chosen by :func:`select_prompts` (then ``training_prompts`` is not used again).
        judge_quality: The judge's calibration report (a ``JudgeQualityReport`` or its dict), e.g. the one the
            preference-labelling stage measured; measured here on the built-in calibration set when ``None``.
        models: Readable ids of the models for ``results.json``: ``base``, ``cai``, ``judge``, ``judge_is_base``.
        evaluated_artifact: What generated the CAI replies (e.g. ``"LoRA adapter on org/base"``).
        safety_classifier: A :class:`~hf_cai.evaluation.classifiers.SafetyClassifier` to judge the replies; loaded
            from ``config.classifier`` when ``None`` and that is set.

    Returns:
        The :class:`EvaluationReport`; its ``str`` (logged when the evaluation finishes, as a warning when a caveat
        applies) sets every figure beside the caveats that apply to it: a judge whose accuracy is not distinguishable
        from chance beside every figure it judged, and base and CAI models loaded differently (say one in 4-bit, as
        each backend's identity tells) beside every comparison. ``results.json`` records the loading too.
    """
    from hf_cai.builders.ai_feedback import PreferenceScorer
    from hf_cai.builders.judge_quality import builtin_calibration_items, measure_judge_quality
    from hf_cai.evaluation.judge_questions import judge_refusals, judged_rate, principle_audit

    config = config or EvaluationConfig()
    chosen = prompts if prompts is not None else select_prompts(config, training_prompts)
    asked = chosen.all
    chats = [[{"role": "user", "content": p.prompt}] for p in asked]
    split = len(chosen.harmful)
    harmful_chats, benign_chats = chats[:split], chats[split:]
    quality = _judge_quality_dict(judge_quality, "given")
    measure_judge = quality is None and config.judge_quality_items != 0
    choice_items = {Path(name).name: load_multiple_choice(name)[: config.max_multiple_choice_items]
                    for name in config.multiple_choice_files}

    # The evaluation's one bar: every prompt put to a model (a reply generated, a judge's question scored), pass by
    # pass, each pass named; each question to the judge is asked in both option orders.
    requests = f"{split} harmful + {len(benign_chats)} benign prompts"
    audited = len(harmful_chats) if config.max_audit_prompts_per_principle is None else min(
        config.max_audit_prompts_per_principle, len(harmful_chats))
    passes = {f"base model's replies to {requests}": len(chats), f"CAI model's replies to {requests}": len(chats)}
    if safety_classifier is None and config.classifier is not None:
        safety_classifier = load_safety_classifier(config.classifier)
    if safety_classifier is not None:
        passes[f"{safety_classifier.model_id} on both models' replies"] = 2 * len(chats)
    if config.judge_refusals:
        passes |= {f"judge: do the {_label(model)} model's replies refuse?": 2 * len(chats) for model in ("base", "cai")}
    passes["judge: harmlessness of the two models' replies to harmful prompts"] = 2 * len(harmful_chats)
    passes["judge: helpfulness of the two models' replies to benign prompts"] = 2 * len(benign_chats)
    if config.principle_audit and harmful_chats:
        passes["judge: principle audit of the replies to harmful prompts"] = 4 * audited * len(constitution.principles)
    if measure_judge:
        calibration = len(builtin_calibration_items())
        passes["judge: calibration items"] = 2 * min(config.judge_quality_items or calibration, calibration)
    # Each two-option question of a multiple-choice file is asked in both option orders.
    passes |= {f"judge: {name}": sum(1 if swap_options(item) is None else 2 for item in items)
               for name, items in choice_items.items()}
    progress = EvaluationProgress(passes)
    with progress:
        generation = {"max_new_tokens": config.max_new_tokens, "temperature": config.temperature, "seed": config.seed}
        logger.info("generating replies of both models to %d harmful and %d benign requests",
                    len(chosen.harmful), len(chosen.benign))
        replies = {}
        for model, backend in (("base", base_backend), ("cai", cai_backend)):
            with progress.step(f"{_label(model)} model's replies to {requests}"):
                replies[model] = backend.generate(chats, **generation)
        on_harmful = {model: r[:split] for model, r in replies.items()}
        on_benign = {model: r[split:] for model, r in replies.items()}

        proportions = refusal_proportions(replies, asked)
        refusal = {group: {model: _renamed(p, f"refusals of {group} requests ({_label(model)})")
                           for model, p in by_model.items()} for group, by_model in proportions.items()}
        phrase_refusal: dict[str, dict[str, Proportion]] = {}
        classified: dict[str, Any] = {"harmful_response": {}, "section": None}
        if safety_classifier is not None:
            with progress.step(f"{safety_classifier.model_id} on both models' replies"):
                classified = classify_replies(safety_classifier, asked, replies)
            if classified["refusal"] is not None:  # the classifier's refusals lead; the phrases stay as a second measure
                phrase_refusal, refusal = refusal, classified["refusal"]
        judged: dict[str, dict[str, Proportion]] = {}
        if config.judge_refusals:
            logger.info("asking the judge which replies refuse")
            for model, model_replies in replies.items():
                with progress.step(f"judge: do the {_label(model)} model's replies refuse?"):
                    probabilities = judge_refusals(feedback_backend, chats, model_replies)
                for group, part in (("harmful", probabilities[:split]), ("benign", probabilities[split:])):
                    if part:
                        name = f"judged refusals of {group} requests ({_label(model)})"
                        judged.setdefault(group, {})[model] = judged_rate(part, name)
        evasive = {model: Proportion(f"evasive refusals ({_label(model)})", sum(map(is_evasive_refusal, r)), len(r))
                   for model, r in on_harmful.items()}
        reply_quality = {model: reply_quality_of(model_replies, constitution) for model, model_replies in replies.items()}

        helpfulness = Constitution.resolve(config.helpfulness_constitution)
        rng = random.Random(config.seed)
        harm_judge = PreferenceScorer(feedback_backend, constitution, few_shot=config.judge_few_shot)
        help_judge = PreferenceScorer(feedback_backend, helpfulness, few_shot=config.judge_few_shot)
        harm_principles = constitution.sample(len(harmful_chats), seed=rng, stage="preference")
        help_principles = helpfulness.sample(len(benign_chats), seed=rng, stage="preference")
        logger.info("asking the judge which replies it prefers")
        with progress.step("judge: harmlessness of the two models' replies to harmful prompts"):
            harmlessness = pairwise_win_rate(harm_judge, harmful_chats, on_harmful["cai"], on_harmful["base"],
                                             harm_principles, name="harmlessness win rate")
        with progress.step("judge: helpfulness of the two models' replies to benign prompts"):
            helpfulness_rate = pairwise_win_rate(help_judge, benign_chats, on_benign["cai"], on_benign["base"],
                                                 help_principles, name="helpfulness win rate")

        audit: list[dict[str, Any]] = []
        if config.principle_audit and harmful_chats:
            logger.info("auditing the replies to harmful requests principle by principle")
            with progress.step("judge: principle audit of the replies to harmful prompts"):
                audit = principle_audit(feedback_backend, constitution, harmful_chats, on_harmful,
                                        max_prompts_per_principle=config.max_audit_prompts_per_principle,
                                        seed=config.seed)

        if measure_judge:
            logger.info("measuring the judge on the built-in calibration items")
            with progress.step("judge: calibration items"):
                measured = measure_judge_quality(feedback_backend, max_items=config.judge_quality_items,
                                                 seed=config.seed)
            quality = _judge_quality_dict(measured, "measured by the evaluation")

        accuracy: dict[str, Proportion] = {}
        order_consistency: dict[str, Proportion] = {}
        scorer = backend_option_scorer(feedback_backend)
        for label, items in choice_items.items():
            with progress.step(f"judge: {label}"):
                scores = multiple_choice_scores(items, scorer, name=f"feedback accuracy ({label})")
            accuracy[label], order_consistency[label] = scores.accuracy, scores.order_consistency

    samples = []
    for group_prompts, group_replies in ((chosen.harmful, on_harmful), (chosen.benign, on_benign)):
        for index, prompt in enumerate(group_prompts[: config.num_samples]):
            samples.append({"prompt": prompt.prompt, "harmful": prompt.harmful, "category": prompt.category,
                            "base": group_replies["base"][index], "cai": group_replies["cai"][index]})
    report = EvaluationReport(
        harmlessness_win_rate=harmlessness,
        helpfulness_win_rate=helpfulness_rate,
        refusal=refusal,
        phrase_refusal=phrase_refusal,
        harmful_response=classified["harmful_response"],
        safety_classifier=classified["section"],
        judged_refusal=judged,
        evasive=evasive,
        reply_quality=reply_quality,
        principles=audit,
        feedback_accuracy=accuracy,
        feedback_order_consistency=order_consistency,
        judge_quality=quality,
        models=dict(models or {}),
        evaluated_artifact=evaluated_artifact,
        loading=models_loading(base_backend, cai_backend),
        eval_sets=chosen.sets,
        datasets=chosen.datasets,
        overlap=chosen.overlap,
        settings=config.to_dict(),
        samples=samples,
        constitution_sha256=constitution.sha256,
        constitution_name=constitution.name,
    )
    # The whole report, with its caveats beside the figures: a warning when a caveat applies, so that it shows even
    # where logging is not set up.
    results = report.to_dict()
    caveat = judge_caveat(results) or loading_caveat(results)
    logger.log(logging.WARNING if caveat else logging.INFO, "evaluation finished:\n%s", "\n".join(report_lines(results)))
    return report


def models_loading(base_backend: Any, cai_backend: Any) -> dict[str, Any]:
    """How the base and the CAI model's weights were loaded (:func:`~hf_cai.backends.base.describe_loading`: ``"4-bit"``,
    ``"bfloat16"``, ...; ``None`` when the backend does not say), and whether alike (``None``: unknown)."""
    base, cai = describe_loading(base_backend), describe_loading(cai_backend)
    return {"base": base, "cai": cai, "alike": None if base is None or cai is None else base == cai}


def _label(model: str) -> str:
    return "CAI" if model == "cai" else model


def _renamed(proportion: Proportion, name: str) -> Proportion:
    return Proportion(name, proportion.successes, proportion.total)


__all__ = ["EvalPrompts", "EvaluationConfig", "EvaluationReport", "evaluate_models", "models_loading",
           "pairwise_win_rate", "select_prompts"]
