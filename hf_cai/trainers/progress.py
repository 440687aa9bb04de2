"""The CAI trainers' progress display: one bar at a time, gone once its work is done."""

from __future__ import annotations

from typing import Any

from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import has_length

from hf_cai.backends.base import stage_bar


class CAIProgressCallback(ProgressCallback):
    """transformers' :class:`~transformers.ProgressCallback` with bars that do not stay behind (``leave=False``) and
    no evaluation bar beneath the training bar.

    Its log lines (loss, learning rate, ...) are written above the bar as before; a run's output is then the logs
    and, while it runs, one bar.
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.training_bar = stage_bar(total=state.max_steps, leave=False, dynamic_ncols=True, unit="step")
        self.current_step = 0

    def on_prediction_step(self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kwargs: Any):
        if self.training_bar is None:  # an evaluation during training advances the training bar only
            if state.is_world_process_zero and self.prediction_bar is None and has_length(eval_dataloader):
                self.prediction_bar = stage_bar(
                    total=len(eval_dataloader), desc="evaluating", leave=False, dynamic_ncols=True, unit="batch"
                )
            if self.prediction_bar is not None:
                self.prediction_bar.update(1)


def use_cai_progress(trainer: Any) -> None:
    """Swap the trainer's :class:`~transformers.ProgressCallback` (present unless ``disable_tqdm``; a notebook's
    own progress display is kept) for :class:`CAIProgressCallback`."""
    callbacks = trainer.callback_handler.callbacks
    if any(type(callback) is ProgressCallback for callback in callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(CAIProgressCallback)
