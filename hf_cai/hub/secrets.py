"""Refusing to publish a file that holds an access token or another secret in use.

Every file of a publication is read before anything is sent to the Hub: parquet files cell by cell (their pages are
compressed, so their bytes would hide a token), safetensors files by their JSON header (the rest is numbers), zip
archives such as wheels member by member, and every other file whole. A string shaped like a Hugging Face token, the
token used for the publication whatever its shape, or a secret registered in this process (an endpoint's API key,
see :mod:`hf_cai.redaction`) stops the publication. The error names the file and where in it the secret is, never
the secret.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator

from hf_cai.hub.commit import UploadFile
from hf_cai.hub.errors import PublishError
from hf_cai.redaction import TOKEN_PATTERN, registered_secrets

_TOKEN_BYTES = re.compile(TOKEN_PATTERN.pattern.encode())


def check_no_secrets(files: Iterable[UploadFile], token: str | None) -> None:
    """Raise :class:`PublishError` naming the first file of ``files`` that contains a token or a registered secret;
    return if none does."""
    others = sorted(registered_secrets() - {token})
    for file in files:
        found = _secret_location(file, token, others)
        if found is not None:
            place, what = found
            raise PublishError(
                f"{file.path_in_repo}{place} contains {what}; remove it and publish again (the secret is not shown "
                "here). Nothing was uploaded."
            )


_HUB_TOKEN = "a Hugging Face access token"
_OTHER_SECRET = "an API key in use by this process (such as the endpoint's)"


def _secret_location(file: UploadFile, token: str | None, others: list[str]) -> tuple[str, str] | None:
    """Where ``file`` holds a secret (``""``: the file, `` (column 'x')`` or `` (member 'y')``) and what kind;
    ``None`` if it holds none."""
    name = file.path_in_repo
    if name.endswith(".parquet"):
        return _parquet_column_with_secret(file, token, others)
    if name.endswith(".safetensors"):
        what = _secret_in(_safetensors_header(file), token, others)
        return ("", what) if what else None
    data = file.read()
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                what = _secret_in(archive.read(member), token, others)
                if what:
                    return f" (member '{member}')", what
        return None
    what = _secret_in(data, token, others)
    return ("", what) if what else None


def _secret_in(data: bytes, token: str | None, others: list[str]) -> str | None:
    if _TOKEN_BYTES.search(data) or (token and token.encode() in data):
        return _HUB_TOKEN
    return _OTHER_SECRET if any(secret.encode() in data for secret in others) else None


def _safetensors_header(file: UploadFile) -> bytes:
    """The JSON header of a safetensors file (tensor names, shapes and the free-form ``__metadata__``), read without
    the weights, which may be gigabytes."""
    with io.BytesIO(file.source) if isinstance(file.source, bytes) else open(file.source, "rb") as handle:
        size = handle.read(8)
        if len(size) < 8:
            return size
        return handle.read(struct.unpack("<Q", size)[0])


def _parquet_column_with_secret(file: UploadFile, token: str | None, others: list[str]) -> tuple[str, str] | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = pa.BufferReader(file.source) if isinstance(file.source, bytes) else str(file.source)
    table = pq.read_table(source)
    for name in table.column_names:
        for path, strings in _string_arrays(table.column(name), name):
            if not len(strings):
                continue
            found = pc.any(pc.match_substring_regex(strings, pattern=TOKEN_PATTERN.pattern)).as_py()
            if found or (token and pc.any(pc.match_substring(strings, pattern=token)).as_py()):
                return f" (column '{path}')", _HUB_TOKEN
            if any(pc.any(pc.match_substring(strings, pattern=secret)).as_py() for secret in others):
                return f" (column '{path}')", _OTHER_SECRET
    return None


def _string_arrays(array, path: str) -> Iterator[tuple[str, object]]:
    """Every string leaf of an Arrow column, however deeply nested in lists and structs, with its dotted path."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        for chunk in array.chunks:
            yield from _string_arrays(chunk, path)
        return
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        yield path, array
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        yield from _string_arrays(array.flatten(), path)
    elif pa.types.is_struct(kind):
        for field, child in zip(kind, array.flatten()):
            yield from _string_arrays(child, f"{path}.{field.name}")
    elif pa.types.is_dictionary(kind):
        yield from _string_arrays(array.dictionary, path)
