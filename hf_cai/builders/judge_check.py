"""The judge check: the feedback model answers calibration questions before it labels preference data.

:class:`JudgeCheckConfig` says which questions and which thresholds (the recipe's ``judge_check`` section);
:meth:`JudgeCheckConfig.run` measures the judge (:func:`~hf_cai.builders.judge_quality.measure_judge_quality`), logs
the report and its warnings, writes :data:`JUDGE_QUALITY_FILE` and stops below ``min_judge_accuracy``.
:class:`~hf_cai.builders.AIFeedbackBuilder` runs it at the start of every build.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_cai.builders.judge_quality import JudgeQualityReport, check_judge_quality, measure_judge_quality
from hf_cai.builders.sharding import atomic_write_text
from hf_cai.errors import InputError

logger = logging.getLogger(__name__)

JUDGE_QUALITY_FILE = "judge_quality.json"
"""The judge check's report beside a built preference dataset's ``dataset/`` folder: ``JudgeQualityReport.to_dict()``,
its ``warnings`` computed with the check's ``min_option_mass``."""


@dataclass
class JudgeCheckConfig:
    """The judge check :class:`~hf_cai.builders.AIFeedbackBuilder` runs before labelling preference data (its
    ``judge_check`` argument; the recipe's ``judge_check`` section): the feedback model answers calibration questions
    (:func:`~hf_cai.builders.judge_quality.measure_judge_quality`), and the build warns, or stops, when it judges no
    better than chance."""

    enabled: bool = field(default=True, metadata={"help": "false skips the check: the labels' quality is unknown."})
    min_judge_accuracy: float | None = field(default=None, metadata={
        "help": "Stop the run before labelling when the judge's accuracy is below this (0-1); null only warns. "
        "Chance is 1/k for k options (0.5 on two-option items); on few items the accuracy is rough (see its interval)."})
    min_option_mass: float = field(default=0.5, metadata={
        "help": "Warn when less than this share of the judge's probability falls on the answer options at all."})
    calibration_files: list[str] = field(default_factory=list, metadata={
        "help": "More items: files in the paper's multiple-choice format, e.g. its 438HHHEvaluations.jsonl."})
    max_items: int | None = field(default=None, metadata={
        "help": "Ask a sample of this many items (seeded by the recipe's seed); null asks them all."})
    include_builtin: bool = field(default=True, metadata={
        "help": "Ask the built-in calibration items (hf_cai/prompts/judge_calibration.jsonl) too."})

    def __post_init__(self) -> None:
        if isinstance(self.calibration_files, (str, Path)):
            self.calibration_files = [str(self.calibration_files)]
        self.calibration_files = [str(f) for f in self.calibration_files]
        if self.min_judge_accuracy is not None and not 0.0 <= self.min_judge_accuracy <= 1.0:
            raise InputError(f"min_judge_accuracy must be between 0 and 1 (or null), got {self.min_judge_accuracy}")
        if not 0.0 <= self.min_option_mass <= 1.0:
            raise InputError(f"min_option_mass must be between 0 and 1, got {self.min_option_mass}")
        if self.max_items is not None and self.max_items < 1:
            raise InputError(f"max_items must be >= 1 or null, got {self.max_items}")
        if self.enabled and not self.include_builtin and not self.calibration_files:
            raise InputError("include_builtin is false and no calibration_files are given: no item to ask the judge")

    def measure(self, backend: Any, *, seed: int = 0) -> JudgeQualityReport:
        """:func:`~hf_cai.builders.judge_quality.measure_judge_quality` of ``backend`` on this check's items."""
        items = None if self.include_builtin else []
        return measure_judge_quality(backend, items, files=self.calibration_files, max_items=self.max_items, seed=seed)

    def check(self, report: JudgeQualityReport) -> list[str]:
        """:func:`~hf_cai.builders.judge_quality.check_judge_quality` with this check's thresholds (warnings logged
        and returned; raises ``JudgeQualityError`` below ``min_judge_accuracy``)."""
        return check_judge_quality(report, min_accuracy=self.min_judge_accuracy, min_option_mass=self.min_option_mass)

    def run(self, backend: Any, *, seed: int = 0, output_dir: str | Path | None = None) -> JudgeQualityReport | None:
        """Measure ``backend`` as a judge, log the report and its warnings (the accuracy with its interval; "not
        distinguishable from chance" when the interval reaches down to chance, 1/k for k options), and with ``output_dir`` write it to
        ``output_dir/judge_quality.json``. ``None``, with a warning, when the check is off (an earlier report in
        ``output_dir`` is removed: it would describe labels this build did not give).

        Raises:
            JudgeQualityError: ``min_judge_accuracy`` is set and the judge's accuracy is below it; the report is
                written first.
        """
        path = Path(output_dir) / JUDGE_QUALITY_FILE if output_dir is not None else None
        if not self.enabled:
            if path is not None:
                path.unlink(missing_ok=True)
            logger.warning("judge check skipped (enabled=False): how well the feedback model judges, and so the "
                           "quality of the preference labels, is unknown")
            return None
        report = self.measure(backend, seed=seed)
        if path is not None:
            record = {**report.to_dict(), "warnings": report.warnings(min_option_mass=self.min_option_mass)}
            atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        self.check(report)
        return report
