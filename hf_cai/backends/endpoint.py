"""Generation through any OpenAI-compatible chat completions server: the way to scale past one machine.

Works with vLLM (``vllm serve``), SGLang, Text Generation Inference (Messages API), Hugging Face Inference Endpoints
running one of those, and OpenAI itself. Requests run in a bounded thread pool (``max_concurrency`` in flight), so a
server that batches concurrent requests (all of the above do) sees a full batch; many replicas behind one URL scale
the same way.

Option scoring uses ``logprobs``/``top_logprobs`` of the chat completions API: the server answers greedily for a few
tokens and reports, at each position, the most likely tokens with their log-probabilities. An option's score is the
sum of the log-probabilities of the tokens that spell it, following the answer while it agrees with the option.
Supported by vLLM and SGLang (``top_logprobs`` up to 20 by default), OpenAI (up to 20) and TGI (up to 5; pass
``top_logprobs=5``). When an option's next token is not among the top tokens reported, its score is the smallest
reported log-probability at that position (an upper bound), so well-formed options (such as ``"(A)"``/``"(B)"`` after
few-shot demonstrations) score exactly and unlikely ones keep a low score. The legacy ``/v1/completions`` endpoint
with ``echo`` and ``logprobs`` would score any option exactly, but it needs the model's chat template on the client
and is not served by TGI's Messages API or by OpenAI's current models, so it is not used.

Failed requests are retried (connection errors, timeouts, 408/429/5xx) with exponential backoff, except that a 429 or
503 answer with a ``Retry-After`` header (seconds or an HTTP date) is retried after the wait the server asked for, up
to :data:`MAX_RETRY_AFTER`. The API key is registered as a secret (:mod:`hf_cai.redaction`): no error or log line
carries it, even where a server echoes it, and no publication may hold it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

from hf_cai.backends.base import (
    BackendError,
    DetailedGenerator,
    Generation,
    check_generation_args,
    cut_at_stop,
    progress_bar,
    resolve_seed,
    row_seed,
    rows_finished,
)
from hf_cai.conversation import Conversation
from hf_cai.errors import InputError
from hf_cai.redaction import redact, register_secret

logger = logging.getLogger(__name__)

_RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER = 60.0
"""Longest wait in seconds that a ``Retry-After`` header gets: a server asking for longer (an hour of rate limit)
is retried after this, and the error after the last attempt says how long it asked for."""


class EndpointBackend(DetailedGenerator):
    """A :class:`~hf_cai.backends.GenerationBackend` over an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: Root of the API, e.g. ``"http://localhost:8000/v1"`` (a URL without ``/v1`` gets it appended).
        model: The model name the server expects in requests (``vllm serve`` uses the model id).
        api_key: Sent as ``Authorization: Bearer ...``; never logged nor included in errors (it is registered as
            a secret, see :mod:`hf_cai.redaction`).
        max_concurrency: Most requests in flight at once.
        timeout: Seconds before one request times out (it is then retried).
        max_retries: Retries after the first attempt, on connection errors, timeouts and 408/429/5xx answers.
        backoff: First wait between retries in seconds, doubled on each retry (with up to 10% jitter); a 429 or
            503 answer's ``Retry-After`` takes its place.
        top_logprobs: Alternatives per position requested for option scoring (TGI allows at most 5).
        option_tokens: Tokens generated for option scoring; enough to spell the longest option.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 16,
        timeout: float = 60,
        max_retries: int = 4,
        backoff: float = 0.5,
        top_logprobs: int = 20,
        option_tokens: int = 4,
    ):
        import httpx

        if max_concurrency < 1:
            raise InputError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {max_retries}")
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else f"{root}/v1"
        self.model = model
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.top_logprobs = top_logprobs
        self.option_tokens = option_tokens
        register_secret(api_key)
        self._api_key = api_key  # hidden in messages even when too short to register (vLLM's placeholder "EMPTY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=timeout,
            headers=headers,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._jitter = random.Random()
        self._jitter_lock = threading.Lock()
        # The served model identifies the outputs, not the URL: a build can resume against a restarted server.
        self.identity = {"backend": "endpoint", "model": model}

    # ------------------------------------------------------------------ protocol
    def generate_detailed(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """One chat completion request per conversation, ``max_concurrency`` at a time, each reply with the reason it
        ended, read from the server's ``finish_reason`` (see :func:`finish_reason`). Row ``i`` is sent the seed
        ``row_seed(seed, i)``, so servers that honour per-request seeds (vLLM, SGLang, TGI) give reproducible rows."""
        check_generation_args(max_new_tokens, temperature, top_p)
        base = resolve_seed(seed)
        stop = [s for s in (stop or ()) if s]

        def request_reply(index: int) -> Generation:
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": list(conversations[index]),
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "seed": row_seed(base, index),
            }
            if stop:
                payload["stop"] = stop
            choice, url = self._chat_completion(payload)
            # Servers drop the stop string from the reply; a server that keeps it is cut here, at the same place.
            text, cut = cut_at_stop(_message_content(choice, url), stop)
            return Generation(text, "stop_string" if cut else finish_reason(choice))

        return self._map(request_reply, len(conversations), "generating")

    def option_logprobs(self, prompts: Sequence[Conversation], options: Sequence[str]) -> list[list[float]]:
        """Option scores from ``top_logprobs`` of a short greedy answer (see the module docstring for the method
        and its limits)."""
        if not options or any(not option for option in options):
            raise InputError(f"options must be non-empty strings, got {list(options)!r}")

        def request_option_scores(index: int) -> list[float]:
            payload = {
                "model": self.model,
                "messages": list(prompts[index]),
                "max_tokens": self.option_tokens,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
            choice, url = self._chat_completion(payload)
            steps = _token_steps(choice, url)
            return [option_logprob(steps, option) for option in options]

        return self._map(request_option_scores, len(prompts), "scoring options")

    # ------------------------------------------------------------------ other API
    def list_models(self) -> list[str]:
        """Ids served at ``/v1/models``."""
        reply = self._request("GET", "/models", None)
        try:
            return [entry["id"] for entry in reply["data"]]
        except (KeyError, TypeError):
            raise BackendError(f"unexpected reply from {self._url('/models')}: {str(reply)[:200]}") from None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EndpointBackend:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP
    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _map(self, work, count: int, description: str) -> list:
        if count == 0:
            return []
        results: list = [None] * count
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, count)) as pool:
            futures = {pool.submit(work, index): index for index in range(count)}
            try:
                with progress_bar(total=count, description=description, unit="req") as bar:
                    for future in as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update()
                        rows_finished(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results

    def _chat_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The first choice of a chat completion request, and the URL it came from (for error messages)."""
        url = self._url("/chat/completions")
        return _first_choice(self._request("POST", "/chat/completions", payload), url), url

    def _request(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        url = self._url(path)
        response = self.send(method, url, payload)
        if response.status_code >= 400:
            raise BackendError(
                self.hide_key(f"{method} {url} failed with HTTP {response.status_code}: {_snippet(response.text)}")
            )
        try:
            return response.json()
        except ValueError as error:
            raise BackendError(
                self.hide_key(
                    f"{method} {url} answered HTTP {response.status_code} with malformed JSON ({error}): "
                    f"{_snippet(response.text) or '(empty body)'}"
                )
            ) from None

    def send(self, method: str, url: str, payload: dict[str, Any] | None):
        """The server's answer to one request to ``url`` (any route of the server, such as an engine's own routes
        outside ``/v1``), with this client's key, retried on connection errors, timeouts and 408/429/5xx answers
        (:class:`BackendError` once the retries are spent); any other answer, 4xx included, is returned."""
        import httpx

        problem = ""
        asked: float | None = None  # the wait the last answer's Retry-After asked for
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(asked, MAX_RETRY_AFTER) if asked is not None else self._delay(attempt))
            try:
                response = self._client.request(method, url, json=payload)
            except httpx.TransportError as error:
                problem, asked = f"{type(error).__name__}: {error}", None
                logger.debug("%s %s: %s (attempt %d)", method, url, self.hide_key(problem), attempt + 1)
                continue
            if response.status_code in _RETRIED_STATUSES:
                asked = None
                if response.status_code in _RETRY_AFTER_STATUSES:
                    asked = retry_after_seconds(response.headers.get("Retry-After"))
                wait = f"; Retry-After: {asked:g} s" if asked is not None else ""
                problem = f"HTTP {response.status_code}{wait}: {_snippet(response.text)}"
                logger.debug("%s %s: %s (attempt %d)", method, url, self.hide_key(problem), attempt + 1)
                continue
            return response
        raise BackendError(
            self.hide_key(f"{method} {url} failed after {self.max_retries + 1} attempts; last error: {problem}")
        )

    def hide_key(self, text: str) -> str:
        """``text`` without this client's API key (see :mod:`hf_cai.redaction`)."""
        return redact(text, [self._api_key])

    def _delay(self, attempt: int) -> float:
        with self._jitter_lock:
            jitter = 1 + 0.1 * self._jitter.random()
        return self.backoff * (2 ** (attempt - 1)) * jitter


def retry_after_seconds(value: str | None) -> float | None:
    """The wait a ``Retry-After`` header value asks for, in seconds: a number of seconds, or an HTTP date (the wait
    until then, 0 when it has passed); ``None`` for a missing or unreadable value."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            until = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if until.tzinfo is None:  # an HTTP date is in GMT, whether or not it says so
            until = until.replace(tzinfo=timezone.utc)
        seconds = until.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _first_choice(reply: Any, url: str) -> dict[str, Any]:
    """``choices[0]`` of a chat completion, or a :class:`BackendError` that says what came back instead."""
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list):
        raise BackendError(f"{url} answered without a 'choices' list: {_snippet(str(reply))}")
    if not choices:
        raise BackendError(f"{url} answered with an empty 'choices' list (no completion): {_snippet(str(reply))}")
    if not isinstance(choices[0], dict):
        raise BackendError(f"{url} answered with a malformed choice: {_snippet(str(reply))}")
    return choices[0]


def _message_content(choice: dict[str, Any], url: str) -> str:
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BackendError(f"{url} answered with a choice without a message: {_snippet(str(choice))}")
    return message.get("content") or ""


def finish_reason(choice: dict[str, Any]) -> str | None:
    """The :data:`~hf_cai.backends.FinishReason` of a chat completion choice.

    OpenAI reports ``"stop"`` both for the end of the turn and for a stop string, so from a server that says no
    more, a stop string reads as ``"stop"``. vLLM's ``stop_reason`` and SGLang's ``matched_stop`` name the stop string
    that matched (``None``, or a token id, at the end of the turn), and TGI reports ``"eos_token"`` and
    ``"stop_sequence"``. Other reasons (``"content_filter"``, ...) are passed through; ``None`` when the server gives
    none.
    """
    reason = choice.get("finish_reason")
    if not isinstance(reason, str):
        return None
    if reason == "stop":
        matched = choice.get("stop_reason", choice.get("matched_stop"))
        return "stop_string" if isinstance(matched, str) else "stop"
    return {"eos_token": "stop", "stop_sequence": "stop_string"}.get(reason, reason)


def _token_steps(choice: dict[str, Any], url: str) -> list[list[tuple[str, float]]]:
    """Per generated position: the generated token first, then the reported alternatives."""
    try:
        content = choice["logprobs"]["content"]
        steps = []
        for position in content:
            entries = [(position["token"], float(position["logprob"]))]
            entries += [(alt["token"], float(alt["logprob"])) for alt in position.get("top_logprobs") or ()]
            steps.append(entries)
    except (KeyError, IndexError, TypeError, ValueError):
        raise BackendError(
            f"{url} did not return token logprobs (the reply has no choices[0].logprobs.content); option scoring "
            "needs a server that supports `logprobs` and `top_logprobs` in chat completions (vLLM, SGLang, TGI, "
            f"OpenAI). Choice: {_snippet(str(choice))}"
        ) from None
    return steps


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def option_logprob(steps: Sequence[Sequence[tuple[str, float]]], option: str) -> float:
    """Log-probability of ``option`` as the start of a greedy answer, from per-position ``(token, logprob)`` lists
    whose first entry is the token actually generated.

    Whitespace before the answer and before the option is ignored (tokenizers differ in whether a reply starts with a
    space or a newline).
    """
    total = 0.0
    rest = option.lstrip()
    at_start = True
    for entries in steps:
        candidates: dict[str, float] = {}
        for token, logprob in entries:
            candidates.setdefault(token.lstrip() if at_start else token, logprob)
        generated, generated_logprob = entries[0]
        generated = generated.lstrip() if at_start else generated
        completing = [lp for token, lp in candidates.items() if token and token.startswith(rest)]
        if completing:
            return total + _logsumexp(completing)
        if at_start and not generated:
            total += generated_logprob
            continue
        if generated and rest.startswith(generated):
            total += generated_logprob
            rest = rest[len(generated) :]
            at_start = False
            continue
        partial = [lp for token, lp in candidates.items() if token and rest.startswith(token)]
        if partial:
            return total + _logsumexp(partial)
        return total + min(lp for _, lp in entries)
    return total
