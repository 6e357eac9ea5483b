"""A small threaded OpenAI-compatible server over a TorchBackend, for testing HTTP clients.

It speaks what the HTTP backend uses: /v1/models, /v1/completions (stream, echo + logprobs),
/v1/chat/completions (stream), /v1/embeddings, and llama.cpp's /tokenize, /detokenize and
/apply-template. It is a test double, independent of `llmtools serve`.

    with serve_backend(backend, api_key="k") as url:   # url = "http://127.0.0.1:PORT/v1"
        ...

Fault injection: `server.faults` is a list of HTTP status codes returned, one per request, before
normal service resumes (only on the paths in `server.fault_paths`, when that is not empty); `server.disabled` is a set of paths that answer 404 (and "echo": echo + logprobs answer 400).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from llmtools.models.base import GenerationParams


def _params(body: dict) -> GenerationParams:
    stop = body.get("stop") or ()
    return GenerationParams(
        max_tokens=int(body.get("max_tokens", 16)),
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        top_k=int(body.get("top_k", 0)),
        seed=body.get("seed"),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backend: Any, api_key: str | None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.backend = backend
        self.api_key = api_key
        self.faults: list[int] = []
        self.fault_paths: set[str] = set()
        self.disabled: set[str] = set()
        self.requests: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()  # one model call at a time; concurrency is the client's job
        self.count_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    def _events(self, events: Iterator[dict]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _gate(self) -> bool:
        srv = self.server
        srv.requests.append(self.path)
        if srv.faults and (not srv.fault_paths or self.path in srv.fault_paths):
            self._send(srv.faults.pop(0), {"error": {"message": "injected fault"}})
            return False
        if srv.api_key and self.headers.get("Authorization") != f"Bearer {srv.api_key}":
            self._send(401, {"error": {"message": "bad api key"}})
            return False
        if self.path in srv.disabled:
            self._send(404, {"error": {"message": "not found"}})
            return False
        return True

    def do_GET(self) -> None:
        if not self._gate():
            return
        if self.path == "/v1/models":
            ident = self.server.backend.identity
            entry = {"id": ident.name, "object": "model", "owned_by": "test", "identity": ident.to_dict()}
            self._send(200, {"object": "list", "data": [entry]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self._gate():
            return
        srv = self.server
        with srv.count_lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            time.sleep(0.02)  # let concurrent requests overlap, so in_flight shows the client's pool
            handler = {
                "/v1/completions": self._completions,
                "/v1/chat/completions": self._chat,
                "/v1/embeddings": self._embeddings,
                "/tokenize": self._tokenize,
                "/detokenize": self._detokenize,
                "/apply-template": self._apply_template,
            }.get(self.path)
            if handler is None:
                self._send(404, {"error": {"message": "not found"}})
            else:
                handler(body)
        finally:
            with srv.count_lock:
                srv.in_flight -= 1

    # -- endpoints
    def _completions(self, body: dict) -> None:
        b, prompt, params = self.server.backend, body["prompt"], _params(body)
        if body.get("echo") and body.get("logprobs") is not None:
            if "echo" in self.server.disabled:  # like servers that cannot return prompt logprobs
                self._send(400, {"error": {"message": "logprobs and echo are not supported"}})
                return
            with self.server.lock:
                self._send(200, self._echo_logprobs(prompt, params))
            return
        if body.get("stream"):
            self._stream(lambda: b.stream(prompt, params), "text_completion", lambda t: {"text": t})
            return
        with self.server.lock:
            done = b.generate(prompt, params)
        self._send(200, _completion("text_completion", {"text": done.text}, done))

    def _chat(self, body: dict) -> None:
        b, messages, params = self.server.backend, body["messages"], _params(body)
        if body.get("stream"):
            self._stream(lambda: b.chat_stream(messages, params), "chat.completion.chunk", lambda t: {"delta": {"content": t}})
            return
        with self.server.lock:
            done = b.chat(messages, params)
        self._send(200, _completion("chat.completion", {"message": {"role": "assistant", "content": done.text}}, done))

    def _stream(self, make, obj: str, wrap) -> None:
        with self.server.lock:
            chunks = list(make())  # generated under the lock, then sent event by event
        last = chunks[-1]

        def events() -> Iterator[dict]:
            for c in chunks:
                if c.text:
                    yield {"object": obj, "choices": [{"index": 0, **wrap(c.text), "finish_reason": None}]}
            yield {"object": obj, "choices": [{"index": 0, **wrap(""), "finish_reason": last.finish_reason}]}
            yield {"object": obj, "choices": [], "usage": {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens}}

        self._events(events())

    def _echo_logprobs(self, prompt: str, params: GenerationParams) -> dict:
        import torch

        b = self.server.backend
        ids = b._prompt_ids(prompt)
        with torch.inference_mode():
            logits = b.model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        token_logprobs = [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
        tokens = [b.tokenizer.decode([i]) for i in ids]
        offsets, pos = [], 0
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        text, n_gen = prompt, 0
        if params.max_tokens > 0:  # one greedy token after the prompt, as real servers append
            nxt = int(torch.argmax(logits[-1]))
            tokens.append(b.tokenizer.decode([nxt]))
            token_logprobs.append(float(logp[-1, nxt]))
            offsets.append(pos)
            text, n_gen = prompt + tokens[-1], 1
        choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": {"tokens": tokens, "token_logprobs": token_logprobs, "text_offset": offsets}}
        return {"object": "text_completion", "choices": [choice], "usage": {"prompt_tokens": len(ids), "completion_tokens": n_gen}}

    def _embeddings(self, body: dict) -> None:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        with self.server.lock:
            vectors = self.server.backend.embed(texts)
        self._send(200, {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]})

    def _tokenize(self, body: dict) -> None:
        self._send(200, {"tokens": self.server.backend.tokenize(body["content"], add_special=bool(body.get("add_special")))})

    def _detokenize(self, body: dict) -> None:
        self._send(200, {"content": self.server.backend.detokenize(body["tokens"])})

    def _apply_template(self, body: dict) -> None:
        prompt = self.server.backend.apply_chat_template(body["messages"], body.get("add_generation_prompt", True))
        self._send(200, {"prompt": prompt})


def _completion(obj: str, choice: dict, done: Any) -> dict:
    return {
        "object": obj,
        "choices": [{"index": 0, **choice, "finish_reason": done.finish_reason}],
        "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens},
    }


@contextlib.contextmanager
def serve_backend(backend: Any, api_key: str | None = None) -> Iterator[str]:
    """Serve `backend` on 127.0.0.1 (a free port) in a thread; yields the /v1 base URL.
    The server object is reachable as `serve_backend.last` for fault injection."""
    server = _Server(backend, api_key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    serve_backend.last = server
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
