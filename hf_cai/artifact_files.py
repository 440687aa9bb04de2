"""Names of the files hf_cai writes beside a trained model and reads back (trainers write them; the pipeline, the
model card, the publisher and the Space read them)."""

from __future__ import annotations

TRAINING_RECORD = "cai_training.json"
"""The training record of one stage: its config, the constitution's hash, the base model and the metrics."""

CONSTITUTION_FILE = "constitution.yaml"
"""The constitution a model was trained with, as :meth:`hf_cai.Constitution.to_yaml` writes it."""
