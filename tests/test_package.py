"""The package surface: public names resolve, import stays light, the CLI lists its commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hf_cai


def test_every_public_name_resolves():
    missing = [name for name in hf_cai.__all__ if name != "__version__" and getattr(hf_cai, name, None) is None]
    assert missing == []


def test_import_does_not_load_torch():
    code = "import sys, hf_cai; hf_cai.Constitution.builtin('harmless'); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_cli_lists_command_groups():
    result = subprocess.run([sys.executable, "-m", "hf_cai", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("constitution", "generate", "train", "publish", "hub", "space", "chat", "run", "demo", "eval"):
        assert command in result.stdout, command


def test_secret_options_are_refused_and_tokenizer_settings_are_not():
    from hf_cai.cli import CommandError, refuse_command_line_secrets

    refuse_command_line_secrets(["--sft.eos_token", "<|im_end|>", "--sft.pad_token=<pad>"])
    for tokens in (["--publish.token", "abc"], ["--endpoint-api-key=abc"], ["--password", "abc"]):
        with pytest.raises(CommandError, match="tokens are not taken on the command line"):
            refuse_command_line_secrets(tokens)
