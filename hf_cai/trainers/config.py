"""What the CAI training configs add to TRL's: the constitution, the QLoRA profile and, for preferences, soft labels.

``CAISFTConfig(CAIConfigMixin, SFTConfig)``, ``CAIDPOConfig(CAIPreferenceConfigMixin, DPOConfig)`` and
``CAIRewardConfig(CAIPreferenceConfigMixin, RewardConfig)`` put the mixins' fields (and ``CAISFTConfig`` its own, on
the quality gates' flags) after TRL's, so a TRL config's arguments (by keyword or position) mean the same in its CAI
subclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hf_cai.artifact_files import CONSTITUTION_FILE, TRAINING_RECORD
from hf_cai.errors import InputError
from hf_cai.trainers.flagged_rows import FlaggedRowsConfigMixin
from hf_cai.trainers.qlora import QLORA_PROFILES, TrainingStage, accelerator_available, apply_profile_defaults


# Only the fields: each stage's config dataclass makes the constructor, repr and comparison from TRL's and these.
@dataclass(init=False, repr=False, eq=False)
class CAIConfigMixin:
    """The CAI fields of every training config; the QLoRA profile fills only the settings the user did not set.

    Put it first among the bases of a TRL config dataclass. The fields given to the constructor (by keyword or
    position) are recorded before the dataclass ``__init__`` runs, so a value the user set is kept even when it
    equals TRL's default, and the profile fills only the others. A parser that passes every field
    (``HfArgumentParser``, TRL's ``TrlParser``) sets them all: construct the config from the fields the user gave
    instead, as ``hf-cai train`` does.

    Parameters:
        constitution (`str`, *optional*):
            Built-in constitution name or constitution file the training data was made with; saved as
            ``constitution.yaml`` with every checkpoint. The trainer's ``constitution=`` argument takes precedence.
        qlora_profile (`str`, *optional*):
            ``"8gb"``, ``"12gb"``, ``"16gb"``, ``"24gb"`` or ``"cpu"``: fills the settings not given explicitly
            (memory-related ones, the stage's LoRA learning rate, precision, a checkpoint every tenth of the run,
            the two newest checkpoints kept), loads a model given by name in 4-bit and adds the profile's LoRA
            adapter. A saved adapter given by name is trained further instead.
        load_in_4bit (`bool`, *optional*):
            With a profile, whether a model loaded by name is quantised to 4-bit NF4. ``None``: as the profile says.
    """

    _cai_stage: ClassVar[TrainingStage]
    """Which of the profile's per-stage settings apply (and the stage a trainer records)."""

    constitution: str | None = field(
        default=None,
        metadata={
            "help": "Built-in constitution name or path of a constitution file (YAML/JSON) the training data was made "
            f"with. It is saved as `{CONSTITUTION_FILE}` next to every checkpoint and the final model, and its sha256 "
            f"goes into `{TRAINING_RECORD}`. The trainer's `constitution=` argument takes precedence. When unset, a "
            "built-in constitution whose sha256 matches the dataset's `constitution_sha256` column is used."
        },
    )
    qlora_profile: str | None = field(
        default=None,
        metadata={
            "help": "Memory profile for QLoRA training: `8gb`, `12gb`, `16gb`, `24gb` or `cpu` (see "
            "`hf_cai.trainers.qlora`). It fills the learning rate, batch size, gradient accumulation, max length, "
            "optimizer, precision, gradient checkpointing, checkpoint interval and checkpoints kept (the newest two) "
            "settings the config was not given explicitly; a model given by name is loaded in 4-bit NF4 (see "
            "`load_in_4bit`), and the profile's LoRA adapter is used unless `peft_config` is passed or the model is a "
            "saved adapter. `None` trains exactly as TRL does.",
            "choices": list(QLORA_PROFILES),
        },
    )
    load_in_4bit: bool | None = field(
        default=None,
        metadata={
            "help": "Whether a model the trainer loads by name with a `qlora_profile` is quantised to 4-bit NF4 "
            "(QLoRA). `None` follows the profile (4-bit for every built-in profile); `False` trains plain LoRA on an "
            "unquantised base. Without a profile, `True` is refused: pass TRL's `quantization_config` instead."
        },
    )

    def __new__(cls, *args: Any, **kwargs: Any):
        config = super().__new__(cls)
        positional = [f.name for f in dataclasses.fields(cls) if f.init][: len(args)]
        config._cai_explicit_fields = frozenset(positional) | frozenset(kwargs)
        return config

    @property
    def explicit_fields(self) -> frozenset[str]:
        """The fields this config was constructed with (by keyword or position)."""
        return getattr(self, "_cai_explicit_fields", frozenset())

    def __post_init__(self):
        if self.qlora_profile is not None:
            apply_profile_defaults(self, self.qlora_profile, self._cai_stage, explicit=self.explicit_fields)
        elif self.load_in_4bit:
            raise InputError(
                "load_in_4bit=True applies to models loaded with a qlora_profile; set qlora_profile (e.g. 'cpu' or "
                "'8gb'), or pass quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...) to the trainer as "
                "with TRL"
            )
        self._cai_use_current_names()
        if "dataloader_pin_memory" not in self.explicit_fields and not accelerator_available():
            # Pinned memory speeds copies to an accelerator; without one, PyTorch warns at every DataLoader.
            self.dataloader_pin_memory = False
        super().__post_init__()

    def _cai_use_current_names(self) -> None:
        """Give TRL's (or the profile's) ``gradient_checkpointing`` to its current name, ``activation_checkpointing``.

        TRL declares the old name with its own default (``True``); transformers, which renamed it, warns about the
        old name whenever the new one is unset. A value the user set under the old name is left for transformers to
        move, with its warning.
        """
        if getattr(self, "activation_checkpointing", False) is None and "gradient_checkpointing" not in (
            self.explicit_fields
        ):
            self.activation_checkpointing = self.gradient_checkpointing


@dataclass(init=False, repr=False, eq=False)
class CAIPreferenceConfigMixin(FlaggedRowsConfigMixin, CAIConfigMixin):
    """The CAI fields of the preference configs (DPO, reward): :class:`CAIConfigMixin`'s, ``exclude_flagged_rows``
    and ``min_kept_share`` (:class:`~hf_cai.trainers.flagged_rows.FlaggedRowsConfigMixin`: the SL-CAI
    ``train_prefs`` split carries the quality gates' flags), and ``soft_labels``.

    Parameters:
        soft_labels (`bool`, *optional*):
            Train on the ``chosen_prob`` column as soft labels. ``None``: when the column exists.
    """

    soft_labels: bool | None = field(
        default=None,
        metadata={
            "help": "Train on the soft AI-feedback labels of a `chosen_prob` column (probability that `chosen` is "
            "better): loss = -p log sigmoid(x) - (1 - p) log sigmoid(-x). `None` uses them when the column exists; "
            "`False` ignores the column (hard labels, exactly TRL's loss); `True` requires it."
        },
    )

