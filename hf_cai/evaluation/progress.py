"""The evaluation's one progress bar, over all of its passes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from hf_cai.backends.base import rows_progress, stage_bar


class EvaluationProgress:
    """The evaluation's one bar: the prompts its passes put to the models, with the time left, and the pass running
    named (``eval: CAI model's replies to 32 harmful + 32 benign prompts``, ``eval: judge: calibration items``).

    Within a pass the bar moves as the backends finish each batch (:func:`~hf_cai.backends.base.rows_progress`); at
    its end it stands at the pass's planned count, whatever a backend reported.

    Args:
        passes: ``{name: prompts}`` of every pass, in order.
    """

    def __init__(self, passes: Mapping[str, int]):
        self.passes = dict(passes)
        self.done = 0
        self.bar: Any = None

    def __enter__(self) -> EvaluationProgress:
        self.bar = stage_bar(total=sum(self.passes.values()), desc="eval", unit="prompt", leave=False)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.bar.close()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run the pass ``name`` under the bar."""
        self.bar.set_description_str(f"eval: {name}")
        with rows_progress(self.bar):
            yield
        self.done += self.passes[name]
        self.bar.n = self.done
        self.bar.refresh()


__all__ = ["EvaluationProgress"]
