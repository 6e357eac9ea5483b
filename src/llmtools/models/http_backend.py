"""The HTTP backend: any OpenAI-compatible endpoint (llmtools serve, llama.cpp server, vLLM, ...).

    /v1/completions         generate, stream (SSE), loglikelihood (echo + logprobs)
    /v1/chat/completions    chat, chat_stream (the server applies the model's chat template)
    /v1/embeddings          embed
    /v1/models              identity (the first model listed, unless `model=` names one)
    /tokenize, /detokenize  tokens, where the server offers them (llama.cpp's server does)
    /apply-template         apply_chat_template, where offered (llama.cpp's server does)

What the server lacks raises NotSupported (exit 4). Requests time out (`timeout`, seconds) and
are retried with exponential backoff on 429, 5xx and connection errors (`retries` times,
honouring Retry-After). `generate_batch`, `chat_batch` and `loglikelihood` send requests
concurrently from a pool of `concurrency` threads; results keep the input order.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

from llmtools.errors import LLMToolsError, RuntimeFailure, require
from llmtools.models.base import Backend, Chunk, Completion, GenerationParams, LogLikelihood, ModelIdentity, NotSupported

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
UNSUPPORTED_STATUS = {404, 405, 501}
MAX_BACKOFF = 30.0


class HttpError(LLMToolsError):
    """The endpoint answered with an HTTP error status (kept in `status`)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Unsupported(Exception):
    """The server has no such endpoint (404/405/501); callers turn it into NotSupported."""


class HttpClient:
    """httpx with auth, timeouts and retries, shared by the backend and identity_of."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0, retries: int = 3, backoff: float = 0.5):
        httpx = require("httpx", None, "http model endpoints")
        self.httpx = httpx
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)))
        self.retries = max(0, int(retries))
        self.backoff = backoff

    def url(self, path: str) -> str:
        if path.startswith("/v1/"):
            return self.base_url + path[len("/v1") :]
        return self.root + path

    def _wait(self, attempt: int, response: Any = None) -> None:
        delay = self.backoff * (2**attempt)
        if response is not None:
            try:
                delay = max(delay, float(response.headers.get("retry-after", 0)))
            except ValueError:
                pass
        time.sleep(min(delay, MAX_BACKOFF))

    def _check(self, response: Any, url: str) -> None:
        code = response.status_code
        if code < 400:
            return
        if code in UNSUPPORTED_STATUS:
            raise _Unsupported(f"{url}: HTTP {code}")
        detail = _error_detail(response)
        if code in (401, 403):
            raise HttpError(
                f"{url}: HTTP {code}, the endpoint refused the request ({detail}); "
                "set --api-key or $LLMTOOLS_API_KEY / $OPENAI_API_KEY",
                code,
            )
        raise HttpError(f"{url}: HTTP {code}: {detail}", code)

    def request(self, method: str, path: str, payload: dict | None = None) -> Any:
        """JSON in, JSON out, with retries. Raises _Unsupported on 404/405/501."""
        url = self.url(path)
        last = ""
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = self.client.request(method, url, json=payload)
            except self.httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in RETRY_STATUS:
                    self._check(response, url)
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise LLMToolsError(f"{url}: the response is not JSON: {response.text[:200]!r}") from exc
                last = f"HTTP {response.status_code}: {_error_detail(response)}"
            if attempt < self.retries:
                self._wait(attempt, response)
        raise RuntimeFailure(f"{url}: failed after {self.retries + 1} attempts ({last})")

    def stream_events(self, path: str, payload: dict) -> Iterator[dict]:
        """POST and yield the JSON objects of a server-sent event stream, until [DONE]."""
        url = self.url(path)
        last = ""
        for attempt in range(self.retries + 1):
            try:
                with self.client.stream("POST", url, json=payload, headers={"Accept": "text/event-stream"}) as response:
                    if response.status_code in RETRY_STATUS:
                        response.read()
                        last = f"HTTP {response.status_code}: {_error_detail(response)}"
                        if attempt < self.retries:
                            self._wait(attempt, response)
                        continue
                    if response.status_code >= 400:
                        response.read()
                        self._check(response, url)
                    # Once events flow, a failure cannot be retried without repeating text.
                    yield from _parse_sse(response.iter_lines(), url)
                    return
            except self.httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    self._wait(attempt)
        raise RuntimeFailure(f"{url}: failed after {self.retries + 1} attempts ({last})")

    def close(self) -> None:
        self.client.close()


def _parse_sse(lines: Iterator[str], url: str) -> Iterator[dict]:
    for line in lines:
        if not line.startswith("data:"):
            continue  # comments, event names, keep-alives
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise LLMToolsError(f"{url}: bad event in the stream: {data[:200]!r}") from exc
        if isinstance(event, dict) and event.get("error"):
            raise LLMToolsError(f"{url}: the server reported an error mid-stream: {event['error']}")
        yield event


def _error_detail(response: Any) -> str:
    try:
        body = response.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(err, dict):
            err = err.get("message") or err
        return str(err)[:300]
    except ValueError:
        return (response.text or response.reason_phrase or "")[:300]


def _pick_model(listing: Any, wanted: str | None, url: str) -> dict:
    models = listing.get("data") if isinstance(listing, dict) else None
    if not models:
        if wanted:
            return {"id": wanted}
        raise LLMToolsError(f"{url}/models lists no model; pass the model id explicitly")
    if wanted:
        for entry in models:
            if entry.get("id") == wanted:
                return entry
        ids = ", ".join(str(m.get("id")) for m in models)
        raise LLMToolsError(f"{url}: no model {wanted!r} (it serves: {ids})")
    return models[0]


def _identity_from_entry(entry: dict, url: str) -> ModelIdentity:
    """An endpoint's identity. A server that lists `"identity": {...}` (llmtools serve does) or
    `"llmtools": {...}` in its /v1/models entry gives the served model's hash, parent, manifest."""
    extra = next((entry[k] for k in ("identity", "llmtools") if isinstance(entry.get(k), dict)), {})
    return ModelIdentity(
        name=str(entry.get("id") or extra.get("name") or url),
        format="http",
        path=url,
        sha256=extra.get("sha256"),
        parent=extra.get("parent"),
        manifest=extra.get("manifest") or (entry.get("provenance") if isinstance(entry.get("provenance"), dict) else None),
    )


def endpoint_identity(url: str, api_key: str | None = None, model: str | None = None, timeout: float = 10.0) -> ModelIdentity:
    client = HttpClient(url, api_key=api_key, timeout=timeout, retries=1)
    try:
        entry = _pick_model(client.request("GET", "/v1/models"), model, url)
    except _Unsupported:
        entry = {"id": model or url}
    finally:
        client.close()
    return _identity_from_entry(entry, url)


class HttpBackend(Backend):
    backend_name = "http"
    supports_embeddings = True  # if the server has /v1/embeddings; NotSupported otherwise

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        concurrency: int = 4,
        seed: int | None = None,
        backoff: float = 0.5,
        **_other_backends_opts: Any,
    ):
        self.http = HttpClient(base_url, api_key=api_key, timeout=timeout, retries=retries, backoff=backoff)
        self.base_url = self.http.base_url
        try:
            entry = _pick_model(self.http.request("GET", "/v1/models"), model, self.base_url)
        except _Unsupported:
            if not model:
                raise LLMToolsError(f"{self.base_url}: no /v1/models endpoint; pass the model id explicitly") from None
            entry = {"id": model}
        self.model = str(entry["id"])
        self.identity = _identity_from_entry(entry, self.base_url)
        self.concurrency = max(1, int(concurrency))
        self.default_seed = seed

    # -- helpers
    def _post(self, path: str, payload: dict, what: str) -> dict:
        try:
            return self.http.request("POST", path, payload)
        except _Unsupported as exc:
            raise NotSupported(f"{self.base_url}: the endpoint cannot {what} ({exc})") from None

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
        if len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _sampling(self, params: GenerationParams) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.top_k:
            body["top_k"] = params.top_k  # not OpenAI's; llama.cpp, vLLM and llmtools serve take it
        seed = params.seed if params.seed is not None else self.default_seed
        if seed is not None:
            body["seed"] = seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _empty(self, prompt_tokens: int = 0) -> Completion:
        return Completion("", prompt_tokens, 0, "length")

    # -- generation
    def generate(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        params = params or GenerationParams()
        if params.max_tokens == 0:  # servers differ on what 0 means; nothing to ask for
            return self._empty(self._count_or_zero(prompt))
        out = self._post("/v1/completions", {**self._sampling(params), "prompt": prompt}, "complete text")
        return _completion(out, lambda c: c.get("text", ""))

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams | None = None) -> list[Completion]:
        return self._map(lambda p: self.generate(p, params), list(prompts))

    def stream(self, prompt: str, params: GenerationParams | None = None) -> Iterator[Chunk]:
        params = params or GenerationParams()
        if params.max_tokens == 0:
            yield Chunk("", "length", self._count_or_zero(prompt), 0)
            return
        body = {**self._sampling(params), "prompt": prompt, "stream": True, "stream_options": {"include_usage": True}}
        yield from self._stream("/v1/completions", body, lambda c: c.get("text"))

    def _stream(self, path: str, body: dict, text_of: Callable[[dict], str | None]) -> Iterator[Chunk]:
        finish, usage, pieces = None, None, 0
        try:
            for event in self.http.stream_events(path, body):
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    text = text_of(choice)
                    if text:
                        pieces += 1
                        yield Chunk(text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except _Unsupported as exc:
            raise NotSupported(f"{self.base_url}: the endpoint cannot stream ({exc})") from None
        usage = usage or {}
        yield Chunk(
            "",
            finish or "stop",
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", pieces)),  # without usage: one event per token
        )

    # -- chat: the server renders the template
    def chat(self, messages: Sequence[dict], params: GenerationParams | None = None) -> Completion:
        params = params or GenerationParams()
        if params.max_tokens == 0:
            return self._empty()
        body = {**self._sampling(params), "messages": list(messages)}
        out = self._post("/v1/chat/completions", body, "chat")
        return _completion(out, lambda c: (c.get("message") or {}).get("content") or "")

    def chat_batch(self, conversations: Sequence[Sequence[dict]], params: GenerationParams | None = None) -> list[Completion]:
        return self._map(lambda m: self.chat(m, params), list(conversations))

    def chat_stream(self, messages: Sequence[dict], params: GenerationParams | None = None) -> Iterator[Chunk]:
        params = params or GenerationParams()
        if params.max_tokens == 0:
            return iter([Chunk("", "length", 0, 0)])
        body = {**self._sampling(params), "messages": list(messages), "stream": True, "stream_options": {"include_usage": True}}
        return self._stream("/v1/chat/completions", body, lambda c: (c.get("delta") or {}).get("content"))

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        out = self._post(
            "/apply-template",
            {"messages": list(messages), "add_generation_prompt": add_generation_prompt},
            "show its chat template (no /apply-template); chat() still works",
        )
        return str(out["prompt"])

    # -- tokens
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        out = self._post("/tokenize", {"content": text, "add_special": add_special, "parse_special": True}, "tokenize (no /tokenize)")
        return [int(t["id"]) if isinstance(t, dict) else int(t) for t in out["tokens"]]

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self._post("/detokenize", {"tokens": list(ids)}, "detokenize (no /detokenize)")["content"])

    def _count_or_zero(self, text: str) -> int:
        try:
            return len(self.tokenize(text, add_special=True))
        except NotSupported:
            return 0

    # -- scoring: echo the text back with the log-probability of each of its tokens
    def _score(self, text: str) -> LogLikelihood:
        body = {"model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1}
        try:
            out = self._post("/v1/completions", body, "score text (no echo + logprobs)")
        except HttpError as exc:
            if exc.status in (400, 422):  # the server rejects echo/logprobs: it cannot score
                raise NotSupported(f"{self.base_url}: the endpoint cannot score text with echo + logprobs ({exc.message})") from None
            raise
        choice = (out.get("choices") or [{}])[0]
        logprobs = choice.get("logprobs") or {}
        values = logprobs.get("token_logprobs")
        if not values:
            raise NotSupported(f"{self.base_url}: the endpoint does not return prompt logprobs (echo + logprobs)")
        offsets = logprobs.get("text_offset")
        if offsets and len(offsets) == len(values):
            # Keep the text's own tokens; max_tokens=1 appended one generated token after them.
            n_prompt = sum(1 for o in offsets if o < len(text))
        else:
            n_prompt = int((out.get("usage") or {}).get("prompt_tokens", len(values)))
        scored = [v for v in values[:n_prompt] if v is not None]
        return LogLikelihood(float(sum(scored)), len(scored))

    def loglikelihood(self, texts: Sequence[str]) -> list[LogLikelihood]:
        return self._map(self._score, list(texts))

    # -- embeddings
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        texts = list(texts)
        for i in range(0, len(texts), 64):
            out = self._post("/v1/embeddings", {"model": self.model, "input": texts[i : i + 64]}, "embed (no /v1/embeddings)")
            rows = sorted(out.get("data") or [], key=lambda d: d.get("index", 0))
            vectors.extend([list(map(float, r["embedding"])) for r in rows])
        return vectors

    def close(self) -> None:
        self.http.close()


def _completion(out: dict, text_of: Callable[[dict], str]) -> Completion:
    choice = (out.get("choices") or [{}])[0]
    usage = out.get("usage") or {}
    return Completion(
        text_of(choice),
        int(usage.get("prompt_tokens", 0)),
        int(usage.get("completion_tokens", 0)),
        choice.get("finish_reason") or "stop",
    )
