"""The wheel of the running hf_cai, for a Space to install the very code that generated it.

hf_cai running from its project folder (a checkout installed with ``pip install -e .``) is built with the project's
own build backend: a source distribution first, so that only the files the project ships go in, then a wheel of it,
in a temporary folder, so nothing lands in the checkout but the ``*.egg-info`` that installing already made. hf_cai
installed from a wheel is packed again from the files that wheel installed (its ``RECORD``). Timestamps are fixed, so
the same code gives the same bytes and republishing an unchanged Space changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from hf_cai.hub.errors import PublishError

DISTRIBUTION = "hf-cai"
_EPOCH = 315532800  # 1980-01-01, the earliest time a zip archive can hold
_NOT_PACKED = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")
_SETUPTOOLS_MAJOR = 77  # the first setuptools that reads pyproject.toml's SPDX `license` string


def build_hf_cai_wheel(directory: str | Path) -> Path:
    """Write the wheel of the hf_cai that is running into ``directory`` and return its path.

    Raises:
        PublishError: hf_cai runs from neither a project folder nor an installed wheel, or the build failed.
    """
    import hf_cai

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    package = Path(hf_cai.__file__).resolve().parent
    if _is_project(package.parent):
        return _build_from_source(package.parent, directory)
    return _repack_installed(_installed_distribution(package), directory)


def _is_project(folder: Path) -> bool:
    """Whether ``folder`` is the hf-cai project itself (its ``pyproject.toml`` names the distribution)."""
    pyproject = folder / "pyproject.toml"
    return (
        pyproject.is_file()
        and re.search(rf'^name\s*=\s*"{DISTRIBUTION}"\s*$', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
        is not None
    )


def _installed_distribution(package: Path) -> metadata.Distribution:
    """The installed distribution whose files include this ``hf_cai`` package."""
    for distribution in metadata.distributions(name=DISTRIBUTION):
        init = Path(distribution.locate_file("hf_cai/__init__.py")).resolve()
        if init == package / "__init__.py" and distribution.files:
            return distribution
    raise PublishError(
        f"hf_cai runs from {package}, which belongs to neither the hf-cai project folder nor an installed hf-cai "
        "wheel, so there is no wheel to ship: install hf-cai, or pass the requirement line that installs it"
    )


def _build_from_source(source: Path, directory: Path) -> Path:
    try:
        installed = f"setuptools {metadata.version('setuptools')}"
    except metadata.PackageNotFoundError:
        installed = "no setuptools"
    major = installed.removeprefix("setuptools ").split(".")[0]
    if not major.isdigit() or int(major) < _SETUPTOOLS_MAJOR:
        raise PublishError(
            f"building the hf_cai wheel from {source} needs setuptools>={_SETUPTOOLS_MAJOR} (as its pyproject.toml "
            f"says) and this environment has {installed}: run `pip install 'setuptools>={_SETUPTOOLS_MAJOR}'`"
        )
    environment = {**os.environ, "SOURCE_DATE_EPOCH": str(_EPOCH)}
    with tempfile.TemporaryDirectory(prefix="hf-cai-wheel-") as staging:
        sdist = _run(
            [
                sys.executable,
                "-c",
                "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))",
                staging,
            ],
            cwd=source,
            env=environment,
            what=f"building the source distribution of {source}",
        ).splitlines()[-1]
        wheels = Path(staging) / "wheel"
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-cache-dir",
                "--quiet",
                "--wheel-dir",
                str(wheels),
                str(Path(staging) / sdist),
            ],
            cwd=source,
            env=environment,
            what=f"building the wheel of {source}",
        )
        (built,) = wheels.glob("*.whl")
        return Path(shutil.move(built, directory / built.name))


def _run(command: list[str], *, cwd: Path, env: dict[str, str], what: str) -> str:
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip().splitlines()[-15:]
        raise PublishError(f"{what} failed (exit status {completed.returncode}):\n" + "\n".join(output))
    return completed.stdout.strip()


def _repack_installed(distribution: metadata.Distribution, directory: Path) -> Path:
    """A wheel holding the files an installed wheel put in site-packages, with a fresh ``RECORD``."""
    files = [
        path
        for path in distribution.files or ()
        if not path.parts[0] == ".."
        and "__pycache__" not in path.parts
        and not (path.parts[0].endswith(".dist-info") and path.name in _NOT_PACKED)
    ]
    info_folder = next(p.parts[0] for p in files if p.parts[0].endswith(".dist-info"))
    wheel_info = distribution.read_text("WHEEL") or ""
    tag = next((line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:")), None)
    if tag is None:
        raise PublishError(f"the installed {DISTRIBUTION} has no wheel tag in {info_folder}/WHEEL; reinstall it")
    target = directory / f"{info_folder.removesuffix('.dist-info')}-{tag}.whl"
    record = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(files, key=str):
            content = Path(distribution.locate_file(path)).read_bytes()
            _add(archive, path.as_posix(), content)
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
            record.append(f"{path.as_posix()},sha256={digest},{len(content)}")
        record_path = f"{info_folder}/RECORD"
        record.append(f"{record_path},,")
        _add(archive, record_path, ("\n".join(record) + "\n").encode())
    return target


def _add(archive: zipfile.ZipFile, name: str, content: bytes) -> None:
    entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = 0o644 << 16
    archive.writestr(entry, content)
