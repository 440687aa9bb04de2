"""The pipeline's stages, one module each: each calls the library on the outputs of the stages before it.

A stage function takes the :class:`~hf_cai.pipeline.context.RunContext` of its run and its own folder, and returns a
:class:`~hf_cai.pipeline.context.StageResult` naming its outputs relative to the run directory. Stages resume by
relying on the library's own resume: dataset builders reuse finished shards and steps, trainers restart from their
last complete checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.card import run_card
from hf_cai.pipeline.stages.dpo import run_dpo
from hf_cai.pipeline.stages.evaluate import run_eval
from hf_cai.pipeline.stages.grpo import run_grpo
from hf_cai.pipeline.stages.pref_data import run_pref_data
from hf_cai.pipeline.stages.publish import run_publish
from hf_cai.pipeline.stages.reward import run_reward
from hf_cai.pipeline.stages.sft import run_sft
from hf_cai.pipeline.stages.sl_data import run_sl_data
from hf_cai.pipeline.stages.space import run_space

STAGE_FUNCTIONS: dict[str, Callable[[RunContext, Path], StageResult]] = {
    "sl_data": run_sl_data,
    "sft": run_sft,
    "pref_data": run_pref_data,
    "dpo": run_dpo,
    "reward": run_reward,
    "grpo": run_grpo,
    "eval": run_eval,
    "card": run_card,
    "publish": run_publish,
    "space": run_space,
}
"""The function that runs each stage, by stage name."""
