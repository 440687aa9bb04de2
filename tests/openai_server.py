"""An OpenAI-compatible chat completions server on 127.0.0.1 that serves a local model, for tests and benchmarks.

It speaks the parts of the API that :class:`hf_cai.backends.EndpointBackend` and other OpenAI clients use:
``GET /v1/models`` and ``POST /v1/chat/completions`` (``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``,
``logprobs`` + ``top_logprobs``), with each choice's ``finish_reason`` (``"stop"`` or ``"length"``) and, like vLLM,
its ``stop_reason`` (the stop string that ended the reply, else ``None``). Like vLLM or TGI it batches concurrent requests: a worker thread gathers the
requests that arrive within ``batch_window`` seconds and generates them in one batched call, so clients that send
requests concurrently are served faster than clients that send them one by one.

Error modes for tests: ``fail_first=N`` answers the first N chat requests with ``fail_status`` (then serves normally),
``fail_after=N`` serves N chat requests and then fails every later one (a server going down mid-run),
``fail_always=True`` fails every chat request, ``response_delay`` sleeps before each answer. ``retry_after`` adds a
``Retry-After`` header to the failures (seconds, or with ``retry_after_as_date`` the HTTP date that many seconds
ahead). ``bad_reply`` answers every chat request with HTTP 200 and a broken body: ``"malformed_json"`` (JSON cut off
midway) or ``"no_choices"`` (a completion with an empty ``choices`` list). With ``api_key`` set, a chat request
without ``Authorization: Bearer <api_key>`` is refused (HTTP 401, or ``key_refused_status``), and the answer repeats
the key it was sent, as some servers do. :attr:`OpenAIServer.request_times` holds when each chat request arrived (``time.monotonic()``).

LoRA adapters load at run time as the engines document it. With ``lora_api="vllm"`` (the default), like vLLM started
with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``: ``POST /v1/load_lora_adapter`` with
``{"lora_name", "lora_path"}`` answers 200 with a plain-text confirmation, 404 naming the path when there is no
adapter there, 400 when the name is taken; ``POST /v1/unload_lora_adapter`` with ``{"lora_name"}``; requests then
name the adapter as their ``model``. With ``lora_api="sglang"``: ``POST /load_lora_adapter`` and
``/unload_lora_adapter`` outside ``/v1``, answering ``{"success", "error_message", "loaded_adapters"}`` (400 on a
failure), and requests name an adapter ``<model_name>:<adapter>``. ``lora_api=None`` serves neither route. A request
for a model the server does not serve is answered 404, as vLLM does. ``filesystem_root`` makes the server read adapter
paths under that folder, as a server on another machine or in a container sees its own filesystem.
:attr:`OpenAIServer.adapters` holds the loaded adapters by name, :attr:`OpenAIServer.models_requested` how many chat
requests named each model.

Usage::

    with OpenAIServer(TransformersBackend(model_dir), model_name="tiny") as server:
        backend = EndpointBackend(server.base_url, "tiny")

or from a shell: ``python tests/openai_server.py MODEL_DIR --port 8000``.
"""

from __future__ import annotations

import argparse
import copy
import json
import queue
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hf_cai.backends import TransformersBackend


@dataclass
class _Job:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...]
    top_logprobs: int | None  # None: no logprobs requested
    backend: TransformersBackend | None = None  # the model or adapter the request asked for
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: Exception | None = None

    @property
    def group(self) -> tuple:
        if self.top_logprobs is not None:
            return (id(self.backend), "logprobs", self.max_tokens, self.top_logprobs)
        return (id(self.backend), "sample", self.max_tokens, self.temperature, self.top_p, self.stop)


class OpenAIServer:
    """Serve ``backend``'s model over the OpenAI chat completions API on ``127.0.0.1:port`` (0 picks a free port).

    Args:
        backend: The model to serve.
        model_name: Id reported by ``/v1/models`` and accepted in requests.
        port: TCP port; 0 chooses a free one (see :attr:`base_url`).
        batch_window: Seconds the batching worker waits for more requests after the first one arrives.
        max_batch: Most requests generated together.
        fail_first: Answer this many chat requests with ``fail_status`` before serving normally.
        fail_after: Serve this many chat requests, then answer every later one with ``fail_status``.
        fail_always: Answer every chat request with ``fail_status``.
        fail_status: HTTP status of the simulated failures.
        response_delay: Seconds to sleep before answering each chat request.
        retry_after: Seconds the simulated failures ask the client to wait, in a ``Retry-After`` header.
        retry_after_as_date: Send ``retry_after`` as the HTTP date that many seconds ahead.
        bad_reply: ``"malformed_json"`` or ``"no_choices"``: answer every chat request with that broken body.
        api_key: The key chat requests must carry (``Authorization: Bearer ...``); ``None`` accepts any.
        key_refused_status: HTTP status of the answer to a request with another key.
        lora_api: ``"vllm"``, ``"sglang"`` or ``None``: whose routes load LoRA adapters at run time (see the module
            docstring).
        filesystem_root: Read adapter paths under this folder instead of ``/`` (a server with its own filesystem).
    """

    def __init__(
        self,
        backend: TransformersBackend,
        *,
        model_name: str = "tiny",
        port: int = 0,
        batch_window: float = 0.01,
        max_batch: int = 64,
        fail_first: int = 0,
        fail_after: int | None = None,
        fail_always: bool = False,
        fail_status: int = 500,
        response_delay: float = 0.0,
        retry_after: float | None = None,
        retry_after_as_date: bool = False,
        bad_reply: str | None = None,
        api_key: str | None = None,
        key_refused_status: int = 401,
        lora_api: str | None = "vllm",
        filesystem_root: str | None = None,
    ):
        if lora_api not in (None, "vllm", "sglang"):
            raise ValueError(f"lora_api must be 'vllm', 'sglang' or None, got {lora_api!r}")
        if bad_reply not in (None, *_BAD_REPLIES):
            raise ValueError(f"bad_reply must be one of {sorted(_BAD_REPLIES)}, got {bad_reply!r}")
        self.backend = backend
        self.model_name = model_name
        self.batch_window = batch_window
        self.max_batch = max_batch
        self.fail_first = fail_first
        self.fail_after = fail_after
        self.fail_always = fail_always
        self.fail_status = fail_status
        self.response_delay = response_delay
        self.retry_after = retry_after
        self.retry_after_as_date = retry_after_as_date
        self.bad_reply = bad_reply
        self.api_key = api_key
        self.key_refused_status = key_refused_status
        self.lora_api = lora_api
        self.filesystem_root = filesystem_root
        self.adapters: dict[str, TransformersBackend] = {}
        self.models_requested: defaultdict[str | None, int] = defaultdict(int)
        self._adapter_lock = threading.Lock()
        self.request_count = 0
        self.request_times: list[float] = []
        self.batch_sizes: list[int] = []
        self._count_lock = threading.Lock()
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._stopping = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._http.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self._http.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        self._threads = [
            threading.Thread(target=self._http.serve_forever, name="openai-http", daemon=True),
            threading.Thread(target=self._work, name="openai-batcher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ request handling
    def handle_chat(
        self, body: dict[str, Any], authorization: str | None = None
    ) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        """The status, body and extra headers of the answer to a chat request."""
        with self._count_lock:
            self.request_count += 1
            self.request_times.append(time.monotonic())
            failing = (
                self.fail_always
                or self.request_count <= self.fail_first
                or (self.fail_after is not None and self.request_count > self.fail_after)
            )
        if self.response_delay:
            time.sleep(self.response_delay)
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            given = (authorization or "").removeprefix("Bearer ")
            return self.key_refused_status, _error(f"Incorrect API key provided: {given}", "invalid_request_error"), {}
        if failing:
            headers = {}
            if self.retry_after is not None:
                headers["Retry-After"] = (
                    formatdate(time.time() + self.retry_after, usegmt=True)
                    if self.retry_after_as_date
                    else f"{self.retry_after:g}"
                )
            return self.fail_status, _error("simulated server failure", "server_error"), headers
        if self.bad_reply is not None:
            return 200, _BAD_REPLIES[self.bad_reply], {}
        with self._count_lock:
            self.models_requested[body.get("model")] += 1
        backend = self._served(body.get("model"))
        if backend is None:
            return 404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404), {}
        try:
            job = _parse_chat_request(body)
        except (KeyError, TypeError, ValueError) as error:
            return 400, _error(f"invalid request: {error}", "invalid_request_error"), {}
        job.backend = backend
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            return 500, _error(f"{type(job.error).__name__}: {job.error}", "server_error"), {}
        content, logprobs, finish_reason, stop_reason = job.result
        return 200, {
            "id": f"chatcmpl-{random.getrandbits(48):012x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": {"content": logprobs} if logprobs is not None else None,
                    "finish_reason": finish_reason,
                    "stop_reason": stop_reason,
                }
            ],
        }, {}

    def models(self) -> dict[str, Any]:
        ids = [self.model_name, *self.adapters]
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "hf_cai-tests"} for name in ids]}

    def _served(self, model: str | None) -> TransformersBackend | None:
        """The backend that answers requests for ``model`` (``None``: the served model); ``None`` when not served."""
        if model in (self.model_name, None):
            return self.backend
        if self.lora_api == "sglang":
            base, _, adapter = model.partition(":")
            return self.adapters.get(adapter) if base == self.model_name else None
        return self.adapters.get(model)

    def handle_lora(self, route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
        """The answer to a LoRA adapter route (``"load"`` or ``"unload"``), as the engine ``lora_api`` names does."""
        name, path = body.get("lora_name"), body.get("lora_path")
        with self._adapter_lock:
            if route == "unload":
                if self.adapters.pop(name, None) is None:
                    return self._lora_failure(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
                return self._lora_success(f"Success: LoRA adapter '{name}' removed successfully.")
            if not name or not path:
                return self._lora_failure(400, "Both 'lora_name' and 'lora_path' must be provided.", "BadRequestError")
            if name in self.adapters:
                return self._lora_failure(400, f"The lora adapter '{name}' has already been loaded.", "BadRequestError")
            folder = Path(self.filesystem_root or "/") / Path(path).relative_to(Path(path).anchor)
            if not (folder / "adapter_config.json").is_file():
                return self._lora_failure(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
            model = copy.deepcopy(self.backend.model)
            self.adapters[name] = TransformersBackend(model, self.backend.tokenizer, adapter=folder,
                                                      batch_size=self.backend.batch_size)
            return self._lora_success(f"Success: LoRA adapter '{name}' added successfully.")

    def _lora_success(self, message: str) -> tuple[int, dict[str, Any] | bytes]:
        if self.lora_api == "sglang":
            return 200, {"success": True, "error_message": "", "loaded_adapters": {n: "" for n in self.adapters}}
        return 200, message.encode("utf-8")

    def _lora_failure(self, status: int, message: str, kind: str) -> tuple[int, dict[str, Any] | bytes]:
        if self.lora_api == "sglang":
            return 400, {"success": False, "error_message": message, "loaded_adapters": {}}
        return status, _error(message, kind, status)

    # ------------------------------------------------------------------ batching worker
    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._jobs.get(timeout=0.05)
            except queue.Empty:
                continue
            jobs = [first]
            deadline = time.monotonic() + self.batch_window
            while len(jobs) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    jobs.append(self._jobs.get(timeout=remaining))
                except queue.Empty:
                    break
            groups: dict[tuple, list[_Job]] = defaultdict(list)
            for job in jobs:
                groups[job.group].append(job)
            for group in groups.values():
                self.batch_sizes.append(len(group))
                try:
                    if group[0].top_logprobs is None:
                        self._sample(group)
                    else:
                        self._greedy_with_logprobs(group)
                except Exception as error:  # reported to every waiting request as a 500
                    for job in group:
                        job.error = error
                for job in group:
                    job.done.set()

    def _sample(self, jobs: list[_Job]) -> None:
        first = jobs[0]
        # Generated without the stop strings and cut here, so the reply can name the stop string that ended it.
        generations = first.backend.generate_detailed(
            [job.messages for job in jobs],
            max_new_tokens=first.max_tokens,
            temperature=first.temperature,
            top_p=first.top_p,
            seeds=[job.seed for job in jobs],
        )
        for job, generation in zip(jobs, generations):
            text, matched = _cut_at_first_stop(generation.text, first.stop)
            if matched is not None:
                job.result = (text, None, "stop", matched)
            else:
                job.result = (text, None, generation.finish_reason, None)

    def _greedy_with_logprobs(self, jobs: list[_Job]) -> None:
        import torch

        backend = jobs[0].backend
        tokenizer, model = backend.tokenizer, backend.model
        max_tokens, top_k = jobs[0].max_tokens, jobs[0].top_logprobs
        prompts = backend.encode([job.messages for job in jobs], max_new_tokens=max_tokens)
        width = max(len(ids) for ids in prompts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                max_new_tokens=max_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad,
            )
        special = set(tokenizer.all_special_ids)
        for row, job in enumerate(jobs):
            generated = output.sequences[row, width:].tolist()
            entries = []
            for step, token_id in enumerate(generated):
                logprobs = torch.log_softmax(output.logits[step][row].float(), dim=-1)
                top = torch.topk(logprobs, k=min(top_k, logprobs.shape[-1])) if top_k else None
                entries.append(
                    {
                        **_token_entry(tokenizer, token_id, float(logprobs[token_id])),
                        "top_logprobs": [
                            _token_entry(tokenizer, int(i), float(v)) for v, i in zip(top.values, top.indices)
                        ]
                        if top is not None
                        else [],
                    }
                )
                if token_id == tokenizer.eos_token_id:
                    break
            content = tokenizer.decode([t for t in generated if t not in special])
            finish_reason = "stop" if tokenizer.eos_token_id in generated else "length"
            job.result = (content, entries, finish_reason, None)


def _cut_at_first_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    """``text`` before the earliest stop string, and that stop string (``None`` when none occurs)."""
    found = [(text.find(stop), stop) for stop in stops if stop and stop in text]
    if not found:
        return text, None
    position, stop = min(found)
    return text[:position], stop


_BAD_REPLIES = {
    "malformed_json": b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": {"role": "assist',
    "no_choices": {"id": "chatcmpl-empty", "object": "chat.completion", "model": "tiny", "choices": []},
}


def _token_entry(tokenizer, token_id: int, logprob: float) -> dict[str, Any]:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def _parse_chat_request(body: dict[str, Any]) -> _Job:
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    for message in messages:
        if message.get("role") not in ("system", "user", "assistant") or not isinstance(message.get("content"), str):
            raise ValueError(f"bad message {message!r}")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    top_logprobs = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
    seed = body.get("seed")
    return _Job(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        max_tokens=int(body.get("max_tokens") or 16),
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        seed=int(seed) if seed is not None else random.getrandbits(63),
        stop=stop,
        top_logprobs=top_logprobs,
    )


def _error(message: str, kind: str, code: int | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": kind}
    if code is not None:
        error["code"] = code
    return {"error": error}


def _handler_for(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return

        def _send(self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, server.models())
            else:
                self._send(404, _error(f"no route {self.path}", "not_found"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            route = self.path.rstrip("/")
            prefix = {"vllm": "/v1", "sglang": ""}.get(server.lora_api)
            lora_routes = {} if prefix is None else {f"{prefix}/load_lora_adapter": "load",
                                                     f"{prefix}/unload_lora_adapter": "unload"}
            if route != "/v1/chat/completions" and route not in lora_routes:
                self._send(404, {"detail": "Not Found"})
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as error:
                self._send(400, _error(f"invalid JSON: {error}", "invalid_request_error"))
                return
            if route in lora_routes:
                self._send(*server.handle_lora(lora_routes[route], body))
            else:
                self._send(*server.handle_chat(body, self.headers.get("Authorization")))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local chat model over an OpenAI-compatible API.")
    parser.add_argument("model", help="model folder or id")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default="tiny", help="model id reported by /v1/models")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    server = OpenAIServer(
        TransformersBackend(args.model, batch_size=args.batch_size), model_name=args.name, port=args.port
    ).start()
    print(f"serving {args.model} at {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
