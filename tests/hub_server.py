"""A Hub-compatible HTTP server on loopback, for tests that run the real ``huggingface_hub`` client over HTTP.

It implements the part of the Hugging Face Hub HTTP API that ``huggingface_hub`` (and through it ``transformers``,
``peft`` and ``datasets``) uses to create, upload to, list and download model, dataset and Space repositories:

* ``GET /api/whoami-v2``, ``POST /api/repos/create``, ``POST /api/validate-yaml``
* ``GET /api/{models,datasets,spaces}`` (listing, ``filter``/``author``/``search``, ``cardData``)
* ``GET /api/{type}s/{id}[/revision/{rev}]`` (repo info with siblings, tags and card data)
* ``POST /api/{type}s/{id}/preupload/{rev}``, ``POST /api/{type}s/{id}/commit/{rev}`` (NDJSON: header, file,
  lfsFile, deletedFile, deletedFolder; ``create_pr``; ``parentCommit``)
* ``POST /{prefix}{id}.git/info/lfs/objects/batch`` and the ``PUT``/``POST`` upload and verify URLs it hands out
* ``GET /api/{type}s/{id}/tree/{rev}[/{path}]``, ``POST /api/{type}s/{id}/paths-info/{rev}``,
  ``GET /api/{type}s/{id}/refs``, ``POST /api/{type}s/{id}/branch/{name}``, ``GET /api/{type}s/{id}/commits/{rev}``
* ``HEAD``/``GET /{prefix}{id}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``,
  ``X-Linked-Size``, ``Content-Length`` and byte ranges.

Repositories live in memory with a real commit history (git blob ids for files, sha1 commit ids). Tokens come from a
configurable table (write or read role); a missing or unknown token gets 401, a read-only token 403 on writes.
:meth:`HubServer.fail_next` makes the next requests to one route answer an error, and :meth:`HubServer.interrupt_next`
drops their connection without an answer, for error-path tests. Card metadata is checked against the Hub's license
ids as :data:`HUB_LICENSE_IDS` writes them out, independently of the library's list. With
``lfs=True`` weights and data files are uploaded through the LFS protocol (the client must then have Xet disabled,
``HF_HUB_DISABLE_XET=1``); otherwise every file is a regular git blob.

The server never records the tokens it receives: :attr:`HubServer.requests` keeps the method, path and whether the
request carried credentials.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".parquet", ".arrow", ".gguf", ".zip", ".tar", ".gz", ".h5")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
INITIAL_GITATTRIBUTES = b"".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n".encode() for suffix in LFS_SUFFIXES)

HUB_LICENSE_IDS: frozenset[str] = frozenset(
    """
    apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda
    cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl
    apple-ascl apple-amlr mpl-2.0 odc-by odbl openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib
    pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3
    llama4 grok2-community gemma unknown other
    """.split()
)
"""The license identifiers the Hub accepts in card metadata, written out from the table of the Hub documentation
(https://huggingface.co/docs/hub/repositories-licenses), in its order. Kept apart from the library's own list, so that
a test comparing the two catches a mistake in either."""

_COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def git_blob_id(content: bytes) -> str:
    """The git object id of a blob with this content (what the Hub reports as a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git LFS pointer file committed in place of a large file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Account:
    """Who a token belongs to and what it may do."""

    name: str
    role: str = "write"
    orgs: tuple[str, ...] = ()

    def owns(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit's tree. LFS files keep their content in the server's LFS store, keyed by ``lfs_sha256``."""

    size: int
    blob_id: str
    content: bytes | None = None
    lfs_sha256: str | None = None

    def as_json(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": self.size, "path": path}
        if self.lfs_sha256 is not None:
            pointer = lfs_pointer(self.lfs_sha256, self.size)
            data["lfs"] = {"oid": self.lfs_sha256, "size": self.size, "pointerSize": len(pointer)}
        return data


@dataclass(frozen=True)
class Commit:
    oid: str
    parents: tuple[str, ...]
    tree: dict[str, FileEntry]
    title: str
    message: str
    date: str
    author: str


@dataclass
class Repo:
    """A repository: commits, branches, pull-request refs and settings."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    sdk: str | None = None
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    pull_requests: dict[int, str] = field(default_factory=dict)

    @property
    def url_path(self) -> str:
        return URL_PREFIXES[self.repo_type] + self.repo_id

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch, ``refs/heads/<branch>``, ``refs/pr/<n>`` or full commit id points to."""
        if revision.startswith("refs/heads/"):
            revision = revision[len("refs/heads/") :]
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        match = re.fullmatch(r"refs/pr/(\d+)", revision)
        if match and int(match.group(1)) in self.pull_requests:
            return self.commits[self.pull_requests[int(match.group(1))]]
        if _COMMIT_ID.match(revision):
            return self.commits.get(revision)
        return None

    def history(self, revision: str) -> list[Commit]:
        """Commits reachable from ``revision``, newest first (first-parent order)."""
        commit = self.resolve(revision)
        chain: list[Commit] = []
        while commit is not None:
            chain.append(commit)
            commit = self.commits[commit.parents[0]] if commit.parents else None
        return chain


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server answered: no headers or bodies are kept, so no token is ever stored."""

    method: str
    path: str
    status: int
    authenticated: bool


class HubError(Exception):
    """An error answer: status, message and the Hub's ``X-Error-Code`` when it has one."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_front_matter(text: str) -> dict[str, Any] | None:
    """The YAML metadata block at the top of a card, or ``None`` when there is none. Raises ``yaml.YAMLError``."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if match is None:
        return None
    data = yaml.safe_load(match.group(1))
    return data if isinstance(data, dict) else None


def metadata_errors(metadata: dict[str, Any]) -> list[str]:
    """What the Hub would reject in a card's metadata (the checks the real ``validate-yaml`` makes that we rely on)."""
    errors: list[str] = []
    license_id = metadata.get("license")
    if license_id is not None:
        licenses = license_id if isinstance(license_id, list) else [license_id]
        for value in licenses:
            if not isinstance(value, str) or value not in HUB_LICENSE_IDS:
                errors.append(f'"license" must be one of the Hub license identifiers, got {value!r}')
    for key in ("tags", "datasets", "language"):
        value = metadata.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            errors.append(f'"{key}" must be a string or a list of strings')
    base_model = metadata.get("base_model")
    if base_model is not None:
        bases = base_model if isinstance(base_model, list) else [base_model]
        for value in bases:
            if not isinstance(value, str) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value):
                errors.append(f'"base_model" must be a Hub repository id, got {value!r}')
    model_index = metadata.get("model-index")
    if model_index is not None:
        if not isinstance(model_index, list) or not all(
            isinstance(m, dict) and "name" in m and isinstance(m.get("results"), list) for m in model_index
        ):
            errors.append('"model-index" must be a list of {name, results}')
        else:
            for model in model_index:
                for result in model["results"]:
                    if not isinstance(result, dict) or not {"task", "dataset", "metrics"} <= set(result):
                        errors.append('"model-index" results need task, dataset and metrics')
    return errors


class HubServer:
    """The loopback Hub. Use as a context manager or call :meth:`start` / :meth:`stop`.

    Args:
        port: TCP port on 127.0.0.1 (0 picks a free one).
        tokens: token → :class:`Account`; defaults to none (add with :meth:`add_token`).
        lfs: Upload weights and data files through git LFS (clients must disable Xet).
    """

    def __init__(self, port: int = 0, *, tokens: dict[str, Account] | None = None, lfs: bool = False):
        self.tokens: dict[str, Account] = dict(tokens or {})
        self.lfs = lfs
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self._failures: dict[str, list[HubError | None]] = {}
        self._connections: set[socket.socket] = set()
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the kept-alive client connections, so that no pooled connection of a client keeps
        talking to this server's state after a new server took the port."""
        self._httpd.shutdown()
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ----------------------------------------------------------------- test controls
    def add_token(self, token: str, user: str, *, role: str = "write", orgs: tuple[str, ...] = ()) -> None:
        self.tokens[token] = Account(name=user, role=role, orgs=orgs)

    def fail_next(
        self,
        route: str,
        status: int,
        *,
        times: int = 1,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests to ``route`` with ``status`` (and ``headers``, e.g. ``Retry-After``).

        Routes: ``whoami``, ``create_repo``, ``validate_yaml``, ``list``, ``info``, ``preupload``, ``commit``,
        ``lfs_batch``, ``lfs_upload``, ``lfs_verify``, ``tree``, ``paths_info``, ``refs``, ``branch``, ``commits``,
        ``resolve``.
        """
        text = message or {409: "Conflict: a concurrent operation is in progress"}.get(status, f"injected {status}")
        with self._lock:
            self._failures.setdefault(route, []).extend([HubError(status, text, headers=headers)] * times)

    def interrupt_next(self, route: str, *, times: int = 1) -> None:
        """Read the next ``times`` requests to ``route`` whole, then close the connection without answering, as a
        network failure in the middle of an upload does."""
        with self._lock:
            self._failures.setdefault(route, []).extend([None] * times)

    def clear_failures(self) -> None:
        """Forget the failures :meth:`fail_next` and :meth:`interrupt_next` set up that no request has met yet."""
        with self._lock:
            self._failures.clear()

    def reset(self) -> None:
        """Forget every repository, LFS object, recorded request and pending failure."""
        with self._lock:
            self.repos.clear()
            self.lfs_objects.clear()
            self.requests.clear()
            self._failures.clear()

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def commit_count(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> int:
        with self._lock:
            return len(self.repo(repo_id, repo_type).history(revision))

    def file(self, repo_id: str, path: str, *, repo_type: str = "model", revision: str = "main") -> bytes:
        """The content of a file at a revision (for assertions)."""
        with self._lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            if commit is None or path not in commit.tree:
                raise KeyError(f"{repo_type} {repo_id}@{revision} has no file {path}")
            return self._content(commit.tree[path])

    # ----------------------------------------------------------------- internals used by the handler
    def _take_failure(self, route: str) -> tuple[bool, HubError | None]:
        """Whether a failure is pending for ``route``, and the error to answer (``None``: drop the connection)."""
        with self._lock:
            pending = self._failures.get(route)
            return (True, pending.pop(0)) if pending else (False, None)

    def _content(self, entry: FileEntry) -> bytes:
        if entry.lfs_sha256 is not None:
            return self.lfs_objects[entry.lfs_sha256]
        assert entry.content is not None
        return entry.content

    def _new_commit(
        self, repo: Repo, parent: Commit | None, tree: dict[str, FileEntry], title: str, message: str, author: str
    ) -> Commit:
        date = _now()
        serial = next(self._counter)
        listing = "\n".join(f"{path} {entry.blob_id}" for path, entry in sorted(tree.items()))
        oid_source = f"{parent.oid if parent else ''}\n{listing}\n{title}\n{message}\n{date}\n{serial}"
        commit = Commit(
            oid=hashlib.sha1(oid_source.encode()).hexdigest(),
            parents=(parent.oid,) if parent else (),
            tree=tree,
            title=title,
            message=message,
            date=date,
            author=author,
        )
        repo.commits[commit.oid] = commit
        return commit

    def _entry_for_regular(self, content: bytes) -> FileEntry:
        return FileEntry(size=len(content), blob_id=git_blob_id(content), content=content)

    def _entry_for_lfs(self, sha256: str, size: int) -> FileEntry:
        return FileEntry(size=size, blob_id=git_blob_id(lfs_pointer(sha256, size)), lfs_sha256=sha256)

    def _upload_mode(self, path: str, size: int) -> str:
        if self.lfs and size > 0 and (path.endswith(LFS_SUFFIXES) or size > LFS_SIZE_THRESHOLD):
            return "lfs"
        return "regular"


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubRequestHandler):
        hub = server

    return Handler


class _HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    # ----------------------------------------------------------------- plumbing
    def setup(self) -> None:
        super().setup()
        self.hub._connections.add(self.connection)

    def finish(self) -> None:
        self.hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # the server stays quiet; tests read `hub.requests`
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        body = self._read_body()
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"invalid JSON body: {error}") from None

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, *, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self._status = status

    def _send_json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers, head=self.command == "HEAD")

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, json.dumps({"error": error.message}).encode(), headers, head=self.command == "HEAD")

    # ----------------------------------------------------------------- auth
    def _account(self) -> Account | None:
        header = self.headers.get("Authorization") or ""
        if not header:
            return None
        token = header[len("Bearer ") :] if header.lower().startswith("bearer ") else header
        account = self.hub.tokens.get(token)
        if account is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return account

    def _require_write(self, namespace: str) -> Account:
        account = self._account()
        if account is None:
            raise HubError(401, "You must be authenticated to access this resource (no token was sent)")
        if account.role != "write":
            raise HubError(403, "This token has read access only; a token with write access is needed")
        if not account.owns(namespace):
            raise HubError(403, f"You don't have the rights to write to the namespace '{namespace}'")
        return account

    def _repo_for_read(self, repo_type: str, repo_id: str) -> Repo:
        account = self._account()
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and (account is None or not account.owns(repo_id.split("/")[0]))):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _repo_for_write(self, repo_type: str, repo_id: str) -> tuple[Repo, Account]:
        account = self._require_write(repo_id.split("/")[0])
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo, account

    @staticmethod
    def _commit_at(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ----------------------------------------------------------------- routing
    _ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
        ("GET", "whoami", re.compile(r"^/api/whoami-v2$")),
        ("POST", "create_repo", re.compile(r"^/api/repos/create$")),
        ("POST", "validate_yaml", re.compile(r"^/api/validate-yaml$")),
        ("GET", "list", re.compile(r"^/api/(?P<kind>models|datasets|spaces)$")),
        (
            "GET",
            "info",
            re.compile(
                r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)(?:/revision/(?P<rev>[^/]+))?$"
            ),
        ),
        (
            "POST",
            "preupload",
            re.compile(
                r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)/preupload/(?P<rev>[^/]+)$"
            ),
        ),
        (
            "POST",
            "commit",
            re.compile(r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)/commit/(?P<rev>[^/]+)$"),
        ),
        (
            "GET",
            "tree",
            re.compile(
                r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"
            ),
        ),
        (
            "POST",
            "paths_info",
            re.compile(
                r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)/paths-info/(?P<rev>[^/]+)$"
            ),
        ),
        ("GET", "refs", re.compile(r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)/refs$")),
        (
            "POST",
            "branch",
            re.compile(r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)/branch/(?P<rev>[^/]+)$"),
        ),
        (
            "GET",
            "commits",
            re.compile(r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)/commits/(?P<rev>[^/]+)$"),
        ),
        (
            "POST",
            "lfs_batch",
            re.compile(r"^/(?:(?P<kind>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)\.git/info/lfs/objects/batch$"),
        ),
        ("PUT", "lfs_upload", re.compile(r"^/lfs/upload/(?P<oid>[0-9a-f]{64})$")),
        ("POST", "lfs_verify", re.compile(r"^/lfs/verify$")),
        (
            "GET",
            "resolve",
            re.compile(
                r"^/(?:(?P<kind>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
            ),
        ),
    )

    def _dispatch(self, method: str) -> None:
        self._status = 500
        split = urlsplit(self.path)
        raw_path, query = split.path, parse_qs(split.query)
        authenticated = bool(self.headers.get("Authorization"))
        try:
            with self.hub._lock:
                for route_method, route, pattern in self._ROUTES:
                    wanted = ("GET", "HEAD") if route_method == "GET" and route == "resolve" else (route_method,)
                    match = pattern.match(raw_path)
                    if match is None or method not in wanted:
                        continue
                    if method != "GET" and method != "HEAD":
                        body = self._read_body()
                    else:
                        body = b""
                    failing, failure = self.hub._take_failure(route)
                    if failing and failure is None:
                        self.close_connection = True
                        self._status = 0
                        break
                    if failure is not None:
                        raise failure
                    params = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    getattr(self, f"_route_{route}")(params, query, body)
                    break
                else:
                    self._read_body()
                    raise HubError(404, f"no route for {method} {raw_path}")
        except HubError as error:
            self._send_error(error)
        finally:
            self.hub.requests.append(RecordedRequest(method, raw_path, self._status, authenticated))

    @staticmethod
    def _kind(params: dict[str, str | None], default: str = "models") -> str:
        return REPO_TYPES[params.get("kind") or default]

    @staticmethod
    def _repo_id(params: dict[str, str | None]) -> str:
        return f"{params['ns']}/{params['name']}"

    # ----------------------------------------------------------------- account and repos
    def _route_whoami(self, params, query, body) -> None:
        account = self._account()
        if account is None:
            raise HubError(401, "You must be authenticated to call whoami")
        self._send_json(
            {
                "type": "user",
                "name": account.name,
                "fullname": account.name,
                "orgs": [{"type": "org", "name": org} for org in account.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": account.role}},
            }
        )

    def _route_create_repo(self, params, query, body) -> None:
        payload = json.loads(body or b"{}")
        name = payload.get("name") or ""
        account = self._account()
        namespace = payload.get("organization") or (account.name if account else "")
        self._require_write(namespace)
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"invalid repo type '{repo_type}'")
        if not _NAME.match(name) or ".." in name or name.endswith((".git", ".")):
            raise HubError(400, f"invalid repository name '{name}'")
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.endpoint}/{URL_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:
            message = f"You already created this {repo_type} repo"
            self._send_json({"error": message, "url": url}, status=409, headers={"X-Error-Message": message})
            return
        if repo_type == "space" and not payload.get("sdk"):
            raise HubError(400, "a Space needs an sdk")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now(), sdk=payload.get("sdk"))
        initial = {".gitattributes": self.hub._entry_for_regular(INITIAL_GITATTRIBUTES)}
        commit = self.hub._new_commit(repo, None, initial, "initial commit", "", namespace)
        repo.branches["main"] = commit.oid
        self.hub.repos[(repo_type, repo_id)] = repo
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _route_validate_yaml(self, params, query, body) -> None:
        payload = json.loads(body or b"{}")
        try:
            metadata = parse_front_matter(payload.get("content") or "")
        except yaml.YAMLError as error:
            self._send_json({"errors": [{"message": f"invalid YAML in the metadata block: {error}"}]}, status=400)
            return
        if metadata is None:
            self._send_json({"warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
            return
        errors = metadata_errors(metadata)
        if errors:
            self._send_json({"errors": [{"message": message} for message in errors]}, status=400)
            return
        self._send_json({"warnings": []})

    def _card_data(self, repo: Repo, commit: Commit) -> dict[str, Any] | None:
        entry = commit.tree.get("README.md")
        if entry is None:
            return None
        try:
            return parse_front_matter(self.hub._content(entry).decode("utf-8", errors="replace"))
        except yaml.YAMLError:
            return None

    def _repo_json(self, repo: Repo, commit: Commit, *, card: bool = True) -> dict[str, Any]:
        card_data = self._card_data(repo, commit) or {}
        tags: list[str] = []

        def add(values: Any, prefix: str = "") -> None:
            for value in values if isinstance(values, list) else [values]:
                if isinstance(value, str) and f"{prefix}{value}" not in tags:
                    tags.append(f"{prefix}{value}")

        add(card_data.get("tags") or [])
        add(card_data.get("library_name") or [])
        add(card_data.get("base_model") or [], "base_model:")
        add(card_data.get("datasets") or [], "dataset:")
        add(card_data.get("license") or [], "license:")
        data: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "likes": 0,
            "tags": tags,
            "siblings": [_sibling(path, entry) for path, entry in sorted(commit.tree.items())],
        }
        if card:
            data["cardData"] = card_data
        if repo.repo_type == "model":
            data.update(
                modelId=repo.repo_id,
                downloads=0,
                pipeline_tag=card_data.get("pipeline_tag"),
                library_name=card_data.get("library_name"),
            )
        elif repo.repo_type == "dataset":
            data.update(downloads=0)
        else:
            data.update(sdk=repo.sdk, subdomain=repo.repo_id.replace("/", "-").lower(), runtime={"stage": "RUNNING"})
        return data

    def _route_info(self, params, query, body) -> None:
        repo = self._repo_for_read(self._kind(params), self._repo_id(params))
        commit = self._commit_at(repo, params.get("rev") or "main")
        self._send_json(self._repo_json(repo, commit))

    def _route_list(self, params, query, body) -> None:
        repo_type = self._kind(params)
        account = self._account()
        wanted = query.get("filter", [])
        author = (query.get("author") or [None])[0]
        search = ((query.get("search") or [""])[0]).lower()
        with_card = (query.get("cardData") or query.get("full") or ["false"])[0].lower() in ("true", "1")
        results = []
        for (kind, repo_id), repo in sorted(self.hub.repos.items()):
            if kind != repo_type or (repo.private and (account is None or not account.owns(repo_id.split("/")[0]))):
                continue
            if author and repo_id.split("/")[0] != author:
                continue
            if search and search not in repo_id.lower():
                continue
            info = self._repo_json(repo, repo.resolve("main"), card=with_card)  # type: ignore[arg-type]
            if all(tag in info["tags"] for tag in wanted):
                info.pop("siblings")
                results.append(info)
        limit = int((query.get("limit") or [len(results)])[0])
        self._send_json(results[:limit])

    # ----------------------------------------------------------------- uploads
    def _route_preupload(self, params, query, body) -> None:
        repo, _ = self._repo_for_write(self._kind(params), self._repo_id(params))
        commit = self._commit_at(repo, params["rev"] or "main")
        payload = json.loads(body or b"{}")
        files = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            remote = commit.tree.get(path) if commit is not None else None
            mode = self.hub._upload_mode(path, size)
            oid = None
            if remote is not None:
                oid = remote.lfs_sha256 if remote.lfs_sha256 is not None else remote.blob_id
            files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json({"files": files, "commitOid": commit.oid})

    def _route_lfs_batch(self, params, query, body) -> None:
        repo_type = {"datasets": "dataset", "spaces": "space", None: "model"}[params.get("kind")]
        self._repo_for_write(repo_type, self._repo_id(params))
        payload = json.loads(body or b"{}")
        objects = []
        for item in payload.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.hub.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/lfs/upload/{oid}", "header": {}},
                    "verify": {"href": f"{self.hub.endpoint}/lfs/verify", "header": {}},
                }
            objects.append(entry)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            {"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _route_lfs_upload(self, params, query, body) -> None:
        oid = params["oid"]
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256")
        self.hub.lfs_objects[oid] = body
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _route_lfs_verify(self, params, query, body) -> None:
        payload = json.loads(body or b"{}")
        stored = self.hub.lfs_objects.get(payload.get("oid", ""))
        if stored is None or len(stored) != payload.get("size"):
            raise HubError(404, "LFS object not found")
        self._send_json({"success": True})

    def _route_commit(self, params, query, body) -> None:
        repo_type, repo_id = self._kind(params), self._repo_id(params)
        repo, account = self._repo_for_write(repo_type, repo_id)
        revision = params["rev"] or "main"
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        title = (header.get("summary") or "").strip()
        if not title:
            raise HubError(400, "the commit summary must not be empty")
        create_pr = (query.get("create_pr") or ["0"])[0] in ("1", "true", "True")
        parent = self._commit_at(repo, revision)
        if not create_pr and revision.removeprefix("refs/heads/") not in repo.branches:
            raise HubError(400, f"cannot commit to '{revision}': it is not a branch", "RevisionNotFound")
        if header.get("parentCommit"):
            wanted = repo.commits.get(header["parentCommit"]) or next(
                (c for oid, c in repo.commits.items() if oid.startswith(header["parentCommit"])), None
            )
            if wanted is None:
                raise HubError(404, f"parent commit {header['parentCommit']} not found", "RevisionNotFound")
            if create_pr:
                parent = wanted
            elif wanted.oid != parent.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(parent.tree)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding for {path}")
                tree[path] = self.hub._entry_for_regular(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                oid = value["oid"]
                stored = self.hub.lfs_objects.get(oid)
                if stored is None:
                    raise HubError(422, f"LFS object {oid} of '{path}' was never uploaded")
                tree[path] = self.hub._entry_for_lfs(oid, len(stored))
            elif key == "deletedFile":
                if path not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del tree[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in tree if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del tree[p]
            else:
                raise HubError(400, f"unknown commit operation '{key}'")
        commit = self.hub._new_commit(repo, parent, tree, title, header.get("description") or "", account.name)
        url = f"{self.hub.endpoint}/{repo.url_path}/commit/{commit.oid}"
        answer: dict[str, Any] = {"commitUrl": url, "commitOid": commit.oid, "success": True}
        if create_pr:
            number = max(repo.pull_requests, default=0) + 1
            repo.pull_requests[number] = commit.oid
            answer["pullRequestUrl"] = f"{self.hub.endpoint}/{repo.url_path}/discussions/{number}"
        else:
            repo.branches[revision.removeprefix("refs/heads/")] = commit.oid
        self._send_json(answer)

    # ----------------------------------------------------------------- listing
    def _last_commit(self, repo: Repo, head: Commit, path: str) -> dict[str, str]:
        chain = repo.history(head.oid)
        changed = chain[0]
        for newer, older in zip(chain, chain[1:]):
            if _subtree(newer.tree, path) != _subtree(older.tree, path):
                changed = newer
                break
            changed = older
        return {"id": changed.oid, "title": changed.title, "date": changed.date}

    def _entries(self, repo: Repo, commit: Commit, prefix: str, *, recursive: bool) -> list[dict[str, Any]]:
        base = prefix.strip("/")
        if base and base not in _folders(commit.tree) and base not in commit.tree:
            raise HubError(404, f"{base} does not exist on {commit.oid}", "EntryNotFound")
        if base in commit.tree:
            return [commit.tree[base].as_json(base)]
        folders, files = set(), []
        for path, entry in sorted(commit.tree.items()):
            if base and not path.startswith(base + "/"):
                continue
            relative = path[len(base) + 1 :] if base else path
            parts = relative.split("/")
            if len(parts) == 1 or recursive:
                files.append(entry.as_json(path))
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add("/".join(([base] if base else []) + parts[:depth]))
        listing = [
            {"type": "directory", "oid": _tree_id(commit.tree, folder), "size": 0, "path": folder}
            for folder in sorted(folders)
        ]
        return listing + files

    def _route_tree(self, params, query, body) -> None:
        repo = self._repo_for_read(self._kind(params), self._repo_id(params))
        commit = self._commit_at(repo, params["rev"])
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("true", "1")
        expand = (query.get("expand") or ["false"])[0].lower() in ("true", "1")
        entries = self._entries(repo, commit, params.get("path") or "", recursive=recursive)
        if expand:
            for entry in entries:
                entry["lastCommit"] = self._last_commit(repo, commit, entry["path"])
        self._send_json(entries)

    def _route_paths_info(self, params, query, body) -> None:
        repo = self._repo_for_read(self._kind(params), self._repo_id(params))
        commit = self._commit_at(repo, params["rev"])
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            form = json.loads(body or b"{}")
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), (form.get("expand") or ["False"])[0].lower() in ("true", "1")
        folders = _folders(commit.tree)
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in commit.tree:
                entry = commit.tree[path].as_json(path)
            elif path in folders:
                entry = {"type": "directory", "oid": _tree_id(commit.tree, path), "size": 0, "path": path}
            else:
                continue
            if expand:
                entry["lastCommit"] = self._last_commit(repo, commit, path)
            entries.append(entry)
        self._send_json(entries)

    def _route_refs(self, params, query, body) -> None:
        repo = self._repo_for_read(self._kind(params), self._repo_id(params))
        data: dict[str, Any] = {
            "branches": [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid} for n, oid in sorted(repo.branches.items())
            ],
            "converts": [],
            "tags": [],
        }
        if (query.get("include_prs") or ["0"])[0] in ("1", "true", "True"):
            data["pullRequests"] = [
                {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid}
                for n, oid in sorted(repo.pull_requests.items())
            ]
        self._send_json(data)

    def _route_branch(self, params, query, body) -> None:
        repo, _ = self._repo_for_write(self._kind(params), self._repo_id(params))
        branch = params["rev"]
        if branch in repo.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        payload = json.loads(body or b"{}")
        start = self._commit_at(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        self._send_json({"success": True})

    def _route_commits(self, params, query, body) -> None:
        repo = self._repo_for_read(self._kind(params), self._repo_id(params))
        self._commit_at(repo, params["rev"])
        self._send_json(
            [
                {"id": c.oid, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
                for c in repo.history(params["rev"])
            ]
        )

    # ----------------------------------------------------------------- downloads
    def _route_resolve(self, params, query, body) -> None:
        repo_type = {"datasets": "dataset", "spaces": "space", None: "model"}[params.get("kind")]
        repo = self._repo_for_read(repo_type, self._repo_id(params))
        commit = self._commit_at(repo, params["rev"])
        path = params["path"] or ""
        entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        content = self.hub._content(entry)
        etag = entry.lfs_sha256 or entry.blob_id
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{etag}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        if entry.lfs_sha256 is not None:
            headers["X-Linked-Etag"] = f'"{entry.lfs_sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        status, payload = 200, content
        requested = self.headers.get("Range")
        if requested:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", requested.strip())
            if match is None:
                raise HubError(416, f"unsupported range {requested}")
            start_text, end_text = match.groups()
            if start_text:
                start, end = int(start_text), int(end_text) if end_text else len(content) - 1
            else:
                start, end = max(0, len(content) - int(end_text)), len(content) - 1
            end = min(end, len(content) - 1)
            if start > end and len(content) > 0:
                raise HubError(416, f"range {requested} outside of {len(content)} bytes")
            status, payload = 206, content[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        self._send(status, payload, headers, head=self.command == "HEAD")


def _sibling(path: str, entry: FileEntry) -> dict[str, Any]:
    sibling: dict[str, Any] = {"rfilename": path, "size": entry.size, "blobId": entry.blob_id}
    if entry.lfs_sha256 is not None:
        lfs = entry.as_json(path)["lfs"]
        sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
    return sibling


def _folders(tree: dict[str, FileEntry]) -> set[str]:
    folders = set()
    for path in tree:
        parts = PurePosixPath(path).parts
        for depth in range(1, len(parts)):
            folders.add("/".join(parts[:depth]))
    return folders


def _subtree(tree: dict[str, FileEntry], path: str) -> list[tuple[str, str]]:
    prefix = path.rstrip("/") + "/"
    return sorted((p, e.blob_id) for p, e in tree.items() if p == path or p.startswith(prefix))


def _tree_id(tree: dict[str, FileEntry], folder: str) -> str:
    listing = "\n".join(f"{p} {oid}" for p, oid in _subtree(tree, folder))
    return hashlib.sha1(listing.encode()).hexdigest()


@contextmanager
def running_hub_server(port: int = 0, **kwargs: Any) -> Iterator[HubServer]:
    """Start a :class:`HubServer` on ``port`` for the duration of a ``with`` block."""
    server = HubServer(port, **kwargs)
    with server:
        yield server


def use_loopback_hub(monkeypatch, home) -> None:
    """Let the real clients talk to the loopback Hub for the duration of ``monkeypatch``.

    Lifts the offline switches of huggingface_hub, datasets and peft (``conftest`` turns them on for the session),
    disables Xet so that large files go through the LFS protocol this server speaks, keeps the download caches in
    ``home`` and hides any token of the machine (``HF_TOKEN``, the saved login), so that tests pass tokens explicitly.
    """
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
