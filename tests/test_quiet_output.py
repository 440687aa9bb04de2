"""What the command line prints: no third-party warnings on a run's noisy paths, everything with ``--verbose``.

The noisy paths are 4-bit loading (bitsandbytes), generation with prefix caching and option scoring (the key/value
cache argument transformers renamed), TRL training configs (``gradient_checkpointing``, renamed), PEFT and TRL reading
renamed model properties, an evaluation before training (bitsandbytes' CPU inference repacking, which broke the
gradients) and training on a CPU without bfloat16 (``pin_memory``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
import yaml

from hf_cai.cli import main, quiet_third_party
from hf_cai.cli import run as run_command
from hf_cai.quiet import KNOWN_WARNINGS

WARNING_CATEGORIES = ("FutureWarning", "UserWarning", "DeprecationWarning")

TINY_RECIPE = {
    "model": "tiny",
    "tiny_pretrain_steps": 0,
    "constitution": "harmless",
    "prompts": "builtin:red_team",
    "helpful_prompts": None,
    "max_prompts": 4,
    "load_in_4bit": True,
    "qlora_profile": "cpu",
    "seed": 0,
    "sl_data": {"rounds": 1, "max_new_tokens": 4, "few_shot": False, "test_size": 0.25},
    "sl_quality": {"exclude_flagged": False},  # four tokens cut every reply short; SFT trains on them anyway
    "sft": {"max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 2},
    "pref_data": {"max_new_tokens": 4, "few_shot": False, "test_size": 0.25, "temperature": 1.0},
    "dpo": {"max_steps": 1, "per_device_train_batch_size": 2, "save_steps": 1},
}


def _warning_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(category in line for category in WARNING_CATEGORIES)]


def test_a_tiny_run_prints_no_third_party_warnings(tmp_path):
    """SL-CAI data, SFT, AI feedback and DPO on the tiny model in 4-bit, in float32 (a CPU without bfloat16)."""
    recipe = {**TINY_RECIPE, "run_dir": str(tmp_path / "run")}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_CAI_DTYPE": "float32"}
    for variable in ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY"):
        env.pop(variable, None)
    result = subprocess.run(
        [sys.executable, "-m", "hf_cai", "run", str(tmp_path / "recipe.yaml"), "--until", "dpo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert _warning_lines(result.stderr) == [], result.stderr[-4000:]
    assert "Loading weights" not in result.stderr, "transformers' own progress bars are off"
    assert re.search(r"\| 2/2 \[", result.stderr), "the SFT training bar stays"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert all(manifest[stage]["status"] == "done" for stage in ("sl_data", "sft", "pref_data", "dpo"))


KNOWN_NOISE = "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing`."
OTHER_WARNING = "a warning hf-cai does not know about"
CHECKPOINTS_LOGGER = "transformers.trainer_utils"
KNOWN_LOG_NOISE = "mtime may not be reliable on this filesystem, falling back to numerical ordering"
OTHER_LOG_WARNING = "per_device_train_batch_size: 2 (from args) != 4 (from trainer_state.json)"


def _noisy_demo(args, overrides) -> int:
    """A stand-in for ``hf-cai demo`` making known noise, and a warning that is not known noise."""
    warnings.warn(KNOWN_NOISE, FutureWarning, stacklevel=1)
    warnings.warn(OTHER_WARNING, UserWarning, stacklevel=1)
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Please make sure you already `pip install kernels`")
    logging.getLogger(CHECKPOINTS_LOGGER).warning(KNOWN_LOG_NOISE)
    logging.getLogger(CHECKPOINTS_LOGGER).warning(OTHER_LOG_WARNING)
    return 0


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("verbose", [False, True])
def test_the_cli_hides_only_known_noise_unless_verbose(monkeypatch, caplog, verbose):
    assert any(category is FutureWarning and "is_gradient_checkpointing" in text for category, text in KNOWN_WARNINGS)
    monkeypatch.setattr(run_command, "_demo", _noisy_demo)
    caplog.set_level(logging.INFO)
    # transformers' loggers may not reach the root logger (its library logger stops propagation once configured).
    checkpoints_log = _Collect()
    logging.getLogger(CHECKPOINTS_LOGGER).addHandler(checkpoints_log)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(["demo", *(["--verbose"] if verbose else [])]) == 0
    finally:
        logging.getLogger(CHECKPOINTS_LOGGER).removeHandler(checkpoints_log)
    messages = [str(warning.message) for warning in seen]
    assert OTHER_WARNING in messages, "only the known noise is hidden"
    assert (KNOWN_NOISE in messages) is verbose
    assert any("pip install kernels" in record.getMessage() for record in caplog.records) is verbose
    assert OTHER_LOG_WARNING in checkpoints_log.messages, "the logger's other messages show"
    assert (KNOWN_LOG_NOISE in checkpoints_log.messages) is verbose


def test_the_library_is_quiet_only_inside_the_command(monkeypatch):
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    monkeypatch.delenv("DATASETS_VERBOSITY", raising=False)
    before = (datasets_logging.get_verbosity(), transformers_logging.get_verbosity())
    bars = transformers_logging.is_progress_bar_enabled()
    bitsandbytes_level = logging.getLogger("bitsandbytes").level
    with quiet_third_party(verbose=False):
        assert datasets_logging.get_verbosity() == logging.ERROR
        assert transformers_logging.get_verbosity() == before[1], "the trainers' bar needs transformers' warnings"
        assert not transformers_logging.is_progress_bar_enabled()
        assert logging.getLogger("bitsandbytes").level == logging.ERROR
    assert (datasets_logging.get_verbosity(), transformers_logging.get_verbosity()) == before
    assert transformers_logging.is_progress_bar_enabled() is bars
    assert logging.getLogger("bitsandbytes").level == bitsandbytes_level
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn(KNOWN_NOISE, FutureWarning, stacklevel=1)
    assert len(seen) == 1, "Python code using hf_cai sees every warning"


def test_a_library_imported_during_the_command_is_quieted_and_restored():
    """transformers' own bars go, the Hub's download bars stay; as before once the command is over."""
    code = (
        "import logging\n"
        "from hf_cai.cli import quiet_third_party\n"
        "with quiet_third_party():\n"
        "    from transformers.utils import logging as tl\n"
        "    from datasets.utils import logging as dl\n"
        "    from huggingface_hub import utils as hub\n"
        "    inside = (tl.is_progress_bar_enabled(), hub.are_progress_bars_disabled(), dl.get_verbosity())\n"
        "after = (tl.is_progress_bar_enabled(), hub.are_progress_bars_disabled(), dl.get_verbosity())\n"
        "print(inside == (False, False, logging.ERROR), after == (True, False, logging.WARNING))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DATASETS_VERBOSITY"}
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "0"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.split() == ["True", "True"], result.stderr[-2000:]


def test_evaluating_before_training_keeps_4bit_gradients(tiny_model_dir):
    """bitsandbytes repacks 4-bit weights for a CPU inference kernel without a backward pass the first time a layer
    runs in eval mode; the model a trainer trains keeps the standard layout, so gradients reach every layer."""
    import torch
    from peft import get_peft_model

    from hf_cai.modeling import keep_4bit_weights_differentiable, load_causal_lm
    from hf_cai.trainers.qlora import load_model_for_training, peft_config_for

    tokens = torch.randint(5, 500, (2, 12))

    def first_layer_gradient(model) -> float:
        model = get_peft_model(model, peft_config_for("cpu"))
        model.train()
        model(input_ids=tokens, labels=tokens).loss.backward()
        name, parameter = next((n, p) for n, p in model.named_parameters() if "layers.0." in n and "lora_B" in n)
        return float(parameter.grad.abs().max())

    used = load_causal_lm(str(tiny_model_dir), load_in_4bit=True)
    used.eval()
    with torch.no_grad():
        used(input_ids=tokens)  # repacks the weights where the CPU has AVX512-BF16
    keep_4bit_weights_differentiable(used)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert first_layer_gradient(used) > 0
        trained = load_model_for_training(str(tiny_model_dir), "cpu")
        trained.eval()
        with torch.no_grad():
            trained(input_ids=tokens)
        assert first_layer_gradient(trained) > 0
    assert not [w for w in seen if "autograd kernel was not registered" in str(w.message)]


def test_the_verbose_option_is_accepted_before_and_after_the_command():
    from hf_cai.cli import build_parser, split_overrides

    parser = build_parser()
    for argv, verbose in ((["-v", "demo"], True), (["demo", "--verbose"], True), (["demo"], False)):
        kept, overrides = split_overrides(parser, argv)
        assert parser.parse_args(kept).verbose is verbose and overrides == []


def test_the_command_line_quiets_libraries_without_hooking_imports():
    """The public switches of transformers and datasets are set at the command's start; the import system is left
    alone, and a command that loads no model does not import them."""
    code = (
        "import sys\n"
        "from hf_cai.cli import main, quiet_third_party\n"
        "with quiet_third_party():\n"
        "    hooked = any(type(finder).__module__.startswith('hf_cai') for finder in sys.meta_path)\n"
        "    loaded = 'transformers' in sys.modules and 'datasets' in sys.modules\n"
        "del sys.modules['transformers'], sys.modules['datasets']\n"
        "main(['constitution', 'list'])\n"
        "print(hooked, loaded, 'transformers' in sys.modules or 'datasets' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split()[-3:] == ["False", "True", "False"], result.stderr[-2000:]


def test_a_stage_bar_hides_the_backends_bars_while_it_is_open():
    from tqdm import tqdm

    from hf_cai.backends.base import progress_bar, stage_bar

    with tqdm(total=3, disable=False) as unrelated:  # a bar that is not hf_cai's does not hide them
        unrelated.update(0)
        assert not progress_bar(range(3), description="generating", unit="batch").disable
    with stage_bar(total=3, desc="eval") as stage:
        stage.update(1)
        assert progress_bar(range(3), description="generating", unit="batch").disable
    assert not progress_bar(range(3), description="generating", unit="batch").disable
