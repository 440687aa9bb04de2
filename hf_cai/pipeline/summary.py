"""The table printed at the end of a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hf_cai.pipeline.context import RunContext, StageResult


def format_summary(pipeline: RunContext, results: Mapping[str, StageResult]) -> str:
    """The table printed at the end of a run: per stage, status, time and key figures; the stages' notes on what the
    figures mean; and where the outputs are."""
    lines = [f"CAI run in {pipeline.run_dir}  (constitution {pipeline.constitution.name}, "
             f"sha256 {pipeline.constitution.sha256[:12]}…)", ""]
    lines.append(f"{'stage':<10} {'status':<8} {'seconds':>8}  figures")
    lines.append(f"{'-' * 10} {'-' * 8} {'-' * 8}  {'-' * 50}")
    for stage in pipeline.recipe.stage_sequence():
        record = pipeline.manifest.stage(stage)
        metrics = record.get("metrics", {})
        figures = ", ".join(f"{k}={_format_value(v)}" for k, v in metrics.items())
        seconds = record.get("seconds")
        lines.append(
            f"{stage:<10} {record.get('status', 'pending'):<8} {seconds if seconds is not None else '':>8}  {figures}"
        )
    notes = [(stage, note) for stage in pipeline.recipe.stage_sequence()
             for note in pipeline.manifest.stage(stage).get("notes", [])]
    if notes:
        lines += ["", "What the figures mean for this run:"]
        lines += [f"  {stage}: {note}" for stage, note in notes]
    lines.append("")
    for stage in pipeline.recipe.stage_sequence():
        for key, relative in pipeline.manifest.stage(stage).get("outputs", {}).items():
            lines.append(f"{stage + '.' + key:<24} {pipeline.run_dir / relative}")
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
