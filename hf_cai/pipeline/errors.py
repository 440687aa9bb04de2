"""The two ways a run stops: a recipe that cannot work, and a stage that could not run."""

from __future__ import annotations

from hf_cai.errors import HFCAIError


class RecipeError(HFCAIError, ValueError):
    """A recipe is malformed or asks for something that cannot work; the message names the key and the fix."""


class PipelineError(HFCAIError, RuntimeError):
    """A stage could not run (missing input, full disk, ...); finished work is kept in the run directory."""
