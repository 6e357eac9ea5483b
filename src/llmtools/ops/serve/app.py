"""The Starlette application of `llmtools serve`: OpenAI-compatible endpoints, health, metrics,
admin (blue/green), auth, limits, the request log.

Import this module only when serving: it imports starlette at the top.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
import time
import traceback
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmtools.errors import LLMToolsError
from llmtools.io import TOO_DEEP, nested_too_deeply
from llmtools.models.base import Backend
from llmtools.ops.serve.request_log import RequestLog, log_record
from llmtools.ops.serve.metrics import Metrics
from llmtools.ops.serve.protocol import (
    ApiError,
    bad_request,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    embedding_response,
    generation_params,
    parse_embedding_input,
    parse_messages,
    parse_prompts,
    refuse_unsupported,
    usage_chunk,
)
from llmtools.ops.serve.continuous import BatchingRunner, supports_continuous_batching
from llmtools.ops.serve.runner import Job, Limiter, SlotRunner
from llmtools.ops.serve.config import ServeConfig
from llmtools.ops.serve.slots import LoadBusy, LoadFailed, ModelManager, ModelSlot, NothingToRollBack


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


class ServeState:
    """Everything the request handlers share."""

    def __init__(self, config: ServeConfig, loader: Callable[[str], Backend], health_check: Callable[[Backend], None] | None = None):
        self.config = config
        self.limiter = Limiter(config.max_concurrency, config.max_queue)
        kw = {"health_check": health_check} if health_check is not None else {}
        self.manager = ModelManager(loader, self._make_runner, config.keep, on_event=self.say, **kw)
        self.metrics = Metrics(queue_depth=self._queue_depth, in_flight=lambda: self.limiter.admitted,
                               batch_times=self._batch_times)
        self.log = RequestLog(config.log_path, config.log_content) if config.log_path else None
        self.draining = False
        self.fatal: BaseException | None = None
        self.served_name = config.served_name

    def _make_runner(self, backend: Backend, version: int) -> SlotRunner | BatchingRunner:
        cfg = self.config
        if cfg.parallel > 0 and supports_continuous_batching(backend):
            # each version gets its own batcher (and context); a replaced one drains on close
            return BatchingRunner(backend, parallel=cfg.parallel, max_running=cfg.max_concurrency, name=f"v{version}",
                                  on_step=self.metrics.observe_step)
        return SlotRunner(backend, max_batch=cfg.micro_batch, workers=cfg.max_concurrency, name=f"v{version}",
                          on_batch=lambda n: self.metrics.batch_size.observe(n))

    def _batch_times(self) -> list:
        runners = [slot.runner for slot in self.manager.slots()]
        return [r.batcher.times for r in runners if hasattr(getattr(r, "batcher", None), "times")]

    def _queue_depth(self) -> float:
        return float(sum(slot.runner.queued for slot in self.manager.slots()))

    def say(self, message: str) -> None:
        if not self.config.quiet:
            sys.stderr.write(f"llmtools serve: {message}\n")
            sys.stderr.flush()

    # -- models
    def load(self, ref: str, kind: str = "load") -> ModelSlot:
        slot = self.manager.load(ref)
        if self.served_name is None:
            self.served_name = slot.identity.name
        self.metrics.swaps.labels(kind).inc()
        self.metrics.set_models(self.manager.slots())
        return slot

    def rollback(self) -> ModelSlot:
        slot = self.manager.rollback()
        self.metrics.swaps.labels("rollback").inc()
        self.metrics.set_models(self.manager.slots())
        return slot

    def model_entry(self, slot: ModelSlot) -> dict:
        ident = slot.identity
        return {
            "id": self.served_name or ident.name,
            "object": "model",
            "created": int(slot.loaded_at),
            "owned_by": "llmtools",
            "active": slot.state == "active",
            "version": slot.version,
            "ref": slot.ref,
            "identity": ident.to_dict(),
            "provenance": ident.manifest,
            "backend": getattr(slot.backend, "backend_name", None),
            "supports_embeddings": bool(getattr(slot.backend, "supports_embeddings", False)),
        }

    def resolve_model(self, name: Any) -> ModelSlot:
        if name is not None and not isinstance(name, str):
            raise bad_request("'model' must be a string", param="model")
        if self.manager.active is None:
            raise ApiError(503, "the model is still loading", "server_error", code="model_loading", headers={"Retry-After": "1"})
        slot = self.manager.resolve(name, self.served_name)
        if slot is None:
            raise ApiError(
                404,
                f"The model '{name}' does not exist; this server serves '{self.served_name}' (see /v1/models)",
                "invalid_request_error",
                code="model_not_found",
                param="model",
            )
        return slot

    # -- jobs
    def submit(self, slot: ModelSlot, kind: str, payload: list, params, stream: bool) -> Job:
        if not self.limiter.try_acquire():
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                429,
                f"the server is at capacity ({self.limiter.max_concurrency} running + {self.limiter.max_queue} queued); retry shortly",
                "rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        job = Job(kind, payload, params, loop, stream=stream, deadline=time.monotonic() + self.config.timeout)
        job.on_end.append(lambda _job: self.limiter.release())
        try:
            slot.runner.submit(job)
        except BaseException:
            job.end()
            raise
        return job

    async def result(self, job: Job) -> Any:
        remaining = (job.deadline or time.monotonic()) - time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), max(remaining, 0.001))
        except asyncio.TimeoutError:
            job.cancelled.set()
            raise ApiError(504, "the request timed out (--timeout)", "timeout_error", code="timeout") from None

    def check_auth(self, request: Request, admin: bool = False) -> None:
        keys = self.config.api_keys
        if admin:
            keys = self.config.admin_keys or self.config.api_keys
            if not keys:
                raise ApiError(
                    403,
                    "admin endpoints are disabled: start the server with --admin-key or --api-key",
                    "permission_error",
                    code="admin_disabled",
                )
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", "authentication_error", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        # compare against every key in constant time, so timing leaks neither which nor how much
        ok = False
        for key in keys:
            ok |= hmac.compare_digest(token.encode(), key.encode())
        if not ok:
            raise ApiError(401, "incorrect API key", "authentication_error", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    async def read_json(self, request: Request) -> dict:
        limit = self.config.max_body
        declared = request.headers.get("content-length")
        too_big = ApiError(413, f"request body is larger than the limit of {limit} bytes (--max-body)",
                           "invalid_request_error", code="request_too_large")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise too_big
            except ValueError:
                raise bad_request("invalid Content-Length header") from None
        body = bytearray()

        async def receive() -> None:
            async for piece in request.stream():
                body.extend(piece)
                if len(body) > limit:
                    raise too_big

        try:
            # A client that sends part of a body and stalls gets --timeout, as a generation does,
            # not a connection held open forever.
            await asyncio.wait_for(receive(), self.config.timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {self.config.timeout:g} s (--timeout)",
                           "invalid_request_error", code="request_timeout", headers={"Connection": "close"}) from None
        except ClientDisconnect:
            raise ApiError(499, "client closed the request", "client_closed", code="client_closed") from None
        if not body:
            raise bad_request("the request body is empty; send a JSON object", code="invalid_json")
        try:
            value = orjson.loads(bytes(body))
        except orjson.JSONDecodeError as exc:
            reason = f"{TOO_DEEP} (more than 1024 levels)" if nested_too_deeply(exc) else f"not valid JSON: {exc}"
            raise bad_request(f"the request body is {reason}", code="invalid_json") from None
        if not isinstance(value, dict):
            raise bad_request(f"the request body must be a JSON object, not {type(value).__name__}", code="invalid_json")
        return value

    def close(self) -> None:
        self.manager.close()
        if self.log is not None:
            self.log.close()


class Ctx:
    """One request's bookkeeping: filled by the handler, finished once (log line + metrics)."""

    def __init__(self, state: ServeState, endpoint: str, request_id: str):
        self.state = state
        self.endpoint = endpoint
        self.request_id = request_id
        self.t0 = time.monotonic()
        self.slot: ModelSlot | None = None
        self.status = 200
        self.error: str | None = None
        self.ttft: float | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.stream = False
        self.prompt: Any = None
        self.response: Any = None
        self.deferred = False
        self._done = False

    def fail(self, err: ApiError) -> None:
        self.status = err.status
        self.error = err.code or err.type

    def from_job(self, job: Job) -> None:
        if job.t_first is not None:
            self.ttft = job.t_first - self.t0

    def finish(self, logged: bool = True) -> None:
        if self._done:
            return
        self._done = True
        latency = time.monotonic() - self.t0
        st = self.state
        slot = self.slot or st.manager.active
        st.metrics.observe(
            self.endpoint, self.status, latency, self.ttft, self.error,
            slot.identity.short if slot else None, self.prompt_tokens, self.completion_tokens,
        )
        if st.log is not None and logged:
            st.log.write(
                log_record(
                    request_id=self.request_id,
                    endpoint=self.endpoint,
                    status=self.status,
                    model=slot.identity.to_dict() if slot else None,
                    model_version=slot.version if slot else None,
                    latency_ms=latency * 1000.0,
                    ttft_ms=_ms(self.ttft),
                    prompt_tokens=self.prompt_tokens,
                    completion_tokens=self.completion_tokens,
                    stream=self.stream,
                    error=self.error,
                    prompt=self.prompt,
                    response=self.response,
                    content=st.log.content,
                )
            )


def error_response(err: ApiError, request_id: str | None = None) -> JSONResponse:
    headers = dict(err.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


Handler = Callable[[Request, Ctx], Awaitable[Response]]


def endpoint(state: ServeState, name: str, handler: Handler, auth: str | None = "api", logged: bool = True):
    """Wrap a handler with request id, drain check, auth, error mapping, metrics and the log."""

    async def wrapped(request: Request) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        rid = rid[:128]
        ctx = Ctx(state, name, rid)
        try:
            if state.draining and auth is not None:
                raise ApiError(503, "the server is shutting down", "server_error", code="shutting_down",
                               headers={"Connection": "close"})
            if auth is not None:
                state.check_auth(request, admin=(auth == "admin"))
            response = await handler(request, ctx)
        except ApiError as err:
            ctx.fail(err)
            response = error_response(err)
        except Exception as exc:  # never a traceback to the client; one line (or more) on stderr
            state.say(f"internal error in {name} ({rid}): {exc.__class__.__name__}: {exc}")
            if not state.config.quiet:
                traceback.print_exc(file=sys.stderr)
            err = ApiError(500, f"internal server error ({exc.__class__.__name__})", "server_error", code="internal_error")
            ctx.fail(err)
            response = error_response(err)
        response.headers["x-request-id"] = rid
        if not ctx.deferred:
            ctx.status = response.status_code
            ctx.finish(logged)
        return response

    return wrapped


# --------------------------------------------------------------------------- streaming


class SSEResponse(Response):
    """Server-sent events from an async iterator of bytes. A client disconnect (seen on
    `receive`, since uvicorn drops writes to a closed connection silently) calls `on_disconnect`
    at once and closes the iterator, whose `finally` writes the log line."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_disconnect: Callable[[], None], headers: dict[str, str] | None = None):
        self.events = events
        self.on_disconnect = on_disconnect
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})

    async def __call__(self, scope, receive, send) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    self.on_disconnect()
                    return

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for data in self.events:
                if gone.is_set():
                    break
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            self.on_disconnect()
        finally:
            watcher.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()


def sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def _next_event(job: Job) -> tuple[str, Any]:
    assert job.events is not None
    if not job.events.empty():  # already there: no wait_for (a task and a timer per token on 3.11)
        return job.events.get_nowait()
    remaining = (job.deadline or time.monotonic()) - time.monotonic()
    try:
        return await asyncio.wait_for(job.events.get(), max(remaining, 0.001))
    except asyncio.TimeoutError:
        job.cancelled.set()
        return ("error", ApiError(504, "the request timed out (--timeout)", "timeout_error", code="timeout"))


def _as_api_error(exc: BaseException, state: ServeState, ctx: Ctx) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, LLMToolsError) and "context" in exc.message:
        # the backends' "prompt fills the context" is the client's to fix, as in OpenAI's API
        return ApiError(400, exc.message, "invalid_request_error", code="context_length_exceeded", param="messages")
    state.say(f"generation failed ({ctx.request_id}): {exc.__class__.__name__}: {exc}")
    return ApiError(500, f"generation failed ({exc.__class__.__name__}: {exc})", "server_error", code="generation_failed")


async def stream_response(state: ServeState, ctx: Ctx, job: Job, kind: str, slot: ModelSlot, include_usage: bool) -> Response:
    """Wait for the first event (so queue timeouts and early failures get a real status code),
    then stream the rest as SSE chunks ending in `data: [DONE]`."""
    first = await _next_event(job)
    if first[0] == "error":
        job.cancelled.set()
        raise _as_api_error(first[1], state, ctx)
    ctx.deferred = True
    ctx.stream = True
    model = state.served_name or slot.identity.name
    fp = slot.identity.short
    created = int(time.time())
    rid = ctx.request_id

    def piece(text: str, finish: str | None = None) -> bytes:
        if kind == "chat":
            return sse(chat_chunk(rid, model, fp, created, {"content": text} if text or finish is None else {}, finish))
        return sse(completion_chunk(rid, model, fp, created, text, finish))

    async def events() -> AsyncIterator[bytes]:
        parts: list[str] = []
        event = first
        try:
            if kind == "chat":
                yield sse(chat_chunk(rid, model, fp, created, {"role": "assistant", "content": ""}, None))
            while True:
                tag, value = event
                if tag == "chunk":
                    if ctx.ttft is None:
                        ctx.ttft = (job.t_first or time.monotonic()) - ctx.t0
                    parts.append(value)
                    yield piece(value)
                elif tag == "done":
                    ctx.prompt_tokens, ctx.completion_tokens = value.prompt_tokens, value.completion_tokens
                    if ctx.ttft is None:
                        ctx.ttft = (job.t_first or time.monotonic()) - ctx.t0
                    yield piece("", value.finish_reason)
                    if include_usage:
                        yield sse(usage_chunk(kind, rid, model, fp, created, value.prompt_tokens, value.completion_tokens))
                    yield DONE
                    ctx.status = 200
                    return
                else:
                    err = _as_api_error(value, state, ctx)
                    ctx.fail(err)
                    yield sse(err.body())
                    yield DONE
                    return
                event = await _next_event(job)
        finally:
            if not job.future.done() or ctx.status != 200:
                job.cancelled.set()
            if ctx.error is None and not (event and event[0] == "done"):
                ctx.fail(ApiError(499, "client closed the request", "client_closed", code="client_closed"))
            ctx.response = "".join(parts)
            ctx.finish()

    return SSEResponse(events(), job.cancelled.set, headers={"x-request-id": ctx.request_id})


# --------------------------------------------------------------------------- handlers


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream not in (True, False, None):
        raise bad_request("'stream' must be a boolean", param="stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise bad_request("'stream_options' must be an object", param="stream_options")
    return bool(stream), bool(opts.get("include_usage"))


def build_app(state: ServeState) -> Starlette:
    cfg = state.config

    async def chat(request: Request, ctx: Ctx) -> Response:
        body = await state.read_json(request)
        refuse_unsupported(body)
        slot = ctx.slot = state.resolve_model(body.get("model"))
        messages = parse_messages(body.get("messages"))
        params = generation_params(body, cfg.defaults)
        stream, include_usage = _stream_flags(body)
        ctx.prompt, ctx.stream = messages, stream
        job = state.submit(slot, "chat", [messages], params, stream)
        if stream:
            return await stream_response(state, ctx, job, "chat", slot, include_usage)
        (done,) = await _await(state, ctx, job)
        ctx.prompt_tokens, ctx.completion_tokens, ctx.response = done.prompt_tokens, done.completion_tokens, done.text
        return _json(chat_response(ctx.request_id, state.served_name, slot.identity.short, done.text, done.finish_reason,
                                   done.prompt_tokens, done.completion_tokens))

    async def completions(request: Request, ctx: Ctx) -> Response:
        body = await state.read_json(request)
        refuse_unsupported(body)
        slot = ctx.slot = state.resolve_model(body.get("model"))
        prompts = parse_prompts(body.get("prompt"))
        params = generation_params(body, cfg.defaults)
        stream, include_usage = _stream_flags(body)
        if stream and len(prompts) > 1:
            raise bad_request("streaming supports a single prompt", param="prompt")
        ctx.prompt, ctx.stream = (prompts[0] if len(prompts) == 1 else prompts), stream
        job = state.submit(slot, "generate", prompts, params, stream)
        if stream:
            return await stream_response(state, ctx, job, "completion", slot, include_usage)
        results = await _await(state, ctx, job)
        ctx.prompt_tokens = sum(r.prompt_tokens for r in results)
        ctx.completion_tokens = sum(r.completion_tokens for r in results)
        ctx.response = results[0].text if len(results) == 1 else [r.text for r in results]
        return _json(completion_response(ctx.request_id, state.served_name, slot.identity.short,
                                         [(r.text, r.finish_reason) for r in results], ctx.prompt_tokens, ctx.completion_tokens))

    async def embeddings(request: Request, ctx: Ctx) -> Response:
        body = await state.read_json(request)
        slot = ctx.slot = state.resolve_model(body.get("model"))
        if not getattr(slot.backend, "supports_embeddings", False):
            raise bad_request(f"the model '{state.served_name}' cannot produce embeddings", param="model",
                              code="embeddings_not_supported")
        texts = parse_embedding_input(body.get("input"))
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise bad_request("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        ctx.prompt = texts
        job = state.submit(slot, "embed", texts, None, False)
        vectors, tokens = await _await(state, ctx, job)
        ctx.prompt_tokens, ctx.completion_tokens = tokens, 0
        return _json(embedding_response(state.served_name, vectors, tokens, encoding))

    async def models(request: Request, ctx: Ctx) -> Response:
        active = state.manager.active
        slots = state.manager.slots()
        return _json({
            "object": "list",
            "data": [state.model_entry(active)] if active else [],
            "active_version": active.version if active else None,
            "versions": [s.describe() for s in slots],
            "loading": state.manager.loading,
        })

    async def health(request: Request, ctx: Ctx) -> Response:
        active = state.manager.active
        if state.draining:
            return _json({"status": "draining"}, 503)
        if active is None:
            body = {"status": "loading", "loading": state.manager.loading}
            if state.manager.last_error:
                body = {"status": "failed", "error": state.manager.last_error}
            return _json(body, 503)
        return _json({"status": "ok", "model": active.identity.short, "version": active.version,
                      "loading": state.manager.loading})

    async def metrics(request: Request, ctx: Ctx) -> Response:
        state.manager.sweep()
        state.metrics.set_models(state.manager.slots())
        data, content_type = state.metrics.render()
        return Response(data, media_type=content_type.split(";")[0], headers={"Content-Type": content_type})

    async def admin_load(request: Request, ctx: Ctx) -> Response:
        body = await state.read_json(request)
        ref = body.get("model")
        if not isinstance(ref, str) or not ref.strip():
            raise bad_request("'model' must name the model to load (a path, .gguf file, registry name or URL)", param="model")
        try:
            slot = await asyncio.to_thread(state.load, ref.strip())
        except LoadBusy as exc:
            raise ApiError(409, str(exc), "conflict_error", code="load_in_progress") from None
        except LoadFailed as exc:
            status, code = (422, "health_check_failed") if exc.stage == "health_check" else (400, "model_load_failed")
            raise ApiError(status, str(exc), "invalid_request_error", code=code, param="model") from None
        ctx.slot = slot
        return _json({"active": state.model_entry(slot), "versions": [s.describe() for s in state.manager.slots()]})

    async def admin_rollback(request: Request, ctx: Ctx) -> Response:
        try:
            slot = state.rollback()
        except NothingToRollBack as exc:
            raise ApiError(409, str(exc), "conflict_error", code="nothing_to_roll_back") from None
        ctx.slot = slot
        return _json({"active": state.model_entry(slot), "versions": [s.describe() for s in state.manager.slots()]})

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405:
            err = ApiError(405, f"method {request.method} is not allowed on {request.url.path}", "invalid_request_error",
                           code="method_not_allowed")
        else:
            err = ApiError(404, f"no such endpoint: {request.url.path}", "invalid_request_error", code="not_found")
        return error_response(err)

    routes = [
        Route("/v1/chat/completions", endpoint(state, "chat", chat), methods=["POST"]),
        Route("/v1/completions", endpoint(state, "completions", completions), methods=["POST"]),
        Route("/v1/embeddings", endpoint(state, "embeddings", embeddings), methods=["POST"]),
        Route("/v1/models", endpoint(state, "models", models), methods=["GET"]),
        Route("/health", endpoint(state, "health", health, auth=None, logged=False), methods=["GET"]),
        Route("/metrics", endpoint(state, "metrics", metrics, logged=False), methods=["GET"]),
        Route("/admin/models/load", endpoint(state, "admin_load", admin_load, auth="admin"), methods=["POST"]),
        Route("/admin/rollback", endpoint(state, "admin_rollback", admin_rollback, auth="admin"), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


async def _await(state: ServeState, ctx: Ctx, job: Job) -> Any:
    try:
        value = await state.result(job)
    except ApiError:
        raise
    except Exception as exc:
        raise _as_api_error(exc, state, ctx) from None
    finally:
        ctx.from_job(job)
    return value
