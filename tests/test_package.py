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


def _package_modules():
    import importlib
    import pkgutil

    import hf_cai.spaces

    for package in (hf_cai, hf_cai.spaces):
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith(".__main__"):  # running the command line is not importing a module
                yield importlib.import_module(info.name)


def test_every_exception_class_of_the_package_is_an_hfcai_error():
    import inspect

    from hf_cai.errors import HFCAIError

    classes = {
        f"{module.__name__}.{name}": value
        for module in _package_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
    }
    assert len(classes) >= 18, sorted(classes)  # the walk reached the modules that define them
    assert [name for name, value in classes.items() if not issubclass(value, HFCAIError)] == []
    assert hf_cai.HFCAIError is HFCAIError


_CLI_WITH_A_FAILING_HANDLER = """
import sys
import hf_cai.cli.constitution as constitution
from hf_cai.cli import main
from hf_cai.errors import {module_error}

def failing(args):
    raise {raised}

constitution._list = failing
sys.exit(main(["constitution", "list"]))
"""


@pytest.mark.parametrize("raised", ["ValueError('a bug')", "KeyError('a bug')"])
def test_a_bug_in_a_command_shows_its_traceback(raised):
    code = _CLI_WITH_A_FAILING_HANDLER.format(module_error="HFCAIError", raised=raised)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "a bug" in result.stderr


@pytest.mark.parametrize("error", ["HFCAIError", "InputError"])
def test_hf_cai_errors_are_one_line_with_exit_status_2(error):
    code = _CLI_WITH_A_FAILING_HANDLER.format(module_error=error, raised=f"{error}('the recipe has no model')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "hf-cai constitution: error: the recipe has no model"


def test_the_type_checking_imports_name_exactly_the_lazy_exports():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(hf_cai.__file__).read_text(encoding="utf-8"))
    guarded = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in guarded.body for alias in node.names}
    assert imported == hf_cai._EXPORTS


def test_the_readme_tour_imports_from_the_top_level():
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    names = re.search(r"from hf_cai import \(([^)]*)\)", readme).group(1).replace("\n", " ").split(",")
    assert {"publish", "BenchmarkConfig", "QualityGateConfig", "HFCAIError"} | {n.strip() for n in names} <= set(
        hf_cai.__all__
    )


def test_all_lists_every_lazy_export():
    assert sorted(hf_cai.__all__) == sorted([*hf_cai._EXPORTS, "__version__"])
