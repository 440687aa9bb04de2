"""benchmarks/harmlessness.py's section for RESULTS.md names the run's actual judge."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hf_cai.evaluation import EvaluationReport, Proportion

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "harmlessness.py"
JUDGE_QUALITY = {"n": 12, "sources": {"builtin": 12}, "accuracy": 0.75, "accuracy_ci95": [0.47, 0.91],
                 "order_consistency": 0.5, "option_mass": 0.9, "label_entropy": 0.4, "position_bias": 0.5}


@pytest.fixture(scope="module")
def harmlessness():
    spec = importlib.util.spec_from_file_location("harmlessness_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(models: dict) -> dict:
    rates = {"base": Proportion("refusals (base)", 1, 8), "cai": Proportion("refusals (CAI)", 5, 8)}
    quality = {"base": {"rate": 0.0, "ci95": [0.0, 0.2], "flagged": 0, "n": 16, "counts": {}},
               "cai": {"rate": 0.0, "ci95": [0.0, 0.2], "flagged": 0, "n": 16, "counts": {}}}
    return EvaluationReport(harmlessness_win_rate=Proportion("harmlessness win rate", 5, 8),
                            helpfulness_win_rate=Proportion("helpfulness win rate", 4, 8),
                            refusal={"harmful": rates, "benign": rates}, reply_quality=quality,
                            judge_quality=JUDGE_QUALITY, models=models).to_dict()


@pytest.mark.parametrize(("models", "named", "never"), [
    ({"base": "org/small-chat", "cai": "runs/x/dpo/final", "judge": "org/bigger-judge-7b", "judge_is_base": False},
     "judge: org/bigger-judge-7b.", "base model itself"),
    ({"base": "org/small-chat", "cai": "runs/x/dpo/final", "judge": "org/small-chat", "judge_is_base": True},
     "judge: org/small-chat (the base model itself).", "bigger-judge"),
])
def test_the_section_names_the_runs_judge(harmlessness, models, named, never):
    text = "\n".join(harmlessness.section_lines(_results(models), title="### t", command="c", machine="m"))
    assert named in text and never not in text
    assert f"Judge report ({named.removeprefix('judge: ').rstrip('.')})" in text
